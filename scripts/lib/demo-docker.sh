#!/usr/bin/env bash
# scripts/demo.sh --docker: the seed's walkthrough played with Docker (Debian's docker.io 20.10) and
# overlayd's cni-overlay network and IPAM driver, instead of podman, on two simulated hosts:
#   1. node1 (192.168.205.10) and node2 (.11), a two-member etcd cluster, a dockerd and overlayd
#      --docker-plugin cni-overlay on each (scripts/lib/docker-host.sh)
#   2. docker network create -d cni-overlay demo on node1; it shows up in docker network ls on node2
#   3. test1 on node1 gets 10.0.0.2; test1 on node2 is refused; test2 on node2 gets 10.0.0.3
#   4. docker network inspect demo on each host, overlayctl network inspect demo for all
#   5. test1 pings test2 by address and by name, across hosts
#   6. a container reaches a simulated internet through docker_gwbridge
#   7. the seed's application: redis on node1, the Flask app on node2 using it by name, -p 8080:5000
#   8. docker network rm demo on node1 refused while node2's containers use it (dockerd runs with
#      --authorization-plugin cni-overlay), then, with nothing attached, removed on both
# Exits non-zero if any step fails. Removes everything it created unless --keep.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/demo-walkthrough.sh"

demo_prepare dkdemo "$@"
source "$ROOT/scripts/lib/busybox-image.sh"
source "$ROOT/scripts/lib/docker-host.sh"
source "$ROOT/scripts/lib/app-images.sh"

cleanup() {
  local status=$?
  if $KEEP; then
    say "kept (--keep): hosts $(lab ns 1) and $(lab ns 2), files in $WORK"
    return
  fi
  say "cleaning up"
  docker_host_stop "$WORK/node1" >/dev/null 2>&1 || true
  docker_host_stop "$WORK/node2" >/dev/null 2>&1 || true
  lab down
  rm -rf "$WORK"
  exit $status
}
trap cleanup EXIT

dk() { local h=$1; shift; show "node$h" docker "$@"; docker_on "$WORK/node$h" "$@"; }
# The walkthrough's runtime (scripts/lib/demo-walkthrough.sh): Docker.
runtime() { dk "$@"; }
runtime_quiet() { local h=$1; shift; docker_on "$WORK/node$h" "$@"; }
ip_of() { docker_on "$WORK/node$1" inspect "$2" --format '{{(index .NetworkSettings.Networks "demo").IPAddress}}'; }

mkdir -p "$BIN"
cp "$RELEASE"/{overlayd,overlayctl} "$BIN/"

say "1. two hosts on one underlay, an etcd cluster with a member on each, dockerd and overlayd on each"
lab up --prefix "dkdemo$$" --hosts 2 --etcd-members 1,2 >/dev/null
LAB_ETCD=$(lab etcd-endpoints)
on 1 etcdctl --endpoints "$LAB_ETCD" member list -w table
passed "etcd cluster of node1 and node2"
# overlayd first: dockerd --authorization-plugin cni-overlay (step 8) looks the plugin up at its start.
export DOCKER_HOST_EXTRA_ARGS="--authorization-plugin cni-overlay"
for h in 1 2; do
  docker_host_prepare "$(lab ns "$h")" "$WORK/node$h" "node$h" || fail "no host namespaces for node$h"
  show "node$h" overlayd --etcd "$LAB_ETCD" --node "node$h" --docker-plugin cni-overlay
  docker_host_overlayd "$WORK/node$h" "$WORK/overlayd-node$h.log" "$BIN/overlayd" --etcd "$LAB_ETCD" \
    --node "node$h" --metrics-addr off >/dev/null
  for _ in $(seq 100); do in_docker_host "$WORK/node$h" test -S /run/docker/plugins/cni-overlay.sock && break; sleep 0.1; done
  show "node$h" dockerd --authorization-plugin cni-overlay
  docker_host_dockerd "$WORK/node$h" || fail "dockerd on node$h did not start"
  docker_host_import "$WORK/node$h" || fail "no busybox image on node$h"
done
dk 1 version --format 'Docker {{.Server.Version}} (API {{.Server.APIVersion}})'
passed "dockerd and overlayd on node1 and node2"

say "2. a network created on node1 shows up on node2"
dk 1 network create -d cni-overlay --ipam-driver cni-overlay --subnet 10.0.0.0/24 demo >/dev/null
for _ in $(seq 50); do docker_on "$WORK/node2" network inspect demo >/dev/null 2>&1 && break; sleep 0.1; done
dk 2 network ls
docker_on "$WORK/node2" network inspect demo >/dev/null 2>&1 || fail "demo is not listed on node2"
ctl 2 network ls
passed "demo is listed on node2"
ctl 2 node ls

say "3. test1 on node1; the name test1 again on node2 is refused; test2 on node2"
# --dns: Docker's own resolver knows only this host's containers and forwards the rest to the
# network's DNS at its gateway (overlayd), which knows every host's.
dk 1 run -d --name test1 --net demo --dns 10.0.0.1 busybox sh -c 'while true; do sleep 3600; done' >/dev/null
test1=$(ip_of 1 test1)
echo "test1: $test1"
[ "$test1" = 10.0.0.2 ] || fail "test1 got $test1, not 10.0.0.2"
passed "test1 on node1 got 10.0.0.2"
if out=$(dk 2 run -d --name test1 --net demo busybox sh -c 'while true; do sleep 3600; done' 2>&1); then
  fail "a second test1 was accepted on node2"
fi
echo "$out"
grep -q 'endpoint with name test1 already exists in network demo' <<<"$out" || fail "the refusal did not say why: $out"
passed "test1 on node2 was refused"
docker_on "$WORK/node2" rm -f test1 >/dev/null 2>&1 || true
dk 2 run -d --name test2 --net demo --dns 10.0.0.1 busybox sh -c 'while true; do sleep 3600; done' >/dev/null
dk 2 exec test2 ip -4 -o addr show
test2=$(ip_of 2 test2)
[ "$test2" = 10.0.0.3 ] || fail "test2 got $test2, not 10.0.0.3"
passed "test2 on node2 got 10.0.0.3"

say "4. the network on each host, and across both"
dk 1 network inspect demo --format '{{range .Containers}}{{.Name}} {{.IPv4Address}}{{"\n"}}{{end}}'
dk 2 network inspect demo --format '{{range .Containers}}{{.Name}} {{.IPv4Address}}{{"\n"}}{{end}}'
demo_inspect_across_hosts

say "5. test1 (node1) pings test2 (node2), by address and by name"
demo_pings_across_hosts "$test2"

internet=$(lab addr internet)
say "6. the way out: docker_gwbridge, as with Docker's own overlay"
dk 1 network ls
demo_reaches_internet "$internet"

say "7. the seed's application: redis on node1; on node2 a Flask app counting its visits in redis, published on port 8080"
app_images_build "$WORK/images" || fail "the application's images could not be built"
dk 1 import -c 'CMD ["redis-server", "--protected-mode", "no", "--save", ""]' "$WORK/images/redis.tar" redis >/dev/null
dk 1 run -d --name redis --net demo --dns 10.0.0.1 redis >/dev/null
demo_redis_answers
dk 2 import -c 'CMD ["python3", "/app/app.py"]' -c 'WORKDIR /app' "$WORK/images/flask.tar" flask >/dev/null
dk 2 run -d --name web --net demo --dns 10.0.0.1 -p 8080:5000 flask >/dev/null
demo_app_counts_visits

say "8. docker network rm: refused while containers on the other host use the network, then everywhere"
if out=$(dk 1 network rm demo 2>&1); then fail "demo was removed on node1 while node2's containers use it"; fi
echo "$out"
grep -q 'network demo has active endpoints on other hosts: .* on node2' <<<"$out" || fail "the refusal did not say why: $out"
docker_on "$WORK/node1" network inspect demo >/dev/null 2>&1 || fail "demo is gone from node1"
passed "network rm demo on node1 was refused while node2's containers use it"
dk 2 rm -f test2 web >/dev/null
dk 1 rm -f test1 redis >/dev/null
dk 1 network rm demo || fail "network rm demo on node1 failed with nothing attached"
# node2's overlayd takes it out of Docker within a poll of its record (0.25 s); 10 s is only a give-up.
for _ in $(seq 100); do docker_on "$WORK/node2" network inspect demo >/dev/null 2>&1 || break; sleep 0.1; done
dk 2 network ls
if docker_on "$WORK/node2" network inspect demo >/dev/null 2>&1; then
  ctl 1 network ls
  grep -h "demo" "$WORK"/overlayd-node[12].log | tail -20
  fail "demo is still on node2"
fi
passed "network rm demo on node1 removed it from node2 too"

say "demo complete: every step passed"
