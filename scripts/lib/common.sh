# Shared by scripts/*.sh: logging, packages, building, a private etcd. Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
RELEASE="$ROOT/target/release"

# Debian packages the suite, its tests, the demo and the benchmarks use.
PACKAGES=(etcd-server etcd-client protobuf-compiler iproute2 nftables containernetworking-plugins
  iputils-ping iperf3 bind9-dnsutils golang-go golang-github-appc-cni-dev podman containerd runc
  busybox-static jq procps bc python3 dnsmasq-base dnsperf openssl)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root: the suite creates network namespaces and devices"; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

need_cargo() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
}

build_release() {
  need_cargo
  say "building (release)"
  (cd "$ROOT" && cargo build --release --workspace --bins --quiet) || die "build failed"
}

# A private etcd on free loopback ports, data in a temporary directory (tmpfs unless ETCD_DATA_BASE says
# otherwise). Sets ETCD_ENDPOINT and ETCD_PID; etcd_stop removes everything.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

etcd_start() {
  local base=${ETCD_DATA_BASE:-/dev/shm}
  ETCD_DATA=$(mktemp -d "$base/cni-overlay-etcd.XXXXXX")
  local cport pport
  cport=$(free_port); pport=$(free_port)
  ETCD_ENDPOINT="127.0.0.1:$cport"
  etcd --name local --data-dir "$ETCD_DATA" \
    --listen-client-urls "http://$ETCD_ENDPOINT" --advertise-client-urls "http://$ETCD_ENDPOINT" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "local=http://127.0.0.1:$pport" --log-level error --logger zap >"$ETCD_DATA.log" 2>&1 &
  ETCD_PID=$!
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINT" endpoint health >/dev/null 2>&1 && return 0
    kill -0 "$ETCD_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$ETCD_DATA.log" >&2
  die "etcd did not start"
}

etcd_stop() {
  if [ -n "${ETCD_PID:-}" ]; then
    kill "$ETCD_PID" 2>/dev/null || true
    wait "$ETCD_PID" 2>/dev/null || true
  fi
  if [ -n "${ETCD_DATA:-}" ]; then rm -rf "$ETCD_DATA" "$ETCD_DATA.log"; fi
  ETCD_PID=""; ETCD_DATA=""
}
