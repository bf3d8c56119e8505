# Shared by scripts/*.sh and conformance/: logging, packages, building, the lab. Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
# The cargo profile whose binaries the scripts run: `release` (LTO, as installed) unless the caller
# says otherwise; scripts/test.sh uses `ci` (the release profile without LTO: see Cargo.toml).
PROFILE=${CNI_OVERLAY_PROFILE:-release}
RELEASE="$ROOT/target/$PROFILE"

# The Debian packages the build, the tests, the demo and the benchmarks need: one list, one place.
PACKAGE_LIST="$ROOT/scripts/debian-packages.txt"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_root [WHY]: exits unless run as root, saying why root is needed.
need_root() { [ "$(id -u)" = 0 ] || die "run as root: ${1:-the suite creates network namespaces and devices}"; }

# The packages of scripts/debian-packages.txt (comments and blank lines dropped), one per line.
listed_packages() { sed 's/#.*//' "$PACKAGE_LIST" | tr -s ' \t' '\n' | grep -v '^$'; }

# Installs what is missing of the list, never a Recommends. Services the packages ship (containerd,
# redis, etcd, docker) are kept from starting in the machine's own namespaces: a policy-rc.d that
# refuses every start, present only during the install.
install_packages() {
  local missing=() p
  while read -r p; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done < <(listed_packages)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d placed=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# cni-overlay: no service starts during the install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    placed=true
  fi
  local ok=true
  apt-get update -qq >/dev/null || ok=false
  $ok && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || ok=false; }
  if $placed; then rm -f "$policy"; fi
  $ok || die "apt-get install ${missing[*]} failed"
}

need_cargo() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
}

build_release() {
  need_cargo
  say "building (profile $PROFILE)"
  (cd "$ROOT" && cargo build --profile "$PROFILE" --workspace --bins --quiet) || die "build failed"
}

# The lab of simulated hosts (crates/testutils/src/bin/lab.rs: the Rust tests' lab), for the demo, the
# benchmarks and the conformance suite: `lab up ...`, `lab run HOST -- CMD`, `lab down`; its state is in
# $LAB_DIR (set it first). Built with the other binaries.
lab() { "$RELEASE/lab" "$@"; }
