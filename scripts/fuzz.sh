#!/usr/bin/env bash
# Fuzzes the parsers with cargo-fuzz (libFuzzer): scripts/fuzz.sh TARGET SECONDS, or
# scripts/fuzz.sh all SECONDS for every target one after the other. Not in CI.
#   netconf   a plugin's stdin: crates/cni's NetConf and the three plugins' configurations
#   env_args  the CNI_* environment and CNI_ARGS
#   result    prevResult / delegate results read from any version and written in each
#   records   the etcd records (crates/model) and the store's address keys
#   dns       overlayd's answer to one DNS datagram from a fixed set of records
# Prints, per target, the executions and the crashes; a crashing input is kept in
# fuzz/artifacts/TARGET/ (reproduce: cd fuzz && cargo fuzz run --sanitizer none TARGET FILE).
# The corpus grows in fuzz/corpus/TARGET (not checked in), seeded from fuzz/seeds/TARGET.
#
# Stable toolchain: cargo-fuzz's default AddressSanitizer needs -Zsanitizer (nightly, or
# RUSTC_BOOTSTRAP=1); with --sanitizer none every flag cargo fuzz passes is stable. What is fuzzed
# is safe Rust, where ASan finds nothing a panic would not. libfuzzer-sys builds libFuzzer with the
# C++ compiler (g++, already needed by the build).
# Runs under nice -n 19, one target at a time, one libFuzzer process: the machine is shared.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(netconf env_args result records dns)

usage() {
  echo "usage: $0 {$(IFS='|'; echo "${TARGETS[*]}")|all} SECONDS" >&2
  exit 2
}
[ $# -eq 2 ] || usage
target=$1
seconds=$2
[[ $seconds =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || usage
if [ "$target" = all ]; then
  selected=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $target "* ]]; then
  selected=("$target")
else
  usage
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "# installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked)" >&2
  nice -n 19 cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi

cd "$repo/fuzz"
# One build (all targets when "all": the dependencies are shared); fail here, not in the loop.
build_target=()
[ "$target" = all ] || build_target=("$target")
nice -n 19 cargo fuzz build --sanitizer none "${build_target[@]}"
for t in "${selected[@]}"; do
  [ -x "target/x86_64-unknown-linux-gnu/release/$t" ] || { echo "fuzz target $t did not build" >&2; exit 1; }
done

printf '%-10s %14s %10s %8s  %s\n' target executions exec/s crashes artifacts
summary=()
failed=0
for t in "${selected[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  before=$(find "artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  # -fork=1 with -ignore_*: one worker at a time that is restarted after a crash, so a crash
  # does not end the run; every crashing input is kept.
  nice -n 19 cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || true
  # Fork mode's status lines: "#<execs>: cov: ... exec/s: <n> oom/timeout/crash: a/b/c time: ...".
  status=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)
  execs=$(sed -nE 's/^#([0-9]+):.*/\1/p' <<<"$status")
  rate=$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$status")
  crashes=$(sed -nE 's/.*oom\/timeout\/crash: ([0-9]+)\/([0-9]+)\/([0-9]+).*/\1 \2 \3/p' <<<"$status" |
    awk '{print $1 + $2 + $3}')
  after=$(find "artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
  if [ -z "$execs" ]; then
    echo "fuzz target $t did not run; its output:" >&2
    tail -20 "$log" >&2
    failed=1
    continue
  fi
  line=$(printf '%-10s %14s %10s %8s  %s' "$t" "$execs" "${rate:-?}" "${crashes:-0}" "$((after - before)) new in fuzz/artifacts/$t")
  echo "$line"
  summary+=("$line")
  [ "${crashes:-0}" -eq 0 ] || failed=1
done
if [ ${#selected[@]} -gt 1 ]; then
  echo "# summary (${seconds}s per target)"
  printf '%s\n' "${summary[@]}"
fi
exit "$failed"
