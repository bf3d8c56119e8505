# Labs of N simulated hosts with overlayd on each, real plugins, and the checks against etcd and the
# kernel: shared by scripts/faults.sh and scripts/bench.sh fleet. Source it after scripts/lib/common.sh.
# The caller sets BIN (the binaries), WORK (a directory of its own), VNI, TIMEOUT_MS, HOSTS and
# ETCD_MEMBERS (hosts with an etcd member, comma-separated), and may set LAB_TAG (prefix of the lab's
# names; default f<pid>). Verdicts: check prints PASS or FAIL and clears CHECKS_OK on a failure.

lab() { "$BIN/lab" "$@"; }
analyse() { python3 "$ROOT/scripts/lib/faults.py" "$@"; }

# --- verdicts ---------------------------------------------------------------------------------
CHECKS_OK=true
check() { # WHAT CONDITION...: one line, PASS or FAIL
  local what=$1; shift
  if "$@"; then printf '  %-4s %s\n' PASS "$what"; else printf '  %-4s %s\n' FAIL "$what"; CHECKS_OK=false; fi
}
figure() { printf '  %-4s %s\n' '' "$*"; }
eq() { [ "$1" = "$2" ]; }
le() { python3 -c "import sys; sys.exit(0 if float('$1') <= float('$2') else 1)"; }
j() { jq -r "$1" <<<"$2"; } # FILTER JSON

# --- the lab ----------------------------------------------------------------------------------
declare -A OVERLAYD_PID
lab_up() { # TAG: a new lab, overlayd on every host, ready
  export LAB_DIR=$WORK/lab-$1
  mkdir -p "$LAB_DIR"
  PREFIX="${LAB_TAG:-f$$}$1"
  lab up --prefix "$PREFIX" --node-prefix "$PREFIX-n" --hosts "$HOSTS" --etcd-members "$ETCD_MEMBERS" >"$WORK/lab-$1.json"
  ETCD=$(lab etcd-endpoints)
  local h
  for h in $(seq 1 "$HOSTS"); do start_overlayd "$h"; done
  for h in $(seq 1 "$HOSTS"); do wait_ready "$h" 30 || die "overlayd on host $h not ready: $(tail -5 "$WORK/overlayd-$h.log")"; done
}
lab_down() {
  # FAULTS_PAUSE=SECONDS: time to look at the lab before it goes (LAB_DIR and the work directory).
  [ -z "${FAULTS_PAUSE:-}" ] || { say "pausing ${FAULTS_PAUSE}s: LAB_DIR=$LAB_DIR WORK=$WORK"; sleep "$FAULTS_PAUSE"; }
  lab down; export LAB_DIR=""
}
node() { echo "${PREFIX}-n$1"; }
host_ns() { echo "${PREFIX}-h$1"; }
start_overlayd() {
  OVERLAYD_PID[$1]=$(lab bg "$1" --log "$WORK/overlayd-$1.log" --tag "overlayd-$1" -- \
    env RUST_LOG="${RUST_LOG:-info}" "$BIN/overlayd" --etcd "$ETCD" --node "$(node "$1")" --no-conflists --no-dns)
}
kill_overlayd() { # HOST SIGNAL: the overlayd this script started there, by its PID
  kill "-$2" "${OVERLAYD_PID[$1]}" 2>/dev/null || true
  local i; for i in $(seq 100); do running "${OVERLAYD_PID[$1]}" || return 0; sleep 0.05; done
}
running() { # PID: alive and not a zombie (nobody may reap a process whose starter exited)
  local state; state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
readyz() { lab run "$1" -- curl -s -o /dev/null -m 2 -w '%{http_code}' http://127.0.0.1:9393/readyz || true; }
wait_ready() { # HOST SECONDS
  local deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do [ "$(readyz "$1")" = 200 ] && return 0; sleep 0.2; done
  return 1
}
etcdctl_() { lab run 1 -- etcdctl --endpoints "$ETCD" --command-timeout=5s "$@"; }
etcd_json() { etcdctl_ get --prefix /cni-overlay/ -w json >"$1"; }
etcd_keys() { etcdctl_ get --prefix /cni-overlay/ --keys-only | grep -v '^$' | sort; }
etcd_healthy() { # all members answer
  lab run 1 -- etcdctl --endpoints "$ETCD" --command-timeout=1s endpoint health >/dev/null 2>&1
}

conf() { # HOST NET SUBNET [CNIVERSION]: the network's configuration on that host
  local endpoints; endpoints=$(tr ',' '\n' <<<"$ETCD" | sed 's#http://##' | jq -R . | jq -sc .)
  jq -n --arg net "$2" --arg node "$(node "$1")" --argjson ep "$endpoints" --arg subnet "$3" \
    --arg data "$WORK/ipam-$1" --argjson vni "$VNI" --argjson t "$TIMEOUT_MS" --arg v "${4:-1.0.0}" \
    '{cniVersion: $v, name: $net, type: "vxlan-overlay", vni: $vni, node: $node,
      etcd: {endpoints: $ep, timeoutMs: $t}, ipam: {type: "etcd-ipam", subnet: $subnet, dataDir: $data}}'
}
write_confs() { # NET SUBNET
  local h; for h in $(seq 1 "$HOSTS"); do conf "$h" "$1" "$2" >"$WORK/$1-$h.json"; done
}
plan() { # NET ID-PREFIX COUNT HOSTS...: container ids spread round-robin over HOSTS; makes the containers
  local net=$1 prefix=$2 count=$3; shift 3
  local hosts=("$@") i names=()
  for i in $(seq 0 $((count - 1))); do names+=("$prefix$i"); done
  lab container "${names[@]}" >/dev/null
  for i in $(seq 0 $((count - 1))); do
    local h=${hosts[$((i % ${#hosts[@]}))]}
    printf '%s\t/run/netns/%s\t/run/netns/%s-c-%s\t%s\n' "$prefix$i" "$(host_ns "$h")" "$PREFIX" "$prefix$i" "$WORK/$net-$h.json"
  done >"$WORK/$net-$prefix.plan"
}
drive() { # COMMAND PLAN PARALLEL [extra flags]: fault-driver calls, one JSON line per call on stdout
  local command=$1 planfile=$2 parallel=$3; shift 3
  "$BIN/fault-driver" calls --command "$command" --plugin "$BIN/vxlan-overlay" --cni-path "$BIN" \
    --plan "$planfile" --parallel "$parallel" "$@"
}
cni() { # HOST COMMAND CONFFILE [ID]: one call; its stdout, exit code in $CNI_RC, time in $CNI_MS
  local t0 t1
  t0=$(date +%s%N)
  set +e
  CNI_OUT=$(lab run "$1" -- env CNI_COMMAND="$2" CNI_CONTAINERID="${4:-}" CNI_NETNS="${CNI_NETNS_:-}" CNI_IFNAME=eth0 \
    CNI_PATH="$BIN" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=${4:-}" "$BIN/vxlan-overlay" <"$3" 2>>"$WORK/plugins.log")
  CNI_RC=$?
  set -e
  t1=$(date +%s%N)
  CNI_MS=$(((t1 - t0) / 1000000))
  CNI_CODE=$(jq -r '.code // 0' <<<"$CNI_OUT" 2>/dev/null || echo "?")
  [ "$CNI_RC" = 0 ] && CNI_CODE=0
  return 0
}
add_one() { # HOST NET ID: a container with one ADD; prints its address or nothing
  local path; path=$(lab container "$3")
  CNI_NETNS_=$path cni "$1" ADD "$WORK/$2-$1.json" "$3"
  [ "$CNI_CODE" = 0 ] && jq -r '.ips[0].address' <<<"$CNI_OUT" | cut -d/ -f1
}
del_one() { CNI_NETNS_="/run/netns/$PREFIX-c-$3" cni "$1" DEL "$WORK/$2-$1.json" "$3"; }

# The state checks compare: per host, link names, FDB and neighbour entries of our devices, the nft
# ruleset, the plugins' lock files (keyed by the host namespace's inode); the lab's sandboxes.
host_state() { # HOST DIR: writes the host's state into DIR
  local h=$1 d=$2 ns inode
  ns=$(host_ns "$h"); mkdir -p "$d"
  lab run "$h" -- ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort >"$d/links"
  # Container veths carry the attachment as alias, <container id>/<ifname>.
  lab run "$h" -- ip -d -o link show | grep -o 'alias [^ ]*/[^ ]*' | sed 's/alias //' | sort >"$d/aliases" || true
  lab run "$h" -- bridge -o fdb show | grep ' dev ov' | sort >"$d/fdb" || true
  lab run "$h" -- ip -o neigh show nud permanent | grep ' dev ov' | sort >"$d/neigh" || true
  lab run "$h" -- nft -s list ruleset >"$d/nft"
  inode=$(stat -c %i "/run/netns/$ns")
  { ls /run/cni-overlay/locks/ 2>/dev/null || true; } | grep "^$inode-" | sort >"$d/locks" || true
}
state() { # DIR: every host's, and the lab's sandboxes
  local h; for h in $(seq 1 "$HOSTS"); do host_state "$h" "$1/h$h"; done
  lab sandboxes $(for h in $(seq 1 "$HOSTS"); do node "$h"; done) | sort >"$1/sandboxes"
}
differs() { # BEFORE AFTER: lines that differ, prefixed
  diff -r "$1" "$2" | grep '^[<>]' || true
}
peers_check() { # NET HOST ETCD_JSON: the host's entries against the records
  local d=$WORK/peers-$2; host_state "$2" "$d"
  analyse peers "$3" "$1" "$(node "$2")" "$d/fdb" "$d/neigh"
}
converged() { # NET ETCD_JSON HOSTS...: every host's entries equal the records
  local net=$1 dump=$2 h r; shift 2
  for h in "$@"; do
    r=$(peers_check "$net" "$h" "$dump")
    # The first difference seen, for whoever wants to know what took time.
    [ "$(j '.n_missing + .n_extra' "$r")" = 0 ] || { [ -s "$WORK/unconverged" ] || echo "host $h: $r" >"$WORK/unconverged"; return 1; }
  done
}
wait_converged() { # NET SECONDS HOSTS...: seconds it took, or "never"
  local net=$1 within=$2 t0; shift 2
  t0=$(date +%s%N)
  while :; do
    etcd_json "$WORK/conv.json" 2>/dev/null && converged "$net" "$WORK/conv.json" "$@" && {
      python3 -c "print(f'{($(date +%s%N) - $t0) / 1e9:.2f}')"; return 0; }
    [ $(( ($(date +%s%N) - t0) / 1000000000 )) -ge "$within" ] && { echo never; return 1; }
    sleep 0.2
  done
}
stop_pings() { # PID...: the pings this script started (SIGINT: they print their summary)
  local p; for p in "$@"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 0.3
}
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
wait_lines() { # FILE N PID: until FILE has N lines or PID is gone
  while [ "$(lines "$1")" -lt "$2" ] && kill -0 "$3" 2>/dev/null; do sleep 0.1; done
}


leak_checks() { # TAG NET: etcd and every host exactly as before TAG's ADDs (cursor hints aside)
  local tag=$1 net=$2
  etcd_keys | grep -v "^/cni-overlay/ipam/$net/cursor/" >"$WORK/$tag-keys-after" || true
  local leaked; leaked=$(comm -13 "$WORK/$tag-keys-before" "$WORK/$tag-keys-after")
  check "0 keys left in etcd (the cursor hint aside)$( [ -z "$leaked" ] || echo ": $(head -3 <<<"$leaked" | tr '\n' ' ')")" eq "$leaked" ""
  state "$WORK/$tag-after"
  local part diff
  for part in links fdb neigh nft locks; do
    diff=$(for h in $(seq 1 "$HOSTS"); do differs "$WORK/$tag-before/h$h/$part" "$WORK/$tag-after/h$h/$part" | sed "s/^/h$h /"; done)
    check "0 $part left ($(grep -c . <<<"$diff" || true))$( [ -z "$diff" ] || echo ": $(head -3 <<<"$diff" | tr '\n' ' ')")" eq "$diff" ""
  done
  diff=$(differs "$WORK/$tag-before/sandboxes" "$WORK/$tag-after/sandboxes")
  check "0 gateway sandboxes left" eq "$diff" ""
}


ping_pass() { # BASE: pings BASE.plan (fault-driver ping's); sets PING_PAIRS, PING_FIRST (pairs without a
  # reply at first), PING_LOST (of those, still none pinged again alone); BASE-again.jsonl has the latter.
  # Two at a time: the machine's ARP table (gc_thresh3) is shared by every namespace on it.
  "$BIN/fault-driver" ping --plan "$1.plan" --parallel 2 >"$1.jsonl"
  PING_PAIRS=$(jq -s 'map(.targets) | add // 0' "$1.jsonl")
  PING_FIRST=$(jq -s 'map(.lost | length) | add // 0' "$1.jsonl")
  PING_LOST=$PING_FIRST
  if [ "$PING_FIRST" != 0 ]; then
    # The driver deletes, in each target, the entry it made for the source; a target that is a
    # source itself at that moment (two run at once) can lose the entry under a ping of its own.
    # What was lost is pinged again alone: that is the figure.
    python3 - "$1.plan" "$1.jsonl" >"$1-again.plan" <<'EOF'
import json, sys
plan = {l.split("\t")[0]: l.rstrip("\n").split("\t") for l in open(sys.argv[1])}
for line in open(sys.argv[2]):
    r = json.loads(line)
    if r["lost"]:
        ns, source, targets = plan[r["ns"]]
        keep = [t for t in targets.split(",") if t.split("=")[0] in r["lost"]]
        print(f"{ns}\t{source}\t" + ",".join(keep))
EOF
    "$BIN/fault-driver" ping --plan "$1-again.plan" --parallel 1 >"$1-again.jsonl"
    PING_LOST=$(jq -s 'map(.lost | length) | add // 0' "$1-again.jsonl")
  fi
}

lab_cpu() { # CPU seconds used so far by the processes in the hosts' namespaces, by command name: JSON
  local inodes h
  inodes=$(for h in $(seq 1 "$HOSTS"); do stat -L -c %i "/run/netns/$(host_ns "$h")"; done | paste -sd,)
  python3 - "$inodes" <<'PY'
import json, os, sys
want = set(sys.argv[1].split(","))
tick = os.sysconf("SC_CLK_TCK")
out = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if str(os.stat(f"/proc/{pid}/ns/net").st_ino) not in want:
            continue
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    f = stat.rsplit(")", 1)[1].split()
    out[comm] = round(out.get(comm, 0) + (int(f[11]) + int(f[12])) / tick, 2)
print(json.dumps(out))
PY
}
