#!/bin/sh
# The soak (tests/stress/soak.py) against the ASan + UBSan build: every kind of
# client at once while shifts, drains, reloads, add/del, maintenance holds and
# binary upgrades keep coming. Not part of `meson test`; minutes, bounded.
#
#   tests/stress/run.sh [--seconds N] [--no-hold] [--upgrade-every S] [--seed N] ...
#
# Sets up and builds build-asan/ when missing (or stale), then runs the soak;
# the arguments go to soak.py (--help lists them). Exit 0 when every request
# got exactly one well-formed answer and veer ended clean.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SOAK_BUILD:-$root/build-asan}
if [ ! -d "$build" ]; then
    meson setup "$build" "$root" -Dwerror=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debug
fi
meson compile -C "$build" veer:executable veerctl:executable >/dev/null
export VEER_BIN="$build/veer" VEERCTL_BIN="$build/veerctl"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export PYTHONDONTWRITEBYTECODE=1
exec python3 "$root/tests/stress/soak.py" "$@"
