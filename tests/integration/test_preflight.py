"""Rollout pre-flight checks (issue 19): `rollout start ... preflight=NAME`
sends the requests of a configured list to every READY backend of the
canary group before any traffic moves; the first failure ends the rollout
with no traffic moved, refused and audited with the backend, the request
and the answer.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_preflight
"""

import json
import os
import threading
import time

from helpers import audit_records, show_pool, veerctl
from veertest import DEADLINE, Backend, VeerTestCase, wait_for

SMOKE = ('preflight = ( { name = "smoke"; timeout_ms = %d; requests = (\n'
         '  { method = "GET"; path = "/api/health/status"; expect_status = 200; },\n'
         '  { method = "GET"; path = "/v1/ping"; expect_status = 200;'
         ' expect_body_contains = "pong"; } ); } );\n')


class CanaryBackend(Backend):
    """Answers /api/health/status 200, /v1/ping with `ping` (status, body), a
    chunked body in two pieces split inside the word when split=True; with
    stall set, /v1/ping waits until it is cleared. Records the preflight
    requests (User-Agent veer-preflight) apart from the rest."""

    def __init__(self, name, ping=(200, b"pong"), split=False, host="127.0.0.1"):
        self.ping = ping
        self.split = split
        self.stall = None
        self.preflight = []
        self.traffic = []
        super().__init__(name, handler=self.handle, host=host)

    def handle(self, conn, req):
        with self.lock:
            (self.preflight if req.header("User-Agent") == "veer-preflight"
             else self.traffic).append((req.method, req.target))
        if req.target == "/v1/ping":
            if self.stall is not None:
                self.stall.wait(DEADLINE)
            status, body = self.ping
            if self.split:
                a, b = body[:2], body[2:]
                conn.sendall(b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                             % (status, len(a), a, len(b), b))
            else:
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, len(body), body))
            return False
        body = (self.name + "\n").encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                     % (len(body), self.name.encode(), body))
        return True


class PreflightCase(VeerTestCase):
    def start(self, greens, blues=2, timeout_ms=2000, lists=None):
        self.blues = [self.track(CanaryBackend("blue-%d" % i)) for i in range(1, blues + 1)]
        self.greens = greens
        bl = ",\n".join('{ name = "%s"; address = "%s"; group = "%s"; }'
                        % (b.name, b.address, g)
                        for g, bs in (("blue", self.blues), ("green", greens)) for b in bs)
        cfg = ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
               'admin = { socket = "{tmp}/admin.sock"; };\n'
               'audit_log = "{tmp}/audit.log";\n' + (lists or SMOKE % timeout_ms) +
               'pools = ( { name = "api"; backends = ( %s );\n'
               '  shares = { blue = 100; green = 0; }; } );\n' % bl)
        self.v = self.veer(cfg)
        self.sock = self.v.admin_socket
        return self.v

    def track(self, b):
        self._cleanup.append(b.close)
        return b

    def green(self, n, **kw):
        return [self.track(CanaryBackend("green-%d" % i, **kw)) for i in range(1, n + 1)]

    def rollout(self, *extra):
        return veerctl(self.sock, "rollout", "start", "api", "canary=green", "steps=10,100",
                       "interval=60s", *extra)

    def shares(self):
        return {g["name"]: g["share"] for g in show_pool(self.sock)["groups"]}

    def status(self):
        p = veerctl(self.sock, "rollout", "status", "api")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def audit(self):
        return audit_records(os.path.join(self.v.tmp, "audit.log"))[1]


class PreflightPassTest(PreflightCase):
    def test_every_ready_canary_backend_gets_every_request_then_step_1(self):
        """Each green backend gets both requests, in order, as veer-preflight;
        no blue backend gets any; then step 1 moves 10% to green and the OK
        line reports the preflight and its duration. A body split across
        chunks still matches."""
        gs = self.green(3)
        gs[1].split = True
        self.start(gs)
        p = self.rollout("preflight=smoke")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\AOK gen=\d+ applied_us=\d+ step=1/2 share=10 "
                                   r"preflight=smoke preflight_ms=[\d.]+\n\n\Z")
        for g in gs:
            self.assertEqual(g.preflight, [("GET", "/api/health/status"), ("GET", "/v1/ping")],
                             g.name)
        for b in self.blues:
            self.assertEqual(b.preflight, [], b.name)
        self.assertEqual(self.shares(), {"blue": 90, "green": 10})
        st = self.status()
        self.assertRegex(st, r"(?m)^state running$")
        self.assertRegex(st, r"(?m)^preflight smoke passed in [\d.]+ ms: 3 backends, 6 requests$")

    def test_ten_backends_ten_requests_well_within_the_budget(self):
        """The issue's budget: 10 backends x 10 requests under 15 s (veer
        reports the duration; on loopback it is milliseconds)."""
        gs = [self.track(CanaryBackend("green-%d" % i, host="127.0.0.%d" % (50 + i)))
              for i in range(1, 11)]
        reqs = ",\n".join('{ path = "/api/health/status"; }' for _ in range(9))
        self.start(gs, lists='preflight = ( { name = "ten"; requests = ( %s,\n'
                             '  { path = "/v1/ping"; expect_body_contains = "pong"; } ); } );\n'
                             % reqs)
        for g in gs:
            g.preflight.clear()
        t0 = time.monotonic()
        p = self.rollout("preflight=ten")
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        ms = float(p.stdout.split("preflight_ms=")[1].split()[0])
        self.assertLess(ms, 15000)
        self.assertLess(took, 15)
        for g in gs:
            self.assertEqual(len(g.preflight), 10, g.name)
        print("\npreflight 10 backends x 10 requests: %.1f ms (veer), %.1f ms (the command)"
              % (ms, took * 1000))


class PreflightFailTest(PreflightCase):
    def assert_nothing_moved(self, p, pattern):
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertRegex(p.stdout, pattern)
        self.assertEqual(self.shares(), {"blue": 100, "green": 0})
        for g in self.greens:
            self.assertEqual(g.traffic, [], "%s got traffic" % g.name)
        rec = self.audit()[-1]
        self.assertEqual(rec["actor"], "operator")
        self.assertTrue(rec["command"].startswith("rollout start api"), rec)
        self.assertTrue(rec["result"].startswith("ERR preflight smoke"), rec)
        st = self.status()
        self.assertRegex(st, r"(?m)^state ended$")
        self.assertRegex(st, r"(?m)^verdict preflight smoke (failed|stopped).*no traffic moved$")
        return rec

    def test_a_wrong_status_aborts_before_any_traffic_moves(self):
        gs = self.green(2)
        gs[1].ping = (503, b"pong")
        self.start(gs)
        p = self.rollout("preflight=smoke")
        rec = self.assert_nothing_moved(
            p, r"\AERR preflight smoke failed on backend green-2: GET /v1/ping: status 503, "
               r"expected 200 \([\d.]+ ms\); no traffic moved\n\n\Z")
        self.assertIn("green-2", rec["result"])
        self.assertRegex(self.status(), r"(?m)^preflight smoke failed in [\d.]+ ms: backend "
                                        r"green-2: GET /v1/ping: status 503, expected 200$")

    def test_a_body_without_the_expected_text_aborts(self):
        gs = self.green(1, ping=(200, b"pang"))
        self.start(gs)
        p = self.rollout("preflight=smoke")
        self.assert_nothing_moved(
            p, r"ERR preflight smoke failed on backend green-1: GET /v1/ping: status 200, but "
               r"the body does not contain \"pong\"")

    def test_a_backend_that_never_answers_fails_at_the_timeout(self):
        gs = self.green(1)
        gs[0].stall = threading.Event()
        self._cleanup.append(gs[0].stall.set)
        self.start(gs, timeout_ms=300)
        t0 = time.monotonic()
        p = self.rollout("preflight=smoke")
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.assert_nothing_moved(p, r"ERR preflight smoke failed on backend green-1: GET "
                                     r"/v1/ping: no answer within 300 ms")

    def test_a_refused_connection_fails(self):
        gs = self.green(1)
        self.start(gs)
        gs[0].close()  # READY without checks, but nothing listens any more
        p = self.rollout("preflight=smoke")
        self.assert_nothing_moved(p, r"ERR preflight smoke failed on backend green-1: GET "
                                     r"/api/health/status: connect: Connection refused")

    def test_no_ready_canary_backend_fails(self):
        gs = self.green(1)
        self.start(gs)
        p = veerctl(self.sock, "set", "state", "api/green-1", "maint")
        self.assertEqual(p.returncode, 0, p.stdout)
        p = self.rollout("preflight=smoke")
        self.assert_nothing_moved(p, r"ERR preflight smoke failed on backend -: -: no READY "
                                     r"backend in the canary group")

    def test_unknown_preflight_is_refused_and_state_untouched(self):
        self.start(self.green(1))
        p = self.rollout("preflight=nope")
        self.assertEqual(p.returncode, 1)
        self.assertIn("ERR unknown preflight nope", p.stdout)
        self.assertEqual(self.shares(), {"blue": 100, "green": 0})

    def test_abort_during_the_preflight_stops_it(self):
        """rollout abort while the preflight waits on a slow backend: the
        start is answered ERR (stopped), the abort OK, nothing moved."""
        gs = self.green(1)
        gs[0].stall = threading.Event()
        self._cleanup.append(gs[0].stall.set)
        self.start(gs, timeout_ms=20000)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("p", self.rollout("preflight=smoke")))
        t.start()
        wait_for(lambda: ("GET", "/v1/ping") in gs[0].preflight, what="the preflight waiting")
        self.assertRegex(self.status(), r"(?m)^state preflight$")
        p = self.rollout("preflight=smoke")
        self.assertIn("ERR a rollout is already running", p.stdout)
        p = veerctl(self.sock, "rollout", "pause", "api")
        self.assertIn("is in its preflight", p.stdout)
        p = veerctl(self.sock, "rollout", "abort", "api")
        self.assertEqual(p.returncode, 0, p.stdout)
        t.join(DEADLINE)
        self.assert_nothing_moved(out["p"], r"\AERR preflight smoke stopped: aborted by operator; "
                                            r"no traffic moved")

    def test_reload_during_the_preflight_stops_it(self):
        gs = self.green(1)
        gs[0].stall = threading.Event()
        self._cleanup.append(gs[0].stall.set)
        self.start(gs, timeout_ms=20000)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("p", self.rollout("preflight=smoke")))
        t.start()
        wait_for(lambda: ("GET", "/v1/ping") in gs[0].preflight, what="the preflight waiting")
        p = veerctl(self.sock, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)
        t.join(DEADLINE)
        self.assertRegex(out["p"].stdout, r"\AERR preflight smoke stopped: the configuration "
                                          r"was reloaded; no traffic moved")
        self.assertEqual(self.shares(), {"blue": 100, "green": 0})


class PreflightConfigTest(VeerTestCase):
    def test_bad_lists_are_refused_with_file_and_line(self):
        from veertest import veer_check_config
        base = ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
                'pools = ( { name = "api"; backends = ( { name = "a"; address = "127.0.0.1:9"; } );'
                ' } );\n')
        for text, line, msg in (
                ('preflight = ( { name = "s"; requests = ( ); } );\n', 3, "non-empty list"),
                ('preflight = ( { name = "s";\n requests = ( { path = "x"; } ); } );\n', 4,
                 "must start with '/'"),
                ('preflight = ( { name = "s"; requests = (\n { path = "/"; expect_status = 99; }'
                 ' ); } );\n', 4, "expect_status"),
                ('preflight = ( { name = "s"; requests = ( { path = "/"; } ); },\n'
                 ' { name = "s"; requests = ( { path = "/"; } ); } );\n', 4,
                 "duplicate preflight name 's'"),
                ('preflight = ( { requests = ( { path = "/"; } ); } );\n', 3, "name")):
            rc, out, path = veer_check_config(base + text)
            os.unlink(path)
            self.assertNotEqual(rc, 0, text)
            self.assertRegex(out, r":%d: .*%s" % (line, msg), text)
