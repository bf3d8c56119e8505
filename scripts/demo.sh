#!/usr/bin/env bash
# The main job: the seed (Docker's multi-host overlay backed by etcd) played end to end on this
# machine, through a real CNI runtime (podman 4.3 with its CNI backend), inside namespaces this script
# creates and removes:
#   1. two simulated hosts, node1 (192.168.205.10) and node2 (.11), a two-member etcd cluster, overlayd
#   2. overlayctl network create demo on node1; it shows up on node2; both nodes are listed
#   3. test1 on node1 gets 10.0.0.2; test1 on node2 is refused; test2 on node2 gets an address of demo
#   4. overlayctl network inspect demo lists both
#   5. test1 pings test2 by address and by name, across hosts
#   6. a container reaches a simulated internet (203.0.113.0/24) through the gwbridge
#   7. the seed's application: Redis (Debian's redis-server) in a container named redis on node1; a Flask
#      app on node2 counting its visits in it by that name (INCR hits), published with -p 8080:5000;
#      curl from the simulated internet to node2 (192.168.205.11:8080) twice, the count going up by one
# Exits non-zero if any step fails. Removes everything it created unless --keep.
#   scripts/demo.sh [--keep]
#   scripts/demo.sh --docker [--keep]   the same with Docker 20.10 and overlayd's Docker driver (scripts/lib/demo-docker.sh)
set -euo pipefail
if [ "${1:-}" = --docker ]; then shift; exec bash "$(dirname "$0")/lib/demo-docker.sh" "$@"; fi
source "$(dirname "$0")/lib/common.sh"

KEEP=false
[ "${1:-}" = --keep ] && KEEP=true

need_root
install_packages
build_release

WORK=$(mktemp -d /tmp/cni-overlay-demo.XXXXXX)
export LAB_DIR="$WORK/lab"
BIN="$WORK/bin"
export RP_PODMAN_BASE="$WORK/podman" RP_PODMAN_RUNROOT_BASE="/tmp/cod$$"
source "$ROOT/scripts/lib/podman-host.sh"
source "$ROOT/scripts/lib/app-images.sh"

# State our plugins keep on the host by default; removed at the end only if this run created it.
CREATED_STATE=()
for d in /var/lib/cni /var/lib/cni/etcd-ipam /var/lib/cni/etcd-ipam/demo /var/lib/cni/networks \
  /var/lib/cni/networks/cni_gwbridge /var/lib/cni/results; do
  [ -e "$d" ] || CREATED_STATE+=("$d")
done

HOSTS_UP=()
cleanup() {
  local status=$?
  if $KEEP; then
    say "kept (--keep): hosts $(lab ns 1) and $(lab ns 2), files in $WORK; LAB_DIR=$LAB_DIR $RELEASE/lab down removes the lab"
    return
  fi
  say "cleaning up"
  for h in "${HOSTS_UP[@]}"; do podman_host_teardown "$(lab ns "$h")" >/dev/null 2>&1 || true; done
  lab down
  rm -rf "$WORK" "$RP_PODMAN_RUNROOT_BASE"
  for d in "${CREATED_STATE[@]}"; do rm -rf "$d"; done
  exit $status
}
trap cleanup EXIT

# show PROMPT WORD...: the command as typed (a word with spaces or shell characters in single quotes).
# The prompt goes to stderr, so that a command's stdout stays its own.
show() {
  local w line=""
  for w in "${@:2}"; do
    [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]] || w="'${w//\'/\'\\\'\'}'"
    line+="${line:+ }$w"
  done
  printf '\033[36m%s$\033[0m %s\n' "$1" "$line" >&2
}
# on N CMD...: runs a command on node N, echoing it as a user would type it there.
on() { local h=$1; shift; show "node$h" "$@"; lab run "$h" -- "$@"; }
pod() { local h=$1; shift; show "node$h" podman "$@"; podman_on "$(lab ns "$h")" "$@"; }
ctl() { local h=$1; shift; show "node$h" overlayctl "$@"; lab run "$h" -- "$BIN/overlayctl" --etcd "$LAB_ETCD" "$@"; }
fail() { printf '\033[31mstep failed: %s\033[0m\n' "$*" >&2; exit 1; }
# The verified outcome of a step (scripts/tests/60-demo.sh asserts these lines).
passed() { printf 'passed: %s\n' "$*"; }
ip_of() { podman_on "$(lab ns "$1")" inspect "$2" --format '{{(index .NetworkSettings.Networks "demo").IPAddress}}'; }

mkdir -p "$BIN"
cp "$RELEASE"/{vxlan-overlay,etcd-ipam,gwbridge-egress,overlayd,overlayctl} "$BIN/"

say "1. two hosts on one underlay, an etcd cluster with a member on each, overlayd on each"
lab up --prefix "demo$$" --hosts 2 --etcd-members 1,2 >/dev/null
LAB_ETCD=$(lab etcd-endpoints)
on 1 etcdctl --endpoints "$LAB_ETCD" member list -w table
[ "$(lab run 2 -- etcdctl --endpoints "$LAB_ETCD" member list | grep -c started)" = 2 ] || fail "the etcd cluster does not have two members"
passed "etcd cluster of node1 and node2"
for h in 1 2; do
  podman_host_setup "$(lab ns "$h")" "$BIN:/usr/lib/cni" >/dev/null
  HOSTS_UP+=("$h")
  lab bg "$h" --log "$WORK/overlayd-node$h.log" -- "$BIN/overlayd" --etcd "$LAB_ETCD" --node "node$h" \
    --cni-conf-dir "$RP_PODMAN_BASE/$(lab ns "$h")/net.d" >/dev/null
done
for _ in $(seq 50); do
  [ "$(lab run 1 -- etcdctl --endpoints "$LAB_ETCD" get --prefix --keys-only /cni-overlay/nodes/ | grep -c node)" = 2 ] && break
  sleep 0.1
done

say "2. a network created on node1 shows up on node2"
ctl 1 network create demo --subnet 10.0.0.0/24
for _ in $(seq 50); do
  [ -f "$RP_PODMAN_BASE/$(lab ns 2)/net.d/$(lab name conflist --network demo)" ] && break
  sleep 0.1
done
[ -f "$RP_PODMAN_BASE/$(lab ns 2)/net.d/$(lab name conflist --network demo)" ] || fail "overlayd on node2 wrote no conflist for demo"
ctl 2 network ls
lab run 2 -- "$BIN/overlayctl" --etcd "$LAB_ETCD" network ls -o json | jq -e '.[] | select(.name == "demo")' >/dev/null || fail "node2 does not list demo"
pod 2 network ls
passed "demo is listed on node2"
ctl 2 node ls
[ "$(lab run 2 -- "$BIN/overlayctl" --etcd "$LAB_ETCD" node ls -o json | jq '[.[] | select(.alive)] | length')" = 2 ] || fail "not both nodes are alive"
passed "both nodes are alive"

say "3. test1 on node1; the name test1 again on node2 is refused; test2 on node2"
pod 1 run -d --name test1 --network demo localhost/busybox sleep 3600 >/dev/null
test1=$(ip_of 1 test1)
echo "test1: $test1"
[ "$test1" = 10.0.0.2 ] || fail "test1 got $test1, not 10.0.0.2"
passed "test1 on node1 got 10.0.0.2"
if out=$(pod 2 run -d --name test1 --network demo localhost/busybox sleep 3600 2>&1); then
  fail "a second test1 was accepted on node2"
fi
echo "$out" | grep -o 'endpoint with name test1 already exists in network demo' | head -1 \
  || fail "the refusal did not say why: $out"
passed "test1 on node2 was refused"
pod 2 rm -f test1 >/dev/null 2>&1 || true
pod 2 run -d --name test2 --network demo localhost/busybox sleep 3600 >/dev/null
test2=$(ip_of 2 test2)
echo "test2: $test2"
[[ $test2 == 10.0.0.* ]] || fail "test2 got $test2, not an address of demo"
passed "test2 on node2 got $test2"

say "4. the network across both hosts"
ctl 1 network inspect demo
lab run 1 -- "$BIN/overlayctl" --etcd "$LAB_ETCD" network inspect demo -o json | jq -e '.endpoints | length == 2' >/dev/null \
  || fail "inspect does not list both containers"
passed "inspect lists test1 on node1 and test2 on node2"

say "5. test1 (node1) pings test2 (node2), by address and by name"
pod 1 exec test1 ping -c 3 "$test2" || fail "test1 cannot ping $test2"
passed "test1 pinged test2 by address"
pod 1 exec test1 ping -c 3 test2 || fail "test1 cannot ping test2 by name"
passed "test1 pinged test2 by name"
pod 2 exec test2 ping -c 2 test1 || fail "test2 cannot ping test1 by name"
passed "test2 pinged test1 by name"

internet=$(lab addr internet)
say "6. the way out: test1 reaches the simulated internet ($internet) through the gwbridge"
pod 1 exec test1 ip -4 -o addr show
pod 1 exec test1 ping -c 2 "$internet" || fail "test1 cannot reach the internet"
passed "test1 reached the internet"

say "7. the seed's application: redis on node1; on node2 a Flask app counting its visits in redis, published on port 8080"
# No registry is reachable: the images are made of the files of Debian's packages (scripts/lib/app-images.sh),
# each tarball built once and imported on the host that runs it.
started=$SECONDS
app_images_build "$WORK/images" || fail "the application's images could not be built"
echo "built from Debian's packages in $((SECONDS - started)) s: redis.tar $(du -m "$WORK/images/redis.tar" | cut -f1) MB," \
  "flask.tar $(du -m "$WORK/images/flask.tar" | cut -f1) MB"
pod 1 import -q --change 'CMD ["redis-server", "--protected-mode", "no", "--save", ""]' \
  "$WORK/images/redis.tar" localhost/redis >/dev/null
pod 1 run -d --name redis --network demo localhost/redis >/dev/null
pong=""
for _ in $(seq 50); do
  pong=$(podman_on "$(lab ns 1)" exec redis redis-cli ping 2>/dev/null) && [ "$pong" = PONG ] && break
  sleep 0.2
done
pod 1 exec redis redis-cli ping
[ "$pong" = PONG ] || fail "redis on node1 does not answer"
passed "redis runs on node1"
pod 2 import -q --change 'CMD ["python3", "/app/app.py"]' --change 'WORKDIR /app' \
  "$WORK/images/flask.tar" localhost/flask >/dev/null
pod 2 run -d --name web --network demo -p 8080:5000 localhost/flask >/dev/null
# The app's own Redis client, in the app's container, by the name redis.
answer=$(pod 2 exec web python3 -c 'import redis; print("redis answers:", redis.Redis(host="redis").ping())') \
  || fail "the app on node2 cannot reach redis by name"
echo "$answer"
[ "$answer" = "redis answers: True" ] || fail "the app on node2 cannot reach redis by name"
passed "the app on node2 reached redis by name"
# Flask logs "Running on" once it listens.
for _ in $(seq 100); do
  grep -q 'Running on' <<<"$(podman_on "$(lab ns 2)" logs web 2>&1)" && break
  sleep 0.1
done
# curl from the simulated internet, to node2's underlay address and its published port.
visit() {
  show internet curl "http://$(lab addr 2):8080/"
  lab run internet -- curl -sS --max-time 10 "http://$(lab addr 2):8080/"
}
seen() { sed -nE 's/^Hello from [^!]+! I have been seen ([0-9]+) times\.$/\1/p' <<<"$1"; }
first=$(visit) || fail "no answer from node2's port 8080"
echo "$first"
second=$(visit) || fail "no second answer from node2's port 8080"
echo "$second"
n1=$(seen "$first"); n2=$(seen "$second")
[ -n "$n1" ] && [ -n "$n2" ] || fail "the app did not answer with its count"
[ "$n2" = $((n1 + 1)) ] || fail "the count went from $n1 to $n2, not up by one"
passed "two curls from the internet through node2's port 8080 counted $n1 then $n2"

say "demo complete: every step passed"
