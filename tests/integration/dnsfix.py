"""A real DNS server for the discovery tests: dnsmasq on a loopback port.

DnsServer starts Debian's dnsmasq (package dnsmasq-base, /usr/sbin/dnsmasq)
in the foreground on 127.0.0.1 and a free port (UDP and TCP), with a conf
file of its own in a temporary directory:

- names come from an addn-hosts file that set_hosts() rewrites; dnsmasq
  re-reads it on SIGHUP;
- SRV records are srv-host= lines in the conf file, which dnsmasq reads only
  at start: set_srv() restarts it on the same port;
- `local=/internal/`: a name under .internal that is not in the hosts file
  gets NXDOMAIN (a name that is there but has no record of the asked type
  gets an empty NOERROR answer);
- every answer has the TTL local_ttl (1 s by default).

stop()/start() take the server down and up (queries are refused: ICMP port
unreachable, ECONNREFUSED); pause()/resume() SIGSTOP and SIGCONT it (queries
time out). query() is a small DNS client (standard library only, UDP) that
the fixture uses to wait until dnsmasq really serves a change, never sleeping
a fixed time; tests may use it too.
"""

import os
import pwd
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import veertest

DNSMASQ_BIN = os.environ.get("DNSMASQ_BIN", "/usr/sbin/dnsmasq")

QTYPES = {"A": 1, "AAAA": 28, "SRV": 33}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class DnsAnswer:
    """rcode ("NOERROR", "NXDOMAIN", ...), records [(type, ttl, value)] of the
    answer section: A/AAAA values are address strings, SRV values
    (priority, weight, port, target)."""

    def __init__(self, rcode, records):
        self.rcode = rcode
        self.records = records

    def values(self, qtype):
        return [v for t, _, v in self.records if t == qtype]

    def __repr__(self):
        return "DnsAnswer(%s, %r)" % (self.rcode, self.records)


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _decode_name(msg, p):
    """(name, offset after the name at p), following compression pointers."""
    labels = []
    end = None
    for _ in range(128):
        n = msg[p]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = p + 2
            p = ((n & 0x3F) << 8) | msg[p + 1]
            continue
        if n == 0:
            return ".".join(labels), (end if end is not None else p + 1)
        labels.append(msg[p + 1:p + 1 + n].decode())
        p += 1 + n
    raise ValueError("name compression loop")


def build_query(qid, name, qtype):
    """A standard query with recursion desired."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + \
        struct.pack("!HH", QTYPES[qtype], 1)


def parse_response(msg, qid):
    hid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if hid != qid or not flags & 0x8000:
        raise ValueError("not the answer to query %d" % qid)
    p = 12
    for _ in range(qd):
        _, p = _decode_name(msg, p)
        p += 4
    records = []
    names = {v: k for k, v in QTYPES.items()}
    for _ in range(an):
        _, p = _decode_name(msg, p)
        rtype, _, ttl, rdlen = struct.unpack("!HHIH", msg[p:p + 10])
        p += 10
        rdata = msg[p:p + rdlen]
        t = names.get(rtype)
        if t == "A":
            records.append((t, ttl, socket.inet_ntop(socket.AF_INET, rdata)))
        elif t == "AAAA":
            records.append((t, ttl, socket.inet_ntop(socket.AF_INET6, rdata)))
        elif t == "SRV":
            prio, weight, port = struct.unpack("!HHH", rdata[:6])
            target, _ = _decode_name(msg, p + 6)
            records.append((t, ttl, (prio, weight, port, target)))
        p += rdlen
    return DnsAnswer(RCODES.get(flags & 0xF, str(flags & 0xF)), records)


def query(port, name, qtype="A", timeout=1.0, host="127.0.0.1"):
    """One UDP query to host:port. Returns a DnsAnswer; raises
    ConnectionRefusedError when nothing listens there, socket.timeout when no
    answer comes within timeout."""
    qid = random.randrange(1, 65536)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(build_query(qid, name, qtype))
        end = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.001, end - time.monotonic()))
            msg = s.recv(4096)
            try:
                return parse_response(msg, qid)
            except (ValueError, struct.error, IndexError):
                if time.monotonic() > end:
                    raise socket.timeout("no answer to query %d" % qid)
    finally:
        s.close()


def free_dns_port():
    """A port free on 127.0.0.1 for both UDP and TCP right now."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
        finally:
            u.close()
            t.close()
    raise AssertionError("no port free for both UDP and TCP on 127.0.0.1")


class DnsServer:
    """dnsmasq on 127.0.0.1:self.port. hosts: {name: [address, ...]};
    srv: [(srv name, target, port, priority, weight), ...]."""

    def __init__(self, hosts=None, srv=None, local_ttl=1, port=None):
        if not os.access(DNSMASQ_BIN, os.X_OK):
            raise AssertionError("%s is missing: install the Debian package dnsmasq-base"
                                 % DNSMASQ_BIN)
        self.tmp = tempfile.mkdtemp(prefix="veer-dns-")
        self.conf_path = os.path.join(self.tmp, "dnsmasq.conf")
        self.hosts_path = os.path.join(self.tmp, "hosts")
        self.log_path = os.path.join(self.tmp, "dnsmasq.log")
        self.local_ttl = local_ttl
        self.hosts = dict(hosts or {})
        self.srv = list(srv or [])
        self.proc = None
        self.paused = False
        self._write_hosts()
        if port is not None:
            self.port = port
            self.start()
            return
        last = None
        for _ in range(5):
            self.port = free_dns_port()
            try:
                self.start()
                return
            except AssertionError as e:  # someone took the port in between: another one
                last = e
        raise last

    # --- files ------------------------------------------------------------

    def _write_hosts(self):
        lines = []
        for name, addrs in self.hosts.items():
            for a in addrs:
                lines.append("%s %s\n" % (a, name))
        tmp = self.hosts_path + ".new"
        with open(tmp, "w") as f:
            f.write("".join(lines))
        os.rename(tmp, self.hosts_path)

    def _write_conf(self):
        lines = [
            "no-resolv", "no-hosts", "addn-hosts=%s" % self.hosts_path,
            "local=/internal/", "local-ttl=%d" % self.local_ttl,
            "bind-interfaces", "listen-address=127.0.0.1", "port=%d" % self.port,
            "keep-in-foreground", "pid-file=", "log-queries",
            "log-facility=%s" % self.log_path,
        ]
        if os.getuid() == 0:
            # Keep root: dropping to nobody would lose the hosts file in our 0700 directory.
            lines.append("user=%s" % pwd.getpwuid(os.getuid()).pw_name)
        for name, target, port, prio, weight in self.srv:
            lines.append("srv-host=%s,%s,%d,%d,%d" % (name, target, port, prio, weight))
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    # --- process ----------------------------------------------------------

    def start(self, timeout=veertest.DEADLINE):
        """Start dnsmasq on self.port and wait until it answers. AssertionError
        (with its output) when it exits instead, e.g. the port is taken."""
        assert self.proc is None, "dnsmasq already running"
        self._write_conf()
        self.proc = subprocess.Popen([DNSMASQ_BIN, "--conf-file=%s" % self.conf_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.paused = False

        def answering():
            if self.proc.poll() is not None:
                out = self.proc.stdout.read()
                self.proc.stdout.close()
                self.proc = None
                raise AssertionError("dnsmasq on port %d exited (%s): %s"
                                     % (self.port, "?", out.strip()))
            try:
                query(self.port, "probe.internal", "A", timeout=0.2)
                return True
            except (OSError, socket.timeout):
                return False
        veertest.wait_for(answering, timeout, interval=0.01, what="dnsmasq to answer")

    def stop(self):
        """Stop dnsmasq (SIGTERM, SIGKILL if it does not go): queries are refused."""
        if self.proc is None:
            return
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None

    def restart(self):
        """Stop and start again on the same port (a few tries: the port is free
        again at once for us, but give a racing process a moment to let go)."""
        self.stop()
        end = time.monotonic() + veertest.DEADLINE
        while True:
            try:
                self.start()
                return
            except AssertionError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)  # bind retry back-off, not a settle wait

    def pause(self):
        """SIGSTOP: dnsmasq keeps its sockets, queries time out."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # --- records ----------------------------------------------------------

    def query(self, name, qtype="A", timeout=1.0):
        return query(self.port, name, qtype, timeout)

    def _wait_serving(self, expect):
        """Wait until every (name, qtype) -> sorted values in expect is what dnsmasq answers."""
        def serving():
            for (name, qtype), want in expect.items():
                try:
                    got = sorted(self.query(name, qtype, timeout=0.5).values(qtype))
                except (OSError, socket.timeout):
                    return False
                if got != sorted(want):
                    return False
            return True
        veertest.wait_for(serving, interval=0.01, what="dnsmasq to serve %r" % (expect,))

    def set_hosts(self, hosts):
        """Replace the hosts file ({name: [address, ...]}), SIGHUP dnsmasq and wait
        until it serves exactly these A and AAAA records (and nothing for the
        names that were removed)."""
        old = set(self.hosts)
        self.hosts = dict(hosts)
        self._write_hosts()
        self.proc.send_signal(signal.SIGHUP)
        expect = {}
        for name in old | set(self.hosts):
            addrs = self.hosts.get(name, [])
            expect[(name, "A")] = [a for a in addrs if ":" not in a]
            expect[(name, "AAAA")] = [a for a in addrs if ":" in a]
        self._wait_serving(expect)

    def set_srv(self, srv):
        """Replace the SRV records ([(name, target, port, priority, weight)]):
        dnsmasq reads them only at start, so it restarts on the same port."""
        old = {r[0] for r in self.srv}
        self.srv = list(srv)
        self.restart()
        expect = {}
        for name in old | {r[0] for r in self.srv}:
            expect[(name, "SRV")] = [(p, w, port, t) for n, t, port, p, w in self.srv if n == name]
        self._wait_serving(expect)


class DnsTestMixin:
    """For a VeerTestCase: self.dns() starts a DnsServer closed at tearDown
    (failing or not); on failure its query log goes to stderr."""

    def dns(self, **kw):
        d = DnsServer(**kw)
        self._cleanup.append(d.close)
        self._cleanup.append(lambda: self._dump_dns(d))
        return d

    def _dump_dns(self, d):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        failed = result is not None and any(
            t is self for t, _ in getattr(result, "failures", []) + getattr(result, "errors", []))
        if failed:
            import sys
            sys.stderr.write("\n--- dnsmasq on port %d, last log lines:\n%s\n"
                             % (d.port, "\n".join(d.log().splitlines()[-30:])))
