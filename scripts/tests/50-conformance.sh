#!/usr/bin/env bash
# The black-box conformance suite (conformance/run.sh): cnitool (libcni 1.1.2) for cniVersion 0.3.1,
# 0.4.0 and 1.0.0, reference plugins chained after ours, containerd 1.6 and podman 4.3 on simulated
# hosts. Prints "ok - " / "not ok - " per check. (VERSION, GC/STATUS at 1.1.0 and bad input, the plugins
# run directly, are in cargo test: crates/testutils/tests/conformance.rs.)
# CONFORMANCE_SUMMARY=FILE is passed through (a TSV for conformance/table.sh).
set -uo pipefail
exec bash "$(cd "$(dirname "$0")/../.." && pwd)/conformance/run.sh"
