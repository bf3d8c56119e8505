#!/usr/bin/env bash
# Faults (issue #16): what the overlay does on its worst day, measured on a lab of 4 simulated hosts
# with a 3-member etcd cluster (hosts 1-3) and overlayd on every host. Not in CI: like bench.sh it
# prints figures and a verdict per scenario, and exits non-zero when a verdict fails.
#
#   scripts/faults.sh [storm] [killed] [etcd-down] [overlayd-kill] [partition]    (default: all)
#
#   storm          1,000 ADDs (vxlan-overlay + etcd-ipam, with names) over the 4 hosts, 32 in flight,
#                  into one /22; the etcd leader (also the plugins' first endpoint) SIGKILLed mid-storm
#                  and restarted. Every ADD succeeded or failed with 11 leaving nothing; 0 duplicate
#                  addresses and names; every container pings 50 others on other hosts; 1,000 DELs
#                  leave 0 keys (the cursor hint excepted), links, FDB/neighbour entries, nft rules,
#                  lock files, sandboxes. p50/p99 ADD latency.
#   killed         100 ADDs SIGKILLed 0-200 ms after start, then GC (valid: the ADDs that finished)
#                  on every host: nothing of the killed left. 100 DELs SIGKILLed likewise, repeated:
#                  the host and etcd exactly as before.
#   etcd-down      every etcd member SIGKILLed for 60 s: pings across hosts go on (no gap > 1 s);
#                  ADD fails with 11 within timeoutMs + 1 s; DEL fails with 11, succeeds later;
#                  STATUS answers 0 (deliberately: README "STATUS during an etcd outage", rule
#                  store::plugin::ready_through_outage); overlayd restarted meanwhile removes nothing;
#                  within 5 s of etcd's return every host's FDB/neighbour entries match the records.
#   overlayd-kill  overlayd on host 1 SIGKILLed during 200 ADDs on hosts 2-4, restarted: its FDB and
#                  neighbour entries equal, entry by entry, what the records call for.
#   partition      host 4 (no etcd member) cut from etcd for 30 s by dropping packets (nft, in the
#                  host's namespace): its overlayd notices within its probe time (the watch's
#                  progress probe: 10 + 5 s), the data plane keeps working, and it resyncs after.
#
# Binaries: $RELEASE of scripts/lib/common.sh (CNI_OVERLAY_PROFILE=ci for the ci profile), or
# BIN_DIR=DIR. Each scenario runs on a lab of its own, removed at the end whatever happens.
# Sizes: STORM_COUNT, STORM_PARALLEL, KILLED_COUNT, BURST_COUNT, OUTAGE_SECONDS, PARTITION_SECONDS.
# FAULTS_PAUSE=SECONDS keeps each lab that long before removing it (to look at it); RUST_LOG is
# overlayd's.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
need_root "the lab creates network namespaces"
BIN=${BIN_DIR:-$RELEASE}
for b in vxlan-overlay etcd-ipam overlayd lab fault-driver; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: cargo build --profile $PROFILE --workspace --bins"
done
HOSTS=4
ETCD_MEMBERS=1,2,3
source "$ROOT/scripts/lib/overlay-lab.sh"

VNI=4242
TIMEOUT_MS=3000
WORK=$(mktemp -d /var/tmp/cni-overlay-faults.XXXXXX)
export LAB_DIR=""
FAILED=()
cleanup() {
  if [ -n "$LAB_DIR" ]; then lab down || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- verdicts ---------------------------------------------------------------------------------
SCENARIO=""
begin() { SCENARIO=$1; CHECKS_OK=true; printf '\n== %s\n' "$*"; }
verdict() {
  if $CHECKS_OK; then printf '== %s: PASS\n' "$SCENARIO"; else printf '== %s: FAIL\n' "$SCENARIO"; FAILED+=("$SCENARIO"); fi
}

# --- the lab ----------------------------------------------------------------------------------
leader_member() { # the host number (1-3) of etcd's leader (`endpoint status`: endpoint, ID, version, size, leader, ...)
  etcdctl_ endpoint status -w simple | awk -F', ' '$5 == "true" {print $1}' \
    | sed -E 's#http://192\.168\.205\.1([0-9]):2379#\1#' | awk '{print $1 + 1}'
}
make_leader() { # HOST: moves etcd's leadership to that host's member
  local id cur
  id=$(etcdctl_ endpoint status -w simple | awk -F', ' -v ep="http://$(lab addr "$1"):2379" '$1 == ep {print $2}')
  cur=$(leader_member)
  [ "$cur" = "$1" ] && return 0
  lab run 1 -- etcdctl --endpoints "http://$(lab addr "$cur"):2379" move-leader "$id" >/dev/null
}
# --- 1: storm with a member kill ----------------------------------------------------------------
scenario_storm() {
  local count=${STORM_COUNT:-1000} par=${STORM_PARALLEL:-32} net=storm
  begin storm "$count ADDs, $par in flight, 4 hosts, one /22; etcd leader SIGKILLed mid-storm"
  lab_up s
  write_confs $net 10.60.0.0/22
  state "$WORK/storm-before"
  etcd_keys >"$WORK/storm-keys-before"
  plan $net s "$count" 1 2 3 4
  make_leader 1
  figure "etcd leader before the storm: member on host $(leader_member) (the plugins' first endpoint)"
  local out=$WORK/storm-add.jsonl pid t_kill t_start
  drive ADD "$WORK/$net-s.plan" "$par" >"$out" &
  pid=$!
  wait_lines "$out" $((count / 4)) "$pid"
  lab etcd-member kill 1; t_kill=$(lines "$out")
  wait_lines "$out" $((count * 3 / 5)) "$pid"
  lab etcd-member start 1 >/dev/null; t_start=$(lines "$out")
  wait "$pid"
  figure "member 1 SIGKILLed after $t_kill ADDs had returned, restarted after $t_start"
  local s; s=$(analyse calls "$out")
  figure "ADD results: $(j '.by_code | to_entries | map("\(.key): \(.value)") | join(", ")' "$s") (code: calls)"
  figure "ADD latency p50 $(j .p50_ms "$s") ms, p99 $(j .p99_ms "$s") ms, max $(j .max_ms "$s") ms"
  [ "$(j '.other_failures | length' "$s")" = 0 ] || figure "other failures: $(j '.other_failures | join("; ")' "$s")"
  [ "$(j '.messages_11 | length' "$s")" = 0 ] || figure "code 11 messages: $(j '.messages_11 | join("; ")' "$s")"
  check "every ADD succeeded or failed with 11" eq "$(j '.count - (.by_code["0"] // 0) - (.by_code["11"] // 0)' "$s")" 0
  check "the results hold no duplicate address" eq "$(j .result_dup_addresses "$s")" 0

  etcd_json "$WORK/storm-etcd.json"
  local e; e=$(analyse etcd "$WORK/storm-etcd.json" $net)
  figure "etcd: $(j .owners "$e") allocations, $(j .endpoints "$e") endpoint records, $(j .address_keys "$e") address keys, $(j .name_keys "$e") name keys"
  check "0 duplicate addresses in etcd (allocations $(j .dup_addresses "$e"), endpoint records $(j .dup_endpoint_addresses "$e"))" \
    eq "$(j '.dup_addresses + .dup_endpoint_addresses' "$e")" 0
  check "0 duplicate names in etcd" eq "$(j .dup_names "$e")" 0
  check "0 address or name keys without an allocation" eq "$(j '.orphan_address_keys + .orphan_name_keys' "$e")" 0
  check "allocations and endpoint records pair up ($(j '.endpoints_without_allocation + .allocations_without_endpoint | join(" ")' "$e"))" \
    eq "$(j '(.endpoints_without_allocation + .allocations_without_endpoint) | length' "$e")" 0
  # What etcd holds is exactly the ADDs that succeeded; a failed one left nothing, on any host.
  check "the allocations are exactly the successful ADDs" eq "$(j '.owner_ids | join(" ")' "$e")" "$(j '.ok | sort | join(" ")' "$s")"
  state "$WORK/storm-after-add"
  cat "$WORK"/storm-after-add/h*/aliases | sed 's#/eth0$##' | sort >"$WORK/storm-veths"
  j '.ok[]' "$s" | sort >"$WORK/storm-ok"
  check "host veths are exactly the successful ADDs' ($(wc -l <"$WORK/storm-veths"))" cmp -s "$WORK/storm-veths" "$WORK/storm-ok"
  local leftover=0 id
  for id in $(j '.failed[]' "$s"); do
    lab run "$id" -- ip link show eth0 >/dev/null 2>&1 && leftover=$((leftover + 1))
  done
  check "failed ADDs left no interface in their container ($leftover)" eq "$leftover" 0
  # The kernel's addresses, not only what etcd says.
  local dup_kernel
  dup_kernel=$(for id in $(j '.ok[]' "$s"); do lab run "$id" -- ip -4 -o addr show dev eth0 | awk '{print $4}'; done | sort | uniq -d | wc -l)
  check "0 duplicate addresses on the containers' interfaces" eq "$dup_kernel" 0
  local h r bad=0
  for h in 1 2 3 4; do
    r=$(peers_check $net "$h" "$WORK/storm-etcd.json")
    [ "$(j '.n_missing + .n_extra' "$r")" = 0 ] || { bad=$((bad + 1)); figure "host $h entries: $r"; }
  done
  check "every host's FDB and neighbour entries match the records" eq "$bad" 0

  # Pings: every successful container to 50 others on other hosts.
  python3 - "$s" "$WORK/$net-s.plan" "$PREFIX" >"$WORK/storm-ping.plan" <<'EOF'
import json, random, sys
s = json.loads(sys.argv[1])
host = {l.split('\t')[0]: l.split('\t')[1] for l in open(sys.argv[2])}
ips = {i: a[0].split('/')[0] for i, a in s["ips"].items() if a}
rng = random.Random(16)
ids = sorted(ips)
ns = lambda i: f"/run/netns/{sys.argv[3]}-c-{i}"
for i in ids:
    others = [o for o in ids if host[o] != host[i]]
    targets = rng.sample(others, min(50, len(others)))
    print(f"{ns(i)}\t{ips[i]}\t" + ",".join(f"{ips[t]}={ns(t)}" for t in targets))
EOF
  ping_pass "$WORK/storm-ping"
  local pairs=$PING_PAIRS first=$PING_FIRST lost=$PING_LOST
  figure "pings: $(wc -l <"$WORK/storm-ping.jsonl") containers x 50 others on other hosts: $pairs pairs, $first without a reply at first, $lost of those again alone"
  [ "$lost" = 0 ] || figure "e.g. $(jq -c 'select(.lost | length > 0)' "$WORK/storm-ping-again.jsonl" | head -2 | tr '\n' ' ')"
  check "every successful container pings 50 others across hosts" eq "$lost" 0

  local del=$WORK/storm-del.jsonl d
  [ -z "${STORM_PAUSE:-}" ] || { say "pausing: LAB_DIR=$LAB_DIR WORK=$WORK"; sleep "$STORM_PAUSE"; }
  drive DEL "$WORK/$net-s.plan" "$par" >"$del"
  d=$(analyse calls "$del")
  figure "DEL results: $(j '.by_code | to_entries | map("\(.key): \(.value)") | join(", ")' "$d"); p50 $(j .p50_ms "$d") ms, p99 $(j .p99_ms "$d") ms"
  check "every DEL succeeded" eq "$(j '.by_code["0"] // 0' "$d")" "$count"
  sleep 1 # overlayd applies the deletions a few ms after the records go
  leak_checks storm $net
  lab_down
  verdict
}

# --- 2: killed plugins ------------------------------------------------------------------------
scenario_killed() {
  local count=${KILLED_COUNT:-100} net=killed
  begin killed "$count ADDs SIGKILLed 0-200 ms after start, GC; $count DELs SIGKILLed, repeated"
  lab_up k
  write_confs $net 10.61.0.0/22
  state "$WORK/killed-before"
  etcd_keys >"$WORK/killed-keys-before"
  plan $net a "$count" 1 2 3 4
  drive ADD "$WORK/$net-a.plan" 16 --kill-after 0-200 --seed 16 >"$WORK/killed-add.jsonl"
  local s; s=$(analyse calls "$WORK/killed-add.jsonl")
  figure "ADDs: $(j '.killed | length' "$s") killed, $(j '.ok | length' "$s") finished first (kept as valid attachments), others: $(j '.by_code | del(.killed) | del(.["0"])' "$s" | tr -d '\n ')"
  # GC on every host: valid are the ADDs that finished before their kill.
  local h valid gc_fail=0
  valid=$(j '[.ok[] | {containerID: ., ifname: "eth0"}]' "$s")
  for h in 1 2 3 4; do
    conf "$h" $net 10.61.0.0/22 1.1.0 | jq --argjson v "$valid" '. + {"cni.dev/valid-attachments": $v}' >"$WORK/gc-$h.json"
    cni "$h" GC "$WORK/gc-$h.json"
    [ "$CNI_CODE" = 0 ] || { gc_fail=$((gc_fail + 1)); figure "GC on host $h: $CNI_OUT"; }
  done
  check "GC succeeded on every host" eq "$gc_fail" 0
  sleep 1
  etcd_json "$WORK/killed-etcd.json"
  local e; e=$(analyse etcd "$WORK/killed-etcd.json" $net)
  check "etcd holds exactly the valid attachments ($(j .owners "$e") allocations, $(j .endpoints "$e") endpoints, $(j .address_keys "$e") address keys, $(j .name_keys "$e") names)" \
    eq "$(j '[.owner_ids, .endpoint_ids, .address_keys, .name_keys] | tostring' "$e")" \
       "$(j '.ok | sort | [., ., length, length] | tostring' "$s")"
  state "$WORK/killed-after-gc"
  cat "$WORK"/killed-after-gc/h*/aliases | sed 's#/eth0$##' | sort >"$WORK/killed-veths"
  j '.ok[]' "$s" | sort >"$WORK/killed-ok"
  check "host veths are exactly the valid attachments' ($(wc -l <"$WORK/killed-veths"))" cmp -s "$WORK/killed-veths" "$WORK/killed-ok"
  local bad=0 r
  for h in 1 2 3 4; do
    r=$(peers_check $net "$h" "$WORK/killed-etcd.json")
    [ "$(j '.n_missing + .n_extra' "$r")" = 0 ] || { bad=$((bad + 1)); figure "host $h entries: $r"; }
  done
  check "every host's FDB and neighbour entries match the records" eq "$bad" 0
  # Hosts left without a valid attachment must be as before: no devices, rules, locks.
  local hosts_with hosts_diff=""
  hosts_with=$(for id in $(j '.ok[]' "$s"); do grep -P "^$id\t" "$WORK/$net-a.plan" | cut -f2; done | sort -u)
  for h in 1 2 3 4; do
    grep -qx "/run/netns/$(host_ns "$h")" <<<"$hosts_with" && continue
    for part in links fdb neigh nft locks; do
      hosts_diff+=$(differs "$WORK/killed-before/h$h/$part" "$WORK/killed-after-gc/h$h/$part" | sed "s/^/h$h $part /")
    done
  done
  check "hosts without a valid attachment are as before (links, FDB, neighbours, nft, locks)$( [ -z "$hosts_diff" ] || echo ": $(head -4 <<<"$hosts_diff" | tr '\n' ' ')")" eq "$hosts_diff" ""
  # Their DELs, then the killed DELs.
  if [ "$(j '.ok | length' "$s")" != 0 ]; then
    grep -P "^($(j '.ok | join("|")' "$s"))\t" "$WORK/$net-a.plan" >"$WORK/$net-valid.plan"
    drive DEL "$WORK/$net-valid.plan" 8 >"$WORK/killed-valid-del.jsonl"
  fi
  plan $net d "$count" 1 2 3 4
  drive ADD "$WORK/$net-d.plan" 8 >"$WORK/killed-add2.jsonl"
  s=$(analyse calls "$WORK/killed-add2.jsonl")
  check "$count ADDs (not killed) succeeded" eq "$(j '.by_code["0"] // 0' "$s")" "$count"
  drive DEL "$WORK/$net-d.plan" 16 --kill-after 0-200 --seed 61 >"$WORK/killed-del.jsonl"
  s=$(analyse calls "$WORK/killed-del.jsonl")
  figure "DELs: $(j '.killed | length' "$s") killed, $(j '.ok | length' "$s") finished first"
  drive DEL "$WORK/$net-d.plan" 8 >"$WORK/killed-del2.jsonl"
  s=$(analyse calls "$WORK/killed-del2.jsonl")
  check "every repeated DEL succeeded ($(j '.by_code | tostring' "$s"))" eq "$(j '.by_code["0"] // 0' "$s")" "$count"
  sleep 1
  leak_checks killed $net
  lab_down
  verdict
}

# --- 3: etcd down for 60 s ----------------------------------------------------------------------
scenario_etcd_down() {
  local net=outage down_for=${OUTAGE_SECONDS:-60}
  begin etcd-down "every etcd member down for ${down_for} s"
  lab_up o
  write_confs $net 10.62.0.0/24
  local h ip
  declare -A IP
  for h in 1 2 3 4; do
    IP[o$h]=$(add_one "$h" $net "o$h") && [ -n "${IP[o$h]}" ] || die "ADD o$h failed: $CNI_OUT"
    IP[q$h]=$(add_one "$h" $net "q$h") && [ -n "${IP[q$h]}" ] || die "ADD q$h failed: $CNI_OUT"
  done
  lab run o1 -- ping -c 3 -W 1 "${IP[o2]}" >/dev/null || die "o1 cannot reach o2 before the outage"
  lab run o3 -- ping -c 3 -W 1 "${IP[o4]}" >/dev/null || die "o3 cannot reach o4 before the outage"
  # Two flows across hosts, 5 pings a second, for the whole outage and a little more.
  local pings
  pings="$(lab bg o1 --log "$WORK/ping-o1.log" --tag ping -- ping -D -i 0.2 "${IP[o2]}")"
  pings+=" $(lab bg o3 --log "$WORK/ping-o3.log" --tag ping -- ping -D -i 0.2 "${IP[o4]}")"
  etcd_json "$WORK/outage-etcd-before.json"
  state "$WORK/outage-before"
  local t0; t0=$SECONDS
  for h in 1 2 3; do lab etcd-member kill "$h"; done
  figure "all 3 etcd members SIGKILLed"
  # ADD during the outage: code 11 within timeoutMs + 1 s.
  lab container n1 >/dev/null
  CNI_NETNS_=/run/netns/$PREFIX-c-n1 cni 1 ADD "$WORK/$net-1.json" n1
  figure "ADD: code $CNI_CODE after $CNI_MS ms ($(jq -r .msg <<<"$CNI_OUT" 2>/dev/null | head -c 120))"
  check "ADD fails with 11 within timeoutMs + 1 s ($((TIMEOUT_MS + 1000)) ms)" \
    eval '[ "$CNI_CODE" = 11 ] && [ "$CNI_MS" -le $((TIMEOUT_MS + 1000)) ]'
  check "the failed ADD left no interface in its container" eval '! lab run n1 -- ip link show eth0 >/dev/null 2>&1'
  del_one 4 $net q4
  figure "DEL: code $CNI_CODE after $CNI_MS ms"
  check "DEL fails with 11 (the runtime retries)" eq "$CNI_CODE" 11
  conf 1 $net 10.62.0.0/24 1.1.0 >"$WORK/status.json"
  cni 1 STATUS "$WORK/status.json"
  figure "STATUS: code $CNI_CODE (0 expected: README 'STATUS during an etcd outage answers 0', rule store::plugin::ready_through_outage)"
  check "STATUS answers 0 during an outage (deliberate)" eq "$CNI_CODE" 0
  # overlayd restarted during the outage removes nothing it programmed.
  kill_overlayd 2 KILL
  start_overlayd 2
  sleep 8
  host_state 2 "$WORK/outage-h2-restarted"
  local removed=""
  for part in fdb neigh links; do
    removed+=$(comm -23 "$WORK/outage-before/h2/$part" "$WORK/outage-h2-restarted/$part" | sed "s/^/$part /")
  done
  check "overlayd restarted during the outage removed nothing$( [ -z "$removed" ] || echo ": $(head -3 <<<"$removed" | tr '\n' ' ')")" eq "$removed" ""
  while [ $((SECONDS - t0)) -lt "$down_for" ]; do sleep 1; done
  for h in 1 2 3; do lab etcd-member start "$h" >/dev/null; done
  local t_back; t_back=$(date +%s%N)
  while ! etcd_healthy; do sleep 0.1; done
  figure "etcd down for $((SECONDS - t0)) s; members answering $(python3 -c "print(f'{($(date +%s%N) - $t_back) / 1e9:.1f}')") s after their start"
  t_back=$(date +%s%N)
  # The runtime's retry of the DEL, a new ADD; then every host converges.
  del_one 4 $net q4
  check "the retried DEL succeeds" eq "$CNI_CODE" 0
  ip=$(add_one 1 $net n2)
  check "an ADD succeeds again" eval '[ -n "$ip" ]'
  local ready_all=never
  for h in 1 2 3 4; do wait_ready "$h" 15 || ready_all=no; done
  [ "$ready_all" = no ] || ready_all=$(python3 -c "print(f'{($(date +%s%N) - $t_back) / 1e9:.2f}')")
  local conv; conv=$(wait_converged $net 15 1 2 3 4 || true)
  figure "after etcd answered: every overlayd ready after ${ready_all} s, entries converged on all hosts after ${conv} s (incl. the DEL and ADD)"
  check "every host converges within 5 s" eval '[ "$conv" != never ] && le "$conv" 5'
  check "every overlayd is ready again" eval '[ "$ready_all" != no ]'
  lab run q3 -- ping -c 1 -W 2 "$ip" >/dev/null && figure "the new container answers from host 3" || true
  sleep 1
  stop_pings $pings
  local g
  for h in o1 o3; do
    g=$(analyse gaps "$WORK/ping-$h.log" 0.2)
    figure "ping from $h across hosts: $(j .received "$g") replies over $(j .span_s "$g") s, longest gap $(j .longest_gap_s "$g") s"
    check "no gap over 1 s in $h's pings" le "$(j .longest_gap_s "$g")" 1.0
  done
  lab_down
  verdict
}

# --- 4: overlayd SIGKILLed during remote ADDs -------------------------------------------------
scenario_overlayd_kill() {
  local count=${BURST_COUNT:-200} net=burst
  begin overlayd-kill "overlayd on host 1 SIGKILLed during $count ADDs on hosts 2-4"
  lab_up b
  write_confs $net 10.63.0.0/22
  [ -n "$(add_one 1 $net local1)" ] || die "ADD local1 failed: $CNI_OUT"
  plan $net b "$count" 2 3 4
  local out=$WORK/burst-add.jsonl pid k r
  drive ADD "$WORK/$net-b.plan" 16 >"$out" &
  pid=$!
  wait_lines "$out" $((count / 4)) "$pid"
  kill_overlayd 1 KILL; k=$(lines "$out")
  wait_lines "$out" $((count * 3 / 5)) "$pid"
  start_overlayd 1; r=$(lines "$out")
  wait "$pid"
  local s; s=$(analyse calls "$out")
  figure "overlayd SIGKILLed after $k ADDs, restarted after $r; ADDs: $(j '.by_code | tostring' "$s")"
  check "every ADD succeeded" eq "$(j '.by_code["0"] // 0' "$s")" "$count"
  wait_ready 1 30 || true
  local conv; conv=$(wait_converged $net 30 1 || true)
  etcd_json "$WORK/burst-etcd.json"
  r=$(peers_check $net 1 "$WORK/burst-etcd.json")
  figure "host 1: $(j .desired_fdb "$r") FDB and $(j .desired_neigh "$r") neighbour entries called for; $(j .n_missing "$r") missing, $(j .n_extra "$r") extra (converged ${conv} s after the burst)"
  [ "$(j '.n_missing + .n_extra' "$r")" = 0 ] || figure "$r"
  check "host 1's entries equal the records, entry by entry" eq "$(j '.n_missing + .n_extra' "$r")" 0
  check "hosts 2-4 too" converged $net "$WORK/burst-etcd.json" 2 3 4
  lab_down
  verdict
}

# --- 5: partition -----------------------------------------------------------------------------
scenario_partition() {
  local net=part cut_for=${PARTITION_SECONDS:-30}
  begin partition "host 4 cut from the etcd members for ${cut_for} s (packets dropped)"
  lab_up p
  write_confs $net 10.64.0.0/24
  local h
  declare -A IP
  for h in 1 2 3 4; do IP[p$h]=$(add_one "$h" $net "p$h") && [ -n "${IP[p$h]}" ] || die "ADD p$h failed: $CNI_OUT"; done
  lab run p4 -- ping -c 3 -W 1 "${IP[p1]}" >/dev/null || die "p4 cannot reach p1"
  local pings; pings=$(lab bg p4 --log "$WORK/ping-p4.log" --tag ping -- ping -D -i 0.2 "${IP[p1]}")
  local members; members=$(for h in 1 2 3; do lab addr "$h"; done | paste -sd,)
  lab run 4 -- nft -f - <<EOF
table inet faults_partition {
  chain out { type filter hook output priority 0; ip daddr { $members } tcp dport { 2379, 2380 } drop; }
  chain in { type filter hook input priority 0; ip saddr { $members } tcp sport { 2379, 2380 } drop; }
}
EOF
  local t_cut; t_cut=$(date +%s%N)
  figure "host 4's packets to and from etcd dropped (nft table inet faults_partition in its namespace)"
  # While cut: a new container on host 1, one removed on host 2.
  local ip5; ip5=$(add_one 1 $net p5)
  del_one 2 $net p2
  # overlayd notices: its readiness drops (lease or watch lost) or its watch restarts.
  local noticed=never restarts0
  restarts0=$(lab run 4 -- curl -s -m 2 http://127.0.0.1:9393/metrics | awk '/^overlayd_watch_restarts_total/ {s += $NF} END {print s + 0}')
  while [ $(( ($(date +%s%N) - t_cut) / 1000000000 )) -lt "$cut_for" ]; do
    local now ready
    now=$(lab run 4 -- curl -s -m 2 http://127.0.0.1:9393/metrics | awk '/^overlayd_watch_restarts_total/ {s += $NF} END {print s + 0}')
    ready=$(readyz 4)
    if [ "$noticed" = never ] && { [ "$now" != "$restarts0" ] || [ "$ready" != 200 ]; }; then
      noticed=$(python3 -c "print(f'{($(date +%s%N) - $t_cut) / 1e9:.1f}')")
      figure "host 4's overlayd noticed after $noticed s (readyz $ready, watch restarts $restarts0 -> $now)"
    fi
    sleep 0.5
  done
  check "overlayd noticed within its probe time (15 s)" eval '[ "$noticed" != never ] && le "$noticed" 15'
  lab run 4 -- nft delete table inet faults_partition
  local t_heal; t_heal=$(date +%s%N)
  local conv; conv=$(wait_converged $net 60 4 || true)
  figure "healed: host 4's entries match the records (p5 added, p2 removed while cut) after ${conv} s"
  check "host 4 resyncs after the cut heals" eval '[ "$conv" != never ]'
  wait_ready 4 30 && figure "host 4 ready again $(python3 -c "print(f'{($(date +%s%N) - $t_heal) / 1e9:.1f}')") s after the heal" || true
  check "host 4 registered again" eval '[ -n "$(etcdctl_ get --keys-only /cni-overlay/nodes/$(node 4))" ]'
  lab run p4 -- ping -c 1 -W 2 "$ip5" >/dev/null
  check "p4 reaches p5 (added during the cut)" eq $? 0
  sleep 1
  stop_pings $pings
  local g; g=$(analyse gaps "$WORK/ping-p4.log" 0.2)
  figure "ping p4 -> p1 throughout: $(j .received "$g") replies over $(j .span_s "$g") s, longest gap $(j .longest_gap_s "$g") s"
  check "the data plane kept working (no gap over 1 s)" le "$(j .longest_gap_s "$g")" 1.0
  lab_down
  verdict
}

SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(storm killed etcd-down overlayd-kill partition)
say "faults: ${SCENARIOS[*]} (binaries: $BIN)"
for s in "${SCENARIOS[@]}"; do
  case $s in
    storm) scenario_storm ;;
    killed) scenario_killed ;;
    etcd-down) scenario_etcd_down ;;
    overlayd-kill) scenario_overlayd_kill ;;
    partition) scenario_partition ;;
    *) die "unknown scenario $s" ;;
  esac
done
echo
if [ ${#FAILED[@]} -eq 0 ]; then echo "faults: every scenario passed"; else echo "faults: FAILED: ${FAILED[*]}"; exit 1; fi
