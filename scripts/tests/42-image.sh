#!/usr/bin/env bash
# deploy/Containerfile built and run, offline: podman 4.3 (private storage, in a network namespace of
# its own, scripts/lib/podman-host.sh) builds it from a context laid out as the README's
# `podman build -f deploy/Containerfile .` sends it (the binaries at target/release/, .dockerignore),
# with the first FROM replaced (`--from`) by a stand-in base: no registry is reachable, so the base is
# the build machine's own glibc libraries the binaries need (ldd), imported as an image. Then the
# DaemonSet's init step runs in the image as the DaemonSet runs it (its command and args, the
# ConfigMap's environment, every capability dropped, read-only root, no network) into host
# directories mounted at /opt/cni/bin and /etc/cni/net.d of a temporary root; the agent's command
# line is accepted by the image's overlayd.
# Prints "ok - " / "not ok - " per check. Under CI=true a missing prerequisite (podman, python3's
# PyYAML) is a failure; otherwise its checks are reported as skipped ("# skip", not counted as passed).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROFILE=${CNI_OVERLAY_PROFILE:-}
if [ -z "$PROFILE" ]; then
  for p in ci release; do [ -x "$ROOT/target/$p/overlayd" ] && { PROFILE=$p; break; }; done
fi
BIN="$ROOT/target/${PROFILE:-ci}"
BINARIES=(overlayd overlayctl vxlan-overlay etcd-ipam gwbridge-egress)
PLUGINS=(vxlan-overlay etcd-ipam gwbridge-egress)

ok() { echo "ok - image: $1"; }
notok() { echo "not ok - image: $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | head -40 | sed 's/^/# /'; return 0; }
missing() {
  if [ "${CI:-}" = true ]; then notok "$1" "missing prerequisite: $2"; else echo "# skip - image: $1: $2 (not counted as passed)"; fi
}

command -v podman >/dev/null || { missing "the Containerfile builds and runs" "podman not installed"; exit 0; }
for b in "${BINARIES[@]}"; do
  [ -x "$BIN/$b" ] || { notok "binaries built" "not built: $BIN/$b (cargo build --profile ci --workspace --bins)"; exit 0; }
done

tmp=$(mktemp -d)
host="ovimg-$$"
export RP_PODMAN_BASE="$tmp/podman" RP_PODMAN_RUNROOT_BASE="/tmp/ovimg-$$"
export RP_PODMAN_IMAGE=localhost/cni-overlay-base RP_PODMAN_ROOTFS_TAR="$tmp/base.tar"
# shellcheck source=../lib/podman-host.sh
source "$ROOT/scripts/lib/podman-host.sh"
cleanup() { podman_host_teardown "$host"; rm -rf "$tmp"; }
trap cleanup EXIT

# The stand-in base: the shared libraries (and the loader) the binaries link, nothing else.
libs=$(for b in "${BINARIES[@]}"; do ldd "$BIN/$b"; done | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
mkdir -p "$tmp/empty/etc" "$tmp/empty/tmp"
tar -C "$tmp/empty" -cf "$RP_PODMAN_ROOTFS_TAR" etc tmp
# shellcheck disable=SC2046 # one path per word
tar -C / -rhf "$RP_PODMAN_ROOTFS_TAR" $(sed 's#^/##' <<<"$libs") 2>"$tmp/tar.err" || { notok "stand-in base" "$(cat "$tmp/tar.err")"; exit 0; }

if out=$(mkdir -p "$tmp/no-plugins"; podman_host_setup "$host" "$tmp/no-plugins" 2>&1); then ok "podman with private storage, base imported"; else notok "podman with private storage, base imported" "$out"; exit 0; fi

# The build context as the repository root sends it: .dockerignore keeps only the copied binaries.
ctx="$tmp/context"
mkdir -p "$ctx/target/release" "$ctx/deploy"
for b in "${BINARIES[@]}"; do cp "$BIN/$b" "$ctx/target/release/$b"; done
cp "$ROOT/deploy/Containerfile" "$ctx/deploy/Containerfile"
cp "$ROOT/.dockerignore" "$ctx/.dockerignore"
image=localhost/cni-overlay:test
if out=$(podman_on "$host" build --pull=never --network none --from "$RP_PODMAN_IMAGE" \
          -f "$ctx/deploy/Containerfile" -t "$image" "$ctx" 2>&1); then
  ok "podman build -f deploy/Containerfile (FROM replaced by the stand-in base)"
else
  notok "podman build -f deploy/Containerfile (FROM replaced by the stand-in base)" "$out"; exit 0
fi
listing=$(podman_on "$host" run --rm --network none --entrypoint /opt/cni-overlay/overlayd "$image" --version 2>&1)
[ -n "$listing" ] && ok "the image's overlayd runs: $listing" || notok "the image's overlayd runs" "$listing"
entry=$(podman_on "$host" image inspect --format '{{json .Config.Entrypoint}}' "$image" 2>&1)
[ "$entry" = '["/opt/cni-overlay/overlayd"]' ] && ok "the image's entrypoint is overlayd" || notok "the image's entrypoint is overlayd" "$entry"

# The DaemonSet's containers: command, args and environment, from the manifests (PyYAML: Debian's
# python3-yaml, or the validator's venv is not available here).
if ! python3 -c 'import yaml' 2>/dev/null; then
  missing "the DaemonSet's containers run in the image" "python3 has no yaml module (python3-yaml)"; exit 0
fi
python3 - "$ROOT/deploy/kubernetes" "$tmp/pod" <<'PY'
import json, os, re, sys, yaml
k8s, out = sys.argv[1:3]
docs = []
for name in sorted(os.listdir(k8s)):
    if name.endswith(".yaml"):
        docs += [d for d in yaml.safe_load_all(open(os.path.join(k8s, name))) if d]
data = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
spec = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
pod_env = {"NODE_NAME": "worker-1.example"}
expand = lambda a: re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: pod_env.get(m.group(1), m.group(0)), a)
os.makedirs(out, exist_ok=True)
for role, c in (("init", spec["initContainers"][0]), ("agent", spec["containers"][0])):
    with open(os.path.join(out, role + ".argv"), "w") as f:
        f.write("\n".join(expand(a) for a in c["command"] + c.get("args", [])) + "\n")
    with open(os.path.join(out, role + ".env"), "w") as f:  # podman --env-file: KEY=VALUE, one a line
        env = dict(data, **pod_env)
        for k, v in env.items():
            f.write(f"{k}={json.dumps(json.loads(v)) if k == 'OVERLAYD_CNI_CONFLIST' else v}\n")
    with open(os.path.join(out, role + ".caps"), "w") as f:
        caps = c["securityContext"].get("capabilities", {})
        f.write(" ".join(["--cap-drop=" + d for d in caps.get("drop", [])] + ["--cap-add=" + a for a in caps.get("add", [])]))
PY
mapfile -t init_argv <"$tmp/pod/init.argv"
node="$tmp/node"
mkdir -p "$node/opt/cni/bin" "$node/etc/cni/net.d"
# shellcheck disable=SC2046 # the capability flags, one a word
if out=$(podman_on "$host" run --rm --network none --read-only --user 0:0 --security-opt no-new-privileges \
          $(cat "$tmp/pod/init.caps") --env-file "$tmp/pod/init.env" \
          -v "$node/opt/cni/bin:/opt/cni/bin" -v "$node/etc/cni/net.d:/etc/cni/net.d" \
          --entrypoint "${init_argv[0]}" "$image" "${init_argv[@]:1}" 2>&1); then
  ok "the init step runs in the image as the DaemonSet runs it (no capability, read-only root)"
else
  notok "the init step runs in the image as the DaemonSet runs it (no capability, read-only root)" "$out"
fi
installed_ok() {
  local p
  for p in "${PLUGINS[@]}"; do cmp "$BIN/$p" "$node/opt/cni/bin/$p" || return 1; done
  jq -e '.cniOverlayManaged == true and .plugins[0].node == "worker-1.example" and (.plugins[0].etcd.endpoints | length) > 0' \
    "$node/etc/cni/net.d/10-cni-overlay.conflist"
}
check_out=$(installed_ok 2>&1) && ok "the image's plugins and the conflist are on the node" \
  || notok "the image's plugins and the conflist are on the node" "$check_out $(ls -la "$node/opt/cni/bin" "$node/etc/cni/net.d" 2>&1)"
mapfile -t agent_argv <"$tmp/pod/agent.argv"
# shellcheck disable=SC2046
if out=$(podman_on "$host" run --rm --network none --read-only $(cat "$tmp/pod/agent.caps") --env-file "$tmp/pod/agent.env" \
          --entrypoint "${agent_argv[0]}" "$image" "${agent_argv[@]:1}" --help 2>&1); then
  ok "the image's overlayd accepts the DaemonSet's agent command line"
else
  notok "the image's overlayd accepts the DaemonSet's agent command line" "$out"
fi
exit 0
