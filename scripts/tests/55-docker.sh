#!/usr/bin/env bash
# Docker 20.10 (Debian's docker.io) with overlayd's cni-overlay network and IPAM driver, on two
# simulated hosts: the seed's walkthrough (issue 18), one "ok - " / "not ok - " line per check.
# One dockerd per host (scripts/lib/docker-host.sh: its own mount and UTS namespaces, data-root,
# exec-root, socket; nsenter --net into the host), overlayd --docker-plugin cni-overlay next to it,
# and dockerd --authorization-plugin cni-overlay (overlayd refuses network rm while in use elsewhere).
# Unique lab prefix and node names: needs no lock. Removes everything it started.
# Under CI=true a missing prerequisite (docker.io, busybox-static) is a failure, else a skip.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/target/${CNI_OVERLAY_PROFILE:-release}"
source "$ROOT/scripts/lib/busybox-image.sh"
source "$ROOT/scripts/lib/docker-host.sh"

missing=""
for c in dockerd /usr/bin/docker busybox iptables; do command -v "$c" >/dev/null || missing+=" $c"; done
for b in lab overlayd overlayctl; do [ -x "$BIN/$b" ] || missing+=" $BIN/$b"; done
if [ -n "$missing" ]; then
  if [ "${CI:-}" = true ]; then echo "not ok - docker: prerequisites missing:$missing"; exit 1; fi
  echo "# skip docker: prerequisites missing:$missing (apt-get install docker.io; cargo build)"; exit 0
fi

WORK=$(mktemp -d /tmp/dk.XXXXXX)
export LAB_DIR="$WORK/lab"
lab() { "$BIN/lab" "$@"; }
H1="$WORK/h1" H2="$WORK/h2"
failures=0
cleanup() {
  # After a failure, what the daemons said (CI keeps nothing else of this run).
  if [ "$failures" != 0 ]; then
    for f in "$WORK"/overlayd1.log "$WORK"/overlayd2.log; do
      [ -f "$f" ] && { echo "# --- last lines of $(basename "$f")"; tail -n 40 "$f" | sed 's/^/#   /'; }
    done
    for h in 1 2; do
      [ -f "$WORK/h$h/dockerd.log" ] && { echo "# --- dockerd on host $h: errors"; grep -iE 'level=(error|warn)' "$WORK/h$h/dockerd.log" | tail -n 20 | sed 's/^/#   /'; }
    done
  fi
  if [ -n "${DOCKER_TEST_KEEP:-}" ]; then echo "# kept: $WORK (LAB_DIR=$LAB_DIR)"; return; fi
  docker_host_stop "$H1" >/dev/null 2>&1
  docker_host_stop "$H2" >/dev/null 2>&1
  lab down >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() { echo "ok - docker: $1"; }
nok() { failures=$((failures + 1)); echo "not ok - docker: $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/#   /'; return 0; }
check() { # NAME CMD...: ok when CMD succeeds
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else nok "$name" "$out"; fi
}
# until_true SECONDS CMD...: polls CMD every 50 ms (no timing assert: the bound is only a give-up)
until_true() {
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.05; done
}

d1() { docker_on "$H1" "$@"; }
d2() { docker_on "$H2" "$@"; }
prefix="dk$$"
node1="${prefix}n1" node2="${prefix}n2"
lab up --prefix "$prefix" --node-prefix "${prefix}n" --hosts 2 --etcd-members 1 >/dev/null || { nok "lab up"; exit 1; }
ETCD=$(lab etcd-endpoints)
ctl() { lab run 1 -- "$BIN/overlayctl" --etcd "$ETCD" "$@"; }
etcdget() { lab run 1 -- etcdctl --endpoints "$ETCD" get --prefix --keys-only "/cni-overlay/$1"; }
# absent KEY-PREFIX: etcd answered, and nothing is under it (a failed etcdctl is no "absent").
absent() { local out; out=$(etcdget "$1") && [ -z "$out" ]; }
present() { local out; out=$(etcdget "$1") && [ -n "$out" ]; }
# has PATTERN CMD...: CMD's output has a line matching PATTERN (grep -E). Never `CMD | grep -q`
# under pipefail: grep leaves at the first match, and a CMD that writes again afterwards (etcdctl
# writes each key and its empty value apart, overlayctl each line) dies of SIGPIPE, failing the
# pipeline now and then: once in CI, and in 2 of 30 runs under load.
has() { local pattern=$1 out; shift; out=$("$@") && grep -qE -- "$pattern" <<<"$out"; }

# overlayd first: dockerd --authorization-plugin cni-overlay looks the plugin up when it starts
# (and refuses every request while it does not answer).
export DOCKER_HOST_EXTRA_ARGS="--authorization-plugin cni-overlay --debug"
started=true
for h in 1 2; do
  d="$WORK/h$h"
  docker_host_prepare "$(lab ns $h)" "$d" "${prefix}n$h" || started=false
  $started && docker_host_overlayd "$d" "$WORK/overlayd$h.log" "$BIN/overlayd" --etcd "$ETCD" \
    --node "${prefix}n$h" --metrics-addr off --lease-ttl 2 --reclaim-after 2s >/dev/null || started=false
  $started && until_true 10 in_docker_host "$d" test -S /run/docker/plugins/cni-overlay.sock || started=false
  $started && docker_host_dockerd "$d" || started=false
  $started && docker_host_import "$d" || started=false
done
if ! $started; then nok "dockerd and overlayd on both hosts" "$(tail -n 8 "$WORK"/h*/dockerd.log "$WORK"/overlayd*.log 2>/dev/null)"; exit 1; fi
ok "dockerd 20.10 (--authorization-plugin cni-overlay) and overlayd --docker-plugin on two hosts"

# 1. The network, created on host 1, cluster-wide.
check "network create -d cni-overlay --ipam-driver cni-overlay --subnet 10.0.0.0/24 demo on host 1" \
  d1 network create -d cni-overlay --ipam-driver cni-overlay --subnet 10.0.0.0/24 demo
listed_on_2() { has '^demo cni-overlay$' d2 network ls --format '{{.Name}} {{.Driver}}'; }
t0=$(date +%s%N)
if until_true 10 listed_on_2; then
  ok "demo appears in docker network ls on host 2 (after $((($(date +%s%N) - t0) / 1000000)) ms)"
else nok "demo appears in docker network ls on host 2"; fi
check "overlayctl network ls shows demo" has '^demo ' ctl network ls
side_everywhere() {
  ctl network create --subnet 10.1.0.0/24 side >/dev/null &&
    until_true 10 d1 network inspect side && until_true 10 d2 network inspect side
}
check "a network created with overlayctl appears in Docker on both hosts" side_everywhere
side_gone() {
  ctl network rm side >/dev/null && until_true 10 eval '! d1 network inspect side' && until_true 10 eval '! d2 network inspect side'
}
check "and goes from both with overlayctl network rm" side_gone

# 2. Addresses and names, cluster-wide.
ip_of() { docker_on "$1" inspect "$2" --format '{{(index .NetworkSettings.Networks "demo").IPAddress}}'; }
d1 run -d --name test1 --net demo --dns 10.0.0.1 busybox sleep 3600 >/dev/null
a1=$(ip_of "$H1" test1 2>&1)
[ "$a1" = 10.0.0.2 ] && ok "test1 on host 1 gets 10.0.0.2" || nok "test1 on host 1 gets 10.0.0.2" "got: $a1"
out=$(d2 run -d --name test1 --net demo busybox sleep 3600 2>&1); st=$?
if [ $st != 0 ] && grep -q 'endpoint with name test1 already exists in network demo' <<<"$out"; then
  ok "test1 on host 2 is refused: $(grep -o 'endpoint with name.*' <<<"$out")"
else nok "test1 on host 2 is refused with the seed's message" "exit $st: $out"; fi
# The join makes the devices while it asks Docker for the name: refused, it leaves none of them.
leftover2() { in_docker_host "$H2" ip -o link show | grep -E '^[0-9]+: (ov|dk)[0-9a-z]*[:@]' || true; }
refused_clean() {
  [ -z "$(leftover2)" ] && [ "$(etcdget endpoints/demo/ | grep -c .)" = 1 ] && [ "$(etcdget ipam/demo/owners/ | grep -c .)" = 1 ]
}
check "the refused test1 leaves no device on host 2 and nothing of its own in etcd" until_true 5 refused_clean
d2 rm -f test1 >/dev/null 2>&1
d2 run -d --name test2 --net demo --dns 10.0.0.1 busybox sleep 3600 >/dev/null
a2=$(ip_of "$H2" test2 2>&1)
[ "$a2" = 10.0.0.3 ] && ok "test2 on host 2 gets 10.0.0.3" || nok "test2 on host 2 gets 10.0.0.3" "got: $a2"

# 3. Across hosts, by address and by name (our DNS at the gateway, through Docker's resolver).
check "test1 pings test2 by address" d1 exec test1 ping -c1 -W5 10.0.0.3
check "test1 pings test2 by name" d1 exec test1 ping -c1 -W5 test2
check "test2 pings test1 by name" d2 exec test2 ping -c1 -W5 test1
check "test2 resolves test1.demo.overlay" d2 exec test2 nslookup test1.demo.overlay
# The containers' interfaces are macvlan children of the network's bridge (no veth), each with its
# MAC made local to the bridge while it is attached.
mac_of() { docker_on "$1" inspect "$2" --format '{{(index .NetworkSettings.Networks "demo").MacAddress}}'; }
kind_in() { local pid; pid=$(docker_on "$1" inspect "$2" --format '{{.State.Pid}}') && in_docker_host "$1" nsenter -t "$pid" -n ip -d link show eth0; }
local_on() { has "^$2 dev ovbr[0-9]+ master ovbr[0-9]+ permanent" in_docker_host "$1" bridge fdb show; }
mac2=$(mac_of "$H2" test2)
check "test2's interface is a macvlan child of the bridge on host 2, its MAC ($mac2) local to the bridge" \
  eval 'has "macvlan mode bridge" kind_in "$H2" test2 && local_on "$H2" "$mac2"'

# 4. Egress and published ports, through docker_gwbridge.
internet=$(lab addr internet)
check "test1 reaches the simulated internet ($internet)" d1 exec test1 ping -c1 -W5 "$internet"
check "test1 is on docker_gwbridge too" has gateway_ d1 network inspect docker_gwbridge --format "{{json .Containers}}"

d2 run -d --name web --net demo --dns 10.0.0.1 -p 8080:80 busybox httpd -f -p 80 -h /etc >/dev/null
published() { has root lab run internet -- wget -q -T 3 -O - "http://$(lab addr 2):8080/passwd"; }
check "-p 8080:80 on host 2 answers the internet" until_true 10 published
check "web on host 2 reaches test1 by name" d2 exec web ping -c1 -W5 test1

# 5. inspect: Docker shows the local containers, overlayctl all of them.
members() { docker_on "$1" network inspect demo --format '{{range .Containers}}{{.Name}} {{.IPv4Address}};{{end}}'; }
check "docker network inspect demo on host 1 shows test1 (and web not)" eval '[ "$(members "$H1")" = "test1 10.0.0.2/24;" ]'
check "docker network inspect demo on host 2 shows test2 and web" eval 'has "test2 10.0.0.3/24;" members "$H2" && has "web " members "$H2"'
check "overlayctl network inspect demo shows test1 and test2 with their hosts" eval 'has "test1.*$node1" ctl network inspect demo && has "test2.*$node2" ctl network inspect demo' 

# 6. Released on rm -f and on disconnect.
d2 rm -f test2 >/dev/null
# web keeps the network's devices on host 2: test2's entry went with test2, not with the bridge.
check "rm -f test2 takes its MAC's local entry off the bridge on host 2 (web still attached)" \
  eval '[ -n "$(in_docker_host "$H2" ip -o link show type bridge)" ] && ! local_on "$H2" "$mac2" && local_on "$H2" "$(mac_of "$H2" web)"'
d2 rm -f web >/dev/null
released2() { absent ipam/demo/names/test2 && absent ipam/demo/ips/4/0a000003 && [ "$(etcdget endpoints/demo/ | grep -c .)" = 1 ]; }
check "rm -f test2 releases its name, address and endpoint record" released2
check "test2's name can be taken on host 1 now" eval 'd1 run -d --name test2 --net demo busybox sleep 3600 >/dev/null && d1 rm -f test2 >/dev/null' 
d2 run -d --name test3 --net demo busybox sleep 3600 >/dev/null
released3() { d2 network disconnect demo test3 && absent ipam/demo/names/test3 && [ "$(etcdget ipam/demo/owners/ | grep -c .)" = 1 ] && [ "$(etcdget endpoints/demo/ | grep -c .)" = 1 ]; }
check "network disconnect demo test3 releases its name, address and record" released3
check "no address is left held by a placeholder" absent ipam/demo/owners/docker-pending 
# Many at once on one network: overlayd's tasks for them take the network's host lock in turn (once
# they starved the holder of it: every removal waited out the lock's 60 s, and overlayd's etcd lease).
for i in 1 2 3 4 5 6 7 8; do d1 run -d --name "many$i" --net demo busybox sleep 3600 >/dev/null & done
wait
for i in 1 2 3 4 5 6 7 8; do d1 rm -f "many$i" >/dev/null & done
wait
check "8 containers started and removed at once on one network leave no record, name or lock wait" eval \
  'absent ipam/demo/names/many && [ "$(etcdget endpoints/demo/ | grep -c .)" = 1 ] && ! grep -q "another invocation" "$WORK"/overlayd1.log'

# 1 again: removal. dockerd asks overlayd first (--authorization-plugin cni-overlay): refused while
# a container is attached on another host, with the holders named; Docker itself refuses while one
# is attached on its own host.
d2 run -d --name test2 --net demo busybox sleep 3600 >/dev/null
rm_test1=$(d1 rm -f test1 2>&1) || echo "# docker rm -f test1 on host 1: $rm_test1"
id1=$(d1 network inspect demo --format '{{.Id}}')
id2=$(d2 network inspect demo --format '{{.Id}}')
out=$(d1 network rm demo 2>&1); st=$?
if [ $st != 0 ] && grep -q "network demo has active endpoints on other hosts: test2 on $node2" <<<"$out"; then
  ok "network rm demo on host 1 while test2 runs on host 2 is refused: $(grep -o 'authorization denied.*' <<<"$out")"
else nok "network rm demo on host 1 while test2 runs on host 2 is refused, naming test2 on $node2" "exit $st: $out"; fi
# The same network (same ids): it was never removed, not removed and put back.
# On failure it says what it saw (a diagnostic line, not a check).
kept() {
  local a b e
  a=$(d1 network inspect demo --format '{{.Id}}' 2>&1)
  b=$(d2 network inspect demo --format '{{.Id}}' 2>&1)
  e=$(etcdget networks/demo 2>&1)
  [ "$a" = "$id1" ] && [ "$b" = "$id2" ] && [ -n "$e" ] && return 0
  echo "# kept: host 1: $a (was $id1); host 2: $b (was $id2); etcd: ${e:-nothing}" >&2
  return 1
}
check "demo stays in Docker on both hosts (same ids) and in etcd" kept
out=$(d1 network rm "${id1:0:8}" 2>&1); st=$?
if [ $st != 0 ] && grep -q "network demo has active endpoints on other hosts" <<<"$out"; then
  ok "network rm by an id prefix is refused too"
else nok "network rm by an id prefix is refused too" "exit $st: $out"; fi
out=$(d1 network prune -f 2>&1); st=$?
if [ $st != 0 ] && grep -q "demo (test2 on $node2)" <<<"$out" && kept; then
  ok "network prune on host 1 is refused while demo is held on host 2"
else nok "network prune on host 1 is refused while demo is held on host 2" "exit $st: $out"; fi
out=$(d2 network rm demo 2>&1); st=$?
if [ $st != 0 ] && grep -q "active endpoints" <<<"$out" && ! grep -q "authorization denied" <<<"$out" && kept; then
  ok "network rm demo on host 2, where test2 is attached, is refused by Docker itself"
else nok "network rm demo on host 2, where test2 is attached, is refused by Docker itself" "exit $st: $out"; fi
ordinary() {
  d1 network create -d bridge plain >/dev/null && d1 network rm plain >/dev/null &&
    d1 run --rm --net none busybox true && d1 ps >/dev/null && d2 exec test2 true
}
check "ordinary commands still work under the authorization plugin (bridge network create/rm, run, ps, exec)" ordinary
check "dockerd asked overlayd (dockerd --debug log)" grep -q "AuthZ request using plugin cni-overlay" "$H1/dockerd.log"
d2 rm -f test2 >/dev/null
d2 rm -f test3 >/dev/null
check "network rm demo on host 1 succeeds once nothing is attached anywhere" d1 network rm demo
check "demo is gone from etcd and from Docker on host 2" eval 'absent networks/demo && until_true 10 eval "! d2 network inspect demo"'
# 6. A host dies (every process of host 2 killed, nothing cleaned): once its lease has been gone for
# --reclaim-after (2s here), the elected reclaimer releases what it held, and its names are free.
d1 network create -d cni-overlay --ipam-driver cni-overlay --subnet 10.2.0.0/24 late >/dev/null
started_on_2() {
  until_true 10 d2 network inspect late || { echo "late is not in Docker on host 2 after 10 s"; return 1; }
  d2 run -d --name test4 --net late busybox sleep 3600 >/dev/null || { tail -n 15 "$WORK/overlayd2.log"; return 1; }
  present ipam/late/names/test4 || {
    etcdget ipam/late/; grep -E "late|test4|lease|WARN|ERROR" "$WORK/overlayd2.log" | tail -n 15
    grep -E "reclaim|gone|$node2" "$WORK/overlayd1.log" | tail -n 8; return 1
  }
}
check "test4 runs on host 2 in network late" started_on_2
kill_host2() {
  local mnt p
  mnt=$(readlink "/proc/$(cat "$H2/holder.pid")/ns/mnt") || return 1
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$mnt" ]] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  return 0
}
kill_host2
reclaimed() { absent ipam/late/names/test4 && absent ipam/late/owners/ && absent endpoints/late/; }
check "host 2 killed: its name, address and record in late are reclaimed" until_true 60 reclaimed
started4() {
  d1 run -d --name test4 --net late busybox sleep 3600 >/dev/null || { etcdget ipam/late/; tail -n 15 "$WORK/overlayd1.log"; return 1; }
  [ "$(docker_on "$H1" inspect test4 --format '{{(index .NetworkSettings.Networks "late").IPAddress}}')" = 10.2.0.2 ]
}
check "test4 can then be started on host 1, with the address host 2 held" started4
check "overlayd logged no error" eval '! grep -E " ERROR " "$WORK"/overlayd1.log' 

# etcd unreachable: removing a cni-overlay network is refused (the removal could not reach the other
# hosts, and the network would come back here); nothing else is.
d1 network create -d cni-overlay --ipam-driver cni-overlay --subnet 10.3.0.0/24 lone >/dev/null
until_true 10 present networks/lone
lab etcd-member kill 1 >/dev/null
out=$(d1 network rm lone 2>&1); st=$?
if [ $st != 0 ] && grep -q "cannot read the endpoints of network lone in etcd" <<<"$out" && d1 network inspect lone >/dev/null; then
  ok "etcd down: network rm lone is refused and lone stays: $(grep -o 'cannot read.*in etcd' <<<"$out")"
else nok "etcd down: network rm lone is refused and lone stays" "exit $st: $out"; fi
check "etcd down: other commands still pass (ps, bridge network create and rm)" \
  eval 'd1 ps >/dev/null && d1 network create -d bridge plain2 >/dev/null && d1 network rm plain2 >/dev/null'
lab etcd-member start 1 >/dev/null
check "etcd back: network rm lone succeeds, and its record goes" \
  eval 'until_true 30 d1 network rm lone && until_true 10 absent networks/lone'

# overlayd down on host 1: dockerd refuses every API request (it cannot ask its authorization
# plugin; this is why --authorization-plugin is opt-in), and serves again once overlayd is back.
pid1=$(head -n 1 "$H1/overlayd.pids")
kill -TERM "$pid1"
until_true 10 eval "! kill -0 $pid1"
# test4's record as an overlayd before docker:eth wrote it, under the ifname eth0: the restarted
# overlayd must still find and remove it.
key4=$(etcdget endpoints/late/ | grep '/docker:eth$' || true)
if [ -n "$key4" ]; then
  val4=$(lab run 1 -- etcdctl --endpoints "$ETCD" get --print-value-only "$key4")
  lab run 1 -- etcdctl --endpoints "$ETCD" put "${key4%/docker:eth}/eth0" "${val4/\"docker:eth\"/\"eth0\"}" >/dev/null
  lab run 1 -- etcdctl --endpoints "$ETCD" del "$key4" >/dev/null
fi
t0=$SECONDS
out=$(d1 ps 2>&1); st=$?
if [ $st != 0 ] && grep -q "plugin cni-overlay failed" <<<"$out"; then
  ok "overlayd down on host 1: docker ps is refused after $((SECONDS - t0)) s: $(grep -o 'plugin cni-overlay failed.*' <<<"$out" | head -c 160)"
else nok "overlayd down on host 1: docker ps is refused" "exit $st: $out"; fi
docker_host_overlayd "$H1" "$WORK/overlayd1-again.log" "$BIN/overlayd" --etcd "$ETCD" \
  --node "$node1" --metrics-addr off --lease-ttl 2 --reclaim-after 2s >/dev/null
check "overlayd back on host 1: docker ps answers again" until_true 30 d1 ps
leftover1() { in_docker_host "$H1" ip -o link show | grep -E '^[0-9]+: (ov|dk)[0-9a-z]*[:@]' || true; }
host1_clean() { [ -z "$(leftover1)" ]; }
# A join cut short (overlayd killed between creating the container's interface and publishing its
# record) leaves the macvlan child in the host's namespace with its MAC local to the bridge. Docker then
# sends DeleteEndpoint, which finds the MAC on the child (there is no record), and removes both.
vni_late=$(lab run 1 -- etcdctl --endpoints "$ETCD" get --print-value-only /cni-overlay/networks/late | jq -r .vni)
cut_ep=c0ffee$(printf '%058d' 1) cut_mac=02:cc:00:00:00:01
cut_child=dk${cut_ep:0:12}
in_docker_host "$H1" ip link add "$cut_child" link "ovbr$vni_late" address "$cut_mac" type macvlan mode bridge &&
  in_docker_host "$H1" bridge fdb add "$cut_mac" dev "ovbr$vni_late" self local
cut_short_gone() {
  local out
  out=$(in_docker_host "$H1" curl -sS --unix-socket /run/docker/plugins/cni-overlay.sock \
    -d "{\"NetworkID\":\"$(d1 network inspect late --format '{{.Id}}')\",\"EndpointID\":\"$cut_ep\"}" \
    http://plugin/NetworkDriver.DeleteEndpoint) && [ "$out" = "{}" ] || { echo "# DeleteEndpoint: $out"; return 1; }
  ! in_docker_host "$H1" ip link show "$cut_child" >/dev/null 2>&1 && ! local_on "$H1" "$cut_mac" && has ": ovbr$vni_late[:@]" leftover1
}
check "a join cut short: DeleteEndpoint after the restart takes the MAC from the child left in the host's namespace, removes it and its local entry (test4 keeps the bridge)" \
  eval 'local_on "$H1" "$cut_mac" && cut_short_gone'
# The restarted overlayd knows no endpoint of before: DeleteEndpoint takes the MAC from the endpoint's
# record, and with test4's entry off the bridge, network late's devices go from host 1.
check "after the restart, rm -f test4 (recorded as an earlier overlayd did) on host 1 takes its record, local entry and network late's devices" \
  eval '[ -n "$key4" ] && present "endpoints/late/$(basename "$(dirname "$key4")")/eth0" && has ": ovbr" leftover1 && d1 rm -f test4 >/dev/null && until_true 5 host1_clean && until_true 5 absent endpoints/late/'
