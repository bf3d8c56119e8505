# containerd 1.6: ctr run --cni --rm on host 3 (node3): sourced by conformance/run.sh.

CTR_V=$(containerd --version | awk '{print $3}' | sed 's/~.*//')
RT_CTR="containerd-$CTR_V"
H3=$(lab ns 3)
say "containerd $CTR_V (ctr run --cni --rm)"
cnet=cf-ctr cvni=$((VBASE + 70))
if containerd_host_start "$H3" "$CNI_BIN" >"$WORK/ctr-start.log" 2>&1; then
  CTR_UP=$H3
  cdir=$(containerd_host_dir "$H3")
  conflist "$cdir/net.d/10-$cnet.conflist" 1.0.0 "$cnet" "$(overlay_plugin "$cvni" node3 10.74.0.0/24 "$WORK/data-h3")"
  before=$(host_links 3)
  out=$(ctr_on "$H3" run --cni --rm localhost/busybox:latest cfc1 ip addr show eth0 2>&1)
  rc=$?
  verdict "$RT_CTR" 1.0.0 ADD "ctr run --cni: the task sees an address from 10.74.0.0/24" \
    "$([ "$rc" = 0 ] && grep -q 'inet 10\.74\.0\.' <<<"$out" || echo "exit $rc: $out")"
  why="$(left_etcd "$cnet" 1 1)$(left_links "$before" "$(host_links 3)")"
  [ -n "$(sandbox_ns "$cvni")" ] && why+="sandbox left: $(sandbox_ns "$cvni");"
  verdict "$RT_CTR" 1.0.0 DEL "ctr run --rm: allocation, endpoint record and devices released when the task ends" "$why"
  containerd_host_stop "$H3" >/dev/null 2>&1
  CTR_UP=""
else
  fail "$RT_CTR" 1.0.0 ADD "containerd started" "$(tail -5 "$WORK/ctr-start.log")"
fi

