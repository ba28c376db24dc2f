"""Combinations (issue 15, item 9): features that each have tests of their
own, exercised together the way a deployment meets them.

- maintenance --hold with three held requests while shifts publish, then
  maintenance off: every held request 200, in the order sent, and another
  pool (and veer's liveness endpoint) answering promptly throughout; the same
  with a pool's hold_ms (no eligible backend, publishes, then one becomes
  eligible);
- reloads while requests are held: one that adds a READY backend, one that
  changes hold_ms, one that removes the pool;
- SIGTERM and SIGUSR2 with held requests and an open WebSocket;
- fifty certificate reloads with session tickets, then a binary upgrade.

One worker where order or a stalled event loop matters, so "in order" is one
FIFO and a spinning worker shows up as latency on every pool. Waits are
conditions with deadlines; the fixed times are the holds a scenario asks
for, and answers are checked never to come before them.
"""

import base64
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from helpers import (AdminConn, StampBackend, StreamReader, StrictLoad, Successor, TlsClient,
                     TlsFiles, become_subreaper, health_text, listener_ports, parse_ok, pid_lines,
                     read_head, show_pool, shutdown_summary, tls_client_context, tls_listen_text,
                     tls_listener_ports, veerctl, warm_upstreams, ws_accept, ws_frame,
                     ws_read_frame)
from test_upgrade import WebSocketEchoBackend
from veertest import DEADLINE, Client, VeerTestCase, wait_for

# How late a timer-driven answer (a hold's deadline) may come on a busy 2-core
# machine under ASan; it must never come early.
SLACK = float(os.environ.get("VEER_TEST_TIMER_SLACK", "1.0"))
# A request to a pool nobody is holding, or to veer's liveness endpoint,
# answered within this while requests are held elsewhere on the same worker
# (a worker busy with its held requests takes as long as their hold, 5 s).
PROMPT = SLACK + 0.5
HOLD_S = 5  # the maintenance/hold_ms window: long enough that nothing here should reach it

SUBREAPER = False


def setUpModule():
    global SUBREAPER
    SUBREAPER = become_subreaper()


def tearDownModule():
    become_subreaper(False)


def backend_line(b):
    name, addr = b[0], b[1]
    weight = b[2] if len(b) > 2 else 100
    group = ' group = "%s";' % b[3] if len(b) > 3 else ""
    return '{ name = "%s"; address = "%s"; weight = %d;%s }' % (name, addr, weight, group)


def config(pools, top="", listeners=None):
    """A whole config: pools [(name, [backend tuples], extra pool text)], one
    127.0.0.1:0 listener per pool (or listeners: [(pool, extra listener text)]),
    the admin socket, audit log and state file in veer's {tmp}."""
    listeners = listeners if listeners is not None else [(p[0], "") for p in pools]
    ls = ",\n  ".join('{ address = "127.0.0.1:0"; pool = "%s"; %s }' % (p, extra)
                      for p, extra in listeners)
    ps = ",\n  ".join('{ name = "%s"; %s backends = ( %s ); }'
                      % (name, extra, ", ".join(backend_line(b) for b in bs))
                      for name, bs, extra in pools)
    return ('admin = { socket = "{tmp}/admin.sock"; };\n'
            'audit_log = "{tmp}/audit.log";\nstate_file = "{tmp}/state";\n'
            'timeouts = { quiet_ms = 200; };\n%s\n'
            'listen = (\n  %s\n);\npools = (\n  %s\n);\n' % (top, ls, ps))


def rewrite(v, text):
    """Replace veer's config file atomically."""
    tmp = v.config_path + ".new"
    with open(tmp, "w") as f:
        f.write("workers = 1;\n" + text.replace("{tmp}", v.tmp))
    os.replace(tmp, v.config_path)


class Probes:
    """n client connections, one GET each (PREFIX/i), written one after the
    other; each answer read by a thread of its own. sent[i] / done[i] are
    monotonic times, res[i] the response (or the error)."""

    def __init__(self, tc, port, n, prefix):
        self.clients = [tc.client(port) for _ in range(n)]
        self.prefix = prefix
        self.sent = [None] * n
        self.done = [None] * n
        self.res = [None] * n
        self.threads = []

    def path(self, i):
        return "%s/%d" % (self.prefix, i)

    def send(self, indexes=None):
        for i in (range(len(self.clients)) if indexes is None else indexes):
            self.sent[i] = time.monotonic()
            self.clients[i].send(("GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % self.path(i)).encode())
            t = threading.Thread(target=self._read, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def _read(self, i):
        try:
            self.res[i] = self.clients[i].response()
        except (OSError, ValueError) as e:
            self.res[i] = e
        self.done[i] = time.monotonic()

    def answered(self):
        """Indexes of the connections on which veer sent anything so far."""
        socks = [c.sock for c in self.clients]
        r, _, _ = select.select(socks, [], [], 0)
        return sorted(set([socks.index(s) for s in r] +
                          [i for i, d in enumerate(self.done) if d]))

    def join(self, timeout=HOLD_S + DEADLINE):
        for t in self.threads:
            t.join(timeout)

    def describe(self):
        return "\n".join("  probe %d: sent %.3f, answered after %s: %r"
                         % (i, self.sent[i] or 0,
                            "%.3fs" % (self.done[i] - self.sent[i]) if self.done[i] else "-",
                            (r.status, r.body) if hasattr(r, "status") else r)
                         for i, r in enumerate(self.res))


class Prompt:
    """Keep-alive GETs of path on port, back to back, from a thread of its own,
    each timed: the latency another pool (or the liveness endpoint) sees."""

    def __init__(self, port, path):
        self.port, self.path = port, path
        self.recs = []  # (sent, done, status or error)
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        c = None
        while not self.stop_ev.is_set():
            t = time.monotonic()
            try:
                if c is None:
                    c = Client(self.port, timeout=HOLD_S + DEADLINE)
                r = c.request("GET", self.path)
                out = r.status if r is not None and r.complete else "no complete answer"
                if r is None or (r.header("Connection") or "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, ValueError) as e:
                out = repr(e)
                if c is not None:
                    c.close()
                c = None
            self.recs.append((t, time.monotonic(), out))
            self.stop_ev.wait(0.01)
        if c is not None:
            c.close()

    def wait_count(self, n):
        wait_for(lambda: len(self.recs) >= n, what="%d requests to %s" % (n, self.path))

    def wait_after(self, t):
        """Until a request sent after t has been answered (the loop moved past t)."""
        wait_for(lambda: any(s > t for s, _, _ in list(self.recs)),
                 timeout=HOLD_S + DEADLINE, what="a request to %s sent after t" % self.path)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(HOLD_S + DEADLINE)

    def check(self, tc, t0, t1, what):
        """Every request overlapping [t0, t1] got 200 within PROMPT."""
        recs = [r for r in list(self.recs) if r[1] >= t0 and r[0] <= t1]
        tc.assertTrue(recs, "no request to %s during %s" % (self.path, what))
        bad = [(round(s - t0, 3), round(d - s, 3), st) for s, d, st in recs
               if st != 200 or d - s > PROMPT]
        tc.assertEqual(bad, [], "%s: requests to %s slow or failed while requests were held "
                       "(sent at +s, took s, status)" % (what, self.path))


class CombinationCase(VeerTestCase):
    def stamp(self, name):
        b = StampBackend(name)
        self._cleanup.append(b.close)
        return b

    def admin(self, v):
        c = AdminConn(v.admin_socket)
        self._cleanup.append(c.close)
        return c

    def prompt(self, port, path):
        p = Prompt(port, path)
        self._cleanup.append(p.stop)
        p.wait_count(3)
        return p

    def probes(self, port, n, prefix):
        return Probes(self, port, n, prefix)

    def wait_parsed(self, v, port):
        """After probes were written: two liveness requests on fresh
        connections to the same listener, one after the other, answered. With
        one worker the probes' connections were accepted first (one accept
        queue) with their bytes already in veer's socket buffers, so veer read
        and routed (held) them no later than the loop iteration that answered
        the first liveness request; the second connection is made after that
        answer arrived, so its answer comes from a later iteration: by then
        the probes are held."""
        for _ in range(2):
            c = self.client(port)
            r = c.request("GET", "/api/health/liveness")
            self.assertEqual(r.status, 200)
            c.close()

    def others_prompt(self, others, t_held, what):
        """While requests are held (after the publishes): a request to each
        other path, sent now, is answered, and everything since t_held was
        prompt. A worker spinning over its held requests fails here."""
        t = time.monotonic()
        for p in others:
            p.wait_after(t)
            p.check(self, t_held, time.monotonic(), what + " (while held)")

    def order_at(self, b, probes):
        """Probe indexes in the order their bytes reached backend b (kernel stamps)."""
        mine = {probes.path(i): i for i in range(len(probes.clients))}
        arrived = sorted((r for r in b.snapshot() if r.target in mine), key=lambda r: r.kernel_ts)
        self.assertTrue(all(r.kernel_ts is not None for r in arrived), "no kernel timestamps")
        return [mine[r.target] for r in arrived], arrived

    def assert_released(self, probes, t_release, backend, what):
        """Every probe answered 200 by backend, after t_release."""
        for i, r in enumerate(probes.res):
            self.assertTrue(hasattr(r, "status"), "%s: probe %d got no answer:\n%s"
                            % (what, i, probes.describe()))
            self.assertEqual((r.status, r.header("X-Backend")), (200, backend.name),
                             "%s: probe %d:\n%s" % (what, i, probes.describe()))
            self.assertGreaterEqual(probes.done[i], t_release,
                                    "%s: probe %d answered before its release" % (what, i))

    def assert_maintenance_503(self, probes, hold_s, retry_after, what):
        """Every probe got the maintenance 503 (JSON, Retry-After), not before
        its hold ran out and not long after."""
        for i, r in enumerate(probes.res):
            self.assertTrue(hasattr(r, "status"), "%s: probe %d got no answer:\n%s"
                            % (what, i, probes.describe()))
            self.assertEqual(r.status, 503, "%s: probe %d:\n%s" % (what, i, probes.describe()))
            self.assertEqual(r.header("Retry-After"), str(retry_after), what)
            self.assertIn(b'"error":"maintenance"', r.body, what)
            waited = probes.done[i] - probes.sent[i]
            self.assertGreaterEqual(waited, hold_s, "%s: probe %d: 503 before the hold ran out"
                                    % (what, i))
            self.assertLess(waited, hold_s + SLACK, "%s: probe %d: 503 long after the hold"
                            % (what, i))

    def assert_clean(self, v):
        log = "\n".join(v.log())
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "panic at"):
            self.assertNotIn(bad, log)


# --- holds while shifts publish -----------------------------------------------------------------


class HoldWhilePublishingTest(CombinationCase):
    def start(self, api_extra=""):
        self.blue, self.green, self.web = (self.stamp(n) for n in ("blue-1", "green-1", "web-1"))
        v = self.veer(config([("api", [("blue-1", self.blue.address, 100, "blue"),
                                       ("green-1", self.green.address, 100, "green")],
                               "shares = { blue = 100; green = 0; }; " + api_extra),
                              ("web", [("web-1", self.web.address)], "")]), workers=1)
        ports = listener_ports(v)
        self.api, self.webport = ports["api"], ports["web"]
        # Idle keep-alive connections to blue, as after any traffic: released
        # requests are written to them in the order veer sends them.
        warm_upstreams(self.api, self.blue, 4)
        self.others = [self.prompt(self.webport, "/web"),
                       self.prompt(self.api, "/api/health/liveness")]
        return v

    def publishes(self, adm):
        """Three publishes that leave what blocks the held requests in place."""
        for b, g in ((0, 100), (50, 50), (100, 0)):
            parse_ok(adm.command("shift api blue=%d green=%d --force" % (b, g)))

    def finish(self, v, probes, t_held, t_release, what):
        probes.join()
        for p in self.others:
            p.wait_after(t_release)
            p.check(self, t_held, t_release, what)
            p.stop()
        self.assert_released(probes, t_release, self.blue, what)
        order, arrived = self.order_at(self.blue, probes)
        self.assertTrue(all(r.mono >= t_release for r in arrived), what)
        self.assertEqual(order, [0, 1, 2], "%s: held requests reached the backend out of order"
                         % what)
        self.assertEqual([r for r in self.green.snapshot() if r.target.startswith("/held")], [])
        # Each was routed once: the backend got each exactly once, and
        # nothing is left counted active on blue (it could not drain).
        self.assertEqual(sorted(r.target for r in self.blue.snapshot()
                                if r.target.startswith("/held")),
                         sorted(probes.path(i) for i in range(3)))
        wait_for(lambda: active(v, "blue-1") == 0, what="blue-1 active back to 0")
        v.stop()

    def test_maintenance_hold_three_requests_while_shifts_publish(self):
        """maintenance on api --hold 5s, three requests held, three shifts
        published, maintenance off: all three 200 from blue in the order sent;
        the web pool and the liveness endpoint answer promptly throughout."""
        v = self.start()
        adm = self.admin(v)
        parse_ok(adm.command("maintenance on api --hold %ds" % HOLD_S))
        probes = self.probes(self.api, 3, "/held")
        probes.send()
        t_held = time.monotonic()
        self.wait_parsed(v, self.api)
        self.publishes(adm)
        self.others_prompt(self.others, t_held, "maintenance hold")
        self.assertEqual(probes.answered(), [], "held requests answered during maintenance:\n"
                         + probes.describe())
        self.assertEqual([r.target for r in self.blue.snapshot() if r.target.startswith("/held")],
                         [])
        reply, t_off, _ = adm.timed_command("maintenance off api")
        parse_ok(reply)
        self.finish(v, probes, t_held, t_off, "maintenance hold")

    def test_hold_ms_three_requests_while_shifts_publish(self):
        """hold_ms = 5000 and no eligible backend (both in MAINT): three
        requests held, three shifts published, then blue-1 ready: all three
        200 from blue in order; the other pool and liveness unaffected."""
        v = self.start("hold_ms = %d; " % (HOLD_S * 1000))
        adm = self.admin(v)
        parse_ok(adm.command("set state api/green-1 maint"))
        parse_ok(adm.command("set state api/blue-1 maint --force"))
        probes = self.probes(self.api, 3, "/held")
        probes.send()
        t_held = time.monotonic()
        self.wait_parsed(v, self.api)
        self.publishes(adm)
        self.others_prompt(self.others, t_held, "hold_ms")
        self.assertEqual(probes.answered(), [], "held requests answered with no backend:\n"
                         + probes.describe())
        reply, t_ready, _ = adm.timed_command("set state api/blue-1 ready")
        parse_ok(reply)
        self.finish(v, probes, t_held, t_ready, "hold_ms")


# --- reloads while requests are held --------------------------------------------------------------


class ReloadWhileHeldTest(CombinationCase):
    def start(self, hold_ms=HOLD_S * 1000):
        self.blue, self.web = self.stamp("blue-1"), self.stamp("web-1")
        self.pools = {
            "api": ("api", [("blue-1", self.blue.address, 100)], "hold_ms = %d; " % hold_ms),
            "web": ("web", [("web-1", self.web.address)], ""),
        }
        v = self.veer(config([self.pools["api"], self.pools["web"]]), workers=1)
        ports = listener_ports(v)
        self.api, self.webport = ports["api"], ports["web"]
        self.adm = self.admin(v)
        # No eligible backend: requests to api wait for one (hold_ms).
        parse_ok(self.adm.command("set state api/blue-1 maint --force"))
        self.other = self.prompt(self.webport, "/web")
        return v

    def hold_three(self, v):
        probes = self.probes(self.api, 3, "/held")
        probes.send()
        self.wait_parsed(v, self.api)
        self.assertEqual(probes.answered(), [], probes.describe())
        return probes

    def reload(self, v, pools, listeners=None):
        """Rewrite the config and reload; the time the command was sent."""
        rewrite(v, config(pools, listeners=listeners))
        reply, t, _ = self.adm.timed_command("reload")
        self.assertRegex(reply, r"\AOK gen=\d+ ", reply)
        return t

    def test_reload_adding_a_ready_backend_releases_held_requests(self):
        v = self.start()
        probes = self.hold_three(v)
        t_held = time.monotonic()
        self.others_prompt([self.other], t_held, "before the reload")
        blue2 = self.stamp("blue-2")
        api = self.pools["api"]
        t_reload = self.reload(v, [(api[0], api[1] + [("blue-2", blue2.address, 100)], api[2]),
                                   self.pools["web"]])
        probes.join()
        self.assert_released(probes, t_reload, blue2, "reload adding blue-2")
        self.assertEqual(sorted(r.target for r in blue2.snapshot()),
                         sorted(probes.path(i) for i in range(3)), "each routed once")
        self.assertEqual(self.blue.snapshot(), [])
        self.others_prompt([self.other], t_held, "reload adding a backend")
        self.assertEqual(pool_state(v, "blue-2"), "READY")
        v.stop()

    def test_reload_changing_hold_ms_keeps_the_held_requests_deadline(self):
        """hold_ms 5000 -> 300 while three requests are held: a request that
        starts after the reload gets its 503 after 300 ms; the three held
        before keep their 5 s and are served when blue-1 comes back."""
        v = self.start()
        probes = self.hold_three(v)
        t_held = time.monotonic()
        api = self.pools["api"]
        self.reload(v, [(api[0], api[1], "hold_ms = 300; "), self.pools["web"]])
        self.others_prompt([self.other], t_held, "hold_ms reload")
        late = self.probes(self.api, 1, "/late")
        late.send()
        late.join()
        r = late.res[0]
        self.assertTrue(hasattr(r, "status"), late.describe())
        self.assertEqual(r.status, 503, late.describe())
        waited = late.done[0] - late.sent[0]
        self.assertGreaterEqual(waited, 0.3, "503 before the new hold_ms")
        self.assertLess(waited, 0.3 + SLACK, "503 long after the new hold_ms")
        self.assertEqual(probes.answered(), [], "the earlier requests took the new hold_ms:\n"
                         + probes.describe())
        reply, t_ready, _ = self.adm.timed_command("set state api/blue-1 ready")
        parse_ok(reply)
        probes.join()
        self.assert_released(probes, t_ready, self.blue, "hold_ms reload")
        self.others_prompt([self.other], t_held, "after the hold_ms reload")
        v.stop()

    def test_reload_removing_the_pool_answers_held_requests(self):
        """The pool api (the first in the file) goes away with its listener
        while three requests wait for it: each gets exactly one answer, a 503
        from veer (never an answer from the pool that is left), and veer goes
        on serving web."""
        v = self.start()
        probes = self.hold_three(v)
        t_held = time.monotonic()
        self.reload(v, [self.pools["web"]], listeners=[("web", "")])
        self.others_prompt([self.other], t_held, "reload removing the pool")
        probes.join()
        for i, r in enumerate(probes.res):
            self.assertTrue(hasattr(r, "status"), "probe %d:\n%s" % (i, probes.describe()))
            self.assertEqual(r.status, 503, "probe %d:\n%s" % (i, probes.describe()))
            self.assertIsNone(r.header("X-Backend"), probes.describe())
            self.assertLess(probes.done[i] - probes.sent[i], HOLD_S + SLACK)
        self.assertEqual([r.target for r in self.web.snapshot() if r.target.startswith("/held")],
                         [], "held requests for the removed pool went to another pool")
        self.others_prompt([self.other], t_held, "after the reload removing the pool")
        self.assertNotIn("api", veerctl(v.admin_socket, "show", "pools").stdout)
        v.stop()


def active(v, name, pool="api"):
    for b in show_pool(v.admin_socket, pool)["backends"]:
        if b["name"] == name:
            return b["active"]
    return None


def pool_state(v, name, pool="api"):
    for b in show_pool(v.admin_socket, pool)["backends"]:
        if b["name"] == name:
            return b["state"]
    return None


# --- signals with held requests and an open WebSocket --------------------------------------------


class WebSocket:
    """A WebSocket client connection through veer (opened in the constructor)."""

    def __init__(self, tc, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        tc._cleanup.append(self.sock.close)
        self.reader = StreamReader(self.sock)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        head = read_head(self.reader)
        tc.assertEqual(head.status, 101)
        tc.assertEqual(head.header("Sec-WebSocket-Accept"), ws_accept(key))

    def echo(self, msg):
        self.sock.sendall(ws_frame(msg, 2, mask=os.urandom(4)))
        return ws_read_frame(self.reader)

    def wait_closed(self, timeout):
        """True when veer closes the tunnel within timeout (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            return ws_read_frame(self.reader) is None
        except (ConnectionResetError, ValueError):
            return True
        except socket.timeout:
            return False


class SignalsWithHeldTest(CombinationCase):
    HOLD = 3

    def start(self):
        self.blue = self.stamp("blue-1")
        self.ws = WebSocketEchoBackend()
        self._cleanup.append(self.ws.close)
        v = self.veer(config([("api", [("blue-1", self.blue.address)], ""),
                              ("web", [("ws-1", self.ws.address)], "")]), workers=1)
        ports = listener_ports(v)
        self.api, self.webport = ports["api"], ports["web"]
        self.adm = self.admin(v)
        self.tunnel = WebSocket(self, self.webport)
        self.assertEqual(self.tunnel.echo(b"before"), (2, b"before"))
        parse_ok(self.adm.command("maintenance on api --hold %ds --retry-after 9" % self.HOLD))
        probes = self.probes(self.api, 3, "/held")
        probes.send()
        self.wait_parsed(v, self.api)
        self.assertEqual(probes.answered(), [], probes.describe())
        return v, probes

    def test_sigterm_with_held_requests_and_a_websocket(self):
        """SIGTERM while three requests are held and a tunnel is open: the
        tunnel still carries frames; each held request gets the maintenance
        503 when its hold runs out (with Connection: close); then the tunnel,
        all that is left, is closed; exit 0, nothing aborted."""
        v, probes = self.start()
        v.send_signal(signal.SIGTERM)
        v.wait_log(r"graceful shutdown", what="veer to start shutting down")
        self.assertEqual(self.tunnel.echo(b"after SIGTERM"), (2, b"after SIGTERM"))
        probes.join()
        self.assert_maintenance_503(probes, self.HOLD, 9, "SIGTERM")
        for i, r in enumerate(probes.res):
            self.assertEqual((r.header("Connection") or "").lower(), "close",
                             "probe %d answered without Connection: close while shutting down" % i)
        self.assertTrue(self.tunnel.wait_closed(DEADLINE), "the tunnel outlived the shutdown")
        try:
            v.proc.wait(DEADLINE)  # by itself: a second SIGTERM would cut the shutdown short
        except subprocess.TimeoutExpired:
            self.fail("veer did not exit after SIGTERM:\n" + "\n".join(v.log()))
        self.assertEqual(v.stop(), 0)
        s = shutdown_summary(v.log())
        self.assertIsNotNone(s, "\n".join(v.log()))
        self.assertEqual(s["aborted"], 0, s)
        self.assertEqual(s["tunnels_closed"], 1, s)
        self.assertGreaterEqual(s["completed"], 3, s)
        self.assertEqual([r for r in self.blue.snapshot() if r.target.startswith("/held")], [])

    def test_sigusr2_with_held_requests_and_a_websocket(self):
        """SIGUSR2 while three requests are held and a tunnel is open: the new
        process takes over (maintenance still on, from the state file); the old
        one answers its held requests with the maintenance 503 when their hold
        runs out, closes the tunnel once it is all that is left and exits 0;
        then maintenance off on the new process and api serves again, a new
        tunnel works, and the new process exits 0."""
        v, probes = self.start()
        old_pid = v.proc.pid
        v.send_signal(signal.SIGUSR2)
        new = Successor(v, old_pid)
        self._cleanup.append(lambda: new.stop(signal.SIGKILL) if new.alive() else None)
        self.assertEqual(self.tunnel.echo(b"across"), (2, b"across"))
        probes.join()
        self.assert_maintenance_503(probes, self.HOLD, 9, "SIGUSR2")
        self.assertTrue(self.tunnel.wait_closed(DEADLINE), "the old tunnel outlived the old process")
        try:
            rc = v.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.fail("the old veer did not exit:\n" + "\n".join(pid_lines(v, old_pid)))
        self.assertEqual(rc, 0, "\n".join(pid_lines(v, old_pid)))
        s = wait_for(lambda: shutdown_summary(pid_lines(v, old_pid)), timeout=10,
                     what="the old process's summary")
        self.assertEqual((s["aborted"], s["tunnels_closed"]), (0, 1), s)
        self.assertTrue(new.alive())
        # The new process kept maintenance (state file), and serves once it is off.
        r = self.client(self.api).request("GET", "/during")
        self.assertEqual(r.status, 503)
        parse_ok(self.admin(v).command("maintenance off api"))
        r = self.client(self.api).request("GET", "/after")
        self.assertEqual((r.status, r.header("X-Backend")), (200, "blue-1"))
        t2 = WebSocket(self, self.webport)
        self.assertEqual(t2.echo(b"new process"), (2, b"new process"))
        t2.sock.close()
        self.assertEqual([r for r in self.blue.snapshot() if r.target.startswith("/held")], [])
        rc = new.stop()
        if SUBREAPER:
            self.assertEqual(rc, 0, "\n".join(new.log()))
        self.assert_clean(v)
        v.stop()


# --- an upgrade with a readiness-checked pool ----------------------------------------------------


class UpgradeWithHealthChecksTest(CombinationCase):
    def test_upgrade_under_load_with_health_checked_pool(self):
        """A pool with readiness checks (interval 500 ms, rise 2), every
        backend READY, strict load, SIGUSR2: zero failed requests (the
        contract of a binary upgrade). The new process must not serve with its
        backends PENDING, which would answer 503 "no eligible backend" until
        two checks passed."""
        bs = [self.stamp(n) for n in ("b-1", "b-2")]
        v = self.veer(config([("api", [(b.name, b.address) for b in bs],
                               health_text("/ready", 500, 1000, 2, 2))]), workers=1)
        port = listener_ports(v)["api"]
        wait_for(lambda: all(pool_state(v, b.name) == "READY" for b in bs), what="READY")
        load = StrictLoad(port, 4)
        self._cleanup.append(load.stop)
        load.wait_count(50)
        old_pid = v.proc.pid
        v.send_signal(signal.SIGUSR2)
        new = Successor(v, old_pid)
        self._cleanup.append(lambda: new.stop(signal.SIGKILL) if new.alive() else None)
        try:
            self.assertEqual(v.proc.wait(DEADLINE), 0, "\n".join(pid_lines(v, old_pid)))
        except subprocess.TimeoutExpired:
            self.fail("the old veer did not exit:\n" + "\n".join(pid_lines(v, old_pid)))
        load.wait_each_sent_after(time.monotonic(), 20)
        load.stop()
        self.assertEqual(len(load.failures()), 0, load.describe())
        rc = new.stop()
        if SUBREAPER:
            self.assertEqual(rc, 0, "\n".join(new.log()))
        self.assert_clean(v)
        v.stop()


def states(v, pool="api"):
    """{backend: state} as `show pool` gives it."""
    return {b["name"]: b["state"] for b in show_pool(v.admin_socket, pool)["backends"]}


class UpgradeCarriesReadinessTest(CombinationCase):
    """The new process of a binary upgrade starts each checked backend with
    the readiness the old one routed by (READY, DOWN, PENDING), and only an
    upgrade does: a plain restart starts every checked backend PENDING."""

    def start(self, state_dir="{tmp}"):
        """ready-1 READY, down-1 READY then DOWN (its checks fail from then
        on), pending-1 never passing a check: PENDING."""
        self.r, self.d, self.p = (self.stamp(n) for n in ("ready-1", "down-1", "pending-1"))
        self.p.set_healthy(False)
        self.text = config([("api", [(b.name, b.address) for b in (self.r, self.d, self.p)],
                             health_text("/ready", 100, 1000, 2, 2))]).replace(
            'state_file = "{tmp}/state"', 'state_file = "%s/state"' % state_dir)
        v = self.veer(self.text, workers=1)
        wait_for(lambda: states(v) == {"ready-1": "READY", "down-1": "READY",
                                       "pending-1": "PENDING"}, what="ready-1, down-1 READY")
        self.d.set_healthy(False)
        wait_for(lambda: states(v)["down-1"] == "DOWN", what="down-1 DOWN")
        return v

    def assert_no_traffic(self, *bs):
        for b in bs:
            self.assertEqual([r.target for r in b.snapshot()], [],
                             "%s got client traffic" % b.name)

    def test_upgrade_keeps_down_and_pending_backends_out_of_rotation(self):
        """Across SIGUSR2 under strict load: every request 200, none to
        down-1 or pending-1; veer's readiness endpoint 200 throughout (the new
        process does not report its pool as without an eligible backend); the
        new process shows down-1 DOWN (its own checks alone would leave it
        PENDING) and pending-1 PENDING."""
        v = self.start()
        port = listener_ports(v)["api"]
        ready = self.prompt(port, "/api/health/readiness")
        load = StrictLoad(port, 2)
        self._cleanup.append(load.stop)
        load.wait_count(20)
        old_pid = v.proc.pid
        t0 = time.monotonic()
        v.send_signal(signal.SIGUSR2)
        new = Successor(v, old_pid)
        self._cleanup.append(lambda: new.stop(signal.SIGKILL) if new.alive() else None)
        try:
            self.assertEqual(v.proc.wait(DEADLINE), 0, "\n".join(pid_lines(v, old_pid)))
        except subprocess.TimeoutExpired:
            self.fail("the old veer did not exit:\n" + "\n".join(pid_lines(v, old_pid)))
        load.wait_each_sent_after(time.monotonic(), 10)
        ready.wait_after(time.monotonic())
        load.stop()
        ready.stop()
        ready.check(self, t0, time.monotonic(), "the upgrade")
        self.assertFalse(load.failures(), load.describe())
        new.wait_log(r"readiness carried over: 1 ready, 1 down, 1 pending")
        # Answered by the new process: the old one has exited.
        self.assertEqual(states(v), {"ready-1": "READY", "down-1": "DOWN",
                                     "pending-1": "PENDING"})
        self.assert_no_traffic(self.d, self.p)
        rc = new.stop()
        if SUBREAPER:
            self.assertEqual(rc, 0, "\n".join(new.log()))
        self.assert_clean(v)
        v.stop(sig=None)

    def test_plain_restart_starts_every_checked_backend_pending(self):
        """The state file does not carry readiness: after a stop and a start
        on the same state file, ready-1 (READY before) and down-1 (DOWN
        before) are PENDING, and the file's other decisions (a weight) are
        restored. ready-1's checks fail from the stop on, so only a carried
        state could make it READY."""
        keep = tempfile.mkdtemp(prefix="veer-state-")
        self._cleanup.append(lambda: shutil.rmtree(keep, ignore_errors=True))
        v = self.start(keep)
        parse_ok(veerctl(v.admin_socket, "set", "weight", "api/ready-1", "7").stdout)
        self.r.set_healthy(False)
        v.stop()
        v2 = self.veer(self.text, workers=1)
        v2.wait_log(r"state file .*restored 3 backends", what="the state file restored")
        self.assertEqual(states(v2), {"ready-1": "PENDING", "down-1": "PENDING",
                                      "pending-1": "PENDING"})
        self.assertEqual([b["weight"] for b in show_pool(v2.admin_socket)["backends"]],
                         [7, 100, 100])
        self.assertFalse([l for l in v2.log() if "readiness carried" in l])
        port = listener_ports(v2)["api"]
        c = self.client(port)
        r = c.request("GET", "/api/health/readiness")
        self.assertEqual(r.status, 503)
        # Still PENDING after ready-1's checks ran (two failed, as rise is 2).
        n = len(self.r.checks)
        wait_for(lambda: len(self.r.checks) >= n + 2, what="two checks of ready-1")
        self.assertEqual(states(v2)["ready-1"], "PENDING")
        self.assert_no_traffic(self.d, self.p)
        v2.stop()


# --- certificate reloads with session tickets, then an upgrade ------------------------------------


TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
RELOADS = 50


class CertificateReloadsThenUpgradeTest(CombinationCase):
    def setUp(self):
        super().setUp()
        self.files = TlsFiles()
        self._cleanup.append(self.files.close)
        for n in ("one", "two"):
            self.files.self_signed(n, ["site.test"])
        self.install("one")

    def install(self, src):
        for ext in (".pem", ".key"):
            with open(self.files.path(src + ext), "rb") as f:
                data = f.read()
            tmp = self.files.path("site" + ext + ".new")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.files.path("site" + ext))

    def served(self, port):
        c = TlsClient(port, sni="site.test")
        try:
            der = c.cert_der()
            return "one" if der == self.files.der("one") else \
                "two" if der == self.files.der("two") else "<other>"
        finally:
            c.close()

    def session(self, port, ctx, sess=None):
        """A connection (resuming sess when given) with one request on it:
        (whether it resumed, the session to use next)."""
        c = TlsClient(port, ctx=ctx, sni="site.test", session=sess)
        try:
            r = c.request("GET", "/tls")
            self.assertEqual(r.status, 200)
            return c.sock.session_reused, c.sock.session
        finally:
            c.close()

    def test_fifty_certificate_reloads_with_tickets_then_upgrade(self):
        b = self.backend("b")
        # Under ASan, freed memory waits in a quarantine (256 MiB by default)
        # before it is reused, so RSS grows with everything a reload frees:
        # without the quarantine, RSS is what veer keeps. The upgraded process
        # inherits the setting.
        saved = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = (saved + ":" if saved else "") + "quarantine_size_mb=0"
        try:
            v = self.veer(config([("api", [("b", b.address)], "")],
                                 listeners=[("api", tls_listen_text([(self.files.cert("site"),
                                                                      self.files.key("site"),
                                                                      None)]))]), workers=1)
        finally:
            if saved is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = saved
        port = tls_listener_ports(v)["tls"][0]
        ctx12 = tls_client_context(min_version=TLS12, max_version=TLS12)
        ctx13 = tls_client_context(min_version=TLS13)
        reused, s12 = self.session(port, ctx12)
        self.assertFalse(reused)
        self.assertTrue(s12.has_ticket)
        reused, s13 = self.session(port, ctx13)
        self.assertFalse(reused)
        rss = {}
        for i in range(1, RELOADS + 1):
            want = "two" if i % 2 else "one"
            self.install(want)
            p = veerctl(v.admin_socket, "reload")
            self.assertEqual(p.returncode, 0, "reload %d: %s" % (i, p.stdout + p.stderr))
            wait_for(lambda: self.served(port) == want,
                     what="reload %d: new connections to get certificate %s" % (i, want))
            # Ticket keys belong to the process, not to a certificate: a
            # ticket from before any of these reloads still resumes.
            reused, _ = self.session(port, ctx12, s12)
            self.assertTrue(reused, "reload %d: TLS 1.2 ticket no longer resumes" % i)
            reused, s13 = self.session(port, ctx13, s13)
            self.assertTrue(reused, "reload %d: TLS 1.3 ticket no longer resumes" % i)
            if i in (10, RELOADS):
                rss[i] = v.rss_kib()
        growth = rss[RELOADS] - rss[10]
        self.assertLess(growth, 4 * 1024, "RSS grew %d KiB over %d reloads (%s)"
                        % (growth, RELOADS - 10, rss))

        # The upgrade: a new process with its own ticket keys. An old ticket
        # costs one full handshake there (documented), never an error; then
        # its own tickets resume.
        old_pid = v.proc.pid
        p = veerctl(v.admin_socket, "upgrade")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        new = Successor(v, old_pid)
        self._cleanup.append(lambda: new.stop(signal.SIGKILL) if new.alive() else None)
        try:
            rc = v.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.fail("the old veer did not exit:\n" + "\n".join(pid_lines(v, old_pid)))
        self.assertEqual(rc, 0, "\n".join(pid_lines(v, old_pid)))
        self.assertEqual(self.served(port), "one" if RELOADS % 2 == 0 else "two")
        for ctx, sess in ((ctx12, s12), (ctx13, s13)):
            reused, fresh = self.session(port, ctx, sess)
            self.assertFalse(reused, "the new process resumed the old process's ticket")
            reused, _ = self.session(port, ctx, fresh)
            self.assertTrue(reused, "the new process's own ticket does not resume")
        rc = new.stop()
        if SUBREAPER:
            self.assertEqual(rc, 0, "\n".join(new.log()))
        for pid in (old_pid, new.pid):
            s = shutdown_summary(pid_lines(v, pid))
            self.assertIsNotNone(s, "no shutdown summary from pid %d" % pid)
            self.assertEqual(s["aborted"], 0, s)
        self.assert_clean(v)
        v.stop()


if __name__ == "__main__":
    unittest.main()
