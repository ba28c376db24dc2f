#!/bin/bash
# The veer demo: install what is missing, build, start two demo backends
# (blue-1 and green-1, each answering with its name), put veer in front of
# them with conf/demo.conf (weights 3:1), show the split, then shift traffic
# with veerctl (all to green, then back with a rollback), printing each
# acknowledgement and the new split, and print the status page's URL.
# Run from a terminal it then keeps serving on http://127.0.0.1:8080/ until
# Ctrl-C; otherwise (a pipe, CI, </dev/null) it stops veer and ends.
set -euo pipefail
cd "$(dirname "$0")"
tests/deps.sh
[ -d build ] || meson setup build >/dev/null
meson compile -C build >/dev/null

mkdir -p /tmp/veer-demo
# Children run in their own session: Ctrl-C reaches this script only, which
# then stops veer with exactly one SIGINT (a second one would abort it).
pids=()
veer=""
cleanup() {
    [ -n "$veer" ] && kill -INT "$veer" 2>/dev/null && wait "$veer" 2>/dev/null
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

setsid build/tests/backend/veer-backend --name blue-1 --listen 127.0.0.1:9001 >/dev/null &
pids+=($!)
setsid build/tests/backend/veer-backend --name green-1 --listen 127.0.0.1:9002 >/dev/null &
pids+=($!)
setsid build/veer -c conf/demo.conf &
veer=$!

for _ in $(seq 1 100); do
    curl -sf -o /dev/null http://127.0.0.1:8080/ 2>/dev/null && break
    sleep 0.05
done

sock=/tmp/veer-demo/admin.sock
# 20 requests over one keep-alive connection: one worker and its exact
# weighted rotation, so the split is the shares' to the request.
split() {
    curl -s $(for _ in $(seq 1 20); do printf "http://127.0.0.1:8080/ "; done) | sort | uniq -c
}
# One veerctl command, shown as typed, with its acknowledgement: "OK gen=N
# applied_us=T", T being how long veer took to apply it (microseconds).
ctl() {
    echo "\$ veerctl $*"
    build/veerctl -s "$sock" "$@" | sed '/^$/d'
    echo "   split now: $(build/veerctl -s "$sock" show pool api |
        sed -n 's/^group \(.*\) share \(.*\)/\1 \2%/p' | paste -sd ' ')"
}

echo
echo "== 20 requests through veer (blue-1 weight 3, green-1 weight 1: shares 75/25):"
split
echo
echo "== shift everything to green (one atomic change, no connection dropped):"
ctl shift api blue=0 green=100
echo "== 20 requests now:"
split
echo
echo "== and back to 3:1 (rollback restores the shares before the last change):"
ctl rollback api
echo "== 20 requests now:"
split
echo
echo "== the status page: http://127.0.0.1:9900/ (share bars, sparklines, backends;"
echo "   JSON at http://127.0.0.1:9900/status, Prometheus at /metrics)"
if [ -t 0 ]; then
    echo "== try: build/veerctl -s $sock shift api blue=50 green=50   (and watch the page)"
    echo "== veer is serving on http://127.0.0.1:8080/ (try: curl -i http://127.0.0.1:8080/)"
    echo "== Ctrl-C stops it cleanly."
    wait "$veer" || true
    veer=""
fi
