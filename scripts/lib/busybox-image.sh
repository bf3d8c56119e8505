#!/usr/bin/env bash
# Offline busybox test image, built from Debian's busybox-static.
#
#   source scripts/lib/busybox-image.sh
#   busybox_rootfs_tar OUT.tar                   # rootfs tarball (for `podman import`)
#   busybox_oci_archive ROOTFS.tar OUT.tar NAME [CMD_JSON]  # OCI image-layout tarball (for `ctr image import`)
#
# The rootfs has bin/busybox plus a symlink per applet (sh, ping, nc, wget,
# httpd, ip, sleep, ...), /sbin, /usr/bin, /usr/sbin -> bin, and a minimal
# /etc/passwd and /etc/group.

busybox_rootfs_tar() {
    local out=$1 bb rootfs a rc
    if [[ -z $out ]]; then
        echo "usage: busybox_rootfs_tar OUT.tar" >&2
        return 2
    fi
    bb=$(command -v busybox) || { echo "busybox_rootfs_tar: busybox not found (apt-get install busybox-static)" >&2; return 1; }
    if ldd "$bb" >/dev/null 2>&1; then
        echo "busybox_rootfs_tar: $bb is dynamically linked; need busybox-static" >&2
        return 1
    fi
    mkdir -p "$(dirname "$out")" || return 1
    rootfs=$(mktemp -d "${out}.rootfs.XXXXXX") || return 1
    mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root,var/www,usr}
    chmod 1777 "$rootfs/tmp"
    cp "$bb" "$rootfs/bin/busybox"
    for a in $("$rootfs/bin/busybox" --list); do
        [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"
    done
    ln -s bin "$rootfs/sbin"
    ln -s ../bin "$rootfs/usr/bin"
    ln -s ../bin "$rootfs/usr/sbin"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf "$out.tmp" . && mv "$out.tmp" "$out"
    rc=$?
    rm -rf "$rootfs"
    return $rc
}

# busybox_oci_archive ROOTFS.tar OUT.tar NAME [CMD_JSON]
# Wraps an uncompressed rootfs tarball as a single-layer OCI image layout
# archive. NAME (e.g. localhost/busybox:latest) is stored in the
# io.containerd.image.name annotation, which `ctr image import` uses as the
# image name. CMD_JSON is the image's Cmd as a JSON array (default ["sh"]);
# a CRI sandbox image runs it as the pod's infra process, e.g. ["sleep","inf"].
busybox_oci_archive() {
    local rootfs=$1 out=$2 name=$3 cmd=${4:-'["sh"]'} w lsha lsize csha csize msha msize rc
    if [[ $# -lt 3 || $# -gt 4 ]]; then
        echo "usage: busybox_oci_archive ROOTFS.tar OUT.tar NAME [CMD_JSON]" >&2
        return 2
    fi
    w=$(mktemp -d "${out}.oci.XXXXXX") || return 1
    mkdir -p "$w/blobs/sha256"
    lsha=$(sha256sum "$rootfs" | cut -d' ' -f1)
    lsize=$(stat -c %s "$rootfs")
    cp "$rootfs" "$w/blobs/sha256/$lsha"
    printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$cmd" "$lsha" >"$w/config.json"
    csha=$(sha256sum "$w/config.json" | cut -d' ' -f1)
    csize=$(stat -c %s "$w/config.json")
    mv "$w/config.json" "$w/blobs/sha256/$csha"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$csha" "$csize" "$lsha" "$lsize" >"$w/manifest.json"
    msha=$(sha256sum "$w/manifest.json" | cut -d' ' -f1)
    msize=$(stat -c %s "$w/manifest.json")
    mv "$w/manifest.json" "$w/blobs/sha256/$msha"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$w/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "$msha" "$msize" "$name" "${name##*:}" >"$w/index.json"
    tar -C "$w" -cf "$out.tmp" oci-layout index.json blobs && mv "$out.tmp" "$out"
    rc=$?
    rm -rf "$w"
    return $rc
}
