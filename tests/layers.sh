#!/bin/bash
# The source tree's floors (README "Design"): print the folder-level include
# graph of proxy/ and modules/, and fail on an edge the layering forbids.
#   core    may include core
#   data    may include core, data
#   control may include core, data, control
#   admin   may include core, data, control, admin
#   no file includes another folder's internal header (*-i.h)
#   modules include module.h and routing.h only
#   main.c and veerctl.c (wiring) include anything public
# The build enforces most of this already (each layer compiles with only its
# allowed include directories); this script also names the edge and covers
# the two rules include directories cannot express.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A rank=([core]=0 [data]=1 [control]=2 [admin]=3)
declare -A home # header -> folder
for d in core data control admin; do
    for h in proxy/$d/*.h; do
        home[$(basename "$h")]=$d
    done
done

declare -A edges
bad=0
check_file()
{
    local f=$1 from=$2
    local inc to
    while read -r inc; do
        to=${home[$inc]:-}
        [ -n "$to" ] || continue # a system or third-party header, or one of its own folder's
        edges["$from -> $to"]=$((${edges["$from -> $to"]:-0} + 1))
        if [[ "$inc" == *-i.h && "$to" != "$from" ]]; then
            echo "layers: $f includes $inc, internal to proxy/$to/" >&2
            bad=1
        fi
        case $from in
        modules)
            if [ "$inc" != module.h ] && [ "$inc" != routing.h ]; then
                echo "layers: $f includes $inc (modules include module.h and routing.h only)" >&2
                bad=1
            fi
            ;;
        root) ;;
        *)
            if [ "${rank[$to]}" -gt "${rank[$from]}" ]; then
                echo "layers: $f includes $inc: $from may not include $to (upward)" >&2
                bad=1
            fi
            ;;
        esac
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
}

for d in core data control admin; do
    for f in proxy/$d/*.[ch]; do
        check_file "$f" "$d"
    done
done
for f in modules/*.c; do
    check_file "$f" modules
done
for f in proxy/*.c; do
    check_file "$f" root
done

echo "folder-level include graph (edge: number of #include lines):"
for e in "${!edges[@]}"; do
    echo "  $e: ${edges[$e]}"
done | sort
if [ "$bad" -ne 0 ]; then
    echo "layers: FAILED (see above)" >&2
    exit 1
fi
echo "layers: ok"
