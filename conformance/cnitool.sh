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
      ifnames+=(eth1) ;;
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
    [ "$kind" = overlay+gwbridge ] && tamper=eth1
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

