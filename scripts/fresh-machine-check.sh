#!/usr/bin/env bash
# Proves scripts/debian-packages.txt complete: on a fresh Debian bookworm root (debootstrap, minbase)
# with nothing but the listed packages (installed without Recommends), a clean clone of this
# repository's HEAD commit builds everything the scripts build:
#   cargo build --release --workspace --bins               (scripts/demo.sh)
#   cargo test --profile ci --workspace --no-run           (the test binaries of scripts/test.sh)
#   cargo clippy --profile ci --workspace --all-targets -- -D warnings
#   conformance/build-cnitool.sh                           (cnitool from Debian's libcni)
# The machine's own Rust toolchain (~/.cargo, ~/.rustup) is bind-mounted in: the check is about Debian
# packages, not about installing Rust. Only committed files count (the clone is of HEAD).
#
# Not part of CI: it takes many minutes (debootstrap, ~1 GB of packages, cold builds). Run it whenever
# a dependency changes: a line of debian-packages.txt, a crate with a build script or a system library,
# the Go side of the conformance suite.
#
#   scripts/fresh-machine-check.sh [--keep] [--mirror URL]
#     --keep        leave the root (and the stage logs) in place for inspection, unmounted
#     --mirror URL  the Debian archive for debootstrap and apt (default http://deb.debian.org/debian)
#
# Runs as root (debootstrap, chroot and mounts need it). The host's packages are never touched: apt-get
# runs only inside the chroot. Prints one line per stage with its duration, then `fresh machine: ok`
# or `fresh machine: FAILED at STAGE` (with the tail of that stage's log) and a non-zero exit.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

need_root "debootstrap, chroot and mounts need it"

# Everything runs in a private mount namespace of its own: no mount made here can propagate to the
# host's (a bind of /dev on a shared / would carry our /dev/pts onto the host's), and none can
# outlive the script, even if it is killed before its trap runs.
if [ -z "${FRESH_CHECK_NAMESPACE:-}" ]; then
  FRESH_CHECK_NAMESPACE=1 exec unshare --mount --propagation private -- bash "$0" "$@"
fi

KEEP=false
MIRROR=http://deb.debian.org/debian
# The security archive is not on ordinary mirrors; the host's sources use deb.debian.org for it too.
SECURITY_MIRROR=http://deb.debian.org/debian-security
while [ $# -gt 0 ]; do
  case $1 in
    --keep) KEEP=true ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a URL"; MIRROR=$2; shift ;;
    *) die "usage: $0 [--keep] [--mirror URL]" ;;
  esac
  shift
done

# On the disk, not in RAM: the root and the target directory of the builds take a few GB.
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/cni-overlay-fresh.XXXXXX")
R="$WORK/root"             # the fresh machine
SRC=/src/cni-overlay       # the clone, as the chroot sees it
LOGS="$WORK/logs"          # one full log per stage
mkdir "$LOGS"
say "fresh machine in $R (logs in $LOGS)"
if [ -n "$(git -C "$ROOT" status --porcelain)" ]; then
  say "note: uncommitted changes are not part of the check (it clones HEAD)"
fi

CURRENT=setup              # the stage under way, named by the verdict if it fails
MOUNTS=()                  # what we mounted, in order: unmounted in reverse

mnt() { # mnt TARGET MOUNT-ARGS...: mounts on TARGET (inside the root) and remembers it
  local target=$1; shift
  mkdir -p "$target"
  mount "$@" "$target"
  MOUNTS+=("$target")
}

# Mount points under $WORK, according to the kernel (debootstrap makes its own too).
mounted_under_work() { awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts; }

cleanup() {
  local status=$? p i
  set +e
  # A second Ctrl-C must not cut the cleanup short (the namespace makes even a kill -9 safe).
  trap '' INT TERM
  # A stage cut short (Ctrl-C) may leave processes in the root; they are ours: end them by pid.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount --lazy "${MOUNTS[i]}"
  done
  # Whatever else is still mounted in there (debootstrap interrupted), deepest first.
  mounted_under_work | sort -r | while read -r p; do umount --lazy "$p"; done
  # Never remove through a mount point: a bind-mounted ~/.cargo would go with it.
  if [ -n "$(mounted_under_work)" ]; then
    printf 'still mounted under %s, so it is left in place:\n' "$WORK"
    mounted_under_work
    status=1
  elif $KEEP; then
    say "kept (--keep): the root is $R, the logs are in $LOGS; nothing is mounted in it"
  else
    rm -rf "$WORK"
  fi
  case $status in
    0) echo "fresh machine: ok" ;;
    130 | 143) echo "fresh machine: FAILED at $CURRENT (interrupted)" ;;
    *) echo "fresh machine: FAILED at $CURRENT" ;;
  esac
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stage() { # stage NAME COMMAND...: runs a stage, its output in its log; one line with its duration
  local name=$1 log="$LOGS/${1//[^a-z0-9]/-}.log" start=$SECONDS status; shift
  CURRENT=$name
  # In a subshell with errexit outside any `if`: a function given as COMMAND stops at its first failure.
  set +e
  (set -e; "$@") >"$log" 2>&1
  status=$?
  set -e
  if [ "$status" = 0 ]; then
    printf '%s: ok (%d s)\n' "$name" $((SECONDS - start))
    return
  fi
  printf '%s: FAILED (%d s, exit %d); the last lines of its log:\n' "$name" $((SECONDS - start)) "$status"
  tail -n 40 "$log" | sed 's/^/    /'
  $KEEP || echo "(the full log goes with the root: --keep keeps both)"
  exit 1
}

# A command inside the root, with a clean environment: the host's Rust toolchain at the same paths,
# a target directory of its own inside the clone.
in_chroot() {
  chroot "$R" /usr/bin/env -i -C "$SRC" HOME="$HOME" LANG=C.UTF-8 TERM=dumb \
    PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    CARGO_HOME="$HOME/.cargo" RUSTUP_HOME="$HOME/.rustup" CARGO_TARGET_DIR="$SRC/target" \
    DEBIAN_FRONTEND=noninteractive "$@"
}

stage debootstrap debootstrap --variant=minbase bookworm "$R" "$MIRROR"

# Only committed files count: a clone at HEAD, straight into the root (no mount needed).
clone() {
  git clone --quiet --no-checkout "$ROOT" "$R$SRC"
  git -C "$R$SRC" checkout --quiet --detach "$(git -C "$ROOT" rev-parse HEAD)"
  git -C "$R$SRC" log -1 --format='clone at %h %s'
}
stage clone clone

CURRENT="chroot setup"
# The suites of the host's /etc/apt/sources.list.d/debian.sources: package versions as on the host.
rm -f "$R/etc/apt/sources.list"
cat >"$R/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# No service the packages ship (containerd, etcd, redis) starts from their postinst.
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
rm -f "$R/etc/resolv.conf"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
mnt "$R/proc" -t proc proc
mnt "$R/sys" -t sysfs sysfs
mnt "$R/dev" --bind /dev
mnt "$R/dev/pts" --bind /dev/pts
mnt "$R/run" -t tmpfs -o mode=755 tmpfs
mnt "$R/tmp" -t tmpfs -o mode=1777 tmpfs
# The toolchain at the same paths: cargo keeps its registry cache in ~/.cargo (read-write);
# ~/.rustup is only read, so read-only.
mnt "$R$HOME/.cargo" --bind "$HOME/.cargo"
mnt "$R$HOME/.rustup" --bind "$HOME/.rustup"
mount -o remount,bind,ro "$R$HOME/.rustup"

# The list as committed (the clone's), exactly these, never a Recommends.
install_listed() {
  local packages
  packages=$(PACKAGE_LIST="$R$SRC/scripts/debian-packages.txt" listed_packages | tr '\n' ' ')
  echo "installing: $packages"
  in_chroot apt-get update
  # shellcheck disable=SC2086 # one word per package
  in_chroot apt-get install -y --no-install-recommends $packages
  # The outcome, not only apt-get's exit status (an install cut short by a stray SIGINT once came
  # back as ok, without /usr/bin/cc): every listed package installed, nothing half-configured.
  in_chroot dpkg --audit
  # shellcheck disable=SC2086
  in_chroot dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $packages |
    awk '$1 != "ii" { print "not installed: " $2; bad = 1 } END { exit bad }'
}
stage packages install_listed

stage "cargo build --release" in_chroot cargo build --release --workspace --bins
stage "cargo test --no-run" in_chroot cargo test --profile ci --workspace --no-run
stage "cargo clippy" in_chroot cargo clippy --profile ci --workspace --all-targets -- -D warnings
stage build-cnitool in_chroot conformance/build-cnitool.sh "$SRC/target/conformance"

CURRENT=cleanup
