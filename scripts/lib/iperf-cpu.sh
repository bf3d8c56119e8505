#!/usr/bin/env bash
# The CPU an iperf3 run costs per byte, one rule for scripts/bench.sh overlay and docker. Source it.
#
# Why apart from throughput: on a shared machine other work takes cores from both paths, and the
# throughput ratio swings with it (0.56-1.21 from round to round under load) while the CPU each byte
# costs stays put. A run's CPU is both iperf3 ends' own figures (their system time holds the softirq
# work run in their context: the whole path, on a kernel without IRQ time accounting) plus
# ksoftirqd's. Kernels with CONFIG_IRQ_TIME_ACCOUNTING charge softirqs to no task: the figure is then
# left out (iperf_cpu_counted fails).

# iperf_cpu_counted: succeeds when this kernel charges softirq time to the tasks the rule reads.
iperf_cpu_counted() {
  ! { zcat /proc/config.gz 2>/dev/null | grep -q '^CONFIG_IRQ_TIME_ACCOUNTING=y' ||
    grep -qs '^CONFIG_IRQ_TIME_ACCOUNTING=y' "/boot/config-$(uname -r)"; }
}

# The machine's ksoftirqd threads' CPU ticks (user + system), summed.
softirqd_ticks() {
  local p s=0
  for p in $(pgrep -x 'ksoftirqd/[0-9]+'); do
    s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$s"
}

# iperf_cpu_run CMD...: runs CMD, an iperf3 client with -J (in a lab host, a container, ...), and
# prints "bits/s cpu-seconds bytes" of that run.
iperf_cpu_run() {
  local k0 k1 json
  k0=$(softirqd_ticks)
  json=$("$@") || return 1
  k1=$(softirqd_ticks)
  jq -r --argjson ticks "$((k1 - k0))" --argjson hz "$(getconf CLK_TCK)" '.end as $e
    | "\($e.sum_received.bits_per_second) \(($e.cpu_utilization_percent.host_total + $e.cpu_utilization_percent.remote_total) / 100 * $e.sum_received.seconds + $ticks / $hz) \($e.sum_received.bytes)"' <<<"$json"
}
