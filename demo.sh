#!/bin/bash
# The veer demo: install what is missing, build, start two demo backends
# (blue-1 and green-1, each answering with its name), put veer in front of
# them with conf/demo.conf (weights 3:1), show the split, then keep serving
# on http://127.0.0.1:8080/ until Ctrl-C.
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

echo
echo "== 20 requests through veer (blue-1 weight 3, green-1 weight 1):"
# One keep-alive connection, so one worker and its exact weighted rotation.
curl -s $(for _ in $(seq 1 20); do printf "http://127.0.0.1:8080/ "; done) | sort | uniq -c
echo
echo "== veer is serving on http://127.0.0.1:8080/ (try: curl -i http://127.0.0.1:8080/)"
echo "== Ctrl-C stops it cleanly."
wait "$veer" || true
veer=""
