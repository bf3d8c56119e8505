# Shared by conformance/run.sh and the runtime files it sources (cnitool.sh, reference-plugins.sh,
# containerd.sh, podman.sh): reporting, the lab's tools, conflists, result and leftover checks.
# Source after scripts/lib/common.sh, with WORK, CNI_BIN, CNITOOL and E (an etcd endpoint) set.

# ---------------------------------------------------------------------------------------------
# Reporting: "ok - RUNTIME VERSION VERB CASE", "not ok - ... : reason", "# n/a - ... (why)", a TSV row
# each (runtime, version, verb, case, result: pass|FAIL|n/a) in $SUMMARY.

PASSED=0
FAILED=0
SUMMARY=$WORK/summary.tsv
printf 'runtime\tversion\tverb\tcase\tresult\n' >"$SUMMARY"

oneline() { tr '\n\t' '  ' | sed 's/  */ /g; s/^ //; s/ $//' | cut -c1-400; }
pass() { # RT VER VERB CASE
  echo "ok - $1 $2 $3 $4"
  printf '%s\t%s\t%s\t%s\tpass\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
  PASSED=$((PASSED + 1))
}
fail() { # RT VER VERB CASE REASON
  echo "not ok - $1 $2 $3 $4 : $(printf '%s' "$5" | oneline)"
  printf '%s\t%s\t%s\t%s\tFAIL\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
  FAILED=$((FAILED + 1))
}
na() { # RT VER VERB CASE WHY
  echo "# n/a - $1 $2 $3 $4 ($5)"
  printf '%s\t%s\t%s\t%s\tn/a\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
}
# verdict RT VER VERB CASE REASON: pass when REASON is empty.
verdict() { if [ -z "$5" ]; then pass "$1" "$2" "$3" "$4"; else fail "$@"; fi; }

finish() {
  [ -n "${CONFORMANCE_SUMMARY:-}" ] && cp "$SUMMARY" "$CONFORMANCE_SUMMARY"
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

# ---------------------------------------------------------------------------------------------
# The lab (scripts/lib/common.sh's `lab`)

# etcdctl against the lab's etcd, from host 1.
ectl() { lab run 1 -- etcdctl --endpoints "$E" "$@"; }
keys_under() { ectl get --prefix --keys-only "/cni-overlay/$1" 2>&1 | sed '/^$/d'; }

host_links() { lab run "$1" -- ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort; }
# sandbox_ns VNI: the gateway sandboxes of that VNI on the lab's nodes (names from the model).
sandbox_ns() {
  local h
  for h in 1 2 3; do
    lab name sandbox --vni "$1" --node "node$h"
  done | while read -r ns; do [ -e "/run/netns/$ns" ] && echo "$ns"; done
}

# container NAME: a container namespace of the lab; its path in $CPATH, its name in $CNS.
container() { CPATH=$(lab container "$1") && CNS=${CPATH#/run/netns/}; }

# cnt HOST NETCONFDIR VERB NET NETNS [VAR=VALUE...]: cnitool on a host. Sets C_RC, C_OUT, C_ERR.
cnt() {
  local h=$1 dir=$2 verb=$3 net=$4 netns=$5
  shift 5
  lab run "$h" -- env NETCONFPATH="$dir" CNI_PATH="$CNI_BIN" CNI_CACHE_DIR="$WORK/cache-h$h" "$@" \
    "$CNITOOL" "$verb" "$net" "$netns" >"$WORK/cnt.out" 2>"$WORK/cnt.err"
  C_RC=$?
  C_OUT=$(cat "$WORK/cnt.out")
  C_ERR=$(cat "$WORK/cnt.err")
}

wait_for() { # SECONDS COMMAND...: retries every 0.2 s
  local end=$((SECONDS + $1)); shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    ((SECONDS >= end)) && return 1
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# Conflists

overlay_plugin() { # VNI NODE SUBNET DATADIR [IPAM_TYPE]
  local ipam
  if [ "${5:-etcd-ipam}" = host-local ]; then
    ipam=$(jq -nc --arg s "$3" --arg d "$4" '{type: "host-local", subnet: $s, dataDir: $d, routes: [{dst: "0.0.0.0/0"}]}')
  else
    ipam=$(jq -nc --arg s "$3" --arg d "$4" '{type: "etcd-ipam", subnet: $s, dataDir: $d, routes: [{dst: "0.0.0.0/0"}]}')
  fi
  jq -nc --argjson vni "$1" --arg node "$2" --arg e "$E" --argjson ipam "$ipam" \
    '{type: "vxlan-overlay", vni: $vni, node: $node, etcd: {endpoints: [$e]}, ipam: $ipam}'
}
# VNI NODE SUBNET DATADIR: as overlayd writes it: etcd-ipam without routes (the container's way out is
# gwbridge-egress's interface), the container's name and aliases from the runtime.
overlay_net_plugin() {
  jq -nc --argjson vni "$1" --arg node "$2" --arg e "$E" --arg s "$3" --arg d "$4" \
    '{type: "vxlan-overlay", vni: $vni, node: $node, etcd: {endpoints: [$e]}, capabilities: {aliases: true},
      ipam: {type: "etcd-ipam", subnet: $s, dataDir: $d}}'
}
gw_plugin() { # BRIDGE SUBNET DATADIR
  jq -nc --arg b "$1" --arg s "$2" --arg d "$3" \
    '{type: "gwbridge-egress", bridge: $b, ipam: {type: "host-local", subnet: $s, dataDir: $d}}'
}
bridge_plugin() { # BRIDGE SUBNET NODE DATADIR
  jq -nc --arg b "$1" --arg s "$2" --arg n "$3" --arg e "$E" --arg d "$4" \
    '{type: "bridge", bridge: $b, isGateway: true, ipam: {type: "etcd-ipam", subnet: $s, node: $n, dataDir: $d, etcd: {endpoints: [$e]}}}'
}
# dns_in CONTAINER SERVER NAME [TYPE]: a DNS query asked in a lab container; the status (NOERROR, NXDOMAIN, ...,
# "NO ANSWER") in $DNS_STATUS, the answers' data in $DNS_ANSWERS (space-separated). Call it directly, not in $(...).
dns_in() {
  local out
  out=$(lab run "$1" -- dig +time=1 +tries=1 +nocmd +noquestion +nostats +noauthority +noadditional "@$2" "$3" "${4:-A}" 2>&1)
  DNS_STATUS=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out" | head -1)
  [ -n "$DNS_STATUS" ] || DNS_STATUS="NO ANSWER"
  DNS_ANSWERS=$(grep -v '^;' <<<"$out" | awk 'NF >= 5 { print $5 }' | tr '\n' ' ' | sed 's/ $//')
}
# dns_is CONTAINER SERVER NAME WANT_STATUS [WANT_ANSWERS]: a reason unless the query gets exactly that.
dns_is() {
  dns_in "$1" "$2" "$3"
  [ "$DNS_STATUS" = "$4" ] && [ "$DNS_ANSWERS" = "${5:-}" ] ||
    echo "$3 @$2 from $1: $DNS_STATUS [$DNS_ANSWERS], expected $4 [${5:-}];"
}
conflist() { # FILE VERSION NAME PLUGIN_JSON...
  local f=$1 v=$2 n=$3; shift 3
  mkdir -p "$(dirname "$f")"
  printf '%s\n' "$@" | jq -s --arg v "$v" --arg n "$n" '{cniVersion: $v, name: $n, plugins: .}' >"$f"
}

# ---------------------------------------------------------------------------------------------
# Result checks (cnitool prints the result the last plugin returned). Each prints a reason or nothing.

MAC_RE='^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$'
res_version() { # RESULT WANT
  local got; got=$(jq -r '.cniVersion' <<<"$1" 2>&1)
  [ "$got" = "$2" ] || echo "result cniVersion is $got, the config's is $2"
}
res_sandbox() { # RESULT NETNS IFNAMES...
  local r=$1 netns=$2 ifn; shift 2
  for ifn in "$@"; do
    jq -e --arg n "$ifn" --arg s "$netns" 'any(.interfaces[]?; .name == $n and .sandbox == $s)' <<<"$r" >/dev/null ||
      echo "no interface $ifn with sandbox $netns;"
  done
  jq -e --arg re "$MAC_RE" '[.interfaces[]? | select((.sandbox // "") != "")] | length > 0 and all(.[]; (.mac // "") | test($re))' <<<"$r" >/dev/null ||
    echo "a sandbox interface has no parsable mac: $(jq -c '[.interfaces[]? | select((.sandbox // "") != "") | {name, mac}]' <<<"$r")"
}
res_indexes() { # RESULT
  jq -e '(.interfaces | length) as $n | (.ips | length) > 0 and
         all(.ips[]; (.interface | type) == "number" and .interface >= 0 and .interface < $n)' <<<"$1" >/dev/null ||
    echo "ips[].interface out of range: $(jq -c '{n: (.interfaces | length), ips: [.ips[]? | .interface]}' <<<"$1")"
}
res_ipversion() { # RESULT VER
  if [[ $2 == 0.* ]]; then
    jq -e 'all(.ips[]; (.version == "4" and (.address | contains(".")))
                    or (.version == "6" and (.address | contains(":"))))' <<<"$1" >/dev/null ||
      echo "ips[].version missing or wrong for $2: $(jq -c '[.ips[] | {address, version}]' <<<"$1")"
  else
    jq -e 'all(.ips[]; has("version") | not)' <<<"$1" >/dev/null ||
      echo "ips[].version present in a $2 result"
  fi
}
res_applied() { # RESULT CONTAINER_NS: every address of a sandbox interface is on it
  local r=$1 c=$2 line ifn addr
  while read -r line; do
    [ -z "$line" ] && continue
    ifn=${line%% *} addr=${line#* }
    grep -q " $addr " <<<"$(ip -n "$c" -o addr show dev "$ifn" 2>/dev/null)" || echo "$addr is not on $ifn in the container;"
  done < <(jq -r '.interfaces as $i | .ips[] | select(($i[.interface].sandbox // "") != "") | "\($i[.interface].name) \(.address)"' <<<"$r")
}

# ---------------------------------------------------------------------------------------------
# Leftover checks after DEL. Each prints a reason or nothing.

left_etcd() { # NET USES_ETCD_IPAM(0|1) USES_OVERLAY(0|1)
  local k=""
  [ "$3" = 1 ] && k+=$(keys_under "endpoints/$1/")
  [ "$2" = 1 ] && k+=$(keys_under "ipam/$1/owners/")$(keys_under "ipam/$1/names/")$(keys_under "ipam/$1/ips/")
  [ -z "$k" ] || echo "etcd keys left: $(echo "$k" | tr '\n' ' ')"
}
left_hostlocal() { # DATADIR NET
  local f
  f=$(ls "$1/$2" 2>/dev/null | grep -vE '^(lock|last_reserved_ip\..*)$')
  [ -z "$f" ] || echo "host-local reservations left in $1/$2: $f"
}
left_links() { # BEFORE AFTER TOLERATED_NAME...
  local before=$1 after=$2 extra; shift 2
  extra=$(comm -13 <(echo "$before") <(echo "$after"))
  for t in "$@"; do extra=$(grep -vxF "$t" <<<"$extra"); done
  extra=$(sed '/^$/d' <<<"$extra")
  [ -z "$extra" ] || echo "links left in the host: $(echo "$extra" | tr '\n' ' ')"
}
