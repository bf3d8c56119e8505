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

# A container on several networks (overlayd's chains: vxlan-overlay + etcd-ipam + gwbridge-egress): podman
# network connect / disconnect, run --network a --network b, rm; by address and by name across hosts; one
# gateway interface and one default route; each network's names and no other's; isolation between networks.
if [ "$pod_ok" = 1 ]; then
  say "podman: containers on two networks (connect, disconnect, run --network a --network b)"
  mf=pfront mb=pback
  for h in 1 2; do
    hn=$(lab ns "$h")
    for n in $mf $mb; do
      vni=$([ $n = $mf ] && echo $((VBASE + 62)) || echo $((VBASE + 63))) sub=$([ $n = $mf ] && echo 10.62.0.0/24 || echo 10.63.0.0/24)
      conflist "$RP_PODMAN_BASE/$hn/net.d/$n.conflist" 1.0.0 "$n" "$(overlay_net_plugin "$vni" "node$h" "$sub" "$WORK/podman-data-h$h")" \
        "$(gw_plugin cni_gwbridge 172.28.0.0/24 "$WORK/podman-data-h$h" | jq -c '. + {capabilities: {portMappings: true}}')"
    done
  done
  ip_on() { podman_on "$1" inspect "$2" --format "{{(index .NetworkSettings.Networks \"$3\").IPAddress}}" 2>/dev/null; }
  in_c() { local h=$1; shift; podman_on "$h" exec "$@"; }
  links_of() { in_c "$1" "$2" ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort | tr '\n' ' '; }
  defaults_of() { in_c "$1" "$2" ip -4 route show default | awk '{print $1, $2, $3, $4, $5}'; }
  # NAME's record in NET (container id, ifname, address).
  record_of() { ectl get --prefix --print-value-only "/cni-overlay/endpoints/$1/" | jq -r --arg n "$2" 'select(.name == $n) | "\(.containerId) \(.ifname) \(.ips[0])"'; }
  gw_veths() { host_links "$1" | grep -c '^gw'; }

  out=$(podman_on "$H1" run -d --name web --network "$mf" localhost/busybox sleep 1000 2>&1); why=$([ $? = 0 ] || echo "web: $out;")
  out=$(podman_on "$H2" run -d --name api --network "$mf" localhost/busybox sleep 1000 2>&1); why+=$([ $? = 0 ] || echo "api: $out;")
  out=$(podman_on "$H2" run -d --name db --network "$mb" localhost/busybox sleep 1000 2>&1); why+=$([ $? = 0 ] || echo "db: $out;")
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: web on $mf (node1), api on $mf and db on $mb (node2)" "$why"
  out=$(podman_on "$H1" network connect "$mb" web 2>&1)
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: podman network connect $mb web" "$([ $? = 0 ] || echo "$out")"
  why=""
  links=$(links_of "$H1" web)
  [ "$links" = "eth0 eth1 gwb0 lo " ] || why+="interfaces: $links;"
  defaults=$(defaults_of "$H1" web)
  [ "$defaults" = "default via 172.28.0.1 dev gwb0" ] || why+="default routes: $(echo "$defaults" | oneline);"
  [ "$(gw_veths 1)" = 1 ] || why+="$(gw_veths 1) gateway veths on node1;"
  [ "$(ls "$WORK/podman-data-h1/cni_gwbridge" 2>/dev/null | grep -c '^172\.')" = 1 ] || why+="gateway allocations: $(ls "$WORK/podman-data-h1/cni_gwbridge" | oneline);"
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: web has eth0, eth1 and one gwb0, one default route (via gwb0)" "$why"
  ipapi=$(ip_on "$H2" api "$mf") ipdb=$(ip_on "$H2" db "$mb") ipweb_b=$(ip_on "$H1" web "$mb")
  why=""
  [[ $ipweb_b == 10.63.0.* ]] || why+="web has no address on $mb ($ipweb_b);"
  wait_for 10 in_c "$H1" web ping -c1 -W2 "$ipapi" || why+="no reply from api ($ipapi);"
  wait_for 10 in_c "$H1" web ping -c1 -W2 "$ipdb" || why+="no reply from db ($ipdb);"
  wait_for 10 in_c "$H2" db ping -c1 -W2 "$ipweb_b" || why+="db gets no reply from web ($ipweb_b);"
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: web (node1) reaches api on $mf and db on $mb (node2) by address" "$why"
  why=""
  for name in api db "api.$mf.overlay" "db.$mb.overlay"; do
    in_c "$H1" web ping -c1 -W2 "$name" >/dev/null 2>&1 || why+="web cannot ping $name: $(in_c "$H1" web nslookup "$name" 2>&1 | oneline);"
  done
  in_c "$H2" db ping -c1 -W2 web >/dev/null 2>&1 || why+="db cannot ping web by name;"
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: web reaches api and db by name (bare and <name>.<network>.overlay) across hosts" "$why"
  why=""
  in_c "$H2" api ping -c1 -W1 "$ipdb" >/dev/null 2>&1 && why+="api ($mf only) reaches db ($mb);"
  in_c "$H2" api nslookup "db.$mb.overlay" >/dev/null 2>&1 && why+="api resolves db.$mb.overlay;"
  in_c "$H2" db nslookup "api.$mf.overlay" >/dev/null 2>&1 && why+="db resolves api.$mf.overlay;"
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: isolation: a container on one network neither reaches nor resolves the other's" "$why"

  # run with two networks and a published port (podman hands both networks the mapping).
  out=$(podman_on "$H2" run -d --name pub -p 8090:80 --network "$mf" --network "$mb" localhost/busybox \
    sh -c 'mkdir -p /www && echo hello-pub >/www/index.html && exec httpd -f -p 80 -h /www' 2>&1)
  why=$([ $? = 0 ] || echo "$out;")
  links=$(links_of "$H2" pub)
  [ "$links" = "eth0 eth1 gwb0 lo " ] || why+="interfaces: $links;"
  [ "$(defaults_of "$H2" pub)" = "default via 172.28.0.1 dev gwb0" ] || why+="default routes: $(defaults_of "$H2" pub | oneline);"
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: podman run --network $mf --network $mb -p 8090:80 on node2" "$why"
  why=""
  wait_for 10 lab run internet -- curl -sf -m 3 "http://$(lab addr 2):8090/" || why+="no answer on node2:8090;"
  wait_for 10 in_c "$H1" web ping -c1 -W2 "pub.$mb.overlay" || why+="web cannot ping pub.$mb.overlay;"
  verdict "$RT_PODMAN" 1.0.0 ADD "multi: pub's published port answers the internet; web reaches pub by name" "$why"
  out=$(podman_on "$H2" network disconnect "$mb" pub 2>&1); why=$([ $? = 0 ] || echo "$out;")
  # podman 4.3 names the interfaces of `run --network a --network b` in no fixed order (eth0 may be
  # either network's): what must stay is one eth<N> with $mf's address, and gwb0.
  links=$(links_of "$H2" pub)
  [[ $links =~ ^eth[01]\ gwb0\ lo\ $ ]] || why+="interfaces: $links;"
  in_c "$H2" pub ip -4 -o addr show | grep 'eth[01]' | grep '10\.62\.0\.' >/dev/null || why+="no $mf address left: $(in_c "$H2" pub ip -4 -o addr show | oneline);"
  wait_for 5 lab run internet -- curl -sf -m 3 "http://$(lab addr 2):8090/" || why+="node2:8090 stopped answering;"
  verdict "$RT_PODMAN" 1.0.0 DEL "multi: disconnect $mb pub keeps its gateway interface and published port" "$why"

  # disconnect releases exactly that network's address, name and endpoint record.
  webf=$(record_of "$mf" web)
  out=$(podman_on "$H1" network disconnect "$mb" web 2>&1); why=$([ $? = 0 ] || echo "$out;")
  [ "$(links_of "$H1" web)" = "eth0 gwb0 lo " ] || why+="interfaces: $(links_of "$H1" web);"
  [ "$(defaults_of "$H1" web)" = "default via 172.28.0.1 dev gwb0" ] || why+="default routes: $(defaults_of "$H1" web | oneline);"
  [ -z "$(record_of "$mb" web)" ] || why+="$mb keeps web's endpoint record;"
  [ "$(record_of "$mf" web)" = "$webf" ] || why+="$mf's record of web changed: $(record_of "$mf" web);"
  ectl get --print-value-only "/cni-overlay/ipam/$mb/names/web" | grep . >/dev/null && why+="$mb keeps the name web;"
  ectl get --print-value-only "/cni-overlay/ipam/$mf/names/web" | grep . >/dev/null || why+="$mf lost the name web;"
  keys_under "ipam/$mb/ips/" | grep "$(printf '%02x' ${ipweb_b//./ })" >/dev/null && why+="$mb keeps web's address $ipweb_b;"
  [ "$(keys_under "ipam/$mb/owners/" | wc -l)" = 1 ] || why+="$mb owners: $(keys_under "ipam/$mb/owners/" | oneline);"
  verdict "$RT_PODMAN" 1.0.0 DEL "multi: disconnect $mb web releases exactly $mb's address, name and endpoint record" "$why"
  why=""
  wait_for 10 in_c "$H1" web ping -c1 -W2 api || why+="web cannot ping api any more;"
  in_c "$H1" web ping -c1 -W1 "$ipdb" >/dev/null 2>&1 && why+="web still reaches db;"
  in_c "$H1" web nslookup "db.$mb.overlay" >/dev/null 2>&1 && why+="web still resolves db.$mb.overlay;"
  verdict "$RT_PODMAN" 1.0.0 DEL "multi: after disconnect web keeps $mf and has nothing of $mb" "$why"

  out=$(podman_on "$H1" rm -f -t 0 web 2>&1); why=$([ $? = 0 ] || echo "node1: $out;")
  out=$(podman_on "$H2" rm -f -t 0 api db pub 2>&1); why+=$([ $? = 0 ] || echo "node2: $out;")
  why+="$(left_etcd "$mf" 1 1)$(left_etcd "$mb" 1 1)"
  for h in 1 2; do
    [ "$(gw_veths "$h")" = 0 ] || why+="gateway veths left on node$h;"
    why+="$(left_hostlocal "$WORK/podman-data-h$h" cni_gwbridge)"
    for v in $((VBASE + 62)) $((VBASE + 63)); do
      lab run "$h" -- ip link show "$(lab name vxlan --vni "$v")" >/dev/null 2>&1 && why+="$(lab name vxlan --vni "$v") left on node$h;"
    done
  done
  verdict "$RT_PODMAN" 1.0.0 DEL "multi: rm -f releases every network's addresses, names, records and the gateway interface" "$why"
fi
for hn in "${PODMAN_UP[@]}"; do podman_host_teardown "$hn" >/dev/null 2>&1; done
PODMAN_UP=()
