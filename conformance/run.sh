#!/usr/bin/env bash
# The black-box conformance suite of cni-overlay: the plugins (target/$CNI_OVERLAY_PROFILE, default
# release) as runtimes drive them, on one lab of three simulated hosts (etcd on node1, overlayd on node1
# and node2), one file per runtime:
#
#   cnitool.sh            cnitool built here against Debian's libcni 1.1.2: cniVersion 0.3.1, 0.4.0, 1.0.0
#                         x {overlay, overlay + gwbridge-egress, overlay with host-local, the reference
#                         bridge with etcd-ipam}; two hosts through overlayd; concurrent ADDs on two hosts
#   reference-plugins.sh  Debian's portmap, tuning and bandwidth chained after ours (through cnitool)
#   containerd.sh         containerd 1.6, ctr run --cni --rm
#   podman.sh             podman 4.3 (CNI backend) on two hosts
#
# The plugins run directly (VERSION, GC and STATUS at 1.1.0, and the bad-input cases) are the Rust
# suite's: crates/testutils/tests/conformance.rs (cargo test -p testutils --test conformance).
#
#   conformance/run.sh [RUNTIME...]    (default: all four, in that order; root only)
#
# One line per check: "ok - RUNTIME VERSION VERB CASE" or "not ok - ... : reason"; "# n/a - ..." for what
# does not apply; last line "N passed, N failed"; exit status 1 if any failed. CONFORMANCE_SUMMARY=FILE
# also writes a TSV (runtime, version, verb, case, result: pass|FAIL|n/a) for conformance/table.sh.
# CONFORMANCE_KEEP=1 keeps the work dir. Everything runs in namespaces cf-<pid>-* and the plugins' gateway
# sandboxes ovl-<vni>-node<N> of this run's VNIs, removed on exit (by `lab down`), also on failure.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/lib/common.sh
source "$HERE/../scripts/lib/common.sh"
need_root

RUNTIMES=("$@")
[ ${#RUNTIMES[@]} -gt 0 ] || RUNTIMES=(cnitool reference-plugins containerd podman)
for rt in "${RUNTIMES[@]}"; do
  [ -f "$HERE/$rt.sh" ] || die "unknown runtime $rt (cnitool, reference-plugins, containerd, podman)"
done

WORK=$(mktemp -d /tmp/cf-conformance.XXXXXX)
export LAB_DIR=$WORK/lab
export RP_PODMAN_BASE=$WORK/podman RP_PODMAN_RUNROOT_BASE=/tmp/cf-prun-$$ RP_CTR_BASE=$WORK/ctr
# shellcheck source=../scripts/lib/podman-host.sh
source "$HERE/../scripts/lib/podman-host.sh"
# shellcheck source=../scripts/lib/containerd-host.sh
source "$HERE/../scripts/lib/containerd-host.sh"

# VNIs of this run: their gateway sandboxes (ovl-<vni>-node<N>) are the only ones `lab down` removes.
VBASE=$((100000 + ($$ % 100000) * 100))
CNI_BIN=$WORK/cni-bin
CNITOOL=$WORK/bin/cnitool
E=""
PODMAN_UP=()
CTR_UP=""
VAR_LIB_CNI_EXISTED=0
[ -d /var/lib/cni ] && VAR_LIB_CNI_EXISTED=1

cleanup() {
  set +e
  local h
  for h in "${PODMAN_UP[@]}"; do podman_host_teardown "$h" >/dev/null 2>&1; done
  [ -n "$CTR_UP" ] && containerd_host_stop "$CTR_UP" >/dev/null 2>&1
  lab down
  # podman 4.3 and ctr keep libcni's result cache in /var/lib/cni: remove what we made there.
  if [ "$VAR_LIB_CNI_EXISTED" = 0 ] && [ -d /var/lib/cni ] && [ -z "$(find /var/lib/cni -type f 2>/dev/null)" ]; then
    find /var/lib/cni -depth -type d -empty -delete 2>/dev/null
  fi
  if [ "${CONFORMANCE_KEEP:-0}" = 1 ]; then echo "# work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=lib.sh
source "$HERE/lib.sh"

# A set-up failure is one failed check, and the end of the run.
setup_failed() { fail setup - - "set-up" "$1"; finish; exit 1; }

for tool in jq etcd etcdctl ip nft nsenter go podman ctr containerd tc; do
  command -v "$tool" >/dev/null || setup_failed "$tool not found (scripts/test.sh installs the Debian packages)"
done
for bin in vxlan-overlay etcd-ipam gwbridge-egress overlayd lab; do
  [ -x "$RELEASE/$bin" ] || setup_failed "$RELEASE/$bin missing: cargo build --profile $PROFILE --workspace --bins"
done

say "building cnitool against Debian's libcni"
"$HERE/build-cnitool.sh" "$WORK/bin" >"$WORK/cnitool-build.log" 2>&1 || setup_failed "cnitool build failed: $(tail -3 "$WORK/cnitool-build.log")"
mkdir -p "$CNI_BIN"
cp /usr/lib/cni/* "$CNI_BIN/"
cp "$RELEASE/vxlan-overlay" "$RELEASE/etcd-ipam" "$RELEASE/gwbridge-egress" "$CNI_BIN/"

say "lab: 3 simulated hosts, etcd on node1, overlayd on node1 and node2"
lab up --prefix "cf-$$" --hosts 3 --sandbox-vnis "$VBASE-$((VBASE + 99))" >"$WORK/lab-up.log" 2>&1 ||
  setup_failed "lab up failed: $(tail -3 "$WORK/lab-up.log")"
E=$(lab etcd-endpoints)
for h in 1 2; do
  lab bg "$h" --log "$WORK/overlayd-node$h.log" -- "$RELEASE/overlayd" --etcd "$E" --node "node$h" --no-conflists >/dev/null
done
registered() { [ -n "$(ectl get --keys-only "/cni-overlay/nodes/$1" 2>/dev/null)" ]; }
for h in 1 2; do
  wait_for 15 registered "node$h" || setup_failed "overlayd on node$h did not register: $(tail -3 "$WORK/overlayd-node$h.log")"
done

for rt in "${RUNTIMES[@]}"; do
  # shellcheck source=/dev/null
  source "$HERE/$rt.sh"
done

finish
