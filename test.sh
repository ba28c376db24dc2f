#!/bin/bash
# Run every test: unit suites (Check) and integration tests (the real veer
# against real backends over loopback). Installs what is missing first.
#   ./test.sh              normal build in build/
#   ./test.sh --sanitize   ASan+UBSan build in build-asan/, every timeout x3 (meson's and Check's)
set -euo pipefail
cd "$(dirname "$0")"
# python3-prometheus-client, prometheus (promtool) and chromium: the observability tests;
# openssl: the TLS tests (certificates, s_client); etcd-server: fleet mode;
# dnsmasq-base: the DNS server of the discovery tests
tests/deps.sh python3-prometheus-client prometheus chromium openssl etcd-server dnsmasq-base

dir=build
opts=(-Dwerror=true)
# Sanitized code runs 2-3x slower, and the unit and integration suites share the cores: scale
# meson's timeouts and Check's per-test timeouts by the same factor, so they keep agreeing.
timeout_mult=1
if [ "${1:-}" = "--sanitize" ]; then
    dir=build-asan
    timeout_mult=3
    opts+=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null
else
    meson setup "$dir" "${opts[@]}" >/dev/null
fi
meson compile -C "$dir"
export CK_TIMEOUT_MULTIPLIER=$timeout_mult
meson test -C "$dir" --print-errorlogs --num-processes 2 --timeout-multiplier "$timeout_mult"
