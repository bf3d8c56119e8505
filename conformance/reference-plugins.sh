# Debian's reference plugins (portmap, tuning, bandwidth) chained after ours, through cnitool: sourced
# by conformance/run.sh.

say "reference plugins chained after ours (portmap, tuning, bandwidth)"
TUNING='{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"0"}}'
BANDWIDTH='{"type":"bandwidth","ingressRate":8000000,"ingressBurst":80000,"egressRate":8000000,"egressBurst":80000}'
PORTMAP='{"type":"portmap","capabilities":{"portMappings":true},"snat":true}'
CAPS='{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}'
# The host's nft ruleset; with portmap in the chain, without the iptables-nft tables (portmap 1.1.1
# creates its CNI-HOSTPORT-* chains once and leaves them, by design).
nft_ours() { # WITH_PORTMAP(0|1)
  if [ "$1" = 1 ]; then
    lab run 1 -- nft -s list ruleset 2>/dev/null | awk '/^table / { skip = ($2 == "ip" || $2 == "ip6") && ($3 == "nat" || $3 == "filter" || $3 == "mangle" || $3 == "raw") } !skip'
  else
    lab run 1 -- nft -s list ruleset 2>/dev/null
  fi
}
chain_case() { # VERSION INDEX WITH_GW(0|1) WITH_PORTMAP(0|1)
  local v=$1 i=$2 gw=$3 pm=$4 plugins=() name tag net vni dir c netns cns before why hostveth
  tag="$([ "$gw" = 1 ] && echo "+gwbridge-egress")$([ "$pm" = 1 ] && echo "+portmap")+tuning+bandwidth"
  name="vxlan-overlay$tag"
  net="cf-chain$i" vni=$((VBASE + 50 + i)) dir="$WORK/netconf/chain$i"
  plugins=("$(overlay_plugin "$vni" node1 "10.50.$i.0/24" "$WORK/data-h1")")
  [ "$gw" = 1 ] && plugins+=("$(gw_plugin "cfgwc$i" "172.30.$i.0/24" "$WORK/data-h1")")
  [ "$pm" = 1 ] && plugins+=("$PORTMAP")
  plugins+=("$TUNING" "$BANDWIDTH")
  conflist "$dir/$net.conflist" "$v" "$net" "${plugins[@]}"
  container "chain$i"; netns=$CPATH cns=$CNS
  before=$(host_links 1)
  nft_before=$(nft_ours "$pm")
  cnt 1 "$dir" add "$net" "$netns" CAP_ARGS="$CAPS"
  verdict cnitool "$v" ADD "chain $name" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  if [ "$C_RC" = 0 ]; then
    # vxlan-overlay's host veth: its first host-side interface that is not its bridge.
    hostveth=$(jq -r --arg br "$(lab name bridge --vni "$vni")" \
      '[.interfaces[] | select((.sandbox // "") == "" and .name != $br)][0].name' <<<"$C_OUT")
    why=""
    grep -q tbf <<<"$(lab run 1 -- tc qdisc show dev "$hostveth" 2>/dev/null)" || why+="no tbf qdisc on host veth $hostveth (ingress shaping);"
    [ "$(ip netns exec "$cns" sysctl -n net.ipv4.conf.eth0.rp_filter 2>/dev/null)" = 0 ] || why+="tuning's sysctl not applied;"
    if [ "$pm" = 1 ]; then
      grep -q 'dport 18080' <<<"$(lab run 1 -- nft -s list ruleset 2>/dev/null)" || why+="no DNAT rule for host port 18080;"
    fi
    verdict cnitool "$v" ADD "chain $name: the chained plugins took effect" "$why"
  fi
  if [ "$v" = 0.3.1 ]; then
    na cnitool "$v" CHECK "chain $name" "CHECK exists from 0.4.0 on"
  else
    cnt 1 "$dir" check "$net" "$netns" CAP_ARGS="$CAPS"
    if [ "$C_RC" = 0 ]; then
      pass cnitool "$v" CHECK "chain $name"
    elif [ "$pm" = 1 ] && grep -q 'could not check ipv6 dnat' <<<"$C_ERR"; then
      na cnitool "$v" CHECK "chain $name" "known failure of Debian's portmap 1.1.1 on IPv4-only containers (upstream bug #819), not ours"
    else
      fail cnitool "$v" CHECK "chain $name" "exit $C_RC: $C_ERR"
    fi
  fi
  cnt 1 "$dir" del "$net" "$netns" CAP_ARGS="$CAPS"
  verdict cnitool "$v" DEL "chain $name" "$([ "$C_RC" = 0 ] || echo "exit $C_RC: $C_ERR")"
  why="$(left_etcd "$net" 1 1)$(left_links "$before" "$(host_links 1)")"
  [ "$nft_before" = "$(nft_ours "$pm")" ] || why+="nft ruleset changed: $(diff <(echo "$nft_before") <(nft_ours "$pm") | grep '^[<>]' | head -4 | tr '\n' ' ');"
  [ "$pm" = 1 ] && grep -q 'dport 18080' <<<"$(lab run 1 -- nft -s list ruleset 2>/dev/null)" && why+="portmap's DNAT rule left;"
  verdict cnitool "$v" DEL "chain $name: nothing left" "$why"
  ip netns del "$cns" 2>/dev/null
}
ci=0
for v in 0.4.0 1.0.0; do
  for gw in 0 1; do
    for pm in 0 1; do chain_case "$v" "$ci" "$gw" "$pm"; ci=$((ci + 1)); done
  done
done

