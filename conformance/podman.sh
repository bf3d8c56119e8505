# podman 4.3 (CNI backend) on hosts 1 and 2, network demo: sourced by conformance/run.sh.

PODMAN_V=$(podman --version | awk '{print $3}')
RT_PODMAN="podman-$PODMAN_V"
H1=$(lab ns 1) H2=$(lab ns 2)
say "podman $PODMAN_V (CNI backend) on two hosts"
pnet=demo pvni=$((VBASE + 60)) psub=10.72.0.0/24
pod_ok=1
for h in 1 2; do
  hn=$(lab ns "$h")
  if podman_host_setup "$hn" "$CNI_BIN" >"$WORK/podman-setup-$h.log" 2>&1; then
    PODMAN_UP+=("$hn")
    conflist "$RP_PODMAN_BASE/$hn/net.d/$pnet.conflist" 1.0.0 "$pnet" "$(overlay_plugin "$pvni" "node$h" "$psub" "$WORK/podman-data-h$h")"
  else
    pod_ok=0
    fail "$RT_PODMAN" 1.0.0 ADD "podman host $h set up" "$(tail -5 "$WORK/podman-setup-$h.log")"
  fi
done
pod_ip() { podman_on "$1" inspect "$2" --format "{{(index .NetworkSettings.Networks \"$pnet\").IPAddress}}" 2>/dev/null; }
if [ "$pod_ok" = 1 ]; then
  out=$(podman_on "$H1" run -d --name test1 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  ip1=$(pod_ip "$H1" test1)
  verdict "$RT_PODMAN" 1.0.0 ADD "run test1 on node1: address from $psub" "$([[ $ip1 == 10.72.0.* ]] || echo "no address ($ip1): $out")"
  out=$(podman_on "$H2" run -d --name test1 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  rc=$?
  why=""
  [ "$rc" != 0 ] || why+="podman run succeeded;"
  grep -q "endpoint with name test1 already exists in network $pnet" <<<"$out" || why+="message missing: $out;"
  verdict "$RT_PODMAN" 1.0.0 ADD "run test1 on node2 is refused (name held on node1)" "$why"
  why=""
  holder=$(ectl get --print-value-only "/cni-overlay/ipam/$pnet/names/test1" 2>&1)
  grep -q '"node1"' <<<"$holder" || why+="name key not held by node1: $holder;"
  [ "$(keys_under "ipam/$pnet/owners/" | wc -l)" = 1 ] || why+="owners: $(keys_under "ipam/$pnet/owners/" | tr '\n' ' ');"
  [ "$(keys_under "endpoints/$pnet/" | wc -l)" = 1 ] || why+="endpoints: $(keys_under "endpoints/$pnet/" | tr '\n' ' ');"
  verdict "$RT_PODMAN" 1.0.0 ADD "the refused run left nothing in etcd" "$why"
  podman_on "$H2" rm -f -t 0 test1 >/dev/null 2>&1
  holder=$(ectl get --print-value-only "/cni-overlay/ipam/$pnet/names/test1" 2>&1)
  verdict "$RT_PODMAN" 1.0.0 DEL "rm of the refused test1 on node2 keeps node1's name" "$(grep -q '"node1"' <<<"$holder" || echo "name key now: $holder")"
  out=$(podman_on "$H2" run -d --name test2 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  ip2=$(pod_ip "$H2" test2)
  why=$([[ $ip2 == 10.72.0.* ]] || echo "no address ($ip2): $out")
  [ -n "$ip2" ] && [ "$ip2" = "$ip1" ] && why+="same address as test1;"
  verdict "$RT_PODMAN" 1.0.0 ADD "run test2 on node2: a different address from $psub" "$why"
  if [ -n "$ip1" ] && [ -n "$ip2" ]; then
    wait_for 10 podman_on "$H1" exec test1 ping -c1 -W2 "$ip2" && why="" || why="no reply from $ip2"
    verdict "$RT_PODMAN" 1.0.0 ADD "test1 (node1) pings test2 (node2)" "$why"
    wait_for 10 podman_on "$H2" exec test2 ping -c1 -W2 "$ip1" && why="" || why="no reply from $ip1"
    verdict "$RT_PODMAN" 1.0.0 ADD "test2 (node2) pings test1 (node1)" "$why"
  fi
  out=$(podman_on "$H1" rm -f -t 0 test1 2>&1); why=$([ $? = 0 ] || echo "node1: $out;")
  out=$(podman_on "$H2" rm -f -t 0 test2 2>&1); why+=$([ $? = 0 ] || echo "node2: $out;")
  verdict "$RT_PODMAN" 1.0.0 DEL "rm -f test1 and test2" "$why"
  podman_on "$H2" rm -f -t 0 test1 >/dev/null 2>&1
  out=$(podman_on "$H2" run -d --name test1 --network "$pnet" localhost/busybox sleep 1000 2>&1)
  ip3=$(pod_ip "$H2" test1)
  verdict "$RT_PODMAN" 1.0.0 ADD "once removed on node1, the name test1 is free on node2" "$([[ $ip3 == 10.72.0.* ]] || echo "no address ($ip3): $out")"
  out=$(podman_on "$H2" rm -f -t 0 test1 2>&1)
  verdict "$RT_PODMAN" 1.0.0 DEL "rm -f test1 on node2" "$([ $? = 0 ] || echo "$out")"
  why="$(left_etcd "$pnet" 1 1)"
  for h in 1 2; do lab run "$h" -- ip link show "$(lab name vxlan --vni "$pvni")" >/dev/null 2>&1 && why+="$(lab name vxlan --vni "$pvni") left on node$h;"; done
  verdict "$RT_PODMAN" 1.0.0 DEL "rm -f released addresses, names and endpoint records" "$why"
fi
for hn in "${PODMAN_UP[@]}"; do podman_host_teardown "$hn" >/dev/null 2>&1; done
PODMAN_UP=()
