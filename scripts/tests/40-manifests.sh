#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes/) and the image's Containerfile, offline:
# - every manifest validated, strictly (an unknown field is an error), against the OpenAPI schemas of
#   Kubernetes 1.29 and 1.37 bundled in kubernetes-validate (PyPI; pinned below, with its dependencies,
#   in a throwaway venv of Debian's python3 under this run's temporary directory);
# - what the schemas cannot say: Bidirectional propagation only in privileged containers (the API
#   server's rule), the capabilities, probes on 127.0.0.1:9393, the node name from the downward API,
#   tolerations, the optional Secret;
# - the ConfigMap's conflist: JSON, cniVersion 1.0.0 and cniVersions up to 1.1.0, hostAccess;
# - the DaemonSet's commands against the built overlayd: the init step run as is (with the ConfigMap's
#   environment, into temporary directories), the agent's flags and every OVERLAYD_* setting known;
# - the Containerfile: each file it copies is a binary the workspace builds, into the directory the
#   DaemonSet runs it from.
# Prints "ok - " / "not ok - " per check. Under CI=true a missing prerequisite (python3's venv, PyPI)
# is a failure; otherwise its checks are reported as skipped ("# skip", not counted as passed).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROFILE=${CNI_OVERLAY_PROFILE:-}
if [ -z "$PROFILE" ]; then
  for p in ci release; do [ -x "$ROOT/target/$p/overlayd" ] && { PROFILE=$p; break; }; done
fi
BIN="$ROOT/target/${PROFILE:-ci}"
K8S="$ROOT/deploy/kubernetes"
KUBE_VERSIONS=(1.29.0 1.37.0)
# kubernetes-validate and its dependency closure, pinned (pip install --no-deps: nothing else comes).
VALIDATOR=(kubernetes-validate==1.37.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
           rpds-py==2026.9.1 attrs==26.1.0 PyYAML==6.0.4 packaging==26.4 importlib_resources==7.1.0
           typing_extensions==4.16.0)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { echo "ok - manifests: $1"; }
notok() { echo "not ok - manifests: $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/# /'; return 0; }
check() { # NAME COMMAND...: ok when the command succeeds; its output shown otherwise
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$out"; fi
}
missing() { # NAME WHY: a prerequisite is missing
  if [ "${CI:-}" = true ]; then notok "$1" "missing prerequisite: $2"; else echo "# skip - manifests: $1: $2 (not counted as passed)"; fi
}

# The validator, in a venv of Debian's python3 (python3-venv in scripts/debian-packages.txt).
py=""
if /usr/bin/python3 -m venv "$tmp/venv" >"$tmp/venv.log" 2>&1; then
  if "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${VALIDATOR[@]}" >"$tmp/pip.log" 2>&1; then
    py="$tmp/venv/bin/python"
    ok "kubernetes-validate 1.37.0 installed in a throwaway venv"
  else
    missing "kubernetes-validate installed" "pip install failed: $(tail -3 "$tmp/pip.log" | tr '\n' ' ')"
  fi
else
  missing "kubernetes-validate installed" "python3 -m venv failed (apt-get install python3-venv): $(tail -1 "$tmp/venv.log")"
fi

files=("$K8S"/*.yaml)
if [ -n "$py" ]; then
  for v in "${KUBE_VERSIONS[@]}"; do
    for f in "${files[@]}"; do
      check "$(basename "$f") is valid against Kubernetes ${v%.0} (strict)" \
        "$tmp/venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$f"
    done
  done
  # The validator itself: strict mode refuses a field the API does not have (a misspelt hostNetwork).
  sed 's/^\(      \)hostNetwork: true$/&\n\1hostNetwrk: true/' "$K8S/30-daemonset.yaml" >"$tmp/misspelt.yaml"
  if grep -q hostNetwrk "$tmp/misspelt.yaml" && ! out=$("$tmp/venv/bin/kubernetes-validate" --strict --quiet -k "${KUBE_VERSIONS[-1]}" "$tmp/misspelt.yaml" 2>&1) \
     && grep -q "'hostNetwrk' was unexpected" <<<"$out"; then
    ok "the validator refuses an unknown field (a misspelt hostNetwork)"
  else
    notok "the validator refuses an unknown field (a misspelt hostNetwork)" "${out:-the mutation did not apply}"
  fi
else
  missing "schema validation" "no validator"
fi

# The checks on the manifests' content, in Python (PyYAML from the venv). Each prints its own line.
if [ -n "$py" ]; then
  if [ -x "$BIN/overlayd" ]; then
    "$py" - "$K8S" "$BIN" "$ROOT/deploy/Containerfile" "$tmp/node" <<'PY'
import json, os, re, subprocess, sys
import yaml

k8s, bindir, containerfile, node = sys.argv[1:5]
docs = []
for name in sorted(os.listdir(k8s)):
    if name.endswith(".yaml"):
        with open(os.path.join(k8s, name)) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)

def check(name, cond, detail=""):
    print(("ok - manifests: " if cond else "not ok - manifests: ") + name)
    if not cond and detail:
        for line in str(detail).splitlines():
            print("# " + line)

kinds = sorted(by_kind)
check("one Namespace, ConfigMap, ServiceAccount and DaemonSet", kinds == ["ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"], kinds)
ns = by_kind["Namespace"][0]
check("everything lives in the namespace cni-overlay",
      ns["metadata"]["name"] == "cni-overlay" and all(d["metadata"].get("namespace") == "cni-overlay" for d in docs if d["kind"] != "Namespace"))
check("the namespace allows privileged pods (Pod Security)",
      ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "privileged")

cm = by_kind["ConfigMap"][0]
data = cm["data"]
try:
    conflist = json.loads(data["OVERLAYD_CNI_CONFLIST"])
except Exception as e:
    conflist = None
    check("the ConfigMap's conflist is JSON", False, e)
if conflist is not None:
    check("the ConfigMap's conflist is JSON", True)
    check("the conflist says cniVersion 1.0.0 (libcni 1.1 in containerd 1.6/1.7 ignores cniVersions)", conflist.get("cniVersion") == "1.0.0", conflist.get("cniVersion"))
    check("the conflist offers cniVersions 1.0.0 and 1.1.0 (libcni >= 1.2 takes the highest)", conflist.get("cniVersions") == ["1.0.0", "1.1.0"], conflist.get("cniVersions"))
    first = conflist["plugins"][0]
    check("the conflist's first plugin is vxlan-overlay with hostAccess (probes reach pods)",
          first.get("type") == "vxlan-overlay" and first.get("hostAccess") is True, first)
    check("the conflist leaves node and etcd to install-cni (one place for the etcd settings)",
          all(k not in first and k not in first.get("ipam", {}) for k in ("node", "etcd")))
    check("the conflist's vni is below 4096 (never chosen by overlayctl network create)", 1 <= first.get("vni", 0) < 4096, first.get("vni"))

ds = by_kind["DaemonSet"][0]
spec = ds["spec"]["template"]["spec"]
inits, mains = spec.get("initContainers", []), spec["containers"]
check("hostNetwork", spec.get("hostNetwork") is True)
check("priorityClassName system-node-critical", spec.get("priorityClassName") == "system-node-critical")
check("tolerates every taint", {"operator": "Exists"} in spec.get("tolerations", []))
check("RollingUpdate", ds["spec"].get("updateStrategy", {}).get("type") == "RollingUpdate")
check("no service account token (overlayd never talks to the API server)",
      spec.get("automountServiceAccountToken") is False and by_kind["ServiceAccount"][0].get("automountServiceAccountToken") is False)

def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}

for c in inits + mains:
    env = env_of(c)
    check(f"{c['name']}: NODE_NAME from spec.nodeName",
          env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName")
    check(f"{c['name']}: etcd credentials from the optional Secret cni-overlay-etcd",
          all(env.get(k, {}).get("valueFrom", {}).get("secretKeyRef", {}).get("optional") is True
              and env[k]["valueFrom"]["secretKeyRef"]["name"] == "cni-overlay-etcd"
              for k in ("OVERLAYD_ETCD_USER", "OVERLAYD_ETCD_PASSWORD")))
    check(f"{c['name']}: settings from the ConfigMap",
          {"configMapRef": {"name": cm["metadata"]["name"]}} in c.get("envFrom", []))
    for m in c.get("volumeMounts", []):
        if m.get("mountPropagation") == "Bidirectional":
            check(f"{c['name']}: Bidirectional propagation only in a privileged container (API server rule)",
                  c.get("securityContext", {}).get("privileged") is True)

secret = [v for v in spec["volumes"] if "secret" in v]
check("the Secret volume is optional", len(secret) == 1 and secret[0]["secret"].get("secretName") == "cni-overlay-etcd" and secret[0]["secret"].get("optional") is True)

(init,) = inits
(agent,) = mains
sc = agent["securityContext"]
check("overlayd: not privileged, all capabilities dropped but NET_ADMIN, SYS_ADMIN, NET_BIND_SERVICE",
      sc.get("privileged") is False and sc["capabilities"]["drop"] == ["ALL"]
      and sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_BIND_SERVICE", "SYS_ADMIN"], sc)
check("install-cni: every capability dropped", init["securityContext"]["capabilities"] == {"drop": ["ALL"]})
netns = [m for m in agent["volumeMounts"] if m["mountPath"] == "/run/netns"]
vol = {v["name"]: v for v in spec["volumes"]}
check("overlayd sees the host's /run/netns with HostToContainer propagation",
      len(netns) == 1 and netns[0].get("mountPropagation") == "HostToContainer"
      and vol[netns[0]["name"]]["hostPath"]["path"] == "/run/netns")
for m in init["volumeMounts"]:
    hp = vol[m["name"]].get("hostPath")
    if hp:
        check(f"install-cni mounts the host's {hp['path']} at the same path (the conflist names host paths)", m["mountPath"] == hp["path"])
for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
    g = agent.get(kind, {}).get("httpGet", {})
    check(f"overlayd {kind}: GET {path} on 127.0.0.1:9393 (the node's loopback under hostNetwork)",
          g.get("host") == "127.0.0.1" and g.get("port") == 9393 and g.get("path") == path, g)

# The image: the Containerfile's copies and the DaemonSet's commands.
text = open(containerfile).read()
copies = []
for m in re.finditer(r"^COPY\s+(.+)$", text, re.M):
    parts = m.group(1).split()
    copies += [(src, parts[-1]) for src in parts[:-1]]
entry = re.search(r'^ENTRYPOINT\s+(\[.*\])', text, re.M)
image_files = {dest.rstrip("/") + "/" + os.path.basename(src) for src, dest in copies}
wanted = {"overlayd", "overlayctl", "vxlan-overlay", "etcd-ipam", "gwbridge-egress"}
check("the Containerfile copies the five release binaries into /opt/cni-overlay",
      {os.path.basename(s) for s, _ in copies} == wanted and all(s == "target/release/" + os.path.basename(s) and d == "/opt/cni-overlay/" for s, d in copies), copies)
missing = [os.path.basename(s) for s, _ in copies if not os.access(os.path.join(bindir, os.path.basename(s)), os.X_OK)]
check(f"every file the Containerfile copies is built by the workspace (found in {os.path.relpath(bindir)})", not missing, missing)
check("the Containerfile's ENTRYPOINT is overlayd", entry is not None and json.loads(entry.group(1)) == ["/opt/cni-overlay/overlayd"])
ignore = open(os.path.join(os.path.dirname(containerfile), "..", ".dockerignore")).read().split()
check("the build context (.dockerignore) holds exactly the copied files", all("!" + s in ignore for s, _ in copies) and "*" in ignore)
for c in (init, agent):
    check(f"{c['name']} runs a binary of the image: {c['command'][0]}", c["command"][0] in image_files, c["command"])

def in_image(path):  # the image's /opt/cni-overlay/X is the build's X
    return os.path.join(bindir, os.path.basename(path)) if path in image_files else path

def expand(arg, env):  # Kubernetes' $(VAR) expansion
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)

pod_env = {"NODE_NAME": "worker-1.example"}
def run_env(extra=None):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update(data)
    env.update(pod_env)
    env.update(extra or {})
    return env

# The init step exactly as the DaemonSet runs it, with the host's directories moved under a temporary root.
host = {"/opt/cni/bin": os.path.join(node, "opt/cni/bin"), "/etc/cni/net.d": os.path.join(node, "etc/cni/net.d")}
def relocate(arg):
    for path, moved in host.items():
        arg = arg.replace(path, moved)
    return arg
argv = [in_image(init["command"][0])] + [relocate(expand(a, pod_env)) for a in init["command"][1:] + init.get("args", [])]
# The plugins: the build's (the image holds them beside overlayd; --source-dir stands for that).
argv += ["--source-dir", bindir]
r = subprocess.run(argv, env=run_env(), capture_output=True, text=True)
check("the init step (overlayd install-cni, as in the DaemonSet, with the ConfigMap) succeeds", r.returncode == 0, r.stdout + r.stderr)
written = os.path.join(host["/etc/cni/net.d"], "10-cni-overlay.conflist")
if r.returncode == 0:
    c = json.load(open(written))
    check("the installed conflist carries the node name and the ConfigMap's etcd endpoints",
          c["plugins"][0].get("node") == "worker-1.example"
          and c["plugins"][0]["etcd"]["endpoints"] == data["OVERLAYD_ETCD"].split(","), c["plugins"][0])
    check("the installed plugins are the build's",
          all(open(os.path.join(host["/opt/cni/bin"], p), "rb").read() == open(os.path.join(bindir, p), "rb").read()
              for p in ("vxlan-overlay", "etcd-ipam", "gwbridge-egress")))

# The agent: its flags are overlayd's (clap stops at an unknown flag before it reaches --help).
argv = [in_image(agent["command"][0])] + [expand(a, pod_env) for a in agent.get("args", [])] + ["--help"]
r = subprocess.run(argv, env=run_env(), capture_output=True, text=True)
check("overlayd accepts the DaemonSet's flags: " + " ".join(agent.get("args", [])), r.returncode == 0, r.stdout + r.stderr)
helps = r.stdout + subprocess.run([in_image(init["command"][0]), "install-cni", "--help"], capture_output=True, text=True).stdout
known = set(re.findall(r"env:\s+(OVERLAYD_[A-Z_]+)", helps)) | {"OVERLAYD_CNI_CONFLIST"}
# The settings offered commented out in the ConfigMap count too.
commented = set()
for name in sorted(os.listdir(k8s)):
    if name.endswith(".yaml"):
        commented |= set(re.findall(r"^\s*#\s*(OVERLAYD_[A-Z_]+):", open(os.path.join(k8s, name)).read(), re.M))
settings = ({k for k in data if k.startswith("OVERLAYD_")} | commented
            | {e for c in (init, agent) for e in env_of(c) if e.startswith("OVERLAYD_")})
check("every OVERLAYD_* setting of the manifests, commented out or not, is one overlayd reads", settings <= known, sorted(settings - known))
PY
  else
    notok "the DaemonSet's commands against the built overlayd" "not built: $BIN/overlayd (cargo build --profile ci --workspace --bins)"
  fi
fi
exit 0
