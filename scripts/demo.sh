#!/usr/bin/env bash
# The main job: the seed's story, played on this machine inside things this script creates and removes.
# For now (issue 2) it shows etcd-ipam against a local etcd: cluster-wide addresses and names taken
# atomically, a duplicate name refused across nodes, and release. Later issues grow it into the full
# two-host overlay of the seed.
#   scripts/demo.sh [--keep]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

KEEP=false
[ "${1:-}" = --keep ] && KEEP=true

need_root
install_packages
build_release

WORK=$(mktemp -d /tmp/cni-overlay-demo.XXXXXX)
cleanup() {
  if $KEEP; then say "kept: etcd at $ETCD_ENDPOINT (pid $ETCD_PID), files in $WORK"; return; fi
  etcd_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

etcd_start
say "etcd is running at $ETCD_ENDPOINT"

conf() { # NODE: the network "demo", 10.0.0.0/24, as each node's runtime would hand it to etcd-ipam
  cat <<JSON
{"cniVersion":"1.0.0","name":"demo","type":"vxlan-overlay",
 "ipam":{"type":"etcd-ipam","subnet":"10.0.0.0/24","node":"$1","dataDir":"$WORK/$1",
         "etcd":{"endpoints":["$ETCD_ENDPOINT"]}}}
JSON
}

ipam() { # COMMAND NODE CONTAINER [NAME]
  local args="IgnoreUnknown=1"
  [ -n "${4:-}" ] && args="$args;K8S_POD_NAME=$4"
  conf "$2" | CNI_COMMAND=$1 CNI_CONTAINERID=$3 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 \
    CNI_PATH="$RELEASE" CNI_ARGS="$args" "$RELEASE/etcd-ipam" 2>>"$WORK/plugins.log"
}

show() { echo "\$ $*"; }

say "1. container test1 on node1 asks for an address in network demo"
show "CNI_COMMAND=ADD CNI_ARGS=K8S_POD_NAME=test1 etcd-ipam  (node1)"
out=$(ipam ADD node1 c-test1 test1)
echo "$out" | jq .
[ "$(jq -r '.ips[0].address' <<<"$out")" = 10.0.0.2/24 ] || die "test1 did not get 10.0.0.2"

say "2. the name test1 again, on node2: refused cluster-wide"
show "CNI_COMMAND=ADD CNI_ARGS=K8S_POD_NAME=test1 etcd-ipam  (node2)"
if out=$(ipam ADD node2 c-other test1); then die "a duplicate name was accepted: $out"; fi
echo "$out" | jq .
[ "$(jq -r .msg <<<"$out")" = "endpoint with name test1 already exists in network demo" ] || die "wrong refusal"

say "3. test2 on node2 gets the next address of the same network"
out=$(ipam ADD node2 c-test2 test2)
echo "$out" | jq -c .ips
[ "$(jq -r '.ips[0].address' <<<"$out")" = 10.0.0.3/24 ] || die "test2 did not get 10.0.0.3"

say "4. what etcd holds"
show "etcdctl get --prefix /cni-overlay/ipam/demo"
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINT" get --prefix /cni-overlay/ipam/demo | paste - - | grep -v /cursor/ | sed 's/^/  /'

say "5. test1 is deleted on node1: the name test1 is free again, on any node"
ipam DEL node1 c-test1
out=$(ipam ADD node2 c-test1b test1)
echo "$out" | jq -c .ips
jq -e '.ips[0].address' <<<"$out" >/dev/null || die "test1 could not be taken again"
ipam DEL node2 c-test1b; ipam DEL node2 c-test2
left=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINT" get --prefix --keys-only /cni-overlay/ipam/demo/owners | grep -c . || true)
[ "$left" = 0 ] || die "allocations left after DEL: $left"
echo "all released: no allocation left in etcd"

say "demo complete"
