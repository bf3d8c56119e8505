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
source "$(dirname "$0")/lib/demo-walkthrough.sh"

demo_prepare cni-overlay-demo "$@"
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

pod() { local h=$1; shift; show "node$h" podman "$@"; podman_on "$(lab ns "$h")" "$@"; }
# The walkthrough's runtime (scripts/lib/demo-walkthrough.sh): podman.
runtime() { pod "$@"; }
runtime_quiet() { local h=$1; shift; podman_on "$(lab ns "$h")" "$@"; }
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
demo_inspect_across_hosts

say "5. test1 (node1) pings test2 (node2), by address and by name"
demo_pings_across_hosts "$test2"

internet=$(lab addr internet)
say "6. the way out: test1 reaches the simulated internet ($internet) through the gwbridge"
demo_reaches_internet "$internet"

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
demo_redis_answers
pod 2 import -q --change 'CMD ["python3", "/app/app.py"]' --change 'WORKDIR /app' \
  "$WORK/images/flask.tar" localhost/flask >/dev/null
pod 2 run -d --name web --network demo -p 8080:5000 localhost/flask >/dev/null
demo_app_counts_visits

say "demo complete: every step passed"
