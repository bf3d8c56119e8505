#!/usr/bin/env bash
# Run podman 4.3 (CNI backend) as a "simulated host" living in a network
# namespace, with fully private storage/state/config per host.
#
#   source scripts/lib/podman-host.sh
#   podman_host_setup HOST CNI_PATH_DIRS    # CNI_PATH_DIRS: colon separated
#   podman_on HOST run -d --name c1 --network NET localhost/busybox sleep 1000
#   podman_host_teardown HOST
#
# HOST is the name of a network namespace (/var/run/netns/HOST). If it does
# not exist, podman_host_setup creates it (and teardown deletes it again);
# a pre-existing namespace is left alone by teardown.
#
# Per-host layout under $RP_PODMAN_BASE/HOST (default base /tmp/rp-podman-hosts):
#   containers.conf  storage.conf   (used via CONTAINERS_CONF / CONTAINERS_STORAGE_CONF)
#   net.d/           network_config_dir: put NET.conflist files here
#   root/ tmp/ events.log
# and the runroot at $RP_PODMAN_RUNROOT_BASE/HOST (default /tmp/rp-prun/HOST):
# podman refuses a runroot path longer than 50 characters
# ("Error: the specified runroot is longer than 50 characters").
# Variables:
#   RP_PODMAN_BASE          base dir (default /tmp/rp-podman-hosts)
#   RP_PODMAN_RUNROOT_BASE  base of the (short!) runroot paths (default /tmp/rp-prun)
#   RP_PODMAN_STORAGE       storage driver (default vfs; overlay also works on ext4)
#   RP_PODMAN_IMAGE         image name (default localhost/busybox)
#   RP_PODMAN_ROOTFS_TAR    rootfs tarball to import; default: built from busybox-static
#
# Notes:
#  * podman is entered with `nsenter --net=...`, not `ip netns exec`: the latter
#    remounts /sys in a private mount ns, so runc finds no cgroup hierarchy.
#  * Container network namespaces are created by podman itself as
#    /run/netns/netns-<uuid> and removed on `podman rm`.
#  * containers.conf sets default_ulimits nofile=20000:20000, nproc=1000:1000:
#    podman's rootful defaults (nofile 1048576) exceed this machine's hard
#    limit and runc fails with "error setting rlimit type 7: operation not
#    permitted". runtime=runc because crun is not installed.
#  * lock_type="file" keeps locks under the per-host tmp dir; the default shm
#    lock segment (/dev/shm/libpod_lock) would be shared by all hosts.
#  * podman calls VERSION on every plugin of every conflist in net.d each time
#    it loads networks; a conflist whose plugins fail VERSION is ignored with
#    'Error validating CNI config file' and the network "does not exist".
#  * DEL may be run by the podman CLI (rm -f) or by conmon's exit command
#    (`podman container cleanup`, with a minimal environment); podman never
#    calls CHECK.
#  * Set "dataDir" in host-local ipam to a per-host dir, otherwise all hosts
#    share /var/lib/cni/networks/<name>.
#  * podman 4.3's CNI backend always uses libcni's default cache dir
#    /var/lib/cni (results/), which is not configurable; entries are keyed by
#    network name + 64-hex container id, so hosts do not collide there.

# shellcheck source=busybox-image.sh
source "$(dirname "${BASH_SOURCE[0]}")/busybox-image.sh"

RP_PODMAN_BASE=${RP_PODMAN_BASE:-/tmp/rp-podman-hosts}
RP_PODMAN_RUNROOT_BASE=${RP_PODMAN_RUNROOT_BASE:-/tmp/rp-prun}
RP_PODMAN_STORAGE=${RP_PODMAN_STORAGE:-vfs}
RP_PODMAN_IMAGE=${RP_PODMAN_IMAGE:-localhost/busybox}

_podman_hostdir() { printf '%s/%s' "$RP_PODMAN_BASE" "$1"; }
_podman_runroot() { printf '%s/%s' "$RP_PODMAN_RUNROOT_BASE" "$1"; }

# podman_on HOST ARGS... : run podman for HOST with all the per-host flags.
podman_on() {
    local host=$1 d
    shift
    d=$(_podman_hostdir "$host")
    if [[ ! -f $d/containers.conf ]]; then
        echo "podman_on: host $host not set up (no $d/containers.conf)" >&2
        return 1
    fi
    CONTAINERS_CONF="$d/containers.conf" \
    CONTAINERS_STORAGE_CONF="$d/storage.conf" \
    CONTAINERS_REGISTRIES_CONF="$d/registries.conf" \
    nsenter --net="/var/run/netns/$host" -- \
        podman \
            --root "$d/root" --runroot "$(_podman_runroot "$host")" \
            --storage-driver "$RP_PODMAN_STORAGE" \
            --tmpdir "$d/tmp" \
            --network-config-dir "$d/net.d" \
            --runtime runc --cgroup-manager cgroupfs \
            --events-backend file \
            "$@"
}

# podman_host_setup HOST CNI_PATH_DIRS
podman_host_setup() {
    if [[ $# -ne 2 ]]; then
        echo "usage: podman_host_setup HOST CNI_PATH_DIRS(colon separated)" >&2
        return 2
    fi
    local host=$1 cnipath=$2 d rr dirs="" p tar
    d=$(_podman_hostdir "$host")
    rr=$(_podman_runroot "$host")
    if ((${#rr} > 50)); then
        echo "podman_host_setup: runroot $rr is longer than 50 characters (podman limit); set RP_PODMAN_RUNROOT_BASE shorter" >&2
        return 1
    fi
    mkdir -p "$d"/{root,tmp,net.d} "$rr" || return 1

    if [[ ! -e /var/run/netns/$host ]]; then
        ip netns add "$host" || return 1
        touch "$d/.created-netns"
    fi
    ip -n "$host" link set lo up || return 1

    IFS=: read -r -a _pdirs <<<"$cnipath"
    for p in "${_pdirs[@]}"; do
        [[ -n $p ]] && dirs+="${dirs:+, }\"$p\""
    done

    cat >"$d/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = [$dirs]
network_config_dir = "$d/net.d"
default_subnet = "10.88.0.0/16"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$d/events.log"
tmp_dir = "$d/tmp"
lock_type = "file"
EOF
    cat >"$d/storage.conf" <<EOF
[storage]
driver = "$RP_PODMAN_STORAGE"
graphroot = "$d/root"
runroot = "$rr"
EOF
    : >"$d/registries.conf"

    if ! podman_on "$host" image exists "$RP_PODMAN_IMAGE" 2>/dev/null; then
        tar=${RP_PODMAN_ROOTFS_TAR:-$RP_PODMAN_BASE/busybox-rootfs.tar}
        if [[ ! -f $tar ]]; then
            busybox_rootfs_tar "$tar" || return 1
        fi
        podman_on "$host" import -q "$tar" "$RP_PODMAN_IMAGE" >/dev/null || {
            echo "podman_host_setup: podman import of $tar failed" >&2
            return 1
        }
    fi
}

# podman_host_teardown HOST: remove all containers, unmount leftovers, delete dirs.
podman_host_teardown() {
    local host=$1 d rr m
    d=$(_podman_hostdir "$host")
    rr=$(_podman_runroot "$host")
    [[ -d $d || -d $rr ]] || return 0
    if [[ -f $d/containers.conf && -e /var/run/netns/$host ]]; then
        podman_on "$host" rm -a -f -t 0 >/dev/null 2>&1
        podman_on "$host" pod rm -a -f >/dev/null 2>&1
    fi
    # Leftover mounts (overlay, shm, netns bind mounts...) under the host dir,
    # deepest first.
    for m in $(awk -v p="$d/" -v r="$rr/" 'index($2, p) == 1 || index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    if [[ -f $d/.created-netns && -e /var/run/netns/$host ]]; then
        ip netns del "$host"
    fi
    rm -rf "$d" "$rr"
    rmdir "$RP_PODMAN_RUNROOT_BASE" 2>/dev/null
    return 0
}
