#!/usr/bin/env bash
# Benchmarks: each measures us against a peer in the same run and prints the ratio.
#   scripts/bench.sh ipam      etcd-ipam against Debian's host-local: 200 ADDs sequential, 200 with 32 in
#                              parallel, and ADD into a /16 with 50,000 addresses already in use.
# Targets (issue 2): ratio etcd-ipam / host-local at most 1.0 in both modes.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

bench_ipam() {
  local tmp; tmp=$(mktemp -d)
  trap 'etcd_stop; rm -rf "$tmp"' RETURN
  local count=${COUNT:-200} par=${PARALLEL:-32}
  run() { "$RELEASE/plugin-bench" --plugin "$1" --config "$2" --count "$count" --parallel "$3" --id-prefix "$4"; }
  secs() { jq -r .seconds <<<"$1"; }
  failures() { jq -r .failures <<<"$1"; }
  ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

  for storage in tmpfs disk; do
    if [ "$storage" = tmpfs ]; then ETCD_DATA_BASE=/dev/shm; else ETCD_DATA_BASE=/var/tmp; fi
    ETCD_DATA_BASE=$ETCD_DATA_BASE etcd_start
    say "ipam: etcd data on $storage ($ETCD_DATA_BASE), $count ADDs each"
    for mode in sequential parallel; do
      local p=1; [ "$mode" = parallel ] && p=$par
      local net="b-$storage-$mode"
      printf '{"cniVersion":"1.0.0","name":"%s","type":"bench","ipam":{"type":"etcd-ipam","subnet":"10.20.0.0/16","node":"bench","dataDir":"%s/ipam-data","etcd":{"endpoints":["%s"]}}}' \
        "$net" "$tmp" "$ETCD_ENDPOINT" >"$tmp/etcd-ipam.json"
      printf '{"cniVersion":"1.0.0","name":"%s","type":"bench","ipam":{"type":"host-local","subnet":"10.20.0.0/16","dataDir":"%s/host-local-%s"}}' \
        "$net" "$tmp" "$net" >"$tmp/host-local.json"
      local ours peer
      ours=$(run "$RELEASE/etcd-ipam" "$tmp/etcd-ipam.json" "$p" "e-$net")
      peer=$(run /usr/lib/cni/host-local "$tmp/host-local.json" "$p" "h-$net")
      [ "$(failures "$ours")" = 0 ] && [ "$(failures "$peer")" = 0 ] || die "failed ADDs: ours $ours peer $peer"
      printf '%-10s %-5s %-10s etcd-ipam %6.3fs  host-local %6.3fs  ratio %s (target <= 1.0)\n' \
        ipam "$storage" "$mode" "$(secs "$ours")" "$(secs "$peer")" "$(ratio "$(secs "$ours")" "$(secs "$peer")")"
    done
    if [ "$storage" = tmpfs ]; then
      # Cost must not grow with the addresses in use: an empty /16 against one with 50,000 taken.
      printf '{"cniVersion":"1.0.0","name":"empty16","type":"bench","ipam":{"type":"etcd-ipam","subnet":"10.30.0.0/16","node":"bench","dataDir":"%s/ipam-data","etcd":{"endpoints":["%s"]}}}' "$tmp" "$ETCD_ENDPOINT" >"$tmp/empty.json"
      sed 's/"empty16"/"full16"/' "$tmp/empty.json" >"$tmp/full.json"
      "$RELEASE/etcd-fill" --endpoint "$ETCD_ENDPOINT" --network full16 --first 10.30.0.2 --count 50000
      local empty full
      empty=$(run "$RELEASE/etcd-ipam" "$tmp/empty.json" 1 "empty")
      full=$(run "$RELEASE/etcd-ipam" "$tmp/full.json" 1 "full")
      [ "$(failures "$full")" = 0 ] || die "failed ADDs into the full pool: $full"
      printf '%-10s %-5s %-10s 50,000 used %6.3fs  empty %6.3fs  ratio %s (target ~1.0: no growth)  p99 %s ms vs %s ms\n' \
        ipam tmpfs used-pool "$(secs "$full")" "$(secs "$empty")" "$(ratio "$(secs "$full")" "$(secs "$empty")")" \
        "$(jq -r .p99_ms <<<"$full")" "$(jq -r .p99_ms <<<"$empty")"
    fi
    etcd_stop
  done
}

main() {
  need_root
  install_packages
  build_release
  local what=${1:-all}
  case "$what" in
    ipam) bench_ipam ;;
    all) bench_ipam ;;
    *) die "unknown benchmark $what (ipam)" ;;
  esac
}

main "$@"
