#!/usr/bin/env python3
"""The soak: every kind of client at once against veer while the operator
changes everything, for a bounded time, then a strict account.

Clients (threads, each its own connection, nothing retried):
  keepalive  GETs back to back on one connection (reconnects after a
             `Connection: close` answer)
  pipelined  batches of 2-6 GETs written at once, answers read in order
  chunked    POST /echo with a chunked body; the backend answers with a
             Content-Length or a chunked body, and the echo must match
  tunnel     WebSocket upgrade (101), a few echoed frames, close handshake
  tls        keep-alive GETs over TLS, a new session every few requests
  slow       a head written in pieces, a body trickled, a 256 KiB answer read
             slowly

Operations (one thread, one after another, every --op-interval seconds):
shift (with a publish), drain --wait then ready, reload (the config file
edited), add backend / wait READY / drain / del backend, set weight,
maintenance on --hold with a shift published while requests are held then
maintenance off, a rollout with a preflight (and half the time a shadow
phase) then its abort, the mirror switch (off, or on to a group at a percent:
pool api mirrors GETs and chunked POSTs all along), a DNS change (dnsmasq's answer for the name pool api's
discover entry follows: instances come, go, come back, all go), route set (route ka between two pools) or rollback route,
route maintenance on --hold for ka with a route set published while its
requests are held then off, and a binary upgrade (veerctl upgrade) every
--upgrade-every seconds.

A scraper reads /metrics, /status and /status?history=1 every 200 ms all
along (sliced renders that restart when reloads and route sets change the
tables under them): every answer 200 and well formed.

Checks: every request got exactly one well-formed answer within --deadline
seconds: 200 from a backend (the right body) or veer's 503 for maintenance
or no eligible backend (JSON body); no reset, no hang, no close in the
middle of an answer. Pipelined requests behind a `Connection: close` answer
and WebSocket tunnels that veer closes while an old process shuts down after
an upgrade are counted apart (both are documented behaviour) and fail the
run when they happen outside an upgrade window. At the end every veer
process exited 0, nothing aborted, no sanitizer report in the log, and
`audit verify` passes.
"""

import argparse
import base64
import collections
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import veertest  # noqa: E402
from dnsfix import DnsServer  # noqa: E402
from test_discovery import common_port  # noqa: E402
from veertest import Reader, read_response, wait_for  # noqa: E402
from helpers import (StreamReader, TlsFiles, become_subreaper, health_text, http_get,  # noqa: E402
                     read_head, iter_body, shutdown_summary, tls_client_context, tls_listen_text,
                     tls_listener_ports, ws_accept, ws_frame, ws_read_frame)

BIG = 256 * 1024


# --- backends ---------------------------------------------------------------------------------


class SoakBackend:
    """A threaded HTTP/1.1 backend: GET anything -> 200 NAME\\n; /slow/.. waits
    20-200 ms first; /big -> 256 KiB of a known pattern; POST /echo -> the body
    back (chunked when the request asks with X-Chunked-Reply); Upgrade:
    websocket -> 101 and an echo of every frame; /ready -> 200."""

    def __init__(self, name, host="127.0.0.1", port=0):
        self.name = name
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        self.lock = threading.Lock()
        self.conns = set()
        self.served = 0
        self.errors = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        reader = StreamReader(c)
        try:
            while True:
                head = read_head(reader, veertest.Request)
                if head is None:
                    break
                if not self._handle(c, reader, head):
                    break
        except (OSError, ValueError) as e:
            if not self.closed:
                self.errors.append(repr(e))
        finally:
            with self.lock:
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def _send(self, c, status, body, extra=b""):
        c.sendall(b"HTTP/1.1 %d OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n%s\r\n%s"
                  % (status, len(body), self.name.encode(), extra, body))

    def _handle(self, c, reader, head):
        body = b"".join(iter_body(reader, head, head.method))
        with self.lock:
            self.served += 1
        target = head.target
        if (head.header("Upgrade") or "").lower() == "websocket":
            key = head.header("Sec-WebSocket-Key")
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nX-Backend: %s\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                      % (self.name.encode(), ws_accept(key).encode()))
            while True:
                frame = ws_read_frame(reader)
                if frame is None:
                    return False
                opcode, payload = frame
                c.sendall(ws_frame(payload, opcode))
                if opcode == 8:
                    return False
        if target.startswith("/ready"):
            self._send(c, 200, b"ready")
        elif target.startswith("/echo"):
            if head.header("X-Chunked-Reply"):
                out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: %s\r\n\r\n" \
                    % self.name.encode()
                for i in range(0, len(body), 1000):
                    piece = body[i:i + 1000]
                    out += b"%x\r\n%s\r\n" % (len(piece), piece)
                c.sendall(out + b"0\r\n\r\n")
            else:
                self._send(c, 200, body)
        elif target.startswith("/big"):
            self._send(c, 200, pattern(BIG))
        else:
            if target.startswith("/slow"):
                time.sleep(random.uniform(0.02, 0.2))
            self._send(c, 200, (self.name + "\n").encode())
        return True

    def close(self):
        self.closed = True
        veertest.close_listener(self.sock)
        with self.lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


_PATTERN = bytes(range(256)) * (BIG // 256)


def pattern(n):
    return _PATTERN[:n]


# --- the account ------------------------------------------------------------------------------


class Account:
    """What every client saw, and what the operator did."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = collections.Counter()        # kind -> requests sent
        self.answered = collections.Counter()    # kind -> answers received
        self.status = collections.Counter()      # (kind, status[, reason]) -> n
        self.after_close = collections.Counter()  # kind -> requests behind a Connection: close
        self.tunnel_cut = 0                      # tunnels veer closed during an upgrade
        self.ops = collections.Counter()         # op -> done
        self.op_errors = collections.Counter()   # op -> ERR replies
        self.op_error_text = []
        self.failures = []                       # (time, kind, text)
        self.windows = []                        # [start, end] of upgrades (end None: open)
        self.latency_max = collections.defaultdict(float)

    def fail(self, kind, text):
        t = time.monotonic()
        up = self.upgrade_note(t)
        with self.lock:
            self.failures.append((t, kind, text + up))

    def upgrade_note(self, t):
        """' (Xs after upgrade N started)' when t is near an upgrade."""
        with self.lock:
            for n, (start, end) in enumerate(self.windows, 1):
                if start <= t and (end is None or t <= end + 2.0):
                    return " [%.3fs after upgrade %d started%s]" % (
                        t - start, n, "" if end is None else ", %.3fs after the old process "
                        "exited" % (t - end))
        return ""

    def count_sent(self, kind, n=1):
        with self.lock:
            self.sent[kind] += n

    def count_answer(self, kind, status, reason=None, latency=0.0):
        with self.lock:
            self.answered[kind] += 1
            self.status[(kind, status, reason) if reason else (kind, status)] += 1
            if latency > self.latency_max[kind]:
                self.latency_max[kind] = latency

    def in_upgrade(self, t0, t1):
        """Whether [t0, t1] touches an upgrade window (start of the command to
        a second after the old process exited)."""
        with self.lock:
            for start, end in self.windows:
                if t1 >= start and (end is None or t0 <= end + 1.0):
                    return True
        return False


class Failure(Exception):
    pass


def check_answer(acct, kind, r, names, expect_body=None):
    """Judge one response; returns whether it carries Connection: close.
    Raises Failure for anything that is not a well-formed expected answer."""
    if r is None:
        raise Failure("connection closed without an answer")
    if not r.complete:
        raise Failure("truncated answer: %s %r" % (r.start, r.body[:200]))
    if r.status == 200:
        be = r.header("X-Backend")
        if be not in names():
            raise Failure("200 without a known X-Backend: %r" % r.headers)
        want = expect_body if expect_body is not None else (be + "\n").encode()
        if r.body != want:
            raise Failure("200 from %s with a wrong body (%d bytes, want %d): %r"
                          % (be, len(r.body), len(want), r.body[:100]))
        reason = None
    elif r.status == 503:
        try:
            doc = json.loads(r.body)
        except ValueError:
            raise Failure("503 whose body is not JSON: %r" % r.body[:200])
        reason = doc.get("error")
        if reason == "maintenance":
            if r.header("Retry-After") is None:
                raise Failure("maintenance 503 without Retry-After")
        elif "no eligible backend" not in (doc.get("detail") or "") and \
                "held too long" not in (doc.get("detail") or ""):
            raise Failure("unexpected 503: %r" % r.body[:200])
        else:
            reason = doc.get("detail")
    else:
        raise Failure("unexpected status %d: %r" % (r.status, r.body[:200]))
    return reason, (r.header("Connection") or "").lower() == "close"


# --- clients ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args):
        self.args = args
        self.acct = Account()
        self.stop_ev = threading.Event()
        self.rng = random.Random(args.seed)
        self.names_lock = threading.Lock()
        self.backend_names = set()
        self.threads = []

    def names(self):
        with self.names_lock:
            return set(self.backend_names)

    # Connections -------------------------------------------------------------

    def connect(self, tls=False):
        port = self.tls_port if tls else self.port
        if tls:
            raw = socket.create_connection(("127.0.0.1", port), timeout=self.args.deadline)
            try:
                s = self.tls_ctx.wrap_socket(raw, server_hostname="soak.test",
                                             session=self.tls_session)
            except BaseException:
                raw.close()
                raise
            if s.session is not None:
                self.tls_session = s.session
            return s
        return socket.create_connection(("127.0.0.1", port), timeout=self.args.deadline)

    def run_client(self, kind, fn):
        """Loop fn(rng) until stopped; a failure is recorded and the client
        starts over on a new connection."""
        rng = random.Random("%s-%d-%d" % (kind, len(self.threads), self.args.seed))

        def loop():
            while not self.stop_ev.is_set():
                try:
                    fn(rng)
                except Failure as e:
                    self.acct.fail(kind, str(e))
                except (OSError, ValueError, ssl.SSLError) as e:
                    self.acct.fail(kind, "%s: %r" % (type(e).__name__, e))
        t = threading.Thread(target=loop, daemon=True, name=kind)
        self.threads.append(t)
        t.start()

    def _exchange_loop(self, kind, tls, rng, build, per_conn):
        """Requests one at a time on one connection until per_conn were sent,
        veer answers Connection: close, or the soak stops."""
        s = self.connect(tls)
        reader = Reader(s)
        try:
            for _ in range(per_conn):
                if self.stop_ev.is_set():
                    return
                data, method, expect = build(rng)
                t0 = time.monotonic()
                self.acct.count_sent(kind)
                if callable(data):
                    data(s)
                else:
                    s.sendall(data)
                r = self.read_answer(reader, method, t0)
                if self.judge(kind, r, t0, expect):
                    return
        finally:
            s.close()

    def judge(self, kind, r, t0, expect=None):
        """Check and count one answer to a request sent at t0; True when it
        carries Connection: close. A 503 is veer's to give only when a hold
        ran out: maintenance still on (or no eligible backend) for the whole
        hold after the request was sent."""
        reason, close = check_answer(self.acct, kind, r, self.names, expect)
        now = time.monotonic()
        # Counted as an answer (by status) even when the checks below find it wrong.
        self.acct.count_answer(kind, r.status, reason, now - t0)
        if r.status == 503:
            hold = (2.0 if reason == "maintenance" else self.args.hold_ms / 1000.0) - 0.1
            if reason != "maintenance" and self.args.hold_ms == 0:
                raise Failure("503 (%s) with hold_ms = 0, though the pool always has READY "
                              "backends" % reason)
            if now - t0 < hold:
                raise Failure("503 (%s) %.3fs after the request, before its hold ran out"
                              % (reason, now - t0))
            if reason == "maintenance":
                with self.acct.lock:  # judged at the end, when every window is closed
                    self.maint_503.append((kind, t0, now, getattr(self.tl, "on_ka_route", False)))
        return close

    def judge_maintenance_503s(self):
        """A maintenance 503 is right only when maintenance was still on when
        the request's hold ran out (a window covering sent + 2 s): the pool's
        for any request, route ka's for a request that route takes."""
        hold = 2.0 - 0.1
        for kind, t0, t1, on_ka in self.maint_503:
            windows = self.maint_windows + (self.route_windows if on_ka else [])
            if not any(a <= t0 + hold <= b for a, b in windows):
                self.acct.failures.append((t1, kind, "maintenance 503 %.3fs after the request, "
                                           "though maintenance was not on for its whole hold "
                                           "(windows near it: %s)"
                                           % (t1 - t0, self.windows_near(t0))))

    def windows_near(self, t):
        return ", ".join("[%+.3f, %s]" % (a - t, "open" if b is None else "%+.3f" % (b - t))
                         for a, b in self.maint_windows + self.route_windows if abs(a - t) < 10)

    def read_answer(self, reader, method, t0):
        try:
            return read_response(reader, method)
        except socket.timeout:
            raise Failure("no answer within %.0fs (sent %.3f)" % (self.args.deadline, t0))
        except ConnectionResetError:
            raise Failure("connection reset while waiting for an answer")

    def get(self, prefix):
        def build(rng):
            path = "/slow/%d" % rng.randrange(1 << 30) if rng.random() < 0.1 else \
                "%s/%d" % (prefix, rng.randrange(1 << 30))
            self.tl.on_ka_route = path.startswith("/ka/")  # the route "ka" takes it
            if rng.random() < 0.1:
                path = path.replace("/", "//", 1).replace("/", "/./", 2)  # canonicalized by veer
            return ("GET %s HTTP/1.1\r\nHost: soak\r\n\r\n" % path).encode(), "GET", None
        return build

    def keepalive(self, rng):
        self._exchange_loop("keepalive", False, rng, self.get("/ka"), rng.randint(20, 200))

    def tls(self, rng):
        self._exchange_loop("tls", True, rng, self.get("/tls"), rng.randint(5, 50))

    def chunked(self, rng):
        def build(rng):
            body = os.urandom(rng.randint(0, 20000))
            pieces, i = [], 0
            while i < len(body):
                n = rng.randint(1, 6000)
                pieces.append(b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n]))
                i += n
            extra = "X-Chunked-Reply: 1\r\n" if rng.random() < 0.5 else ""
            head = ("POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n%s\r\n"
                    % extra).encode()
            return head + b"".join(pieces) + b"0\r\n\r\n", "POST", body
        self._exchange_loop("chunked", False, rng, build, rng.randint(5, 50))

    def pipelined(self, rng):
        kind = "pipelined"
        s = self.connect(False)
        reader = Reader(s)
        try:
            for _ in range(rng.randint(5, 30)):
                if self.stop_ev.is_set():
                    return
                n = rng.randint(2, 6)
                data = b"".join(("GET /pipe/%d HTTP/1.1\r\nHost: soak\r\n\r\n"
                                 % rng.randrange(1 << 30)).encode() for _ in range(n))
                t0 = time.monotonic()
                self.acct.count_sent(kind, n)
                s.sendall(data)
                for k in range(n):
                    r = self.read_answer(reader, "GET", t0)
                    if self.judge(kind, r, t0):
                        self.behind_close(kind, reader, n - k - 1, t0)
                        return
        finally:
            s.close()

    def behind_close(self, kind, reader, left, t0):
        """After a Connection: close answer: veer must close, and the
        requests written behind it were not processed (RFC 9112 9.6)."""
        try:
            extra = reader.read_all()
        except ConnectionResetError:
            raise Failure("reset after a Connection: close answer")
        if extra:
            raise Failure("%d bytes after a Connection: close answer: %r" % (len(extra), extra[:200]))
        if left:
            with self.acct.lock:
                self.acct.after_close[kind] += left
            if not self.acct.in_upgrade(t0, time.monotonic()) and not self.stop_ev.is_set():
                raise Failure("%d pipelined requests dropped behind a Connection: close "
                              "outside an upgrade" % left)

    def slow(self, rng):
        kind = "slow"
        s = self.connect(False)
        reader = Reader(s)
        try:
            for _ in range(rng.randint(1, 5)):
                if self.stop_ev.is_set():
                    return
                mode = rng.choice(("head", "body", "read"))
                t0 = time.monotonic()
                self.acct.count_sent(kind)
                if mode == "head":
                    data = ("GET /slowhead/%d HTTP/1.1\r\nHost: soak\r\nX-Pad: %s\r\n\r\n"
                            % (rng.randrange(1 << 30), "p" * 200)).encode()
                    for i in range(0, len(data), 60):
                        s.sendall(data[i:i + 60])
                        time.sleep(0.03)
                    expect, method = None, "GET"
                elif mode == "body":
                    body = os.urandom(4000)
                    s.sendall(b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n"
                              % len(body))
                    for i in range(0, len(body), 1000):
                        time.sleep(0.05)
                        s.sendall(body[i:i + 1000])
                    expect, method = body, "POST"
                else:
                    s.sendall(b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n")
                    r = self.slow_read(s, reader, t0)
                    if self.judge(kind, r, t0, pattern(BIG)):
                        return
                    continue
                r = self.read_answer(reader, method, t0)
                if self.judge(kind, r, t0, expect):
                    return
        finally:
            s.close()

    def slow_read(self, s, reader, t0):
        """Read the answer 8 KiB at a time with pauses (about half a second)."""
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        orig = reader.fill

        def fill():
            time.sleep(0.015)
            d = s.recv(8192)
            if not d:
                return False
            reader.buf += d
            return True
        reader.fill = fill
        try:
            return self.read_answer(reader, "GET", t0)
        finally:
            reader.fill = orig

    def tunnel(self, rng):
        kind = "tunnel"
        s = self.connect(False)
        reader = StreamReader(s)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            t0 = time.monotonic()
            self.acct.count_sent(kind)
            s.sendall(("GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
            try:
                head = read_head(reader)
            except socket.timeout:
                raise Failure("no answer to the upgrade within %.0fs" % self.args.deadline)
            if head is None:
                raise Failure("connection closed without an answer to the upgrade")
            if head.status != 101:
                body = b"".join(iter_body(reader, head))
                head.body = body
                head.complete = True
                self.judge(kind, head, t0)
                return
            if head.header("Sec-WebSocket-Accept") != ws_accept(key) or \
                    head.header("X-Backend") not in self.names():
                raise Failure("bad 101: %r" % head.headers)
            self.acct.count_answer(kind, 101, None, time.monotonic() - t0)
            for _ in range(rng.randint(1, 8)):
                if self.stop_ev.is_set():
                    break
                msg = os.urandom(rng.choice((5, 100, 3000, 70000)))
                t1 = time.monotonic()
                s.sendall(ws_frame(msg, 2, mask=os.urandom(4)))
                try:
                    frame = ws_read_frame(reader)
                except socket.timeout:
                    raise Failure("tunnel: no echo within %.0fs" % self.args.deadline)
                except (ValueError, ConnectionResetError) as e:
                    frame = e
                if frame is None or isinstance(frame, Exception):
                    if self.acct.in_upgrade(t1, time.monotonic()):
                        with self.acct.lock:
                            self.acct.tunnel_cut += 1
                        return
                    raise Failure("tunnel closed outside an upgrade: %r" % (frame,))
                if frame != (2, msg):
                    raise Failure("tunnel echo differs (%d bytes sent)" % len(msg))
                time.sleep(rng.uniform(0, 0.2))
            s.sendall(ws_frame(b"\x03\xe8", 8, mask=os.urandom(4)))
            try:
                frame = ws_read_frame(reader)
            except (ValueError, ConnectionResetError) as e:
                frame = e
            if frame != (8, b"\x03\xe8"):
                if (frame is None or isinstance(frame, Exception)) and \
                        self.acct.in_upgrade(t0, time.monotonic()):
                    with self.acct.lock:
                        self.acct.tunnel_cut += 1
                    return
                raise Failure("tunnel: close not echoed: %r" % (frame,))
        finally:
            s.close()

    # Operations ----------------------------------------------------------------

    def ctl(self, op, *args, timeout=None):
        p = subprocess.run([veertest.VEERCTL_BIN, "-s", self.v.admin_socket] + list(args),
                           capture_output=True, text=True, timeout=timeout or 30)
        out = p.stdout.strip()
        if p.returncode != 0:
            with self.acct.lock:
                self.acct.op_errors[op] += 1
                self.acct.op_error_text.append("%s: %s -> %s %s" % (op, " ".join(args), out,
                                                                    p.stderr.strip()))
            return None
        return out

    def op_shift(self):
        b = self.rng.choice((0, 10, 30, 50, 70, 90, 100))
        if self.ctl("shift", "shift", "api", "blue=%d" % b, "green=%d" % (100 - b), "--force"):
            self.acct.ops["shift"] += 1

    def op_weight(self):
        name = self.rng.choice(("blue-1", "blue-2", "green-1", "green-2"))
        if self.ctl("weight", "set", "weight", "api/" + name, str(self.rng.choice((1, 50, 100, 200)))):
            self.acct.ops["weight"] += 1

    def op_drain(self):
        name = self.rng.choice(("blue-2", "green-2"))
        if self.ctl("drain", "drain", "api/" + name, "--wait", "--timeout", "10s"):
            self.acct.ops["drain"] += 1
        self.ctl("ready", "set", "state", "api/" + name, "ready")

    def op_reload(self):
        self.reloads += 1
        with open(self.v.config_path, "w") as f:
            f.write(self.config_text(alt=self.reloads % 2))
        if self.ctl("reload", "reload"):
            self.acct.ops["reload"] += 1

    def op_add_del(self):
        self.extra_n += 1
        name = "extra-%d" % self.extra_n
        if not self.ctl("add", "add", "backend", "api", name, self.extra.address, "weight", "100",
                        "group", "green"):
            return
        self.acct.ops["add"] += 1
        end = time.monotonic() + 10
        while time.monotonic() < end and not self.stop_ev.is_set():
            out = self.ctl("show", "show", "pool", "api", "--json")
            doc = json.loads(out) if out else {"backends": []}
            if any(b["name"] == name and b["state"] == "READY" for b in doc["backends"]):
                break
            time.sleep(0.05)
        self.ctl("drain", "drain", "api/" + name, "--wait", "--timeout", "10s")
        if not self.ctl("del", "del", "backend", "api", name):
            self.ctl("del", "del", "backend", "api", name, "--force")
        else:
            self.acct.ops["del"] += 1

    def op_dns(self):
        """The instances behind soak.internal change: a random subset (now and
        then none) of the three; dnsmasq serves it before this returns, veer
        follows at its next resolution (TTL 1 s, min_interval 100 ms)."""
        n = self.rng.choice((0, 1, 2, 3, 3))
        addrs = sorted(self.rng.sample([b.host for b in self.dns_backends], n))
        self.dns.set_hosts({"soak.internal": addrs} if addrs else {})
        self.acct.ops["dns"] += 1

    def op_rollout(self):
        """A rollout with a preflight (every READY green backend gets two
        requests first), half the time a shadow phase after it (green gets
        mirrored requests for 300 ms; the answers differ from blue's, so
        it aborts before step 1), then aborted: its step 1 and the abort's
        rollback are two publishes under load; a reload or an upgrade
        meeting the preflight or the shadow phase stops it (ERR, counted
        apart)."""
        shadow = self.rng.random() < 0.5
        args = ["rollout", "start", "api", "canary=green", "steps=50,100", "interval=60s",
                "preflight=smoke"] + (["shadow=300ms", "shadow-percent=50"] if shadow else [])
        if self.ctl("rollout", *args) is None:
            return
        self.acct.ops["rollout+preflight" + ("+shadow" if shadow else "")] += 1
        time.sleep(0.2)
        self.ctl("rollout abort", "rollout", "abort", "api")

    def op_mirror(self):
        """The mirror switch under load: off, or on to either group at a
        random percent (one publish each; shadows in flight finish or time
        out on their own, the primaries never wait)."""
        choice = self.rng.random()
        if choice < 0.3:
            ok = self.ctl("mirror", "mirror", "api", "off")
        else:
            ok = self.ctl("mirror", "mirror", "api", "on",
                          "group=" + self.rng.choice(("blue", "green")),
                          "percent=%d" % self.rng.choice((10, 50, 100)))
        if ok:
            self.acct.ops["mirror"] += 1

    def op_hold(self):
        if self.args.no_hold:
            return
        window = [time.monotonic(), None]
        with self.acct.lock:
            self.maint_windows.append(window)
        if not self.ctl("hold", "maintenance", "on", "api", "--hold", "2s", "--retry-after", "3"):
            window[1] = time.monotonic()
            return
        self.acct.ops["maintenance hold"] += 1
        time.sleep(0.2)
        self.op_shift()  # a publish while requests are held
        time.sleep(0.2)
        if not self.ctl("hold", "maintenance", "off", "api"):
            self.ctl("hold", "maintenance", "off", "api")
        window[1] = time.monotonic()

    def op_route_set(self):
        """Route ka to the other pool (the same backends under other names, so
        every answer stays checkable), or roll the last route set back."""
        if self.rng.random() < 0.3 and self.route_sets:
            # Only a set this process made: rollback history does not cross an upgrade.
            if self.ctl("route rollback", "rollback", "route", "ka"):
                self.acct.ops["route rollback"] += 1
                self.route_sets -= 1
                self.ka_pool = "alt" if self.ka_pool == "api" else "api"
            return
        self.ka_pool = "alt" if self.ka_pool == "api" else "api"
        if self.ctl("route set", "route", "set", "ka", "pool", self.ka_pool):
            self.acct.ops["route set"] += 1
            self.route_sets += 1

    def op_route_hold(self):
        """Route maintenance with a hold on ka while a route set is published,
        then off: held requests on /ka are answered by either pool."""
        if self.args.no_hold:
            return
        window = [time.monotonic(), None]
        with self.acct.lock:
            self.route_windows.append(window)
        if not self.ctl("route hold", "route", "maintenance", "ka", "on", "--hold", "2s",
                        "--retry-after", "3"):
            window[1] = time.monotonic()
            return
        self.acct.ops["route maintenance hold"] += 1
        time.sleep(0.2)
        self.op_route_set()  # a publish while requests on the route are held
        time.sleep(0.2)
        if not self.ctl("route hold", "route", "maintenance", "ka", "off"):
            self.ctl("route hold", "route", "maintenance", "ka", "off")
        window[1] = time.monotonic()

    def op_upgrade(self):
        old = self.current_pid
        with self.acct.lock:
            window = [time.monotonic(), None]
            self.acct.windows.append(window)
        if not self.ctl("upgrade", "upgrade"):
            window[1] = time.monotonic()
            return
        # The new process says ready; the old one exits by itself.
        rx = re.compile(r"\[(\d+)\] info: veer \S+ ready")

        def new_pid():
            for line in self.v.log():
                m = rx.search(line)
                if m and int(m.group(1)) not in self.pids:
                    return int(m.group(1))
            return None
        try:
            pid = wait_for(new_pid, timeout=30, what="the upgraded veer to say ready")
        except AssertionError as e:
            self.acct.fail("upgrade", str(e))
            window[1] = time.monotonic()
            return
        self.pids.append(pid)
        self.current_pid = pid
        self.route_sets = 0
        self.acct.ops["upgrade"] += 1
        rc = self.wait_exit(old, 40)
        window[1] = time.monotonic()
        if rc != 0:
            self.acct.fail("upgrade", "old veer pid %d exited %r after the upgrade" % (old, rc))

    def scraper(self):
        """Scrape /metrics, /status and /status?history=1 of the running veer
        every 200 ms while everything else goes on: the renders are sliced
        and restart when a reload or a route set changes the tables under
        them. Every answer must be 200 and well formed (the JSON parses, has
        its routes; the metrics carry the route label); a refused connection
        is counted apart (the admin HTTP address is not inherited by an
        upgrade: the new process binds its own)."""
        rx = re.compile(r"\[(\d+)\] info: admin http on \S+:(\d+) ")
        while not self.stop_ev.wait(0.2):
            port = None
            for line in self.v.log():
                m = rx.search(line)
                if m and int(m.group(1)) == self.current_pid:
                    port = int(m.group(2))
            if port is None:
                continue
            for path in ("/metrics", "/status", "/status?history=1"):
                try:
                    status, _, body = http_get(port, path, timeout=self.args.deadline)
                except OSError:
                    with self.acct.lock:
                        self.acct.ops["scrape refused"] += 1
                    continue
                if status != 200:
                    self.acct.fail("scrape", "%s answered %d: %r" % (path, status, body[:200]))
                    continue
                if path.startswith("/status"):
                    try:
                        doc = json.loads(body)
                    except ValueError as e:
                        self.acct.fail("scrape", "%s is not JSON (%s): %r" % (path, e, body[:200]))
                        continue
                    if not isinstance(doc.get("routes"), list) or \
                            ("history" in path) != ("history" in doc):
                        self.acct.fail("scrape", "%s lacks routes or history: %r"
                                       % (path, sorted(doc)))
                        continue
                elif b'veer_requests_total{' not in body or b',route="' not in body:
                    self.acct.fail("scrape", "/metrics without the route label: %r" % body[:200])
                    continue
                with self.acct.lock:
                    self.acct.ops["scrape"] += 1

    def alive(self, pid):
        """Whether pid runs (a zombie is not running)."""
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    def wait_exit(self, pid, timeout):
        """The exit status of a veer process (ours: the first, or one we
        reaped as subreaper), None when it did not exit in time."""
        if pid == self.v.proc.pid:
            try:
                return self.v.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                p, status = os.waitpid(pid, os.WNOHANG)
                if p == pid:
                    return os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                return "not our child"
            time.sleep(0.02)
        return None

    def operations(self):
        ops = [self.op_shift, self.op_weight, self.op_drain, self.op_reload, self.op_add_del,
               self.op_hold, self.op_route_set, self.op_route_hold, self.op_dns, self.op_rollout,
               self.op_mirror]
        next_upgrade = time.monotonic() + self.args.upgrade_every
        while not self.stop_ev.wait(self.args.op_interval):
            try:
                if self.args.upgrade_every > 0 and time.monotonic() >= next_upgrade:
                    self.op_upgrade()
                    next_upgrade = time.monotonic() + self.args.upgrade_every
                    continue
                self.rng.choice(ops)()
            except Exception as e:  # an operation's own bug: report, keep going
                self.acct.fail("operation", repr(e))

    # Setup and the end -----------------------------------------------------------

    def config_text(self, alt=0):
        bl = ", ".join('{ name = "%s"; address = "%s"; weight = 100; group = "%s"; }'
                       % (b.name, b.address, b.name.split("-")[0]) for b in self.backends)
        # route ka's other pool: the same backends (they answer with their own names)
        alt_bl = ", ".join('{ name = "alt-%s"; address = "%s"; }' % (b.name, b.address)
                           for b in self.backends)
        return ('workers = %d;\n'
                'listen = ( { address = "127.0.0.1:0"; pool = "api"; },\n'
                '           { address = "127.0.0.1:0"; pool = "api"; %s } );\n'
                'admin = { socket = "%s/admin.sock"; http = "127.0.0.1:0"; };\n'
                'audit_log = "%s/audit.log";\nstate_file = "%s/state";\n'
                'timeouts = { quiet_ms = 300; idle_ms = %d; };\n'
                'preflight = ( { name = "smoke"; timeout_ms = 2000; requests = (\n'
                '  { path = "/ready"; expect_status = 200; },\n'
                '  { method = "HEAD"; path = "/ready"; } ); } );\n'
                'resolvers = { servers = ( "127.0.0.1:%d" ); interval_ms = 1000;\n'
                '              min_interval_ms = 100; timeout_ms = 500; };\n'
                'pools = ( { name = "api"; hold_ms = %d; %s\n'
                '            shares = { blue = 50; green = 50; };\n'
                '            discover = ( { name = "dns"; dns = "soak.internal:%d"; group = "green"; } );\n'
                '            mirror = { group = "green"; percent = %d.0; methods = ( "GET", "POST" );\n'
                '                       max_body_bytes = 4096; timeout_ms = 1000; };\n'
                '            backends = ( %s ); },\n'
                '          { name = "alt"; backends = ( %s ); } );\n'
                '%s'
                % (self.args.workers, self.tls_text, self.tmp, self.tmp, self.tmp,
                   60000 + 1000 * alt, self.dns.port, self.args.hold_ms,
                   health_text("/ready", 100, 1000, 1, 3), self.dns_port, 30 + 20 * alt, bl, alt_bl,
                   self.routes_text(alt)))

    @staticmethod
    def routes_text(alt):
        """Routes to pools of the same backends, so every answer stays checkable:
        a reload swaps between two tables (one with a header set, one with a
        route more), requests on /ka take a route (which route set moves
        between pools api and alt, and route maintenance holds) while the
        others fall back to the listener's."""
        ka = ('{ name = "ka"; pool = "api"; match = { path_prefix = "/ka"; };\n'
              '  request_headers = { set = ( { name = "X-Route"; value = "ka-%d"; } ); }; }' % alt)
        slow = '{ name = "slow"; pool = "api"; match = { path_prefix = "/slow"; methods = ( "GET" ); }; }'
        return "routes = ( %s );\n" % (ka if alt == 0 else ka + ",\n" + slow)

    def run(self):
        a = self.args
        subreaper = become_subreaper()
        self.backends = [SoakBackend(n) for n in ("blue-1", "blue-2", "green-1", "green-2")]
        self.extra = SoakBackend("extra")
        # Instances behind a DNS name (pool api's discover entry, group green):
        # 127.0.0.61-63 on one port, served by a real dnsmasq.
        hosts = ["127.0.0.%d" % i for i in (61, 62, 63)]
        self.dns_port = common_port(hosts)
        self.dns_backends = [SoakBackend("dns-%s" % h.rsplit(".", 1)[1], host=h, port=self.dns_port)
                             for h in hosts]
        self.dns = DnsServer(hosts={"soak.internal": hosts[:2]})
        self.backend_names = ({b.name for b in self.backends} | {"extra"} |
                              {b.name for b in self.dns_backends})
        self.maint_windows = []
        self.route_windows = []
        self.maint_503 = []
        self.tl = threading.local()
        self.ka_pool = "api"
        self.route_sets = 0  # route sets since the last upgrade, for rollback route
        self.extra_n = 0
        self.reloads = 0
        self.tls_files = TlsFiles()
        self.tls_files.self_signed("soak", ["soak.test"])
        self.tls_text = tls_listen_text([(self.tls_files.cert("soak"), self.tls_files.key("soak"),
                                          None)])
        self.tls_ctx = tls_client_context()
        self.tls_session = None
        # veertest.Veer writes the config into its own temp dir: the files
        # the config names live there too ({tmp}).
        self.tmp = "{tmp}"
        self.v = veertest.Veer(self.config_text(), workers=a.workers)
        self.tmp = self.v.tmp
        ports = tls_listener_ports(self.v)
        self.port, self.tls_port = ports["plain"][0], ports["tls"][0]
        self.pids = [self.v.proc.pid]
        self.current_pid = self.v.proc.pid
        wait_for(lambda: (self.ctl("show", "show", "pools") or "").count("READY") >= 8,
                 timeout=30, what="eight READY backends (four per pool)")
        print("soak: veer pid %d on :%d (tls :%d), %d workers, %d s, subreaper=%s"
              % (self.v.proc.pid, self.port, self.tls_port, a.workers, a.seconds, subreaper),
              flush=True)

        kinds = [("keepalive", self.keepalive, a.keepalive), ("pipelined", self.pipelined, 2),
                 ("chunked", self.chunked, 2), ("tunnel", self.tunnel, 2),
                 ("tls", self.tls, 2), ("slow", self.slow, 2)]
        for kind, fn, n in kinds:
            for _ in range(n):
                self.run_client(kind, fn)
        op_thread = threading.Thread(target=self.operations, daemon=True)
        op_thread.start()
        scrape_thread = threading.Thread(target=self.scraper, daemon=True)
        scrape_thread.start()

        self.t_start = time.monotonic()
        t_end = self.t_start + a.seconds
        last = time.monotonic()
        while time.monotonic() < t_end:
            time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
            if not self.alive(self.current_pid):
                self.acct.fail("veer", "veer pid %d died; the soak stops here" % self.current_pid)
                break
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                with self.acct.lock:
                    print("soak: %3.0fs left: %d answered, %d failures, ops %s"
                          % (t_end - last, sum(self.acct.answered.values()),
                             len(self.acct.failures), dict(self.acct.ops)), flush=True)

        self.stop_ev.set()
        op_thread.join(60)
        scrape_thread.join(60)
        for t in self.threads:
            t.join(a.deadline + 10)
        hung = [t.name for t in self.threads if t.is_alive()]
        for name in hung:
            self.acct.fail(name, "client still waiting %.0fs after the end" % (a.deadline + 10))

        self.judge_maintenance_503s()
        self.judge_mirror_report()
        audit = self.ctl("audit", "audit", "verify")
        if audit is None:
            self.acct.fail("audit", "audit verify: " + self.acct.op_error_text[-1])
        self.final_stop()
        for b in self.backends + [self.extra] + self.dns_backends:
            b.close()
        self.dns.close()
        self.tls_files.close()
        return self.report(audit)

    def judge_mirror_report(self):
        """The shadow report after everything: one JSON document whose rows
        add up (mirrored is the sum of the pair results), a mismatch list of
        at most 50. Its counts are the last process's (an upgrade starts them
        again) and go into the summary."""
        out = self.ctl("mirror report", "mirror", "report", "api", "--json")
        try:
            doc = json.loads(out)
            rows = doc["routes"]
            for row in rows:
                t = row["totals"]
                if t["mirrored"] != sum(t[k] for k in ("match", "status_diff", "body_diff",
                                                       "timeout", "error")):
                    raise ValueError("mirrored is not the sum of its results: %r" % t)
            if len(doc["mismatches"]) > 50:
                raise ValueError("%d mismatches listed" % len(doc["mismatches"]))
            self.mirror_summary = {r["route"] or "-": r["totals"]["mirrored"] for r in rows}
        except (TypeError, ValueError, KeyError) as e:
            self.acct.fail("mirror", "mirror report: %r (%s)" % (e, (out or "")[:200]))

    def final_stop(self):
        pid = self.current_pid
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        rc = self.wait_exit(pid, 60)
        if rc != 0:
            self.acct.fail("exit", "veer pid %d exited %r on SIGTERM" % (pid, rc))
        if self.v.proc.poll() is None:
            self.v.proc.kill()
            self.acct.fail("exit", "the first veer (pid %d) was still running" % self.v.proc.pid)
        self.v._reader.join(10)
        log = self.v.log()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "panic at",
                    "ERROR: "):
            hits = [l for l in log if bad in l]
            if hits:
                self.acct.fail("sanitizer", "%r in veer's log: %s" % (bad, hits[0]))
        self.summaries = []
        for p in self.pids:
            s = shutdown_summary([l for l in log if "[%d]" % p in l])
            self.summaries.append((p, s))
            if s is None:
                self.acct.fail("exit", "pid %d logged no shutdown summary" % p)
            elif s.get("aborted"):
                self.acct.fail("exit", "pid %d aborted requests: %r" % (p, s))
        self.log_path = os.path.join(os.environ.get("SOAK_OUT", "/tmp"), "soak-veer-%d.log"
                                     % os.getpid())
        with open(self.log_path, "w") as f:
            f.write("\n".join(log) + "\n")
        shutil_rm(self.v.tmp)

    def report(self, audit):
        acct = self.acct
        print("\n=== soak report (%d s, seed %d, maintenance holds %s, hold_ms %d) ==="
              % (self.args.seconds, self.args.seed, "off" if self.args.no_hold else "on",
                 self.args.hold_ms))
        print("requests sent / answered (a well-formed answer, right or wrong), by kind:")
        for kind in sorted(acct.sent):
            print("  %-10s sent %7d  answered %7d  behind-close %4d  max latency %.2fs"
                  % (kind, acct.sent[kind], acct.answered[kind], acct.after_close[kind],
                     acct.latency_max[kind]))
        print("  tunnels closed by an old process during an upgrade: %d" % acct.tunnel_cut)
        print("answers by status:")
        for key, n in sorted(acct.status.items(), key=lambda kv: str(kv[0])):
            print("  %-60s %7d" % (" ".join(str(k) for k in key), n))
        print("operations: %s" % ", ".join("%s %d" % kv for kv in sorted(acct.ops.items())))
        if acct.op_errors:
            print("operations refused (ERR): %s" % dict(acct.op_errors))
            for t in acct.op_error_text[:10]:
                print("  " + t)
        print("veer processes: %s" % ", ".join("%d %s" % (p, s) for p, s in self.summaries))
        print("instances found by DNS, requests served: %s"
              % ", ".join("%s %d" % (b.name, b.served) for b in self.dns_backends))
        print("audit verify: %s" % (audit or "FAILED"))
        print("mirrored by the last process, by route: %s" % getattr(self, "mirror_summary", {}))
        print("veer log: %s" % self.log_path)
        unaccounted = {k: acct.sent[k] - acct.answered[k] - acct.after_close[k]
                       for k in acct.sent}
        bad = {k: n for k, n in unaccounted.items() if n}
        failures = list(acct.failures)
        if acct.ops["dns"] and not any(b.served for b in self.dns_backends):
            failures.append((self.t_start, "dns", "no instance found by DNS served a request"))
        if bad and not failures:
            failures.append((0, "count", "requests without an answer: %r" % bad))
        if failures:
            print("FAILURES: %d" % len(failures))
            for t, kind, text in failures[:40]:
                print("  %8.3fs %-10s %s" % (t - self.t_start, kind, text))
            return 1
        print("PASS: every request got exactly one well-formed answer; veer ended clean")
        return 0


def shutil_rm(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keepalive", type=int, default=4, help="keep-alive clients")
    ap.add_argument("--op-interval", type=float, default=0.5)
    ap.add_argument("--upgrade-every", type=float, default=8, help="0: no upgrades")
    ap.add_argument("--deadline", type=float, default=15,
                    help="seconds a request may wait for its answer")
    ap.add_argument("--no-hold", action="store_true", help="no maintenance --hold operations")
    ap.add_argument("--hold-ms", type=int, default=2000,
                    help="the pool's hold_ms (0: a request finding no backend gets 503 at once)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    args = ap.parse_args()
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
