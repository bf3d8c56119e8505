#!/usr/bin/env bash
# scripts/demo.sh --docker as a test (the seed with Docker 20.10 and overlayd's driver): one
# "ok - " / "not ok - " line per step. Under CI=true a missing dockerd is a failure, else a skip.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v dockerd >/dev/null; then
  if [ "${CI:-}" = true ]; then echo "not ok - demo --docker: dockerd missing (docker.io)"; exit 1; fi
  echo "# skip demo --docker: dockerd missing (apt-get install docker.io)"; exit 0
fi
log=$(mktemp)
bash "$ROOT/scripts/demo.sh" --docker >"$log" 2>&1
status=$?
check() { if grep -qE -- "$2" "$log"; then echo "ok - demo --docker: $1"; else echo "not ok - demo --docker: $1"; fi; }
check "1. two hosts, a two-member etcd cluster" '^passed: etcd cluster of node1 and node2$'
check "1. dockerd and overlayd on each" '^passed: dockerd and overlayd on node1 and node2$'
check "2. the network created on node1 is listed on node2" '^passed: demo is listed on node2$'
check "3. test1 on node1 gets 10.0.0.2" '^passed: test1 on node1 got 10\.0\.0\.2$'
check "3. test1 on node2 is refused with the seed's message" '^passed: test1 on node2 was refused$'
check "3. test2 on node2 gets 10.0.0.3" '^passed: test2 on node2 got 10\.0\.0\.3$'
check "4. inspect lists both containers" '^passed: inspect lists test1 on node1 and test2 on node2$'
check "5. test1 pings test2 by address" '^passed: test1 pinged test2 by address$'
check "5. test1 pings test2 by name" '^passed: test1 pinged test2 by name$'
check "5. test2 pings test1 by name" '^passed: test2 pinged test1 by name$'
check "6. test1 reaches the simulated internet" '^passed: test1 reached the internet$'
check "7. redis runs on node1" '^passed: redis runs on node1$'
check "7. the app on node2 reaches redis by name" '^passed: the app on node2 reached redis by name$'
check "7. two curls through node2's published port count up" "^passed: two curls from the internet through node2's port 8080 counted"
check "8. network rm on node1 is refused while node2's containers use it" '^passed: network rm demo on node1 was refused'
check "8. with nothing attached, network rm on node1 removes it from node2 too" '^passed: network rm demo on node1 removed it from node2 too$'
if [ "$status" = 0 ] && grep -q 'demo complete: every step passed' "$log"; then
  echo "ok - demo --docker: exits 0 and cleans up"
else
  echo "not ok - demo --docker: exited $status"; tail -20 "$log" | sed 's/^/# /'
fi
if ls /run/netns 2>/dev/null | grep -qE '^dkdemo[0-9]+-'; then
  echo "not ok - demo --docker: left namespaces behind"
else
  echo "ok - demo --docker: left no namespace behind"
fi
rm -f "$log"
