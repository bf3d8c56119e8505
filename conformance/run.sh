#!/usr/bin/env bash
# The black-box conformance suite of cni-overlay: the plugins (target/release) as runtimes drive them.
#
#   1. cnitool (built here against Debian's libcni 1.1.2): cniVersion 0.3.1, 0.4.0, 1.0.0 x {overlay
#      (vxlan-overlay + etcd-ipam), overlay + gwbridge-egress, overlay with host-local, the reference
#      bridge with etcd-ipam}: ADD, CHECK, DEL, DEL again, results, leftovers; two hosts pinging each
#      other through overlayd; GC and STATUS (1.1.0) by running the plugin binaries directly.
#   2. podman 4.3 (CNI backend) on two simulated hosts: cluster-wide names and addresses, ping.
#   3. containerd 1.6 (ctr run --cni --rm): address seen in the task, released afterwards.
#   4. reference plugins chained after ours: portmap, tuning, bandwidth.
#   5. bad input: exit code, one JSON error object, the CNI code, no panic, nothing changed.
#
# One line per check: "ok - RUNTIME VERSION VERB CASE" or "not ok - RUNTIME VERSION VERB CASE : reason"
# (RUNTIME: cnitool, podman-X, containerd-X, plugin = run directly as a runtime would, bad-input =
# run directly with bad input; VERSION: the request's cniVersion, "invalid" when it has none);
# "# n/a - ..." for what does not apply; last line "N passed, N failed". Exit status 1 if any failed.
# CONFORMANCE_SUMMARY=FILE: also writes a TSV (runtime, version, verb, case, result: pass|FAIL|n/a);
# conformance/table.sh FILE turns it into the README's table. CONFORMANCE_KEEP=1 keeps the work dir.
#
# Everything runs in network namespaces named cf-<pid>-* (and the plugins' gateway sandboxes
# ovl-<vni>-node<N>, with VNIs of this run), removed on exit, also on failure. Root only.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib/common.sh
source "$HERE/../scripts/lib/common.sh"
# shellcheck source=../scripts/lib/lab.sh
source "$HERE/../scripts/lib/lab.sh"
need_root

WORK=$(mktemp -d /tmp/cf-conformance.XXXXXX)
LAB_PREFIX="cf-$$"
H1=$(lab_host_ns 1) H2=$(lab_host_ns 2) H3=$(lab_host_ns 3)
export RP_PODMAN_BASE=$WORK/podman RP_PODMAN_RUNROOT_BASE=/tmp/cf-prun-$$ RP_CTR_BASE=$WORK/ctr
# shellcheck source=../scripts/lib/podman-host.sh
source "$HERE/../scripts/lib/podman-host.sh"
# shellcheck source=../scripts/lib/containerd-host.sh
source "$HERE/../scripts/lib/containerd-host.sh"

# VNIs of this run: their gateway sandboxes (ovl-<vni>-node<N>) are the only ones this run removes.
VBASE=$((100000 + ($$ % 100000) * 100))
CNI_BIN=$WORK/cni-bin
CNITOOL=$WORK/bin/cnitool
PODMAN_UP=()
CTR_UP=""
VAR_LIB_CNI_EXISTED=0
[ -d /var/lib/cni ] && VAR_LIB_CNI_EXISTED=1

cleanup() {
  set +e
  local h pid ns
  for h in "${PODMAN_UP[@]}"; do podman_host_teardown "$h" >/dev/null 2>&1; done
  [ -n "$CTR_UP" ] && containerd_host_stop "$CTR_UP" >/dev/null 2>&1
  # lab_down, but removing only this run's gateway sandboxes (lab_down would remove every
  # ovl-<vni>-node<N>, also those of a demo running at the same time).
  for pid in "${LAB_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in $(ls /run/netns 2>/dev/null); do
    if [[ $ns =~ ^ovl-([0-9]+)-node[0-9]+$ ]] && ((BASH_REMATCH[1] >= VBASE && BASH_REMATCH[1] < VBASE + 100)); then
      ip netns del "$ns" 2>/dev/null || { umount "/run/netns/$ns" 2>/dev/null; rm -f "/run/netns/$ns"; }
    fi
  done
  lab_remove_lock_files
  for ((i = ${#LAB_NAMESPACES[@]} - 1; i >= 0; i--)); do ip netns del "${LAB_NAMESPACES[$i]}" 2>/dev/null; done
  LAB_NAMESPACES=() LAB_PIDS=()
  # podman 4.3 and ctr keep libcni's result cache in /var/lib/cni: remove what we made there.
  if [ "$VAR_LIB_CNI_EXISTED" = 0 ] && [ -d /var/lib/cni ] && [ -z "$(find /var/lib/cni -type f 2>/dev/null)" ]; then
    find /var/lib/cni -depth -type d -empty -delete 2>/dev/null
  fi
  if [ "${CONFORMANCE_KEEP:-0}" = 1 ]; then echo "# work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Reporting

PASSED=0
FAILED=0
SUMMARY=$WORK/summary.tsv
printf 'runtime\tversion\tverb\tcase\tresult\n' >"$SUMMARY"

oneline() { tr '\n\t' '  ' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-400; }
pass() { # RT VER VERB CASE
  echo "ok - $1 $2 $3 $4"
  printf '%s\t%s\t%s\t%s\tpass\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
  PASSED=$((PASSED + 1))
}
fail() { # RT VER VERB CASE REASON
  echo "not ok - $1 $2 $3 $4 : $(printf '%s' "$5" | oneline)"
  printf '%s\t%s\t%s\t%s\tFAIL\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
  FAILED=$((FAILED + 1))
}
na() { # RT VER VERB CASE WHY
  echo "# n/a - $1 $2 $3 $4 ($5)"
  printf '%s\t%s\t%s\t%s\tn/a\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
}
# verdict RT VER VERB CASE REASON: pass when REASON is empty.
verdict() { if [ -z "$5" ]; then pass "$1" "$2" "$3" "$4"; else fail "$@"; fi; }
detail() { sed 's/^/#   /' | head -n "${2:-15}"; }

finish() {
  [ -n "${CONFORMANCE_SUMMARY:-}" ] && cp "$SUMMARY" "$CONFORMANCE_SUMMARY"
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

# ---------------------------------------------------------------------------------------------
# Tools

# etcdctl against the lab's etcd, from host 1.
ectl() { lab_run 1 etcdctl --endpoints "$LAB_ETCD" "$@"; }
keys_under() { ectl get --prefix --keys-only "/cni-overlay/$1" 2>&1 | sed '/^$/d'; }
etcd_dump() { ectl get --prefix /cni-overlay 2>&1; }

host_links() { lab_run "$1" ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort; }
sandbox_ns() { ls /run/netns 2>/dev/null | grep -E "^ovl-$1-node[0-9]+$"; }

# State of a simulated host (and optionally a container namespace) and of etcd, for before/after.
snapshot() { # HOST_INDEX [CONTAINER_NS_NAME]
  local h=$1 c=${2:-}
  echo "## link"; lab_run "$h" ip -o link show 2>&1
  echo "## addr"; lab_run "$h" ip -o addr show 2>&1
  echo "## route"; lab_run "$h" ip route show; lab_run "$h" ip -6 route show
  echo "## nft"; lab_run "$h" nft -s list ruleset 2>&1
  echo "## netns (this run's)"
  ls /run/netns 2>/dev/null | while read -r ns; do
    if [[ $ns == "$LAB_PREFIX"-* ]]; then echo "$ns"
    elif [[ $ns =~ ^ovl-([0-9]+)-node[0-9]+$ ]] && ((BASH_REMATCH[1] >= VBASE && BASH_REMATCH[1] < VBASE + 100)); then echo "$ns"; fi
  done
  if [ -n "$c" ]; then
    echo "## container link"; ip -n "$c" -o link show
    echo "## container addr"; ip -n "$c" -o addr show
    echo "## container route"; ip -n "$c" route show
  fi
  echo "## etcd"; etcd_dump
}

# A snapshot once the host is quiet: two consecutive reads agree (a bridge's carrier, for one,
# settles a moment after its first port comes up). At most ~3 s.
settled_snapshot() {
  local a b i
  a=$(snapshot "$@")
  for i in 1 2 3 4 5 6; do
    b=$(snapshot "$@")
    [ "$a" = "$b" ] && break
    a=$b
    sleep 0.5
  done
  printf '%s\n' "$a"
}

# plug HOST PLUGIN COMMAND STDIN_FILE [VAR=VALUE...]: runs a plugin binary as a runtime does, with
# only the given variables (env -i; COMMAND "" leaves CNI_COMMAND unset). Sets P_RC, P_OUT, P_ERR, P_MS.
plug() {
  local h=$1 p=$2 cmd=$3 in=$4 t0 t1
  shift 4
  local envs=(PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_PATH="$CNI_BIN")
  [ -n "$cmd" ] && envs+=(CNI_COMMAND="$cmd")
  t0=$(date +%s%N)
  lab_run "$h" env -i "${envs[@]}" "$@" "$CNI_BIN/$p" <"$in" >"$WORK/plug.out" 2>"$WORK/plug.err"
  P_RC=$?
  t1=$(date +%s%N)
  P_MS=$(((t1 - t0) / 1000000))
  P_OUT=$(cat "$WORK/plug.out")
  P_ERR=$(cat "$WORK/plug.err")
}

# cnt HOST NETCONFDIR VERB NET NETNS [VAR=VALUE...]: cnitool on a host. Sets C_RC, C_OUT, C_ERR.
cnt() {
  local h=$1 dir=$2 verb=$3 net=$4 netns=$5
  shift 5
  lab_run "$h" env NETCONFPATH="$dir" CNI_PATH="$CNI_BIN" CNI_CACHE_DIR="$WORK/cache-h$h" "$@" \
    "$CNITOOL" "$verb" "$net" "$netns" >"$WORK/cnt.out" 2>"$WORK/cnt.err"
  C_RC=$?
  C_OUT=$(cat "$WORK/cnt.out")
  C_ERR=$(cat "$WORK/cnt.err")
}

# container NAME: a container namespace $LAB_PREFIX-c-NAME, recorded for clean-up; path in $CPATH.
container() { lab_ns "$LAB_PREFIX-c-$1"; CPATH="/run/netns/$LAB_PREFIX-c-$1"; }

wait_for() { # SECONDS COMMAND...: retries every 0.2 s
  local end=$((SECONDS + $1)); shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    ((SECONDS >= end)) && return 1
    sleep 0.2
  done
}

# Result checks (cnitool prints the result the last plugin returned). Each prints a reason or nothing.
MAC_RE='^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$'
res_version() { # RESULT WANT
  local got; got=$(jq -r '.cniVersion' <<<"$1" 2>&1)
  [ "$got" = "$2" ] || echo "result cniVersion is $got, the config's is $2"
}
res_sandbox() { # RESULT NETNS IFNAMES...
  local r=$1 netns=$2 ifn; shift 2
  for ifn in "$@"; do
    jq -e --arg n "$ifn" --arg s "$netns" 'any(.interfaces[]?; .name == $n and .sandbox == $s)' <<<"$r" >/dev/null ||
      echo "no interface $ifn with sandbox $netns;"
  done
  jq -e --arg re "$MAC_RE" '[.interfaces[]? | select((.sandbox // "") != "")] | length > 0 and all(.[]; (.mac // "") | test($re))' <<<"$r" >/dev/null ||
    echo "a sandbox interface has no parsable mac: $(jq -c '[.interfaces[]? | select((.sandbox // "") != "") | {name, mac}]' <<<"$r")"
}
res_indexes() { # RESULT
  jq -e '(.interfaces | length) as $n | (.ips | length) > 0 and
         all(.ips[]; (.interface | type) == "number" and .interface >= 0 and .interface < $n)' <<<"$1" >/dev/null ||
    echo "ips[].interface out of range: $(jq -c '{n: (.interfaces | length), ips: [.ips[]? | .interface]}' <<<"$1")"
}
res_ipversion() { # RESULT VER
  if [[ $2 == 0.* ]]; then
    jq -e 'all(.ips[]; (.version == "4" and (.address | contains(".")))
                    or (.version == "6" and (.address | contains(":"))))' <<<"$1" >/dev/null ||
      echo "ips[].version missing or wrong for $2: $(jq -c '[.ips[] | {address, version}]' <<<"$1")"
  else
    jq -e 'all(.ips[]; has("version") | not)' <<<"$1" >/dev/null ||
      echo "ips[].version present in a $2 result"
  fi
}
res_applied() { # RESULT CONTAINER_NS: every address of a sandbox interface is on it
  local r=$1 c=$2 line ifn addr
  while read -r line; do
    [ -z "$line" ] && continue
    ifn=${line%% *} addr=${line#* }
    grep -q " $addr " <<<"$(ip -n "$c" -o addr show dev "$ifn" 2>/dev/null)" || echo "$addr is not on $ifn in the container;"
  done < <(jq -r '.interfaces as $i | .ips[] | select(($i[.interface].sandbox // "") != "") | "\($i[.interface].name) \(.address)"' <<<"$r")
}

# ---------------------------------------------------------------------------------------------
# Set-up: cnitool, the plugin directory, the lab (3 hosts), etcd, overlayd on hosts 1 and 2.

# A set-up failure is one failed check, and the end of the run.
setup_failed() { fail setup - - "set-up" "$1"; finish; exit 1; }
# The lab library's fatal errors, too.
die() { setup_failed "$*"; }

for tool in jq etcd etcdctl ip nft nsenter go podman ctr containerd tc; do
  command -v "$tool" >/dev/null || setup_failed "$tool not found (scripts/test.sh installs the Debian packages)"
done
for bin in vxlan-overlay etcd-ipam overlayd; do
  [ -x "$RELEASE/$bin" ] || setup_failed "$RELEASE/$bin missing: cargo build --profile $PROFILE --workspace --bins"
done

say "building cnitool against Debian's libcni"
"$HERE/build-cnitool.sh" "$WORK/bin" >"$WORK/cnitool-build.log" 2>&1 || setup_failed "cnitool build failed: $(tail -3 "$WORK/cnitool-build.log")"

mkdir -p "$CNI_BIN"
cp /usr/lib/cni/* "$CNI_BIN/"
cp "$RELEASE/vxlan-overlay" "$RELEASE/etcd-ipam" "$CNI_BIN/"
cp "$RELEASE/overlayd" "$WORK/overlayd"
# gwbridge-egress is used once it is more than a stub: it must answer VERSION.
GW=0
if [ -x "$RELEASE/gwbridge-egress" ] && echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION timeout 5 "$RELEASE/gwbridge-egress" 2>/dev/null |
  jq -e '.supportedVersions | index("1.0.0")' >/dev/null 2>&1; then
  cp "$RELEASE/gwbridge-egress" "$CNI_BIN/"
  GW=1
fi
PODMAN_V=$(podman --version | awk '{print $3}')
CTR_V=$(containerd --version | awk '{print $3}' | sed 's/~.*//')
RT_PODMAN="podman-$PODMAN_V"
RT_CTR="containerd-$CTR_V"

say "lab: 3 simulated hosts, etcd, overlayd"
for ns in $(ls /run/netns 2>/dev/null); do
  [[ $ns == "$LAB_PREFIX"-* ]] && setup_failed "namespace $ns already exists"
done
lab_up 3 || setup_failed "lab_up failed"
lab_etcd_cluster "$WORK" 1
E=${LAB_ETCD%%,*}
for h in 1 2; do
  lab_bg "$h" "$WORK/overlayd-node$h.log" "$WORK/overlayd" --etcd "$LAB_ETCD" --node "node$h" --no-conflists
done
registered() { [ -n "$(lab_run 1 etcdctl --endpoints "$LAB_ETCD" get --keys-only "/cni-overlay/nodes/$1" 2>/dev/null)" ]; }
for h in 1 2; do
  wait_for 15 registered "node$h" || setup_failed "overlayd on node$h did not register: $(tail -3 "$WORK/overlayd-node$h.log")"
done

# ---------------------------------------------------------------------------------------------
# VERSION

for p in vxlan-overlay etcd-ipam $([ "$GW" = 1 ] && echo gwbridge-egress); do
  echo '{"cniVersion":"1.0.0"}' >"$WORK/version.json"
  plug 1 "$p" VERSION "$WORK/version.json"
  why=""
  [ "$P_RC" = 0 ] || why="exit $P_RC: $P_OUT"
  [ -z "$why" ] && { jq -e '.supportedVersions as $s | all(("0.3.1", "0.4.0", "1.0.0", "1.1.0"); . as $v | $s | index($v))' <<<"$P_OUT" >/dev/null 2>&1 ||
    why="supportedVersions lacks one of 0.3.1 0.4.0 1.0.0 1.1.0: $P_OUT"; }
  verdict plugin 1.0.0 VERSION "$p lists 0.3.1 0.4.0 1.0.0 1.1.0" "$why"
done
[ "$GW" = 1 ] || na plugin 1.0.0 VERSION "gwbridge-egress" "target/release/gwbridge-egress is not built yet (does not answer VERSION)"

# ---------------------------------------------------------------------------------------------
# 1. cnitool matrix

say "1. cnitool matrix (libcni 1.1.2)"

overlay_plugin() { # VNI NODE SUBNET DATADIR [IPAM_TYPE]
  local ipam
  if [ "${5:-etcd-ipam}" = host-local ]; then
    ipam=$(jq -nc --arg s "$3" --arg d "$4" '{type: "host-local", subnet: $s, dataDir: $d, routes: [{dst: "0.0.0.0/0"}]}')
  else
    ipam=$(jq -nc --arg s "$3" --arg d "$4" '{type: "etcd-ipam", subnet: $s, dataDir: $d, routes: [{dst: "0.0.0.0/0"}]}')
  fi
  jq -nc --argjson vni "$1" --arg node "$2" --arg e "$E" --argjson ipam "$ipam" \
    '{type: "vxlan-overlay", vni: $vni, node: $node, etcd: {endpoints: [$e]}, ipam: $ipam}'
}
gw_plugin() { # BRIDGE SUBNET DATADIR
  jq -nc --arg b "$1" --arg s "$2" --arg d "$3" \
    '{type: "gwbridge-egress", bridge: $b, ifname: "eth1", ipam: {type: "host-local", subnet: $s, dataDir: $d}}'
}
bridge_plugin() { # BRIDGE SUBNET NODE DATADIR
  jq -nc --arg b "$1" --arg s "$2" --arg n "$3" --arg e "$E" --arg d "$4" \
    '{type: "bridge", bridge: $b, isGateway: true, ipam: {type: "etcd-ipam", subnet: $s, node: $n, dataDir: $d, etcd: {endpoints: [$e]}}}'
}
conflist() { # FILE VERSION NAME PLUGIN_JSON...
  local f=$1 v=$2 n=$3; shift 3
  mkdir -p "$(dirname "$f")"
  printf '%s\n' "$@" | jq -s --arg v "$v" --arg n "$n" '{cniVersion: $v, name: $n, plugins: .}' >"$f"
}

# Leftover checks after DEL. Each prints a reason or nothing.
left_etcd() { # NET USES_ETCD_IPAM(0|1) USES_OVERLAY(0|1)
  local k=""
  [ "$3" = 1 ] && k+=$(keys_under "endpoints/$1/")
  [ "$2" = 1 ] && k+=$(keys_under "ipam/$1/owners/")$(keys_under "ipam/$1/names/")$(keys_under "ipam/$1/ips/")
  [ -z "$k" ] || echo "etcd keys left: $(echo "$k" | tr '\n' ' ')"
}
left_hostlocal() { # DATADIR NET
  local f
  f=$(ls "$1/$2" 2>/dev/null | grep -vE '^(lock|last_reserved_ip\..*)$')
  [ -z "$f" ] || echo "host-local reservations left in $1/$2: $f"
}
left_links() { # BEFORE AFTER TOLERATED_NAME...
  local before=$1 after=$2 extra; shift 2
  extra=$(comm -13 <(echo "$before") <(echo "$after"))
  for t in "$@"; do extra=$(grep -vxF "$t" <<<"$extra"); done
  extra=$(sed '/^$/d' <<<"$extra")
  [ -z "$extra" ] || echo "links left in the host: $(echo "$extra" | tr '\n' ' ')"
}

KINDS=(overlay overlay+gwbridge overlay+host-local bridge+etcd-ipam)
VERSIONS=(0.3.1 0.4.0 1.0.0)
declare -A KIND_TAG=([overlay]=ov [overlay+gwbridge]=og [overlay+host-local]=oh [bridge+etcd-ipam]=br)

matrix_case() { # KIND_INDEX VERSION_INDEX
  local ki=$1 vi=$2 kind=${KINDS[$1]} v=${VERSIONS[$2]}
  local tag=${KIND_TAG[$kind]}
  local net="cf-$tag-v${v//./}" vni=$((VBASE + 10 + ki * 3 + vi)) subnet="10.$((10 + ki)).$vi.0/24"
  local data="$WORK/data-h1" dir="$WORK/netconf/$net" bridge="cfbr$vi" gwbr="cfgw$vi"
  local rt=cnitool c cns netns why before after r ifnames=(eth0) tolerated=() uses_ipam=1 uses_ov=1
  case $kind in
    overlay) conflist "$dir/$net.conflist" "$v" "$net" "$(overlay_plugin "$vni" node1 "$subnet" "$data")" ;;
    overlay+gwbridge)
      conflist "$dir/$net.conflist" "$v" "$net" "$(overlay_plugin "$vni" node1 "$subnet" "$data")" \
        "$(gw_plugin "$gwbr" "172.31.$vi.0/24" "$data")"
      ifnames+=(eth1) ;;
    overlay+host-local) conflist "$dir/$net.conflist" "$v" "$net" "$(overlay_plugin "$vni" node1 "$subnet" "$data" host-local)"; uses_ipam=0 ;;
    bridge+etcd-ipam) conflist "$dir/$net.conflist" "$v" "$net" "$(bridge_plugin "$bridge" "$subnet" node1 "$data")"; tolerated+=("$bridge"); uses_ov=0 ;;
  esac
  local case="$kind"
  if [ "$kind" = overlay+gwbridge ] && [ "$GW" = 0 ]; then
    for verb in ADD CHECK DEL; do na "$rt" "$v" "$verb" "$case" "gwbridge-egress not built yet"; done
    return
  fi
  c="$tag-$vi"
  container "$c"; netns=$CPATH
  cns="$LAB_PREFIX-c-$c"
  before=$(host_links 1)
  nft_before=$(lab_run 1 nft -s list ruleset 2>/dev/null)

  cnt 1 "$dir" add "$net" "$netns"
  if [ "$C_RC" != 0 ]; then
    fail "$rt" "$v" ADD "$case: validate + ADD" "cnitool add exit $C_RC: $C_ERR $C_OUT"
    cnt 1 "$dir" del "$net" "$netns"
    return
  fi
  pass "$rt" "$v" ADD "$case: validate + ADD"
  r=$C_OUT
  if ! jq -e 'type == "object"' <<<"$r" >/dev/null 2>&1; then
    fail "$rt" "$v" ADD "$case: result is JSON" "$r"
  else
    verdict "$rt" "$v" ADD "$case: result cniVersion $v" "$(res_version "$r" "$v")"
    verdict "$rt" "$v" ADD "$case: sandbox interfaces with sandbox and a MAC" "$(res_sandbox "$r" "$netns" "${ifnames[@]}")"
    verdict "$rt" "$v" ADD "$case: ips[].interface indexes valid" "$(res_indexes "$r")"
    if [[ $v == 0.* ]]; then
      verdict "$rt" "$v" ADD "$case: ips[].version present" "$(res_ipversion "$r" "$v")"
    else
      verdict "$rt" "$v" ADD "$case: ips[].version absent" "$(res_ipversion "$r" "$v")"
    fi
    verdict "$rt" "$v" ADD "$case: addresses applied in the container" "$(res_applied "$r" "$cns")"
  fi

  if [ "$v" = 0.3.1 ]; then
    na "$rt" "$v" CHECK "$case" "CHECK exists from 0.4.0 on; libcni refuses it"
  else
    cnt 1 "$dir" check "$net" "$netns"
    verdict "$rt" "$v" CHECK "$case" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
    # CHECK must notice an attachment that is not as ADD left it: our plugins' interface loses its address.
    local tamper=eth0
    [ "$kind" = overlay+gwbridge ] && tamper=eth1
    if [ "$kind" != bridge+etcd-ipam ]; then
      ip -n "$cns" addr flush dev "$tamper"
      cnt 1 "$dir" check "$net" "$netns"
      verdict "$rt" "$v" CHECK "$case: fails once $tamper lost its address" "$([ "$C_RC" != 0 ] || echo "CHECK passed")"
    fi
  fi

  cnt 1 "$dir" del "$net" "$netns"
  verdict "$rt" "$v" DEL "$case" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  cnt 1 "$dir" del "$net" "$netns"
  verdict "$rt" "$v" DEL "$case: DEL twice" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"

  after=$(host_links 1)
  why="$(left_etcd "$net" "$uses_ipam" "$uses_ov")"
  [ "$uses_ipam" = 0 ] && why+="$(left_hostlocal "$data" "$net")"
  [ "$kind" = overlay+gwbridge ] && why+="$(left_hostlocal "$data" "$gwbr")"
  why+="$(left_links "$before" "$after" "${tolerated[@]}")"
  [ "$nft_before" = "$(lab_run 1 nft -s list ruleset 2>/dev/null)" ] || why+="nft ruleset changed: $(diff <(echo "$nft_before") <(lab_run 1 nft -s list ruleset 2>/dev/null) | grep '^[<>]' | head -4 | tr '\n' ' ');"
  [ "$uses_ov" = 1 ] && [ -n "$(sandbox_ns "$vni")" ] && why+="gateway sandbox $(sandbox_ns "$vni") left;"
  why+="$(ip -n "$cns" -o link show 2>/dev/null | grep -v ': lo:' | awk -F': ' '{print "container keeps " $2 ";"}')"
  verdict "$rt" "$v" DEL "$case: nothing left (etcd, links, sandbox, container)" "$why"

  # DEL once the namespace is gone (runtimes do that after a crash).
  cnt 1 "$dir" add "$net" "$netns"
  local add_rc=$C_RC
  ip netns del "$cns"
  cnt 1 "$dir" del "$net" "$netns"
  verdict "$rt" "$v" DEL "$case: DEL after the namespace is gone" "$([ "$add_rc" = 0 ] || echo "re-ADD failed;")$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  why="$(left_etcd "$net" "$uses_ipam" "$uses_ov")$(left_links "$before" "$(host_links 1)" "${tolerated[@]}")"
  verdict "$rt" "$v" DEL "$case: nothing left after DEL without the namespace" "$why"
  for t in "${tolerated[@]}"; do lab_run 1 ip link del "$t" 2>/dev/null; done
}

for ki in "${!KINDS[@]}"; do
  for vi in "${!VERSIONS[@]}"; do matrix_case "$ki" "$vi"; done
done

# Cross-host: one container per host through cnitool, overlayd on both.
say "1b. cross-host ping (cnitool, overlayd)"
xnet=cf-cross xvni=$((VBASE + 40))
for h in 1 2; do
  conflist "$WORK/netconf/x-node$h/$xnet.conflist" 1.0.0 "$xnet" "$(overlay_plugin "$xvni" "node$h" 10.40.0.0/24 "$WORK/data-h$h")"
done
container xa; xa=$CPATH; container xb; xb=$CPATH
cnt 1 "$WORK/netconf/x-node1" add "$xnet" "$xa"; ra=$C_OUT; rca=$C_RC; ea=$C_ERR
cnt 2 "$WORK/netconf/x-node2" add "$xnet" "$xb"; rb=$C_OUT; rcb=$C_RC; eb=$C_ERR
verdict cnitool 1.0.0 ADD "cross-host: container on node1" "$([ "$rca" = 0 ] || echo "exit $rca: $ea")"
verdict cnitool 1.0.0 ADD "cross-host: container on node2" "$([ "$rcb" = 0 ] || echo "exit $rcb: $eb")"
if [ "$rca" = 0 ] && [ "$rcb" = 0 ]; then
  ipa=$(jq -r '.ips[0].address' <<<"$ra" | cut -d/ -f1) ipb=$(jq -r '.ips[0].address' <<<"$rb" | cut -d/ -f1)
  [ "$ipa" != "$ipb" ] && why="" || why="both got $ipa"
  verdict cnitool 1.0.0 ADD "cross-host: distinct cluster-wide addresses ($ipa, $ipb)" "$why"
  wait_for 10 lab_in xa ping -c1 -W1 "$ipb" && why="" || why="no reply from $ipb; $(lab_run 1 bridge fdb show dev "ovx$xvni" | oneline)"
  verdict cnitool 1.0.0 ADD "cross-host: node1 container pings node2 container" "$why"
  wait_for 10 lab_in xb ping -c1 -W1 "$ipa" && why="" || why="no reply from $ipa; $(lab_run 2 bridge fdb show dev "ovx$xvni" | oneline)"
  verdict cnitool 1.0.0 ADD "cross-host: node2 container pings node1 container" "$why"
fi
xmac=$(jq -r '.interfaces[] | select(.name == "eth0" and (.sandbox // "") != "") | .mac' <<<"$rb" 2>/dev/null | tr 'A-F' 'a-f')
fdb_has() { grep -qi "^$2 dst " <<<"$(lab_run "$1" bridge fdb show dev "ovx$xvni" 2>/dev/null)"; }
neigh_has() { grep -q "^$2 " <<<"$(lab_run "$1" ip neigh show dev "ovx$xvni" 2>/dev/null)"; }
had=0
[ -n "$xmac" ] && fdb_has 1 "$xmac" && had=1
cnt 2 "$WORK/netconf/x-node2" del "$xnet" "$xb"; why=$([ "$C_RC" = 0 ] || echo "node2: $C_ERR")
if [ "$had" = 1 ]; then
  gone() { ! fdb_has 1 "$xmac" && ! neigh_has 1 "${ipb:-none}"; }
  wait_for 10 gone && w="" || w="node1 still has: $(lab_run 1 bridge fdb show dev "ovx$xvni" | grep -i "^$xmac dst") $(lab_run 1 ip neigh show dev "ovx$xvni" | grep "^${ipb:-none} ")"
  verdict cnitool 1.0.0 DEL "cross-host: overlayd on node1 drops the FDB and neighbour entries of node2's deleted container" "$w"
else
  fail cnitool 1.0.0 DEL "cross-host: overlayd on node1 drops the FDB and neighbour entries of node2's deleted container" "node1 had no FDB entry for $xmac to begin with"
fi
cnt 1 "$WORK/netconf/x-node1" del "$xnet" "$xa"; why+=$([ "$C_RC" = 0 ] || echo "node1: $C_ERR")
verdict cnitool 1.0.0 DEL "cross-host: both containers" "$why"
why="$(left_etcd "$xnet" 1 1)"
for h in 1 2; do lab_run "$h" ip link show "ovx$xvni" >/dev/null 2>&1 && why+="ovx$xvni left on node$h;"; done
[ -n "$(sandbox_ns "$xvni")" ] && why+="sandboxes left: $(sandbox_ns "$xvni" | tr '\n' ' ')"
verdict cnitool 1.0.0 DEL "cross-host: nothing left on either host" "$why"

# Concurrent ADDs on two hosts: addresses and names are cluster-wide and atomic.
say "1c. concurrent ADDs on two hosts"
rnet=cf-race rvni=$((VBASE + 44))
for h in 1 2; do
  conflist "$WORK/netconf/race-node$h/$rnet.conflist" 1.0.0 "$rnet" "$(overlay_plugin "$rvni" "node$h" 10.44.0.0/24 "$WORK/data-race-h$h")"
done
race_add() { # INDEX HOST [CNI_ARGS]: cnitool add in the background; pid appended to RPIDS
  container "r$1"
  lab_run "$2" env NETCONFPATH="$WORK/netconf/race-node$2" CNI_PATH="$CNI_BIN" CNI_CACHE_DIR="$WORK/cache-h$2" \
    CNI_ARGS="${3:-}" "$CNITOOL" add "$rnet" "$CPATH" >"$WORK/race-$1.out" 2>&1 &
  RPIDS+=($!)
}
race_del() { # INDEX HOST: prints a reason when DEL fails
  lab_run "$2" env NETCONFPATH="$WORK/netconf/race-node$2" CNI_PATH="$CNI_BIN" CNI_CACHE_DIR="$WORK/cache-h$2" \
    "$CNITOOL" del "$rnet" "/run/netns/$LAB_PREFIX-c-r$1" >"$WORK/race-del.out" 2>&1 || echo "DEL r$1: $(oneline <"$WORK/race-del.out");"
}
RPIDS=()
for i in 1 2 3 4 5 6 7 8; do race_add "$i" $((i % 2 + 1)); done
why="" addrs=""
for i in 1 2 3 4 5 6 7 8; do
  wait "${RPIDS[$((i - 1))]}" || why+="r$i failed: $(oneline <"$WORK/race-$i.out");"
  addrs+="$(jq -r '.ips[0].address' "$WORK/race-$i.out" 2>/dev/null)"$'\n'
done
verdict cnitool 1.0.0 ADD "concurrent: 8 parallel ADDs on two hosts succeed" "$why"
dups=$(sed '/^$/d' <<<"$addrs" | sort | uniq -d)
n=$(sed '/^$/d' <<<"$addrs" | sort -u | wc -l)
verdict cnitool 1.0.0 ADD "concurrent: 8 parallel ADDs got 8 distinct addresses" "$([ -z "$dups" ] && [ "$n" = 8 ] || echo "$n distinct; duplicates: $dups")"
RPIDS=()
race_add 9 2 'IgnoreUnknown=1;K8S_POD_NAME=racer'
race_add 10 1 'IgnoreUnknown=1;K8S_POD_NAME=Racer'
wait "${RPIDS[0]}"; r9=$?
wait "${RPIDS[1]}"; r10=$?
why=""
if [ "$r9" = 0 ] && [ "$r10" = 0 ]; then why="both won the name racer/Racer"
elif [ "$r9" != 0 ] && [ "$r10" != 0 ]; then why="both failed: $(oneline <"$WORK/race-9.out") | $(oneline <"$WORK/race-10.out")"
else
  loser=$([ "$r9" != 0 ] && echo 9 || echo 10)
  grep -qi "endpoint with name racer already exists in network $rnet" "$WORK/race-$loser.out" || why="loser's error: $(oneline <"$WORK/race-$loser.out")"
fi
verdict cnitool 1.0.0 ADD "concurrent: one name raced from two hosts (racer, Racer): exactly one wins" "$why"
owners=$(keys_under "ipam/$rnet/owners/" | wc -l)
eps=$(keys_under "endpoints/$rnet/" | wc -l)
verdict cnitool 1.0.0 ADD "concurrent: the loser left nothing (9 owners, 9 endpoint records)" "$([ "$owners" = 9 ] && [ "$eps" = 9 ] || echo "$owners owners, $eps endpoint records")"
why=""
for i in 1 2 3 4 5 6 7 8 9 10; do why+=$(race_del "$i" $((i % 2 + 1))); done
why+="$(left_etcd "$rnet" 1 1)"
for h in 1 2; do
  lab_run "$h" ip link show "ovx$rvni" >/dev/null 2>&1 &&
    why+="ovx$rvni left on node$h (ports of ovbr$rvni: $(lab_run "$h" ip -o link show master "ovbr$rvni" 2>&1 | awk -F': ' '{print $2}' | tr '\n' ' '));"
done
[ -n "$(sandbox_ns "$rvni")" ] && why+="sandboxes left: $(sandbox_ns "$rvni" | tr '\n' ' ')"
verdict cnitool 1.0.0 DEL "concurrent: DEL of all ten leaves nothing" "$why"

# GC and STATUS (1.1.0): libcni 1.1.2 has neither, so the plugins are run directly.
say "1d. GC and STATUS (1.1.0, plugins run directly)"
gnet=cf-gc gvni=$((VBASE + 41))
gc_conf() { # NODE
  jq -nc --arg node "$1" --arg name "$gnet" --argjson vni "$gvni" --arg e "$E" --arg d "$WORK/data-gc-$1" \
    '{cniVersion: "1.1.0", name: $name, type: "vxlan-overlay", vni: $vni, node: $node, etcd: {endpoints: [$e]},
      ipam: {type: "etcd-ipam", subnet: "10.41.0.0/24", dataDir: $d}}'
}
gc_conf node1 >"$WORK/gc1.json"
gc_conf node2 >"$WORK/gc2.json"
container gcv; gv=$CPATH; container gcs; gs=$CPATH; container gco; go=$CPATH
plug 1 vxlan-overlay ADD "$WORK/gc1.json" CNI_CONTAINERID=gc-valid CNI_NETNS="$gv" CNI_IFNAME=eth0; why=$([ "$P_RC" = 0 ] || echo "valid: $P_OUT;")
jq -e '.cniVersion == "1.1.0"' <<<"$P_OUT" >/dev/null 2>&1 || why+="result cniVersion is not 1.1.0: $P_OUT;"
plug 1 vxlan-overlay ADD "$WORK/gc1.json" CNI_CONTAINERID=gc-stale CNI_NETNS="$gs" CNI_IFNAME=eth0; why+=$([ "$P_RC" = 0 ] || echo "stale: $P_OUT;")
plug 2 vxlan-overlay ADD "$WORK/gc2.json" CNI_CONTAINERID=gc-other CNI_NETNS="$go" CNI_IFNAME=eth0; why+=$([ "$P_RC" = 0 ] || echo "other node: $P_OUT")
verdict plugin 1.1.0 ADD "vxlan-overlay+etcd-ipam: three attachments for GC (two on node1, one on node2)" "$why"
stale_veth=$(lab_run 1 ip -o link show | grep -F 'alias gc-stale/eth0' | awk -F': ' '{sub(/@.*/, "", $2); print $2}')
[ -z "$stale_veth" ] && stale_veth=$(lab_run 1 ip -d -o link show | grep -F 'gc-stale/eth0' | awk -F': ' '{sub(/@.*/, "", $2); print $2}')
jq '. + {"cni.dev/valid-attachments": [{containerID: "gc-valid", ifname: "eth0"}]}' "$WORK/gc1.json" >"$WORK/gc1-gc.json"
plug 1 vxlan-overlay GC "$WORK/gc1-gc.json"
verdict plugin 1.1.0 GC "vxlan-overlay+etcd-ipam: exit 0, empty stdout" "$([ "$P_RC" = 0 ] && [ -z "$P_OUT" ] || echo "exit $P_RC: $P_OUT $P_ERR")"
why=""
[ -n "$(keys_under "ipam/$gnet/owners/gc-stale/")" ] && why+="stale owner kept;"
[ -n "$(keys_under "endpoints/$gnet/gc-stale/")" ] && why+="stale endpoint record kept;"
[ -n "$stale_veth" ] && lab_run 1 ip link show "$stale_veth" >/dev/null 2>&1 && why+="stale host veth $stale_veth kept;"
[ -z "$stale_veth" ] && why+="(could not identify the stale host veth by its alias);"
verdict plugin 1.1.0 GC "removes the stale attachment (owner, endpoint record, host veth)" "$why"
why=""
[ -n "$(keys_under "ipam/$gnet/owners/gc-valid/eth0")" ] || why+="valid owner removed;"
[ -n "$(keys_under "endpoints/$gnet/gc-valid/eth0")" ] || why+="valid endpoint record removed;"
grep -q 'inet 10.41.0.' <<<"$(ip -n "$LAB_PREFIX-c-gcv" -o addr show dev eth0 2>/dev/null)" || why+="valid container lost its address;"
verdict plugin 1.1.0 GC "keeps the valid attachment" "$why"
why=""
[ -n "$(keys_under "ipam/$gnet/owners/gc-other/eth0")" ] || why+="node2's owner removed;"
[ -n "$(keys_under "endpoints/$gnet/gc-other/eth0")" ] || why+="node2's endpoint record removed;"
verdict plugin 1.1.0 GC "never touches another node's attachments" "$why"
# etcd-ipam's own GC, directly, with an empty valid list on node2: releases gc-other's addresses.
jq -c '. + {"cni.dev/valid-attachments": []}' "$WORK/gc2.json" >"$WORK/gc2-gc.json"
plug 2 etcd-ipam GC "$WORK/gc2-gc.json"
why=$([ "$P_RC" = 0 ] || echo "exit $P_RC: $P_OUT")
[ -n "$(keys_under "ipam/$gnet/owners/gc-other/")" ] && why+="node2's stale owner kept;"
[ -n "$(keys_under "ipam/$gnet/owners/gc-valid/eth0")" ] || why+="node1's owner removed by node2's GC;"
verdict plugin 1.1.0 GC "etcd-ipam: releases this node's allocations not in cni.dev/valid-attachments" "$why"
plug 1 vxlan-overlay DEL "$WORK/gc1.json" CNI_CONTAINERID=gc-valid CNI_NETNS="$gv" CNI_IFNAME=eth0; why=$([ "$P_RC" = 0 ] || echo "$P_OUT;")
plug 1 vxlan-overlay DEL "$WORK/gc1.json" CNI_CONTAINERID=gc-stale CNI_IFNAME=eth0; why+=$([ "$P_RC" = 0 ] || echo "$P_OUT;")
plug 2 vxlan-overlay DEL "$WORK/gc2.json" CNI_CONTAINERID=gc-other CNI_IFNAME=eth0; why+=$([ "$P_RC" = 0 ] || echo "$P_OUT;")
why+="$(left_etcd "$gnet" 1 1)"
verdict plugin 1.1.0 DEL "after GC: DEL of every attachment (also GC'd ones, without CNI_NETNS) leaves nothing" "$why"

# STATUS against the lab's etcd, an exhausted pool, and a separate etcd that is then stopped.
plug 1 vxlan-overlay STATUS "$WORK/gc1.json"
verdict plugin 1.1.0 STATUS "vxlan-overlay: 0 with etcd up" "$([ "$P_RC" = 0 ] && [ -z "$P_OUT" ] || echo "exit $P_RC: $P_OUT")"
plug 1 etcd-ipam STATUS "$WORK/gc1.json"
verdict plugin 1.1.0 STATUS "etcd-ipam: 0 with etcd up" "$([ "$P_RC" = 0 ] && [ -z "$P_OUT" ] || echo "exit $P_RC: $P_OUT")"
jq -c --argjson vni "$((VBASE + 42))" '.name = "cf-full" | .vni = $vni | .ipam.subnet = "10.42.0.0/30"' "$WORK/gc1.json" >"$WORK/full.json"
container full; fc=$CPATH
plug 1 vxlan-overlay ADD "$WORK/full.json" CNI_CONTAINERID=full-1 CNI_NETNS="$fc" CNI_IFNAME=eth0
full_rc=$P_RC
plug 1 etcd-ipam STATUS "$WORK/full.json"
why=$([ "$full_rc" = 0 ] || echo "ADD of the only address failed;")
[ "$P_RC" != 0 ] && [ "$(jq -r .code <<<"$P_OUT" 2>/dev/null)" = 50 ] || why+="exit $P_RC: $P_OUT"
verdict plugin 1.1.0 STATUS "etcd-ipam: 50 when the pool (/30) is exhausted" "$why"
plug 1 vxlan-overlay DEL "$WORK/full.json" CNI_CONTAINERID=full-1 CNI_NETNS="$fc" CNI_IFNAME=eth0

lab_bg 3 "$WORK/etcd-status.log" etcd --name st --data-dir "$WORK/etcd-status" \
  --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster st=http://127.0.0.1:23800 --log-level error --logger zap
st_pid=$LAB_LAST_PID
st_conf() { jq -c '.etcd = {endpoints: ["127.0.0.1:23790"], timeoutMs: 1000} | .node = "node3"' "$WORK/gc1.json"; }
st_conf >"$WORK/st.json"
if wait_for 15 lab_run 3 etcdctl --endpoints 127.0.0.1:23790 endpoint health; then
  for p in vxlan-overlay etcd-ipam; do
    plug 3 "$p" STATUS "$WORK/st.json"
    verdict plugin 1.1.0 STATUS "$p: 0 with its etcd up" "$([ "$P_RC" = 0 ] || echo "exit $P_RC: $P_OUT")"
  done
  kill "$st_pid"; wait "$st_pid" 2>/dev/null
  for p in vxlan-overlay etcd-ipam; do
    plug 3 "$p" STATUS "$WORK/st.json"
    why=""
    [ "$P_RC" != 0 ] || why="exit 0;"
    [ "$(jq -r .code <<<"$P_OUT" 2>/dev/null)" = 50 ] || why+="code is not 50: $P_OUT"
    ((P_MS < 5000)) || why+="took $P_MS ms (timeoutMs 1000);"
    verdict plugin 1.1.0 STATUS "$p: 50 with etcd stopped" "$why"
  done
else
  fail plugin 1.1.0 STATUS "separate etcd for the stopped-etcd case" "it did not start: $(cat "$WORK/etcd-status.log")"
fi

# gwbridge-egress GC and STATUS (1.1.0), chained by hand after vxlan-overlay. Its IPAM is etcd-ipam
# here: Debian's host-local 1.1.1 does not speak 1.1.0.
if [ "$GW" = 1 ]; then
  wnet=cf-gwgc wvni=$((VBASE + 45)) wbr=cfgwgc
  jq -nc --arg name "$wnet" --argjson vni "$wvni" --arg e "$E" --arg d "$WORK/data-gwgc" \
    '{cniVersion: "1.1.0", name: $name, type: "vxlan-overlay", vni: $vni, node: "node1", etcd: {endpoints: [$e]},
      ipam: {type: "etcd-ipam", subnet: "10.45.0.0/24", dataDir: $d}}' >"$WORK/wov.json"
  jq -nc --arg name "$wnet" --arg b "$wbr" --arg e "$E" --arg d "$WORK/data-gwgc" \
    '{cniVersion: "1.1.0", name: $name, type: "gwbridge-egress", bridge: $b, ifname: "eth1",
      ipam: {type: "etcd-ipam", subnet: "172.28.0.0/24", node: "node1", etcd: {endpoints: [$e]}, dataDir: $d}}' >"$WORK/wgw.json"
  nft_gw_before=$(lab_run 1 nft -s list ruleset 2>/dev/null)
  why=""
  declare -A WRES=()
  for who in valid stale; do
    container "w$who"; wns=$CPATH
    plug 1 vxlan-overlay ADD "$WORK/wov.json" CNI_CONTAINERID="w-$who" CNI_NETNS="$wns" CNI_IFNAME=eth0
    [ "$P_RC" = 0 ] || why+="vxlan-overlay ADD $who: $P_OUT;"
    jq -c --argjson prev "${P_OUT:-null}" '. + {prevResult: $prev}' "$WORK/wgw.json" >"$WORK/wgw-$who.json" 2>/dev/null
    plug 1 gwbridge-egress ADD "$WORK/wgw-$who.json" CNI_CONTAINERID="w-$who" CNI_NETNS="$wns" CNI_IFNAME=eth0
    [ "$P_RC" = 0 ] || why+="gwbridge-egress ADD $who: $P_OUT;"
    WRES[$who]=$P_OUT
  done
  verdict plugin 1.1.0 ADD "gwbridge-egress after vxlan-overlay: two attachments for GC" "$why"
  wveth() { jq -r --arg b "$wbr" '.interfaces[] | select((.sandbox // "") == "" and .name != $b and (.name | startswith("gw"))) | .name' <<<"${WRES[$1]}" 2>/dev/null | head -1; }
  sv=$(wveth stale) vv=$(wveth valid)
  jq -c '. + {"cni.dev/valid-attachments": [{containerID: "w-valid", ifname: "eth0"}]}' "$WORK/wgw.json" >"$WORK/wgw-gc.json"
  plug 1 gwbridge-egress GC "$WORK/wgw-gc.json"
  verdict plugin 1.1.0 GC "gwbridge-egress: exit 0, empty stdout" "$([ "$P_RC" = 0 ] && [ -z "$P_OUT" ] || echo "exit $P_RC: $P_OUT $P_ERR")"
  why=""
  [ -z "$sv" ] && why+="no host veth in the stale ADD's result;"
  [ -n "$sv" ] && lab_run 1 ip link show "$sv" >/dev/null 2>&1 && why+="stale host veth $sv kept;"
  [ -n "$(keys_under "ipam/$wbr/owners/w-stale/")" ] && why+="stale allocation kept;"
  grep -q "w-stale" <<<"$(lab_run 1 nft -s list ruleset 2>/dev/null)" && why+="stale nft rules kept;"
  verdict plugin 1.1.0 GC "gwbridge-egress: removes the stale attachment (veth, rules, allocation)" "$why"
  why=""
  [ -n "$vv" ] && lab_run 1 ip link show "$vv" >/dev/null 2>&1 || why+="valid host veth ${vv:-?} removed;"
  [ -n "$(keys_under "ipam/$wbr/owners/w-valid/")" ] || why+="valid allocation removed;"
  grep -q "w-valid" <<<"$(lab_run 1 nft -s list ruleset 2>/dev/null)" || why+="valid nft rules removed;"
  verdict plugin 1.1.0 GC "gwbridge-egress: keeps the valid attachment" "$why"
  plug 1 gwbridge-egress STATUS "$WORK/wgw.json"
  verdict plugin 1.1.0 STATUS "gwbridge-egress: 0 with its IPAM available" "$([ "$P_RC" = 0 ] && [ -z "$P_OUT" ] || echo "exit $P_RC: $P_OUT")"
  why=""
  for who in valid stale; do
    plug 1 gwbridge-egress DEL "$WORK/wgw-$who.json" CNI_CONTAINERID="w-$who" CNI_NETNS="/run/netns/$LAB_PREFIX-c-w$who" CNI_IFNAME=eth0
    [ "$P_RC" = 0 ] || why+="gwbridge-egress DEL $who: $P_OUT;"
    plug 1 vxlan-overlay DEL "$WORK/wov.json" CNI_CONTAINERID="w-$who" CNI_NETNS="/run/netns/$LAB_PREFIX-c-w$who" CNI_IFNAME=eth0
    [ "$P_RC" = 0 ] || why+="vxlan-overlay DEL $who: $P_OUT;"
  done
  why+="$(left_etcd "$wnet" 1 1)$(left_etcd "$wbr" 1 0)"
  lab_run 1 ip link show "$wbr" >/dev/null 2>&1 && why+="bridge $wbr left;"
  [ "$nft_gw_before" = "$(lab_run 1 nft -s list ruleset 2>/dev/null)" ] || why+="nft ruleset changed;"
  verdict plugin 1.1.0 DEL "gwbridge-egress + vxlan-overlay after GC: nothing left (etcd, bridge, nft)" "$why"
else
  for verb in GC STATUS; do na plugin 1.1.0 "$verb" "gwbridge-egress" "gwbridge-egress not built yet"; done
fi

# ---------------------------------------------------------------------------------------------
# 4. Reference plugins chained after ours

say "4. reference plugins chained after ours (portmap, tuning, bandwidth)"
TUNING='{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"0"}}'
BANDWIDTH='{"type":"bandwidth","ingressRate":8000000,"ingressBurst":80000,"egressRate":8000000,"egressBurst":80000}'
PORTMAP='{"type":"portmap","capabilities":{"portMappings":true},"snat":true}'
CAPS='{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}'
# The host's nft ruleset; with portmap in the chain, without the iptables-nft tables (portmap 1.1.1
# creates its CNI-HOSTPORT-* chains once and leaves them, by design).
nft_ours() { # WITH_PORTMAP(0|1)
  if [ "$1" = 1 ]; then
    lab_run 1 nft -s list ruleset 2>/dev/null | awk '/^table / { skip = ($2 == "ip" || $2 == "ip6") && ($3 == "nat" || $3 == "filter" || $3 == "mangle" || $3 == "raw") } !skip'
  else
    lab_run 1 nft -s list ruleset 2>/dev/null
  fi
}
chain_case() { # VERSION INDEX WITH_GW(0|1) WITH_PORTMAP(0|1)
  local v=$1 i=$2 gw=$3 pm=$4 plugins=() name tag net vni dir c netns cns before why hostveth
  tag="$([ "$gw" = 1 ] && echo "+gwbridge-egress")$([ "$pm" = 1 ] && echo "+portmap")+tuning+bandwidth"
  name="vxlan-overlay$tag"
  if [ "$gw" = 1 ] && [ "$GW" = 0 ]; then
    for verb in ADD CHECK DEL; do na cnitool "$v" "$verb" "chain $name" "gwbridge-egress not built yet"; done
    return
  fi
  net="cf-chain$i" vni=$((VBASE + 50 + i)) dir="$WORK/netconf/chain$i"
  plugins=("$(overlay_plugin "$vni" node1 "10.50.$i.0/24" "$WORK/data-h1")")
  [ "$gw" = 1 ] && plugins+=("$(gw_plugin "cfgwc$i" "172.30.$i.0/24" "$WORK/data-h1")")
  [ "$pm" = 1 ] && plugins+=("$PORTMAP")
  plugins+=("$TUNING" "$BANDWIDTH")
  conflist "$dir/$net.conflist" "$v" "$net" "${plugins[@]}"
  container "chain$i"; netns=$CPATH cns="$LAB_PREFIX-c-chain$i"
  before=$(host_links 1)
  nft_before=$(nft_ours "$pm")
  cnt 1 "$dir" add "$net" "$netns" CAP_ARGS="$CAPS"
  verdict cnitool "$v" ADD "chain $name" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  if [ "$C_RC" = 0 ]; then
    hostveth=$(jq -r '.interfaces[] | select((.sandbox // "") == "" and (.name | startswith("ov"))) | .name' <<<"$C_OUT" | grep -v '^ovbr' | head -1)
    why=""
    grep -q tbf <<<"$(lab_run 1 tc qdisc show dev "$hostveth" 2>/dev/null)" || why+="no tbf qdisc on host veth $hostveth (ingress shaping);"
    [ "$(ip netns exec "$cns" sysctl -n net.ipv4.conf.eth0.rp_filter 2>/dev/null)" = 0 ] || why+="tuning's sysctl not applied;"
    if [ "$pm" = 1 ]; then
      grep -q 'dport 18080' <<<"$(lab_run 1 nft -s list ruleset 2>/dev/null)" || why+="no DNAT rule for host port 18080;"
    fi
    verdict cnitool "$v" ADD "chain $name: the chained plugins took effect" "$why"
  fi
  if [ "$v" = 0.3.1 ]; then
    na cnitool "$v" CHECK "chain $name" "CHECK exists from 0.4.0 on"
  else
    cnt 1 "$dir" check "$net" "$netns" CAP_ARGS="$CAPS"
    if [ "$C_RC" = 0 ]; then
      pass cnitool "$v" CHECK "chain $name"
    elif [ "$pm" = 1 ] && grep -q 'could not check ipv6 dnat' <<<"$C_ERR"; then
      na cnitool "$v" CHECK "chain $name" "known failure of Debian's portmap 1.1.1 on IPv4-only containers (upstream bug #819), not ours"
    else
      fail cnitool "$v" CHECK "chain $name" "exit $C_RC: $C_ERR"
    fi
  fi
  cnt 1 "$dir" del "$net" "$netns" CAP_ARGS="$CAPS"
  verdict cnitool "$v" DEL "chain $name" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  why="$(left_etcd "$net" 1 1)$(left_links "$before" "$(host_links 1)")"
  [ "$nft_before" = "$(nft_ours "$pm")" ] || why+="nft ruleset changed: $(diff <(echo "$nft_before") <(nft_ours "$pm") | grep '^[<>]' | head -4 | tr '\n' ' ');"
  [ "$pm" = 1 ] && grep -q 'dport 18080' <<<"$(lab_run 1 nft -s list ruleset 2>/dev/null)" && why+="portmap's DNAT rule left;"
  verdict cnitool "$v" DEL "chain $name: nothing left" "$why"
  ip netns del "$cns" 2>/dev/null
}
ci=0
for v in 0.4.0 1.0.0; do
  for gw in 0 1; do
    for pm in 0 1; do chain_case "$v" "$ci" "$gw" "$pm"; ci=$((ci + 1)); done
  done
done

# ---------------------------------------------------------------------------------------------
# 5. Bad input

say "5. bad input"
BH=3                                  # the host where bad input is sent
container bad; BADC=$CPATH              # a container namespace for the cases that need one
BADCNS="$LAB_PREFIX-c-bad"
B=$WORK/bad
mkdir -p "$B"
STD_ENV=(CNI_CONTAINERID=bad-1 CNI_NETNS="$BADC" CNI_IFNAME=eth0)
BVNI=$((VBASE + 80))
OV=$(jq -nc --argjson vni "$BVNI" --arg e "$E" --arg d "$WORK/data-h3" \
  '{cniVersion: "1.0.0", name: "cf-bad", type: "vxlan-overlay", vni: $vni, node: "node3", etcd: {endpoints: [$e]},
    ipam: {type: "etcd-ipam", subnet: "10.73.0.0/24", dataDir: $d}}')
IP=$(jq -nc --arg e "$E" --arg d "$WORK/data-h3" \
  '{cniVersion: "1.0.0", name: "cf-badipam", type: "vxlan-overlay",
    ipam: {type: "etcd-ipam", subnet: "10.75.0.0/24", node: "node3", etcd: {endpoints: [$e]}, dataDir: $d}}')
PREV=$(jq -nc --arg n "$BADC" '{cniVersion: "1.0.0", interfaces: [{name: "eth0", sandbox: $n, mac: "02:00:00:00:00:01"}],
    ips: [{address: "10.73.0.5/24", gateway: "10.73.0.1", interface: 0}]}')
GWC=$(jq -nc --arg d "$WORK/data-h3" --argjson prev "$PREV" \
  '{cniVersion: "1.0.0", name: "cf-bad", type: "gwbridge-egress", bridge: "cfgwbad", ifname: "eth1",
    ipam: {type: "host-local", subnet: "172.29.0.0/24", dataDir: $d}, prevResult: $prev}')
mk() { # NAME BASE_JSON JQ_FILTER: writes $B/NAME.json
  jq -c "$3" <<<"$2" >"$B/$1.json"
}
HUGE=$B/huge-overlay.json
{
  printf '{"cniVersion":"1.0.0","name":"cf-bad","type":"vxlan-overlay","pad":"'
  head -c $((17 * 1024 * 1024)) /dev/zero | tr '\0' x
  printf '"}'
} >"$HUGE"

# bad PLUGIN VERB EXPECTED_CODE CASE STDIN_FILE [VAR=VALUE...]
bad() {
  local p=$1 verb=$2 want=$3 case=$4 in=$5 before after why="" code reqv errv label=$2 cmd=$2
  shift 5
  case $verb in ADD | DEL | CHECK | GC | STATUS | VERSION) ;; none) cmd="" label=ADD ;; *) label=ADD ;; esac
  reqv=$(jq -r '.cniVersion // empty' "$in" 2>/dev/null | head -1)
  [[ $reqv =~ ^(0\.3\.0|0\.3\.1|0\.4\.0|1\.0\.0|1\.1\.0)$ ]] || reqv=""
  before=$(settled_snapshot "$BH" "$BADCNS")
  plug "$BH" "$p" "$cmd" "$in" "$@"
  after=$(snapshot "$BH" "$BADCNS")
  [ "$P_RC" != 0 ] || why+="exit 0;"
  if ! jq -s -e 'length == 1 and (.[0] | type == "object")' <<<"$P_OUT" >/dev/null 2>&1; then
    why+="stdout is not one JSON object: $(printf '%s' "$P_OUT" | head -c 200);"
  else
    jq -e '(.cniVersion | type) == "string" and (.code | type) == "number" and (.msg | type) == "string" and has("details")' <<<"$P_OUT" >/dev/null ||
      why+="error lacks cniVersion/code/msg/details: $P_OUT;"
    code=$(jq -r .code <<<"$P_OUT")
    [ "$code" = "$want" ] || why+="code $code, expected $want ($(jq -r .msg <<<"$P_OUT"));"
    # The error speaks the request's version when the request has a supported one.
    errv=$(jq -r .cniVersion <<<"$P_OUT")
    if [ -n "$reqv" ] && [ "$errv" != "$reqv" ] && [ "$in" != "$HUGE" ]; then
      why+="error cniVersion $errv, request's $reqv;"
    fi
  fi
  grep -qi 'panicked' <<<"$P_ERR" && why+="stderr: $(grep -i panicked <<<"$P_ERR" | head -1);"
  if [ "$before" != "$after" ]; then
    why+="state changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -6 | tr '\n' ' ');"
  fi
  [ -n "${BAD_MAX_MS:-}" ] && ((P_MS > BAD_MAX_MS)) && why+="took $P_MS ms (limit $BAD_MAX_MS);"
  verdict bad-input "${reqv:-invalid}" "$label" "$p: $case (code $want)" "$why"
}

# -- vxlan-overlay
mk ov "$OV" '.'
O=$B/ov.json
bad vxlan-overlay none 4 "CNI_COMMAND missing" "$O" "${STD_ENV[@]}"
bad vxlan-overlay FOO 4 "CNI_COMMAND unknown (FOO)" "$O" "${STD_ENV[@]}"
bad vxlan-overlay ADD 4 "CNI_CONTAINERID missing" "$O" CNI_NETNS="$BADC" CNI_IFNAME=eth0
bad vxlan-overlay ADD 4 "CNI_CONTAINERID invalid (a/b)" "$O" CNI_CONTAINERID=a/b CNI_NETNS="$BADC" CNI_IFNAME=eth0
bad vxlan-overlay ADD 4 "CNI_IFNAME missing" "$O" CNI_CONTAINERID=bad-1 CNI_NETNS="$BADC"
bad vxlan-overlay ADD 4 "CNI_IFNAME too long (16 bytes)" "$O" CNI_CONTAINERID=bad-1 CNI_NETNS="$BADC" CNI_IFNAME=eth0123456789012
bad vxlan-overlay ADD 4 "CNI_IFNAME with /" "$O" CNI_CONTAINERID=bad-1 CNI_NETNS="$BADC" CNI_IFNAME=eth/0
bad vxlan-overlay ADD 4 "CNI_NETNS missing" "$O" CNI_CONTAINERID=bad-1 CNI_IFNAME=eth0
bad vxlan-overlay ADD 4 "CNI_NETNS relative" "$O" CNI_CONTAINERID=bad-1 CNI_NETNS=run/netns/x CNI_IFNAME=eth0
bad vxlan-overlay ADD 4 "CNI_NETNS not a namespace (/etc/hostname)" "$O" CNI_CONTAINERID=bad-1 CNI_NETNS=/etc/hostname CNI_IFNAME=eth0
bad vxlan-overlay ADD 4 "CNI_NETNS does not exist" "$O" CNI_CONTAINERID=bad-1 CNI_NETNS=/run/netns/cf-does-not-exist CNI_IFNAME=eth0
bad vxlan-overlay ADD 4 "CNI_ARGS malformed" "$O" "${STD_ENV[@]}" CNI_ARGS='garbage'
printf '{"cniVersion":"1.0.0","name":' >"$B/malformed.json"
bad vxlan-overlay ADD 6 "malformed JSON" "$B/malformed.json" "${STD_ENV[@]}"
: >"$B/empty.json"
bad vxlan-overlay ADD 6 "empty stdin" "$B/empty.json" "${STD_ENV[@]}"
echo '[]' >"$B/array.json"
bad vxlan-overlay ADD 6 "JSON array instead of an object" "$B/array.json" "${STD_ENV[@]}"
bad vxlan-overlay ADD 6 "huge JSON (17 MiB)" "$HUGE" "${STD_ENV[@]}"
mk nover "$OV" 'del(.cniVersion)'
bad vxlan-overlay ADD 1 "cniVersion missing" "$B/nover.json" "${STD_ENV[@]}"
mk v999 "$OV" '.cniVersion = "9.9.9"'
bad vxlan-overlay ADD 1 "cniVersion unknown (9.9.9)" "$B/v999.json" "${STD_ENV[@]}"
mk vnum "$OV" '.cniVersion = 1'
bad vxlan-overlay ADD 6 "cniVersion a number" "$B/vnum.json" "${STD_ENV[@]}"
mk badname "$OV" '.name = "bad name"'
bad vxlan-overlay ADD 7 "network name invalid (bad name)" "$B/badname.json" "${STD_ENV[@]}"
mk noname "$OV" 'del(.name)'
bad vxlan-overlay ADD 7 "network name missing" "$B/noname.json" "${STD_ENV[@]}"
mk vni0 "$OV" '.vni = 0'
bad vxlan-overlay ADD 7 "vni 0" "$B/vni0.json" "${STD_ENV[@]}"
mk vnistr "$OV" '.vni = "x"'
bad vxlan-overlay ADD 6 "vni a string" "$B/vnistr.json" "${STD_ENV[@]}"
mk vnibig "$OV" '.vni = 16777216'
bad vxlan-overlay ADD 7 "vni 16777216" "$B/vnibig.json" "${STD_ENV[@]}"
mk mtu "$OV" '.mtu = 100'
bad vxlan-overlay ADD 7 "mtu 100" "$B/mtu.json" "${STD_ENV[@]}"
mk ipampath "$OV" '.ipam.type = "../x"'
bad vxlan-overlay ADD 7 "IPAM type with a path (../x)" "$B/ipampath.json" "${STD_ENV[@]}"
mk noipam "$OV" 'del(.ipam)'
bad vxlan-overlay ADD 7 "ipam section missing" "$B/noipam.json" "${STD_ENV[@]}"
mk ipamstr "$OV" '.ipam = "etcd-ipam"'
bad vxlan-overlay ADD 6 "ipam a string" "$B/ipamstr.json" "${STD_ENV[@]}"
mk ipamnone "$OV" '.ipam.type = "no-such-ipam"'
bad vxlan-overlay ADD 7 "IPAM plugin not in CNI_PATH" "$B/ipamnone.json" "${STD_ENV[@]}"
mk noetcd "$OV" '.etcd.endpoints = []'
bad vxlan-overlay ADD 7 "etcd endpoints empty" "$B/noetcd.json" "${STD_ENV[@]}"
mk vtep "$OV" '.vtep = {address: "192.0.2.77"}'
bad vxlan-overlay ADD 7 "vtep address on no interface" "$B/vtep.json" "${STD_ENV[@]}"
mk unreach "$OV" '.etcd = {endpoints: ["192.168.205.250:2379"], timeoutMs: 500}'
BAD_MAX_MS=6000 bad vxlan-overlay ADD 11 "unreachable etcd (timeoutMs 500)" "$B/unreach.json" "${STD_ENV[@]}"
BAD_MAX_MS=6000 bad vxlan-overlay DEL 11 "unreachable etcd (timeoutMs 500)" "$B/unreach.json" CNI_CONTAINERID=bad-1 CNI_IFNAME=eth0
bad vxlan-overlay ADD 102 "requested IP outside every range (CNI_ARGS IP=)" "$O" "${STD_ENV[@]}" CNI_ARGS='IgnoreUnknown=1;IP=10.99.0.5'
bad vxlan-overlay ADD 103 "interface already exists (CNI_IFNAME=lo)" "$O" CNI_CONTAINERID=bad-1 CNI_NETNS="$BADC" CNI_IFNAME=lo
mk sctp "$OV" '.runtimeConfig = {portMappings: [{hostPort: 8080, containerPort: 80, protocol: "sctp"}]}'
bad vxlan-overlay ADD 2 "sctp port mapping" "$B/sctp.json" "${STD_ENV[@]}"
mk chk031 "$OV" '.cniVersion = "0.3.1"'
bad vxlan-overlay CHECK 1 "CHECK at cniVersion 0.3.1" "$B/chk031.json" "${STD_ENV[@]}"
mk brokenprev "$OV" '.prevResult = {cniVersion: "1.0.0", ips: [{address: "x"}]}'
bad vxlan-overlay CHECK 6 "broken prevResult" "$B/brokenprev.json" "${STD_ENV[@]}"
bad vxlan-overlay CHECK 7 "CHECK without prevResult" "$O" "${STD_ENV[@]}"
bad vxlan-overlay GC 1 "GC at cniVersion 1.0.0" "$O"
bad vxlan-overlay STATUS 1 "STATUS at cniVersion 1.0.0" "$O"

# Cases that need something in place first: an exhausted /30 and a VNI held by another network.
mk small "$OV" '.name = "cf-small" | .vni = '"$((BVNI + 1))"' | .ipam.subnet = "10.76.0.0/30"'
container occ; occ=$CPATH
plug "$BH" vxlan-overlay ADD "$B/small.json" CNI_CONTAINERID=occupant CNI_NETNS="$occ" CNI_IFNAME=eth0
if [ "$P_RC" = 0 ]; then
  bad vxlan-overlay ADD 101 "exhausted pool (/30, its one address taken)" "$B/small.json" "${STD_ENV[@]}"
  bad etcd-ipam ADD 101 "exhausted pool (/30, its one address taken)" "$B/small.json" "${STD_ENV[@]}"
  mk vnitaken "$OV" '.name = "cf-other" | .vni = '"$((BVNI + 1))"' | .ipam.subnet = "10.77.0.0/24"'
  bad vxlan-overlay ADD 7 "VNI used by another network on this host" "$B/vnitaken.json" "${STD_ENV[@]}"
else
  fail bad-input 1.0.0 ADD "vxlan-overlay: set-up of the exhausted-pool cases" "$P_OUT"
fi
plug "$BH" vxlan-overlay DEL "$B/small.json" CNI_CONTAINERID=occupant CNI_NETNS="$occ" CNI_IFNAME=eth0

# -- etcd-ipam (run directly, as a main plugin delegates to it)
mk ip "$IP" '.'
I=$B/ip.json
bad etcd-ipam ADD 6 "malformed JSON" "$B/malformed.json" "${STD_ENV[@]}"
bad etcd-ipam ADD 6 "huge JSON (17 MiB)" "$HUGE" "${STD_ENV[@]}"
mk ipv999 "$IP" '.cniVersion = "0.2.0"'
bad etcd-ipam ADD 1 "cniVersion unsupported (0.2.0)" "$B/ipv999.json" "${STD_ENV[@]}"
mk ipname "$IP" '.name = "bad/name"'
bad etcd-ipam ADD 7 "network name invalid (bad/name)" "$B/ipname.json" "${STD_ENV[@]}"
mk cidr33 "$IP" '.ipam.subnet = "10.75.0.0/33"'
bad etcd-ipam ADD 7 "invalid CIDR (/33)" "$B/cidr33.json" "${STD_ENV[@]}"
mk hostbits "$IP" '.ipam.subnet = "10.75.0.5/24"'
bad etcd-ipam ADD 7 "subnet with host bits set" "$B/hostbits.json" "${STD_ENV[@]}"
mk range "$IP" '.ipam.rangeStart = "10.75.0.50" | .ipam.rangeEnd = "10.75.0.10"'
bad etcd-ipam ADD 7 "rangeStart after rangeEnd" "$B/range.json" "${STD_ENV[@]}"
mk rangeout "$IP" '.ipam.rangeEnd = "10.76.0.10"'
bad etcd-ipam ADD 7 "rangeEnd outside the subnet" "$B/rangeout.json" "${STD_ENV[@]}"
mk gwout "$IP" '.ipam.gateway = "10.99.0.1"'
bad etcd-ipam ADD 7 "gateway outside the subnet" "$B/gwout.json" "${STD_ENV[@]}"
mk subnetnum "$IP" '.ipam.subnet = 10'
bad etcd-ipam ADD 6 "subnet a number" "$B/subnetnum.json" "${STD_ENV[@]}"
mk rangesstr "$IP" 'del(.ipam.subnet) | .ipam.ranges = "10.75.0.0/24"'
bad etcd-ipam ADD 6 "ranges a string" "$B/rangesstr.json" "${STD_ENV[@]}"
mk noranges "$IP" 'del(.ipam.subnet)'
bad etcd-ipam ADD 108 "no subnet, no ranges and no network record" "$B/noranges.json" "${STD_ENV[@]}"
mk badnode "$IP" '.ipam.node = "bad node"'
bad etcd-ipam ADD 7 "node name invalid" "$B/badnode.json" "${STD_ENV[@]}"
mk ipunreach "$IP" '.ipam.etcd = {endpoints: ["192.168.205.250:2379"], timeoutMs: 500}'
BAD_MAX_MS=4000 bad etcd-ipam ADD 11 "unreachable etcd (timeoutMs 500)" "$B/ipunreach.json" "${STD_ENV[@]}"
BAD_MAX_MS=4000 bad etcd-ipam DEL 11 "unreachable etcd (timeoutMs 500)" "$B/ipunreach.json" CNI_CONTAINERID=bad-1 CNI_IFNAME=eth0
mk reqgw "$IP" '.args = {cni: {ips: ["10.75.0.1"]}}'
bad etcd-ipam ADD 102 "requested address is the gateway (args.cni.ips)" "$B/reqgw.json" "${STD_ENV[@]}"
bad etcd-ipam ADD 4 "K8S_POD_NAME invalid" "$I" "${STD_ENV[@]}" CNI_ARGS='IgnoreUnknown=1;K8S_POD_NAME=bad name!'
bad etcd-ipam ADD 4 "CNI_IFNAME too long" "$I" CNI_CONTAINERID=bad-1 CNI_NETNS="$BADC" CNI_IFNAME=eth0123456789012
bad etcd-ipam CHECK 107 "CHECK of an attachment that has no allocation" "$I" "${STD_ENV[@]}"
plug "$BH" etcd-ipam ADD "$I" CNI_CONTAINERID=holder CNI_NETNS="$BADC" CNI_IFNAME=eth0 CNI_ARGS='IgnoreUnknown=1;K8S_POD_NAME=held'
if [ "$P_RC" = 0 ]; then
  bad etcd-ipam ADD 100 "name held by another container (case-insensitive: HELD)" "$I" "${STD_ENV[@]}" CNI_ARGS='IgnoreUnknown=1;K8S_POD_NAME=HELD'
else
  fail bad-input 1.0.0 ADD "etcd-ipam: set-up of the name-held case" "$P_OUT"
fi
plug "$BH" etcd-ipam DEL "$I" CNI_CONTAINERID=holder CNI_IFNAME=eth0

# -- gwbridge-egress
if [ "$GW" = 1 ]; then
  mk gw "$GWC" '.'
  G=$B/gw.json
  mk gwnoprev "$GWC" 'del(.prevResult)'
  bad gwbridge-egress ADD 7 "no prevResult" "$B/gwnoprev.json" "${STD_ENV[@]}"
  mk gwsctp "$GWC" '.runtimeConfig = {portMappings: [{hostPort: 8080, containerPort: 80, protocol: "sctp"}]}'
  bad gwbridge-egress ADD 2 "sctp port mapping" "$B/gwsctp.json" "${STD_ENV[@]}"
  bad gwbridge-egress ADD 6 "malformed JSON" "$B/malformed.json" "${STD_ENV[@]}"
  bad gwbridge-egress ADD 6 "huge JSON (17 MiB)" "$HUGE" "${STD_ENV[@]}"
  mk gwv "$GWC" '.cniVersion = "2.0.0"'
  bad gwbridge-egress ADD 1 "cniVersion unknown (2.0.0)" "$B/gwv.json" "${STD_ENV[@]}"
  mk gwname "$GWC" '.name = "-bad"'
  bad gwbridge-egress ADD 7 "network name invalid (-bad)" "$B/gwname.json" "${STD_ENV[@]}"
  mk gwif "$GWC" '.ifname = "eth0"'
  bad gwbridge-egress ADD 7 "ifname equal to CNI_IFNAME" "$B/gwif.json" "${STD_ENV[@]}"
  mk gwbr "$GWC" '.bridge = "a-bridge-name-too-long"'
  bad gwbridge-egress ADD 7 "bridge name too long" "$B/gwbr.json" "${STD_ENV[@]}"
  mk gwicc "$GWC" '.icc = "yes"'
  bad gwbridge-egress ADD 6 "icc a string" "$B/gwicc.json" "${STD_ENV[@]}"
  mk gwmtu "$GWC" '.mtu = 20'
  bad gwbridge-egress ADD 7 "mtu 20" "$B/gwmtu.json" "${STD_ENV[@]}"
  mk gwipam "$GWC" '.ipam.type = "../x"'
  bad gwbridge-egress ADD 7 "IPAM type with a path (../x)" "$B/gwipam.json" "${STD_ENV[@]}"
  mk gwprev "$GWC" '.prevResult = {cniVersion: "1.0.0", ips: [{address: "10.0.0.300/24"}]}'
  bad gwbridge-egress ADD 6 "broken prevResult" "$B/gwprev.json" "${STD_ENV[@]}"
  bad gwbridge-egress ADD 4 "CNI_IFNAME with /" "$G" CNI_CONTAINERID=bad-1 CNI_NETNS="$BADC" CNI_IFNAME=a/b
  bad gwbridge-egress ADD 4 "CNI_NETNS not a namespace (/etc/hostname)" "$G" CNI_CONTAINERID=bad-1 CNI_NETNS=/etc/hostname CNI_IFNAME=eth0
else
  na bad-input 1.0.0 ADD "gwbridge-egress: bad input" "gwbridge-egress not built yet"
fi

# ---------------------------------------------------------------------------------------------
# 3. containerd 1.6: ctr run --cni --rm (host 3, node3)

say "3. containerd $CTR_V (ctr run --cni --rm)"
cnet=cf-ctr cvni=$((VBASE + 70))
if containerd_host_start "$H3" "$CNI_BIN" >"$WORK/ctr-start.log" 2>&1; then
  CTR_UP=$H3
  cdir=$(containerd_host_dir "$H3")
  conflist "$cdir/net.d/10-$cnet.conflist" 1.0.0 "$cnet" "$(overlay_plugin "$cvni" node3 10.74.0.0/24 "$WORK/data-h3")"
  before=$(host_links 3)
  out=$(ctr_on "$H3" run --cni --rm localhost/busybox:latest cfc1 ip addr show eth0 2>&1)
  rc=$?
  verdict "$RT_CTR" 1.0.0 ADD "ctr run --cni: the task sees an address from 10.74.0.0/24" \
    "$([ "$rc" = 0 ] && grep -q 'inet 10\.74\.0\.' <<<"$out" || echo "exit $rc: $out")"
  why="$(left_etcd "$cnet" 1 1)$(left_links "$before" "$(host_links 3)")"
  [ -n "$(sandbox_ns "$cvni")" ] && why+="sandbox left: $(sandbox_ns "$cvni");"
  verdict "$RT_CTR" 1.0.0 DEL "ctr run --rm: allocation, endpoint record and devices released when the task ends" "$why"
  containerd_host_stop "$H3" >/dev/null 2>&1
  CTR_UP=""
else
  fail "$RT_CTR" 1.0.0 ADD "containerd started" "$(tail -5 "$WORK/ctr-start.log")"
fi

# ---------------------------------------------------------------------------------------------
# 2. podman 4.3 (CNI backend) on hosts 1 and 2, network demo

say "2. podman $PODMAN_V (CNI backend) on two hosts"
pnet=demo pvni=$((VBASE + 60)) psub=10.72.0.0/24
pod_ok=1
for h in 1 2; do
  hn=$(lab_host_ns "$h")
  if podman_host_setup "$hn" "$CNI_BIN" >"$WORK/podman-setup-$h.log" 2>&1; then
    PODMAN_UP+=("$hn")
    conflist "$RP_PODMAN_BASE/$hn/net.d/$pnet.conflist" 1.0.0 "$pnet" "$(overlay_plugin "$pvni" "node$h" "$psub" "$WORK/podman-data-h$h")"
  else
    pod_ok=0
    fail "$RT_PODMAN" 1.0.0 ADD "podman host $h set up" "$(tail -5 "$WORK/podman-setup-$h.log")"
  fi
done
pod_ip() { podman_on "$1" inspect "$2" --format "{{(index .NetworkSettings.Networks \"$pnet\").IPAddress}}" 2>/dev/null; }
if [ "$pod_ok" = 1 ]; then
  out=$(podman_on "$H1" run -d --name test1 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  ip1=$(pod_ip "$H1" test1)
  verdict "$RT_PODMAN" 1.0.0 ADD "run test1 on node1: address from $psub" "$([[ $ip1 == 10.72.0.* ]] || echo "no address ($ip1): $out")"
  out=$(podman_on "$H2" run -d --name test1 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  rc=$?
  why=""
  [ "$rc" != 0 ] || why+="podman run succeeded;"
  grep -q "endpoint with name test1 already exists in network $pnet" <<<"$out" || why+="message missing: $out;"
  verdict "$RT_PODMAN" 1.0.0 ADD "run test1 on node2 is refused (name held on node1)" "$why"
  why=""
  holder=$(ectl get --print-value-only "/cni-overlay/ipam/$pnet/names/test1" 2>&1)
  grep -q '"node1"' <<<"$holder" || why+="name key not held by node1: $holder;"
  [ "$(keys_under "ipam/$pnet/owners/" | wc -l)" = 1 ] || why+="owners: $(keys_under "ipam/$pnet/owners/" | tr '\n' ' ');"
  [ "$(keys_under "endpoints/$pnet/" | wc -l)" = 1 ] || why+="endpoints: $(keys_under "endpoints/$pnet/" | tr '\n' ' ');"
  verdict "$RT_PODMAN" 1.0.0 ADD "the refused run left nothing in etcd" "$why"
  podman_on "$H2" rm -f -t 0 test1 >/dev/null 2>&1
  holder=$(ectl get --print-value-only "/cni-overlay/ipam/$pnet/names/test1" 2>&1)
  verdict "$RT_PODMAN" 1.0.0 DEL "rm of the refused test1 on node2 keeps node1's name" "$(grep -q '"node1"' <<<"$holder" || echo "name key now: $holder")"
  out=$(podman_on "$H2" run -d --name test2 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  ip2=$(pod_ip "$H2" test2)
  why=$([[ $ip2 == 10.72.0.* ]] || echo "no address ($ip2): $out")
  [ -n "$ip2" ] && [ "$ip2" = "$ip1" ] && why+="same address as test1;"
  verdict "$RT_PODMAN" 1.0.0 ADD "run test2 on node2: a different address from $psub" "$why"
  if [ -n "$ip1" ] && [ -n "$ip2" ]; then
    wait_for 10 podman_on "$H1" exec test1 ping -c1 -W2 "$ip2" && why="" || why="no reply from $ip2"
    verdict "$RT_PODMAN" 1.0.0 ADD "test1 (node1) pings test2 (node2)" "$why"
    wait_for 10 podman_on "$H2" exec test2 ping -c1 -W2 "$ip1" && why="" || why="no reply from $ip1"
    verdict "$RT_PODMAN" 1.0.0 ADD "test2 (node2) pings test1 (node1)" "$why"
  fi
  out=$(podman_on "$H1" rm -f -t 0 test1 2>&1); why=$([ $? = 0 ] || echo "node1: $out;")
  out=$(podman_on "$H2" rm -f -t 0 test2 2>&1); why+=$([ $? = 0 ] || echo "node2: $out;")
  verdict "$RT_PODMAN" 1.0.0 DEL "rm -f test1 and test2" "$why"
  podman_on "$H2" rm -f -t 0 test1 >/dev/null 2>&1
  out=$(podman_on "$H2" run -d --name test1 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  ip3=$(pod_ip "$H2" test1)
  verdict "$RT_PODMAN" 1.0.0 ADD "once removed on node1, the name test1 is free on node2" "$([[ $ip3 == 10.72.0.* ]] || echo "no address ($ip3): $out")"
  out=$(podman_on "$H2" rm -f -t 0 test1 2>&1)
  verdict "$RT_PODMAN" 1.0.0 DEL "rm -f test1 on node2" "$([ $? = 0 ] || echo "$out")"
  why="$(left_etcd "$pnet" 1 1)"
  for h in 1 2; do lab_run "$h" ip link show "ovx$pvni" >/dev/null 2>&1 && why+="ovx$pvni left on node$h;"; done
  verdict "$RT_PODMAN" 1.0.0 DEL "rm -f released addresses, names and endpoint records" "$why"
fi
for hn in "${PODMAN_UP[@]}"; do podman_host_teardown "$hn" >/dev/null 2>&1; done
PODMAN_UP=()

finish
