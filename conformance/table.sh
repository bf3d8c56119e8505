#!/usr/bin/env bash
# Prints the conformance summaries as the README's markdown table: one row per runtime and spec version,
# one column per verb; a cell is "pass" when every check of it passed, "FAIL" when one failed, "n/a"
# when nothing applied. The summaries are TSVs written with CONFORMANCE_SUMMARY=FILE by
# conformance/run.sh (the runtimes), by `cargo test -p testutils --test conformance` (the plugins run
# directly: VERSION, GC, STATUS, bad input) and by `cargo test -p cri-conformance --test cri` (CRI, as
# the kubelet drives containerd); give all three.
#
# usage: conformance/table.sh SUMMARY.tsv...
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SUMMARY.tsv..." >&2; exit 2; }
for f in "$@"; do [ -r "$f" ] || { echo "$0: cannot read $f" >&2; exit 2; }; done
awk -F'\t' '
  FNR == 1 && $1 == "runtime" { next }
  NF < 5 { next }
  {
    row = $1 "\t" $2
    if (!(row in seen)) { seen[row] = 1; rows[++nrows] = row }
    if (!($3 in isverb)) { isverb[$3] = 1; verbs_seen[++nverbs] = $3 }
    k = row SUBSEP $3
    if ($5 == "FAIL") fail[k]++
    else if ($5 == "pass") ok[k]++
    checks[k]++
  }
  END {
    n = split("ADD CHECK DEL GC STATUS VERSION", order, " ")
    for (i = 1; i <= n; i++) if (order[i] in isverb) cols[++ncols] = order[i]
    for (i = 1; i <= nverbs; i++) {
      known = 0
      for (j = 1; j <= n; j++) if (order[j] == verbs_seen[i]) known = 1
      if (!known) cols[++ncols] = verbs_seen[i]
    }
    # Rows: cnitool, podman, containerd, CRI, plugin, bad-input, then anything else; versions
    # ascending, "invalid" last.
    for (r = 1; r <= nrows; r++) {
      split(rows[r], f, "\t")
      p = 9
      if (f[1] ~ /^cnitool/) p = 1
      else if (f[1] ~ /^podman/) p = 2
      else if (f[1] ~ /^containerd/) p = 3
      else if (f[1] ~ /^CRI/) p = 4
      else if (f[1] == "plugin") p = 5
      else if (f[1] == "bad-input") p = 6
      v = (f[2] ~ /^[0-9.]+$/) ? f[2] : "9" f[2]
      key[r] = p "\t" v "\t" r
    }
    for (i = 2; i <= nrows; i++) {
      for (j = i; j > 1 && key[j - 1] > key[j]; j--) {
        t = key[j]; key[j] = key[j - 1]; key[j - 1] = t
        t = rows[j]; rows[j] = rows[j - 1]; rows[j - 1] = t
      }
    }
    line = "| runtime | cniVersion |"; sep = "|---|---|"
    for (c = 1; c <= ncols; c++) { line = line " " cols[c] " |"; sep = sep "---|" }
    print line; print sep
    for (r = 1; r <= nrows; r++) {
      split(rows[r], f, "\t")
      line = "| " f[1] " | " f[2] " |"
      for (c = 1; c <= ncols; c++) {
        k = rows[r] SUBSEP cols[c]
        cell = "n/a"
        if (fail[k] > 0) cell = "FAIL"
        else if (ok[k] > 0) cell = "pass"
        line = line " " cell " |"
      }
      print line
    }
  }' "$@"
