#!/usr/bin/env bash
# scripts/install.sh on a simulated host: a temporary root holding what a host already has (Debian's
# plugins in /opt/cni/bin, a podman conflist, /usr/local/bin, /etc/systemd/system). Install: the files,
# their modes and contents, no service started; again: nothing rewritten; a foreign file in /opt/cni/bin
# untouched; the unit verified by systemd-analyze; uninstall: the root exactly as before (a listing of
# every path with type, mode, size and content hash). Then the cases an operator meets: edited settings
# survive a re-install and an uninstall, a file of ours in the way stops the install before any change.
# Prints "ok - " / "not ok - " per check. No networking is involved: nothing needs a namespace.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROFILE=${CNI_OVERLAY_PROFILE:-}
if [ -z "$PROFILE" ]; then
  for p in ci release; do [ -x "$ROOT/target/$p/overlayd" ] && { PROFILE=$p; break; }; done
fi
FROM="$ROOT/target/${PROFILE:-ci}"
INSTALL="$ROOT/scripts/install.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
host="$tmp/host"

ok() { echo "ok - install: $1"; }
notok() { echo "not ok - install: $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | head -40 | sed 's/^/# /'; return 0; }
check() { # NAME COMMAND...
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$out"; fi
}

for b in overlayd overlayctl vxlan-overlay etcd-ipam gwbridge-egress; do
  [ -x "$FROM/$b" ] || { notok "binaries built" "not built: $FROM/$b (cargo build --profile ci --workspace --bins)"; exit 0; }
done

# The host as it was: other plugins, another runtime's conflist, the usual directories.
mkdir -p "$host/opt/cni/bin" "$host/etc/cni/net.d" "$host/usr/local/bin" "$host/etc/systemd/system" "$host/var/lib"
printf 'debian bridge plugin\n' >"$host/opt/cni/bin/bridge"; chmod 0755 "$host/opt/cni/bin/bridge"
printf '{"cniVersion": "0.4.0", "name": "podman"}\n' >"$host/etc/cni/net.d/87-podman-bridge.conflist"

# Every path under the root: type, mode, owner; for files also size, mtime and content hash (a
# directory's mtime changes with any entry made and removed inside it, so it is left out).
listing() {
  (cd "$1" && find . -printf '%y %m %u:%g %s %T@ %p\n' | while read -r y m o s t p; do
    if [ "$y" = f ]; then echo "$p $y $m $o $s $t $(sha256sum "$p" | cut -c1-16)"; else echo "$p $y $m $o"; fi
  done | LC_ALL=C sort)
}
# systemctl must never be called: a stand-in first in PATH records any call.
mkdir -p "$tmp/stub"
printf '#!/bin/sh\necho "$@" >>"%s/systemctl.calls"\n' "$tmp" >"$tmp/stub/systemctl"; chmod +x "$tmp/stub/systemctl"
run() { PATH="$tmp/stub:$PATH" bash "$INSTALL" --root "$host" --from "$FROM" "$@" >"$tmp/out" 2>&1; }

before=$(listing "$host")
foreign_sum=$(sha256sum "$host/opt/cni/bin/bridge")

# 1. Install.
if run; then ok "install.sh exits 0"; else notok "install.sh exits 0" "$(cat "$tmp/out")"; fi
mode_is() { [ "$(stat -c %a "$host$1")" = "$2" ] || { echo "$1: mode $(stat -c %a "$host$1" 2>&1), want $2"; return 1; }; }
same() { cmp "$FROM/$(basename "$1")" "$host$1"; }
files_ok() {
  local f
  for f in /opt/cni/bin/vxlan-overlay /opt/cni/bin/etcd-ipam /opt/cni/bin/gwbridge-egress /usr/local/bin/overlayd /usr/local/bin/overlayctl; do
    mode_is "$f" 755 && same "$f" || return 1
  done
  mode_is /etc/systemd/system/overlayd.service 644 && cmp "$ROOT/deploy/systemd/overlayd.service" "$host/etc/systemd/system/overlayd.service" || return 1
  mode_is /etc/cni-overlay/overlayd.env 600 && cmp "$ROOT/deploy/systemd/overlayd.env" "$host/etc/cni-overlay/overlayd.env" || return 1
  [ -s "$host/var/lib/cni-overlay/installed" ]
}
check "plugins in /opt/cni/bin, overlayd and overlayctl in /usr/local/bin (0755), the unit (0644), the settings (0600), the record" files_ok
check "the installed overlayd runs" "$host/usr/local/bin/overlayd" --version
manifest_ok() {
  local want n
  want=$(printf '%s\n' /opt/cni/bin/vxlan-overlay /opt/cni/bin/etcd-ipam /opt/cni/bin/gwbridge-egress /usr/local/bin/overlayd \
    /usr/local/bin/overlayctl /etc/systemd/system/overlayd.service /etc/cni-overlay/overlayd.env | sort)
  n=$(awk '$1 == "file" { print $4 }' "$host/var/lib/cni-overlay/installed" | sort)
  [ "$n" = "$want" ] || { echo "recorded files:"; echo "$n"; return 1; }
  awk '$1 == "dir" { print $2 }' "$host/var/lib/cni-overlay/installed" | sort | diff - <(printf '%s\n' /etc/cni-overlay /var/lib/cni-overlay)
}
check "the record lists exactly the files and directories it made" manifest_ok
check "a foreign plugin in /opt/cni/bin is untouched" bash -c "[ \"\$(sha256sum '$host/opt/cni/bin/bridge')\" = '$foreign_sum' ]"
check "no service was started (systemctl never called)" test ! -e "$tmp/systemctl.calls"
check "it prints the systemctl commands to run" grep -q 'systemctl enable --now overlayd.service' "$tmp/out"
# systemd-analyze verify reads the unit as systemd would (every directive and value, the ExecStart
# binaries): on a copy whose paths point into the temporary root. It exits 0 on values it ignores with a
# warning, so any output is a failure too.
verify_unit() {
  mkdir -p "$tmp/verify"
  sed -e "s#/usr/local/bin/overlayd#$host/usr/local/bin/overlayd#" -e "s#/etc/cni-overlay/#$host/etc/cni-overlay/#" \
    "$host/etc/systemd/system/overlayd.service" >"$tmp/verify/overlayd.service"
  local out
  out=$(systemd-analyze verify "$tmp/verify/overlayd.service" 2>&1) && [ -z "$out" ] || { echo "$out"; return 1; }
}
if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify accepts the installed unit, without a warning" verify_unit
else
  notok "systemd-analyze verify accepts the installed unit, without a warning" "systemd-analyze not found (Debian package systemd)"
fi

# Every OVERLAYD_* variable the settings file and the unit name, commented out or not, is one overlayd
# reads (its --help lists each flag's variable).
settings_known() {
  local known named
  known=$("$FROM/overlayd" --help | grep -o 'env: OVERLAYD_[A-Z_]*' | cut -d' ' -f2 | sort -u)
  named=$(grep -ohE '^(#|Environment=)?OVERLAYD_[A-Z_]+=' "$ROOT/deploy/systemd/overlayd.env" "$ROOT/deploy/systemd/overlayd.service" \
    | grep -oE 'OVERLAYD_[A-Z_]+' | sort -u)
  [ -n "$named" ] || { echo "no OVERLAYD_* variable found"; return 1; }
  comm -23 <(echo "$named") <(printf '%s\n' $known | sort -u) | { ! grep .; }
}
check "every OVERLAYD_* variable in overlayd.env and the unit is one overlayd reads" settings_known

# 2. Again: nothing rewritten (same listing, mtimes included).
after_first=$(listing "$host")
if run && [ "$(listing "$host")" = "$after_first" ] && ! grep -q '^installed ' "$tmp/out"; then
  ok "a second install changes nothing"
else
  notok "a second install changes nothing" "$(cat "$tmp/out"; diff <(echo "$after_first") <(listing "$host"))"
fi

# 3. Uninstall: exactly as before.
if run --uninstall; then ok "install.sh --uninstall exits 0"; else notok "install.sh --uninstall exits 0" "$(cat "$tmp/out")"; fi
now=$(listing "$host")
if [ "$now" = "$before" ]; then ok "uninstall leaves the root exactly as it was"; else notok "uninstall leaves the root exactly as it was" "$(diff <(echo "$before") <(echo "$now"))"; fi
check "uninstalling again is a no-op" run --uninstall

# 4. Edited settings survive a re-install and the uninstall; everything else goes.
run
echo 'OVERLAYD_ETCD=https://etcd.example:2379' >>"$host/etc/cni-overlay/overlayd.env"
edited=$(sha256sum <"$host/etc/cni-overlay/overlayd.env")
if run && [ "$(sha256sum <"$host/etc/cni-overlay/overlayd.env")" = "$edited" ] && grep -q '^kept /etc/cni-overlay/overlayd.env' "$tmp/out"; then
  ok "a re-install never overwrites the settings"
else
  notok "a re-install never overwrites the settings" "$(cat "$tmp/out")"
fi
run --uninstall
if [ "$(sha256sum <"$host/etc/cni-overlay/overlayd.env")" = "$edited" ] && grep -q '^kept /etc/cni-overlay/overlayd.env: changed' "$tmp/out" \
   && [ ! -e "$host/usr/local/bin/overlayd" ] && [ ! -e "$host/opt/cni/bin/vxlan-overlay" ] && [ ! -e "$host/var/lib/cni-overlay" ]; then
  ok "uninstall keeps edited settings (and their directory), removes the rest"
else
  notok "uninstall keeps edited settings (and their directory), removes the rest" "$(cat "$tmp/out")"
fi
rm -rf "$host/etc/cni-overlay"
now=$(listing "$host")
if [ "$now" = "$before" ]; then ok "with the edited settings removed by hand, the root is as before"; else notok "with the edited settings removed by hand, the root is as before" "$(diff <(echo "$before") <(echo "$now"))"; fi

# 5. A file at one of our paths that install.sh did not put there: refused before any change.
printf 'hand-installed\n' >"$host/opt/cni/bin/etcd-ipam"
before_conflict=$(listing "$host")
if ! run && grep -q 'left alone: /opt/cni/bin/etcd-ipam' "$tmp/out" && [ "$(listing "$host")" = "$before_conflict" ]; then
  ok "a file of that name it did not install stops the install, nothing changed"
else
  notok "a file of that name it did not install stops the install, nothing changed" "$(cat "$tmp/out")"
fi
exit 0
