#!/usr/bin/env bash
# scripts/bench.sh docker: Docker 20.10's own multi-host overlay (--cluster-store on etcd, the
# seed's setup) against Docker with overlayd's cni-overlay driver, in one run on one lab: the same
# two dockerds (one per simulated host) serve both networks, so load falls on both alike.
#   throughput  iperf3 TCP container (host 1) -> container (host 2) per network, against host to host;
#               the underlay shaped like a NIC (UNDERLAY_RATE, default 10gbit) and unshaped; with the
#               CPU per byte of each path (scripts/lib/iperf-cpu.sh); IPERF_ROUNDS (default 3) rounds
#               of IPERF_SECONDS (default 5), per-round ratios printed
#   docker run  latency of `docker run -d` on each network and with --net none (p50/p99); then again
#               with host 2's dockerd restarted with --authorization-plugin cni-overlay; then ours and
#               --net none on host 2's dockerd restarted without --cluster-store (as our users run it:
#               Docker 23+ has none), against Docker's overlay of the first phase
#   reachable   from `docker run` returning on host 2 until a container on host 1 gets a ping reply
#   resolvable  from `docker run` returning on host 2 until its name resolves in a container on host 1
#               (through Docker's resolver 127.0.0.11 in both cases; ours forwards to the gateway;
#               and ours straight at the gateway); negative: resolvable before docker run returned
# TRIALS (default 20) per network, alternating between the two.
# Targets (issue 18): throughput ratio >= 1.0 of Docker's overlay, name p99 <= 50 ms, docker run <= Docker's.
# Sourced by scripts/bench.sh (lab, say, die, RELEASE, BENCH_TMP, iperf_cpu_run from there).

bench_docker() {
  local tmp=$BENCH_TMP trials=${TRIALS:-20}
  ((trials <= 50)) || die "TRIALS at most 50: the trials take fixed addresses in a /24"
  source "$ROOT/scripts/lib/busybox-image.sh"
  source "$ROOT/scripts/lib/docker-host.sh"
  source "$ROOT/scripts/lib/app-images.sh"
  command -v dockerd >/dev/null || die "dockerd missing (apt-get install docker.io)"
  export LAB_DIR="$tmp/lab"
  local prefix="bd$$"
  lab up --prefix "$prefix" --node-prefix "${prefix}n" --hosts 2 --etcd-members 1 >/dev/null
  local etcd; etcd=$(lab etcd-endpoints)
  DOCKER_BENCH_DIRS=("$tmp/h1" "$tmp/h2")
  # Docker 20.10's libkv speaks etcd's v2 API: an etcd of its own on host 1 with --enable-v2.
  local v2="http://$(lab addr 1):2381"
  lab bg 1 --log "$tmp/etcd-v2.log" -- etcd --enable-v2 --name dkv2 --data-dir "$tmp/etcd-v2" \
    --listen-client-urls "$v2" --advertise-client-urls "$v2" --listen-peer-urls http://127.0.0.1:2390 \
    --initial-advertise-peer-urls http://127.0.0.1:2390 --initial-cluster dkv2=http://127.0.0.1:2390 >/dev/null
  local h
  for h in 1 2; do
    DOCKER_HOST_EXTRA_ARGS="--cluster-store=etcd://${v2#http://} --cluster-advertise=$(lab addr $h):2376" \
      docker_host_start "$(lab ns $h)" "$tmp/h$h" "${prefix}n$h" || die "dockerd on host $h did not start"
    docker_host_import "$tmp/h$h" || die "no busybox image"
    docker_host_overlayd "$tmp/h$h" "$tmp/overlayd$h.log" "${OVERLAYD_BIN:-$RELEASE/overlayd}" --etcd "$etcd" \
      --node "${prefix}n$h" --metrics-addr off >/dev/null
  done
  app_rootfs_tar "$tmp/iperf3.tar" iperf3 || die "no iperf3 image"
  for h in 1 2; do docker_on "$tmp/h$h" import -c 'ENV PATH=/usr/bin:/bin' "$tmp/iperf3.tar" iperf3 >/dev/null; done
  for h in 1 2; do
    local i
    for ((i = 0; i < 100; i++)); do in_docker_host "$tmp/h$h" test -S /run/docker/plugins/cni-overlay.sock && break; sleep 0.1; done
  done
  local d1="$tmp/h1" d2="$tmp/h2"
  docker_on "$d1" network create -d overlay --attachable --subnet 10.50.0.0/24 dovl >/dev/null || die "Docker's overlay network"
  docker_on "$d1" network create -d cni-overlay --ipam-driver cni-overlay --subnet 10.60.0.0/24 ours >/dev/null || die "our network"
  for ((i = 0; i < 100; i++)); do
    docker_on "$d2" network inspect dovl >/dev/null 2>&1 && docker_on "$d2" network inspect ours >/dev/null 2>&1 && break
    sleep 0.1
  done
  dns_of() { [ "$1" = ours ] && echo "--dns 10.60.0.1"; }

  # Throughput, and the CPU each byte costs on each path (scripts/lib/iperf-cpu.sh: steadier than
  # throughput on a shared machine). The clients are containers that stay (an idle `iperf3 -s`; the
  # test runs through `docker exec`): no container start inside the measured window. Each round runs
  # the three paths, Docker's overlay and ours in alternating order, so load falls on both alike.
  local rate=${UNDERLAY_RATE:-10gbit} secs=${IPERF_SECONDS:-5} rounds=${IPERF_ROUNDS:-3} net per_byte=false
  iperf_cpu_counted && per_byte=true
  for net in dovl ours; do
    docker_on "$d2" run -d --name "srv-$net" --net "$net" iperf3 iperf3 -s >/dev/null
    docker_on "$d1" run -d --name "cli-$net" --net "$net" iperf3 iperf3 -s >/dev/null
  done
  lab bg 2 --log "$tmp/iperf-h2.log" -- iperf3 -s >/dev/null
  sleep 1
  ip_in() { docker_on "$1" inspect "$2" --format "{{(index .NetworkSettings.Networks \"$3\").IPAddress}}"; }
  local srv_dovl srv_ours
  srv_dovl=$(ip_in "$d2" srv-dovl dovl) srv_ours=$(ip_in "$d2" srv-ours ours)
  path_run() { # dovl|ours|host: "bits/s cpu-seconds bytes" of one run on that path
    case $1 in
      dovl) iperf_cpu_run docker_on "$d1" exec cli-dovl iperf3 -c "$srv_dovl" -t "$secs" -J ;;
      ours) iperf_cpu_run docker_on "$d1" exec cli-ours iperf3 -c "$srv_ours" -t "$secs" -J ;;
      host) iperf_cpu_run lab run 1 -- iperf3 -c "$(lab addr 2)" -t "$secs" -J ;;
    esac
  }
  throughput() { # LABEL
    local r p order out
    : >"$tmp/rounds"
    for r in $(seq 1 "$rounds"); do
      order="dovl ours host"
      ((r % 2 == 0)) && order="ours dovl host"
      for p in $order; do
        out=$(path_run "$p") || die "iperf3 on $p failed"
        echo "$r $p $out" >>"$tmp/rounds"
      done
    done
    python3 - "$tmp/rounds" "$1" "$per_byte" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
label, per_byte = sys.argv[2], sys.argv[3] == 'true'
runs = {}  # path -> [(bps, cpu, bytes)] in round order
for r, path, *v in rows:
    runs.setdefault(path, []).append(tuple(map(float, v)))
d, o, h = runs['dovl'], runs['ours'], runs['host']
gbit = lambda x: sum(r[0] for r in x) / len(x) / 1e9
rounds = lambda a, b, f: ' '.join(f'{f(x, y):.2f}' for x, y in zip(a, b))
thr = lambda x, y: x[0] / y[0]
print(f"docker     throughput   {label:<28} docker overlay {gbit(d):5.2f}  cni-overlay {gbit(o):5.2f}  host {gbit(h):5.2f} Gbit/s"
      f"  ours/docker {gbit(o)/gbit(d):.2f} (target >= 1.0; rounds {rounds(o, d, thr)})  docker/host {gbit(d)/gbit(h):.2f}  ours/host {gbit(o)/gbit(h):.2f}")
if per_byte:
    cpb = lambda x: sum(r[1] for r in x) / sum(r[2] for r in x) * 1e9
    # Ratios as "other's CPU per byte / ours": >= 1.0 means ours costs no more.
    per = lambda x, y: (y[1] / y[2]) / (x[1] / x[2])
    print(f"docker     cpu per byte {label:<28} docker overlay {cpb(d):5.3f}  cni-overlay {cpb(o):5.3f}  host {cpb(h):5.3f} s/GB"
          f"  docker/ours {cpb(d)/cpb(o):.2f} (>= 1.0: ours costs no more; rounds {rounds(o, d, per)})"
          f"  host/ours {cpb(h)/cpb(o):.2f} (rounds {rounds(o, h, per)})  host/docker {cpb(h)/cpb(d):.2f}")
PY
  }
  say "docker: iperf3 TCP host 1 -> host 2, $rounds rounds x $secs s per path"
  local port
  for port in p1 p2; do lab run switch -- tc qdisc replace dev "$port" root tbf rate "$rate" burst 1mb latency 2ms; done
  throughput "link-bound, underlay $rate"
  for port in p1 p2; do lab run switch -- tc qdisc del dev "$port" root; done
  throughput "cpu-bound, unshaped veths"

  # docker run latency, reachability and name resolution, alternating between the networks.
  say "docker: docker run, reachable and resolvable from the other host, $trials trials per network"
  for net in dovl ours; do
    docker_on "$d1" run -d --name "probe-$net" --net "$net" $(dns_of "$net") busybox sleep 36000 >/dev/null
  done
  local key_dovl key_ours
  key_dovl=$(docker_on "$d1" inspect probe-dovl --format '{{.NetworkSettings.SandboxKey}}')
  key_ours=$(docker_on "$d1" inspect probe-ours --format '{{.NetworkSettings.SandboxKey}}')
  : >"$tmp/samples"
  # The name probes start before `docker run` and poll every 2 ms from one process each (no process
  # started per try), stamping the first answer with the address; ping -D (every 2 ms) starts when
  # `docker run` returns and stamps the first reply. Figures are from `docker run` returning
  # (negative: the name answered before it returned).
  cat >"$tmp/resolve.py" <<'PY'
import random, socket, struct, sys, time
name, addr, server = sys.argv[1:4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.05)
question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
want = socket.inet_aton(addr)
end = time.time() + 20
while time.time() < end:
    s.sendto(struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0) + question, (server, 53))
    try:
        answer = s.recv(1500)
    except socket.timeout:
        continue
    if answer[3] & 15 == 0 and want in answer[12 + len(question):]:
        print(f"{time.time():.6f}")
        sys.exit(0)
    time.sleep(0.002)
print("nan")
PY
  ms_after() { python3 -c "import sys; a, b = sys.argv[1:]; print('nan' if a == 'nan' or not a else round((float(a) - float(b)) * 1000, 1))" "$1" "$2"; }
  local t name key addr t0 t1 server ip
  for t in $(seq 1 "$trials"); do
    for net in dovl ours none; do
      name="b$t$net"
      t0=$EPOCHREALTIME
      if [ "$net" = none ]; then
        docker_on "$d2" run -d --name "$name" --net none busybox sleep 3600 >/dev/null || die "docker run --net none"
        t1=$EPOCHREALTIME
        echo "none run $(ms_after "$t1" "$t0")" >>"$tmp/samples"
        continue
      fi
      # A fixed address (--ip, honoured by both IPAMs): the probes know it before the container exists.
      if [ "$net" = dovl ]; then key=$key_dovl addr=10.50.0.$((100 + t)); else key=$key_ours addr=10.60.0.$((100 + t)); fi
      in_docker_host "$d1" nsenter --net="$key" python3 "$tmp/resolve.py" "$name" "$addr" 127.0.0.11 >"$tmp/name.out" &
      [ "$net" = ours ] && in_docker_host "$d1" nsenter --net="$key" python3 "$tmp/resolve.py" "$name" "$addr" 10.60.0.1 >"$tmp/direct.out" &
      sleep 0.3
      t0=$EPOCHREALTIME
      docker_on "$d2" run -d --name "$name" --net "$net" --ip "$addr" $(dns_of "$net") busybox sleep 3600 >/dev/null || die "docker run on $net"
      t1=$EPOCHREALTIME
      # ping starts only now: a probe sent before the address exists leaves a failed ARP entry that
      # the kernel retries on its own 1 s timer, which would be measured instead of the plumbing.
      in_docker_host "$d1" nsenter --net="$key" ping -D -n -c1 -i 0.002 -w 20 "$addr" >"$tmp/ping.out" 2>/dev/null
      wait
      echo "$net run $(ms_after "$t1" "$t0")" >>"$tmp/samples"
      echo "$net reach $(ms_after "$(sed -n 's/^\[\([0-9.]*\)\] .*bytes from.*/\1/p' "$tmp/ping.out" | head -1)" "$t1")" >>"$tmp/samples"
      echo "$net name $(ms_after "$(cat "$tmp/name.out")" "$t1")" >>"$tmp/samples"
      [ "$net" = ours ] && echo "ours name-direct $(ms_after "$(cat "$tmp/direct.out")" "$t1")" >>"$tmp/samples"
    done
  done
  # restart_host2 WHAT ARGS NETWORK...: host 2's containers removed (one at a time: 20 removals at
  # once stalled overlayd for 60 s on its VNI lock, its lease expired), its dockerd restarted with
  # ARGS, back once it knows the networks.
  restart_host2() {
    local what=$1 args=$2 pid i n ready
    shift 2
    docker_on "$d2" ps -aq | xargs -r -n 1 /usr/bin/docker -H "unix://$d2/docker.sock" rm -f >/dev/null 2>&1
    pid=$(cat "$d2/docker.pid")
    kill -TERM "$pid"
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    DOCKER_HOST_EXTRA_ARGS="$args" docker_host_dockerd "$d2" || die "dockerd on host 2 did not restart $what"
    for ((i = 0; i < 100; i++)); do
      ready=true
      for n in "$@"; do docker_on "$d2" network inspect "$n" >/dev/null 2>&1 || ready=false; done
      $ready && break
      sleep 0.1
    done
  }
  # runs SAMPLE PREFIX OFFSET NETWORK...: TRIALS `docker run` on host 2 per network, alternating,
  # each timed into the samples as SAMPLE (fixed addresses from .100 + OFFSET + 1).
  runs() {
    local sample=$1 prefix=$2 offset=$3 t net name ip t0 t1
    shift 3
    for t in $(seq 1 "$trials"); do
      for net in "$@"; do
        name="$prefix$t$net" ip=()
        [ "$net" = dovl ] && ip=(--ip "10.50.0.$((100 + offset + t))")
        [ "$net" = ours ] && ip=(--ip "10.60.0.$((100 + offset + t))")
        t0=$EPOCHREALTIME
        docker_on "$d2" run -d --name "$name" --net "$net" "${ip[@]}" $(dns_of "$net") busybox sleep 3600 >/dev/null ||
          die "docker run on $net ($sample)"
        t1=$EPOCHREALTIME
        echo "$net $sample $(ms_after "$t1" "$t0")" >>"$tmp/samples"
      done
    done
  }
  # docker run again with dockerd's --authorization-plugin cni-overlay, where every API request
  # first asks overlayd: host 2's dockerd restarted with the flag (overlayd serves the plugin already),
  # docker run alone on each network, alternating; Docker's overlay then pays the same per-request cost.
  say "docker: docker run with --authorization-plugin cni-overlay on host 2, $trials trials per network"
  restart_host2 "with the authorization plugin" \
    "--cluster-store=etcd://${v2#http://} --cluster-advertise=$(lab addr 2):2376 --authorization-plugin cni-overlay" dovl ours
  runs authz-run a "$trials" dovl ours none
  # docker run once more on host 2's dockerd restarted as our users run it: without --cluster-store
  # (Docker 23+ has none; only Docker's overlay needs it). With it, every network inspect of the
  # Docker API, which our driver makes at each join for the container's name, costs dockerd 8-10 ms
  # against 1 ms. Docker's overlay cannot run there; its figures are those of the first phase.
  say "docker: docker run on host 2's dockerd without --cluster-store, $trials trials per network"
  restart_host2 "without --cluster-store" "" ours
  runs nostore-run n $((2 * trials)) ours none
  python3 - "$tmp/samples" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
data = {}
lost = 0
for net, what, ms in rows:
    if ms == 'nan':
        lost += 1
        continue
    data.setdefault((net, what), []).append(float(ms))
from faults import percentile as pct
label = {'dovl': "Docker's overlay", 'ours': 'cni-overlay', 'none': '--net none'}
for what, title in (('run', 'docker run'), ('reach', 'reachable'), ('name', 'resolvable'),
                    ('name-direct', 'resolvable at the gateway')):
    for net in ('dovl', 'ours', 'none'):
        v = data.get((net, what))
        if v:
            print(f"docker     {title:<11} {label[net]:<17} p50 {pct(v, .5):7.1f} ms  p99 {pct(v, .99):7.1f} ms  ({len(v)} trials)")
for net in ('dovl', 'ours', 'none'):
    v = data.get((net, 'authz-run'))
    if v:
        print(f"docker     run + authz {label[net]:<17} p50 {pct(v, .5):7.1f} ms  p99 {pct(v, .99):7.1f} ms  ({len(v)} trials, dockerd --authorization-plugin cni-overlay)")
run = lambda net, what='run': data.get((net, what))
if run('ours') and run('dovl') and run('ours', 'authz-run'):
    base = pct(run('dovl'), .5)
    print(f"docker     run p50 ratio against Docker's overlay (no plugin): ours {pct(run('ours'), .5) / base:.2f}, "
          f"ours with the authorization plugin {pct(run('ours', 'authz-run'), .5) / base:.2f} (target <= 1.0), "
          f"against Docker's overlay on the same restarted dockerd {pct(run('ours', 'authz-run'), .5) / pct(run('dovl', 'authz-run'), .5):.2f}; "
          f"the plugin's cost at p50 (the same dockerd, restarted): " +
          ', '.join(f"{label[n]} {pct(run(n, 'authz-run'), .5) - pct(run(n), .5):+.1f} ms" for n in ('ours', 'dovl', 'none')))
for net in ('ours', 'none'):
    v = data.get((net, 'nostore-run'))
    if v:
        print(f"docker     run, no store {label[net]:<17} p50 {pct(v, .5):7.1f} ms  p99 {pct(v, .99):7.1f} ms  ({len(v)} trials, dockerd without --cluster-store)")
if run('ours', 'nostore-run') and run('dovl') and run('none', 'nostore-run'):
    ours, none = pct(run('ours', 'nostore-run'), .5), pct(run('none', 'nostore-run'), .5)
    print(f"docker     run p50 ratio, ours on a dockerd without --cluster-store (as deployed) against Docker's overlay "
          f"(which needs it): {ours / pct(run('dovl'), .5):.2f} (target <= 1.0); the network's cost over --net none on "
          f"the same dockerd: ours {ours - none:.1f} ms without the store, {pct(run('ours'), .5) - pct(run('none'), .5):.1f} ms "
          f"with it, Docker's overlay {pct(run('dovl'), .5) - pct(run('none'), .5):.1f} ms with it")
if lost:
    print(f"docker     {lost} probes never succeeded")
PY
  for h in 1 2; do docker_host_stop "$tmp/h$h"; done
  DOCKER_BENCH_DIRS=()
  lab down
  LAB_DIR=""
}
