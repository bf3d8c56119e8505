# cnitool (conformance/cnitool, built against Debian's libcni 1.1.2) on the lab: sourced by
# conformance/run.sh. cniVersion 0.3.1, 0.4.0 and 1.0.0 x {overlay (vxlan-overlay + etcd-ipam), overlay +
# gwbridge-egress, overlay with host-local, the reference bridge with etcd-ipam}: ADD, CHECK, DEL, DEL
# again, results, leftovers; two hosts pinging each other through overlayd; concurrent ADDs on two hosts.

say "cnitool (libcni 1.1.2): the matrix"

KINDS=(overlay overlay+gwbridge overlay+host-local bridge+etcd-ipam)
VERSIONS=(0.3.1 0.4.0 1.0.0)
declare -A KIND_TAG=([overlay]=ov [overlay+gwbridge]=og [overlay+host-local]=oh [bridge+etcd-ipam]=br)

matrix_case() { # KIND_INDEX VERSION_INDEX
  local ki=$1 vi=$2 kind=${KINDS[$1]} v=${VERSIONS[$2]}
  local tag=${KIND_TAG[$kind]}
  local net="cf-$tag-v${v//./}" vni=$((VBASE + 10 + ki * 3 + vi)) subnet="10.$((10 + ki)).$vi.0/24"
  local data="$WORK/data-h1" dir="$WORK/netconf/$net" bridge="cfbr$vi" gwbr="cfgw$vi"
  local rt=cnitool c cns netns why before after r ifnames=(eth0) tolerated=() uses_ipam=1 uses_ov=1
  case $kind in
    overlay) conflist "$dir/$net.conflist" "$v" "$net" "$(overlay_plugin "$vni" node1 "$subnet" "$data")" ;;
    overlay+gwbridge)
      conflist "$dir/$net.conflist" "$v" "$net" "$(overlay_plugin "$vni" node1 "$subnet" "$data")" \
        "$(gw_plugin "$gwbr" "172.31.$vi.0/24" "$data")"
      ifnames+=(gwb0) ;;
    overlay+host-local) conflist "$dir/$net.conflist" "$v" "$net" "$(overlay_plugin "$vni" node1 "$subnet" "$data" host-local)"; uses_ipam=0 ;;
    bridge+etcd-ipam) conflist "$dir/$net.conflist" "$v" "$net" "$(bridge_plugin "$bridge" "$subnet" node1 "$data")"; tolerated+=("$bridge"); uses_ov=0 ;;
  esac
  local case="$kind"
  c="$tag-$vi"
  container "$c"; netns=$CPATH cns=$CNS
  before=$(host_links 1)
  nft_before=$(lab run 1 -- nft -s list ruleset 2>/dev/null)

  cnt 1 "$dir" add "$net" "$netns"
  if [ "$C_RC" != 0 ]; then
    fail "$rt" "$v" ADD "$case: validate + ADD" "cnitool add exit $C_RC: $C_ERR $C_OUT"
    cnt 1 "$dir" del "$net" "$netns"
    return
  fi
  pass "$rt" "$v" ADD "$case: validate + ADD"
  r=$C_OUT
  if ! jq -e 'type == "object"' <<<"$r" >/dev/null 2>&1; then
    fail "$rt" "$v" ADD "$case: result is JSON" "$r"
  else
    verdict "$rt" "$v" ADD "$case: result cniVersion $v" "$(res_version "$r" "$v")"
    verdict "$rt" "$v" ADD "$case: sandbox interfaces with sandbox and a MAC" "$(res_sandbox "$r" "$netns" "${ifnames[@]}")"
    verdict "$rt" "$v" ADD "$case: ips[].interface indexes valid" "$(res_indexes "$r")"
    if [[ $v == 0.* ]]; then
      verdict "$rt" "$v" ADD "$case: ips[].version present" "$(res_ipversion "$r" "$v")"
    else
      verdict "$rt" "$v" ADD "$case: ips[].version absent" "$(res_ipversion "$r" "$v")"
    fi
    verdict "$rt" "$v" ADD "$case: addresses applied in the container" "$(res_applied "$r" "$cns")"
  fi

  if [ "$v" = 0.3.1 ]; then
    na "$rt" "$v" CHECK "$case" "CHECK exists from 0.4.0 on; libcni refuses it"
  else
    cnt 1 "$dir" check "$net" "$netns"
    verdict "$rt" "$v" CHECK "$case" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
    # CHECK must notice an attachment that is not as ADD left it: our plugins' interface loses its address.
    local tamper=eth0
    [ "$kind" = overlay+gwbridge ] && tamper=gwb0
    if [ "$kind" != bridge+etcd-ipam ]; then
      ip -n "$cns" addr flush dev "$tamper"
      cnt 1 "$dir" check "$net" "$netns"
      verdict "$rt" "$v" CHECK "$case: fails once $tamper lost its address" "$([ "$C_RC" != 0 ] || echo "CHECK passed")"
    fi
  fi

  cnt 1 "$dir" del "$net" "$netns"
  verdict "$rt" "$v" DEL "$case" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  cnt 1 "$dir" del "$net" "$netns"
  verdict "$rt" "$v" DEL "$case: DEL twice" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"

  after=$(host_links 1)
  why="$(left_etcd "$net" "$uses_ipam" "$uses_ov")"
  [ "$uses_ipam" = 0 ] && why+="$(left_hostlocal "$data" "$net")"
  [ "$kind" = overlay+gwbridge ] && why+="$(left_hostlocal "$data" "$gwbr")"
  why+="$(left_links "$before" "$after" "${tolerated[@]}")"
  [ "$nft_before" = "$(lab run 1 -- nft -s list ruleset 2>/dev/null)" ] || why+="nft ruleset changed: $(diff <(echo "$nft_before") <(lab run 1 -- nft -s list ruleset 2>/dev/null) | grep '^[<>]' | head -4 | tr '\n' ' ');"
  [ "$uses_ov" = 1 ] && [ -n "$(sandbox_ns "$vni")" ] && why+="gateway sandbox $(sandbox_ns "$vni") left;"
  why+="$(ip -n "$cns" -o link show 2>/dev/null | grep -v ': lo:' | awk -F': ' '{print "container keeps " $2 ";"}')"
  verdict "$rt" "$v" DEL "$case: nothing left (etcd, links, sandbox, container)" "$why"

  # DEL once the namespace is gone (runtimes do that after a crash).
  cnt 1 "$dir" add "$net" "$netns"
  local add_rc=$C_RC
  ip netns del "$cns"
  cnt 1 "$dir" del "$net" "$netns"
  verdict "$rt" "$v" DEL "$case: DEL after the namespace is gone" "$([ "$add_rc" = 0 ] || echo "re-ADD failed;")$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  why="$(left_etcd "$net" "$uses_ipam" "$uses_ov")$(left_links "$before" "$(host_links 1)" "${tolerated[@]}")"
  verdict "$rt" "$v" DEL "$case: nothing left after DEL without the namespace" "$why"
  for t in "${tolerated[@]}"; do lab run 1 -- ip link del "$t" 2>/dev/null; done
}

for ki in "${!KINDS[@]}"; do
  for vi in "${!VERSIONS[@]}"; do matrix_case "$ki" "$vi"; done
done

# Cross-host: one container per host through cnitool, overlayd on both.
say "cnitool: cross-host ping (overlayd)"
xnet=cf-cross xvni=$((VBASE + 40))
for h in 1 2; do
  conflist "$WORK/netconf/x-node$h/$xnet.conflist" 1.0.0 "$xnet" "$(overlay_plugin "$xvni" "node$h" 10.40.0.0/24 "$WORK/data-h$h")"
done
container xa; xa=$CPATH; container xb; xb=$CPATH
cnt 1 "$WORK/netconf/x-node1" add "$xnet" "$xa"; ra=$C_OUT; rca=$C_RC; ea=$C_ERR
cnt 2 "$WORK/netconf/x-node2" add "$xnet" "$xb"; rb=$C_OUT; rcb=$C_RC; eb=$C_ERR
verdict cnitool 1.0.0 ADD "cross-host: container on node1" "$([ "$rca" = 0 ] || echo "exit $rca: $ea")"
verdict cnitool 1.0.0 ADD "cross-host: container on node2" "$([ "$rcb" = 0 ] || echo "exit $rcb: $eb")"
if [ "$rca" = 0 ] && [ "$rcb" = 0 ]; then
  ipa=$(jq -r '.ips[0].address' <<<"$ra" | cut -d/ -f1) ipb=$(jq -r '.ips[0].address' <<<"$rb" | cut -d/ -f1)
  [ "$ipa" != "$ipb" ] && why="" || why="both got $ipa"
  verdict cnitool 1.0.0 ADD "cross-host: distinct cluster-wide addresses ($ipa, $ipb)" "$why"
  wait_for 10 lab run xa -- ping -c1 -W1 "$ipb" && why="" || why="no reply from $ipb; $(lab run 1 -- bridge fdb show dev "$(lab name vxlan --vni "$xvni")" | oneline)"
  verdict cnitool 1.0.0 ADD "cross-host: node1 container pings node2 container" "$why"
  wait_for 10 lab run xb -- ping -c1 -W1 "$ipa" && why="" || why="no reply from $ipa; $(lab run 2 -- bridge fdb show dev "$(lab name vxlan --vni "$xvni")" | oneline)"
  verdict cnitool 1.0.0 ADD "cross-host: node2 container pings node1 container" "$why"
fi
xmac=$(jq -r '.interfaces[] | select(.name == "eth0" and (.sandbox // "") != "") | .mac' <<<"$rb" 2>/dev/null | tr 'A-F' 'a-f')
fdb_has() { grep -qi "^$2 dst " <<<"$(lab run "$1" -- bridge fdb show dev "$(lab name vxlan --vni "$xvni")" 2>/dev/null)"; }
neigh_has() { grep -q "^$2 " <<<"$(lab run "$1" -- ip neigh show dev "$(lab name vxlan --vni "$xvni")" 2>/dev/null)"; }
had=0
[ -n "$xmac" ] && fdb_has 1 "$xmac" && had=1
cnt 2 "$WORK/netconf/x-node2" del "$xnet" "$xb"; why=$([ "$C_RC" = 0 ] || echo "node2: $C_ERR")
if [ "$had" = 1 ]; then
  gone() { ! fdb_has 1 "$xmac" && ! neigh_has 1 "${ipb:-none}"; }
  wait_for 10 gone && w="" || w="node1 still has: $(lab run 1 -- bridge fdb show dev "$(lab name vxlan --vni "$xvni")" | grep -i "^$xmac dst") $(lab run 1 -- ip neigh show dev "$(lab name vxlan --vni "$xvni")" | grep "^${ipb:-none} ")"
  verdict cnitool 1.0.0 DEL "cross-host: overlayd on node1 drops the FDB and neighbour entries of node2's deleted container" "$w"
else
  fail cnitool 1.0.0 DEL "cross-host: overlayd on node1 drops the FDB and neighbour entries of node2's deleted container" "node1 had no FDB entry for $xmac to begin with"
fi
cnt 1 "$WORK/netconf/x-node1" del "$xnet" "$xa"; why+=$([ "$C_RC" = 0 ] || echo "node1: $C_ERR")
verdict cnitool 1.0.0 DEL "cross-host: both containers" "$why"
why="$(left_etcd "$xnet" 1 1)"
for h in 1 2; do lab run "$h" -- ip link show "$(lab name vxlan --vni "$xvni")" >/dev/null 2>&1 && why+="$(lab name vxlan --vni "$xvni") left on node$h;"; done
[ -n "$(sandbox_ns "$xvni")" ] && why+="sandboxes left: $(sandbox_ns "$xvni" | tr '\n' ' ')"
verdict cnitool 1.0.0 DEL "cross-host: nothing left on either host" "$why"

# Concurrent ADDs on two hosts: addresses and names are cluster-wide and atomic.
say "cnitool: concurrent ADDs on two hosts"
rnet=cf-race rvni=$((VBASE + 44))
for h in 1 2; do
  conflist "$WORK/netconf/race-node$h/$rnet.conflist" 1.0.0 "$rnet" "$(overlay_plugin "$rvni" "node$h" 10.44.0.0/24 "$WORK/data-race-h$h")"
done
race_add() { # INDEX HOST [CNI_ARGS]: cnitool add in the background; pid appended to RPIDS
  container "r$1"
  lab run "$2" -- env NETCONFPATH="$WORK/netconf/race-node$2" CNI_PATH="$CNI_BIN" CNI_CACHE_DIR="$WORK/cache-h$2" \
    CNI_ARGS="${3:-}" "$CNITOOL" add "$rnet" "$CPATH" >"$WORK/race-$1.out" 2>&1 &
  RPIDS+=($!)
}
race_del() { # INDEX HOST: prints a reason when DEL fails
  lab run "$2" -- env NETCONFPATH="$WORK/netconf/race-node$2" CNI_PATH="$CNI_BIN" CNI_CACHE_DIR="$WORK/cache-h$2" \
    "$CNITOOL" del "$rnet" "/run/netns/$(lab ns "r$1")" >"$WORK/race-del.out" 2>&1 || echo "DEL r$1: $(oneline <"$WORK/race-del.out");"
}
RPIDS=()
for i in 1 2 3 4 5 6 7 8; do race_add "$i" $((i % 2 + 1)); done
why="" addrs=""
for i in 1 2 3 4 5 6 7 8; do
  wait "${RPIDS[$((i - 1))]}" || why+="r$i failed: $(oneline <"$WORK/race-$i.out");"
  addrs+="$(jq -r '.ips[0].address' "$WORK/race-$i.out" 2>/dev/null)"$'\n'
done
verdict cnitool 1.0.0 ADD "concurrent: 8 parallel ADDs on two hosts succeed" "$why"
dups=$(sed '/^$/d' <<<"$addrs" | sort | uniq -d)
n=$(sed '/^$/d' <<<"$addrs" | sort -u | wc -l)
verdict cnitool 1.0.0 ADD "concurrent: 8 parallel ADDs got 8 distinct addresses" "$([ -z "$dups" ] && [ "$n" = 8 ] || echo "$n distinct; duplicates: $dups")"
RPIDS=()
race_add 9 2 'IgnoreUnknown=1;K8S_POD_NAME=racer'
race_add 10 1 'IgnoreUnknown=1;K8S_POD_NAME=Racer'
wait "${RPIDS[0]}"; r9=$?
wait "${RPIDS[1]}"; r10=$?
why=""
if [ "$r9" = 0 ] && [ "$r10" = 0 ]; then why="both won the name racer/Racer"
elif [ "$r9" != 0 ] && [ "$r10" != 0 ]; then why="both failed: $(oneline <"$WORK/race-9.out") | $(oneline <"$WORK/race-10.out")"
else
  loser=$([ "$r9" != 0 ] && echo 9 || echo 10)
  grep -qi "endpoint with name racer already exists in network $rnet" "$WORK/race-$loser.out" || why="loser's error: $(oneline <"$WORK/race-$loser.out")"
fi
verdict cnitool 1.0.0 ADD "concurrent: one name raced from two hosts (racer, Racer): exactly one wins" "$why"
owners=$(keys_under "ipam/$rnet/owners/" | wc -l)
eps=$(keys_under "endpoints/$rnet/" | wc -l)
verdict cnitool 1.0.0 ADD "concurrent: the loser left nothing (9 owners, 9 endpoint records)" "$([ "$owners" = 9 ] && [ "$eps" = 9 ] || echo "$owners owners, $eps endpoint records")"
why=""
for i in 1 2 3 4 5 6 7 8 9 10; do why+=$(race_del "$i" $((i % 2 + 1))); done
why+="$(left_etcd "$rnet" 1 1)"
for h in 1 2; do
  lab run "$h" -- ip link show "$(lab name vxlan --vni "$rvni")" >/dev/null 2>&1 &&
    why+="$(lab name vxlan --vni "$rvni") left on node$h (ports of $(lab name bridge --vni "$rvni"): $(lab run "$h" -- ip -o link show master "$(lab name bridge --vni "$rvni")" 2>&1 | awk -F': ' '{print $2}' | tr '\n' ' '));"
done
[ -n "$(sandbox_ns "$rvni")" ] && why+="sandboxes left: $(sandbox_ns "$rvni" | tr '\n' ' ')"
verdict cnitool 1.0.0 DEL "concurrent: DEL of all ten leaves nothing" "$why"


# One container on two networks, as a runtime sends them (CNI_IFNAME eth0, then eth1; cnitool takes the
# container id from the namespace path, so both are one container): the chains overlayd writes
# (vxlan-overlay without routes + gwbridge-egress), one gateway interface and one default route, each
# network's subnet on its own interface, DNS answers per network, nothing left after the last DEL.
say "cnitool: one container on two networks (eth0, eth1), overlayd's chains"
mfront=cf-front mback=cf-back mfvni=$((VBASE + 46)) mbvni=$((VBASE + 47)) mgw=cfgwm
for h in 1 2; do
  for n in front back; do
    vni=$([ $n = front ] && echo "$mfvni" || echo "$mbvni") sub=$([ $n = front ] && echo 10.46.0.0/24 || echo 10.47.0.0/24)
    conflist "$WORK/netconf/multi-node$h/cf-$n.conflist" 1.0.0 "cf-$n" "$(overlay_net_plugin "$vni" "node$h" "$sub" "$WORK/data-multi-h$h")" \
      "$(gw_plugin "$mgw" 172.29.0.0/24 "$WORK/data-multi-h$h")"
  done
done
mcnt() { # HOST VERB NET CONTAINER IFNAME NAME
  cnt "$1" "$WORK/netconf/multi-node$1" "$2" "$3" "/run/netns/$(lab ns "$4")" CNI_IFNAME="$5" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=$6"
}
mbefore=$(host_links 1) mnft_before=$(lab run 1 -- nft -s list ruleset 2>/dev/null)
container mweb; mweb_ns=$CNS; container mapi; container mdb
mcnt 1 add "$mfront" mweb eth0 mweb; rf=$C_OUT; why=$([ "$C_RC" = 0 ] || echo "front: $C_ERR;")
mcnt 1 add "$mback" mweb eth1 mweb; rb=$C_OUT; why+=$([ "$C_RC" = 0 ] || echo "back: $C_ERR;")
verdict cnitool 1.0.0 ADD "two networks: ADD of front (eth0) and back (eth1) for one container" "$why"
mcnt 2 add "$mfront" mapi eth0 mapi; why=$([ "$C_RC" = 0 ] || echo "mapi: $C_ERR;")
mcnt 2 add "$mback" mdb eth0 mdb; why+=$([ "$C_RC" = 0 ] || echo "mdb: $C_ERR;")
verdict cnitool 1.0.0 ADD "two networks: a container on front only and one on back only, on node2" "$why"
links=$(ip -n "$mweb_ns" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort | tr '\n' ' ')
verdict cnitool 1.0.0 ADD "two networks: the container has eth0, eth1 and one gwb0" "$([ "$links" = "eth0 eth1 gwb0 lo " ] || echo "interfaces: $links")"
gwaddr=$(jq -r '.interfaces as $i | .ips[] | select($i[.interface].name == "gwb0") | .address' <<<"$rf")
why=""
[ "$(jq -r '.interfaces as $i | .ips[] | select($i[.interface].name == "gwb0") | .address' <<<"$rb")" = "$gwaddr" ] || why+="back's result lists another gwb0 address than front's ($gwaddr): $(jq -c .ips <<<"$rb");"
why+="$(res_sandbox "$rb" "/run/netns/$mweb_ns" eth1 gwb0)"
n=$(ls "$WORK/data-multi-h1/$mgw" 2>/dev/null | grep -c '^172\.')
[ "$n" = 1 ] || why+="$n gateway-bridge allocations;"
verdict cnitool 1.0.0 ADD "two networks: one gateway address, in both results" "$why"
why=""
defaults=$(ip -n "$mweb_ns" -4 route show default | awk '{print $1, $2, $3, $4, $5}')
[ "$defaults" = "default via 172.29.0.1 dev gwb0" ] || why+="default routes: $(echo "$defaults" | oneline);"
# (into a variable first: under pipefail, grep -q closing the pipe early can fail the pipeline)
routes=$(ip -n "$mweb_ns" -4 route)
grep -q '^10.46.0.0/24 dev eth0' <<<"$routes" || why+="no 10.46.0.0/24 on eth0;"
grep -q '^10.47.0.0/24 dev eth1' <<<"$routes" || why+="no 10.47.0.0/24 on eth1;"
verdict cnitool 1.0.0 ADD "two networks: one default route (via gwb0), each subnet on its own interface" "$why"
mcnt 1 check "$mfront" mweb eth0 mweb; why=$([ "$C_RC" = 0 ] || echo "front: $C_ERR;")
mcnt 1 check "$mback" mweb eth1 mweb; why+=$([ "$C_RC" = 0 ] || echo "back: $C_ERR;")
verdict cnitool 1.0.0 CHECK "two networks: CHECK of both" "$why"
# NAME's record in NET: its container id, interface and first address.
record_of() { ectl get --prefix --print-value-only "/cni-overlay/endpoints/$1/" | jq -r --arg n "$2" 'select(.name == $n) | "\(.containerId) \(.ifname) \(.ips[0])"'; }
ipapi=$(record_of "$mfront" mapi | awk '{print $3}' | cut -d/ -f1)
ipdb=$(record_of "$mback" mdb | awk '{print $3}' | cut -d/ -f1)
ipweb_back=$(jq -r '.ips[0].address' <<<"$rb" | cut -d/ -f1)
why=""
wait_for 10 lab run mweb -- ping -c1 -W1 "$ipapi" || why+="no reply from mapi ($ipapi);"
wait_for 10 lab run mweb -- ping -c1 -W1 "$ipdb" || why+="no reply from mdb ($ipdb);"
verdict cnitool 1.0.0 ADD "two networks: the container reaches front's and back's members on node2 by address" "$why"
lab run mapi -- ping -c1 -W1 "$ipdb" >/dev/null 2>&1 && w="mapi (front only) reaches mdb on back" || w=""
verdict cnitool 1.0.0 ADD "two networks: a container on front only does not reach back" "$w"
why=""
wait_for 5 eval 'dns_in mweb 10.46.0.1 mdb; [ "$DNS_ANSWERS" = "$ipdb" ]'
why+="$(dns_is mweb 10.46.0.1 mdb NOERROR "$ipdb")$(dns_is mweb 10.46.0.1 mapi NOERROR "$ipapi")"
why+="$(dns_is mweb 10.46.0.1 mdb.cf-back.overlay NOERROR "$ipdb")$(dns_is mweb 10.46.0.1 mapi.cf-front.overlay NOERROR "$ipapi")"
why+="$(dns_is mweb 10.47.0.1 mapi NOERROR "$ipapi")$(dns_is mweb 10.47.0.1 mweb NOERROR "$ipweb_back")"
verdict cnitool 1.0.0 ADD "two networks: DNS answers the names of both networks, bare and qualified, at either gateway" "$why"
why="$(dns_is mapi 10.46.0.1 mdb.cf-back.overlay NXDOMAIN)$(dns_is mdb 10.47.0.1 mapi.cf-front.overlay NXDOMAIN)"
dns_in mapi 10.46.0.1 mdb; [ -z "$DNS_ANSWERS" ] || why+="mapi resolves mdb: $DNS_ANSWERS;"
verdict cnitool 1.0.0 ADD "two networks: a container on one network sees none of the other's names" "$why"

mcnt 1 del "$mback" mweb eth1 mweb; why=$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR;")
ip -n "$mweb_ns" link show gwb0 >/dev/null 2>&1 || why+="gwb0 went with back;"
ip -n "$mweb_ns" link show eth1 >/dev/null 2>&1 && why+="eth1 stays;"
[ "$(ip -n "$mweb_ns" -4 route show default | awk '{print $1, $2, $3, $4, $5}')" = "default via 172.29.0.1 dev gwb0" ] || why+="default route: $(ip -n "$mweb_ns" -4 route show default | oneline);"
[ -z "$(record_of "$mback" mweb)" ] || why+="back keeps mweb's endpoint record;"
[ -n "$(record_of "$mfront" mweb)" ] || why+="front lost mweb's endpoint record;"
[ "$(keys_under "ipam/$mback/owners/" | wc -l)" = 1 ] || why+="back's owners: $(keys_under "ipam/$mback/owners/" | oneline);"
ectl get --print-value-only "/cni-overlay/ipam/$mback/names/mweb" | grep . >/dev/null && why+="back keeps the name mweb;"
ectl get --print-value-only "/cni-overlay/ipam/$mfront/names/mweb" | grep . >/dev/null || why+="front lost the name mweb;"
[ "$(ls "$WORK/data-multi-h1/$mgw" 2>/dev/null | grep -c '^172\.')" = 1 ] || why+="the gateway allocation went;"
verdict cnitool 1.0.0 DEL "two networks: DEL of back (eth1) keeps gwb0 and front, releases back's name and record" "$why"
why="$(dns_is mweb 10.46.0.1 mdb.cf-back.overlay NXDOMAIN)$(dns_is mweb 10.46.0.1 mapi NOERROR "$ipapi")"
verdict cnitool 1.0.0 DEL "two networks: after leaving back, the container no longer sees back's names" "$why"
mcnt 1 del "$mfront" mweb eth0 mweb; why=$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR;")
mcnt 2 del "$mfront" mapi eth0 mapi; why+=$([ "$C_RC" = 0 ] || echo "mapi: $C_ERR;")
mcnt 2 del "$mback" mdb eth0 mdb; why+=$([ "$C_RC" = 0 ] || echo "mdb: $C_ERR;")
why+="$(left_etcd "$mfront" 1 1)$(left_etcd "$mback" 1 1)$(left_hostlocal "$WORK/data-multi-h1" "$mgw")"
why+="$(left_links "$mbefore" "$(host_links 1)")"
[ "$mnft_before" = "$(lab run 1 -- nft -s list ruleset 2>/dev/null)" ] || why+="nft ruleset changed;"
why+="$(ip -n "$mweb_ns" -o link show 2>/dev/null | grep -v ': lo:' | awk -F': ' '{print "container keeps " $2 ";"}')"
[ -n "$(sandbox_ns "$mfvni")$(sandbox_ns "$mbvni")" ] && why+="sandboxes left: $(sandbox_ns "$mfvni") $(sandbox_ns "$mbvni");"
verdict cnitool 1.0.0 DEL "two networks: nothing left after the last DEL" "$why"
