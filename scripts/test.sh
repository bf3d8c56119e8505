#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds, runs every test.
# Tests start their own etcd on free loopback ports and build their own network namespaces; nothing
# is left running or mounted afterwards. Under CI=true a missing prerequisite is a failure.
set -uo pipefail
# Every build here uses the `ci` profile (release without LTO, Cargo.toml): one cold build of the
# dependencies for the binaries, the test binaries and the suites alike.
export CNI_OVERLAY_PROFILE=${CNI_OVERLAY_PROFILE:-ci}
source "$(dirname "$0")/lib/common.sh"

need_root
install_packages
need_cargo
cd "$ROOT"

passed=0
failed=0
failures=()

# Adds the counts of every "test result:" line of a cargo test log.
count_cargo() {
  local log=$1 p f
  read -r p f < <(awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
                      END { print p + 0, f + 0 }' "$log")
  passed=$((passed + p))
  failed=$((failed + f))
}

step() { # name command...: a step that is one check
  local name=$1; shift
  say "$name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --profile "$PROFILE" --workspace --all-targets --quiet -- -D warnings

say "building (profile $PROFILE)"
cargo build --profile "$PROFILE" --workspace --bins --quiet || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

say "cargo test (unit and integration tests against a real etcd and real namespaces)"
log=$(mktemp)
cargo test --profile "$PROFILE" --workspace --no-fail-fast 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
count_cargo "$log"
if [ "$cargo_status" != 0 ] && ! grep -q '^test result: FAILED' "$log"; then
  failed=$((failed + 1)); failures+=("cargo test did not run to completion (exit $cargo_status)")
fi
grep -E '^test .* FAILED$' "$log" | while read -r line; do echo "  $line"; done
rm -f "$log"

# Black-box suites: each script prints "ok - NAME" or "not ok - NAME" per check.
for suite in scripts/tests/*.sh; do
  [ -e "$suite" ] || continue
  say "suite $suite"
  out=$(mktemp)
  bash "$suite" 2>&1 | tee "$out"
  status=${PIPESTATUS[0]}
  p=$(grep -cE '^ok - ' "$out"); f=$(grep -cE '^not ok - ' "$out")
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$status" != 0 ] && [ "$f" = 0 ]; then failed=$((failed + 1)); failures+=("$suite exited $status"); fi
  grep -E '^not ok - ' "$out" | sed 's/^/  /'
  rm -f "$out"
done

[ ${#failures[@]} -gt 0 ] && printf 'failed step: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
