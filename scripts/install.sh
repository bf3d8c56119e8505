#!/usr/bin/env bash
# Installs cni-overlay on a host without Kubernetes (podman, containerd, nerdctl, cnitool):
#   /opt/cni/bin/{vxlan-overlay,etcd-ipam,gwbridge-egress}   the plugins, where runtimes look for them
#   /usr/local/bin/{overlayd,overlayctl}                      the agent and the CLI
#   /etc/systemd/system/overlayd.service                      the agent's unit (deploy/systemd/)
#   /etc/cni-overlay/overlayd.env                             the etcd settings, one file (only if absent)
# and records what it installed in /var/lib/cni-overlay/installed, so that `--uninstall` removes exactly
# that: each file whose content is still what was installed, then the directories it created, if empty.
# A file changed since (an edited overlayd.env) is kept and reported. It starts and stops nothing: it
# prints the systemctl commands.
#
#   scripts/install.sh [--root DIR] [--from DIR]     install (again: only what changed is rewritten)
#   scripts/install.sh [--root DIR] --uninstall      remove what was installed
#
# --root: the file system to install into (default /; tests use a temporary one).
# --from: where the binaries are (default: target/release, built with `cargo build --release`).
# A file at one of those paths that this script did not install is never replaced: it stops, changing
# nothing, and says which.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PLUGINS=(vxlan-overlay etcd-ipam gwbridge-egress)
TOOLS=(overlayd overlayctl)
MANIFEST=/var/lib/cni-overlay/installed

root=/
from="$HERE/target/${CNI_OVERLAY_PROFILE:-release}"
uninstall=false
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=${2:?--root DIR}; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    --from) from=${2:?--from DIR}; shift 2 ;;
    --from=*) from=${1#--from=}; shift ;;
    --uninstall) uninstall=true; shift ;;
    -h|--help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$root" ] || { echo "install.sh: --root $root is not a directory" >&2; exit 2; }
root=$(cd "$root" && pwd)
[ "$root" = / ] && root=

die() { echo "install.sh: $*" >&2; exit 1; }
sum() { sha256sum "$1" | cut -d' ' -f1; }

# The manifest: "dir PATH" for each directory created, "file MODE SHA256 PATH" for each file installed.
declare -A recorded=() # path -> "MODE SHA256" (files) or "dir"
order=()               # paths in the order they were recorded
load_manifest() {
  [ -f "$root$MANIFEST" ] || return 0
  local kind a b path
  while read -r kind a b path; do
    case $kind in
      dir) recorded[$a]=dir; order+=("$a") ;;
      file) recorded[$path]="$a $b"; order+=("$path") ;;
    esac
  done < <(grep -v '^#' "$root$MANIFEST")
}

save_manifest() {
  local tmp="$root$MANIFEST.tmp" p
  {
    echo "# Installed by cni-overlay's scripts/install.sh; scripts/install.sh --uninstall removes exactly these."
    for p in "${order[@]}"; do
      if [ "${recorded[$p]}" = dir ]; then echo "dir $p"; else echo "file ${recorded[$p]} $p"; fi
    done
  } >"$tmp"
  if cmp -s "$tmp" "$root$MANIFEST"; then rm -f "$tmp"; return 0; fi
  sync "$tmp"
  mv -f "$tmp" "$root$MANIFEST"
}

record() { # PATH VALUE
  [ -n "${recorded[$1]+x}" ] || order+=("$1")
  recorded[$1]=$2
}

# mkdirs DIR: creates DIR and missing parents, recording each directory it created.
mkdirs() {
  local dir=$1 parts=() d
  while [ -n "$dir" ] && [ "$dir" != / ] && [ ! -d "$root$dir" ]; do parts=("$dir" "${parts[@]}"); dir=$(dirname "$dir"); done
  for d in "${parts[@]}"; do
    mkdir -m 0755 "$root$d"
    record "$d" dir
    echo "created $d/"
  done
}

# put SRC DEST MODE: DEST atomically (a dot-file in the same directory, synced, renamed); left as it is
# when it already has that content and mode.
put() {
  local src=$1 dest=$2 mode=$3 target="$root$2"
  mkdirs "$(dirname "$dest")"
  if [ -f "$target" ] && cmp -s "$src" "$target" && [ "$(stat -c %a "$target")" = "${mode#0}" ]; then
    echo "unchanged $dest"
  else
    local tmp
    tmp="$(dirname "$target")/.$(basename "$target").install-tmp"
    cp "$src" "$tmp"
    chmod "$mode" "$tmp"
    sync "$tmp"
    mv -f "$tmp" "$target"
    echo "installed $dest ($mode)"
  fi
  record "$dest" "$mode $(sum "$target")"
}

do_install() {
  local name missing=() foreign=()
  for name in "${PLUGINS[@]}" "${TOOLS[@]}"; do [ -x "$from/$name" ] || missing+=("$from/$name"); done
  [ ${#missing[@]} -eq 0 ] || die "not built: ${missing[*]} (cargo build --release, or --from DIR)"
  load_manifest
  local plan=() # "SRC DEST MODE"
  for name in "${PLUGINS[@]}"; do plan+=("$from/$name /opt/cni/bin/$name 0755"); done
  for name in "${TOOLS[@]}"; do plan+=("$from/$name /usr/local/bin/$name 0755"); done
  plan+=("$HERE/deploy/systemd/overlayd.service /etc/systemd/system/overlayd.service 0644")
  # Refuse, before changing anything, to replace a file this script did not install.
  local entry src dest mode
  for entry in "${plan[@]}"; do
    read -r src dest mode <<<"$entry"
    if [ -e "$root$dest" ] && [ -z "${recorded[$dest]+x}" ]; then foreign+=("$dest"); fi
  done
  [ ${#foreign[@]} -eq 0 ] || die "not installed by this script, left alone: ${foreign[*]} (move them away first)"

  mkdirs "$(dirname "$MANIFEST")"
  for entry in "${plan[@]}"; do
    read -r src dest mode <<<"$entry"
    put "$src" "$dest" "$mode"
  done
  # The settings: installed once, never overwritten (it holds the operator's etcd and maybe a password).
  local env=/etc/cni-overlay/overlayd.env
  if [ -e "$root$env" ]; then
    echo "kept $env (existing settings are never overwritten)"
  else
    put "$HERE/deploy/systemd/overlayd.env" "$env" 0600
  fi
  save_manifest
  echo "recorded in $MANIFEST"
  cat <<EOF

next:
  edit $env (OVERLAYD_ETCD, and TLS or credentials if etcd needs them)
  systemctl daemon-reload
  systemctl enable --now overlayd.service
  overlayctl --etcd <endpoint> network create demo --subnet 10.0.0.0/24   # once, on any host
EOF
  [ -z "$root" ] || echo "(installed under $root: run these on the host that boots it)"
}

do_uninstall() {
  [ -f "$root$MANIFEST" ] || { echo "nothing to uninstall: no $MANIFEST"; return 0; }
  load_manifest
  local i p mode want kept=()
  # Files first, then directories deepest first (the reverse of creation).
  for ((i = ${#order[@]} - 1; i >= 0; i--)); do
    p=${order[$i]}
    [ "${recorded[$p]}" = dir ] && continue
    read -r mode want <<<"${recorded[$p]}"
    if [ ! -e "$root$p" ]; then
      echo "already gone $p"
    elif [ -f "$root$p" ] && [ "$(sum "$root$p")" = "$want" ]; then
      rm -f "$root$p"
      echo "removed $p"
    else
      kept+=("$p")
      echo "kept $p: changed since it was installed (remove it by hand if it is no longer needed)"
    fi
  done
  rm -f "$root$MANIFEST"
  echo "removed $MANIFEST"
  for ((i = ${#order[@]} - 1; i >= 0; i--)); do
    p=${order[$i]}
    [ "${recorded[$p]}" = dir ] || continue
    if rmdir "$root$p" 2>/dev/null; then echo "removed $p/"; elif [ -d "$root$p" ]; then echo "kept $p/: not empty"; fi
  done
  cat <<EOF

If overlayd runs (its unit file is gone now):
  systemctl disable --now overlayd.service; systemctl daemon-reload
overlayd's conflists (/etc/cni/net.d/60-cni-overlay-*.conflist) are overlayd's, not this script's:
remove the networks (overlayctl network rm) while it runs, or delete those files by hand.
EOF
}

if $uninstall; then do_uninstall; else do_install; fi
