"""Readiness-gated admission, draining with completion, runtime membership and
replace as a rolling step (issue 5; ARCHITECTURE.md "Backend states" and
"Admin socket protocol and veerctl").

Backends are HealthBackends in the test process: they answer veer's readiness
checks (GET /ready, User-Agent veer-health) 503 or 200 as the test says, and
record which requests were checks and which were client traffic, with the
monotonic time each arrived or was answered. Times measured in veer (the
replies' drained_ms, total_ms) are only reported; the bounds are measured here.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_admission
"""

import json
import re
import select
import threading
import time
import unittest

from helpers import (AdminConn, HealthBackend, RoutedLoad, admin_config, admin_http_port,
                     audit_records, health_text, parse_ok, pool_states, quick_config, status_doc,
                     veerctl)
from veertest import DEADLINE, Client, VeerTestCase, asan_build, wait_for

RISE = 2
FALL = 2


def load_k(target):
    """k of a RoutedLoad target /load/i/k (0 for anything else)."""
    parts = target.split("/")
    return int(parts[3]) if len(parts) == 4 and parts[1] == "load" and parts[3].isdigit() else 0


class SlowRequest:
    """One client on its own keep-alive connection sending GET path until the
    backend named want answers it (the other backends answer that path at
    once), so exactly one such request is held on want. Records the response
    (or the error) and the monotonic time it was fully read."""

    def __init__(self, port, want, path="/slow"):
        self.port = port
        self.want = want
        self.path = path
        self.res = None
        self.error = None
        self.t_done = None
        self.tries = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        c = None
        try:
            c = Client(self.port, timeout=60)
            while self.tries < 500:
                self.tries += 1
                r = c.request("GET", self.path)
                t = time.monotonic()
                if r is None or not r.complete or r.status != 200 or \
                        r.header("X-Backend") == self.want:
                    self.res, self.t_done = r, t
                    return
        except (OSError, ValueError) as e:
            self.t_done = time.monotonic()
            self.error = e
        finally:
            if c is not None:
                c.close()
            self.done.set()

    def wait(self, timeout=DEADLINE):
        if not self.done.wait(timeout):
            raise AssertionError("the request on %s did not end within %.1fs" % (self.want, timeout))
        return self.res


class Hold:
    """A hold function for HealthBackend: requests for path are held until
    released (or for `seconds` when given), and `started` is set when one
    arrives; other requests are answered at once."""

    def __init__(self, path="/slow", seconds=None, limit=60):
        self.path = path
        self.seconds = seconds
        self.limit = limit
        self.started = threading.Event()
        self.t_started = None
        self.release_ev = threading.Event()
        self.holding = 0

    def __call__(self, req):
        if req.target != self.path:
            return
        self.t_started = time.monotonic()
        self.holding += 1
        self.started.set()
        try:
            if self.seconds is not None:
                time.sleep(self.seconds)
            else:
                self.release_ev.wait(self.limit)
        finally:
            self.holding -= 1

    def release(self):
        self.release_ev.set()


def slow_every(n, seconds):
    """A hold that makes every n-th request of each RoutedLoad client slow."""
    def hold(req):
        k = load_k(req.target)
        if k and k % n == 0:
            time.sleep(seconds)
    return hold


class AdmissionCase(VeerTestCase):
    def hb(self, name, healthy=True, hold=None):
        b = HealthBackend(name, healthy=healthy, hold=hold)
        self._cleanup.append(b.close)
        return b

    def start(self, backends, health=True, interval_ms=100, rise=RISE, fall=FALL):
        extra_pool = health_text("/ready", interval_ms, 1000, rise, fall) if health else ""
        cfg = admin_config([(b.name, b.address, 100) for b in backends], extra_pool=extra_pool)
        self.v = self.veer(cfg)
        self.sock = self.v.admin_socket
        self.audit_path = self.v.tmp + "/audit.log"
        self._adm = None
        return self.v

    # --- admin -------------------------------------------------------------

    def admin(self):
        c = AdminConn(self.sock)
        self._cleanup.append(c.close)
        return c

    def ctl(self, *args, timeout=None):
        return veerctl(self.sock, *args, timeout=timeout)

    def show(self):
        """`show pool api --json` over one kept admin connection (cheap to poll)."""
        for attempt in (0, 1):
            try:
                if self._adm is None:
                    self._adm = self.admin()
                return json.loads(self._adm.command("show pool api --json"))
            except (OSError, AssertionError):
                if attempt:
                    raise
                self._adm = None

    def states(self):
        return pool_states(self.show())

    def wait_state(self, name, state, timeout=DEADLINE):
        """Poll show pool until name is in state; returns the monotonic time the
        reply saying so arrived."""
        seen = {}

        def cond():
            seen["states"] = self.states()
            return seen["states"].get(name) == state
        try:
            wait_for(cond, timeout, interval=0.01, what="%s %s" % (name, state))
        except AssertionError:
            raise AssertionError("%s not %s within %.1fs: %r\n%s" % (
                name, state, timeout, seen.get("states"), "\n".join(self.v.log()[-30:])))
        return time.monotonic()

    def assertOK(self, p):
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return parse_ok(p.stdout)

    def load(self, n):
        ld = RoutedLoad(self.v.port, n)
        self._cleanup.append(ld.stop)
        return ld

    def assert_none_to(self, load, name, t0, t1=None, why=""):
        bad = [r for r in load.sent_between(t0, t1) if r.backend == name]
        self.assertEqual(len(bad), 0, "%d requests sent after %s were answered by %s, first: %r"
                         % (len(bad), why, name, bad[:3]))

    def assert_no_failures(self, load, t0=None):
        """Every request of load (sent after t0 when given) got a complete 200."""
        recs = load.all_records()
        failed = [r for r in load.failures() if t0 is None or r.sent > t0]
        self.assertEqual(len(failed), 0, "%d of %d requests failed, first: %r"
                         % (len(failed), len(recs), failed[:5]))

    def assert_no_traffic(self, backend, why, since=None):
        got = backend.traffic if since is None else backend.traffic_after(since)
        self.assertEqual(len(got), 0, "%d client requests reached %s %s, first: %r"
                         % (len(got), backend.name, why, got[:3]))


# --- 1. admission ------------------------------------------------------------


class AdmissionTest(AdmissionCase):
    def test_pending_until_rise_then_admitted_within_bound(self):
        interval = 200
        steady = self.hb("steady", healthy=True)
        late = self.hb("late", healthy=False)
        self.start([steady, late], interval_ms=interval)
        # Clients send continuously from the start, before any backend is READY.
        load = self.load(4)

        # late fails its readiness checks for 1.5 s (counted from its first check).
        wait_for(lambda: late.checks, what="late's first readiness check")
        t_first_check = late.checks[0][0]
        wait_for(lambda: time.monotonic() - t_first_check >= 1.5, timeout=DEADLINE,
                 what="1.5 s of failing checks")
        self.assertEqual(self.states()["late"], "PENDING")
        self.assert_no_traffic(late, "while PENDING")
        self.assertGreater(steady.traffic_count(), 0, "the clients were not sending meanwhile")
        self.assertGreaterEqual(len(late.checks), 4, late.checks)
        self.assertEqual({c[1] for c in late.checks}, {503})

        t_flip = late.set_healthy(True)
        wait_for(lambda: late.traffic, what="client traffic on late after it passes")
        t_first, target, streak = late.traffic[0]
        passes = late.passing_checks()
        # Never before the rise-th passing check: each check is recorded before it is answered.
        self.assertGreaterEqual(streak, RISE, "first client request %s came after %d passing "
                                "check(s), rise is %d" % (target, streak, RISE))
        self.assertGreater(t_first, passes[RISE - 1])
        admitted = t_first - t_flip
        # interval x (rise + 1) is the bound; on top, scheduling slack for a busy
        # 2-core machine (the test process, veer's control thread and the backend threads all
        # compete for the CPUs): 300 ms, 800 ms under ASan (1,047 ms seen on a fresh CI
        # machine running two suites at once).
        slack = 0.800 if asan_build() else 0.300
        bound = interval * (RISE + 1) / 1000.0 + slack
        print("\n  admitted %.0f ms after passing (bound %.0f ms = %d x %d + %.0f ms slack)"
              % (admitted * 1000, bound * 1000, interval, RISE + 1, slack * 1000))
        self.assertLess(admitted, bound)
        self.v.wait_log(r"backend api/late PENDING -> READY after %d passing checks \(gen \d+\)"
                        % RISE)
        self.assertEqual(self.states(), {"steady": "READY", "late": "READY"})

        load.wait_each_sent_after(time.monotonic(), 3)
        load.stop()
        # Before the first backend was READY the clients got 503 (no eligible backend);
        # anything sent after steady's first client request must have succeeded.
        t_steady = steady.traffic[0][0]
        self.assert_no_failures(load, t_steady)
        self.assertEqual({r.status for r in load.failures()} - {503}, set(), load.failures()[:5])
        self.v.stop()


# --- 2. READY -> DOWN -> READY -------------------------------------------------


class SlowStartTest(AdmissionCase):
    def test_admitted_backend_ramps_its_weight(self):
        """slow_start_ms = 2000: a backend that becomes READY starts at a tenth of
        its weight and ramps linearly to all of it over two seconds (the factor
        is in /status as weight_factor; the effective weight in show pool)."""
        a = self.hb("a", healthy=True)
        b = self.hb("b", healthy=False)
        cfg = quick_config([(x.name, x.address, 100) for x in (a, b)],
                           extra_top='admin = { socket = "{tmp}/admin.sock"; '
                                     'http = "127.0.0.1:0"; };\n',
                           extra_pool=health_text("/ready", 50, 1000, 1, 1) +
                           " slow_start_ms = 2000;")
        self.v = self.veer(cfg)
        port = admin_http_port(self.v)

        def backends():
            return {x["name"]: x for x in status_doc(port)["pools"][0]["backends"]}
        # a ramps too when it is first admitted; wait until it is done.
        wait_for(lambda: backends()["a"]["weight_factor"] == 1, what="a fully ramped")
        t_up = b.set_healthy(True)
        first = wait_for(lambda: backends()["b"]["state"] == "READY" and backends()["b"],
                         what="b READY")
        t_first = time.monotonic()
        samples = [(t_first, first["weight_factor"])]
        self.assertLess(first["weight_factor"], 0.5, first)
        self.assertGreaterEqual(first["weight_factor"], 0.1, first)
        while samples[-1][1] < 1:
            wait_for(lambda: backends()["b"]["weight_factor"] != samples[-1][1],
                     what="the ramp to move on from %r" % (samples[-1],))
            samples.append((time.monotonic(), backends()["b"]["weight_factor"]))
        factors = [f for _, f in samples]
        self.assertEqual(factors, sorted(factors), "the ramp went down: %r" % samples)
        # Linear: 0.1 + 0.9 x elapsed / 2 s, within what polling adds.
        for t, f in samples[1:-1]:
            self.assertLessEqual(f, 0.1 + 0.9 * (t - t_up) / 2.0 + 0.01, samples)
        self.assertGreaterEqual(samples[-1][0] - t_up, 1.9, "ramp over too soon: %r" % samples)
        # And the traffic split follows: the effective weights are 50/50 at the end.
        self.assertEqual({n: x["effective_weight"] for n, x in backends().items()},
                         {"a": 50, "b": 50})
        self.v.stop()


class DownTest(AdmissionCase):
    def test_down_after_fall_in_flight_finishes_then_ready_again(self):
        hold = Hold()
        a = self.hb("a")
        b = self.hb("b", hold=hold)
        self.start([a, b], interval_ms=100)
        self.wait_state("a", "READY")
        self.wait_state("b", "READY")
        load = self.load(3)
        load.wait_each_sent_after(time.monotonic(), 3)

        slow = SlowRequest(self.v.port, "b")
        self.assertTrue(hold.started.wait(DEADLINE), "no /slow request reached b")
        n_checks = len(b.checks)
        b.set_healthy(False)
        t_down = self.wait_state("b", "DOWN")
        fails = [c for c in b.checks[n_checks:] if c[1] != 200]
        self.assertGreaterEqual(len(fails), FALL, b.checks[n_checks:])
        self.v.wait_log(r"backend api/b READY -> DOWN after %d failing checks: status 503" % FALL)

        # No new client request reaches b once DOWN is visible.
        load.wait_each_sent_after(t_down, 5)
        self.assert_none_to(load, "b", t_down, why="DOWN was visible")
        # The request in flight when b went DOWN finishes normally.
        self.assertFalse(slow.done.is_set(), "the held request ended early: %r %r" %
                         (slow.res, slow.error))
        hold.release()
        res = slow.wait()
        self.assertIsNone(slow.error)
        self.assertIsNotNone(res)
        self.assertEqual((res.status, res.complete, res.header("X-Backend")), (200, True, "b"))

        # DOWN -> READY after rise passes; traffic comes back.
        b.set_healthy(True)
        t_up = self.wait_state("b", "READY")
        self.v.wait_log(r"backend api/b DOWN -> READY after %d passing checks" % RISE)
        wait_for(lambda: any(r.backend == "b" for r in load.sent_between(t_up)),
                 what="client traffic on b once READY again")
        load.stop()
        self.assert_no_failures(load)

        _, recs = audit_records(self.audit_path)
        health = [(r["command"], r["before"], r["after"]) for r in recs if r["actor"] == "health"]
        b_moves = [(bf["state"], af["state"]) for cmd, bf, af in health if cmd == "health api/b"]
        self.assertEqual(b_moves, [("PENDING", "READY"), ("READY", "DOWN"), ("DOWN", "READY")])
        self.assertIn(("health api/a", {"state": "PENDING"}, {"state": "READY"}), health)
        self.assertTrue(self.ctl("audit", "verify").stdout.startswith("OK"))
        self.v.stop()


# --- 3, 4. draining ---------------------------------------------------------------


class DrainTest(AdmissionCase):
    def two(self, hold_b):
        self.a = self.hb("a")
        self.b = self.hb("b", hold=hold_b)
        self.start([self.a, self.b], interval_ms=100)
        self.wait_state("a", "READY")
        self.wait_state("b", "READY")

    def test_drain_wait_returns_when_the_last_request_ends(self):
        hold = Hold(seconds=1.0)
        self.two(hold)
        # This thread holds the slow request's connection and the admin
        # connection and sees both answers arrive (select), so the lag below
        # is not a scheduling race between Python threads.
        c = self.client(self.v.port)
        while True:
            c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_for(lambda: hold.started.is_set() or c.reader.buf or
                     select.select([c.sock], [], [], 0)[0], what="/slow answered or held")
            if hold.started.is_set():
                break
            self.assertEqual(c.response().header("X-Backend"), "a")

        cmd = self.admin()
        t_cmd = time.monotonic()
        cmd.send(b"drain api/b --wait\n")
        # Acknowledged: the drain is applied (b DRAINING in show pool).
        t_ack = self.wait_state("b", "DRAINING")
        # A second client sends requests from then on, recording who answers.
        load = self.load(2)
        t_done = t_reply = None
        got = b""
        end = time.monotonic() + DEADLINE
        while (t_reply is None or t_done is None) and time.monotonic() < end:
            ready, _, _ = select.select([c.sock, cmd.sock], [], [], 0.5)
            now = time.monotonic()
            if c.sock in ready and t_done is None:
                d = c.sock.recv(65536)
                self.assertTrue(d, "the slow request's connection closed")
                got += d
                head, sep, body = got.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length: *(\d+)", head)
                if sep and m and len(body) >= int(m.group(1)):
                    t_done = now
            if cmd.sock in ready and t_reply is None:
                d = cmd.sock.recv(65536)
                self.assertTrue(d, "admin socket closed without a reply")
                cmd.buf += d
                if b"\n\n" in cmd.buf:
                    t_reply = now
        self.assertIsNotNone(t_reply, "no drain --wait reply")
        reply = cmd.reply().decode()
        self.assertIsNotNone(t_done, "the slow response never completed; reply: " + reply)
        self.assertLessEqual(t_done, t_reply, "the reply came before the response: " + reply)
        c.reader.buf = got
        res = c.response()
        self.assertEqual((res.status, res.complete, res.header("X-Backend")), (200, True, "b"))
        ok = parse_ok(reply)
        self.assertEqual(ok["active"], 1, reply)
        self.assertIn("drained_ms", ok, reply)
        self.assertGreater(t_cmd, hold.t_started)
        # The reply came after b answered, and within 50 ms of the client getting it all.
        self.assertGreater(t_reply, self.b.replied[-1][0])
        lag = t_reply - t_done
        print("\n  drain --wait reply %.1f ms after the response reached the client (drained_ms=%s)"
              % (lag * 1000, ok["drained_ms"]))
        self.assertLess(lag, 0.050)
        self.assertEqual(self.states()["b"], "DRAINED")

        load.wait_each_sent_after(t_reply, 5)
        load.stop()
        self.assertGreater(len(load.sent_between(t_ack, t_reply)), 0,
                           "the second client sent nothing while the drain waited")
        self.assert_none_to(load, "b", t_ack, why="the drain was acknowledged")
        self.assert_no_traffic(self.b, "after the drain was acknowledged", since=t_ack)
        self.assert_no_failures(load)
        self.v.wait_log(r"backend api/b DRAINED: 1 requests finished")
        self.v.stop()

    def test_drain_wait_timeout_leaves_draining(self):
        hold = Hold()  # released by the test once the request is 2 s old
        self.two(hold)
        slow = SlowRequest(self.v.port, "b")
        self.assertTrue(hold.started.wait(DEADLINE), "no /slow request reached b")

        t0 = time.monotonic()
        p = self.ctl("drain", "api/b", "--wait", "--timeout", "300ms")
        t1 = time.monotonic()
        self.assertEqual(p.stdout, "ERR timeout active=1\n\n", p.stderr)
        self.assertEqual(p.returncode, 1)
        self.assertGreaterEqual(t1 - t0, 0.3)
        self.assertFalse(slow.done.is_set(), "the request ended before the timeout")
        self.assertEqual(self.states()["b"], "DRAINING")

        # The request goes on to 2 s and completes; then b is DRAINED.
        wait_for(lambda: time.monotonic() - hold.t_started >= 2.0, what="the request to be 2 s old")
        self.assertEqual(self.states()["b"], "DRAINING")
        hold.release()
        res = slow.wait()
        self.assertIsNone(slow.error)
        self.assertEqual((res.status, res.complete, res.header("X-Backend")), (200, True, "b"))
        self.wait_state("b", "DRAINED")
        self.v.stop()

    def test_input_behind_a_pending_drain_wait_is_bounded(self):
        # While drain --wait waits, the connection's later lines wait behind it; veer must
        # stop reading them (a bounded buffer) rather than take whatever the client sends.
        hold = Hold()
        self.two(hold)
        slow = SlowRequest(self.v.port, "b")
        self.assertTrue(hold.started.wait(DEADLINE), "no /slow request reached b")
        c = AdminConn(self.sock)
        self._cleanup.append(c.close)
        c.send(b"drain api/b --wait --timeout 60s\n")
        wait_for(lambda: self.states()["b"] == "DRAINING", what="b to be DRAINING")
        c.sock.setblocking(False)
        chunk, sent, cap = b"show pools\n" * 6000, 0, 64 * 1024 * 1024
        last = time.monotonic()
        # Send until veer takes no more for a whole second (or far too much was taken).
        while sent < cap and time.monotonic() - last < 1.0:
            try:
                sent += c.sock.send(chunk)
                last = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        self.assertLess(sent, 4 * 1024 * 1024, "veer kept reading behind a pending command")
        # The drain completes once the request ends; the queued lines are answered after it.
        hold.release()
        res = slow.wait()
        self.assertIsNone(slow.error)
        self.assertEqual(res.status, 200)
        c.sock.setblocking(True)
        c.sock.settimeout(DEADLINE)
        first = c.reply()
        self.assertTrue(first.startswith(b"OK gen="), first)
        self.assertIn(b"drained_ms=", first)
        self.assertTrue(c.reply().startswith(b"pool "))
        c.close()
        self.wait_state("b", "DRAINED")
        self.v.stop()

    def test_set_state_drain(self):
        hold = Hold()
        self.two(hold)
        slow = SlowRequest(self.v.port, "b")
        self.assertTrue(hold.started.wait(DEADLINE), "no /slow request reached b")
        load = self.load(2)
        load.wait_each_sent_after(time.monotonic(), 2)

        p = self.ctl("set", "state", "api/b", "drain")
        t_ok = time.monotonic()
        self.assertOK(p)
        self.assertEqual(self.states()["b"], "DRAINING")
        load.wait_each_sent_after(t_ok, 5)
        self.assert_none_to(load, "b", t_ok, why="set state drain answered OK")
        hold.release()
        res = slow.wait()
        self.assertEqual((res.status, res.complete, res.header("X-Backend")), (200, True, "b"))
        self.wait_state("b", "DRAINED")
        load.stop()
        self.assert_no_failures(load)
        self.v.stop()

    def test_drain_force_cuts_what_is_left(self):
        hold = Hold(limit=30)
        self.two(hold)
        slow = SlowRequest(self.v.port, "b")
        self.assertTrue(hold.started.wait(DEADLINE), "no /slow request reached b")

        t0 = time.monotonic()
        ok = self.assertOK(self.ctl("drain", "api/b", "--force"))
        self.assertEqual(ok["active"], 1)
        t_drained = self.wait_state("b", "DRAINED", timeout=5)
        print("\n  DRAINED %.0f ms after drain --force" % ((t_drained - t0) * 1000))
        self.assertLess(t_drained - t0, 3.0)
        self.assertEqual(hold.holding, 1, "b is still holding the request: force did it")
        # The client saw its connection closed: no response, a truncated one, or a reset.
        slow.wait(5)
        self.assertTrue(slow.error is not None or slow.res is None or not slow.res.complete,
                        "the cut request got a complete response: %r %r" %
                        (slow.res and (slow.res.status, slow.res.body), slow.error))
        hold.release()
        # veer still serves on a.
        c = Client(self.v.port)
        r = c.request("GET", "/after")
        c.close()
        self.assertEqual((r.status, r.header("X-Backend")), (200, "a"))
        self.v.stop()

    def test_drain_wait_force(self):
        hold = Hold(limit=30)
        self.two(hold)
        slow = SlowRequest(self.v.port, "b")
        self.assertTrue(hold.started.wait(DEADLINE), "no /slow request reached b")
        t0 = time.monotonic()
        p = self.ctl("drain", "api/b", "--wait", "--force")
        t1 = time.monotonic()
        ok = self.assertOK(p)
        self.assertEqual(ok["active"], 1)
        self.assertIn("drained_ms", ok)
        self.assertLess(t1 - t0, 3.0)
        self.assertEqual(self.states()["b"], "DRAINED")
        self.assertEqual(hold.holding, 1)
        slow.wait(5)
        self.assertTrue(slow.error is not None or slow.res is None or not slow.res.complete)
        hold.release()
        self.v.stop()


# --- 5, 8. membership ---------------------------------------------------------------


class MembershipTest(AdmissionCase):
    def test_add_pending_then_traffic_and_del_rules(self):
        a = self.hb("a")
        self.start([a], interval_ms=100)
        self.wait_state("a", "READY")
        load = self.load(3)
        load.wait_each_sent_after(time.monotonic(), 2)

        c = self.hb("c", healthy=False)
        p = self.ctl("add", "backend", "api", "c", c.address)
        t_add = time.monotonic()
        ok = self.assertOK(p)
        self.assertEqual(ok["state"], "PENDING")
        self.assertEqual(self.states()["c"], "PENDING")
        # Refused while PENDING.
        p = self.ctl("del", "backend", "api", "c")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertTrue(p.stdout.startswith("ERR "), p.stdout)
        # Checks fail: c stays PENDING and gets nothing while the clients go on.
        wait_for(lambda: len(c.checks) >= 3, what="three checks of c")
        load.wait_each_sent_after(t_add, 5)
        self.assertEqual(self.states()["c"], "PENDING")
        self.assert_no_traffic(c, "while PENDING")
        self.assert_none_to(load, "c", t_add, why="add backend (PENDING)")

        c.set_healthy(True)
        t_ready = self.wait_state("c", "READY")
        wait_for(lambda: c.traffic, what="client traffic on c")
        self.assertGreaterEqual(c.traffic[0][2], RISE, c.traffic[0])
        self.assertGreater(c.traffic[0][0], c.passing_checks()[RISE - 1])
        self.v.wait_log(r"backend api/c PENDING -> READY after %d passing checks" % RISE)
        wait_for(lambda: any(r.backend == "c" for r in load.sent_between(t_ready)),
                 what="load answered by c")

        # Refused while READY, and nothing changed.
        gen = self.show()["generation"]
        p = self.ctl("del", "backend", "api", "c")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertTrue(p.stdout.startswith("ERR "), p.stdout)
        self.assertIn("READY", p.stdout)
        doc = self.show()
        self.assertEqual(doc["generation"], gen)
        self.assertEqual(pool_states(doc), {"a": "READY", "c": "READY"})

        # Allowed once DRAINED.
        ok = self.assertOK(self.ctl("drain", "api/c", "--wait"))
        self.assertIn("drained_ms", ok)
        self.assertEqual(self.states()["c"], "DRAINED")
        n_c = c.traffic_count()
        t_drained = time.monotonic()
        ok = self.assertOK(self.ctl("del", "backend", "api", "c"))
        t_del = time.monotonic()
        self.assertEqual(pool_states(self.show()), {"a": "READY"})
        self.assertNotIn(" c ", " " + " ".join(self.ctl("show", "pools").stdout.split()) + " ")
        load.wait_each_sent_after(t_del, 5)
        self.assert_none_to(load, "c", t_drained, why="c was DRAINED")
        self.assertEqual(c.traffic_count(), n_c, "c got client requests after DRAINED/del")
        self.v.wait_log(r"backend api/c deleted")

        # Allowed in MAINT: add d, let it serve, set maint, delete.
        d = self.hb("d")
        self.assertEqual(self.assertOK(self.ctl("add", "backend", "api", "d", d.address))["state"],
                         "PENDING")
        t_ready = self.wait_state("d", "READY")
        wait_for(lambda: any(r.backend == "d" for r in load.sent_between(t_ready)),
                 what="load answered by d")
        self.assertOK(self.ctl("set", "state", "api/d", "maint"))
        t_maint = time.monotonic()
        self.assertEqual(self.states()["d"], "MAINT")
        self.assertOK(self.ctl("del", "backend", "api", "d"))
        t_del = time.monotonic()
        self.assertEqual(pool_states(self.show()), {"a": "READY"})
        load.wait_each_sent_after(t_del, 5)
        self.assert_none_to(load, "d", t_maint, why="set state maint")
        load.stop()
        self.assert_no_failures(load)
        self.v.stop()

    def test_pool_without_health_admits_at_once(self):
        a = self.hb("a")
        self.start([a], health=False)
        self.assertEqual(self.states(), {"a": "READY"})
        load = self.load(2)
        c = self.hb("c", healthy=False)  # would fail checks: there are none
        ok = self.assertOK(self.ctl("add", "backend", "api", "c", c.address))
        t_ok = time.monotonic()
        self.assertEqual(ok["state"], "READY")
        self.assertEqual(self.states()["c"], "READY")
        wait_for(lambda: any(r.backend == "c" for r in load.sent_between(t_ok)),
                 what="load answered by c")
        load.stop()
        self.assert_no_failures(load)
        self.assertEqual(c.checks, [], "veer checked a backend of a pool without health")
        self.v.stop()


    def test_del_force_while_its_requests_finish_and_add_del_cycles(self):
        """Issue 15 item 6: a backend deleted (--force) while requests on it are
        finishing, added and deleted again and again under load. A deleted
        backend must not be freed while a worker may still reach it (snapshot,
        request, connection, or a queued message naming it): under ASan a use
        after free ends veer with an error instead of exit 0."""
        a = self.hb("a")
        x = self.hb("x", hold=lambda req: time.sleep(0.005))  # requests stay in flight a moment
        self.start([a], health=False)
        adm = self.admin()
        load = self.load(6)
        cycles = 40
        for i in range(cycles):
            name = "x%d" % i
            reply = adm.command("add backend api %s %s" % (name, x.address))
            self.assertTrue(reply.startswith("OK "), reply)
            n = x.traffic_count()
            wait_for(lambda: x.traffic_count() >= n + 2, what="requests on %s" % name)
            # Odd cycles delete at once, even ones once a request was answered too.
            if i % 2 == 0:
                m = len(x.replied)
                wait_for(lambda: len(x.replied) > m, what="a request on %s answered" % name)
            reply = adm.command("del backend api %s --force" % name)
            self.assertTrue(reply.startswith("OK "), reply)
        t_last = time.monotonic()
        load.wait_each_sent_after(t_last, 3)
        self.assert_none_to(load, "x", t_last, why="the last del backend")
        load.stop()
        self.assert_no_failures(load)
        self.assertEqual(pool_states(self.show()), {"a": "READY"})
        self.v.stop()


# --- 6, 7. replace --------------------------------------------------------------------

PROGRESS = [r"added {new} 127\.0\.0\.1:\d+ to group \S+",
            r"{new} READY after \d+(\.\d+)? ms",
            r"draining {old} \(\d+ in flight\)",
            r"{old} DRAINED after \d+(\.\d+)? ms",
            r"deleted {old}"]


class ReplaceTest(AdmissionCase):
    def test_rolling_deploy_zero_failed_requests(self):
        hold = slow_every(3, 0.2)  # every 3rd request of each client takes 200 ms
        olds = [self.hb("blue-%d" % i, hold=hold) for i in range(1, 5)]
        self.start(olds, interval_ms=100)
        for b in olds:
            self.wait_state(b.name, "READY")
        # 12 clients: enough that a drain almost never finds its backend idle (checked below).
        load = self.load(12)
        load.wait_each_sent_after(time.monotonic(), 4)

        t_start = time.monotonic()
        news = []
        in_flight = []  # K of each "draining OLD (K in flight)"
        for i, old in enumerate(olds):
            new = self.hb("blue-%d" % (i + 5), hold=hold)
            news.append(new)
            p = self.ctl("replace", "api", old.name, new.name, new.address, timeout=120)
            t_ok = time.monotonic()
            lines = p.stdout.split("\n")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertTrue(p.stdout.endswith("\n\n"), p.stdout)
            self.assertEqual(lines[-2:], ["", ""], p.stdout)
            self.assertRegex(lines[-3], r"\AOK gen=\d+ replaced=%s with=%s total_ms=\d+(\.\d+)?\Z"
                             % (old.name, new.name))
            self.assertEqual(len(lines) - 3, len(PROGRESS), p.stdout)
            for line, rx in zip(lines, PROGRESS):
                self.assertRegex(line, r"\A%s\Z" % rx.format(old=re.escape(old.name),
                                                            new=re.escape(new.name)))
            in_flight.append(int(re.search(r"\((\d+) in flight\)", lines[2]).group(1)))
            self.assertNotIn(old.name, pool_states(self.show()))
            load.wait_each_sent_after(t_ok, 2)
            self.assert_none_to(load, old.name, t_ok, why="replace of %s answered" % old.name)
            old.close()  # gone for good: any request still sent to it would fail
        total = time.monotonic() - t_start
        load.wait_each_sent_after(time.monotonic(), 4)
        load.stop()

        recs = load.all_records()
        failed = load.failures()
        print("\n  rolling deploy of 4 backends: %.2f s, %d requests, %d failed, in flight at "
              "each drain: %s" % (total, len(recs), len(failed), in_flight))
        self.assert_no_failures(load)
        self.assertEqual(pool_states(self.show()),
                         {"blue-5": "READY", "blue-6": "READY", "blue-7": "READY",
                          "blue-8": "READY"})
        for new in news:
            self.assertGreater(new.traffic_count(), 0, new.name)
        # The load did keep requests in flight on the backends being drained.
        self.assertGreater(sum(in_flight), 0, in_flight)
        self.v.stop()

    def test_replace_new_never_ready_keeps_old(self):
        old = self.hb("blue-1")
        other = self.hb("blue-2")
        self.start([old, other], interval_ms=100)
        self.wait_state("blue-1", "READY")
        self.wait_state("blue-2", "READY")
        load = self.load(2)
        bad = self.hb("blue-9", healthy=False)
        t0 = time.monotonic()
        p = self.ctl("replace", "api", "blue-1", "blue-9", bad.address, "--timeout", "1s")
        t1 = time.monotonic()
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        lines = p.stdout.split("\n")
        self.assertEqual(lines[-2:], ["", ""], p.stdout)
        self.assertIn("did not become ready", lines[-3])
        self.assertEqual(lines[-3],
                         "ERR blue-9 did not become ready within 1000 ms; blue-1 left serving")
        self.assertRegex(lines[0], r"\Aadded blue-9 ")
        self.assertGreaterEqual(t1 - t0, 1.0)
        self.assertGreater(len(bad.checks), 0, "blue-9 was never checked")

        self.assertEqual(pool_states(self.show()), {"blue-1": "READY", "blue-2": "READY"})
        load.wait_each_sent_after(t1, 3)
        wait_for(lambda: any(r.backend == "blue-1" for r in load.sent_between(t1)),
                 what="blue-1 still serving")
        load.stop()
        self.assert_no_traffic(bad, "(it never became READY)")
        self.assert_no_failures(load)
        self.v.stop()


if __name__ == "__main__":
    unittest.main()
