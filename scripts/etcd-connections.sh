#!/usr/bin/env bash
# Counts the etcd connections of one ADD (and one DEL) through vxlan-overlay and etcd-ipam, with
# `strace -f -e trace=connect`, for a conflist that leaves the VNI and the ranges to the network's
# record (made with `overlayctl network create`): the case where configuration loading used to read
# etcd on connections of its own. Every connection is an etcd login when authentication is on.
#
#   scripts/etcd-connections.sh [BIN_DIR]     (default: target/$CNI_OVERLAY_PROFILE, i.e. release)
#
# BIN_DIR holds vxlan-overlay, etcd-ipam and overlayctl (any build, e.g. an older one to compare).
# Root; needs strace and etcd. Everything runs in two namespaces made here (a host with a veth as
# underlay and its own etcd on loopback, and a container) and is removed on exit.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

need_root
command -v strace >/dev/null || die "strace is not installed"
BIN=${1:-$RELEASE}
for b in vxlan-overlay etcd-ipam overlayctl; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (cargo build --profile $PROFILE --workspace --bins)"
done

TAG=ecc$$
HOST=$TAG-h
CTR=$TAG-c
TMP=$(mktemp -d)
ETCD_EP=127.0.0.1:2379
cleanup() {
  if [ -n "${EPID:-}" ]; then kill "$EPID" 2>/dev/null || true; wait "$EPID" 2>/dev/null || true; fi
  ip netns del "$CTR" 2>/dev/null || true
  ip netns del "ovl-4242-$TAG" 2>/dev/null || true
  ip netns del "$HOST" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

in_host() { ip netns exec "$HOST" "$@"; }
ip netns add "$HOST"
ip netns add "$CTR"
in_host ip link set lo up
in_host ip link add d0 type veth peer name d1
in_host ip addr add 192.0.2.1/24 dev d0
in_host ip link set d1 up
in_host ip link set d0 up
in_host ip route add default dev d0
in_host etcd --name ecc --data-dir "$TMP/etcd" \
  --listen-client-urls "http://$ETCD_EP" --advertise-client-urls "http://$ETCD_EP" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster ecc=http://127.0.0.1:2380 --log-level error --logger zap >"$TMP/etcd.log" 2>&1 &
EPID=$!
for _ in $(seq 100); do
  in_host env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EP" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done
in_host "$BIN/overlayctl" --etcd "$ETCD_EP" network create demo --subnet 10.0.0.0/24 --vni 4242 >/dev/null

# No vni, no ranges: both plugins take them from the network's record.
jq -n --arg e "$ETCD_EP" --arg node "$TAG" --arg d "$TMP/ipam" \
  '{cniVersion: "1.0.0", name: "demo", type: "vxlan-overlay", node: $node,
    etcd: {endpoints: [$e]}, ipam: {type: "etcd-ipam", dataDir: $d}}' >"$TMP/conf.json"

# count VERB NETNS: runs the verb under strace; prints the connect() calls to etcd's port, per process.
count() {
  in_host env CNI_COMMAND="$1" CNI_CONTAINERID=ecc1 CNI_NETNS="$2" CNI_IFNAME=eth0 CNI_PATH="$BIN" \
    strace -f -qq -e trace=connect -o "$TMP/$1.trace" "$BIN/vxlan-overlay" <"$TMP/conf.json" >"$TMP/$1.out" ||
    die "$1 failed: $(cat "$TMP/$1.out")"
  local total per
  total=$(grep -c "htons(${ETCD_EP##*:})" "$TMP/$1.trace" || true)
  per=$(grep "htons(${ETCD_EP##*:})" "$TMP/$1.trace" | awk '{print $1}' | sort | uniq -c | awk '{print $1}' | tr '\n' ' ')
  printf '%s: %s connections to etcd (per process: %s)\n' "$1" "$total" "${per% }"
}
count ADD "/run/netns/$CTR"
count DEL ""
