#!/bin/bash
# One integration suite with veer under valgrind (memcheck): any invalid
# access, use of uninitialised memory or definite leak fails the run.
#   tests/valgrind.sh [BUILD_DIR] [SUITE]     (defaults: build, keepalive)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
suite="${2:-keepalive}"
tmp="$(mktemp -d /tmp/veer-valgrind.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/veer" <<WRAP
#!/bin/sh
exec valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \\
    --show-leak-kinds=definite --track-origins=yes --log-file="$tmp/vg.%p.log" \\
    "$build/veer" "\$@"
WRAP
chmod +x "$tmp/veer"
cd "$root/tests/integration"
rc=0
VEER_BIN="$tmp/veer" VEERCTL_BIN="$build/veerctl" VEER_TEST_DEADLINE=60 PYTHONDONTWRITEBYTECODE=1 \
    python3 -m unittest "test_$suite" || rc=$?
for f in "$tmp"/vg.*.log; do
    [ -s "$f" ] || continue
    echo "== valgrind report $f"
    cat "$f"
    rc=1
done
if [ "$rc" -eq 0 ]; then
    echo "valgrind: test_$suite clean"
fi
exit "$rc"
