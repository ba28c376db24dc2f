#!/bin/bash
# The bash completion of veerctl (conf/bash-completion/veerctl): sourced into
# this shell, registered for veerctl (complete -p), and called as bash calls
# it, with COMP_WORDS/COMP_CWORD, against a fake veerctl on PATH that prints
# what a running veer answers (show pools, show routes) and logs its
# arguments. Prints "N passed, N failed".
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/veerctl" <<'FAKE'
#!/bin/bash
echo "$*" >>"$FAKE_LOG"
[ -n "${FAKE_DOWN:-}" ] && { echo "veerctl: connect /run/veer/admin.sock: No such file or directory" >&2; exit 2; }
args=("$@")
[ "${args[0]}" = -s ] && args=("${args[@]:2}")
case "${args[*]}" in
"show pools")
    cat <<'T'
pool    backend  group    state  weight  share  active  conns  gen
api     blue-1   blue     READY  100     50     0       0      1
api     green-1  green    READY  100     50     0       0      1
static  cdn-1    default  READY  100     100    0       0      1

T
    ;;
"show routes")
    cat <<'T'
route   match                             pool    state    rps  err%  p99ms
assets  path_prefix=/assets header=X-A:1  static  serving  0    0.00  0.00
login   path=/login                       api     serving  0    0.00  0.00

T
    ;;
*) echo "ERR unknown command"; echo; exit 1 ;;
esac
FAKE
chmod +x "$tmp/veerctl"
export PATH="$tmp:$PATH" FAKE_LOG="$tmp/log"
: >"$FAKE_LOG"

# shellcheck source=../conf/bash-completion/veerctl
. "$here/../conf/bash-completion/veerctl"

pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect "WANTED REPLY" word...: the completion of the line's last word.
expect()
{
    local want=$1 got
    shift
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    _veerctl
    got="${COMPREPLY[*]}"
    if [ "$got" = "$want" ]; then ok; else bad "'$*' completes to '$got', wanted '$want'"; fi
}

reg=$(complete -p veerctl 2>&1)
if [ "$reg" = "complete -F _veerctl veerctl" ]; then ok; else bad "complete -p veerctl: $reg"; fi

expect "show set shift swap" veerctl s
expect "rollback rollout route" veerctl ro
expect "maintenance mirror" veerctl m
expect "-s -h --help" veerctl -
expect "pools pool" veerctl show po
expect "--json" veerctl show pools ""
expect "api static" veerctl show pool ""
expect "api/blue-1 api/green-1" veerctl set weight api
expect "static/cdn-1" veerctl drain s
expect "--wait --timeout --force" veerctl drain api/blue-1 --
expect "ready drain maint" veerctl set state api/blue-1 ""
expect "blue= green= --force" veerctl shift api ""
expect "green=" veerctl shift api g
# COMP_WORDBREAKS splits blue=90 into three words: still the next group.
expect "green=" veerctl shift api blue = 90 gr
expect "" veerctl shift api blue = 9
expect "cdn-1" veerctl del backend static ""
expect "blue-1 green-1" veerctl replace api ""
expect "route" veerctl rollback r
expect "assets login" veerctl rollback route ""
expect "login" veerctl route set l
expect "pool" veerctl route set login ""
expect "api static" veerctl route set login pool ""
expect "on off" veerctl route maintenance assets ""
expect "on off" veerctl maintenance ""
expect "api static --retry-after --hold" veerctl maintenance on ""
expect "start status pause resume abort" veerctl rollout ""
expect "canary=" veerctl rollout start api c
expect "shadow= shadow-percent=" veerctl rollout start api sh
expect "max-error-rate= max-p99= min-requests= max-diff-rate=" veerctl rollout start api m
expect "api static report" veerctl mirror ""
expect "api static" veerctl mirror report ""
expect "--json" veerctl mirror report api ""
expect "on off" veerctl mirror api ""
expect "group= percent=" veerctl mirror api on ""
# group=green is three words after COMP_WORDBREAKS: still the next key.
expect "percent=" veerctl mirror api on group = green p
expect "" veerctl mirror api off ""
# ADDR:PORT is split at ':' too; the words after it are still counted right.
expect "weight group" veerctl add backend api green-2 127.0.0.1 : 9003 ""
expect "blue green" veerctl add backend api green-2 127.0.0.1 : 9003 group ""
expect "verify" veerctl audit ""

# -s SOCKET on the line is passed to the lookups.
: >"$FAKE_LOG"
expect "api static" veerctl -s /tmp/other.sock show pool ""
if grep -qx -- "-s /tmp/other.sock show pools" "$FAKE_LOG"; then ok; else bad "lookup without -s: $(cat "$FAKE_LOG")"; fi
expect "show set shift swap" veerctl -s /tmp/other.sock s

# No instance: no names, no error, still the words.
export FAKE_DOWN=1
expect "" veerctl show pool ""
expect "route" veerctl rollback ""
unset FAKE_DOWN

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
