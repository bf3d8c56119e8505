#!/usr/bin/env bash
# The black-box conformance suite (conformance/run.sh): cnitool (libcni 1.1.2) for cniVersion 0.3.1,
# 0.4.0 and 1.0.0, GC/STATUS at 1.1.0, podman 4.3 and containerd 1.6 on simulated hosts, reference
# plugins chained after ours, and bad input. Prints "ok - " / "not ok - " per check.
# CONFORMANCE_SUMMARY=FILE is passed through (a TSV for conformance/table.sh).
set -uo pipefail
exec bash "$(cd "$(dirname "$0")/../.." && pwd)/conformance/run.sh"
