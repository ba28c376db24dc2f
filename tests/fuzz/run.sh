#!/bin/bash
# Build veer's libFuzzer targets with clang (ASan + UBSan + libFuzzer) and run
# each for a bounded time on a copy of its seed corpus.
#
#   tests/fuzz/run.sh [BUILD_DIR]          (default: build-fuzz at the repo root)
#
# Environment:
#   FUZZ_SECONDS=30       run time per target
#   FUZZ_JOBS=N           targets run at once (default: the number of CPUs)
#   FUZZ_TARGETS="..."    subset of: request response chunked config cmd path traceparent
#                         dnsanswer
#   FUZZ_SKIP_KNOWN=0     1 = step over the veer bugs already reported (each
#                         is named where the target skips it), to measure how
#                         far fuzzing gets past them
#   CC=clang
#
# The targets are built by meson (-Dfuzz=true, clang, ASan + UBSan) in
# BUILD_DIR; besides memory safety they check the properties each target
# documents (framing kept by rewriting, same outcome whatever the read
# boundaries, RFC 9112 chunked decoding...).
#
# Exits 1 if any target crashes, leaks, times out on an input or fails to
# build; prints per target the executions per second and the coverage
# (cov: edges, ft: features) of libFuzzer's final stats, and for a failure
# the artifact and its base64.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/build-fuzz}"
seconds="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-request response chunked config cmd path traceparent dnsanswer}"
cc="${CC:-clang}"
skip_known=false
if [ "${FUZZ_SKIP_KNOWN:-0}" = 1 ]; then
    skip_known=true
fi

# Can this clang link a fuzzer at all?
mkdir -p "$out"
out="$(cd "$out" && pwd)"
probe="$out/probe"
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    >"$probe.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" 2>"$probe.log"; then
    cat "$probe.log" >&2
    echo "run.sh: $cc cannot link -fsanitize=fuzzer; on Debian:" \
        "apt-get install -y clang libclang-rt-14-dev" >&2
    exit 1
fi

opts=(-Dfuzz=true "-Dfuzz_skip_known=$skip_known" -Db_sanitize=address,undefined -Db_lundef=false
    -Dwerror=true)
if [ -f "$out/build.ninja" ]; then
    meson setup --reconfigure "$out" "$root" "${opts[@]}" >/dev/null
else
    CC="$cc" meson setup "$out" "$root" "${opts[@]}" >/dev/null
fi
names=()
for t in $targets; do
    names+=("fuzz_$t")
done
meson compile -C "$out" "${names[@]}" >"$out/build.log" 2>&1 || {
    tail -n 40 "$out/build.log" >&2
    exit 1
}
bin="$out/tests/fuzz"

declare -A max_len=([request]=8192 [response]=8192 [chunked]=8192 [config]=16384 [cmd]=4200 [path]=4096 [traceparent]=512
    [dnsanswer]=4096)
# libconfig leaks on most syntax errors (suppressed, see lsan.supp), and every
# input that leaks sends libFuzzer into a full LeakSanitizer pass: 250 execs/s
# instead of 4,500. So config fuzzes without leak checks, then every input of
# the corpus it grew is replayed once with them.
declare -A leaks_after=([config]=1)
failed=0
summary=()
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"

# One target: fuzz it, then print its result line (and a failure's details) to
# $out/fuzz_$t.out; exit 1 when it failed.
fuzz_one()
{
    local t=$1 corpus="$out/corpus/$1" artifacts="$out/artifacts/$1" log="$out/fuzz_$1.log"
    local rc=0 leaks=1 last cov ft runs eps line

    rm -rf "$corpus" "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    cp "$here/corpus/$t/"* "$corpus/"
    echo "== fuzz_$t: ${seconds}s on $(find "$corpus" -type f | wc -l) seed files"
    if [ -n "${leaks_after[$t]:-}" ]; then
        leaks=0
    fi
    "$bin/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len="${max_len[$t]}" -print_final_stats=1 -artifact_prefix="$artifacts/" \
        -detect_leaks="$leaks" "$corpus" >"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] && [ "$leaks" = 0 ]; then
        "$bin/fuzz_$t" -runs=0 -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
            -artifact_prefix="$artifacts/" "$corpus" >"$log.leaks" 2>&1 || rc=$?
        if [ "$rc" -ne 0 ]; then
            cat "$log.leaks" >>"$log"
        fi
    fi
    last="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    runs="$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n 1)"
    eps="$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log" | tail -n 1)"
    line="$(printf '%-16s execs/s %-8s runs %-10s cov %-6s ft %-6s' "fuzz_$t" "${eps:-?}" \
        "${runs:-?}" "${cov:-?}" "${ft:-?}")"
    if [ "$rc" -ne 0 ]; then
        line="$line FAILED (exit $rc)"
        echo "$line"
        grep -E 'ERROR|SUMMARY|fuzz_[a-z]+: |veer |RFC |forwarded|rewritten' "$log" | head -n 20 || true
        for a in "$artifacts"/*; do
            [ -f "$a" ] || continue
            echo "   artifact: $a"
            echo "   base64:   $(base64 -w0 "$a")"
            echo "   replay:   $bin/fuzz_$t $a"
        done
        echo "   log: $log"
        echo "$line" >"$out/fuzz_$t.line"
        return 1
    fi
    echo "$line"
    echo "$line" >"$out/fuzz_$t.line"
}

# The targets, FUZZ_JOBS at a time (default: the number of CPUs): each is one
# libFuzzer process on one core, so on a 2-core machine the run takes half as
# long and every target still gets its FUZZ_SECONDS.
jobs="${FUZZ_JOBS:-$(nproc)}"
running=0
for t in $targets; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
    fuzz_one "$t" >"$out/fuzz_$t.out" 2>&1 &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
for t in $targets; do
    cat "$out/fuzz_$t.out"
    summary+=("$(cat "$out/fuzz_$t.line" 2>/dev/null || echo "fuzz_$t: no result")")
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
