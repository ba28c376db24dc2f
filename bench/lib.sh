# shellcheck shell=bash
# Shared helpers for the bench/ scripts: tools, temp dir, ports, process tracking and the
# configurations of the backend and the proxies under test. Source it; it defines functions and
# BENCH_* globals only, and starts nothing by itself.
#
# Every process started through bench_spawn is recorded and stopped by bench_cleanup, which the
# caller installs with bench_init (trap on EXIT; INT and TERM exit through it).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
BENCH_ROOT=$(cd "$BENCH_DIR/.." && pwd)
BENCH_PIDS=()
BENCH_TMP=""
BENCH_PID=""        # pid of the last process started by bench_spawn
BENCH_NOFILE=1024   # fd limit after bench_init raised it as far as allowed
BENCH_MAXCONN=256   # connection cap given to the proxies, from BENCH_NOFILE
BENCH_BODY="hello from the bench backend, 64 bytes of static body: 0123456"

bench_log()
{
    printf '%s\n' "$*" >&2
}

bench_die()
{
    bench_log "error: $*"
    exit 1
}

# Stop every process we started (TERM, then KILL after 5 s) and remove the temp dir, unless
# KEEP_TMP=1.
bench_cleanup()
{
    local pid deadline alive
    trap - EXIT INT TERM
    for pid in "${BENCH_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 5))
    for pid in "${BENCH_PIDS[@]}"; do
        alive=1
        while ((SECONDS < deadline)); do
            kill -0 "$pid" 2>/dev/null || { alive=0; break; }
            sleep 0.05
        done
        if ((alive)); then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    BENCH_PIDS=()
    if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" ]]; then
        if [[ "${KEEP_TMP:-0}" == 1 ]]; then
            bench_log "kept $BENCH_TMP"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
}

# Create the temp dir, install the cleanup traps, raise the fd limit.
bench_init()
{
    BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/veer-bench.XXXXXX")
    chmod 755 "$BENCH_TMP"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    BENCH_NOFILE=$(ulimit -n)
    if [[ "$BENCH_NOFILE" == unlimited ]] || ((BENCH_NOFILE > 65536)); then
        BENCH_NOFILE=65536
    fi
    # HAProxy needs about two fds per connection (client and server side).
    BENCH_MAXCONN=$(((BENCH_NOFILE - 500) / 2))
}

# Install haproxy, nginx-light, wrk, curl, python3 when their commands are missing. apt-get
# update runs only when a plain install fails.
bench_need_tools()
{
    local cmd pkgs=() want
    for want in haproxy:haproxy nginx:nginx-light wrk:wrk curl:curl python3:python3 pgrep:procps; do
        cmd=${want%%:*}
        command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" ]] || pkgs+=("${want#*:}")
    done
    ((${#pkgs[@]} == 0)) && return 0
    bench_log "installing: ${pkgs[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2; then
        apt-get update >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2 ||
            bench_die "cannot install ${pkgs[*]}"
    fi
    # The nginx package installs and starts a system service; the benches never use it.
}

bench_cmd()
{
    command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"
}

# Print a free loopback TCP port (the kernel's choice; bound, read, released).
bench_free_port()
{
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# bench_spawn NAME CMD...: run CMD in the background, output to $BENCH_TMP/NAME.log; sets
# BENCH_PID and records it for cleanup.
bench_spawn()
{
    local name=$1
    shift
    "$@" >"$BENCH_TMP/$name.log" 2>&1 &
    BENCH_PID=$!
    BENCH_PIDS+=("$BENCH_PID")
}

# bench_forget PID: drop PID from the processes bench_cleanup stops (it exited, or was handed
# to another owner).
bench_forget()
{
    local p keep=()
    for p in "${BENCH_PIDS[@]}"; do
        [[ "$p" == "$1" ]] || keep+=("$p")
    done
    BENCH_PIDS=("${keep[@]}")
}

# bench_fg OUT CMD...: run CMD to completion with its output in OUT, but in the background, so
# that INT and TERM reach our traps at once instead of after CMD ends. Returns CMD's status.
bench_fg()
{
    local out=$1 pid rc=0
    shift
    "$@" >"$out" 2>&1 &
    pid=$!
    BENCH_PIDS+=("$pid")
    wait "$pid" || rc=$?
    bench_forget "$pid"
    return "$rc"
}

# bench_stop PID: TERM it, wait up to 5 s, then KILL.
bench_stop()
{
    local pid=$1 deadline=$((SECONDS + 5))
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    bench_forget "$pid"
}

# bench_cpu_ticks PID: user + system CPU time that PID and its children (nginx's workers) have
# used so far, in clock ticks (BENCH_CLK_TCK per second); 0 when they are gone.
BENCH_CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
bench_cpu_ticks()
{
    local p
    # shellcheck disable=SC2046 # one PID per word
    for p in "$1" $(pgrep -P "$1"); do
        cat "/proc/$p/stat" 2>/dev/null || true
    done | sed 's/^.*) //' | awk '{ t += $12 + $13 } END { print t + 0 }'
}

# bench_wait_http URL PID [SECONDS]: wait until URL answers any HTTP response. Fails early when
# PID exits, and after SECONDS (default 5).
bench_wait_http()
{
    local url=$1 pid=$2 deadline=$((SECONDS + ${3:-5}))
    while ((SECONDS <= deadline)); do
        curl -s -o /dev/null --max-time 1 "$url" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# The proxy's last log lines, indented, for error reports.
bench_tail_log()
{
    [[ -f "$BENCH_TMP/$1.log" ]] && tail -n 5 "$BENCH_TMP/$1.log" | sed 's/^/    /' >&2
    return 0
}

# Common nginx preamble: everything under DIR, nothing under /etc/nginx or /var/lib/nginx.
nginx_preamble()
{
    local dir=$1 workers=$2
    if [[ $EUID -eq 0 ]]; then
        echo "user root;"
    fi
    cat <<EOF
worker_processes $workers;
worker_rlimit_nofile $BENCH_NOFILE;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $BENCH_MAXCONN; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
EOF
}

# bench_start_backend [NAME]: nginx, 1 worker, answering every request with BENCH_BODY (64 bytes)
# on an ephemeral loopback port. With BENCH_BACKEND_BIG_KIB > 0 it also serves a static file of
# that size at /static/big (for attacks that need a large response). /upload answers the same body
# only once it has read the whole request body (nginx proxies it to its own /, buffering the
# body first); / answers at once, without reading a body. Sets BACKEND_PORT and BACKEND_PID.
# NAME (default "backend") names its directory and log, so a second one can run beside it.
bench_start_backend()
{
    local name=${1:-backend} dir=$BENCH_TMP/${1:-backend}
    mkdir -p "$dir/static"
    BACKEND_PORT=$(bench_free_port)
    if ((${BENCH_BACKEND_BIG_KIB:-0} > 0)); then
        head -c "$((BENCH_BACKEND_BIG_KIB * 1024))" /dev/zero | tr '\0' x >"$dir/static/big"
    fi
    {
        nginx_preamble "$dir" 1
        cat <<EOF
    default_type text/plain;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / { return 200 "$BENCH_BODY"; }
        location /static/ { root $dir; }
        location /upload { proxy_pass http://127.0.0.1:$BACKEND_PORT/; }
    }
}
EOF
    } >"$dir/nginx.conf"
    bench_spawn "$name" "$(bench_cmd nginx)" -p "$dir" -c "$dir/nginx.conf"
    BACKEND_PID=$BENCH_PID
    bench_wait_http "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID" ||
        { bench_tail_log "$name"; bench_die "$name nginx did not start"; }
    [[ "$(curl -s "http://127.0.0.1:$BACKEND_PORT/")" == "$BENCH_BODY" ]] ||
        bench_die "$name nginx gives a wrong body"
}

# Knobs of the proxy configurations below; empty (the default) gives the configurations the
# throughput and idle_mem benches use.
#   BENCH_HAPROXY_GLOBAL    extra lines for HAProxy's global section
#   BENCH_HAPROXY_TIMEOUTS  replaces the timeout lines of HAProxy's defaults section
#   BENCH_HAPROXY_DEFAULTS  extra lines for HAProxy's defaults section (option splice-request...)
#   BENCH_NGINX_LOCATION    extra lines for the nginx proxy's location (client_max_body_size...)
#   BENCH_VEER_EXTRA        extra top-level settings for veer (limits, timeouts, ...)
#   BENCH_BACKEND_WEIGHT    a weight for the one backend entry, in every proxy (a reload that
#                           changes something)
BENCH_HAPROXY_GLOBAL=${BENCH_HAPROXY_GLOBAL:-}
BENCH_HAPROXY_TIMEOUTS=${BENCH_HAPROXY_TIMEOUTS:-}
BENCH_HAPROXY_DEFAULTS=${BENCH_HAPROXY_DEFAULTS:-}
BENCH_NGINX_LOCATION=${BENCH_NGINX_LOCATION:-}
BENCH_VEER_EXTRA=${BENCH_VEER_EXTRA:-}
BENCH_BACKEND_WEIGHT=${BENCH_BACKEND_WEIGHT:-}
BENCH_CMD=()        # command line of the last proxy configured by bench_proxy_config

# bench_haproxy_config NAME THREADS PORT BACKEND_PORT: writes $BENCH_TMP/NAME.cfg; sets BENCH_CMD.
bench_haproxy_config()
{
    local name=$1 threads=$2 port=$3 bport=$4 cfg=$BENCH_TMP/$1.cfg
    local timeouts=${BENCH_HAPROXY_TIMEOUTS:-"    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 10s
    timeout http-keep-alive 300s"}
    {
        cat <<EOF
global
    nbthread $threads
    maxconn $BENCH_MAXCONN
EOF
        [[ -z "$BENCH_HAPROXY_GLOBAL" ]] || printf '%s\n' "$BENCH_HAPROXY_GLOBAL"
        cat <<EOF

defaults
    mode http
    option http-keep-alive
    http-reuse always
    maxconn $BENCH_MAXCONN
$timeouts
EOF
        [[ -z "$BENCH_HAPROXY_DEFAULTS" ]] || printf '%s\n' "$BENCH_HAPROXY_DEFAULTS"
        cat <<EOF

frontend fe
    bind 127.0.0.1:$port
    default_backend be

backend be
    server b1 127.0.0.1:$bport${BENCH_BACKEND_WEIGHT:+ weight $BENCH_BACKEND_WEIGHT}
EOF
    } >"$cfg"
    BENCH_CMD=("$(bench_cmd haproxy)" -db -f "$cfg")
}

# bench_nginx_proxy_config NAME WORKERS PORT BACKEND_PORT: writes $BENCH_TMP/NAME/nginx.conf;
# sets BENCH_CMD.
bench_nginx_proxy_config()
{
    local name=$1 workers=$2 port=$3 bport=$4 dir=$BENCH_TMP/$1
    mkdir -p "$dir"
    {
        nginx_preamble "$dir" "$workers"
        cat <<EOF
    upstream backend {
        server 127.0.0.1:$bport${BENCH_BACKEND_WEIGHT:+ weight=$BENCH_BACKEND_WEIGHT};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
EOF
        [[ -z "$BENCH_NGINX_LOCATION" ]] || printf '%s\n' "$BENCH_NGINX_LOCATION"
        cat <<EOF
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    BENCH_CMD=("$(bench_cmd nginx)" -p "$dir" -c "$dir/nginx.conf")
}

# bench_veer_config NAME WORKERS PORT BACKEND_PORT: writes $BENCH_TMP/NAME/veer.conf (admin
# socket $BENCH_TMP/NAME/admin.sock); sets BENCH_CMD.
bench_veer_config()
{
    local name=$1 workers=$2 port=$3 bport=$4 dir=$BENCH_TMP/$1
    mkdir -p "$dir"
    {
        cat <<EOF
workers = $workers;
listen = ( { address = "127.0.0.1:$port"; pool = "bench"; } );
admin = { socket = "$dir/admin.sock"; };
pools = ( { name = "bench"; backends = ( { name = "b1"; address = "127.0.0.1:$bport";${BENCH_BACKEND_WEIGHT:+ weight = $BENCH_BACKEND_WEIGHT;} } ); } );
EOF
        [[ -z "$BENCH_VEER_EXTRA" ]] || printf '%s\n' "$BENCH_VEER_EXTRA"
    } >"$dir/veer.conf"
    BENCH_CMD=("$VEER_BIN" -c "$dir/veer.conf")
}

# bench_proxy_config KIND NAME WORKERS PORT BACKEND_PORT: dispatch on KIND (haproxy|nginx|veer).
bench_proxy_config()
{
    case $1 in
    haproxy) bench_haproxy_config "${@:2}" ;;
    nginx) bench_nginx_proxy_config "${@:2}" ;;
    veer) bench_veer_config "${@:2}" ;;
    *) bench_die "unknown proxy $1" ;;
    esac
}

# bench_start_haproxy NAME THREADS PORT BACKEND_PORT: sets BENCH_PID; fails if it does not come up.
bench_start_haproxy()
{
    bench_haproxy_config "$@"
    bench_spawn "$1" "${BENCH_CMD[@]}"
    bench_wait_http "http://127.0.0.1:$3/" "$BENCH_PID" || { bench_tail_log "$1"; return 1; }
}

# bench_start_nginx_proxy NAME WORKERS PORT BACKEND_PORT: sets BENCH_PID.
bench_start_nginx_proxy()
{
    bench_nginx_proxy_config "$@"
    bench_spawn "$1" "${BENCH_CMD[@]}"
    bench_wait_http "http://127.0.0.1:$3/" "$BENCH_PID" || { bench_tail_log "$1"; return 1; }
}

# bench_start_veer NAME WORKERS PORT BACKEND_PORT: sets BENCH_PID. Returns 2 when VEER_BIN
# does not exist, 1 when veer does not come up within 5 s.
bench_start_veer()
{
    [[ -x "$VEER_BIN" ]] || return 2
    bench_veer_config "$@"
    bench_spawn "$1" "${BENCH_CMD[@]}"
    bench_wait_http "http://127.0.0.1:$3/" "$BENCH_PID" || { bench_tail_log "$1"; return 1; }
}

# bench_start_proxy KIND NAME WORKERS PORT BACKEND_PORT: dispatch on KIND (haproxy|nginx|veer).
bench_start_proxy()
{
    case $1 in
    haproxy) bench_start_haproxy "${@:2}" ;;
    nginx) bench_start_nginx_proxy "${@:2}" ;;
    veer) bench_start_veer "${@:2}" ;;
    *) bench_die "unknown proxy $1" ;;
    esac
}

# One-line versions for the results.
bench_versions()
{
    local hv nv
    hv=$("$(bench_cmd haproxy)" -v 2>/dev/null | awk 'NR == 1 { print $3 }')
    nv=$("$(bench_cmd nginx)" -v 2>&1 | sed -n 's|^nginx version: nginx/||p')
    printf 'haproxy=%s nginx=%s wrk=%s\n' "$hv" "$nv" \
        "$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')"
}

# bench_routes_files NAME HOSTS PREFIXES PORT BACKEND_PORT: the route table and the traffic of
# bench/routes and bench/routes_cpu (issue 17), in $BENCH_TMP/NAME:
#   veer.conf     workers = 1, a listener on PORT without a pool, one pool "bench" (the backend)
#                 and HOSTS x PREFIXES routes to it, each matching host hNNNN.example.com and
#                 path_prefix /svcJ; NAME "a" gets one catch-all route instead (no match).
#   requests.tsv  HOSTS x PREFIXES requests "hNNNN.example.com<TAB>/svcJ/items/42", one per
#                 route, in a fixed shuffled order (the same order for the same HOSTS x PREFIXES)
#   traffic.lua   the same list as a wrk -s script (each wrk thread starts at a random place)
# Every host has four digits, so every request has the same size.
bench_routes_files()
{
    local name=$1 hosts=$2 prefixes=$3 port=$4 bport=$5 dir=$BENCH_TMP/$1
    mkdir -p "$dir"
    python3 - "$dir" "$name" "$hosts" "$prefixes" "$port" "$bport" <<'PY'
import random, sys

d, name, hosts, prefixes, port, bport = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
pairs = [(f"h{h:04d}.example.com", f"/svc{p}/items/42") for h in range(hosts) for p in range(prefixes)]
random.Random(17).shuffle(pairs)
with open(f"{d}/requests.tsv", "w") as f:
    f.writelines(f"{h}\t{p}\n" for h, p in pairs)
with open(f"{d}/traffic.lua", "w") as f:
    f.write("local list = {\n")
    f.writelines(f'  {{"{h}", "{p}"}},\n' for h, p in pairs)
    f.write("}\nlocal reqs = {}\nlocal i = 0\n"
            "function init(args)\n"
            "  for k, v in ipairs(list) do\n"
            '    reqs[k] = wrk.format("GET", v[2], { ["Host"] = v[1] })\n'
            "  end\n"
            "  -- each wrk thread starts at its own place in the list\n"
            "  i = math.random(#reqs) - 1\n"
            "end\n"
            "function request()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
with open(f"{d}/veer.conf", "w") as f:
    f.write(f'workers = 1;\nadmin = {{ socket = "{d}/admin.sock"; }};\n'
            f'pools = ( {{ name = "bench"; backends = ( {{ name = "b1"; address = "127.0.0.1:{bport}"; }} ); }} );\n')
    if name == "a":
        f.write(f'listen = ( {{ address = "127.0.0.1:{port}"; }} );\n'
                'routes = ( { name = "all"; pool = "bench"; } );\n')
    else:
        f.write(f'listen = ( {{ address = "127.0.0.1:{port}"; }} );\nroutes = (\n')
        f.write(",\n".join(f'  {{ name = "h{h:04d}-svc{p}"; pool = "bench"; match = {{ '
                           f'host = "h{h:04d}.example.com"; path_prefix = "/svc{p}"; }}; }}'
                           for h in range(hosts) for p in range(prefixes)))
        f.write("\n);\n")
PY
}
