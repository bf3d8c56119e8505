#!/usr/bin/env bash
# A private containerd 1.6 per "simulated host" (network namespace), driven by
# `ctr`, with ctr's CNI config/plugin/cache dirs redirected per host.
#
#   source scripts/lib/containerd-host.sh
#   containerd_host_start HOST [CNI_BIN_DIR]
#   cp my.conflist "$(containerd_host_dir HOST)/net.d/"
#   ctr_on HOST run --cni --rm localhost/busybox:latest c1 sh -c 'ip addr'
#   containerd_host_stop HOST
#
# Why the mount namespace: ctr 1.6 (`ctr run --cni`) calls
# gocni.New(gocni.WithDefaultConf) with no options; there is no flag, env var
# or config key for its CNI dirs (the [plugins."io.containerd.grpc.v1.cri".cni]
# settings belong to the CRI plugin and are not used by ctr). Debian's build
# hard-codes: config dir /etc/cni/net.d (first file in sort order only),
# plugin path [/opt/cni/bin, /usr/lib/cni], result cache /var/lib/cni.
# So ctr_on runs ctr in a private mount namespace (unshare --mount, private
# propagation) in which
#     HOSTDIR/net.d      is bind-mounted on /etc/cni/net.d
#     HOSTDIR/optroot    is bind-mounted on /opt   (optroot/cni/bin -> CNI_BIN_DIR)
#     HOSTDIR/cni-cache  is bind-mounted on /var/lib/cni (if that dir exists)
# Nothing in the root filesystem is written; the mounts vanish with ctr.
# The CNI plugins run as children of ctr: in HOST's netns, in that private
# mount namespace. Plugins not found in CNI_BIN_DIR are looked up in /usr/lib/cni.
#
# HOST is a network namespace name; created (and later deleted) if missing.
# Variables: RP_CTR_BASE (default /tmp/rp-containerd-hosts),
#            RP_CTR_IMAGE (default localhost/busybox:latest),
#            RP_CTR_ROOTFS_TAR (rootfs tarball; default built from busybox-static).

# shellcheck source=busybox-image.sh
source "$(dirname "${BASH_SOURCE[0]}")/busybox-image.sh"

RP_CTR_BASE=${RP_CTR_BASE:-/tmp/rp-containerd-hosts}
RP_CTR_IMAGE=${RP_CTR_IMAGE:-localhost/busybox:latest}

containerd_host_dir() { printf '%s/%s' "$RP_CTR_BASE" "$1"; }

_ctr_pid_alive() { # PID SOCKET: is PID still our containerd?
    [[ -n $1 && -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "containerd --config $2"
}

# ctr_on HOST ARGS... : run ctr against HOST's containerd, in HOST's netns,
# with the CNI dirs redirected (see above).
ctr_on() {
    local host=$1 d
    shift
    d=$(containerd_host_dir "$host")
    if [[ ! -S $d/containerd.sock ]]; then
        echo "ctr_on: containerd for $host not running ($d/containerd.sock missing)" >&2
        return 1
    fi
    if [[ ! -d /etc/cni/net.d ]]; then
        echo "ctr_on: /etc/cni/net.d does not exist; cannot bind-mount the per-host CNI config over it" >&2
        return 1
    fi
    nsenter --net="/var/run/netns/$host" -- \
        unshare --mount --propagation private -- /bin/sh -c '
            d=$1; shift
            mount --bind "$d/net.d" /etc/cni/net.d || exit 125
            mount --bind "$d/optroot" /opt || exit 125
            if [ -d /var/lib/cni ]; then mount --bind "$d/cni-cache" /var/lib/cni || exit 125; fi
            exec ctr --address "$d/containerd.sock" "$@"
        ' ctr_on "$d" "$@"
}

# containerd_host_start HOST [CNI_BIN_DIR]
containerd_host_start() {
    if [[ $# -lt 1 || $# -gt 2 ]]; then
        echo "usage: containerd_host_start HOST [CNI_BIN_DIR]" >&2
        return 2
    fi
    local host=$1 bindir=${2:-} d pid i tar oci
    d=$(containerd_host_dir "$host")
    if ((${#d} > 80)); then
        echo "containerd_host_start: $d too long for a unix socket path ($d/containerd.sock.ttrpc); shorten RP_CTR_BASE" >&2
        return 1
    fi
    if [[ -f $d/containerd.pid ]] && _ctr_pid_alive "$(cat "$d/containerd.pid")" "$d/config.toml"; then
        echo "containerd_host_start: $host already running (pid $(cat "$d/containerd.pid"))" >&2
        return 1
    fi
    mkdir -p "$d"/{root,state,opt,net.d,cni-cache,cni-bin,optroot/cni} || return 1
    [[ -n $bindir ]] || bindir=$d/cni-bin
    bindir=$(cd "$bindir" && pwd) || return 1
    ln -sfn "$bindir" "$d/optroot/cni/bin"

    if [[ ! -e /var/run/netns/$host ]]; then
        ip netns add "$host" || return 1
        touch "$d/.created-netns"
    fi
    ip -n "$host" link set lo up || return 1

    cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "$d/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
EOF
    rm -f "$d/containerd.sock"
    # nsenter --net only (no --pid) execs containerd, so $! is containerd's pid.
    nsenter --net="/var/run/netns/$host" -- \
        containerd --config "$d/config.toml" >>"$d/containerd.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$d/containerd.pid"
    for ((i = 0; i < 200; i++)); do
        if ctr --address "$d/containerd.sock" version >/dev/null 2>&1; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "containerd_host_start: containerd exited; see $d/containerd.log" >&2
            tail -5 "$d/containerd.log" >&2
            return 1
        fi
        sleep 0.05
    done
    if ! ctr --address "$d/containerd.sock" version >/dev/null 2>&1; then
        echo "containerd_host_start: containerd did not come up in 10s; see $d/containerd.log" >&2
        return 1
    fi

    if ! ctr --address "$d/containerd.sock" image check "name==$RP_CTR_IMAGE" 2>/dev/null | grep -q .; then
        tar=${RP_CTR_ROOTFS_TAR:-$RP_CTR_BASE/busybox-rootfs.tar}
        oci=$RP_CTR_BASE/busybox-oci.tar
        if [[ ! -f $tar ]]; then busybox_rootfs_tar "$tar" || return 1; fi
        if [[ ! -f $oci || $oci -ot $tar ]]; then busybox_oci_archive "$tar" "$oci" "$RP_CTR_IMAGE" || return 1; fi
        ctr --address "$d/containerd.sock" image import "$oci" >/dev/null || {
            echo "containerd_host_start: ctr image import $oci failed" >&2
            return 1
        }
    fi
}

# containerd_host_stop HOST: kill/remove all tasks and containers, stop
# containerd (by its recorded pid), kill leftover shims of this containerd,
# unmount leftovers, delete the host dir (and the netns if we created it).
containerd_host_stop() {
    local host=$1 d pid ns id p i m
    d=$(containerd_host_dir "$host")
    [[ -d $d ]] || return 0
    pid=$(cat "$d/containerd.pid" 2>/dev/null)
    if [[ -S $d/containerd.sock ]] && _ctr_pid_alive "$pid" "$d/config.toml"; then
        local C=(ctr --address "$d/containerd.sock")
        for ns in $("${C[@]}" namespaces ls -q 2>/dev/null); do
            for id in $("${C[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
                "${C[@]}" -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1
            done
            for id in $("${C[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
                "${C[@]}" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1
            done
            for id in $("${C[@]}" -n "$ns" containers ls -q 2>/dev/null); do
                "${C[@]}" -n "$ns" containers delete "$id" >/dev/null 2>&1
            done
        done
    fi
    if _ctr_pid_alive "$pid" "$d/config.toml"; then
        kill -TERM "$pid"
        for ((i = 0; i < 100; i++)); do
            _ctr_pid_alive "$pid" "$d/config.toml" || break
            sleep 0.05
        done
        _ctr_pid_alive "$pid" "$d/config.toml" && kill -KILL "$pid"
    fi
    # Shims outlive containerd; kill the ones started for this socket, by pid.
    for p in /proc/[0-9]*; do
        [[ -r $p/cmdline ]] || continue
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "^/usr/bin/containerd-shim.* -address $d/containerd.sock"; then
            kill -KILL "${p#/proc/}" 2>/dev/null
        fi
    done
    for m in $(awk -v p="$d/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    if [[ -f $d/.created-netns && -e /var/run/netns/$host ]]; then
        ip netns del "$host"
    fi
    rm -rf "$d"
}
