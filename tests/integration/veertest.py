"""Integration test harness: the real veer binary against real backends over
loopback sockets.

Everything binds port 0 and learns its port (veer logs "listening on
ADDR:PORT"), so tests never collide. Every wait is a condition polled against
a deadline; nothing sleeps to "let things settle".
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VEER_BIN = os.environ.get("VEER_BIN", os.path.join(ROOT, "build", "veer"))
VEERCTL_BIN = os.environ.get("VEERCTL_BIN", os.path.join(ROOT, "build", "veerctl"))
BACKEND_BIN = os.environ.get("BACKEND_BIN", os.path.join(ROOT, "build", "tests", "backend", "veer-backend"))

# Generous deadlines: CI machines are small and busy, and sanitizers slow veer down.
DEADLINE = float(os.environ.get("VEER_TEST_DEADLINE", "15"))


def wait_for(cond, timeout=DEADLINE, interval=0.005, what="condition"):
    """Poll cond() until it returns a true value; fail after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def asan_build():
    """Whether VEER_BIN was built with AddressSanitizer (timing slack scales with it)."""
    with open(VEER_BIN, "rb") as f:
        return b"__asan_init" in f.read()


class Veer:
    """A veer process started from a config text.

    The text may use {port:NAME} placeholders for backend ports and {tmp} for
    the temporary directory; listeners should use 127.0.0.1:0.
    """

    def __init__(self, config, workers=2, extra_args=(), check_ready=True):
        self.tmp = tempfile.mkdtemp(prefix="veer-test-")
        self.config_path = os.path.join(self.tmp, "veer.conf")
        if "workers" not in config:
            config = "workers = %d;\n" % workers + config
        if "admin" not in config:
            config += '\nadmin = { socket = "%s/admin.sock"; };\n' % self.tmp
        self.config = config.replace("{tmp}", self.tmp)
        with open(self.config_path, "w") as f:
            f.write(self.config)
        self.lines = []
        self.ports = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [VEER_BIN, "-c", self.config_path] + list(extra_args),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if check_ready:
            self.wait_log(r"veer \S+ ready", what="veer ready")

    def _read_log(self):
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                m = re.search(r"listening on (\S+):(\d+) ", line)
                if m:
                    self.ports.append(int(m.group(2)))

    @property
    def port(self):
        wait_for(lambda: self.ports, what="veer listening")
        return self.ports[0]

    @property
    def admin_socket(self):
        return os.path.join(self.tmp, "admin.sock")

    def log(self):
        with self._lock:
            return list(self.lines)

    def wait_log(self, pattern, timeout=DEADLINE, what=None):
        rx = re.compile(pattern)

        def found():
            if self.proc.poll() is not None and not any(rx.search(l) for l in self.log()):
                raise AssertionError("veer exited (%s) before logging %r:\n%s" %
                                     (self.proc.returncode, pattern, "\n".join(self.log())))
            for l in self.log():
                if rx.search(l):
                    return l
            return None
        return wait_for(found, timeout, what=what or pattern)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=DEADLINE, expect_rc=0):
        """Stop veer and check it exited cleanly with no sanitizer report.
        sig=None only waits (for a veer already signalled)."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("veer did not exit within %.1fs:\n%s" % (timeout, "\n".join(self.log())))
        self._finish()
        log = "\n".join(self.log())
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "panic at"):
            if bad in log:
                raise AssertionError("sanitizer/panic report in veer log:\n" + log)
        if expect_rc is not None and rc != expect_rc:
            raise AssertionError("veer exited %s, expected %s:\n%s" % (rc, expect_rc, log))
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._finish()

    def _finish(self):
        self._reader.join(5)
        if self.proc.stderr and not self.proc.stderr.closed and not self._reader.is_alive():
            self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def veer_check_config(text):
    """Run veer -t on a config text; return (exit code, stderr, path)."""
    fd, path = tempfile.mkstemp(suffix=".conf", prefix="veer-t-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    p = subprocess.run([VEER_BIN, "-t", "-c", path], capture_output=True, text=True, timeout=DEADLINE)
    return p.returncode, p.stderr, path


def require_ipv6(tc):
    """Skip tc only when the environment says this machine has no IPv6
    (VEER_NO_IPV6=1); otherwise an unusable ::1 is a failure, not a pass."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
        finally:
            s.close()
    except OSError as e:
        if os.environ.get("VEER_NO_IPV6") == "1":
            tc.skipTest("VEER_NO_IPV6=1: no IPv6 loopback here (%s)" % e)
        raise AssertionError("no IPv6 loopback (%s); set VEER_NO_IPV6=1 on a machine "
                             "without IPv6 to skip the IPv6 tests" % e)


# --- backends --------------------------------------------------------------


def close_listener(sock):
    """Stop a listening socket for good. close() alone does not: a thread blocked
    in accept() keeps the socket listening (and accepting) on its port, where a
    later test's backend may then be bound too (Linux). shutdown() wakes it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Backend:
    """A threaded raw-socket HTTP/1.1 backend in the test process.

    handler(conn, request) is called per request with a Request; it writes the
    response with conn.sendall() and returns True to keep the connection open.
    The default handler answers 200 with the backend's name and X-Backend.
    """

    def __init__(self, name="b", handler=None, port=0, host="127.0.0.1"):
        self.name = name
        self.host = host
        self.handler = handler or self.default_handler
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.connections = 0
        self.lock = threading.Lock()
        self.closed = False
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)

    def default_handler(self, conn, req):
        body = (self.name + "\n").encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                     % (len(body), self.name.encode(), body))
        return True

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
        reader = Reader(c)
        try:
            while True:
                req = read_request(reader)
                if req is None:
                    break
                with self.lock:
                    self.requests.append(req)
                if not self.handler(c, req):
                    break
        except (OSError, ValueError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.closed = True
        close_listener(self.sock)
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass


class Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        d = self.sock.recv(65536)
        if not d:
            return False
        self.buf += d
        return True

    def readline(self):
        while b"\r\n" not in self.buf:
            if not self.fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise ValueError("connection closed after %d of %d bytes" % (len(self.buf), n))
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def read_all(self):
        while self.fill():
            pass
        d, self.buf = self.buf, b""
        return d


class Message:
    def __init__(self):
        self.start = b""
        self.headers = []
        self.body = b""
        self.complete = True

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Request(Message):
    @property
    def method(self):
        return self.start.split(b" ")[0].decode()

    @property
    def target(self):
        return self.start.split(b" ")[1].decode()


class Response(Message):
    @property
    def status(self):
        return int(self.start.split(b" ")[1])

    @property
    def version(self):
        return self.start.split(b" ")[0].decode()


def _read_head(reader, msg):
    line = reader.readline()
    if line is None:
        return None
    msg.start = line
    while True:
        line = reader.readline()
        if line is None:
            raise ValueError("connection closed in head")
        if line == b"":
            return msg
        k, v = line.split(b":", 1)
        msg.headers.append((k.decode(), v.strip().decode()))


def _read_chunked(reader):
    body = b""
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
                    return body
        body += reader.read(size)
        if reader.read(2) != b"\r\n":
            raise ValueError("bad chunk terminator")


def read_request(reader):
    req = _read_head(reader, Request())
    if req is None:
        return None
    if (req.header("Transfer-Encoding") or "").lower() == "chunked":
        req.body = _read_chunked(reader)
    elif req.header("Content-Length"):
        req.body = reader.read(int(req.header("Content-Length")))
    return req


def read_response(reader, method="GET"):
    """Read one response; a truncated body sets complete=False instead of raising."""
    while True:
        res = _read_head(reader, Response())
        if res is None:
            return None
        if 100 <= res.status < 200 and res.status != 101:
            continue
        break
    if method == "HEAD" or res.status in (101, 204, 304):
        return res
    try:
        if (res.header("Transfer-Encoding") or "").lower() == "chunked":
            res.body = _read_chunked(reader)
        elif res.header("Content-Length") is not None:
            res.body = reader.read(int(res.header("Content-Length")))
        else:
            res.body = reader.read_all()
    except ValueError:
        res.complete = False
    return res


class Client:
    """A keep-alive HTTP/1.1 client that never retries: what a strict client sees."""

    def __init__(self, port, timeout=DEADLINE, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = Reader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=None, body=None, version="HTTP/1.1"):
        h = {"Host": "test"}
        h.update(headers or {})
        if body is not None and "Content-Length" not in h and "Transfer-Encoding" not in h:
            h["Content-Length"] = str(len(body))
        head = "%s %s %s\r\n" % (method, path, version)
        head += "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
        self.sock.sendall(head.encode() + (body or b""))
        return read_response(self.reader, method)

    def response(self, method="GET"):
        return read_response(self.reader, method)

    def is_closed(self, timeout=DEADLINE):
        """True when the server closed the connection (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            if self.reader.buf:
                return False
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def raw_exchange(port, data, timeout=DEADLINE):
    """Send raw bytes, half-close, and return everything the server sent until it closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except ConnectionResetError:
        pass
    s.close()
    return out


def pool_config(backends, pool="api", extra_pool="", extra_top="", balance=None):
    """A config with one listener on port 0 and one pool of (name, address, weight[, group])."""
    lines = []
    for b in backends:
        name, addr, weight = b[0], b[1], b[2] if len(b) > 2 else 100
        group = ' group = "%s";' % b[3] if len(b) > 3 else ""
        lines.append('{ name = "%s"; address = "%s"; weight = %d;%s }' % (name, addr, weight, group))
    bal = ' balance = "%s";' % balance if balance else ""
    return ('listen = ( { address = "127.0.0.1:0"; pool = "%s"; } );\n%s\n'
            'pools = ( { name = "%s";%s %s backends = ( %s ); } );\n'
            % (pool, extra_top, pool, bal, extra_pool, ", ".join(lines)))


class VeerTestCase(unittest.TestCase):
    """Cleans up veer processes and backends a test started, even on failure."""

    def setUp(self):
        self._cleanup = []
        self._veers = []

    def tearDown(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        failed = result is not None and any(
            t is self for t, _ in getattr(result, "failures", []) + getattr(result, "errors", []))
        if failed:
            # A failed test shows what each veer it started said last (a crash,
            # a sanitizer report, a refused command) next to the assertion.
            for v in self._veers:
                sys.stderr.write("\n--- veer pid %d (%s), last lines:\n%s\n"
                                 % (v.proc.pid, "running" if v.proc.poll() is None
                                    else "exit status %d" % v.proc.returncode,
                                    "\n".join(v.log()[-40:])))
        for f in reversed(self._cleanup):
            try:
                f()
            except Exception:
                pass

    def backend(self, name="b", handler=None, host="127.0.0.1"):
        b = Backend(name, handler, host=host)
        self._cleanup.append(b.close)
        return b

    def veer(self, config, **kw):
        v = Veer(config, **kw)
        self._cleanup.append(v.kill)
        self._veers.append(v)
        return v

    def client(self, port, host="127.0.0.1"):
        c = Client(port, host=host)
        self._cleanup.append(c.close)
        return c
