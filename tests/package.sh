#!/bin/bash
# The Debian package, end to end: build it from debian/ (dpkg-buildpackage
# -us -uc -b, from Debian's packages only; DEB_BUILD_OPTIONS=nocheck since
# ./test.sh runs the tests), check it with lintian at the warning level,
# install it, run the service, send a request through it to a backend on the
# default configuration's backend address, reload it, rotate its access log
# with the package's logrotate rule (SIGUSR1), stop it, purge the package and
# check that nothing it installed or made is left.
#
# Under systemd (PID 1 running) the service is the packaged unit; otherwise
# (a chroot, a container) /usr/sbin/veer -c /etc/veer/veer.conf runs as the
# veer user, inside a network namespace of its own when unshare works, so the
# default configuration's fixed ports (8080, 8081) cannot meet anything else
# on this machine.
#
# Run as root, on a machine where installing and purging a package named veer
# is fine (CI's; a VM). Refuses when veer is installed already.
#   tests/package.sh           build, install, run, purge
#   tests/package.sh --keep    keep the work directory (the .deb, the logs)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

SOCK=/run/veer/admin.sock
BODY="hello from the packaged veer's backend"
checks=0

say() { echo "package: $*"; }
fail()
{
    echo "package: FAIL: $*" >&2
    for f in "${work:-/nonexistent}"/veer.log "${work:-/nonexistent}"/backend.log; do
        [ -s "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
    done
    exit 1
}
check() # DESCRIPTION COMMAND...: run COMMAND, fail with DESCRIPTION unless it succeeds
{
    local what=$1
    shift
    "$@" >/dev/null 2>&1 || fail "$what"
    checks=$((checks + 1))
}
# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND until it succeeds, within a deadline.
wait_for()
{
    local what=$1 end=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || fail "timed out waiting for $what"
        sleep 0.1
    done
    checks=$((checks + 1))
}
under_systemd() { [ -d /run/systemd/system ]; }
# What smoke() started, ended on a failure (by pid, nothing else).
started=()
end_started() { [ ${#started[@]} -eq 0 ] || kill "${started[@]}" 2>/dev/null || true; }

# ---- smoke: the installed package serves, reloads, rotates, stops -------

body_is() { [ "$(curl -fsS --max-time 5 "$1")" = "$BODY" ]; }
log_has_lines() { [ "$(grep -c . "$1" 2>/dev/null)" -ge "$2" ]; }
veer_answers() { veerctl -s "$SOCK" show pools; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# Bring up loopback in a fresh network namespace (no iproute2 needed).
lo_up()
{
    python3 - <<'EOF'
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))
EOF
}

smoke()
{
    local veer_pid="" backend_pid ok status
    # The default configuration's backend: 127.0.0.1:8081.
    mkdir -p "$work/www"
    printf '%s' "$BODY" >"$work/www/hello.txt"
    python3 -m http.server 8081 --bind 127.0.0.1 --directory "$work/www" >"$work/backend.log" 2>&1 &
    backend_pid=$!
    started+=("$backend_pid")
    wait_for "the backend on 127.0.0.1:8081" 20 curl -fsS --max-time 2 http://127.0.0.1:8081/hello.txt

    if under_systemd; then
        say "systemd: the packaged unit"
        wait_for "veer.service active" 30 systemctl is-active veer.service
        check "veer.service runs as user veer" \
            test "$(systemctl show -p User --value veer.service)" = veer
    else
        say "no systemd: /usr/sbin/veer -c /etc/veer/veer.conf as user veer"
        # What the unit's RuntimeDirectory= makes.
        install -d -o veer -g veer -m 0750 /run/veer
        setpriv --reuid=veer --regid=veer --init-groups \
            /usr/sbin/veer -c /etc/veer/veer.conf >"$work/veer.log" 2>&1 &
        veer_pid=$!
        started+=("$veer_pid")
    fi
    wait_for "veer's admin socket" 30 veer_answers
    check "admin socket $SOCK is 0660, group veer" test "$(stat -c '%a %G' "$SOCK")" = "660 veer"

    check "a request through veer (127.0.0.1:8080) reaches the backend" \
        body_is http://127.0.0.1:8080/hello.txt

    # Reload: the systemd way (SIGHUP) and the veerctl way.
    if under_systemd; then
        check "systemctl reload veer" systemctl reload veer.service
    fi
    ok=$(veerctl -s "$SOCK" reload) || fail "veerctl reload: $ok"
    check "veerctl reload answers OK" grep -q '^OK' <<<"$ok"
    check "a request after the reload" body_is http://127.0.0.1:8080/hello.txt
    check "the reload is in the audit log" grep -q '"reload' /var/lib/veer/audit.log
    check "veerctl audit verify" veerctl -s "$SOCK" audit verify
    check "the state file" test -s /var/lib/veer/state

    # logrotate with the package's rule: the old file moves away and veer,
    # told by SIGUSR1, writes the next request into a new one.
    wait_for "the access log's lines" 10 log_has_lines /var/log/veer/access.log 2
    logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/veer || fail "logrotate"
    check "logrotate moved the access log" log_has_lines /var/log/veer/access.log.1 2
    check "a request after the rotation" body_is http://127.0.0.1:8080/hello.txt
    wait_for "veer writing the reopened access log (SIGUSR1)" 10 \
        log_has_lines /var/log/veer/access.log 1

    # Stop: exit 0 (graceful).
    if under_systemd; then
        check "systemctl stop veer" systemctl stop veer.service
        check "veer.service stopped cleanly" \
            test "$(systemctl show -p Result --value veer.service)" = success
    else
        kill -TERM "$veer_pid"
        wait_for "veer to exit after SIGTERM" 40 gone "$veer_pid"
        status=0
        wait "$veer_pid" || status=$?
        check "veer exited 0 after SIGTERM (status $status)" test "$status" -eq 0
    fi
    kill "$backend_pid" 2>/dev/null || true
    wait "$backend_pid" 2>/dev/null || true
    started=()
}

if [ "${1:-}" = --smoke-in-netns ]; then # (the namespaces' side, see below)
    work=$2
    trap end_started EXIT
    lo_up || fail "bringing loopback up in the network namespace"
    smoke
    echo "$checks" >"$work/smoke.checks"
    exit 0
fi

# ---- build, install, run, purge -----------------------------------------

keep=false
[ "${1:-}" = --keep ] && keep=true
[ "$(id -u)" -eq 0 ] || { echo "package.sh: run as root: it installs and purges the package" >&2; exit 2; }
if dpkg-query -W -f='${Status}' veer 2>/dev/null | grep -q "ok installed"; then
    echo "package.sh: a veer package is installed here already; purge it first (apt-get purge veer)" >&2
    exit 2
fi
work=$(mktemp -d /tmp/veer-package.XXXXXX)
installed=false
cleanup()
{
    end_started
    # A failure after the install: take the package away again (CI's next run
    # on this machine starts clean), unless --keep asked to look at it.
    if $installed && ! $keep; then
        apt-get purge -y -qq veer >/dev/null 2>&1 || true
    fi
    if $keep; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

say "installing the build tools and build dependencies"
tests/deps.sh build-essential debhelper dpkg-dev fakeroot lintian logrotate scdoc curl
apt-get build-dep -y -qq ./ >/dev/null

# Build from a copy of the tree (the build writes debian/ and ..): no build
# directories, no .git.
version=$(dpkg-parsechangelog -S Version)
mkdir "$work/veer-$version"
tar -C "$src" --exclude=./.git --exclude=./build --exclude='./build-*' --exclude='./obj-*' \
    -cf - . | tar -C "$work/veer-$version" -xf -
say "dpkg-buildpackage -us -uc -b (nocheck)"
SECONDS=0
(cd "$work/veer-$version" &&
    DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -us -uc -b) \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; fail "dpkg-buildpackage"; }
say "built in ${SECONDS}s: $(cd "$work" && ls ./*.deb | tr '\n' ' ')"
deb=$(ls "$work"/veer_"${version}"_*.deb)

say "lintian (fails on warnings)"
rc=0
lintian --fail-on warning "$work"/veer_"${version}"_*.changes >"$work/lintian.log" 2>&1 || rc=$?
grep -v 'running with root privileges' "$work/lintian.log" || true
[ "$rc" -eq 0 ] || fail "lintian found warnings or errors (exit $rc)"

say "apt-get install $deb"
installed=true
apt-get install -y -qq "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "install"; }
dpkg -L veer >"$work/files"
for f in /usr/sbin/veer /usr/bin/veerctl /etc/veer/veer.conf /etc/logrotate.d/veer \
    /lib/systemd/system/veer.service /usr/share/bash-completion/completions/veerctl \
    /usr/share/man/man8/veer.8.gz /usr/share/man/man8/veerctl.8.gz \
    /usr/share/man/man5/veer.conf.5.gz /usr/share/doc/veer/examples/veer.conf; do
    check "the package installs $f" grep -qx "$f" "$work/files"
    check "$f is there" test -e "$f"
done
check "veer.conf and the logrotate rule are conffiles" \
    test "$(dpkg-query -W -f='${Conffiles}' veer | awk 'NF {print $1}' | sort | tr '\n' ' ')" = \
    "/etc/logrotate.d/veer /etc/veer/veer.conf "
check "veer -t -c /etc/veer/veer.conf" /usr/sbin/veer -t -c /etc/veer/veer.conf
check "the veer system user" getent passwd veer
check "the veer group" getent group veer
check "/var/lib/veer belongs to veer" test "$(stat -c '%U:%G %a' /var/lib/veer)" = "veer:veer 750"
check "/var/log/veer belongs to veer" test "$(stat -c '%U:%G %a' /var/log/veer)" = "veer:veer 750"
check "the completion registers for veerctl" \
    bash -c '. /usr/share/bash-completion/completions/veerctl && complete -p veerctl'
check "the unit reloads with SIGHUP" grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' \
    /lib/systemd/system/veer.service

# Without systemd: in namespaces of its own when possible: the network (the
# fixed ports) and the PIDs (logrotate's `pidof veer` sees this veer only, and
# whatever is left running ends with the namespace).
if under_systemd; then
    smoke
elif unshare --net --pid --fork --mount-proc true 2>/dev/null; then
    unshare --net --pid --fork --mount-proc "$src/tests/package.sh" --smoke-in-netns "$work"
    checks=$((checks + $(cat "$work/smoke.checks")))
elif unshare --net true 2>/dev/null; then
    unshare --net "$src/tests/package.sh" --smoke-in-netns "$work"
    checks=$((checks + $(cat "$work/smoke.checks")))
else
    smoke
fi

say "apt-get purge veer"
apt-get purge -y -qq veer >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "purge"; }
installed=false
while read -r f; do
    [ -d "$f" ] && continue # directories (/usr/bin, /lib -> usr/lib, ...) stay
    check "purge removes $f" test ! -e "$f"
done <"$work/files"
for d in /etc/veer /var/lib/veer /var/log/veer /run/veer /usr/share/doc/veer \
    /etc/systemd/system/multi-user.target.wants/veer.service; do
    check "purge leaves no $d" test ! -e "$d"
done
leftover=$(find /etc /var/lib /var/log /run /usr -name '*veer*' ! -path '/var/lib/dpkg/*' \
    ! -path '/var/cache/*' ! -path '/usr/local/*' 2>/dev/null || true)
[ -z "$leftover" ] || fail "purge left: $leftover"
checks=$((checks + 1))
say "ok ($checks checks)"
