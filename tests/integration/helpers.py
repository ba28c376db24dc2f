"""Helpers for the integration tests, on top of veertest.

veertest's Backend hands its handler a request whose body is already read,
and its Reader grows an immutable bytes buffer (fine for small messages,
quadratic for 50 MiB). Here are the pieces the body, streaming, upgrade and
lifecycle tests need besides:

- StreamReader / read_head / iter_body: incremental HTTP reading that never
  holds a whole large body;
- StreamBackend: a backend whose handler gets the request head and the
  reader, and consumes the body itself (100-continue, uploads, WebSocket);
- Pattern: deterministic bulk data with a known digest;
- RssSampler: veer's peak RSS while something runs;
- SendProgress / send_tracked: a sender that records when the peer stops
  taking bytes (backpressure reached it);
- small things: a port nobody listens on, JSON error checks, WebSocket
  frames, "is this port still accepting?";
- the admin side: admin_config (admin socket, audit log, state file, group
  shares), veerctl, AdminConn (the raw line protocol), show_pool / parse_ok,
  audit_records / state_shares to read veer's files;
- RoutedLoad: keep-alive clients that record, per request, when it was sent
  and answered and which backend (X-Backend) answered it, to check that a
  change applies to every request sent after its OK.
"""

import base64
import collections
import hashlib
import json
import random
import re
import select
import socket
import struct
import subprocess
import threading
import time

import veertest
from veertest import Request, Response

MiB = 1024 * 1024


# --- reading ---------------------------------------------------------------


class StreamReader:
    """Buffered reads from a socket without quadratic copies."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        d = self.sock.recv(262144)
        if not d:
            return False
        self.buf += d
        return True

    def readline(self):
        """One CRLF-terminated line without the CRLF, or None at EOF."""
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            start = max(0, len(self.buf) - 1)
            if not self.fill():
                return None

    def read(self, n):
        """Exactly n bytes; ValueError if the peer closes first."""
        while len(self.buf) < n:
            if not self.fill():
                raise ValueError("connection closed after %d of %d bytes" % (len(self.buf), n))
        d = bytes(self.buf[:n])
        del self.buf[:n]
        return d

    def read_some(self, limit):
        """Up to limit bytes (at least 1), or b"" at EOF."""
        if not self.buf and not self.fill():
            return b""
        d = bytes(self.buf[:limit])
        del self.buf[:limit]
        return d


def read_head(reader, cls=Response):
    """Read one message head (a 1xx included) into a veertest Message; None at EOF."""
    line = reader.readline()
    if line is None:
        return None
    msg = cls()
    msg.start = line
    while True:
        line = reader.readline()
        if line is None:
            raise ValueError("connection closed in head")
        if line == b"":
            return msg
        k, v = line.split(b":", 1)
        msg.headers.append((k.decode(), v.strip().decode()))


def iter_body(reader, msg, method="GET", limit=262144):
    """Yield the body of msg piece by piece (Content-Length, chunked or until close).

    Raises ValueError when the peer closes before the framing says the body
    ended.
    """
    if isinstance(msg, Response) and (method == "HEAD" or msg.status in (101, 204, 304)
                                      or 100 <= msg.status < 200):
        return
    if (msg.header("Transfer-Encoding") or "").lower() == "chunked":
        while True:
            line = reader.readline()
            if line is None:
                raise ValueError("connection closed in chunked body")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while True:
                    t = reader.readline()
                    if t is None:
                        raise ValueError("connection closed in trailers")
                    if t == b"":
                        return
            while size:
                d = reader.read_some(min(size, limit))
                if not d:
                    raise ValueError("connection closed in chunk")
                size -= len(d)
                yield d
            if reader.read(2) != b"\r\n":
                raise ValueError("bad chunk terminator")
    elif msg.header("Content-Length") is not None:
        left = int(msg.header("Content-Length"))
        while left:
            d = reader.read_some(min(left, limit))
            if not d:
                raise ValueError("connection closed with %d body bytes missing" % left)
            left -= len(d)
            yield d
    elif isinstance(msg, Response):
        while True:
            d = reader.read_some(limit)
            if not d:
                return
            yield d


class BodyDigest:
    """Length and SHA-256 of a body consumed piece by piece."""

    def __init__(self):
        self.n = 0
        self.h = hashlib.sha256()

    def update(self, d):
        self.n += len(d)
        self.h.update(d)

    def hexdigest(self):
        return self.h.hexdigest()


# --- bulk data -------------------------------------------------------------


class Pattern:
    """A deterministic pseudo-random byte stream, produced in pieces.

    The block length is odd-sized so piece boundaries never line up with
    repetitions: a lost, duplicated or reordered piece changes the digest.
    """

    BLOCK = 1048573  # a prime just under 1 MiB

    def __init__(self, seed=1):
        b = random.Random(seed).randbytes(self.BLOCK)
        self._twice = b + b
        self._digests = {}

    def pieces(self, total, size=262144):
        off = 0
        while off < total:
            n = min(size, total - off)
            pos = off % self.BLOCK
            while n:
                take = min(n, self.BLOCK)
                yield self._twice[pos:pos + take]
                off += take
                n -= take
                pos = off % self.BLOCK

    def digest(self, total):
        if total not in self._digests:
            h = hashlib.sha256()
            for p in self.pieces(total, 1 << 20):
                h.update(p)
            self._digests[total] = h.hexdigest()
        return self._digests[total]


# --- memory ----------------------------------------------------------------


class RssSampler:
    """Samples a Veer's RSS (KiB) on a thread until stopped; keeps the peak."""

    def __init__(self, veer, interval=0.002):
        self.veer = veer
        self.interval = interval
        self.peak = veer.rss_kib()
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                kib = self.veer.rss_kib()
            except OSError:
                return
            self.peak = max(self.peak, kib)
            self.samples += 1

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.peak


# --- backpressure ----------------------------------------------------------


class SendProgress:
    """What a tracked sender has done: bytes sent, and since when it is blocked."""

    def __init__(self):
        self.sent = 0
        self.blocked_since = None
        self.done = False
        self.abort = False

    def stalled_for(self):
        """Seconds the sender has been blocked without progress (0 when moving)."""
        since = self.blocked_since
        return time.monotonic() - since if since is not None else 0.0


def send_tracked(conn, pieces, progress):
    """Send every piece on conn, recording progress; returns when all is sent.

    The socket is switched to non-blocking so a full send buffer (the peer
    stopped reading) is observed rather than hidden inside sendall().
    """
    conn.setblocking(False)
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                if progress.abort:
                    raise OSError("send aborted")
                try:
                    n = conn.send(view)
                except BlockingIOError:
                    if progress.blocked_since is None:
                        progress.blocked_since = time.monotonic()
                    select.select([], [conn], [], 0.5)
                    continue
                progress.blocked_since = None
                progress.sent += n
                view = view[n:]
        progress.done = True
    finally:
        conn.setblocking(True)


# --- a backend that reads bodies itself ------------------------------------


class StreamBackend:
    """A threaded backend whose handler gets (conn, reader, request_head).

    The handler must consume the request body itself (iter_body) and return
    True to keep the connection for another request. heads lists every
    request head received, connections counts accepted connections.
    """

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.heads = []
        self.connections = 0
        self.errors = []
        self.lock = threading.Lock()
        self.closed = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        reader = StreamReader(c)
        try:
            while True:
                head = read_head(reader, Request)
                if head is None:
                    break
                with self.lock:
                    self.heads.append(head)
                if not self.handler(c, reader, head):
                    break
        except (OSError, ValueError) as e:
            self.errors.append(e)
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.closed = True
        veertest.close_listener(self.sock)
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass


# --- odds and ends ---------------------------------------------------------


_held_ports = []


def unused_port():
    """A loopback port where nothing listens: connecting is refused. The port
    stays bound (never listening) for the rest of the process, so no other
    test or suite running in parallel can be given it and start accepting
    there, as it could if it were bound and released."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _held_ports.append(s)
    return s.getsockname()[1]


class ReservedPort:
    """A loopback port kept for a server this test starts later (etcd): bound
    with SO_REUSEADDR and never listening, so the server (which sets
    SO_REUSEADDR too, as Go does) can bind and listen on it, while nobody else
    can take it in between, nor after the server stops, until close()."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def quick_config(backends, extra_top="", **kw):
    """veertest.pool_config with a short shutdown quiet period, so stop() is fast."""
    timeouts = "timeouts = { quiet_ms = 100; };\n"
    if "timeouts" in extra_top:
        timeouts = ""
    return veertest.pool_config(backends, extra_top=timeouts + extra_top, **kw)


def json_error(tc, res, status):
    """Check res is veer's JSON error for status; return the decoded body."""
    tc.assertIsNotNone(res, "no response")
    tc.assertEqual(res.status, status, res.body[:300])
    tc.assertEqual(res.header("Content-Type"), "application/json")
    doc = json.loads(res.body)
    tc.assertEqual(doc["status"], status)
    tc.assertIsInstance(doc["error"], str)
    tc.assertIn("detail", doc)
    return doc


def accepting(port):
    """True if a connection to port is accepted and not closed straight away."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return False
    try:
        s.settimeout(0.05)
        try:
            return s.recv(1) != b""
        except socket.timeout:
            return True
        except OSError:
            return False
    finally:
        s.close()


def refused(port):
    """True when a new connection to port is refused or closed without an answer."""
    return not accepting(port)


# --- WebSocket -------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(payload, opcode=1, mask=None):
    """One final frame; masked when mask (4 bytes) is given, as clients must."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        return head + mask + ws_mask(payload, mask)
    return head + payload


def ws_mask(data, mask):
    m = (mask * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(len(data), "big") \
        if data else b""


def ws_read_frame(reader):
    """(opcode, unmasked payload) of the next frame; None at EOF."""
    first = reader.read_some(1) if isinstance(reader, StreamReader) else reader.read(1)
    if not first:
        return None
    b0 = first[0]
    b1 = reader.read(1)[0]
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", reader.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.read(8))[0]
    mask = reader.read(4) if b1 & 0x80 else None
    payload = reader.read(n)
    if mask:
        payload = ws_mask(payload, mask)
    return b0 & 0x0F, payload


# --- admin socket, veerctl, audit log, state file --------------------------


def admin_top(persist_dir="{tmp}"):
    """Top-level config: the admin socket in veer's {tmp}, the audit log and the
    state file in persist_dir ({tmp} by default; a directory of the test's own
    when the files must outlive one veer process, since Veer.kill() removes
    {tmp})."""
    return ('admin = { socket = "{tmp}/admin.sock"; };\n'
            'audit_log = "%s/audit.log";\nstate_file = "%s/state";\n' % (persist_dir, persist_dir))


def shares_text(shares):
    """'shares = { blue = 90; green = 10; };' for a pool's extra text."""
    return "shares = { %s };" % " ".join("%s = %d;" % kv for kv in shares)


def admin_config(backends, shares=None, persist_dir="{tmp}", extra_top="", **kw):
    """quick_config with the admin socket, audit log and state file on, and
    optional group shares given as [(group, percent), ...]."""
    extra_pool = kw.pop("extra_pool", "")
    if shares:
        extra_pool = shares_text(shares) + " " + extra_pool
    return quick_config(backends, extra_top=admin_top(persist_dir) + extra_top,
                        extra_pool=extra_pool, **kw)


def veerctl(sock, *args, timeout=None):
    """Run veerctl -s sock ARGS...; returns the CompletedProcess (text output).
    Arguments may be bytes (for garbage that is not UTF-8)."""
    return subprocess.run([veertest.VEERCTL_BIN, "-s", sock] + list(args), capture_output=True,
                          encoding="utf-8", errors="replace",
                          timeout=timeout or veertest.DEADLINE)


def show_pool(sock, pool="api"):
    """`show pool POOL --json` through veerctl, decoded."""
    p = veerctl(sock, "show", "pool", pool, "--json")
    if p.returncode != 0 or not p.stdout.endswith("\n\n"):
        raise AssertionError("show pool %s --json: exit %d: %r %r" % (pool, p.returncode, p.stdout,
                                                                      p.stderr))
    return json.loads(p.stdout)


def pool_shares(doc):
    """{group: share} of a `show pool --json` document."""
    return {g["name"]: g["share"] for g in doc["groups"]}


OK_RE = re.compile(r"\AOK gen=(\d+) applied_us=(\d+)((?: [a-z_]+=\S+)*)\n\n\Z")


def parse_ok(reply):
    """The key=value pairs of an "OK gen=N applied_us=T [k=v...]" reply, values as
    ints where they are numbers; AssertionError for anything else."""
    m = OK_RE.match(reply)
    if not m:
        raise AssertionError("not an OK reply: %r" % reply)
    out = {"gen": int(m.group(1)), "applied_us": int(m.group(2))}
    for kv in m.group(3).split():
        k, v = kv.split("=", 1)
        out[k] = int(v) if v.isdigit() else v
    return out


class AdminConn:
    """A raw connection to veer's admin socket (the line protocol itself)."""

    def __init__(self, path, timeout=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout or veertest.DEADLINE)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """The next reply, bytes, up to and including its empty line; None at EOF
        (any bytes left without a complete reply stay in self.buf)."""
        while b"\n\n" not in self.buf:
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                return None
            self.buf += d
        i = self.buf.index(b"\n\n") + 2
        r, self.buf = self.buf[:i], self.buf[i:]
        return r

    def command(self, line):
        """Send one line, return its reply as text (with the final empty line)."""
        self.send(line.encode() + b"\n")
        r = self.reply()
        if r is None:
            raise AssertionError("admin socket closed without answering %r" % line)
        return r.decode()

    def timed_command(self, line):
        """(reply text, monotonic time before sending, monotonic time after the reply)."""
        t0 = time.monotonic()
        r = self.command(line)
        return r, t0, time.monotonic()

    def half_close(self):
        self.sock.shutdown(socket.SHUT_WR)

    def read_to_eof(self):
        """Everything left until the peer closes (a reset counts as closed)."""
        out = self.buf
        self.buf = b""
        while True:
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def audit_records(path):
    """The audit log's lines (without newlines) and their decoded records."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines, [json.loads(l) for l in lines]


def state_shares(path):
    """{pool: {group: share}} from a state file ("pool P" / "share G N" lines);
    None when the file is missing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    out, pool = {}, None
    for line in text.splitlines():
        w = line.split()
        if len(w) == 2 and w[0] == "pool":
            pool = out.setdefault(w[1], {})
        elif len(w) == 3 and w[0] == "share" and pool is not None and w[2].isdigit():
            pool[w[1]] = int(w[2])
    return out


# --- load that records who answered what, and when it was sent --------------


Rec = collections.namedtuple("Rec", "sent done backend status error")


class RoutedLoad:
    """n keep-alive clients sending GETs back to back, each on its own connection,
    recording per request a Rec: monotonic times just before the request was sent
    and just after its response was read, the X-Backend of the answer (None on
    failure), the status and an error text. A failed request is recorded and the
    client goes on with a new connection (it never retries the failed request).

    A request whose `sent` is after the OK of a change was read by veer after the
    change was published; one whose `done` is before the next change was sent was
    routed before that one: between the two, only the change's routing applies."""

    def __init__(self, port, n=16, path="/load"):
        self.port = port
        self.n = n
        self.path = path
        self.records = [[] for _ in range(n)]  # per client, in order
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        recs = self.records[i]
        c = None
        k = 0
        while not self.stop_ev.is_set():
            if c is None:
                try:
                    c = veertest.Client(self.port)
                except OSError as e:
                    t = time.monotonic()
                    recs.append(Rec(t, t, None, None, "connect: %r" % e))
                    continue
            k += 1
            t = time.monotonic()
            try:
                r = c.request("GET", "%s/%d/%d" % (self.path, i, k))
                if r is None:
                    raise ValueError("connection closed without a response")
                if not r.complete:
                    raise ValueError("truncated response")
                recs.append(Rec(t, time.monotonic(), r.header("X-Backend"), r.status, None))
                if r.status != 200 or (r.header("Connection") or "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, ValueError) as e:
                recs.append(Rec(t, time.monotonic(), None, None, repr(e)))
                c.close()
                c = None
        if c is not None:
            c.close()

    def all_records(self):
        return [r for recs in self.records for r in list(recs)]

    def each_sent_after(self, t, count=1):
        """True when every client has >= count completed requests sent after t."""
        for recs in self.records:
            if sum(1 for r in list(recs) if r.sent > t) < count:
                return False
        return True

    def wait_each_sent_after(self, t, count=1, timeout=None):
        veertest.wait_for(lambda: self.each_sent_after(t, count),
                          timeout=timeout or veertest.DEADLINE,
                          what="every load client to complete %d request(s) sent after t" % count)

    def sent_between(self, t0, t1=None):
        """Records of requests sent after t0 (and before t1 when given)."""
        return [r for r in self.all_records() if r.sent > t0 and (t1 is None or r.sent < t1)]

    def failures(self):
        return [r for r in self.all_records() if r.error is not None or r.status != 200]

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(veertest.DEADLINE)


# --- readiness-checked backends (test_admission) ------------------------------

HEALTH_UA = "veer-health"


def health_text(path="/ready", interval_ms=100, timeout_ms=1000, rise=2, fall=2):
    """A pool's `health = {...};` for extra_pool."""
    return ('health = { path = "%s"; interval_ms = %d; timeout_ms = %d; rise = %d; fall = %d; };'
            % (path, interval_ms, timeout_ms, rise, fall))


class HealthBackend(veertest.Backend):
    """A veertest.Backend with a readiness endpoint the test turns on and off.

    A request with User-Agent veer-health is a readiness check: GET
    health_path is answered 503 until set_healthy(True), then 200 (any other
    path 404), always with Connection: close. Everything else is client
    traffic: hold(req) runs first when set (a slow handler), then 200 with the
    name in X-Backend and in the body. host and port: where it listens
    (several on 127.0.0.2, 127.0.0.3, ... with one port stand for the
    instances behind a DNS name).

    Recorded with monotonic times, under the lock:
    - checks: (t, status, target) appended *before* the answer is sent, so
      veer can never have seen a passing check that is not recorded yet;
    - traffic: (t_arrived, target, streak), streak being the number of
      passing checks in a row answered when the request arrived;
    - replied: (t, target) just before a client response is sent.
    """

    def __init__(self, name, health_path="/ready", healthy=False, hold=None, host="127.0.0.1",
                 port=0):
        self.health_path = health_path
        self.healthy = healthy
        self.hold = hold
        self.checks = []
        self.traffic = []
        self.replied = []
        self.streak = 0
        self.flipped_at = None
        super().__init__(name, self._handle, port=port, host=host)

    def set_healthy(self, ok):
        """Answer checks 200 (ok) or 503 from now on; returns the monotonic time of the flip."""
        with self.lock:
            self.healthy = ok
            self.flipped_at = time.monotonic()
            return self.flipped_at

    def _handle(self, conn, req):
        if (req.header("User-Agent") or "") == HEALTH_UA:
            with self.lock:
                if req.method != "GET" or req.target != self.health_path:
                    status = 404
                else:
                    status = 200 if self.healthy else 503
                self.streak = self.streak + 1 if status == 200 else 0
                self.checks.append((time.monotonic(), status, req.target))
            reason = {200: b"OK", 404: b"Not Found", 503: b"Service Unavailable"}[status]
            conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                         % (status, reason))
            return False
        with self.lock:
            self.traffic.append((time.monotonic(), req.target, self.streak))
        hold = self.hold
        if hold is not None:
            hold(req)
        body = (self.name + "\n").encode()
        with self.lock:
            self.replied.append((time.monotonic(), req.target))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                     % (len(body), self.name.encode(), body))
        return True

    def passing_checks(self):
        """Monotonic times of the checks answered 200."""
        with self.lock:
            return [c[0] for c in self.checks if c[1] == 200]

    def traffic_count(self):
        with self.lock:
            return len(self.traffic)

    def traffic_after(self, t):
        """Client requests that arrived after monotonic time t."""
        with self.lock:
            return [r for r in self.traffic if r[0] > t]


def pool_states(doc):
    """{backend: state} of a `show pool --json` document."""
    return {b["name"]: b["state"] for b in doc["backends"]}


# --- lifecycle (test_lifecycle): strict load, upgraded processes, summaries ----

import os  # noqa: E402 (appended section)
import signal  # noqa: E402


LoadRec = collections.namedtuple(
    "LoadRec", "client path sent done status backend close error retry_after ctype body")


class StrictLoad:
    """n keep-alive clients sending GETs back to back, each on its own
    connection, counting every request as a strict client sees it.

    Nothing is retried. A request fails (error set) when the connection
    cannot be made, or when veer closes or resets it, times out or truncates
    the response while the request is outstanding. A response carrying
    "Connection: close" is not a failure: the client closes and reconnects
    for its next request. A response whose status is not in accept is a
    failure too (failures()); the records keep status, Retry-After,
    Content-Type and (for non-200 answers) the body so a test can judge
    expected refusals such as maintenance 503s itself.

    With unique=True each path is PATH/<client>/<k>, so a backend's log of
    targets maps back to the record (and the monotonic time it was sent)."""

    def __init__(self, port, n=8, path="/load", unique=True, accept=(200,), timeout=None):
        self.port = port
        self.n = n
        self.path = path
        self.unique = unique
        self.accept = tuple(accept)
        self.timeout = timeout or veertest.DEADLINE
        self.records = [[] for _ in range(n)]
        self.connects = [0] * n
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        recs = self.records[i]
        c = None
        k = 0
        while not self.stop_ev.is_set():
            k += 1
            path = "%s/%d/%d" % (self.path, i, k) if self.unique else self.path
            t = time.monotonic()
            if c is None:
                try:
                    c = veertest.Client(self.port, timeout=self.timeout)
                    self.connects[i] += 1
                except OSError as e:
                    recs.append(LoadRec(i, path, t, time.monotonic(), None, None, False,
                                        "connect: %r" % e, None, None, None))
                    self.stop_ev.wait(0.005)
                    continue
            try:
                r = c.request("GET", path)
                if r is None:
                    raise ValueError("connection closed without a response")
                if not r.complete:
                    raise ValueError("truncated response")
            except (OSError, ValueError) as e:
                recs.append(LoadRec(i, path, t, time.monotonic(), None, None, False, repr(e),
                                    None, None, None))
                c.close()
                c = None
                continue
            close = (r.header("Connection") or "").lower() == "close"
            recs.append(LoadRec(i, path, t, time.monotonic(), r.status, r.header("X-Backend"),
                                close, None, r.header("Retry-After"), r.header("Content-Type"),
                                r.body if r.status != 200 else None))
            if close:
                c.close()
                c = None
        if c is not None:
            c.close()

    def all(self):
        return [r for recs in self.records for r in list(recs)]

    def count(self):
        return sum(len(recs) for recs in self.records)

    def errors(self):
        """Requests that got no complete response (connect, reset, close, timeout)."""
        return [r for r in self.all() if r.error is not None]

    def failures(self):
        """Errors, and responses whose status is not in accept."""
        return [r for r in self.all() if r.error is not None or r.status not in self.accept]

    def by_path(self):
        return {r.path: r for r in self.all()}

    def wait_count(self, n, timeout=None):
        """Until at least n requests were answered (or failed) in total."""
        veertest.wait_for(lambda: self.count() >= n, timeout=timeout or veertest.DEADLINE,
                          what="%d load requests" % n)

    def each_sent_after(self, t, count=1):
        for recs in self.records:
            if sum(1 for r in list(recs) if r.sent > t) < count:
                return False
        return True

    def wait_each_sent_after(self, t, count=1, timeout=None):
        """Until every client has count finished requests sent after monotonic time t."""
        veertest.wait_for(lambda: self.each_sent_after(t, count),
                          timeout=timeout or veertest.DEADLINE,
                          what="every load client to finish %d request(s) sent after t" % count)

    def describe(self, recs=None, limit=10):
        """A short text about failures (or recs) for assertion messages."""
        recs = self.failures() if recs is None else recs
        lines = ["%d requests, %d failed" % (self.count(), len(self.failures()))]
        for r in recs[:limit]:
            lines.append("  client %d %s sent=%.3f done=%.3f status=%s error=%s body=%r"
                         % (r.client, r.path, r.sent, r.done, r.status, r.error,
                            (r.body or b"")[:120]))
        return "\n".join(lines)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(veertest.DEADLINE + 5)


def become_subreaper(on=True):
    """Make this process the reaper of orphaned descendants (Linux
    PR_SET_CHILD_SUBREAPER), so the process a binary upgrade starts, orphaned
    when the old one exits, becomes our child and its exit status can be read
    with waitpid; on=False turns that off again. Returns whether it worked."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1 if on else 0, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


LOG_PID_RE = re.compile(r"\[(\d+)\] ")


def log_pid(line):
    """The pid in a veer log line ("... [PID] level: message"), or None."""
    m = LOG_PID_RE.search(line)
    return int(m.group(1)) if m else None


def pid_lines(veer, pid):
    """The lines of veer.log() written by process pid."""
    return [l for l in veer.log() if log_pid(l) == pid]


def shutdown_summary(lines):
    """The fields of the last "shutdown summary:" line among lines, as a dict
    (ints, total_ms a float), or None when there is none."""
    for line in reversed(lines):
        m = re.search(r"shutdown summary: (.*)$", line)
        if m:
            out = {}
            for kv in m.group(1).split():
                k, v = kv.split("=", 1)
                out[k] = float(v) if "." in v else int(v)
            return out
    return None


class Successor:
    """The veer process a binary upgrade started from a Veer (SIGUSR2 or
    `veerctl upgrade`). It inherits the old process's stderr, so its lines
    arrive in veer.log(); veertest.Veer only tracks the first process, so
    this finds the new pid from the log (the process that says "ready" with
    another pid than the old one) and stops it at the end.

    The new process is a child of the old one and is orphaned when that one
    exits: with become_subreaper() in force it becomes ours and stop() reads
    its exit status; otherwise stop() only waits until it is gone."""

    READY_RE = re.compile(r"\[(\d+)\] info: veer \S+ ready")

    def __init__(self, veer, old_pid=None, timeout=None):
        self.veer = veer
        self.old_pid = old_pid if old_pid is not None else veer.proc.pid
        self.returncode = None

        def find():
            for l in veer.log():
                m = self.READY_RE.search(l)
                if m and int(m.group(1)) != self.old_pid:
                    return int(m.group(1))
            return None
        self.pid = veertest.wait_for(find, timeout=timeout or veertest.DEADLINE,
                                     what="a new veer process to say ready")

    def log(self):
        return pid_lines(self.veer, self.pid)

    def wait_log(self, pattern, timeout=None):
        rx = re.compile(pattern)
        return veertest.wait_for(lambda: next((l for l in self.log() if rx.search(l)), None),
                                 timeout=timeout or veertest.DEADLINE,
                                 what="pid %d to log %r" % (self.pid, pattern))

    def _reap(self):
        """True when the process is gone (exit status kept when it was ours)."""
        if self.returncode is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                return True
        except ChildProcessError:
            pass
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state not in ("Z", "X"):
            return False
        # It has exited. It may have done so just after the waitpid above, as
        # our own child: ask again, or its exit status would be lost.
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            pass  # a zombie of someone else
        return True

    def alive(self):
        return not self._reap()

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=None):
        """Until the process is gone; its exit code when known, else None."""
        veertest.wait_for(self._reap, timeout=timeout or veertest.DEADLINE, interval=0.01,
                          what="pid %d to exit" % self.pid)
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Signal it and wait until it is gone (SIGKILL and AssertionError when
        it outlives the deadline). Returns the exit code when known."""
        try:
            self.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return self.wait(timeout)
        except AssertionError:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            veertest.wait_for(self._reap, timeout=5, what="pid %d to die" % self.pid)
            raise AssertionError("upgraded veer pid %d did not exit after %s" % (self.pid, sig))


# --- observability (test_observability): admin HTTP, /metrics, headless Chromium --

import html.parser  # noqa: E402 (appended section)
import http.client  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

ADMIN_HTTP_RE = re.compile(r"admin http on (\S+):(\d+)")
LISTEN_POOL_RE = re.compile(r"listening on (\S+):(\d+) \(pool ([^,)]+)")


def admin_http_port(veer):
    """The port of veer's admin HTTP address, from its "admin http on HOST:PORT"
    log line (admin.http may use port 0)."""
    line = veer.wait_log(ADMIN_HTTP_RE.pattern, what="veer to log its admin http address")
    return int(ADMIN_HTTP_RE.search(line).group(2))


def listener_ports(veer):
    """{pool: port} of veer's listeners, from its "listening on ADDR:PORT (pool P, ...)"
    lines (the first listener of each pool)."""
    veer.wait_log(r"veer \S+ ready", what="veer ready")
    out = {}
    for line in veer.log():
        m = LISTEN_POOL_RE.search(line)
        if m:
            out.setdefault(m.group(3), int(m.group(2)))
    return out


def http_get(port, path, headers=None, timeout=None):
    """GET http://127.0.0.1:PORT/PATH: (status, {lower-case header: value}, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or veertest.DEADLINE)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def prometheus_text_parser():
    """prometheus_client's text_string_to_metric_families (Debian package
    python3-prometheus-client). When python3 is not Debian's own (pyenv, venv)
    Debian's dist-packages is tried too: the package is pure Python."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        extra = "/usr/lib/python3/dist-packages"
        if os.path.isdir(extra) and extra not in sys.path:
            sys.path.append(extra)
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:
            raise AssertionError("the Prometheus text parser is missing: install the Debian "
                                 "package python3-prometheus-client") from None
    return text_string_to_metric_families


class Scrape:
    """One /metrics document, parsed whole by prometheus_client's parser.

    families: {family name: Family} as the parser names them (it drops a
    counter's _total suffix from the family name, not from its samples);
    samples: every (name, labels, value) in document order."""

    def __init__(self, text):
        self.text = text
        parse = prometheus_text_parser()
        self.families = {}
        self.samples = []
        for fam in parse(text):  # raises ValueError on anything malformed
            self.families[fam.name] = fam
            for s in fam.samples:
                self.samples.append((s.name, dict(s.labels), s.value))

    def family(self, metric):
        """The family of a metric as exposed (veer_requests_total finds the
        parser's veer_requests counter); None when absent."""
        fam = self.families.get(metric)
        if fam is None and metric.endswith("_total"):
            fam = self.families.get(metric[:-len("_total")])
        return fam

    def type_of(self, metric):
        fam = self.family(metric)
        return fam.type if fam is not None else None

    def select(self, name, **labels):
        """Samples named name whose labels include every given label=value."""
        return [(n, l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == val for k, val in labels.items())]

    def value(self, name, **labels):
        """The value of the one sample of name with exactly these labels; None when
        there is none."""
        for n, l, v in self.samples:
            if n == name and l == labels:
                return v
        return None

    def total(self, name, **labels):
        """Sum over the samples select() finds (0 when none)."""
        return sum(v for _, _, v in self.select(name, **labels))

    def names(self):
        return {n for n, _, _ in self.samples}


def scrape(port):
    """GET /metrics from an admin HTTP port and parse it: a Scrape. The status
    must be 200 and the content type Prometheus text 0.0.4."""
    status, headers, body = http_get(port, "/metrics")
    if status != 200:
        raise AssertionError("/metrics answered %d: %r" % (status, body[:300]))
    ctype = headers.get("content-type", "")
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        raise AssertionError("/metrics content type %r is not Prometheus text 0.0.4" % ctype)
    return Scrape(body.decode("utf-8"))


def status_doc(port):
    """GET /status from an admin HTTP port, decoded."""
    status, headers, body = http_get(port, "/status")
    if status != 200:
        raise AssertionError("/status answered %d: %r" % (status, body[:300]))
    return json.loads(body)


class TableRows(html.parser.HTMLParser):
    """The rows of every <table> in an HTML text, each a list of its cells' text."""

    def __init__(self, text):
        super().__init__()
        self.rows = []
        self._row = None
        self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def column_of(rows, key_column, key, column):
    """In table rows (lists of cell texts, header rows included), the text of
    column `column` in the row whose `key_column` cell is `key`, the columns
    named by the closest header row above it; None when not found."""
    header = None
    for r in rows:
        if key_column in r and column in r:
            header = r
            continue
        if header and len(r) == len(header) and r[header.index(key_column)] == key:
            return r[header.index(column)]
    return None


# Headless Chromium (Debian package chromium): a page rendered by a real browser.

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-extensions", "--disable-default-apps", "--mute-audio"]


def chromium_binary():
    """The chromium executable, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_dump_dom(url, virtual_time_ms=3000, timeout=60):
    """The DOM of url after Chromium ran its scripts for virtual_time_ms of
    virtual time (--virtual-time-budget, --dump-dom), as HTML text."""
    profile = tempfile.mkdtemp(prefix="veer-chromium-")
    try:
        p = subprocess.run([chromium_binary()] + CHROMIUM_FLAGS +
                           ["--user-data-dir=" + profile,
                            "--virtual-time-budget=%d" % virtual_time_ms, "--dump-dom", url],
                           capture_output=True, text=True, timeout=timeout,
                           start_new_session=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if p.returncode != 0 or "<html" not in p.stdout.lower():
        raise AssertionError("chromium --dump-dom %s: exit %d, stderr:\n%s"
                             % (url, p.returncode, p.stderr[-2000:]))
    return p.stdout


class WebSocketClient:
    """A minimal RFC 6455 client (text messages, masked frames, fragmentation,
    ping/pong), enough for the DevTools protocol."""

    def __init__(self, url, timeout=None):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)$", url)
        if not m:
            raise ValueError("not a ws:// URL: %r" % url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))),
                                             timeout=timeout or veertest.DEADLINE)
        self.reader = StreamReader(self.sock)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n"
                           % (m.group(3), m.group(1), m.group(2), key)).encode())
        head = read_head(self.reader, Response)
        if head is None or head.status != 101 or head.header("Sec-WebSocket-Accept") != ws_accept(key):
            raise AssertionError("websocket handshake with %s failed: %r" % (
                url, head.start if head else None))

    def send_text(self, text):
        self.sock.sendall(ws_frame(text.encode(), opcode=1, mask=os.urandom(4)))

    def _frame(self):
        b0, b1 = self.reader.read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.reader.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.reader.read(8))[0]
        mask = self.reader.read(4) if b1 & 0x80 else None
        payload = self.reader.read(n)
        if mask:
            payload = ws_mask(payload, mask)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_text(self):
        """The next text message (pings answered on the way); None when closed."""
        parts = []
        while True:
            fin, op, payload = self._frame()
            if op == 8:
                return None
            if op == 9:
                self.sock.sendall(ws_frame(payload, opcode=10, mask=os.urandom(4)))
                continue
            if op in (0, 1, 2):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode("utf-8", "replace")

    def close(self):
        try:
            self.sock.sendall(ws_frame(b"", opcode=8, mask=os.urandom(4)))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class HeadlessChromium:
    """A headless Chromium showing one page, driven over the DevTools protocol:
    evaluate() runs JavaScript in the live page (it keeps running its timers,
    so a page that refreshes itself is observed as a person would see it).

    Chromium runs in its own session (process group), killed by close()."""

    def __init__(self, url, timeout=None):
        self.url = url
        self.timeout = timeout or veertest.DEADLINE
        self.profile = tempfile.mkdtemp(prefix="veer-chromium-")
        self.err = open(os.path.join(self.profile, "stderr.txt"), "w+")
        self.proc = subprocess.Popen([chromium_binary()] + CHROMIUM_FLAGS +
                                     ["--user-data-dir=" + self.profile,
                                      "--remote-debugging-address=127.0.0.1",
                                      "--remote-debugging-port=0", url],
                                     stdout=subprocess.DEVNULL, stderr=self.err,
                                     start_new_session=True)
        self.ws = None
        self.next_id = 0
        try:
            port = veertest.wait_for(self._devtools_port, timeout=self.timeout, interval=0.05,
                                     what="chromium's DevTools port")
            target = veertest.wait_for(lambda: self._page_target(port), timeout=self.timeout,
                                       interval=0.05, what="chromium's page target for " + url)
            self.ws = WebSocketClient(target["webSocketDebuggerUrl"], timeout=self.timeout)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self):
        if self.proc.poll() is not None:
            self.err.seek(0)
            raise AssertionError("chromium exited %s:\n%s" % (self.proc.returncode,
                                                              self.err.read()[-2000:]))
        try:
            with open(os.path.join(self.profile, "DevToolsActivePort")) as f:
                first = f.readline().strip()
        except FileNotFoundError:
            return None
        return int(first) if first.isdigit() else None

    def _page_target(self, port):
        try:
            status, _, body = http_get(port, "/json/list", timeout=5)
        except OSError:
            return None
        if status != 200:
            return None
        for t in json.loads(body):
            if t.get("type") == "page" and t.get("url", "").startswith(self.url):
                return t
        return None

    def call(self, method, **params):
        """One DevTools command; its result (events received meanwhile are dropped)."""
        self.next_id += 1
        my = self.next_id
        self.ws.send_text(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            text = self.ws.recv_text()
            if text is None:
                raise AssertionError("DevTools connection closed during %s" % method)
            msg = json.loads(text)
            if msg.get("id") == my:
                if "error" in msg:
                    raise AssertionError("DevTools %s: %r" % (method, msg["error"]))
                return msg.get("result", {})

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (returned by value)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError("JavaScript %r threw: %r" % (expression, r["exceptionDetails"]))
        return r.get("result", {}).get("value")

    def table_rows(self):
        """Every table row of the live DOM as a list of its cells' text."""
        return self.evaluate("Array.from(document.querySelectorAll('tr')).map(function(tr){"
                             "return Array.from(tr.cells).map(function(c){"
                             "return c.textContent.trim();});})") or []

    def close(self):
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.err.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# --- request smuggling (test_smuggling): a recording backend, raw clients --------
#
# RecordingBackend keeps every byte veer sends it, per connection, and parses
# that byte stream with a strict HTTP/1.1 request parser of its own, so a test
# can say "nothing reached the backend" or "exactly this one request arrived,
# framed unambiguously" and notice a second (smuggled) request. RawClient
# sends raw bytes and reads responses with a deadline, EOF included.

import os  # noqa: E402 (appended section)

SMUGGLE_DEADLINE = float(os.environ.get("VEER_SMUGGLE_DEADLINE", "5"))
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class RecordedRequest:
    """One request a RecordingBackend parsed out of a connection's byte stream.

    anomalies lists what a strict HTTP/1.1 parser would not accept from a
    proxy (ambiguous framing, obs-fold, bare CR/LF, NUL, bad names...)."""

    def __init__(self, conn):
        self.conn = conn
        self.start = b""
        self.method = self.target = self.version = ""
        self.fields = []  # (name, value) as bytes, value without OWS
        self.body = b""
        self.framing = "none"  # none | length | chunked
        self.raw = b""
        self.anomalies = []

    def values(self, name):
        n = name.lower().encode()
        return [v for k, v in self.fields if k.lower() == n]

    def header(self, name):
        v = self.values(name)
        return v[0].decode("latin-1") if v else None

    def __repr__(self):
        return "<%s %r body=%r anomalies=%r>" % (self.conn, self.start, self.body[:60],
                                                 self.anomalies)


def _parse_chunked(buf, p):
    """(body, end) of a chunked body at buf[p:]; None if incomplete; ValueError if bad."""
    body = bytearray()
    while True:
        e = buf.find(b"\r\n", p)
        if e < 0:
            if len(buf) - p > 70000:
                raise ValueError("chunk-size line too long")
            return None
        line = bytes(buf[p:e])
        size = line.split(b";", 1)[0]
        if not size or any(c not in _HEX for c in size) or b"\n" in line or b"\r" in line:
            raise ValueError("bad chunk-size line %r" % line[:80])
        n = int(size, 16)
        p = e + 2
        if n == 0:
            while True:  # trailer section
                e = buf.find(b"\r\n", p)
                if e < 0:
                    return None
                line = bytes(buf[p:e])
                p = e + 2
                if line == b"":
                    return bytes(body), p
                if b":" not in line or line[:1] in (b" ", b"\t"):
                    raise ValueError("bad trailer line %r" % line[:80])
        if len(buf) < p + n + 2:
            return None
        body += buf[p:p + n]
        if buf[p + n:p + n + 2] != b"\r\n":
            raise ValueError("bad chunk terminator")
        p += n + 2


def parse_recorded_request(buf, pos, conn=0):
    """(RecordedRequest, end) for the request at buf[pos:], None while
    incomplete; ValueError when the bytes cannot be framed at all."""
    i = buf.find(b"\r\n\r\n", pos)
    if i < 0:
        if len(buf) - pos > 1 << 20:
            raise ValueError("request head over 1 MiB")
        return None
    req = RecordedRequest(conn)
    lines = bytes(buf[pos:i]).split(b"\r\n")
    req.start = lines[0]
    bad = req.anomalies
    for line in lines:
        for c, what in ((b"\r", "bare CR"), (b"\n", "bare LF"), (b"\0", "NUL")):
            if c in line:
                bad.append("%s in %r" % (what, line[:80]))
    parts = req.start.split(b" ")
    if len(parts) != 3:
        bad.append("request line is not METHOD SP TARGET SP VERSION: %r" % req.start[:80])
        parts = (parts + [b"", b"", b""])[:3]
    req.method, req.target, req.version = (x.decode("latin-1") for x in parts)
    if req.version != "HTTP/1.1":
        bad.append("forwarded as %r, not HTTP/1.1" % req.version)
    if not parts[0] or any(c not in _TCHAR for c in parts[0]):
        bad.append("method is not a token: %r" % parts[0])
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            bad.append("obs-fold line %r" % line[:80])
            continue
        if b":" not in line:
            bad.append("field line without colon %r" % line[:80])
            continue
        name, value = line.split(b":", 1)
        if not name or any(c not in _TCHAR for c in name):
            bad.append("bad field name %r" % name[:80])
        req.fields.append((name, value.strip(b" \t")))
    for c in bytes(b"".join(v for _, v in req.fields)):
        if c < 0x20 and c != 0x09 or c == 0x7F:
            bad.append("control character 0x%02x in a field value" % c)
            break
    te, cl = req.values("Transfer-Encoding"), req.values("Content-Length")
    p = i + 4
    if len(req.values("Host")) != 1:
        bad.append("%d Host fields" % len(req.values("Host")))
    if te:
        if cl:
            bad.append("both Transfer-Encoding and Content-Length")
        if len(te) != 1 or te[0].lower() != b"chunked":
            bad.append("Transfer-Encoding is not exactly chunked: %r" % te)
        if te[-1].split(b",")[-1].strip().lower() != b"chunked":
            raise ValueError("cannot frame Transfer-Encoding %r" % te)
        r = _parse_chunked(buf, p)
        if r is None:
            return None
        req.body, end = r
        req.framing = "chunked"
    elif cl:
        if len(cl) != 1:
            bad.append("%d Content-Length fields" % len(cl))
        if not cl[0].isdigit():
            raise ValueError("bad Content-Length %r" % cl[0])
        n = int(cl[0])
        if len(buf) < p + n:
            return None
        req.body, end = bytes(buf[p:p + n]), p + n
        req.framing = "length"
    else:
        end = p
    req.raw = bytes(buf[pos:end])
    return req, end


class BackendConn:
    """What one backend connection received: raw bytes, parsed requests, how it ended."""

    def __init__(self, index):
        self.index = index
        self.raw = bytearray()
        self.requests = []
        self.error = None  # the stream could not be parsed
        self.leftover = b""  # bytes of an incomplete request when the peer closed
        self.eof = False

    def __repr__(self):
        return ("<conn %d raw=%d bytes requests=%r error=%r leftover=%r eof=%s>"
                % (self.index, len(self.raw), self.requests, self.error, self.leftover[:80],
                   self.eof))


def echo_response(sock, req):
    """The default answer: 200 naming the request it answers, keep-alive."""
    body = ("%s %s\n" % (req.method, req.target)).encode("latin-1")
    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Echo-Target: %s\r\nX-Echo-Host: %s\r\n"
                 b"Content-Length: %d\r\n\r\n%s"
                 % (req.target.encode("latin-1"), (req.header("Host") or "").encode("latin-1"),
                    len(body), body))
    return True


class RecordingBackend:
    """A raw-socket backend that records everything it is sent.

    respond(sock, req, conn) answers one parsed request (default:
    echo_response) and returns True to keep reading the connection. Every
    connection is a BackendConn in conns (in accept order); requests lists
    every parsed request of every connection in arrival order."""

    def __init__(self, respond=None):
        self.respond = respond or (lambda sock, req, conn: echo_response(sock, req))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.requests = []
        self.lock = threading.Lock()
        self.closed = False
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                rec = BackendConn(len(self.conns))
                self.conns.append(rec)
                self._socks.append(c)
            threading.Thread(target=self._serve, args=(c, rec), daemon=True).start()

    def _serve(self, c, rec):
        buf = bytearray()
        pos = 0
        try:
            while True:
                try:
                    r = parse_recorded_request(buf, pos, rec.index)
                except ValueError as e:
                    rec.error = str(e)
                    return
                if r is not None:
                    req, pos = r
                    with self.lock:
                        rec.requests.append(req)
                        self.requests.append(req)
                    if not self.respond(c, req, rec):
                        return
                    continue
                d = c.recv(65536)
                if not d:
                    rec.leftover = bytes(buf[pos:])
                    return
                with self.lock:
                    rec.raw += d
                buf += d
        except OSError as e:
            if rec.error is None:
                rec.error = "socket error: %r" % e
        finally:
            rec.eof = True
            try:
                c.close()
            except OSError:
                pass

    def snapshot(self):
        """(conns, requests) copies, taken under the lock."""
        with self.lock:
            return list(self.conns), list(self.requests)

    def describe(self):
        conns, _ = self.snapshot()
        return "\n".join("  %r raw=%r" % (c, bytes(c.raw[:300])) for c in conns) or "  (no connection)"

    def close(self):
        self.closed = True
        veertest.close_listener(self.sock)
        with self.lock:
            for c in self._socks:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass


class RawResponse:
    def __init__(self):
        self.start = b""
        self.status = None
        self.fields = []
        self.body = b""
        self.complete = True
        self.raw = b""

    def header(self, name):
        for k, v in self.fields:
            if k.lower() == name.lower().encode():
                return v.decode("latin-1")
        return None

    def __repr__(self):
        return "<%r %r body=%r complete=%s>" % (self.start, self.fields, self.body[:200],
                                                self.complete)


def _dechunk_lenient(buf, p):
    """(body, end, complete) of a chunked body at buf[p:]; None if more is needed."""
    body = bytearray()
    while True:
        e = buf.find(b"\r\n", p)
        if e < 0:
            return None
        size = buf[p:e].split(b";", 1)[0].strip()
        try:
            n = int(size, 16)
        except ValueError:
            return bytes(body), p, False
        p = e + 2
        if n == 0:
            e = buf.find(b"\r\n\r\n", p - 2)
            if e < 0:
                return None
            return bytes(body), e + 4, True
        if len(buf) < p + n + 2:
            return None
        body += buf[p:p + n]
        if buf[p + n:p + n + 2] != b"\r\n":
            return bytes(body), p + n, False
        p += n + 2


def parse_raw_response(buf, eof, method="GET"):
    """(RawResponse, end) of the final response at the start of buf, skipping
    1xx (not 101); None when more bytes are needed. At eof a body cut short
    gives complete=False."""
    p = 0
    while True:
        i = buf.find(b"\r\n\r\n", p)
        if i < 0:
            if eof and len(buf) > p:
                r = RawResponse()
                r.start, r.complete, r.raw = bytes(buf[p:p + 200]), False, bytes(buf[p:])
                return r, len(buf)
            return None
        r = RawResponse()
        lines = bytes(buf[p:i]).split(b"\r\n")
        r.start = lines[0]
        try:
            r.status = int(r.start.split(b" ")[1])
        except (IndexError, ValueError):
            r.status = None
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            r.fields.append((k, v.strip()))
        body_at = i + 4
        if r.status is not None and 100 <= r.status < 200 and r.status != 101:
            p = body_at
            continue
        break
    te = (r.header("Transfer-Encoding") or "").lower()
    cl = r.header("Content-Length")
    if method == "HEAD" or r.status in (101, 204, 304):
        end = body_at
    elif "chunked" in te:
        d = _dechunk_lenient(buf, body_at)
        if d is None:
            if not eof:
                return None
            r.body, end, r.complete = bytes(buf[body_at:]), len(buf), False
        else:
            r.body, end, r.complete = d
            if not r.complete:
                end = len(buf)
    elif cl is not None and cl.isdigit():
        n = int(cl)
        if len(buf) < body_at + n:
            if not eof:
                return None
            r.body, end, r.complete = bytes(buf[body_at:]), len(buf), False
        else:
            r.body, end = bytes(buf[body_at:body_at + n]), body_at + n
    else:
        if not eof:
            return None
        r.body, end = bytes(buf[body_at:]), len(buf)
    r.raw = bytes(buf[p:end])
    return r, end


class RawClient:
    """A client connection that sends raw bytes and reads with deadlines."""

    def __init__(self, port, timeout=None):
        self.timeout = timeout or SMUGGLE_DEADLINE
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def send(self, data):
        self.sock.sendall(data)

    def half_close(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _fill(self, end):
        """Read once before monotonic time end; False on timeout or EOF."""
        left = end - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.reset = True
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_response(self, method="GET", timeout=None):
        """The next final response, or None when the server closed first.
        Raises AssertionError when nothing complete arrives within timeout."""
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            r = parse_raw_response(self.buf, self.eof, method)
            if r is not None:
                res, n = r
                del self.buf[:n]
                return res
            if self.eof and not self.buf:
                return None
            if not self._fill(end) and not self.eof:
                raise AssertionError("no complete response within %.1fs; got %r"
                                     % (timeout or self.timeout, bytes(self.buf[:300])))

    def wait_bytes(self, data, timeout=None):
        """Read until data is among the unread bytes; AssertionError on timeout."""
        end = time.monotonic() + (timeout or self.timeout)
        while data not in self.buf:
            if not self._fill(end):
                raise AssertionError("%r not received; got %r" % (data, bytes(self.buf[:300])))

    def peek(self):
        return bytes(self.buf)

    def read_to_eof(self, timeout=None):
        """(bytes left unread, whether the server closed within timeout)."""
        end = time.monotonic() + (timeout or self.timeout)
        while self._fill(end):
            pass
        d = bytes(self.buf)
        self.buf.clear()
        return d, self.eof

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- rollouts (test_rollout): rollout status, share polling, kernel-stamped arrivals --
#
# rollout_status parses `rollout status P`; SharePoller watches `show pool P
# --json` from a thread so a test can say, in its own clock, when a publish
# became visible; StampBackend records the kernel receive time of every
# request (SO_TIMESTAMPNS), so the order in which veer wrote requests to it
# can be judged exactly even when they arrive within microseconds on several
# connections, whatever the backend's threads were doing; sticky_point is
# the documented cohort hash (FNV-1a 64 of the key, mod 10000, / 100).

import struct as _struct  # noqa: E402 (appended section)

ROLLOUT_GROUP_RE = re.compile(r"^group (\S+) share (\d+) rps (\S+) error_rate (\S+)% p99_ms (\S+) "
                              r"requests (\d+)$")


def rollout_status(sock, pool="api"):
    """`rollout status POOL` decoded: a dict with pool, canary, stable, state,
    step, nsteps, share, time_in_step_s, interval_s, groups ({name: {share, rps,
    error_rate, p99_ms, requests}} plus group_order, canary first), thresholds
    (text) and verdict (text); raw keeps the reply. AssertionError when veerctl
    fails or a line does not have the documented shape."""
    p = veerctl(sock, "rollout", "status", pool)
    if p.returncode != 0 or not p.stdout.endswith("\n\n"):
        raise AssertionError("rollout status %s: exit %d: %r %r" % (pool, p.returncode, p.stdout,
                                                                    p.stderr))
    out = {"raw": p.stdout, "groups": {}, "group_order": []}
    for line in p.stdout.rstrip("\n").split("\n"):
        w = line.split()
        if line.startswith("pool ") and len(w) == 6 and w[2] == "canary" and w[4] == "stable":
            out.update(pool=w[1], canary=w[3], stable=w[5])
        elif line.startswith("state ") and len(w) == 2:
            out["state"] = w[1]
        elif line.startswith("step ") and len(w) == 8 and w[2] == "share":
            i, k = w[1].split("/")
            out.update(step=int(i), nsteps=int(k), share=int(w[3]),
                       time_in_step_s=float(w[5]), interval_s=float(w[7]))
        elif line.startswith("group "):
            m = ROLLOUT_GROUP_RE.match(line)
            if not m:
                raise AssertionError("rollout status: bad group line %r" % line)
            out["groups"][m.group(1)] = {"share": int(m.group(2)), "rps": float(m.group(3)),
                                         "error_rate": float(m.group(4)),
                                         "p99_ms": float(m.group(5)),
                                         "requests": int(m.group(6))}
            out["group_order"].append(m.group(1))
        elif line.startswith("thresholds "):
            out["thresholds"] = line[len("thresholds "):]
        elif line.startswith("verdict "):
            out["verdict"] = line[len("verdict "):]
        else:
            raise AssertionError("rollout status: unexpected line %r in %r" % (line, p.stdout))
    for k in ("pool", "state", "step", "thresholds", "verdict"):
        if k not in out:
            raise AssertionError("rollout status: no %s line in %r" % (k, p.stdout))
    return out


class SharePoller:
    """Polls `show pool POOL --json` on its own admin connection every interval
    seconds until stopped. samples: (t_sent, t_reply, generation, {group:
    share}) in monotonic time; the moment a publish became visible lies between
    the t_sent of the first sample showing it and the t_reply of that sample."""

    def __init__(self, sock, pool="api", interval=0.005):
        self.conn = AdminConn(sock)
        self.pool = pool
        self.interval = interval
        self.samples = []
        self.error = None
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                reply = self.conn.command("show pool %s --json" % self.pool)
                t1 = time.monotonic()
                doc = json.loads(reply)
                with self.lock:
                    self.samples.append((t0, t1, doc["generation"], pool_shares(doc)))
                self._stop.wait(self.interval)
        except Exception as e:  # reported by first()/stop()
            self.error = e

    def first(self, pred, after=None):
        """The first sample (t_sent, t_reply, gen, shares) with pred(shares) true
        (sent after monotonic time `after` when given), or None."""
        if self.error is not None:
            raise AssertionError("share poller failed: %r" % self.error)
        with self.lock:
            for s in self.samples:
                if (after is None or s[0] >= after) and pred(s[3]):
                    return s
        return None

    def wait_first(self, pred, after=None, timeout=None, what="a share change"):
        return veertest.wait_for(lambda: self.first(pred, after), timeout=timeout or
                                 veertest.DEADLINE, what=what)

    def stop(self):
        self._stop.set()
        self._thread.join(veertest.DEADLINE)
        self.conn.close()
        if self.error is not None:
            raise AssertionError("share poller failed: %r" % self.error)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for c in data:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def sticky_point(key):
    """A sticky key's point in [0,100): FNV-1a 64 of its bytes, mod 10000, / 100."""
    return (fnv1a64(key.encode() if isinstance(key, str) else key) % 10000) / 100.0


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value

StampedRequest = collections.namedtuple("StampedRequest", "kernel_ts mono conn target headers")


class StampBackend:
    """A raw-socket backend that stamps each request with the kernel's receive
    time of its first byte (SO_TIMESTAMPNS, CLOCK_REALTIME): the order of
    those stamps is the order in which the bytes reached the socket, which a
    thread-per-connection backend's own clock cannot tell apart when requests
    arrive within microseconds on different connections. mono is that time
    mapped onto time.monotonic().

    Requests with User-Agent veer-health are readiness checks, answered 200
    when healthy else 503, Connection: close, and recorded in checks (t, status);
    every other request is client traffic, recorded in requests (a
    StampedRequest) and answered 200 with X-Backend: name, keep-alive, after
    hold(target) returns when a hold is set. Requests carry no body (GET).
    accepted[i] is when connection i was accepted (monotonic)."""

    def __init__(self, name, healthy=True, health_path="/ready", hold=None):
        self.name = name
        self.healthy = healthy
        self.health_path = health_path
        self.hold = hold  # hold(target) runs before a client request is answered
        self.requests = []
        self.checks = []
        self.lock = threading.Lock()
        self.closed = False
        self.conns = []
        self.accepted = []  # monotonic time each connection was accepted, by index
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        # realtime -> monotonic, measured once (the run is short; drift is negligible)
        self.offset = time.time() - time.monotonic()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def set_healthy(self, ok):
        with self.lock:
            self.healthy = ok
        return time.monotonic()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            with self.lock:
                self.conns.append(c)
                self.accepted.append(time.monotonic())
                idx = len(self.conns) - 1
            threading.Thread(target=self._serve, args=(c, idx), daemon=True).start()

    def _recv(self, c):
        """(data, kernel time in seconds or None)."""
        data, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(16))
        ts = None
        for level, typ, d in anc:
            if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(d) >= 16:
                sec, ns = _struct.unpack("qq", d[:16])
                ts = sec + ns / 1e9
        return data, ts

    def _serve(self, c, idx):
        buf = b""
        first_ts = None  # the kernel time of the first byte of the request in buf
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d, ts = self._recv(c)
                    if not d:
                        return
                    if not buf:
                        first_ts = ts
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                ts, first_ts = first_ts, None
                if buf:  # pipelined bytes: their own stamp is unknown, use this one's
                    first_ts = ts
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ")[1].decode("latin-1")
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(b":")
                    headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
                if headers.get("user-agent") == HEALTH_UA:
                    with self.lock:
                        status = 200 if self.healthy and target == self.health_path else 503
                        self.checks.append((time.monotonic(), status))
                    c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                              % status)
                    return
                with self.lock:
                    self.requests.append(StampedRequest(
                        ts, ts - self.offset if ts is not None else time.monotonic(), idx,
                        target, headers))
                hold = self.hold
                if hold is not None:
                    hold(target)
                body = (self.name + "\n").encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                          % (len(body), self.name.encode(), body))
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.closed = True
        veertest.close_listener(self.sock)
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass


# --- TLS termination (test_tls): certificates made at test time, TLS clients, s_client --
#
# TlsFiles makes a CA, self-signed and CA-issued certificates (`openssl req
# -x509`) and real OCSP responses (`openssl ocsp` against an index.txt) in a
# temp dir, and tells which of them a DER certificate is. TlsClient is a
# veertest.Client over TLS. s_client runs `openssl s_client`; with -msg its
# output is decoded by s_client_messages, and stapled_ocsp says whether a
# received handshake message carries an OCSP response byte for byte.

import ssl  # noqa: E402 (appended section)
import tempfile as _tls_tempfile  # noqa: E402
import shutil as _tls_shutil  # noqa: E402
import os as _tls_os  # noqa: E402
import warnings as _tls_warnings  # noqa: E402


def openssl_run(*args, cwd=None):
    """Run `openssl ARGS...`; its stdout (bytes), AssertionError with stderr on failure."""
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        raise AssertionError("openssl %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                          p.stderr.decode(errors="replace")))
    return p.stdout


class TlsFiles:
    """Certificates, keys and OCSP responses in a temp dir: NAME.pem, NAME.key,
    NAME.ocsp. name_of(der) names the certificate a peer presented."""

    def __init__(self):
        self.dir = _tls_tempfile.mkdtemp(prefix="veer-tls-")
        self.names = {}       # DER -> name
        self.issued_names = []
        self.serial = 0x1000

    def path(self, fname):
        return _tls_os.path.join(self.dir, fname)

    def cert(self, name):
        return self.path(name + ".pem")

    def key(self, name):
        return self.path(name + ".key")

    def ocsp(self, name):
        return self.path(name + ".ocsp")

    def der(self, name):
        with open(self.cert(name)) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def _register(self, name):
        self.names[self.der(name)] = name
        return name

    def name_of(self, der):
        """The name of the certificate whose DER is der, else a description."""
        if der is None:
            return "<no certificate>"
        return self.names.get(der, "<unknown certificate of %d bytes>" % len(der))

    @staticmethod
    def _newkey(kind):
        if kind == "rsa":
            return ["-newkey", "rsa:2048"]
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]

    def ca(self):
        """A CA (ca.pem, ca.key) that issued() signs with."""
        openssl_run("req", "-x509", *self._newkey("ec"), "-nodes", "-keyout", "ca.key",
                    "-out", "ca.pem", "-days", "3", "-subj", "/CN=veer test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                    cwd=self.dir)

    def self_signed(self, name, sans, cn=None, kind="ec"):
        """NAME.pem / NAME.key, self-signed, subjectAltName DNS:sans (CN name or cn)."""
        args = ["req", "-x509", *self._newkey(kind), "-nodes", "-keyout", name + ".key",
                "-out", name + ".pem", "-days", "3", "-subj", "/CN=" + (cn or name)]
        if sans:
            args += ["-addext", "subjectAltName=" + ",".join("DNS:" + s for s in sans)]
        openssl_run(*args, cwd=self.dir)
        return self._register(name)

    def issued(self, name, sans, cn=None, kind="ec"):
        """NAME.pem / NAME.key signed by ca() (call it first), with a serial of its own."""
        self.serial += 1
        args = ["req", "-x509", *self._newkey(kind), "-nodes", "-keyout", name + ".key",
                "-out", name + ".pem", "-days", "3", "-subj", "/CN=" + (cn or name),
                "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "0x%X" % self.serial,
                "-addext", "subjectAltName=" + ",".join("DNS:" + s for s in sans)]
        openssl_run(*args, cwd=self.dir)
        self.issued_names.append((name, self.serial, "/CN=" + (cn or name)))
        return self._register(name)

    def ocsp_response(self, name, out=None):
        """A DER OCSP response (status good) for issued certificate NAME, made by
        `openssl ocsp` as a responder over an index.txt: NAME.ocsp, or out."""
        lines = []
        for n, serial, subject in self.issued_names:
            end = openssl_run("x509", "-in", self.cert(n), "-noout", "-enddate").decode()
            t = ssl.cert_time_to_seconds(end.strip().split("=", 1)[1])
            lines.append("V\t%s\t\t%X\tunknown\t%s\n"
                         % (time.strftime("%y%m%d%H%M%SZ", time.gmtime(t)), serial, subject))
        with open(self.path("index.txt"), "w") as f:
            f.write("".join(lines))
        req = name + ".ocspreq"
        openssl_run("ocsp", "-issuer", "ca.pem", "-cert", name + ".pem", "-no_nonce",
                    "-reqout", req, cwd=self.dir)
        out = out or name + ".ocsp"
        openssl_run("ocsp", "-index", "index.txt", "-rsigner", "ca.pem", "-rkey", "ca.key",
                    "-CA", "ca.pem", "-reqin", req, "-respout", out, "-ndays", "2", cwd=self.dir)
        text = openssl_run("ocsp", "-respin", out, "-resp_text", "-noverify",
                           cwd=self.dir).decode()
        if "Cert Status: good" not in text:
            raise AssertionError("openssl ocsp made no good response:\n" + text)
        return self.path(out)

    def adopt(self, name, other, other_name):
        """Copy other's OTHER_NAME.pem/.key here as NAME.pem/.key."""
        _tls_shutil.copyfile(other.cert(other_name), self.cert(name))
        _tls_shutil.copyfile(other.key(other_name), self.key(name))
        return self._register(name)

    def close(self):
        _tls_shutil.rmtree(self.dir, ignore_errors=True)


def tls_client_context(min_version=None, max_version=None, ciphers=None, alpn=None,
                       tickets=True, strict_eof=False):
    """A client SSLContext that verifies nothing (tests compare the presented
    certificate themselves), limited to the given versions, TLS <= 1.2 suites
    (OpenSSL cipher string), ALPN protocols; tickets=False asks for no
    session ticket (TLS 1.2 then resumes through the server's session cache).
    strict_eof=True makes a close without close_notify an error at the TLS
    level (Debian's Python sets OP_IGNORE_UNEXPECTED_EOF by default,
    python.org's does not; then SSL reads raise ssl.SSLError on such a close,
    an SSLEOFError or not depending on the Python version)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if strict_eof:
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    with _tls_warnings.catch_warnings():
        _tls_warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 / 1.1
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


class TlsClient(veertest.Client):
    """veertest.Client over TLS: the handshake is done when the constructor
    returns (ssl.SSLError if it fails). sni=None sends no server name."""

    def __init__(self, port, ctx=None, sni=None, session=None, timeout=veertest.DEADLINE):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = (ctx or tls_client_context()).wrap_socket(raw, server_hostname=sni,
                                                                  session=session)
        except BaseException:
            raw.close()
            raise
        self.reader = veertest.Reader(self.sock)

    def cert_der(self):
        """The DER of the certificate the server presented."""
        return self.sock.getpeercert(binary_form=True)

    def is_closed(self, timeout=veertest.DEADLINE):
        self.sock.settimeout(timeout)
        try:
            if self.reader.buf:
                return False
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return True
        except socket.timeout:
            return False
        except ssl.SSLError as e:  # an EOF without close_notify, with strict_eof
            if "EOF" in str(e).upper():
                return True
            raise


def tls_listen_text(entries, protocols=None, ciphers=None):
    """A listener's `tls = {...};` from entries (cert, key, ocsp or None), one
    certificate entry per line."""
    lines = []
    for cert, key, ocsp in entries:
        o = ' ocsp = "%s";' % ocsp if ocsp else ""
        lines.append('      { cert = "%s"; key = "%s";%s }' % (cert, key, o))
    extra = ""
    if protocols:
        extra += ' protocols = "%s";' % protocols
    if ciphers:
        extra += ' ciphers = "%s";' % ciphers
    return "tls = { certificates = (\n%s\n    );%s };" % (",\n".join(lines), extra)


TLS_LISTEN_RE = re.compile(r"listening on \S+:(\d+) \(pool [^,)]+, \d+ workers((?:, [a-z]+)*)\)")


def tls_listener_ports(veer):
    """{"tls": [ports], "plain": [ports]} of veer's listeners in log order,
    from its "listening on ADDR:PORT (pool P, N workers[, tls])" lines."""
    veer.wait_log(r"veer \S+ ready", what="veer ready")
    out = {"tls": [], "plain": []}
    for line in veer.log():
        m = TLS_LISTEN_RE.search(line)
        if m:
            out["tls" if ", tls" in m.group(2) else "plain"].append(int(m.group(1)))
    return out


def s_client(port, *args, input=b"", timeout=None):
    """`openssl s_client -connect 127.0.0.1:PORT ARGS...` with input on stdin
    (then EOF); the CompletedProcess, stdout and stderr as text."""
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                       input=input, capture_output=True, timeout=timeout or veertest.DEADLINE)
    return subprocess.CompletedProcess(p.args, p.returncode,
                                       p.stdout.decode("utf-8", "replace"),
                                       p.stderr.decode("utf-8", "replace"))


_MSG_RE = re.compile(r"^(<<<|>>>) (TLS [\d.]+|\?\?\?), (\w+) \[length ([0-9a-f]+)\]"
                     r"(?:, (\w+))?")
_HEX_RE = re.compile(r"^    ((?:[0-9a-f]{2} ?)+)$")


def s_client_messages(out):
    """The protocol messages in `s_client -msg` output: (direction "<<<" or
    ">>>", name, bytes). name is the handshake type (ServerHello,
    Certificate, CertificateStatus, ...) or the content type."""
    msgs, cur = [], None
    for line in out.splitlines():
        m = _MSG_RE.match(line)
        if m:
            cur = [m.group(1), m.group(5) or m.group(3), bytearray()]
            msgs.append(cur)
            continue
        h = _HEX_RE.match(line)
        if h and cur is not None:
            cur[2] += bytes.fromhex(h.group(1))
            continue
        cur = None
    return [(d, n, bytes(b)) for d, n, b in msgs]


def stapled_ocsp(msgs, der):
    """True when a handshake message from the server carries exactly der as
    its OCSP response: TLS 1.2 CertificateStatus, or the status_request
    extension of a TLS 1.3 Certificate entry (status_type ocsp, 24-bit
    length, the response)."""
    want = b"\x01" + len(der).to_bytes(3, "big") + der
    for d, name, data in msgs:
        if d == "<<<" and name in ("CertificateStatus", "Certificate") and want in data:
            return True
    return False


def warm_upstreams(port, backend, n, path="/warm"):
    """Make veer hold n idle keep-alive connections to a StampBackend: n
    clients send one request each at once and the backend answers none until
    all n have arrived, so veer had to open n connections (with one worker
    they all sit in that worker's pool afterwards)."""
    barrier = threading.Barrier(n)
    before = len(backend.conns)
    backend.hold = lambda target: barrier.wait(veertest.DEADLINE) if target.startswith(path) \
        else None
    results = [None] * n

    def one(i):
        c = veertest.Client(port)
        try:
            r = c.request("GET", "%s/%d" % (path, i))
            results[i] = r.status if r else None
        except (OSError, ValueError) as e:
            results[i] = repr(e)
        finally:
            c.close()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(veertest.DEADLINE + 5)
    backend.hold = None
    if results != [200] * n:
        raise AssertionError("warming %d upstream connections: %r" % (n, results))
    return len(backend.conns) - before
