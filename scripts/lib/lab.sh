# A lab of simulated hosts made of network namespaces, for the demo and the benchmarks (the Rust
# tests have the same lab in crates/testutils/src/lab.rs). Source after common.sh.
#
#   LAB_PREFIX-inet  the simulated internet: 203.0.113.1/24 on lo, the hosts' router at 192.168.205.1
#   LAB_PREFIX-sw    the underlay switch (bridge br0)
#   LAB_PREFIX-hN    host N: eth0 192.168.205.(9+N), default route via .1
#
# Every namespace and process is recorded and lab_down removes exactly those. Processes run in a
# host through `nsenter --net` (not `ip netns exec`, which would give them a private mount namespace).

LAB_NAMESPACES=()
LAB_PIDS=()
LAB_HOSTS=0
LAB_UNDERLAY=192.168.205
LAB_INTERNET=203.0.113.1

lab_ns() { ip netns add "$1"; LAB_NAMESPACES+=("$1"); ip -n "$1" link set lo up; }

lab_host_ns() { echo "$LAB_PREFIX-h$1"; }
lab_host_addr() { echo "$LAB_UNDERLAY.$((9 + $1))"; }

# lab_up N: N hosts, the switch and the internet.
lab_up() {
  local n=$1 sw="$LAB_PREFIX-sw" inet="$LAB_PREFIX-inet" i
  LAB_HOSTS=$n
  lab_ns "$sw"
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  lab_ns "$inet"
  lab_plug "$inet" "$LAB_UNDERLAY.1/24" p0
  ip -n "$inet" addr add "$LAB_INTERNET/24" dev lo
  ip netns exec "$inet" sysctl -qw net.ipv4.ip_forward=1
  for i in $(seq 1 "$n"); do
    lab_ns "$(lab_host_ns "$i")"
    lab_plug "$(lab_host_ns "$i")" "$(lab_host_addr "$i")/24" "p$i"
    ip -n "$(lab_host_ns "$i")" route add default via "$LAB_UNDERLAY.1"
  done
}

lab_plug() { # NS CIDR PORT
  ip -n "$LAB_PREFIX-sw" link add "$3" type veth peer name eth0 netns "$1"
  ip -n "$LAB_PREFIX-sw" link set "$3" master br0 up
  ip -n "$1" addr add "$2" dev eth0
  ip -n "$1" link set eth0 up
}

# lab_run HOST_INDEX COMMAND...: runs a command on a host.
lab_run() { local h=$1; shift; nsenter --net="/run/netns/$(lab_host_ns "$h")" -- "$@"; }

# lab_bg HOST_INDEX LOG COMMAND...: starts a service on a host; lab_down stops it.
lab_bg() {
  local h=$1 log=$2; shift 2
  nsenter --net="/run/netns/$(lab_host_ns "$h")" -- "$@" >>"$log" 2>&1 &
  LAB_PIDS+=($!)
  LAB_LAST_PID=$!
}

# lab_etcd_cluster DATADIR HOST...: one etcd member on each given host, one cluster. Sets LAB_ETCD
# (comma-separated client URLs).
lab_etcd_cluster() {
  local dir=$1; shift
  local cluster="" h urls=()
  for h in "$@"; do cluster+="${cluster:+,}node$h=http://$(lab_host_addr "$h"):2380"; done
  for h in "$@"; do
    local a; a=$(lab_host_addr "$h")
    lab_bg "$h" "$dir/etcd-node$h.log" etcd --name "node$h" --data-dir "$dir/etcd-node$h" \
      --initial-advertise-peer-urls "http://$a:2380" --listen-peer-urls "http://$a:2380" \
      --listen-client-urls "http://$a:2379,http://127.0.0.1:2379" --advertise-client-urls "http://$a:2379" \
      --initial-cluster-token cni-overlay-lab --initial-cluster "$cluster" --initial-cluster-state new \
      --log-level error --logger zap
    urls+=("http://$a:2379")
  done
  LAB_ETCD=$(IFS=,; echo "${urls[*]}")
  local try
  for try in $(seq 100); do
    lab_run "$1" etcdctl --endpoints "$LAB_ETCD" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the lab's etcd cluster did not become healthy"
}

# lab_container NAME: a container namespace; prints its path.
lab_container() { lab_ns "$LAB_PREFIX-c-$1"; echo "/run/netns/$LAB_PREFIX-c-$1"; }
lab_in() { local c=$1; shift; ip netns exec "$LAB_PREFIX-c-$c" "$@"; }

# The plugins' lock files keyed by this lab's host namespaces (their inodes).
lab_remove_lock_files() {
  local h inode
  for h in $(seq 1 "$LAB_HOSTS"); do
    inode=$(stat -c %i "/run/netns/$(lab_host_ns "$h")" 2>/dev/null) || continue
    rm -f "/run/cni-overlay/locks/$inode-"*.lock
  done
}

lab_down() {
  local pid ns
  for pid in "${LAB_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # The gateway sandboxes vxlan-overlay made for the lab's nodes (exactly ovl-<vni>-node<N>).
  local h
  for ns in $(ls /run/netns 2>/dev/null); do
    for h in $(seq 1 "$LAB_HOSTS"); do
      if [[ $ns =~ ^ovl-[0-9]+-node$h$ ]]; then ip netns del "$ns" 2>/dev/null || true; fi
    done
  done
  lab_remove_lock_files
  for ((i = ${#LAB_NAMESPACES[@]} - 1; i >= 0; i--)); do ip netns del "${LAB_NAMESPACES[$i]}" 2>/dev/null || true; done
  # Containers made inside $(...) were recorded in a subshell; the prefix is this run's own (it
  # carries the PID), so every namespace that starts with it is ours.
  for ns in $(ls /run/netns 2>/dev/null); do
    if [[ $ns == "$LAB_PREFIX"-* ]]; then ip netns del "$ns" 2>/dev/null || true; fi
  done
  LAB_NAMESPACES=(); LAB_PIDS=()
}
