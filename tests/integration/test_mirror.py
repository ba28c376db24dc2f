"""Traffic mirroring (issue 19): a sample of a pool's requests, picked by the
FNV-1a hash of their request id, is copied to a shadow group; the client only
ever gets the primary's answer, and each mirrored request's pair of answers is
compared (status, body SHA-256 and length, a few headers) and counted:
`mirror report`, `/status` "mirror", `veer_mirror_*` metrics.

Shadows are Recorders (Python backends in this process that record what they
got) or veer-backend processes: a plain one answers the primary, one started
with --variant and the same --name answers the shadow, identically except in
the one respect each /v/ path names, so the expected diffs are known exactly.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl \\
     BACKEND_BIN=build/tests/backend/veer-backend python3 -m unittest -v test_mirror
"""

import collections
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from helpers import (admin_http_port, audit_records, parse_ok, scrape, show_pool, status_doc,
                     unused_port, veerctl)
import veertest
from veertest import DEADLINE, Backend, Client, VeerTestCase, veer_check_config, wait_for

RESULTS = ("match", "status_diff", "body_diff", "timeout", "error")
TOTAL_KEYS = {"mirrored", "dropped", "match", "status_diff", "body_diff", "timeout", "error",
              "delta_p50_ms", "delta_p99_ms"}
MISMATCH_KEYS = {"request_id", "route", "method", "path", "result", "primary_status",
                 "shadow_status", "primary_sha256", "shadow_sha256", "primary_bytes",
                 "shadow_bytes", "header"}
# A primary answer, however busy the machine, comes well before this (seconds): the
# shadows that never answer in these tests have timeouts of 1.5 s and more.
PRIMARY_BOUND = 0.75


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def sampled(request_id, percent):
    """Whether the contract mirrors a request with this X-Request-Id at percent."""
    return fnv1a64(request_id.encode()) % 10000 < percent * 100


def sha(data):
    return hashlib.sha256(data).hexdigest()


Seen = collections.namedtuple("Seen", "method target request_id body")


class Recorder(Backend):
    """Records (method, target, X-Request-Id, body) of every request and answers
    200 "NAME\\n" text/plain (the head only for HEAD), keep-alive; with delay set,
    after that many seconds (or when released at cleanup)."""

    def __init__(self, name, delay=0.0):
        self.seen = []
        self.delay = delay
        self.release = threading.Event()
        super().__init__(name, handler=self.handle)

    def handle(self, conn, req):
        with self.lock:
            self.seen.append(Seen(req.method, req.target, req.header("X-Request-Id"), req.body))
        if self.delay:
            self.release.wait(self.delay)
        body = (self.name + "\n").encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), b"" if req.method == "HEAD" else body))
        return True

    def snapshot(self):
        with self.lock:
            return list(self.seen)

    def close(self):
        self.release.set()
        super().close()


def upgrade_or(handle):
    """A handler that answers an Upgrade request 101 and ends the connection, and
    hands every other request to handle."""
    def h(conn, req):
        if req.header("Upgrade") is None:
            return handle(conn, req)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\n\r\n")
        return False
    return h


class BlackHole:
    """Accepts connections and never reads or answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        veertest.close_listener(self.sock)
        for c in self.conns:
            c.close()


class ProcBackend:
    """A veer-backend process (--variant optional) on an ephemeral port."""

    def __init__(self, name, variant=False):
        args = [veertest.BACKEND_BIN, "--name", name, "--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(args + (["--variant"] if variant else []),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        m = re.search(r"listening on (\S+)", self.proc.stdout.readline())
        if m is None:
            self.close()
            raise AssertionError("veer-backend did not say where it listens")
        self.address = m.group(1)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(DEADLINE)
        self.proc.stdout.close()


def backend_text(name, address, group):
    return '{ name = "%s"; address = "%s"; group = "%s"; }' % (name, address, group)


def pool_text(name, members, mirror=None, extra=""):
    """A pool of [(name, address, group)]: the first member's group has the whole
    share, every other group 0."""
    groups = []
    for _, _, g in members:
        if g not in groups:
            groups.append(g)
    shares = " ".join("%s = %d;" % (g, 100 if i == 0 else 0) for i, g in enumerate(groups))
    return ('{ name = "%s"; backends = ( %s );\n    shares = { %s };%s%s }'
            % (name, ", ".join(backend_text(*m) for m in members), shares,
               "\n    mirror = %s;" % mirror if mirror is not None else "", extra))


def config(pools, persist="{tmp}", routes="", listen_pool="api"):
    """One listener (fallback pool listen_pool), the admin socket and HTTP address,
    audit log and state file in persist, the pool texts, optional routes."""
    return ('listen = ( { address = "127.0.0.1:0"; pool = "%s"; } );\n'
            'timeouts = { quiet_ms = 100; };\n'
            'admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
            'audit_log = "%s/audit.log";\nstate_file = "%s/state";\n'
            'pools = (\n    %s\n);\n%s'
            % (listen_pool, persist, persist, ",\n    ".join(pools),
               "routes = (\n    %s\n);\n" % ",\n    ".join(routes) if routes else ""))


class MirrorCase(VeerTestCase):
    def track(self, b):
        self._cleanup.append(b.close)
        return b

    def recorder(self, name, delay=0.0):
        return self.track(Recorder(name, delay))

    def proc_backend(self, name, variant=False):
        return self.track(ProcBackend(name, variant))

    def start(self, cfg, **kw):
        self.v = self.veer(cfg, **kw)
        self.sock = self.v.admin_socket
        self.http = admin_http_port(self.v)
        return self.v

    def ctl(self, *args):
        return veerctl(self.sock, *args)

    def ok(self, *args):
        p = self.ctl(*args)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return parse_ok(p.stdout)

    def report(self, pool="api"):
        p = self.ctl("mirror", "report", pool, "--json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertTrue(p.stdout.endswith("}\n\n"), p.stdout)
        return json.loads(p.stdout)

    def totals(self, route="", pool="api", doc=None):
        """The totals of one route in the report (zeros when the route is not listed)."""
        doc = doc or self.report(pool)
        for r in doc["routes"]:
            if r["route"] == route:
                return r["totals"]
        return {k: 0 for k in TOTAL_KEYS - {"delta_p50_ms", "delta_p99_ms"}}

    def wait_totals(self, what, route="", pool="api", **want):
        """Poll the report until each named total reaches at least its value; the totals."""
        def reached():
            t = self.totals(route, pool)
            return t if all(t[k] >= n for k, n in want.items()) else None
        return wait_for(reached, interval=0.05, what=what)

    def counts(self, t):
        return {k: t[k] for k in ("mirrored", "dropped") + RESULTS}

    def get(self, c, path, rid=None, method="GET", body=None, headers=None):
        h = dict(headers or {})
        if rid is not None:
            h["X-Request-Id"] = rid
        t0 = time.monotonic()
        r = c.request(method, path, headers=h, body=body)
        took = time.monotonic() - t0
        self.assertIsNotNone(r, path)
        return r, took


def text_report_row(text, cls):
    """{column: value} of the counts in the row of class cls (all: every class) of a
    text `mirror report`, whose table has a header line naming its columns."""
    lines = [l.split() for l in text.splitlines()]
    for i, head in enumerate(lines):
        if "class" in head and "mirrored" in head and "status_diff" in head:
            break
    else:
        raise AssertionError("no table header in the text report:\n" + text)
    for row in lines[i + 1:]:
        if len(row) == len(head) and row[head.index("class")] == cls:
            return {k: row[head.index(k)] for k in ("mirrored", "dropped") + RESULTS}
    raise AssertionError("no %s row in the text report:\n%s" % (cls, text))


def counts_of(**kw):
    out = {k: 0 for k in ("mirrored", "dropped") + RESULTS}
    out.update(kw)
    return out


class SamplingTest(MirrorCase):
    def setUp(self):
        super().setUp()
        self.blue = self.recorder("svc")
        self.green = self.recorder("svc")
        self.start(config([pool_text("api", [("blue-1", self.blue.address, "blue"),
                                             ("green-1", self.green.address, "green")],
                                     '{ group = "green"; percent = 50.0; }')]))

    def test_the_sample_is_fnv1a_of_the_request_id_on_every_connection_and_worker(self):
        ids = ["mirror-id-%03d" % i for i in range(60)]
        pred = [i for i in ids if sampled(i, 50)]
        self.assertTrue(10 < len(pred) < 50, pred)  # the id set exercises both sides
        # pass 1: a new connection per request (both workers take some)
        for i in ids:
            c = Client(self.v.port)
            r, _ = self.get(c, "/s/" + i, rid=i)
            c.close()
            self.assertEqual((r.status, r.body), (200, b"svc\n"))
        # pass 2: one keep-alive connection, the other order
        c = self.client(self.v.port)
        for i in reversed(ids):
            r, _ = self.get(c, "/s/" + i, rid=i)
            self.assertEqual((r.status, r.body), (200, b"svc\n"))
        t = self.wait_totals("both passes' mirrors", mirrored=2 * len(pred))
        wait_for(lambda: self.totals()["mirrored"] == len(self.green.snapshot()), interval=0.05,
                 what="every shadow request counted")
        got = collections.Counter((s.method, s.target, s.request_id)
                                  for s in self.green.snapshot())
        self.assertEqual(got, collections.Counter({("GET", "/s/" + i, i): 2 for i in pred}))
        self.assertEqual(collections.Counter(s.request_id for s in self.blue.snapshot()),
                         collections.Counter({i: 2 for i in ids}))
        t = self.totals()
        self.assertEqual(self.counts(t), counts_of(mirrored=2 * len(pred), match=2 * len(pred)))
        doc = self.report()
        self.assertEqual((doc["pool"], doc["on"], doc["group"], doc["percent"]),
                         ("api", True, "green", 50.0))
        self.v.stop()

    def test_a_generated_request_id_is_sampled_and_sent_to_both(self):
        """Requests without X-Request-Id: veer's generated id decides, and the
        primary and the shadow get the same one."""
        for n in range(40):
            c = Client(self.v.port)
            r, _ = self.get(c, "/g/%d" % n)
            c.close()
            self.assertEqual(r.status, 200)
        primary = {s.target: s.request_id for s in self.blue.snapshot()}
        self.assertEqual(len(primary), 40)
        self.assertEqual(len(set(primary.values())), 40, primary)
        self.assertNotIn(None, primary.values())
        pred = {p: i for p, i in primary.items() if sampled(i, 50)}
        self.assertTrue(0 < len(pred) < 40, pred)
        self.wait_totals("the mirrors", mirrored=len(pred))
        wait_for(lambda: self.totals()["mirrored"] == len(self.green.snapshot()), interval=0.05,
                 what="every shadow request counted")
        self.assertEqual({s.target: s.request_id for s in self.green.snapshot()}, pred)
        self.assertEqual(len(self.green.snapshot()), len(pred))
        self.v.stop()


class MethodsAndBodiesTest(MirrorCase):
    def setup_pool(self, mirror):
        self.blue = self.recorder("svc")
        self.green = self.recorder("svc")
        self.start(config([pool_text("api", [("blue-1", self.blue.address, "blue"),
                                             ("green-1", self.green.address, "green")],
                                     mirror)]))

    def test_unsafe_methods_are_not_mirrored_by_default(self):
        self.setup_pool('{ group = "green"; }')
        c = self.client(self.v.port)
        for m in ("POST", "PUT", "DELETE", "PATCH"):
            r, _ = self.get(c, "/m/" + m.lower(), method=m, body=b"x")
            self.assertEqual(r.status, 200, m)
        for m in ("GET", "HEAD", "OPTIONS"):
            r, _ = self.get(c, "/m/" + m.lower(), method=m)
            self.assertEqual(r.status, 200, m)
        self.wait_totals("the safe methods' mirrors", mirrored=3)
        self.assertEqual(sorted((s.method, s.target) for s in self.green.snapshot()),
                         [("GET", "/m/get"), ("HEAD", "/m/head"), ("OPTIONS", "/m/options")])
        self.assertEqual(self.counts(self.totals()), counts_of(mirrored=3, match=3))
        self.assertEqual(len(self.blue.snapshot()), 7)
        self.v.stop()

    def test_a_body_arriving_in_pieces_is_teed_whole(self):
        """The shadow starts with the head; the rest of the body, sent after both
        backends have a connection from veer, follows it there."""
        self.setup_pool('{ group = "green"; methods = ( "PUT" ); }')
        body = bytes(range(256)) * 8
        c = self.client(self.v.port)
        c.send(b"PUT /slow HTTP/1.1\r\nHost: t\r\nX-Request-Id: slow-1\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:100]))
        wait_for(lambda: self.blue.connections and self.green.connections,
                 what="veer connected to the primary and the shadow")
        c.send(body[100:])
        r = c.response("PUT")
        self.assertEqual((r.status, r.body), (200, b"svc\n"))
        self.wait_totals("the mirror", mirrored=1)
        self.assertEqual(self.green.snapshot(), [Seen("PUT", "/slow", "slow-1", body)])
        self.assertEqual(self.counts(self.totals()), counts_of(mirrored=1, match=1))
        self.v.stop()

    def test_pipelined_requests_are_each_mirrored(self):
        self.setup_pool('{ group = "green"; }')
        c = self.client(self.v.port)
        c.send(b"".join(b"GET /pipe/%d?q=%d HTTP/1.1\r\nHost: t\r\nX-Request-Id: pipe-%d\r\n\r\n"
                        % (i, i, i) for i in range(5)))
        for i in range(5):
            r = c.response()
            self.assertEqual((r.status, r.body), (200, b"svc\n"), i)
        self.wait_totals("five mirrors", mirrored=5)
        self.assertEqual(sorted((s.target, s.request_id) for s in self.green.snapshot()),
                         [("/pipe/%d?q=%d" % (i, i), "pipe-%d" % i) for i in range(5)])
        self.assertEqual(self.counts(self.totals()), counts_of(mirrored=5, match=5))
        self.v.stop()

    def test_a_request_the_client_cuts_short_is_dropped(self):
        self.setup_pool('{ group = "green"; methods = ( "POST" ); }')
        c = Client(self.v.port)
        c.send(b"POST /cut HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        wait_for(lambda: self.green.connections, what="veer connected to the shadow")
        c.close()
        self.wait_totals("the drop", dropped=1)
        c = self.client(self.v.port)
        r, _ = self.get(c, "/after", method="POST", body=b"y")
        self.assertEqual(r.status, 200)
        self.wait_totals("the next mirror", mirrored=1)
        self.assertEqual([(s.target, s.body) for s in self.green.snapshot()], [("/after", b"y")])
        self.assertEqual(self.counts(self.totals()), counts_of(mirrored=1, dropped=1, match=1))
        self.v.stop()

    def test_upgrade_requests_are_never_mirrored(self):
        self.setup_pool('{ group = "green"; }')
        for b in (self.blue, self.green):
            b.handler = upgrade_or(b.handle)
        c = self.client(self.v.port)
        r, _ = self.get(c, "/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
        self.assertEqual(r.status, 101)
        c = self.client(self.v.port)
        r, _ = self.get(c, "/after")
        self.assertEqual(r.status, 200)
        self.wait_totals("the mirror of /after", mirrored=1)
        self.assertEqual([s.target for s in self.green.snapshot()], ["/after"])
        self.assertEqual(self.counts(self.totals()), counts_of(mirrored=1, match=1))
        self.v.stop()

    def test_bodies_up_to_max_body_bytes_are_teed_larger_ones_dropped(self):
        self.setup_pool('{ group = "green"; methods = ( "POST" ); max_body_bytes = 1024; }')
        rnd = random.Random(19)
        small = bytes(rnd.randrange(256) for _ in range(1000))
        exact = bytes(rnd.randrange(256) for _ in range(1024))
        pieces = [bytes(rnd.randrange(256) for _ in range(n)) for n in (300, 1, 599)]
        big = bytes(rnd.randrange(256) for _ in range(1025))
        big_pieces = [bytes(rnd.randrange(256) for _ in range(n)) for n in (1000, 1000)]

        def chunked(ps):
            return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in ps) + b"0\r\n\r\n"

        te = {"Transfer-Encoding": "chunked"}
        c = self.client(self.v.port)
        sent = [("/up/cl-small", small, None), ("/up/cl-exact", exact, None),
                ("/up/chunked", chunked(pieces), te), ("/up/cl-big", big, None),
                ("/up/chunked-big", chunked(big_pieces), te)]
        for path, body, h in sent:
            r, _ = self.get(c, path, method="POST", body=body, headers=h)
            self.assertEqual((r.status, r.body), (200, b"svc\n"), path)
        r, _ = self.get(c, "/up/get")  # GET is not in methods: neither mirrored nor dropped
        self.assertEqual(r.status, 200)
        self.wait_totals("three mirrored, two dropped", mirrored=3, dropped=2)
        self.assertEqual(self.counts(self.totals()), counts_of(mirrored=3, dropped=2, match=3))
        self.assertEqual({s.target: (s.method, s.body) for s in self.green.snapshot()},
                         {"/up/cl-small": ("POST", small), "/up/cl-exact": ("POST", exact),
                          "/up/chunked": ("POST", b"".join(pieces))})
        self.assertEqual(len(self.green.snapshot()), 3)
        # the primary got every body whole
        self.assertEqual({s.target: s.body for s in self.blue.snapshot()},
                         {"/up/cl-small": small, "/up/cl-exact": exact,
                          "/up/chunked": b"".join(pieces), "/up/cl-big": big,
                          "/up/chunked-big": b"".join(big_pieces), "/up/get": b""})
        self.v.stop()


class ShadowTroubleTest(MirrorCase):
    """A shadow that never answers, answers late or refuses: the client sees the
    primary's answer at the primary's pace; the shadow's fate is counted."""

    def setup_pool(self, shadow_address, mirror):
        self.blue = self.recorder("blue-1")
        self.start(config([pool_text("api", [("blue-1", self.blue.address, "blue"),
                                             ("green-1", shadow_address, "green")], mirror)]))

    def send(self, n, prefix, conn=None):
        c = conn or self.client(self.v.port)
        took = []
        for i in range(n):
            r, t = self.get(c, "/%s/%d" % (prefix, i))
            self.assertEqual((r.status, r.body), (200, b"blue-1\n"), i)
            took.append(t)
        self.assertLess(max(took), PRIMARY_BOUND, took)
        return took

    def test_black_hole_shadow_times_out_and_never_holds_the_primary(self):
        hole = self.track(BlackHole())
        self.setup_pool(hole.address, '{ group = "green"; timeout_ms = 1500; }')
        self.send(10, "bh")
        t = self.wait_totals("ten timeouts", timeout=10)
        self.assertEqual(self.counts(t), counts_of(mirrored=10, timeout=10))
        self.assertIsNone(t["delta_p50_ms"])
        self.assertIsNone(t["delta_p99_ms"])
        m = scrape(self.http)
        self.assertEqual(m.value("veer_mirror_requests_total", pool="api", route="",
                                 result="timeout"), 10)
        self.v.stop()

    def test_max_inflight_drops_beyond_it_and_frees_slots_after_timeouts(self):
        hole = self.track(BlackHole())
        self.setup_pool(hole.address,
                        '{ group = "green"; timeout_ms = 2000; max_inflight = 2; }')
        c = self.client(self.v.port)  # one connection: one worker, whose limit is 2
        self.send(10, "inflight", c)
        t = self.wait_totals("eight drops", dropped=8)
        t = self.wait_totals("two timeouts", timeout=2)
        self.assertEqual(self.counts(t), counts_of(mirrored=2, dropped=8, timeout=2))
        # both slots are free again: the next request is mirrored (and times out)
        self.send(1, "after", c)
        t = self.wait_totals("the third timeout", timeout=3)
        self.assertEqual(self.counts(t), counts_of(mirrored=3, dropped=8, timeout=3))
        m = scrape(self.http)
        self.assertEqual(m.value("veer_mirror_requests_total", pool="api", route="",
                                 result="dropped"), 8)
        self.v.stop()

    def test_slow_shadow_within_the_timeout_matches_with_a_positive_latency_delta(self):
        delay = 1.2
        slow = self.recorder("blue-1", delay=delay)
        self.setup_pool(slow.address, '{ group = "green"; timeout_ms = 4000; }')
        took = self.send(5, "slow")
        t = self.wait_totals("five matches", match=5)
        self.assertEqual(self.counts(t), counts_of(mirrored=5, match=5))
        # each delta is the shadow's latency (>= delay) minus the primary's (<= what the
        # client measured)
        self.assertGreaterEqual(t["delta_p50_ms"], 500)
        self.assertLessEqual(t["delta_p50_ms"], 4000)
        self.assertGreaterEqual(t["delta_p99_ms"], t["delta_p50_ms"])
        m = scrape(self.http)
        self.assertEqual(m.value("veer_mirror_latency_delta_seconds_count", pool="api",
                                 route=""), 5)
        self.assertGreaterEqual(m.value("veer_mirror_latency_delta_seconds_sum", pool="api",
                                        route=""), sum(delay - x for x in took) - 0.01)
        self.v.stop()

    def test_slow_shadow_past_the_timeout_counts_timeouts(self):
        slow = self.recorder("blue-1", delay=3.0)
        self.setup_pool(slow.address, '{ group = "green"; timeout_ms = 400; }')
        self.send(3, "late")
        t = self.wait_totals("three timeouts", timeout=3)
        self.assertEqual(self.counts(t), counts_of(mirrored=3, timeout=3))
        self.v.stop()

    def test_refused_shadow_counts_errors(self):
        self.setup_pool("127.0.0.1:%d" % unused_port(), '{ group = "green"; }')
        self.send(5, "refused")
        t = self.wait_totals("five errors", error=5)
        self.assertEqual(self.counts(t), counts_of(mirrored=5, error=5))
        self.v.stop()


class ShadowStateTest(MirrorCase):
    def test_no_ready_backend_in_the_group_counts_errors(self):
        blue, green = self.recorder("svc"), self.recorder("svc")
        self.start(config([pool_text("api", [("blue-1", blue.address, "blue"),
                                             ("green-1", green.address, "green")],
                                     '{ group = "green"; }')]))
        self.ok("set", "state", "api/green-1", "maint")
        c = self.client(self.v.port)
        for i in range(3):
            r, _ = self.get(c, "/nr/%d" % i)
            self.assertEqual((r.status, r.body), (200, b"svc\n"))
        t = self.wait_totals("three errors", error=3)
        self.assertEqual(self.counts(t), counts_of(mirrored=3, error=3))
        self.assertEqual(green.snapshot(), [])
        self.v.stop()

    def test_a_shadow_faster_than_the_primary_has_a_negative_delta(self):
        blue, green = self.recorder("svc", delay=0.6), self.recorder("svc")
        self.start(config([pool_text("api", [("blue-1", blue.address, "blue"),
                                             ("green-1", green.address, "green")],
                                     '{ group = "green"; }')]))
        c = self.client(self.v.port)
        for i in range(3):
            r, took = self.get(c, "/neg/%d" % i)
            self.assertEqual(r.status, 200)
            self.assertGreaterEqual(took, 0.6)
        t = self.wait_totals("three matches", match=3)
        self.assertEqual(self.counts(t), counts_of(mirrored=3, match=3))
        # shadow (fast) minus primary (>= 0.6 s): about -0.6 s, in the (-1, -0.5] bucket
        self.assertLess(t["delta_p50_ms"], -250)
        self.assertGreaterEqual(t["delta_p50_ms"], -1000)
        total = scrape(self.http).value("veer_mirror_latency_delta_seconds_sum", pool="api",
                                        route="")
        self.assertIsNotNone(total, "no veer_mirror_latency_delta_seconds_sum{pool,route}")
        self.assertLess(total, -3 * 0.5)
        self.v.stop()


class CompareTest(MirrorCase):
    """A veer-backend pair with one name: the shadow (--variant) differs on the
    /v/ paths only."""

    def setup_pool(self, mirror='{ group = "green"; }'):
        self.blue = self.proc_backend("svc")
        self.green = self.proc_backend("svc", variant=True)
        self.start(config([pool_text("api", [("blue-1", self.blue.address, "blue"),
                                             ("green-1", self.green.address, "green")],
                                     mirror)]))

    def test_exact_match_and_diff_counts_report_status_and_metrics(self):
        self.setup_pool()
        paths = (["/p/%d" % i for i in range(87)] + ["/status?code=404"] * 3 +
                 ["/v/status/%d?token=secret" % i for i in range(5)] +
                 ["/v/body/%d?token=secret" % i for i in range(5)])
        random.Random(10).shuffle(paths)
        conns = [self.client(self.v.port), self.client(self.v.port)]
        for n, p in enumerate(paths):
            r, _ = self.get(conns[n % 2], p, rid="cmp-%d" % n)
            self.assertEqual(r.status, 404 if p.startswith("/status") else 200, p)
            self.assertEqual(r.body, b"svc\n", p)
        self.wait_totals("a hundred mirrors", mirrored=100)
        doc = self.report()
        self.assertEqual(set(doc), {"pool", "on", "group", "percent", "routes", "mismatches"})
        self.assertEqual((doc["pool"], doc["on"], doc["group"], doc["percent"]),
                         ("api", True, "green", 100.0))
        self.assertEqual([r["route"] for r in doc["routes"]], [""])
        route = doc["routes"][0]
        self.assertEqual(set(route), {"route", "totals", "classes"})
        self.assertEqual(set(route["totals"]), TOTAL_KEYS)
        self.assertEqual(self.counts(route["totals"]),
                         counts_of(mirrored=100, match=90, status_diff=5, body_diff=5))
        classes = {c["class"]: c for c in route["classes"]}
        for c in classes.values():
            self.assertEqual(set(c), TOTAL_KEYS | {"class"})
        # classes with nothing counted may be listed or not
        self.assertEqual({k for k, c in classes.items() if c["mirrored"] or c["dropped"]},
                         {"2xx", "4xx"})
        self.assertEqual(self.counts(classes["2xx"]),
                         counts_of(mirrored=97, match=87, status_diff=5, body_diff=5))
        self.assertEqual(self.counts(classes["4xx"]), counts_of(mirrored=3, match=3))
        self.assertIsInstance(route["totals"]["delta_p50_ms"], (int, float))
        self.assertIsInstance(route["totals"]["delta_p99_ms"], (int, float))
        # the ten mismatches, paths without their query strings
        mm = doc["mismatches"]
        self.assertEqual(len(mm), 10, mm)
        svc, variant = b"svc\n", b"svc variant\n"
        want = {}
        for n, p in enumerate(paths):
            if p.startswith("/v/"):
                status = p.startswith("/v/status/")
                want["cmp-%d" % n] = {
                    "request_id": "cmp-%d" % n, "route": "", "method": "GET",
                    "path": p.split("?")[0], "result": "status_diff" if status else "body_diff",
                    "primary_status": 200, "shadow_status": 503 if status else 200,
                    "primary_sha256": sha(svc), "shadow_sha256": sha(svc if status else variant),
                    "primary_bytes": 4, "shadow_bytes": 4 if status else 12, "header": None}
        for m in mm:
            self.assertEqual(set(m), MISMATCH_KEYS, m)
        self.assertEqual({m["request_id"]: m for m in mm}, want)
        # the text report: a table with a column per count, a row for all classes
        p = self.ctl("mirror", "report", "api")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(text_report_row(p.stdout, "all"),
                         {"mirrored": "100", "dropped": "0", "match": "90", "status_diff": "5",
                          "body_diff": "5", "timeout": "0", "error": "0"})
        self.assertEqual(text_report_row(p.stdout, "4xx")["match"], "3")
        # /status: the same report
        st = status_doc(self.http)
        self.assertEqual([r["pool"] for r in st["mirror"]], ["api"])
        self.assertEqual(self.counts(self.totals(doc=st["mirror"][0])),
                         self.counts(route["totals"]))
        self.assertEqual(st["mirror"][0]["mismatches"], mm)
        # metrics
        m = scrape(self.http)
        self.assertEqual(m.type_of("veer_mirror_requests_total"), "counter")
        self.assertEqual(m.type_of("veer_mirror_latency_delta_seconds"), "histogram")
        for res, n in (("match", 90), ("status_diff", 5), ("body_diff", 5)):
            self.assertEqual(m.value("veer_mirror_requests_total", pool="api", route="",
                                     result=res), n, res)
        for res in ("timeout", "error", "dropped"):
            self.assertIn(m.value("veer_mirror_requests_total", pool="api", route="",
                                  result=res), (None, 0), res)
        self.assertEqual(m.value("veer_mirror_latency_delta_seconds_count", pool="api",
                                 route=""), 100)
        buckets = sorted((float(l["le"]), v) for _, l, v in
                         m.select("veer_mirror_latency_delta_seconds_bucket", pool="api",
                                  route=""))
        self.assertTrue(any(le < 0 for le, _ in buckets), buckets)
        self.assertEqual(buckets[-1], (float("inf"), 100))
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.v.stop()

    def test_the_request_id_of_a_mismatch_is_the_header_value_exactly(self):
        """X-Request-Id as the head's last field, in a client buffer full of an
        earlier upload's bytes: the id recorded is the value alone (a read that
        ran on past it would take the upload's bytes, or beyond the buffer)."""
        self.setup_pool()
        c = self.client(self.v.port)
        r, _ = self.get(c, "/upload", method="POST", body=b"x" * 200000)  # not mirrored
        self.assertEqual(r.status, 200)
        r, _ = self.get(c, "/v/body/last", rid="last-field")
        self.assertEqual((r.status, r.body), (200, b"svc\n"))
        self.wait_totals("the diff", body_diff=1)
        self.assertEqual([(m["request_id"], m["path"]) for m in self.report()["mismatches"]],
                         [("last-field", "/v/body/last")])
        self.v.stop()

    def test_the_report_keeps_the_last_50_mismatches_newest_last(self):
        self.setup_pool()
        c = self.client(self.v.port)
        for i in range(10):
            self.get(c, "/v/body/a%d" % i)
        self.wait_totals("the first ten diffs", body_diff=10)
        for i in range(55):
            self.get(c, "/v/body/b%d?x=%d" % (i, i))
        self.wait_totals("all 65 diffs", body_diff=65)
        mm = self.report()["mismatches"]
        paths = [m["path"] for m in mm]
        self.assertEqual(len(paths), 50, paths)
        b = ["/v/body/b%d" % i for i in range(55)]
        self.assertEqual(len(set(paths)), 50)
        self.assertTrue(set(paths) <= set(b), paths)
        # newest last: sent one after the other, the shadows complete in about that
        # order (a few may swap places)
        self.assertTrue(set(b[10:]) <= set(paths), paths)
        self.assertIn(paths[-1], b[-3:])
        self.v.stop()

    def test_compared_and_ignored_headers(self):
        """content-type is compared unless ignored; etag only when listed."""
        self.setup_pool('{ group = "green"; compare = { headers = ( "etag" ); }; }')
        c = self.client(self.v.port)
        for p in ("/p/1", "/v/type/1", "/v/etag/1"):
            r, _ = self.get(c, p)
            self.assertEqual((r.status, r.body), (200, b"svc\n"), p)
        t = self.wait_totals("three mirrors", mirrored=3)
        self.assertEqual(self.counts(t), counts_of(mirrored=3, match=1, body_diff=2))
        mm = {m["path"]: m for m in self.report()["mismatches"]}
        self.assertEqual({p: (m["result"], m["header"]) for p, m in mm.items()},
                         {"/v/type/1": ("body_diff", "content-type"),
                          "/v/etag/1": ("body_diff", "etag")})
        for m in mm.values():
            self.assertEqual((m["primary_sha256"], m["shadow_sha256"]), (sha(b"svc\n"),) * 2)
            self.assertEqual((m["primary_bytes"], m["shadow_bytes"]), (4, 4))
        self.v.stop()
        self.start(config([pool_text("api", [("blue-1", self.blue.address, "blue"),
                                             ("green-1", self.green.address, "green")],
                                     '{ group = "green"; '
                                     'compare = { ignore_headers = ( "content-type" ); }; }')]))
        c = self.client(self.v.port)
        for p in ("/p/1", "/v/type/1", "/v/etag/1"):
            self.get(c, p)
        t = self.wait_totals("three mirrors", mirrored=3)
        self.assertEqual(self.counts(t), counts_of(mirrored=3, match=3))
        self.assertEqual(self.report()["mismatches"], [])
        self.v.stop()


class RuntimeTest(MirrorCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="veer-mirror-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.blue = self.recorder("svc")
        self.green = self.recorder("svc")
        self.wblue = self.recorder("web")
        self.wgreen = self.recorder("web")
        self.cfg = config([pool_text("api", [("blue-1", self.blue.address, "blue"),
                                             ("green-1", self.green.address, "green")],
                                     '{ group = "green"; percent = 100.0; }'),
                           pool_text("web", [("wblue-1", self.wblue.address, "blue"),
                                             ("wgreen-1", self.wgreen.address, "green")])],
                          persist=self.dir)

    def saved(self, gen):
        try:
            with open(os.path.join(self.dir, "state")) as f:
                return "\ngeneration %d\n" % gen in f.read()
        except FileNotFoundError:
            return False

    def send(self, *paths):
        c = Client(self.v.port)
        for p in paths:
            r, _ = self.get(c, p)
            self.assertEqual(r.status, 200, p)
        c.close()

    def shadow_paths(self):
        return sorted(s.target for s in self.green.snapshot())

    def generation(self):
        return show_pool(self.sock)["generation"]

    def test_off_on_errors_audit_and_state_file(self):
        self.start(self.cfg)
        self.send("/a/1", "/a/2")
        self.wait_totals("two mirrors", mirrored=2)
        off = self.ok("mirror", "api", "off")
        self.assertFalse(self.report()["on"])
        self.send("/b/1", "/b/2")
        # refusals change nothing
        # the contract's reason; a detail after it, "(got 101)", is fine
        pct = "ERR percent must be between 0 and 100"
        refused = ((("mirror", "nope", "on"), "ERR unknown pool nope\n\n"),
                   (("mirror", "api", "on", "group=purple"),
                    "ERR unknown group purple in pool api\n\n"),
                   (("mirror", "api", "on", "group=green", "percent=101"), pct),
                   (("mirror", "api", "on", "percent=-1"), pct),
                   (("mirror", "api", "on", "percent=abc"), None),
                   (("mirror", "web", "on"), "ERR pool web has no mirror group: give group="))
        for args, reply in refused:
            p = self.ctl(*args)
            self.assertEqual(p.returncode, 1, (args, p.stdout))
            if reply is None:
                self.assertTrue(p.stdout.startswith("ERR "), (args, p.stdout))
            elif reply.endswith("\n\n"):
                self.assertEqual(p.stdout, reply, args)
            else:
                self.assertTrue(p.stdout.startswith(reply), (args, p.stdout))
        self.assertEqual(self.generation(), off["gen"])
        doc = self.report()
        self.assertFalse(doc["on"])
        on = self.ok("mirror", "api", "on", "group=green", "percent=100")
        self.assertEqual(on["gen"], off["gen"] + 1)
        doc = self.report()
        self.assertEqual((doc["on"], doc["group"], doc["percent"]), (True, "green", 100.0))
        self.send("/c/1", "/c/2")
        self.wait_totals("four mirrors", mirrored=4)
        self.assertEqual(self.shadow_paths(), ["/a/1", "/a/2", "/c/1", "/c/2"])
        # a pool without a mirror config, given a group
        won = self.ok("mirror", "web", "on", "group=green", "percent=100")
        self.assertEqual(won["gen"], on["gen"] + 1)
        self.assertEqual([r["pool"] for r in status_doc(self.http)["mirror"]], ["api", "web"])
        # the audit log: each change with its generation; refusals, if recorded, as refusals
        recs = audit_records(os.path.join(self.dir, "audit.log"))[1]
        by_cmd = collections.defaultdict(list)
        for r in recs:
            by_cmd[r["command"]].append(r)
        self.assertEqual([(r["result"], r["generation"]) for r in by_cmd["mirror api off"]],
                         [("OK", off["gen"])])
        self.assertEqual([(r["result"], r["generation"])
                          for r in by_cmd["mirror api on group=green percent=100"]],
                         [("OK", on["gen"])])
        self.assertEqual([(r["result"], r["generation"])
                          for r in by_cmd["mirror web on group=green percent=100"]],
                         [("OK", won["gen"])])
        refused_lines = {" ".join(args) for args, _ in refused}
        for r in recs:
            if r["command"] in refused_lines:
                self.assertTrue(r["result"].startswith("ERR "), r)
                self.assertEqual(r["generation"], off["gen"], r)
        # percent at runtime, kept across a kill -9
        half = self.ok("mirror", "api", "on", "percent=25")
        self.assertEqual((self.report()["percent"], self.report()["group"]), (25.0, "green"))
        wait_for(lambda: self.saved(half["gen"]), what="the state file at gen %d" % half["gen"])
        self.v.kill()
        self.start(self.cfg)
        doc = self.report()
        self.assertEqual((doc["on"], doc["group"], doc["percent"]), (True, "green", 25.0))
        self.assertEqual(self.report("web")["on"], True)
        # off, kept across a graceful restart
        off2 = self.ok("mirror", "api", "off")
        wait_for(lambda: self.saved(off2["gen"]), what="the state file at gen %d" % off2["gen"])
        self.v.stop()
        self.start(self.cfg)
        self.assertFalse(self.report()["on"])
        before = len(self.green.snapshot())
        self.send("/d/1", "/d/2")
        # "on" with no group or percent: the pool's config (green, 100%)
        self.ok("mirror", "api", "on")
        doc = self.report()
        self.assertEqual((doc["on"], doc["group"], doc["percent"]), (True, "green", 100.0))
        self.send("/e/1")
        wait_for(lambda: len(self.green.snapshot()) > before, what="the mirror of /e/1")
        self.assertEqual([s.target for s in self.green.snapshot()[before:]], ["/e/1"])
        self.v.stop()


class RouteMirrorTest(MirrorCase):
    def test_a_route_mirror_overrides_the_pools_and_off_stops_both(self):
        b = {n: self.recorder(n.split("-")[0]) for n in
             ("api-blue", "api-green", "api-canary", "users-blue", "users-green")}
        # every backend of a pool answers alike: "api\n" or "users\n"
        api = pool_text("api", [("blue-1", b["api-blue"].address, "blue"),
                                ("green-1", b["api-green"].address, "green"),
                                ("canary-1", b["api-canary"].address, "canary")],
                        '{ group = "green"; }')
        users = pool_text("users", [("blue-1", b["users-blue"].address, "blue"),
                                    ("green-1", b["users-green"].address, "green")])
        routes = ['{ name = "pay"; pool = "api"; match = { path_prefix = "/pay"; };\n'
                  '      mirror = { group = "canary"; methods = ( "GET", "POST" ); }; }',
                  '{ name = "users"; pool = "users"; match = { path_prefix = "/users"; };\n'
                  '      mirror = { group = "green"; percent = 100.0; }; }']
        self.start(config([api, users], routes=routes))
        c = self.client(self.v.port)
        for method, path in (("GET", "/other/1"), ("POST", "/other/2"), ("GET", "/pay/1"),
                             ("POST", "/pay/2"), ("GET", "/users/1")):
            r, _ = self.get(c, path, method=method, body=b"p" if method == "POST" else None)
            self.assertEqual(r.status, 200, path)
        self.wait_totals("the pay route's mirrors", route="pay", mirrored=2)
        self.wait_totals("the fallback's mirror", route="", mirrored=1)
        self.wait_totals("the users route's mirror", route="users", pool="users", mirrored=1)
        self.assertEqual([(s.method, s.target) for s in b["api-green"].snapshot()],
                         [("GET", "/other/1")])
        self.assertEqual(sorted((s.method, s.target, s.body)
                                for s in b["api-canary"].snapshot()),
                         [("GET", "/pay/1", b""), ("POST", "/pay/2", b"p")])
        self.assertEqual([s.target for s in b["users-green"].snapshot()], ["/users/1"])
        self.assertEqual(self.counts(self.totals("pay")), counts_of(mirrored=2, match=2))
        self.assertEqual(self.counts(self.totals("")), counts_of(mirrored=1, match=1))
        self.assertEqual(self.counts(self.totals("users", "users")),
                         counts_of(mirrored=1, match=1))
        m = scrape(self.http)
        for pool, route, n in (("api", "pay", 2), ("api", "", 1), ("users", "users", 1)):
            self.assertEqual(m.value("veer_mirror_requests_total", pool=pool, route=route,
                                     result="match"), n, (pool, route))
        # off for pool api: neither the pool's mirror nor the pay route's
        self.ok("mirror", "api", "off")
        for path in ("/pay/3", "/other/3", "/users/2"):
            self.get(c, path)
        self.wait_totals("the users route's second mirror", route="users", pool="users",
                         mirrored=2)
        self.assertEqual(len(b["api-green"].snapshot()) + len(b["api-canary"].snapshot()), 3)
        self.assertEqual(self.totals("pay")["mirrored"] + self.totals("")["mirrored"], 3)
        self.v.stop()


class MirrorConfigTest(VeerTestCase):
    BASE = ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'pools = ( { name = "api";\n'
            '  backends = ( { name = "a"; address = "127.0.0.1:9"; group = "blue"; },\n'
            '               { name = "b"; address = "127.0.0.1:9"; group = "green"; } );\n'
            '  shares = { blue = 100; green = 0; };\n'
            '  %s\n'  # line 6
            '} );\n'
            'routes = ( { name = "r"; pool = "api"; match = { path_prefix = "/r"; };\n'
            '  %s } );\n')  # line 9

    def check(self, pool_mirror, route_mirror=""):
        rc, err, path = veer_check_config(self.BASE % (pool_mirror, route_mirror))
        self.addCleanup(os.unlink, path)
        return rc, err, path

    def test_a_full_mirror_config_is_accepted(self):
        rc, err, _ = self.check(
            'mirror = { group = "green"; percent = 10.0; max_body_bytes = 65536; '
            'max_inflight = 256; timeout_ms = 2000; methods = ( "GET", "HEAD" ); '
            'compare = { headers = ( "etag" ); ignore_headers = ( "content-type" ); }; };',
            'mirror = { group = "green"; percent = 100.0; };')
        self.assertEqual(rc, 0, err)

    def test_bad_mirror_configs_report_file_and_line(self):
        for pool_mirror, route_mirror, line, word in (
                ('mirror = { group = "purple"; };', "", 6, "purple"),
                ('mirror = { percent = 10.0; };', "", 6, "group"),
                ('mirror = { group = "green"; percent = 150.0; };', "", 6, "percent"),
                ('mirror = { group = "green"; percent = -1.0; };', "", 6, "percent"),
                ('mirror = { group = "green"; colour = 1; };', "", 6, "colour"),
                ("", 'mirror = { group = "purple"; };', 9, "purple"),
                ("", 'mirror = { group = "green"; percent = 101.0; };', 9, "percent")):
            with self.subTest(pool=pool_mirror, route=route_mirror):
                rc, err, path = self.check(pool_mirror, route_mirror)
                self.assertEqual(rc, 1, err)
                first = err.splitlines()[0] if err else ""
                self.assertTrue(first.startswith("%s:%d: " % (path, line)), first)
                self.assertIn(word, first)

    def test_veer_refuses_to_start_with_a_bad_mirror_config(self):
        _, _, path = self.check('mirror = { group = "purple"; };')
        p = subprocess.run([veertest.VEER_BIN, "-c", path], capture_output=True, text=True,
                           timeout=DEADLINE)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("%s:6: " % path, p.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
