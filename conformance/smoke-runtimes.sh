#!/usr/bin/env bash
# Smoke test of the runtime harnesses with Debian's reference plugins
# (/usr/lib/cni bridge + host-local + portmap + tuning):
#   1. conformance/cnitool: add/check/del for cniVersion 0.3.1, 0.4.0, 1.0.0
#   2. podman 4.3 (CNI backend) simulated host   (scripts/lib/podman-host.sh)
#   3. containerd 1.6 + ctr simulated host        (scripts/lib/containerd-host.sh)
# Every plugin call is logged (env + stdin + stdout) to $WORK/*.log.
# Everything happens in rp-smoke-* network namespaces, removed on exit.
#
# usage: conformance/smoke-runtimes.sh [WORKDIR]    (root required)
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib=$here/../scripts/lib
WORK=${1:-$(mktemp -d /tmp/rp-smoke.XXXXXX)}
mkdir -p "$WORK"
export RP_PODMAN_BASE=$WORK/podman-hosts RP_CTR_BASE=$WORK/ctr-hosts
source "$lib/cni-logwrap.sh"
source "$lib/podman-host.sh"
source "$lib/containerd-host.sh"

fails=0
ok()   { echo "ok   - $*"; }
bad()  { echo "FAIL - $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@" >/dev/null; then ok "$what"; else bad "$what"; fi; }
calls() { grep -o 'plugin=[a-z-]* CNI_COMMAND=[A-Z]* rc=[0-9]*' "$1" | sed 's/plugin=//; s/CNI_COMMAND=//' | tr '\n' ',' ; echo; }

cleanup() {
    podman_host_teardown rp-smoke-pod >/dev/null 2>&1
    containerd_host_stop rp-smoke-ctr >/dev/null 2>&1
    for ns in rp-smoke-h rp-smoke-c1 rp-smoke-c2; do
        [[ -e /var/run/netns/$ns ]] && ip netns del "$ns"
    done
}
trap cleanup EXIT

conflist() { # NAME VERSION SUBNET DATADIR [noportmap]
    local portmap='
    {"type": "portmap", "capabilities": {"portMappings": true}},'
    [[ ${5:-} == noportmap ]] && portmap=
    cat <<EOF
{
  "cniVersion": "$2",
  "name": "$1",
  "plugins": [
    {"type": "bridge", "bridge": "rpbr0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": "$4", "ranges": [[{"subnet": "$3"}]], "routes": [{"dst": "0.0.0.0/0"}]}},$portmap
    {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "0"}}
  ]
}
EOF
}

cni_logwrap "$WORK/wrap" "$WORK/plugins.log" /usr/lib/cni bridge host-local portmap tuning || exit 1

echo "# 1. cnitool"
"$here/build-cnitool.sh" "$WORK/bin" >/dev/null || exit 1
ip netns add rp-smoke-h && ip netns add rp-smoke-c1 && ip netns add rp-smoke-c2 || exit 1
for v in 0.3.1 0.4.0 1.0.0; do
    mkdir -p "$WORK/netconf-$v"
    # no portmap here: Debian's portmap 1.1.1 fails CHECK on IPv4-only
    # containers ("could not check ipv6 dnat: chain CNI-DN-... not found")
    conflist smokenet "$v" 10.201.0.0/24 "$WORK/ipam-cnitool" noportmap >"$WORK/netconf-$v/10-smokenet.conflist"
    T=(ip netns exec rp-smoke-h env NETCONFPATH="$WORK/netconf-$v" CNI_PATH="$WORK/wrap:/usr/lib/cni"
       CNI_CACHE_DIR="$WORK/cnitool-cache"
       CAP_ARGS='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
       "$WORK/bin/cnitool")
    check "cnitool $v add c1" "${T[@]}" add smokenet /var/run/netns/rp-smoke-c1
    ip2=$("${T[@]}" add smokenet /var/run/netns/rp-smoke-c2 | jq -r '.ips[0].address' | cut -d/ -f1)
    check "cnitool $v add c2 ($ip2) + ping" ip netns exec rp-smoke-c1 ping -c1 -W2 "$ip2"
    if [[ $v == 0.3.1 ]]; then
        if "${T[@]}" check smokenet /var/run/netns/rp-smoke-c1 2>/dev/null; then
            bad "cnitool $v check should be refused (CHECK needs >= 0.4.0)"
        else
            ok "cnitool $v check refused (CHECK needs >= 0.4.0)"
        fi
    else
        check "cnitool $v check" "${T[@]}" check smokenet /var/run/netns/rp-smoke-c1
    fi
    check "cnitool $v del c1" "${T[@]}" del smokenet /var/run/netns/rp-smoke-c1
    check "cnitool $v del c2" "${T[@]}" del smokenet /var/run/netns/rp-smoke-c2
    check "cnitool $v del c2 again" "${T[@]}" del smokenet /var/run/netns/rp-smoke-c2
done
echo "  calls: $(calls "$WORK/plugins.log")"
mv "$WORK/plugins.log" "$WORK/cnitool-plugins.log"

echo "# 2. podman"
t0=$(date +%s.%N)
check "podman_host_setup" podman_host_setup rp-smoke-pod "$WORK/wrap:/usr/lib/cni"
pd=$RP_PODMAN_BASE/rp-smoke-pod
conflist smokenet 1.0.0 10.202.0.0/24 "$pd/ipam" >"$pd/net.d/smokenet.conflist"
t1=$(date +%s.%N)
check "podman run test1" podman_on rp-smoke-pod run -d --name test1 --network smokenet -p 8080:80 --network-alias web localhost/busybox sleep 1000
t2=$(date +%s.%N)
check "podman run test2" podman_on rp-smoke-pod run -d --name test2 --network smokenet localhost/busybox sleep 1000
ip2=$(podman_on rp-smoke-pod inspect test2 --format '{{(index .NetworkSettings.Networks "smokenet").IPAddress}}')
check "podman exec test1 ping test2 ($ip2)" podman_on rp-smoke-pod exec test1 ping -c1 -W2 "$ip2"
check "K8S_POD_NAME=test1 in CNI_ARGS" grep -q 'CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=test1$' "$WORK/plugins.log"
check "portMappings in runtimeConfig" grep -q '"runtimeConfig":{"portMappings":\[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}\]}' "$WORK/plugins.log"
cp "$WORK/plugins.log" "$WORK/podman-add.log"; : >"$WORK/plugins.log"
check "podman rm -f test1 test2" podman_on rp-smoke-pod rm -f -t 0 test1 test2
check "podman rm called DEL" grep -q 'CNI_COMMAND=DEL rc=0' "$WORK/plugins.log"
t3=$(date +%s.%N)
podman_host_teardown rp-smoke-pod
check "no podman mounts left" bash -c "! grep -q ' $pd/' /proc/mounts"
echo "  add calls: $(calls "$WORK/podman-add.log")"
echo "  del calls: $(calls "$WORK/plugins.log")"
printf '  timings: setup %.2fs, first run -d %.2fs, total %.2fs\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$(echo "$t3 - $t0" | bc)"
mv "$WORK/plugins.log" "$WORK/podman-del.log"

echo "# 3. containerd + ctr"
t0=$(date +%s.%N)
check "containerd_host_start" containerd_host_start rp-smoke-ctr "$WORK/wrap"
cd_=$(containerd_host_dir rp-smoke-ctr)
conflist smokenet 1.0.0 10.203.0.0/24 "$cd_/ipam" >"$cd_/net.d/10-smokenet.conflist"
t1=$(date +%s.%N)
out=$(ctr_on rp-smoke-ctr run --cni --rm localhost/busybox:latest c1 ip addr show eth0)
t2=$(date +%s.%N)
check "ctr run --cni got 10.203.0.x" grep -q 'inet 10.203.0.' <<<"$out"
check "ctr called ADD and DEL" bash -c "grep -q 'plugin=bridge CNI_COMMAND=ADD rc=0' '$WORK/plugins.log' && grep -q 'plugin=bridge CNI_COMMAND=DEL rc=0' '$WORK/plugins.log'"
check "ctr result cache was per host" bash -c "! ls /var/lib/cni/results 2>/dev/null | grep -q default-c1"
containerd_host_stop rp-smoke-ctr
t3=$(date +%s.%N)
check "containerd stopped, dir removed" test ! -e "$cd_"
echo "  calls: $(calls "$WORK/plugins.log")"
printf '  timings: start+import %.2fs, run --cni --rm %.2fs, total %.2fs\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$(echo "$t3 - $t0" | bc)"
mv "$WORK/plugins.log" "$WORK/ctr-plugins.log"

echo "logs in $WORK"
if ((fails)); then echo "$fails FAILURE(S)"; exit 1; fi
echo "all ok"
