"""Defects of the deployment-time paths (issue 15), each driven from outside
against the real binary: held requests across publishes (the hold queue),
reloads that change limits under transactions in flight, and a tunnel's
half-close while bytes are still queued for a slow backend.
"""

import os
import selectors
import signal
import socket
import threading
import time
import unittest

from helpers import (AdminConn, admin_http_port, parse_ok, quick_config, scrape, show_pool)
from veertest import DEADLINE, Client, Reader, VeerTestCase, read_response, wait_for


def hold_config(backends, extra_pool="", extra_top=""):
    """Admin socket, admin HTTP (for /metrics), audit log and state file in {tmp}."""
    top = ('admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
           'audit_log = "{tmp}/audit.log";\nstate_file = "{tmp}/state";\n')
    return quick_config(backends, extra_top=top + extra_top, extra_pool=extra_pool)


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HeldRequests:
    """n connections, one GET /PREFIX/i each, all sent at once; responses are
    collected by one selector thread. res[i] is (status, body) or an error
    string; extra[i] counts bytes after the first whole response (must be 0)."""

    def __init__(self, port, n, prefix):
        self.n = n
        self.res = [None] * n
        self.extra = [0] * n
        self.done_order = []
        self.socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(("GET %s/%d HTTP/1.1\r\nHost: t\r\n\r\n" % (prefix, i)).encode())
            s.setblocking(False)
            self.socks.append(s)
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self):
        sel = selectors.DefaultSelector()
        bufs = {}
        for i, s in enumerate(self.socks):
            sel.register(s, selectors.EVENT_READ, i)
            bufs[i] = b""
        end = time.monotonic() + 4 * DEADLINE
        left = self.n
        while left and time.monotonic() < end:
            for key, _ in sel.select(0.1):
                i = key.data
                try:
                    d = key.fileobj.recv(65536)
                except OSError as e:
                    d = b""
                    if self.res[i] is None:
                        self.res[i] = "error %r" % e
                if not d:
                    sel.unregister(key.fileobj)
                    if self.res[i] is None:
                        self.res[i] = "closed without an answer"
                        left -= 1
                    continue
                if self.res[i] is not None:
                    self.extra[i] += len(d)
                    continue
                bufs[i] += d
                head, sep, body = bufs[i].partition(b"\r\n\r\n")
                if not sep:
                    continue
                clen = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        clen = int(v)
                if len(body) < clen:
                    continue
                self.res[i] = (int(head.split(b" ")[1]), body[:clen])
                self.extra[i] += len(body) - clen
                self.done_order.append(i)
                left -= 1
        sel.close()

    def join(self, timeout=4 * DEADLINE):
        self.thread.join(timeout)

    def close(self):
        for s in self.socks:
            s.close()


class LivenessProber:
    """Asks /api/health/liveness over and over on one keep-alive connection;
    records each answer's latency. Stops on stop() or on a failure."""

    def __init__(self, port):
        self.port = port
        self.lat = []
        self.failure = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            c = Client(self.port, timeout=2.0)
            while not self.stopped.is_set():
                t0 = time.monotonic()
                r = c.request("GET", "/api/health/liveness")
                self.lat.append(time.monotonic() - t0)
                if r.status != 200:
                    self.failure = "liveness answered %d" % r.status
                    return
                self.stopped.wait(0.005)
        except (OSError, ValueError) as e:
            self.failure = "liveness probe failed: %r" % e

    def stop(self):
        self.stopped.set()
        self.thread.join(DEADLINE)


class HoldQueueTest(VeerTestCase):
    def admin(self, v):
        c = AdminConn(v.admin_socket)
        self._cleanup.append(c.close)
        return c

    def held(self, http_port):
        return scrape(http_port).value("veer_requests_held")

    def test_publish_with_two_held_requests_keeps_the_worker_serving(self):
        """One worker, maintenance --hold 60s, two held requests, then publishes:
        the worker keeps answering liveness (it used to spin on the two held
        requests until their deadline), burns no CPU while they wait, and both
        are answered 200, in order, once maintenance ends."""
        b = self.backend("b")
        v = self.veer(hold_config([("b", b.address, 100)]), workers=1)
        http = admin_http_port(v)
        adm = self.admin(v)
        parse_ok(adm.command("maintenance on api --hold 60s"))
        reqs = HeldRequests(v.port, 2, "/held")
        self._cleanup.append(reqs.close)
        wait_for(lambda: self.held(http) == 2, what="two requests held")
        prober = LivenessProber(v.port)
        self._cleanup.append(prober.stop)
        wait_for(lambda: len(prober.lat) >= 5 or prober.failure, what="liveness answering")
        cpu0, t0 = proc_cpu_seconds(v.proc.pid), time.monotonic()
        for i in range(10):
            parse_ok(adm.command("set weight api/b %d" % (50 + i)))
        n0 = len(prober.lat)
        wait_for(lambda: time.monotonic() - t0 >= 1.0 and len(prober.lat) >= n0 + 20
                 or prober.failure, what="liveness answers after the publishes")
        cpu1, t1 = proc_cpu_seconds(v.proc.pid), time.monotonic()
        self.assertIsNone(prober.failure)
        self.assertEqual(self.held(http), 2, "held requests lost or released in maintenance")
        self.assertEqual(reqs.res, [None, None], "held requests answered during maintenance")
        # A spinning worker burns a whole core; an idle one next to nothing.
        self.assertLess(cpu1 - cpu0, 0.5 * (t1 - t0),
                        "veer used %.2f s of CPU in %.2f s with two held requests"
                        % (cpu1 - cpu0, t1 - t0))
        slow = sorted(prober.lat)[int(len(prober.lat) * 0.95)]
        self.assertLess(slow, 0.05, "liveness p95 %.1f ms while requests were held" % (slow * 1e3))
        parse_ok(adm.command("maintenance off api"))
        reqs.join()
        self.assertEqual(reqs.res, [(200, b"b\n"), (200, b"b\n")])
        self.assertEqual(reqs.extra, [0, 0])
        # Each reached the backend once (the order between two connections sent
        # at once is the kernel's; test_combinations checks order with stamps).
        self.assertEqual(sorted(r.target for r in b.requests), ["/held/0", "/held/1"])
        prober.stop()
        self.assertIsNone(prober.failure)
        self.assertEqual(self.held(http), 0)
        v.stop()

    def test_thousand_held_requests_released_while_publishes_keep_coming(self):
        """600 requests held by maintenance on two workers; publishes run all
        the while, maintenance ends in the middle of them: every request is
        answered exactly once, each reached a backend exactly once, nothing
        stays active (a drain completes at once)."""
        b1, b2 = self.backend("b1"), self.backend("b2")
        v = self.veer(hold_config([("b1", b1.address, 100), ("b2", b2.address, 100)]), workers=2)
        http = admin_http_port(v)
        adm = self.admin(v)
        n = 600
        parse_ok(adm.command("maintenance on api --hold 60s"))
        reqs = HeldRequests(v.port, n, "/many")
        self._cleanup.append(reqs.close)
        wait_for(lambda: self.held(http) == n, what="%d requests held" % n)
        stop = threading.Event()
        publishes = []

        def publish():
            pub = AdminConn(v.admin_socket)
            try:
                k = 0
                while not stop.is_set():
                    parse_ok(pub.command("set weight api/b%d %d" % (1 + k % 2, 10 + k % 90)))
                    publishes.append(time.monotonic())
                    k += 1
            finally:
                pub.close()
        pt = threading.Thread(target=publish, daemon=True)
        pt.start()
        wait_for(lambda: len(publishes) >= 20, what="publishes under way")
        parse_ok(adm.command("maintenance off api"))
        k0 = len(publishes)
        reqs.join()
        wait_for(lambda: len(publishes) >= k0 + 20 or not pt.is_alive(),
                 what="publishes after maintenance off")
        stop.set()
        pt.join(DEADLINE)
        self.assertGreater(len(publishes), k0, "no publish raced the release")
        bad = [(i, r) for i, r in enumerate(reqs.res) if not isinstance(r, tuple) or r[0] != 200]
        self.assertEqual(bad, [], "requests not answered 200")
        self.assertEqual(sum(reqs.extra), 0, "bytes after a response: a request answered twice")
        seen = sorted(r.target for r in b1.requests + b2.requests)
        self.assertEqual(seen, sorted("/many/%d" % i for i in range(n)),
                         "each held request must reach a backend exactly once")
        self.assertEqual(self.held(http), 0)
        doc = show_pool(v.admin_socket)
        self.assertEqual([be["active"] for be in doc["backends"]], [0, 0])
        parse_ok(adm.command("drain api/b1 --wait --timeout 5s"))
        v.stop()


class LimitsReloadTest(VeerTestCase):
    def config(self, b, header_count):
        return quick_config([("b", b.address, 100)],
                            extra_top="limits = { header_count = %d; };\n" % header_count)

    def request_with_headers(self, port, n):
        c = Client(port)
        try:
            hs = {"X-H%d" % i: "v" for i in range(n)}
            return c.request("GET", "/h", headers=hs).status
        finally:
            c.close()

    def reload(self, v, text):
        with open(v.config_path, "w") as f:
            f.write(text.replace("{tmp}", v.tmp))
        n = len([l for l in v.log() if "reloaded " in l])
        v.send_signal(signal.SIGHUP)
        wait_for(lambda: len([l for l in v.log() if "reloaded " in l]) > n, what="reload applied")

    def hold_open_heads(self, port, n):
        """n connections each with a request head begun (a transaction each)."""
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        for s in socks:
            s.sendall(b"GET /open HTTP/1.1\r\nHost: t\r\n")
        return socks

    def finish_heads(self, socks):
        for s in socks:
            s.sendall(b"\r\n")
        for s in socks:
            s.settimeout(DEADLINE)
            r = read_response(Reader(s))
            self.assertEqual(r.status, 200)
            s.close()

    def test_header_count_lowered_then_raised_by_reload(self):
        """header_count 100 -> 10 (transactions made while it is 10) -> 120: a
        request with 110 headers is proxied (the raised limit holds, and no
        cached transaction is too small for it: ASan sees no overflow)."""
        b = self.backend("b")
        v = self.veer(self.config(b, 100), workers=1)
        self.assertEqual(self.request_with_headers(v.port, 90), 200)
        self.reload(v, self.config(b, 10))
        self.assertEqual(self.request_with_headers(v.port, 20), 431)
        # More transactions at once than the cache holds: new ones are made now.
        self.finish_heads(self.hold_open_heads(v.port, 80))
        self.reload(v, self.config(b, 120))
        for _ in range(80):
            self.assertEqual(self.request_with_headers(v.port, 110), 200)
        self.finish_heads(self.hold_open_heads(v.port, 80))
        v.stop()

    def test_header_count_raised_above_the_first_config(self):
        b = self.backend("b")
        v = self.veer(self.config(b, 10), workers=1)
        self.assertEqual(self.request_with_headers(v.port, 20), 431)
        self.reload(v, self.config(b, 50))
        self.assertEqual(self.request_with_headers(v.port, 40), 200)
        v.stop()


def tcp_sockets():
    """{(local port, remote port): (state, tx_queue, rx_queue)} of the loopback
    IPv4 TCP sockets, from /proc/net/tcp. tx_queue: bytes written and not yet
    acknowledged by the peer; rx_queue: bytes received and not yet read."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            lport = int(p[1].split(":")[1], 16)
            rport = int(p[2].split(":")[1], 16)
            tx, rx = (int(x, 16) for x in p[4].split(":"))
            out[(lport, rport)] = (int(p[3], 16), tx, rx)
    return out


class TunnelHalfCloseTest(VeerTestCase):
    def test_client_half_close_waits_for_queued_bytes(self):
        """A tunnel whose backend has stopped reading: veer holds client bytes
        it could not write (EAGAIN) when the client half-closes. The half-close
        must reach the backend after those bytes, not before them (veer used to
        shut its side down at once: the backend got a cut stream)."""
        release = threading.Event()
        got = []

        def tunnel(conn, req):
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            release.wait(4 * DEADLINE)
            n = 0
            while True:
                d = conn.recv(65536)
                if not d:
                    break
                n += len(d)
            got.append(n)
            conn.sendall(b"%d\n" % n)
            return False

        b = self.backend("b", handler=tunnel)
        # A small receive window at the backend (accepted sockets inherit it).
        b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        v = self.veer(quick_config([("b", b.address, 100)]), workers=1)
        s = socket.create_connection(("127.0.0.1", v.port))
        self._cleanup.append(s.close)
        self._cleanup.append(release.set)
        s.settimeout(DEADLINE)
        s.sendall(b"GET /t HTTP/1.1\r\nHost: t\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
        r = Reader(s)
        self.assertTrue(r.readline().startswith(b"HTTP/1.1 101"))
        while r.readline() not in (b"", None):
            pass
        cport = s.getsockname()[1]
        wait_for(lambda: len([k for k in tcp_sockets() if k[1] == b.port]) == 1,
                 what="veer's connection to the backend")
        up = [k for k in tcp_sockets() if k[1] == b.port][0]
        back = (up[1], up[0])

        def queues():
            """(client tx, veer client-side rx, veer backend-side tx, backend rx,
            veer backend-side state), the same in two reads in a row: the file is
            not one atomic snapshot, and bytes move while it is read."""
            prev = None
            while True:
                t = tcp_sockets()
                gone = (0, 0, 0)
                q = (t.get((cport, v.port), gone)[1], t.get((v.port, cport), gone)[2],
                     t.get(up, gone)[1], t.get(back, gone)[2], t.get(up, gone)[0])
                if q == prev:
                    return q
                prev = q

        def held_by_veer(sent):
            """Bytes veer has read from the client and not written to the backend,
            once veer has read all the client sent and nothing moves any more."""
            last = None

            def settled():
                nonlocal last
                ctx, vrx, utx, brx, _ = queues()
                now = None if ctx or vrx else sent - utx - brx
                same, last = now is not None and now == last, now
                return same and [now]
            return wait_for(settled, interval=0.001, what="veer to read the client's bytes")[0]

        # Feed the tunnel 8 KiB at a time until veer holds bytes it cannot write
        # (the backend's window and veer's send buffer are full) and still reads.
        # (The count is read from /proc/net/tcp, which can miss bytes in flight on
        # loopback: the loop is bounded, and the end-to-end check below holds in
        # every case; the precondition only decides whether the old bug shows.)
        chunk, sent, inside = b"x" * 8192, 0, 0
        t_end = time.monotonic() + 3
        while inside == 0 and sent < (16 << 20) and time.monotonic() < t_end:
            s.sendall(chunk)
            sent += len(chunk)
            inside = held_by_veer(sent)
        s.sendall(b"y" * 1024)  # fits: veer still reads, and sees the FIN after it
        sent += 1024
        s.shutdown(socket.SHUT_WR)
        release.set()
        answer = b""
        while not answer.endswith(b"\n"):
            d = s.recv(64)
            if not d:
                break
            answer += d
        self.assertEqual(answer, b"%d\n" % sent, "the backend got a cut stream")
        v.stop()


if __name__ == "__main__":
    unittest.main()
