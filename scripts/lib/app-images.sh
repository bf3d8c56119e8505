#!/usr/bin/env bash
# Offline images for the demo's application (the seed's Redis and Flask app), built from the files
# of Debian packages installed on this machine: no registry is needed.
#
#   source scripts/lib/app-images.sh
#   app_rootfs_tar OUT.tar PACKAGE...   # rootfs tarball (for `podman import`) of PACKAGEs
#   app_images_build DIR                # DIR/redis.tar and DIR/flask.tar (the app in /app/app.py)
#
# A rootfs holds the files `dpkg -L` lists for the packages and their dependency closure (Pre-Depends
# and Depends, the first installed alternative), without documentation, manual pages, locales,
# gconv modules or service files, and without the packages that only serve package management and
# user administration (APP_IMAGE_SKIP: they would drag in perl, PAM, ...). Python byte-code is not
# listed by dpkg (py3compile makes it at install) and is left out: it would add 16 MB to the Flask
# image, and a container compiles what it imports once (about a second). As a check, every ELF
# file's libraries (ldd) must be in the rootfs: any that the pruned closure lacks is copied in, any
# that ldd cannot find fails the build. busybox-static gives a shell and the usual tools where the
# packages bring none of their own. The layout is merged-/usr like the host's (bin, sbin, lib,
# lib64 -> usr/...), so package paths under /lib and /bin land in /usr.

# Packages never put into an image, and whose dependencies are not followed.
APP_IMAGE_SKIP=(adduser passwd debconf dpkg tar init-system-helpers lsb-base readline-common libjs-jquery
  sensible-utils ucf perl-base)
# Paths left out (extended regular expression on the package's path).
APP_IMAGE_EXCLUDE='^/usr/share/(doc|doc-base|man|info|locale|lintian|bug|bash-completion|zsh|fish|apport)/|^/usr/lib/x86_64-linux-gnu/gconv/|^/(usr/)?lib/(systemd|tmpfiles\.d|sysusers\.d)/|^/etc/(init\.d|logrotate\.d|systemd|default)/'

# app_closure PACKAGE...: the installed dependency closure, one package a line, APP_IMAGE_SKIP pruned.
app_closure() {
    local -A deps=() seen=()
    local queue=("$@") p status d group alt s
    # One look at dpkg's database: every installed package with its Pre-Depends and Depends.
    while IFS=$'\t' read -r p status d; do
        if [[ $status == 'install ok installed' ]]; then deps[$p]=$d; fi
    done < <(dpkg-query -W -f='${Package}\t${Status}\t${Pre-Depends},${Depends}\n')
    for s in "${APP_IMAGE_SKIP[@]}"; do seen[$s]=skip; done
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        if [[ -n ${seen[$p]:-} ]]; then continue; fi
        if [[ ! -v deps[$p] ]]; then echo "app_closure: $p is not installed" >&2; return 1; fi
        seen[$p]=1
        echo "$p"
        while IFS= read -r group; do
            # "a (>= 1) | b:any": the first alternative installed as a package (a virtual one is skipped)
            for alt in ${group//|/ }; do
                alt=${alt%:any}
                if [[ -v deps[$alt] ]]; then queue+=("$alt"); break; fi
            done
        done < <(sed 's/([^)]*)//g; s/,/\n/g' <<<"${deps[$p]}")
    done
}

# _app_usr PATH: the path in a merged-/usr root (/lib/x -> /usr/lib/x, /bin/x -> /usr/bin/x, ...).
_app_usr() {
    case $1 in
    /bin/* | /sbin/* | /lib/* | /lib64/* | /lib32/* | /libx32/*) echo "/usr$1" ;;
    *) echo "$1" ;;
    esac
}

# app_rootfs_tar OUT.tar PACKAGE...
app_rootfs_tar() {
    local out=$1 rootfs list pkgs p f bb a lib added=0 rc
    shift
    if [[ -z $out || $# -eq 0 ]]; then
        echo "usage: app_rootfs_tar OUT.tar PACKAGE..." >&2
        return 2
    fi
    bb=$(command -v busybox) || { echo "app_rootfs_tar: busybox not found (apt-get install busybox-static)" >&2; return 1; }
    pkgs=$(app_closure "$@") || return 1
    mkdir -p "$(dirname "$out")" || return 1
    rootfs=$(mktemp -d "${out}.rootfs.XXXXXX") || return 1
    list="$rootfs.files"

    # The packages' files and symbolic links (directories come with them), in their /usr places.
    # shellcheck disable=SC2086 # one package a word
    dpkg-query -L $pkgs | grep -Ev "$APP_IMAGE_EXCLUDE" | while IFS= read -r f; do
        case $f in /bin | /sbin | /lib | /lib64 | /lib32 | /libx32) continue ;; esac # the merged-/usr links
        if [[ -L $f || -f $f ]]; then _app_usr "$f"; fi
    done | sed 's|^/||' | sort -u >"$list"
    mkdir -p "$rootfs"/usr/{bin,sbin,lib,lib64} "$rootfs"/{etc,proc,sys,dev,tmp,root,run,var/tmp}
    for a in bin sbin lib lib64; do ln -s "usr/$a" "$rootfs/$a"; done
    chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
    tar -C / --no-recursion -cf - -T "$list" | tar -C "$rootfs" -xf - || { rm -rf "$rootfs" "$list"; return 1; }

    # Every library an ELF file of the image needs must be in it (one ldd over all of them).
    local needed missing
    needed=$(find "$rootfs/usr" -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
        { xargs -0 -r ldd 2>/dev/null || true; } |
        awk '/not found/ { print "missing:" $1; next } / => \// { print $3; next } /^\t\/[^ ]+ \(/ { print $1 }' | sort -u)
    missing=$(grep '^missing:' <<<"$needed" || true)
    if [[ -n $missing ]]; then
        echo "app_rootfs_tar: libraries not found:" $missing >&2
        rm -rf "$rootfs" "$list"
        return 1
    fi
    for lib in $needed; do
        if [[ ! -e $rootfs$(_app_usr "$lib") ]]; then
            mkdir -p "$(dirname "$rootfs$(_app_usr "$lib")")"
            cp -L "$lib" "$rootfs$(_app_usr "$lib")"
            added=$((added + 1))
        fi
    done
    ((added == 0)) || echo "app_rootfs_tar: added $added libraries the package closure lacked" >&2

    # busybox: a shell and the usual tools, where the packages bring none of their own.
    cp "$bb" "$rootfs/usr/bin/busybox"
    for a in $("$bb" --list); do
        if [[ ! -e $rootfs/usr/bin/$a && ! -e $rootfs/usr/sbin/$a && ! -L $rootfs/usr/bin/$a ]]; then
            ln -s busybox "$rootfs/usr/bin/$a"
        fi
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf "$out.tmp" . && mv "$out.tmp" "$out"
    rc=$?
    rm -rf "$rootfs" "$list"
    return $rc
}

# The seed's app: counts its visits in Redis, found by the name `redis` on the overlay network.
APP_PY='import socket

from flask import Flask
from redis import Redis

app = Flask(__name__)
redis = Redis(host="redis", port=6379, socket_connect_timeout=2)


@app.route("/")
def hello():
    hits = redis.incr("hits")
    return "Hello from %s! I have been seen %d times.\n" % (socket.gethostname(), hits)


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
'

# app_images_build DIR: DIR/redis.tar (redis-server) and DIR/flask.tar (python3 with Flask and the
# redis client, the app in /app/app.py), each built once.
app_images_build() {
    local dir=$1 tmp rc
    mkdir -p "$dir" || return 1
    [[ -f $dir/redis.tar ]] || app_rootfs_tar "$dir/redis.tar" redis-server || return 1
    if [[ ! -f $dir/flask.tar ]]; then
        app_rootfs_tar "$dir/flask.tar.base" python3-flask python3-redis || return 1
        tmp=$(mktemp -d "$dir/app.XXXXXX") || return 1
        mkdir -p "$tmp/app"
        printf '%s' "$APP_PY" >"$tmp/app/app.py"
        tar -C "$tmp" --numeric-owner --owner=0 --group=0 -rf "$dir/flask.tar.base" ./app &&
            mv "$dir/flask.tar.base" "$dir/flask.tar"
        rc=$?
        rm -rf "$tmp"
        return $rc
    fi
}
