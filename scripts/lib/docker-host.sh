#!/usr/bin/env bash
# A private Docker 20.10 (Debian's docker.io) per simulated host, with overlayd serving the
# cni-overlay Docker driver next to it.
#
#   source scripts/lib/docker-host.sh
#   docker_host_start NETNS DIR NODE        # a private mount namespace, dockerd (+ its containerd)
#   (or docker_host_prepare NETNS DIR NODE, then docker_host_dockerd DIR: something started between)
#   docker_host_overlayd NETNS DIR OVERLAYD ARGS...   # overlayd --docker-plugin cni-overlay there
#   docker_on DIR ARGS...                   # the docker CLI against that dockerd
#   in_docker_host DIR CMD...               # any command in that host's namespaces
#   docker_host_import DIR                  # the busybox image (docker import of busybox-static)
#   docker_host_stop DIR                    # stops what was started, by PID; unmounts; removes DIR
#
# Why a mount namespace per host: Docker finds legacy plugins only in /run/docker/plugins, keeps
# the netns files of containers under its exec-root and our plugin keeps its gateway sandboxes in
# /run/netns. A holder process (`sleep`) owns a mount namespace with a tmpfs on /run and its own
# UTS namespace (hostname = node); dockerd, overlayd and every docker command enter it with
# nsenter (network namespace: the simulated host's). Nothing runs in the machine's own network
# namespace and nothing is written under the machine's /run. Everything started is found again
# by the holder's mount namespace, and killed by PID.

_dh_holder() { cat "$1/holder.pid" 2>/dev/null; }

# in_docker_host DIR CMD...
in_docker_host() {
    local d=$1 pid
    shift
    pid=$(_dh_holder "$d") || return 1
    nsenter --mount="/proc/$pid/ns/mnt" --uts="/proc/$pid/ns/uts" --net="/proc/$pid/ns/net" -- "$@"
}

docker_on() {
    local d=$1
    shift
    in_docker_host "$d" /usr/bin/docker -H "unix://$d/docker.sock" "$@"
}

# docker_host_start NETNS DIR NODE: docker_host_prepare, then docker_host_dockerd.
docker_host_start() {
    docker_host_prepare "$@" && docker_host_dockerd "$2"
}

# docker_host_prepare NETNS DIR NODE: the host's mount and UTS namespaces (the holder), no dockerd
# yet: what must run before dockerd (overlayd, when dockerd uses it as authorization plugin) can.
docker_host_prepare() {
    local ns=$1 d=$2 node=$3 pid i
    mkdir -p "$d"/{data,exec} || return 1
    if ((${#d} > 60)); then
        echo "docker_host_start: $d too long for the sockets below it" >&2
        return 1
    fi
    # The holder: a mount namespace with its own /run, a UTS namespace named after the node.
    nsenter --net="/run/netns/$ns" -- unshare --mount --uts --propagation private -- sh -c '
        mount -t tmpfs -o mode=755 cni-overlay-run /run || exit 1
        mkdir -p /run/netns /run/docker/plugins /run/lock
        hostname "$1"
        exec sleep infinity' holder "$node" </dev/null >"$d/holder.log" 2>&1 &
    echo $! >"$d/holder.pid"
    disown $!
    for ((i = 0; i < 100; i++)); do
        pid=$(_dh_holder "$d")
        [[ $(readlink "/proc/$pid/ns/mnt") != $(readlink /proc/self/ns/mnt) ]] && grep -q ' /run tmpfs' "/proc/$pid/mounts" 2>/dev/null && break
        sleep 0.05
    done
    grep -q ' /run tmpfs' "/proc/$pid/mounts" 2>/dev/null || { echo "docker_host_start: no private /run for $ns" >&2; cat "$d/holder.log" >&2; return 1; }
}

# docker_host_dockerd DIR: dockerd (and the containerd it starts) in the prepared host.
docker_host_dockerd() {
    local d=$1 i
    # key.json (Docker 20.10's engine identity) per host: a flag does not exist, only this key.
    printf '{"deprecated-key-path": "%s/key.json"}\n' "$d" >"$d/daemon.json"
    in_docker_host "$d" dockerd --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/docker.pid" -H "unix://$d/docker.sock" --default-ulimit nofile=20000:20000 \
        --bip 172.30.0.1/16 ${DOCKER_HOST_EXTRA_ARGS:-} </dev/null >"$d/dockerd.log" 2>&1 &
    echo $! >"$d/dockerd.launcher"
    disown $!
    for ((i = 0; i < 400; i++)); do
        # Up: it answers, or (with --authorization-plugin) refuses until the plugin is there.
        docker_on "$d" version 2>&1 | grep -qE 'Server:|authorization' && return 0
        kill -0 "$(cat "$d/dockerd.launcher")" 2>/dev/null || break
        sleep 0.05
    done
    echo "docker_host_dockerd: dockerd in $d did not come up; $d/dockerd.log:" >&2
    tail -20 "$d/dockerd.log" >&2
    return 1
}

# docker_host_overlayd DIR LOG OVERLAYD ARGS... : overlayd in the host's namespaces, with the
# Docker driver; prints its PID.
docker_host_overlayd() {
    local d=$1 log=$2 pid
    shift 2
    pid=$(_dh_holder "$d") || return 1
    # nsenter itself in the background (not a shell function): it execs overlayd, so $! is
    # overlayd's PID.
    nsenter --mount="/proc/$pid/ns/mnt" --uts="/proc/$pid/ns/uts" --net="/proc/$pid/ns/net" -- \
        "$@" --docker-plugin cni-overlay --docker-host "$d/docker.sock" --no-conflists \
        </dev/null >>"$log" 2>&1 &
    echo $! >>"$d/overlayd.pids"
    disown $!
    echo $!
}

docker_host_import() {
    local d=$1 tar=${DOCKER_HOST_ROOTFS_TAR:-$1/busybox-rootfs.tar}
    [[ -f $tar ]] || busybox_rootfs_tar "$tar" || return 1
    docker_on "$d" import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' "$tar" busybox >/dev/null
}

# docker_host_stop DIR: containers, dockerd, overlayd, containerd and shims of this host (every
# process in the holder's mount namespace, by PID), then the holder; the directory.
docker_host_stop() {
    local d=$1 pid mnt p i
    [[ -d $d ]] || return 0
    pid=$(_dh_holder "$d")
    if [[ -n $pid && -e /proc/$pid/ns/mnt ]]; then
        mnt=$(readlink "/proc/$pid/ns/mnt")
        docker_on "$d" ps -aq 2>/dev/null | xargs -r -n 20 /usr/bin/docker -H "unix://$d/docker.sock" rm -f >/dev/null 2>&1 || true
        for p in $(cat "$d/overlayd.pids" 2>/dev/null) $(cat "$d/docker.pid" 2>/dev/null); do
            [[ $(readlink "/proc/$p/ns/mnt" 2>/dev/null) == "$mnt" ]] && kill -TERM "$p" 2>/dev/null
        done
        for ((i = 0; i < 100; i++)); do
            [[ -e /proc/$(cat "$d/docker.pid" 2>/dev/null)/ns ]] || break
            sleep 0.1
        done
        # What is left in that mount namespace (containerd, shims, containers) and the holder.
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            [[ $p == "$pid" ]] && continue
            [[ $(readlink "/proc/$p/ns/mnt" 2>/dev/null) == "$mnt" ]] && kill -KILL "$p" 2>/dev/null
        done
        kill -KILL "$pid" 2>/dev/null
    fi
    for p in $(awk -v p="$d/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$p" 2>/dev/null || umount -l "$p"
    done
    rm -rf "$d"
}
