#!/usr/bin/env bash
# The main job as a test: runs scripts/demo.sh (the seed, end to end through podman on two simulated
# hosts) and asserts each of its steps: one "ok - " / "not ok - " line per step.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
log=$(mktemp)
bash "$ROOT/scripts/demo.sh" >"$log" 2>&1
status=$?
check() { # NAME PATTERN: the demo's output shows PATTERN
  if grep -qE -- "$2" "$log"; then echo "ok - demo: $1"; else echo "not ok - demo: $1"; fi
}
check "1. two hosts, a two-member etcd cluster, overlayd on each" '^passed: etcd cluster of node1 and node2$'
check "2. the network created on node1 is listed on node2" '^passed: demo is listed on node2$'
check "2. both nodes are alive" '^passed: both nodes are alive$'
check "3. test1 on node1 gets 10.0.0.2" '^passed: test1 on node1 got 10\.0\.0\.2$'
check "3. test1 on node2 is refused with the seed's message" '^passed: test1 on node2 was refused$'
check "3. test2 on node2 gets an address of demo" '^passed: test2 on node2 got 10\.0\.0\.[0-9]+$'
check "4. inspect lists both containers with their nodes" '^passed: inspect lists test1 on node1 and test2 on node2$'
check "5. test1 pings test2 by address across hosts" '^passed: test1 pinged test2 by address$'
check "5. test1 pings test2 by name across hosts" '^passed: test1 pinged test2 by name$'
check "5. test2 pings test1 by name across hosts" '^passed: test2 pinged test1 by name$'
check "6. test1 reaches the simulated internet" '^passed: test1 reached the internet$'
check "7. redis runs on node1" '^passed: redis runs on node1$'
check "7. the app on node2 reaches redis by name" '^passed: the app on node2 reached redis by name$'
# The demo checks that the count goes up by one; so does this, on the line it prints.
counts=$(sed -nE "s/^passed: two curls from the internet through node2's port 8080 counted ([0-9]+) then ([0-9]+)$/\1 \2/p" "$log")
if [ -n "$counts" ] && read -r n1 n2 <<<"$counts" && [ "$n2" = $((n1 + 1)) ]; then
  echo "ok - demo: 7. the count goes up across two curls from the internet through node2's published port"
else
  echo "not ok - demo: 7. the count goes up across two curls from the internet through node2's published port"
fi
if [ "$status" = 0 ] && grep -q 'demo complete: every step passed' "$log"; then
  echo "ok - demo: exits 0 and cleans up"
else
  echo "not ok - demo: exited $status"; tail -20 "$log" | sed 's/^/# /'
fi
# Nothing of the demo may remain.
if ls /run/netns 2>/dev/null | grep -qE '^demo[0-9]+-' || [ -n "$("$ROOT/target/${CNI_OVERLAY_PROFILE:-release}/lab" sandboxes node1 node2)" ]; then
  echo "not ok - demo: left namespaces behind"
else
  echo "ok - demo: left no namespace behind"
fi
rm -f "$log"
