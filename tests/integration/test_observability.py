"""Observability (issue 7): what an operator sees of veer.

- /metrics on the admin HTTP address, parsed whole by a real Prometheus text
  parser (Debian's python3-prometheus-client), with the contract's metric
  names and types, and counts that match exactly the requests the test sent;
- conf/prometheus-alerts.yml passes `promtool check rules` (Debian package
  prometheus), and its alerts fire (and stay quiet) on synthetic series in
  `promtool test rules`; conf/grafana-dashboard.json is a Grafana dashboard
  whose queries use only names veer renders;
- /status JSON: its shape, and per-second rates that move under load;
- the HTML page at /: self-contained, and rendered in a real headless
  Chromium it shows a weight change within 2 s;
- the access log: one JSON line per request with the documented fields,
  X-Request-Id passed through or generated and forwarded, reopened on
  SIGUSR1 after a rename (logrotate).

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_observability
"""

import datetime
import http.client
import json
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

import veertest
from helpers import (AdminConn, HeadlessChromium, RoutedLoad, StrictLoad, TableRows,
                     admin_http_port, chromium_binary, chromium_dump_dom, column_of,
                     http_get, listener_ports, parse_ok, scrape, show_pool, status_doc,
                     unused_port, veerctl)
from veertest import VeerTestCase, wait_for

CONF_DIR = os.path.join(veertest.ROOT, "conf")
ALERTS = os.path.join(CONF_DIR, "prometheus-alerts.yml")
DASHBOARD = os.path.join(CONF_DIR, "grafana-dashboard.json")

LAT_BUCKETS = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
               "0.5", "1", "2.5", "5", "10", "+Inf"]

# The contract's metric names (issue 7) and their Prometheus types.
CONTRACT_TYPES = {
    "veer_requests_total": "counter",
    "veer_request_duration_seconds": "histogram",
    "veer_backend_weight": "gauge",
    "veer_backend_effective_weight": "gauge",
    "veer_backend_state": "gauge",
    "veer_group_share": "gauge",
    "veer_generation": "gauge",
    "veer_upstream_errors_total": "counter",
    "veer_retries_total": "counter",
    "veer_open_connections": "gauge",
    "veer_shift_applied_seconds": "histogram",
    "veer_maintenance": "gauge",
    "veer_circuit_state": "gauge",
    "veer_health_check_seconds": "histogram",
    # named by the alerts and the dashboard
    "veer_pool_eligible_backends": "gauge",
    "veer_shifts_refused_total": "counter",
    "veer_drains_in_progress": "gauge",
}

ACCESS_FIELDS = ("time", "client", "method", "path", "status", "bytes_in", "bytes_out",
                 "total_ms", "upstream_ms", "pool", "route", "backend", "group", "generation",
                 "request_id", "trace_id")


def answering_backend_handler(name):
    """A backend handler: 404 for paths under /missing, else 200 with X-Backend."""
    def handle(conn, req):
        status, reason = (404, b"Not Found") if req.target.startswith("/missing") else (200, b"OK")
        body = (name + "\n").encode()
        conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                     % (status, reason, len(body), name.encode(), body))
        return True
    return handle


def health_ok_handler(name):
    """A backend that answers everything 200, readiness checks included."""
    def handle(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Backend: %s\r\n\r\nok\n"
                     % name.encode())
        return True
    return handle


def observability_config(b1, b2, extra_pools=(), access_log=False):
    """Pool api (b1 in group blue, b2 in group green, weight 100 each, so 50/50),
    pool empty (no backend: veer answers 503 itself), plus extra_pools
    [(name, pool text)], one listener each; admin socket and admin.http on
    port 0, optionally the access log in {tmp}/access.log."""
    pools = [("api", 'backends = ( { name = "b1"; address = "%s"; weight = 100; group = "blue"; },'
                     ' { name = "b2"; address = "%s"; weight = 100; group = "green"; } );'
              % (b1.address, b2.address)),
             ("empty", "backends = ( );")] + list(extra_pools)
    text = "workers = 2;\ntimeouts = { quiet_ms = 100; };\n"
    text += "listen = ( %s );\n" % ", ".join(
        '{ address = "127.0.0.1:0"; pool = "%s"; }' % name for name, _ in pools)
    text += 'admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
    if access_log:
        text += 'access_log = "{tmp}/access.log";\n'
    text += "pools = ( %s );\n" % ",\n  ".join(
        '{ name = "%s"; %s }' % (name, body) for name, body in pools)
    return text


class ObservabilityTestCase(VeerTestCase):
    v = None

    def tearDown(self):
        """Stop veer gracefully: it must exit 0 with no sanitizer report."""
        try:
            if self.v is not None and self.v.proc.poll() is None:
                self.v.stop()
        finally:
            super().tearDown()

    def start(self, extra_pools=(), access_log=False):
        """veer with pools api and empty (see observability_config); sets self.v,
        self.b1, self.b2, self.http (admin HTTP port) and self.ports ({pool: port})."""
        self.b1 = self.backend("b1", answering_backend_handler("b1"))
        self.b2 = self.backend("b2", answering_backend_handler("b2"))
        self.v = self.veer(observability_config(self.b1, self.b2, extra_pools, access_log))
        self.http = admin_http_port(self.v)
        self.ports = listener_ports(self.v)
        return self.v

    def send(self, pool, paths, headers=None, clients=1):
        """GET each path on pool's listener over `clients` keep-alive connections
        (round robin); returns [(path, status, X-Backend)] in order."""
        cs = [self.client(self.ports[pool]) for _ in range(clients)]
        out = []
        for i, path in enumerate(paths):
            c = cs[i % clients]
            r = c.request("GET", path, headers=headers)
            self.assertIsNotNone(r, "no response to %s on pool %s" % (path, pool))
            self.assertTrue(r.complete, "truncated response to %s" % path)
            out.append((path, r.status, r.header("X-Backend")))
            if (r.header("Connection") or "").lower() == "close":
                c.close()
                cs[i % clients] = self.client(self.ports[pool])
        for c in cs:
            c.close()
        return out

    def ctl(self, *args):
        return veerctl(self.v.admin_socket, *args)

    def ctl_ok(self, *args):
        p = self.ctl(*args)
        self.assertEqual(p.returncode, 0, "veerctl %s: %r %r" % (" ".join(args), p.stdout, p.stderr))
        return parse_ok(p.stdout)

    def scrape_when(self, cond, what):
        """Scrape until cond(scrape) holds (counters are added when a transaction
        ends, a hair after the client read its response); the last scrape then.
        On timeout the last scrape is returned and the caller's exact assertions
        say what differs."""
        last = [None]

        def ok():
            last[0] = scrape(self.http)
            return cond(last[0])
        try:
            wait_for(ok, timeout=5, interval=0.02, what=what)
        except AssertionError:
            pass
        return last[0]


# --- a. /metrics -----------------------------------------------------------------


class MetricsTest(ObservabilityTestCase):
    def dead_pool(self):
        """Pool dead: one backend on a port nobody listens on, no retries, so each
        request is exactly one connect attempt (3 requests stay under the
        breaker's default 5 failures)."""
        return ("dead", 'retries = { count = 0; }; backends = ( { name = "d1"; address = '
                        '"127.0.0.1:%d"; weight = 100; group = "g"; } );' % unused_port())

    def checked_pool(self):
        self.hb = self.backend("h1", health_ok_handler("h1"))
        return ("checked", 'health = { path = "/ready"; interval_ms = 100; timeout_ms = 1000; '
                           'rise = 1; fall = 2; }; backends = ( { name = "h1"; address = "%s"; } );'
                % self.hb.address)

    def test_document_parses_with_contract_names_types_and_buckets(self):
        self.start(extra_pools=[self.dead_pool(), self.checked_pool()])
        self.send("api", ["/warm/%d" % i for i in range(4)])
        s = self.scrape_when(lambda s: s.select("veer_health_check_seconds_count", pool="checked")
                             and s.total("veer_health_check_seconds_count", pool="checked") > 0,
                             "a readiness check of pool checked to be counted")

        # The whole document went through the parser; every sample line was read.
        sample_lines = [l for l in s.text.splitlines() if l and not l.startswith("#")]
        self.assertEqual(len(sample_lines), len(s.samples),
                         "the parser did not account for every sample line")
        self.assertTrue(s.text.endswith("\n"), "the exposition must end with a newline")
        # No series twice; one HELP and one TYPE per family, before its samples.
        keys = [(n, tuple(sorted(l.items()))) for n, l, _ in s.samples]
        dups = {k for k in keys if keys.count(k) > 1}
        self.assertFalse(dups, "series exposed twice: %r" % sorted(dups)[:5])
        types = re.findall(r"^# TYPE (\S+) (\S+)$", s.text, re.M)
        self.assertEqual(len(types), len({t[0] for t in types}), "a TYPE line is repeated")
        self.assertEqual(len(re.findall(r"^# HELP ", s.text, re.M)), len(types),
                         "every family has one HELP line")

        for metric, mtype in CONTRACT_TYPES.items():
            self.assertEqual(s.type_of(metric), mtype, "%s: TYPE %s, want %s"
                             % (metric, s.type_of(metric), mtype))
            self.assertIn("# TYPE %s %s\n" % (metric, mtype), s.text)

        # Labels the contract names.
        for n, l, _ in s.select("veer_requests_total"):
            self.assertEqual(set(l), {"pool", "group", "backend", "route", "code_class"}, l)
            self.assertEqual(l["route"], "", l)  # no routes: every request is on none
            self.assertIn(l["code_class"], ("1xx", "2xx", "3xx", "4xx", "5xx"))
        for n, l, _ in s.select("veer_request_duration_seconds_bucket"):
            self.assertEqual(set(l), {"pool", "group", "route", "le"}, l)
            self.assertEqual(l["route"], "", l)
        for metric in ("veer_backend_weight", "veer_backend_effective_weight", "veer_circuit_state"):
            got = {(l["pool"], l["group"], l["backend"]) for _, l, _ in s.select(metric)}
            self.assertEqual(got, {("api", "blue", "b1"), ("api", "green", "b2"),
                                   ("dead", "g", "d1"), ("checked", "default", "h1")}, metric)
        self.assertEqual({l["side"] for _, l, _ in s.select("veer_open_connections")},
                         {"client", "upstream"})
        self.assertEqual({l["kind"] for _, l, _ in s.select("veer_upstream_errors_total",
                                                           backend="b1")},
                         {"connect", "timeout", "reset", "response"})
        self.assertEqual({l["pool"] for _, l, _ in s.select("veer_maintenance")},
                         {"api", "empty", "dead", "checked"})

        # Histogram buckets: the contract's bounds, cumulative, +Inf == _count.
        for pool, group in (("api", "blue"), ("api", "green")):
            b = s.select("veer_request_duration_seconds_bucket", pool=pool, group=group)
            self.assertEqual([l["le"] for _, l, _ in b], LAT_BUCKETS, (pool, group))
            vals = [v for _, _, v in b]
            self.assertEqual(vals, sorted(vals), "buckets not cumulative")
            self.assertEqual(vals[-1], s.value("veer_request_duration_seconds_count",
                                               pool=pool, group=group, route=""))
        b = s.select("veer_health_check_seconds_bucket", pool="checked")
        self.assertEqual([l["le"] for _, l, _ in b], LAT_BUCKETS)
        self.assertFalse(s.select("veer_health_check_seconds_count", pool="api"),
                         "pool api has no health block: no health check histogram for it")
        shift_b = s.select("veer_shift_applied_seconds_bucket")
        self.assertEqual(shift_b[-1][1]["le"], "+Inf")
        self.assertEqual(shift_b[-1][2], s.value("veer_shift_applied_seconds_count"))

    def test_counts_match_the_requests_sent(self):
        self.start(extra_pools=[self.dead_pool()])
        base = scrape(self.http)
        self.assertEqual(base.total("veer_requests_total"), 0, "traffic before the test sent any")
        base_connect = base.value("veer_upstream_errors_total", pool="dead", backend="d1",
                                  kind="connect")
        self.assertEqual(base_connect, 0)

        sent = self.send("api", ["/ok/%d" % i for i in range(30)], clients=3)
        sent += self.send("api", ["/missing/%d" % i for i in range(5)])
        own = self.send("empty", ["/nothing/%d" % i for i in range(5)])
        dead = self.send("dead", ["/refused/%d" % i for i in range(3)])

        self.assertTrue(all(st == 200 for p, st, _ in sent if p.startswith("/ok")), sent)
        self.assertTrue(all(st == 404 for p, st, _ in sent if p.startswith("/missing")), sent)
        self.assertEqual([st for _, st, _ in own], [503] * 5)
        self.assertEqual([st for _, st, _ in dead], [502] * 3, dead)
        want = {}
        for _, st, be in sent:
            want[(be, "%dxx" % (st // 100))] = want.get((be, "%dxx" % (st // 100)), 0) + 1
        self.assertEqual(sum(v for (be, _), v in want.items() if be == "b1") +
                         sum(v for (be, _), v in want.items() if be == "b2"), 35,
                         "every api answer names b1 or b2: %r" % want)
        self.assertTrue(want.get(("b1", "2xx")) and want.get(("b2", "2xx")),
                        "50/50 shares must use both backends: %r" % want)

        total_sent = len(sent) + len(own) + len(dead)
        s = self.scrape_when(lambda s: s.total("veer_requests_total") >= total_sent,
                             "veer_requests_total to reach %d" % total_sent)

        # veer_requests_total, by backend and status class, exactly.
        for be, group in (("b1", "blue"), ("b2", "green")):
            for cls in ("1xx", "2xx", "3xx", "4xx", "5xx"):
                got = s.value("veer_requests_total", pool="api", group=group, backend=be,
                              route="", code_class=cls) or 0
                self.assertEqual(got, want.get((be, cls), 0),
                                 "veer_requests_total{backend=%s,code_class=%s}" % (be, cls))
        self.assertEqual(s.value("veer_requests_total", pool="empty", group="", backend="",
                                 route="", code_class="5xx"), 5, "veer's own 503s count for the pool")
        self.assertEqual(s.value("veer_requests_total", pool="dead", group="g", backend="d1",
                                 route="", code_class="5xx"), 3, "a 502 counts against its backend")
        self.assertEqual(s.total("veer_requests_total"), total_sent,
                         "veer counted requests the test did not send")

        # Duration histograms: one observation per request, per pool and group.
        for be, group in (("b1", "blue"), ("b2", "green")):
            n = sum(v for (b, _), v in want.items() if b == be)
            self.assertEqual(s.value("veer_request_duration_seconds_count", pool="api",
                                     group=group, route=""), n, "histogram count of group %s" % group)
            self.assertGreater(s.value("veer_request_duration_seconds_sum", pool="api",
                                       group=group, route=""), 0)
        self.assertEqual(s.value("veer_request_duration_seconds_count", pool="empty", group="",
                                 route=""), 5)
        self.assertEqual(s.value("veer_request_duration_seconds_count", pool="dead", group="g",
                                 route=""), 3)

        # A backend that refuses: one connect error per attempt (no retries here).
        self.assertEqual(s.value("veer_upstream_errors_total", pool="dead", backend="d1",
                                 kind="connect"), base_connect + 3)
        self.assertEqual(s.total("veer_upstream_errors_total", pool="api"), 0)
        self.assertEqual(s.value("veer_retries_total"), 0, "no pool here retries")

        # Gauges of the configuration in force.
        self.assertEqual(s.value("veer_backend_weight", pool="api", group="blue", backend="b1"), 100)
        self.assertEqual(s.value("veer_backend_effective_weight", pool="api", group="blue",
                                 backend="b1"), 50)
        self.assertEqual(s.value("veer_group_share", pool="api", group="blue"), 50)
        self.assertEqual(s.value("veer_group_share", pool="api", group="green"), 50)
        for st in ("PENDING", "READY", "DOWN", "DRAINING", "DRAINED", "MAINT"):
            self.assertEqual(s.value("veer_backend_state", pool="api", group="blue", backend="b1",
                                     state=st), 1 if st == "READY" else 0, st)
        self.assertEqual(s.value("veer_circuit_state", pool="api", group="blue", backend="b1"), 0)
        self.assertEqual(s.value("veer_maintenance", pool="api"), 0)
        self.assertEqual(s.value("veer_pool_eligible_backends", pool="api"), 2)
        self.assertEqual(s.value("veer_pool_eligible_backends", pool="empty"), 0)
        s = self.scrape_when(lambda s: s.value("veer_open_connections", side="client") == 0,
                             "veer to see the test's client connections closed")
        self.assertEqual(s.value("veer_open_connections", side="client"), 0,
                         "the test closed every client connection")

    def test_open_connections_count_clients(self):
        self.start()
        cs = [self.client(self.ports["api"]) for _ in range(3)]
        for c in cs:
            self.assertEqual(c.request("GET", "/x").status, 200)
        s = self.scrape_when(lambda s: s.value("veer_open_connections", side="client") == 3,
                             "3 open client connections")
        self.assertEqual(s.value("veer_open_connections", side="client"), 3)
        self.assertGreaterEqual(s.value("veer_open_connections", side="upstream"), 1)
        for c in cs:
            c.close()
        s = self.scrape_when(lambda s: s.value("veer_open_connections", side="client") == 0,
                             "client connections to close")
        self.assertEqual(s.value("veer_open_connections", side="client"), 0)

    def test_shift_generation_share_and_applied_histogram(self):
        self.start()
        s0 = scrape(self.http)
        gen0 = s0.value("veer_generation")
        n0 = s0.value("veer_shift_applied_seconds_count")
        refused0 = s0.value("veer_shifts_refused_total")

        ok = self.ctl_ok("shift", "api", "blue=80", "green=20")
        s1 = scrape(self.http)
        self.assertEqual(s1.value("veer_generation"), ok["gen"])
        self.assertGreater(ok["gen"], gen0)
        self.assertEqual(s1.value("veer_group_share", pool="api", group="blue"), 80)
        self.assertEqual(s1.value("veer_group_share", pool="api", group="green"), 20)
        self.assertEqual(s1.value("veer_backend_effective_weight", pool="api", group="green",
                                  backend="b2"), 20)
        self.assertEqual(s1.value("veer_shift_applied_seconds_count"), n0 + 1)
        self.assertAlmostEqual(s1.value("veer_shift_applied_seconds_sum")
                               - s0.value("veer_shift_applied_seconds_sum"),
                               ok["applied_us"] / 1e6, delta=2e-6,
                               msg="the histogram observes the applied_us of the OK")

        ok2 = self.ctl_ok("set", "weight", "api/b1", "37")
        s2 = scrape(self.http)
        self.assertEqual(s2.value("veer_generation"), ok2["gen"])
        self.assertGreater(ok2["gen"], ok["gen"])
        self.assertEqual(s2.value("veer_backend_weight", pool="api", group="blue", backend="b1"), 37)
        self.assertEqual(s2.value("veer_shift_applied_seconds_count"), n0 + 2)

        bad = self.ctl("shift", "api", "blue=50", "green=10")
        self.assertEqual(bad.returncode, 1, bad.stdout)
        self.assertTrue(bad.stdout.startswith("ERR"), bad.stdout)
        s3 = scrape(self.http)
        self.assertEqual(s3.value("veer_shifts_refused_total"), refused0 + 1)
        self.assertEqual(s3.value("veer_generation"), ok2["gen"], "a refusal publishes nothing")
        self.assertEqual(s3.value("veer_shift_applied_seconds_count"), n0 + 2)
        self.assertEqual(s3.value("veer_group_share", pool="api", group="blue"), 80)

        ok3 = self.ctl_ok("swap", "api")
        s4 = scrape(self.http)
        self.assertEqual(s4.value("veer_generation"), ok3["gen"])
        self.assertEqual(s4.value("veer_group_share", pool="api", group="blue"), 20)
        self.assertEqual(s4.value("veer_group_share", pool="api", group="green"), 80)
        self.assertEqual(s4.value("veer_shift_applied_seconds_count"), n0 + 3)

    def test_maintenance_flag_and_its_503s(self):
        self.start()
        self.ctl_ok("maintenance", "on", "api")
        s = scrape(self.http)
        self.assertEqual(s.value("veer_maintenance", pool="api"), 1)
        self.assertEqual(s.value("veer_maintenance", pool="empty"), 0)
        got = self.send("api", ["/m/%d" % i for i in range(4)])
        self.assertEqual([st for _, st, _ in got], [503] * 4)
        s = self.scrape_when(lambda s: s.total("veer_requests_total", pool="api") >= 4,
                             "4 maintenance answers counted")
        self.assertEqual(s.value("veer_requests_total", pool="api", group="", backend="",
                                 route="", code_class="5xx"), 4,
                         "maintenance 503s are veer's own answers for the pool")
        self.assertEqual(s.total("veer_requests_total", pool="api", backend="b1"), 0)
        self.ctl_ok("maintenance", "off", "api")
        self.assertEqual(scrape(self.http).value("veer_maintenance", pool="api"), 0)

    def test_conf_files_use_rendered_names(self):
        """Every veer_* name in the alerts and the dashboard is one veer renders."""
        self.start(extra_pools=[self.checked_pool()])
        s = self.scrape_when(lambda s: s.total("veer_health_check_seconds_count") > 0,
                             "a readiness check counted")
        rendered = s.names() | set(s.families) | {
            n[:-len("_bucket")] for n in s.names() if n.endswith("_bucket")}
        for path in (ALERTS, DASHBOARD):
            with open(path) as f:
                text = re.sub(r"(?m)^\s*#.*$", "", f.read())  # YAML comments say other things
            used = set(re.findall(r"\bveer_[a-z_]+", text))
            self.assertTrue(used, path)
            self.assertFalse(used - rendered, "%s uses names veer does not render: %s"
                             % (os.path.basename(path), sorted(used - rendered)))
        with open(DASHBOARD) as f:
            labels_used = set(re.findall(r"\b(pool|group|backend|code_class|state|side|kind)"
                                         r"\s*(?:=~|!=|=)", f.read()))
        self.assertTrue(labels_used <= {"pool", "group", "backend", "code_class", "state",
                                        "side", "kind"})


# --- b. alert rules and dashboard --------------------------------------------------


def promtool():
    return shutil.which("promtool")


# promtool unit tests: the alerts fire on the series veer renders, with the
# labels an operator routes on, and stay quiet below their thresholds.
ALERT_UNIT_TESTS = """
rule_files:
  - %(rules)s
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # pool api: blue 10%% 5xx, green 1%% 5xx -> pool 5.5%%; pool web: 4%% (below)
      - series: 'veer_requests_total{pool="api",group="blue",backend="b1",code_class="2xx"}'
        values: '0+90x20'
      - series: 'veer_requests_total{pool="api",group="blue",backend="b1",code_class="5xx"}'
        values: '0+10x20'
      - series: 'veer_requests_total{pool="api",group="green",backend="b2",code_class="2xx"}'
        values: '0+99x20'
      - series: 'veer_requests_total{pool="api",group="green",backend="b2",code_class="5xx"}'
        values: '0+1x20'
      - series: 'veer_requests_total{pool="web",group="g",backend="w1",code_class="2xx"}'
        values: '0+96x20'
      - series: 'veer_requests_total{pool="web",group="g",backend="w1",code_class="5xx"}'
        values: '0+4x20'
      # pool lone: only veer's own 503s (group "" is not a group)
      - series: 'veer_requests_total{pool="lone",group="",backend="",code_class="5xx"}'
        values: '0+10x20'
      - series: 'veer_backend_state{pool="api",group="blue",backend="b1",state="DOWN"}'
        values: '0 0 1x20'
      - series: 'veer_backend_state{pool="api",group="green",backend="b2",state="DOWN"}'
        values: '0x20'
      - series: 'veer_circuit_state{pool="api",group="blue",backend="b1"}'
        values: '0 1x20'
      - series: 'veer_circuit_state{pool="api",group="green",backend="b2"}'
        values: '0 2x20'
      - series: 'veer_maintenance{pool="api"}'
        values: '0 1x20'
      - series: 'veer_maintenance{pool="web"}'
        values: '0x20'
      - series: 'veer_pool_eligible_backends{pool="lone"}'
        values: '0x20'
      - series: 'veer_pool_eligible_backends{pool="api"}'
        values: '2x20'
      - series: 'veer_shifts_refused_total'
        values: '0 0 1x20'
      # p99: api all in (0.5, 1], web all in (0.1, 0.25]
      - series: 'veer_request_duration_seconds_bucket{pool="api",group="blue",le="0.5"}'
        values: '0x20'
      - series: 'veer_request_duration_seconds_bucket{pool="api",group="blue",le="1"}'
        values: '0+100x20'
      - series: 'veer_request_duration_seconds_bucket{pool="api",group="blue",le="+Inf"}'
        values: '0+100x20'
      - series: 'veer_request_duration_seconds_bucket{pool="web",group="g",le="0.1"}'
        values: '0x20'
      - series: 'veer_request_duration_seconds_bucket{pool="web",group="g",le="0.25"}'
        values: '0+100x20'
      - series: 'veer_request_duration_seconds_bucket{pool="web",group="g",le="+Inf"}'
        values: '0+100x20'
    promql_expr_test:
      - expr: sort(ALERTS{alertstate="firing"})
        eval_time: 2m
        exp_samples:
          - labels: 'ALERTS{alertname="VeerShiftRefused",alertstate="firing",severity="warning"}'
            value: 1
          - labels: 'ALERTS{alertname="VeerCircuitOpen",alertstate="firing",severity="warning",pool="api",group="blue",backend="b1"}'
            value: 1
          - labels: 'ALERTS{alertname="VeerMaintenanceOn",alertstate="firing",severity="info",pool="api"}'
            value: 1
          - labels: 'ALERTS{alertname="VeerNoEligibleBackend",alertstate="firing",severity="critical",pool="lone"}'
            value: 1
      - expr: ALERTS{alertstate="firing",alertname=~"Veer.*(ErrorRate|Latency).*"}
        eval_time: 4m
        exp_samples: []
      - expr: ALERTS{alertstate="firing",alertname=~"Veer.*(ErrorRate|Latency|Down).*"}
        eval_time: 12m
        exp_samples:
          - labels: 'ALERTS{alertname="VeerPoolHighErrorRate",alertstate="firing",severity="critical",pool="api"}'
            value: 1
          - labels: 'ALERTS{alertname="VeerPoolHighErrorRate",alertstate="firing",severity="critical",pool="lone"}'
            value: 1
          - labels: 'ALERTS{alertname="VeerGroupHighErrorRate",alertstate="firing",severity="critical",pool="api",group="blue"}'
            value: 1
          - labels: 'ALERTS{alertname="VeerPoolHighLatencyP99",alertstate="firing",severity="warning",pool="api"}'
            value: 1
          - labels: 'ALERTS{alertname="VeerBackendDown",alertstate="firing",severity="warning",pool="api",group="blue",backend="b1",state="DOWN"}'
            value: 1
"""


class ScrapeLoadTest(VeerTestCase):
    """Scrapes wait their turn: the control thread renders one /metrics per loop pass, so an
    admin command never waits behind a row of renders, and the address holds at most 64
    connections."""

    NB = 1000

    def test_a_shift_stays_fast_while_many_scrapes_run(self):
        b = self.backend("b")
        backends = ", ".join('{ name = "b%d"; address = "%s"; weight = 1; }' % (i, b.address)
                             for i in range(self.NB))
        v = self.veer('admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
                      'listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
                      'pools = ( { name = "api"; backends = ( %s ); } );\n' % backends)
        port = admin_http_port(v)
        stop = threading.Event()
        scrapes = []  # seconds per scrape
        errors = []

        def scraper():
            # Keep-alive, one request after the other: a request is nearly always waiting.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    conn.request("GET", "/metrics")
                    r = conn.getresponse()
                    body = r.read()
                    if r.status != 200 or b"veer_generation" not in body:
                        errors.append((r.status, body[:100]))
                    scrapes.append(time.monotonic() - t0)
            except (OSError, http.client.HTTPException) as e:
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=scraper, daemon=True) for _ in range(16)]
        for t in threads:
            t.start()
        wait_for(lambda: len(scrapes) >= 16, timeout=60, what="the scrapers to get going")
        c = AdminConn(v.admin_socket, timeout=60)
        self._cleanup.append(c.close)
        shifts = []
        for i in range(20):
            t0 = time.monotonic()
            r = c.command("set weight api/b0 %d" % (2 + i))
            shifts.append(time.monotonic() - t0)
            self.assertTrue(r.startswith("OK gen="), r)
        stop.set()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        shifts.sort()
        during = sorted(scrapes[16:]) or sorted(scrapes)
        med_shift, med_scrape = shifts[len(shifts) // 2], during[len(during) // 2]
        print("\n  %d backends, 16 scrapers: shift round trip median %.1f ms (max %.1f), "
              "scrape median %.1f ms" % (self.NB, med_shift * 1000, shifts[-1] * 1000,
                                         med_scrape * 1000))
        # A scrape waits for the ones queued before it (up to 16 renders); a shift for one
        # render at most: were shifts queued behind the renders, most of them would take as
        # long as a typical scrape. The 18th of the 20 shifts, not the slowest: on a busy
        # 2-core box one or two round trips can lose the CPU for longer than a scrape takes,
        # which says nothing of how the control thread orders its work.
        self.assertLess(shifts[-3], med_scrape)
        v.stop()


class AlertRulesTest(unittest.TestCase):
    def setUp(self):
        if promtool() is None:
            self.skipTest("promtool not installed (Debian package prometheus): "
                          "conf/prometheus-alerts.yml NOT checked")

    def test_promtool_check_rules(self):
        p = subprocess.run([promtool(), "check", "rules", ALERTS], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("SUCCESS", p.stdout)

    def test_alerts_fire_on_veer_series(self):
        d = tempfile.mkdtemp(prefix="veer-promtool-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "alerts_test.yml")
        with open(path, "w") as f:
            f.write(ALERT_UNIT_TESTS % {"rules": ALERTS})
        p = subprocess.run([promtool(), "test", "rules", path], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_every_contract_alert_is_there(self):
        with open(ALERTS) as f:
            text = f.read()
        for expr in ('code_class="5xx"', "by (pool)", "by (pool, group)",
                     'veer_backend_state{state="DOWN"} == 1', "veer_circuit_state == 1",
                     "veer_maintenance == 1", "veer_pool_eligible_backends == 0",
                     "increase(veer_shifts_refused_total[5m]) > 0",
                     "histogram_quantile(0.99", "rate(veer_request_duration_seconds_bucket[5m]"):
            self.assertIn(expr, text)
        alerts = re.findall(r"^\s*- alert: (\S+)", text, re.M)
        self.assertEqual(len(alerts), 8, alerts)
        # every rule has for:, a severity and both annotations
        blocks = re.split(r"^\s*- alert: ", text, flags=re.M)[1:]
        for b in blocks:
            name = b.split()[0]
            for key in ("for:", "severity:", "summary:", "description:"):
                self.assertIn(key, b, "%s has no %s" % (name, key))


class DashboardTest(unittest.TestCase):
    def setUp(self):
        with open(DASHBOARD) as f:
            self.text = f.read()
        self.d = json.loads(self.text)

    def test_json_tool_accepts_it(self):
        p = subprocess.run([sys.executable, "-m", "json.tool", DASHBOARD], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_variables_annotation_and_panels(self):
        d = self.d
        self.assertGreaterEqual(d["schemaVersion"], 36)
        self.assertTrue(d["title"] and d["uid"])
        var = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(var["datasource"]["type"], "datasource")
        self.assertEqual(var["datasource"]["query"], "prometheus")
        self.assertEqual(var["pool"]["type"], "query")
        q = var["pool"]["query"]
        self.assertEqual(q["query"] if isinstance(q, dict) else q,
                         "label_values(veer_requests_total, pool)")
        ann = [a for a in d["annotations"]["list"] if a.get("expr")]
        self.assertEqual([a["expr"] for a in ann], ["changes(veer_generation[1m]) > 0"])
        self.assertEqual(ann[0]["datasource"]["uid"], "${datasource}")

        panels = d["panels"]
        ids = [p["id"] for p in panels]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        exprs = []
        for p in panels:
            g = p["gridPos"]
            self.assertTrue(0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"])
            for t in p.get("targets", []):
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])
                exprs.append((p["title"], t["expr"]))
        # RED per pool and per group, rollout progress, backend states.
        def has(pred):
            return [t for t, e in exprs if pred(e)]
        self.assertTrue(has(lambda e: "sum by (pool) (rate(veer_requests_total" in e))
        self.assertTrue(has(lambda e: 'code_class="5xx"' in e and "by (pool)" in e))
        self.assertTrue(has(lambda e: 'code_class="5xx"' in e and "by (pool, group)" in e))
        for q in ("0.5", "0.99"):
            self.assertTrue(has(lambda e: "histogram_quantile(%s, sum by (pool, le)" % q in e))
            self.assertTrue(has(lambda e: "histogram_quantile(%s, sum by (pool, group, le)" % q
                                in e))
        self.assertTrue(has(lambda e: e.startswith("veer_group_share")))
        self.assertTrue(has(lambda e: "veer_backend_state" in e))

    def test_queries_are_valid_promql(self):
        """Every query, with the dashboard's variables filled in, passes promtool."""
        if promtool() is None:
            self.skipTest("promtool not installed (Debian package prometheus)")
        exprs = [t["expr"] for p in self.d["panels"] for t in p.get("targets", [])]
        exprs += [a["expr"] for a in self.d["annotations"]["list"] if a.get("expr")]
        rules = "groups:\n  - name: dashboard\n    rules:\n"
        for i, e in enumerate(exprs):
            e = e.replace("$__rate_interval", "1m").replace("$pool", ".*")
            rules += "      - record: dashboard:q%d\n        expr: %s\n" % (i, json.dumps(e))
        d = tempfile.mkdtemp(prefix="veer-promtool-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "dashboard_rules.yml")
        with open(path, "w") as f:
            f.write(rules)
        p = subprocess.run([promtool(), "check", "rules", path], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


# --- c. /status --------------------------------------------------------------------


class StatusTest(ObservabilityTestCase):
    def test_shape(self):
        self.start()
        status, headers, body = http_get(self.http, "/status")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("application/json"), headers)
        doc = json.loads(body)
        for k, t in (("version", str), ("uptime_s", (int, float)), ("workers", int),
                     ("generation", int), ("shutting_down", bool), ("maintenance", bool),
                     ("pools", list)):
            self.assertIsInstance(doc.get(k), t, "status.%s: %r" % (k, doc.get(k)))
        pools = {p["name"]: p for p in doc["pools"]}
        self.assertEqual(set(pools), {"api", "empty"})
        api = pools["api"]
        self.assertIs(api["maintenance"], False)
        self.assertEqual({g["name"]: g["share"] for g in api["groups"]}, {"blue": 50, "green": 50})
        for g in api["groups"]:
            for k in ("share", "rps", "error_rate", "p99_ms"):
                self.assertIsInstance(g[k], (int, float), "group.%s: %r" % (k, g))
        backends = {b["name"]: b for b in api["backends"]}
        self.assertEqual(set(backends), {"b1", "b2"})
        for b in backends.values():
            for k, t in (("address", str), ("group", str), ("state", str), ("weight", int),
                         ("effective_weight", (int, float)), ("active", int), ("conns", int),
                         ("circuit", str), ("rps", (int, float)), ("error_rate", (int, float)),
                         ("p99_ms", (int, float))):
                self.assertIsInstance(b.get(k), t, "backend.%s: %r" % (k, b))
            self.assertEqual(b["state"], "READY")
            self.assertEqual(b["circuit"], "closed")
            self.assertEqual(b["weight"], 100)
            self.assertEqual(b["effective_weight"], 50)
        self.assertEqual(backends["b1"]["address"], self.b1.address)
        self.assertEqual(backends["b1"]["group"], "blue")
        self.assertEqual(pools["empty"]["backends"], [])
        self.assertIsNone(api["rollout"])
        # The same generation as the admin socket and /metrics.
        self.assertEqual(doc["generation"], show_pool(self.v.admin_socket)["generation"])
        self.assertEqual(doc["generation"], scrape(self.http).value("veer_generation"))
        # A change shows at once.
        ok = self.ctl_ok("set", "weight", "api/b1", "37")
        doc = status_doc(self.http)
        self.assertEqual(doc["generation"], ok["gen"])
        self.assertEqual({b["name"]: b["weight"] for b in doc["pools"][0]["backends"]},
                         {"b1": 37, "b2": 100})

    def test_rollout_step_and_verdict(self):
        self.start()
        self.ctl_ok("shift", "api", "blue=100", "green=0")
        t_start = time.monotonic()
        ok = self.ctl_ok("rollout", "start", "api", "canary=green", "steps=10,50,100",
                         "interval=60s")
        api = [p for p in status_doc(self.http)["pools"] if p["name"] == "api"][0]
        ro = api["rollout"]
        self.assertEqual({k: ro[k] for k in ("canary", "stable", "state", "step", "steps",
                                             "share", "verdict")},
                         {"canary": "green", "stable": "blue", "state": "running", "step": 1,
                          "steps": 3, "share": 10, "verdict": "running"}, ro)
        # Time in step counts from the start (0.1 s steps): never more than has
        # passed, and it does advance.
        self.assertLessEqual(ro["time_in_step_s"], time.monotonic() - t_start + 0.05, ro)
        ro = wait_for(lambda: (lambda r: r if r["time_in_step_s"] >= 0.3 else None)(
            [p for p in status_doc(self.http)["pools"] if p["name"] == "api"][0]["rollout"]),
            timeout=5, interval=0.05, what="time_in_step_s to reach 0.3")
        self.assertLessEqual(ro["time_in_step_s"], time.monotonic() - t_start + 0.05, ro)
        self.assertEqual(ro["step"], 1, ro)
        self.assertEqual(api["groups"][1]["share"], 10, ok)
        self.ctl("rollout", "abort", "api")
        ro = [p for p in status_doc(self.http)["pools"] if p["name"] == "api"][0]["rollout"]
        self.assertEqual(ro["state"], "ended", ro)
        self.assertRegex(ro["verdict"], r"\Arolled back: ", ro)
        # The page renders it.
        dom = chromium_dump_dom("http://127.0.0.1:%d/" % self.http)
        self.assertIn("rollout of green: step 1/3", dom)

    def test_rates_move_under_load(self):
        self.start()
        load = RoutedLoad(self.ports["api"], n=4)
        self._cleanup.append(load.stop)
        # From the first answered request: the clients' own start-up (threads,
        # connects on a busy machine) is not veer's rate window.
        wait_for(lambda: any(r.status == 200 for r in load.all_records()),
                 what="the load to start")
        t0 = min(r.sent for r in load.all_records() if r.status == 200)

        def busy():
            doc = status_doc(self.http)
            api = [p for p in doc["pools"] if p["name"] == "api"][0]
            if all(g["rps"] > 0 for g in api["groups"]) and \
                    all(b["rps"] > 0 for b in api["backends"]):
                return api
            return None
        api = wait_for(busy, timeout=5, interval=0.05,
                       what="/status rps > 0 for every group and backend under load")
        took = time.monotonic() - t0
        for g in api["groups"]:
            self.assertEqual(g["error_rate"], 0, g)
            self.assertGreater(g["p99_ms"], 0, g)
        self.assertLess(took, 3.0, "rates took %.2fs to show (they are per second)" % took)
        load.stop()
        self.assertFalse(load.failures(), load.failures()[:3])

        def idle():
            doc = status_doc(self.http)
            api = [p for p in doc["pools"] if p["name"] == "api"][0]
            return all(g["rps"] == 0 for g in api["groups"])
        wait_for(idle, timeout=5, interval=0.05, what="/status rps back to 0 after the load")

    def test_error_rate_of_a_failing_backend(self):
        bad = self.backend("bad", lambda c, r: c.sendall(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n") or True)
        self.start(extra_pools=[("broken", 'backends = ( { name = "x1"; address = "%s"; } );'
                                 % bad.address)])
        load = StrictLoad(self.ports["broken"], n=2, accept=(500,))
        self._cleanup.append(load.stop)

        def failing():
            doc = status_doc(self.http)
            p = [p for p in doc["pools"] if p["name"] == "broken"][0]
            return p if p["backends"][0]["rps"] > 0 else None
        p = wait_for(failing, timeout=5, interval=0.05, what="pool broken to show traffic")
        self.assertEqual(p["backends"][0]["error_rate"], 1.0, p)
        self.assertEqual(p["groups"][0]["error_rate"], 1.0, p)
        load.stop()


# --- d. the HTML page ----------------------------------------------------------------


class StatusPageTest(ObservabilityTestCase):
    def test_page_is_self_contained(self):
        self.start()
        status, headers, body = http_get(self.http, "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"), headers)
        page = body.decode("utf-8")
        self.assertRegex(page.lower(), r"^<!doctype html>")
        self.assertNotRegex(page, r"(?i)https?://", "an absolute URL (external asset?)")
        self.assertNotRegex(page, r"(?i)<link\b", "a <link> (external stylesheet?)")
        self.assertNotRegex(page, r"(?i)<script[^>]*\bsrc\s*=", "a <script src>")
        self.assertNotRegex(page, r"(?i)<(img|iframe|object|embed)\b[^>]*\bsrc", "an external object")
        self.assertNotRegex(page, r"(?i)@import|url\(", "CSS that loads something")
        self.assertRegex(page, r"(?i)<script>", "the page refreshes itself with an inline script")
        self.assertIn("/status", page)
        # Other paths are not the page.
        self.assertEqual(http_get(self.http, "/nope")[0], 404)

    def require_chromium(self):
        if chromium_binary() is None:
            self.fail("chromium is not installed (Debian package chromium): the status page "
                      "cannot be checked in a real browser")

    def test_rendered_dom_shows_weights(self):
        """One headless run (--dump-dom with virtual time for the scripts): the
        rendered DOM has the backends' table with their weights."""
        self.require_chromium()
        self.start()
        self.ctl_ok("set", "weight", "api/b2", "240")
        dom = chromium_dump_dom("http://127.0.0.1:%d/" % self.http)
        rows = TableRows(dom).rows
        self.assertEqual(column_of(rows, "backend", "b1", "weight"), "100", rows)
        self.assertEqual(column_of(rows, "backend", "b2", "weight"), "240", rows)
        self.assertEqual(column_of(rows, "backend", "b1", "state"), "READY", rows)
        self.assertEqual(column_of(rows, "group", "blue", "share"), "50%", rows)

    def test_live_page_shows_a_weight_change_within_2s(self):
        """The page stays open in a headless Chromium (DevTools protocol); after
        `set weight api/b1 37` is acknowledged, the DOM shows 37 within two of
        its 1 s refreshes."""
        self.require_chromium()
        self.start()
        admin = AdminConn(self.v.admin_socket)
        self._cleanup.append(admin.close)
        browser = HeadlessChromium("http://127.0.0.1:%d/" % self.http)
        self._cleanup.append(browser.close)

        def weight():
            return column_of(browser.table_rows(), "backend", "b1", "weight")
        wait_for(lambda: weight() == "100", timeout=10, interval=0.05,
                 what="the page to render b1's weight 100")

        # The page fetches /status every second. Counted in the page's own
        # refreshes, not in wall time (which a busy machine stretches): once
        # two fetches started after the OK have completed, the page must show
        # the change.
        def refreshes_since(mark):
            return browser.evaluate(
                "performance.getEntriesByType('resource').filter(function(e){return "
                "e.name.indexOf('/status')>=0 && e.startTime>%f && e.responseEnd>0;}).length"
                % mark)

        def shown_by_second_refresh(mark, seen, what):
            def check():
                n = refreshes_since(mark)  # before looking: the DOM is at least as new
                if seen():
                    return True
                self.assertLess(n, 2, "%d refreshes after the OK, the page does not show %s"
                                % (n, what))
                return False
            wait_for(check, interval=0.02, what="the page to show " + what)

        reply, t_cmd, t_ok = admin.timed_command("set weight api/b1 37")
        parse_ok(reply)
        mark = browser.evaluate("performance.now()")
        shown_by_second_refresh(mark, lambda: weight() == "37", "b1's new weight 37")

        # Maintenance shows the same way.
        reply, t_cmd, t_ok = admin.timed_command("maintenance on api")
        parse_ok(reply)
        mark = browser.evaluate("performance.now()")
        shown_by_second_refresh(mark, lambda: "maintenance" in (browser.evaluate(
            "document.getElementById('pools').innerText") or "").lower(), "maintenance")


# --- e. the access log -------------------------------------------------------------


def log_lines(path):
    """Complete lines of a JSON-lines file (a partial last line is not returned)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return [l for l in data.split(b"\n")[:-1]]


def raw_request(port, data):
    """Send one request (with Connection: close), read until veer closes:
    (bytes received, status)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=veertest.DEADLINE)
    try:
        s.sendall(data)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    finally:
        s.close()
    return out, int(out.split(b" ", 2)[1])


class AccessLogTest(ObservabilityTestCase):
    def wait_lines(self, path, n, timeout=5):
        return wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(log_lines(path)),
                        timeout=timeout, interval=0.02, what="%d lines in %s" % (n, path))

    def test_one_json_line_per_request_with_the_fields(self):
        self.start(access_log=True)
        path = os.path.join(self.v.tmp, "access.log")
        gen = show_pool(self.v.admin_socket)["generation"]
        expect = {}  # path -> (status, X-Backend or None, request id sent or None)
        t_begin = time.monotonic()

        c = self.client(self.ports["api"])
        for i in range(6):
            p = "/with-id/%d?q=%d" % (i, i)
            rid = "client-id-%d-%s" % (i, os.urandom(4).hex())
            r = c.request("GET", p, headers={"X-Request-Id": rid})
            expect[p] = (r.status, r.header("X-Backend"), rid)
        for i in range(6):
            p = "/no-id/%d" % i
            r = c.request("GET", p)
            expect[p] = (r.status, r.header("X-Backend"), None)
        post_req = (b"POST /post/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                    + b"x" * 1000)
        c.send(post_req)
        r = c.response("POST")
        expect["/post/1"] = (r.status, r.header("X-Backend"), None)
        r = c.request("GET", "/missing/1")
        expect["/missing/1"] = (r.status, r.header("X-Backend"), None)
        c.close()
        own, st = raw_request(self.ports["empty"], b"GET /own/1 HTTP/1.1\r\nHost: t\r\n"
                                                   b"Connection: close\r\n\r\n")
        expect["/own/1"] = (st, None, None)
        exact_req = b"GET /exact/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        exact_res, st = raw_request(self.ports["api"], exact_req)
        expect["/exact/1"] = (st, None, None)
        t_sent = time.monotonic()


        lines = self.wait_lines(path, len(expect))
        flushed_after = time.monotonic() - t_sent
        self.assertLess(flushed_after, 3.0, "lines flushed %.2fs after the requests (the log is "
                                            "written at least once a second)" % flushed_after)
        time.sleep(1.2)  # one more flush period: no extra line may come (an absence, not a wait)
        lines = log_lines(path)
        self.assertEqual(len(lines), len(expect), "one line per request: %r" % lines)
        recs = {}
        for l in lines:
            rec = json.loads(l)
            recs[rec["path"]] = rec
        # "path" is the request target's path: the query string is not logged.
        expect = {p.split("?")[0]: v for p, v in expect.items()}
        self.assertEqual(set(recs), set(expect), "the logged paths")

        # Backend side: what each request carried.
        seen = {}
        for b in (self.b1, self.b2):
            for req in b.requests:
                seen[req.target.split("?")[0]] = (b.name, req.header_all("X-Request-Id"))

        now = datetime.datetime.now(datetime.timezone.utc)
        generated = []
        for p, (status, backend, rid) in expect.items():
            rec = recs[p]
            missing = [k for k in ACCESS_FIELDS if k not in rec]
            self.assertFalse(missing, "%s: fields missing: %s in %r" % (p, missing, rec))
            t = datetime.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            self.assertLess(abs((now - t).total_seconds()), 60, rec["time"])
            self.assertEqual(rec["client"], "127.0.0.1")
            self.assertEqual(rec["method"], "POST" if p.startswith("/post") else "GET")
            self.assertEqual(rec["status"], status, rec)
            for k in ("bytes_in", "bytes_out", "generation", "status"):
                self.assertIsInstance(rec[k], int, "%s: %r" % (k, rec))
            for k in ("total_ms", "upstream_ms"):
                self.assertIsInstance(rec[k], (int, float), "%s: %r" % (k, rec))
            # Every request was sent and answered between t_begin and t_sent.
            self.assertLessEqual(rec["total_ms"], (t_sent - t_begin) * 1000, rec)
            self.assertGreaterEqual(rec["total_ms"], rec["upstream_ms"], rec)
            self.assertGreater(rec["bytes_out"], 0)
            self.assertEqual(rec["generation"], gen)
            self.assertIsInstance(rec["request_id"], str)
            self.assertTrue(rec["request_id"], rec)
            if p.startswith("/own"):
                self.assertEqual((rec["pool"], rec["backend"], rec["group"]), ("empty", "", ""))
                self.assertEqual(rec["upstream_ms"], 0)
                generated.append(rec["request_id"])
                continue
            be, ids = seen[p]
            self.assertEqual(rec["pool"], "api")
            self.assertEqual(rec["backend"], be)
            self.assertEqual(rec["group"], {"b1": "blue", "b2": "green"}[be])
            if backend is not None:
                self.assertEqual(backend, be)
            self.assertGreater(rec["upstream_ms"], 0, rec)
            self.assertEqual(len(ids), 1, "%s: the backend saw X-Request-Id %r" % (p, ids))
            if rid is not None:
                self.assertEqual(ids[0], rid, "the client's X-Request-Id is forwarded unchanged")
                self.assertEqual(rec["request_id"], rid, "the client's X-Request-Id is logged")
            else:
                self.assertEqual(rec["request_id"], ids[0],
                                 "the generated id is logged as forwarded")
                generated.append(ids[0])
        self.assertEqual(len(set(generated)), len(generated), "generated ids repeat: %r" % generated)
        self.assertEqual(recs["/post/1"]["bytes_in"], len(post_req), recs["/post/1"])
        # Byte counts of a request/response pair seen whole on the wire.
        self.assertEqual(recs["/exact/1"]["bytes_in"], len(exact_req), recs["/exact/1"])
        self.assertEqual(recs["/exact/1"]["bytes_out"], len(exact_res), recs["/exact/1"])
        self.assertEqual(recs["/own/1"]["bytes_out"], len(own), recs["/own/1"])

    def test_reopen_on_sigusr1_after_rename(self):
        self.start(access_log=True)
        path = os.path.join(self.v.tmp, "access.log")
        rotated = path + ".1"
        first = self.send("api", ["/before/%d" % i for i in range(3)])
        self.wait_lines(path, 3)
        os.rename(path, rotated)
        self.v.send_signal(signal.SIGUSR1)
        self.v.wait_log(r"access log .* reopened", what="veer to reopen the access log")
        wait_for(lambda: os.path.exists(path), timeout=5, what="a new access log file")
        second = self.send("api", ["/after/%d" % i for i in range(4)])
        new = self.wait_lines(path, 4)
        time.sleep(1.2)
        new = log_lines(path)
        old = log_lines(rotated)
        self.assertEqual(sorted(json.loads(l)["path"] for l in old), sorted(p for p, _, _ in first))
        self.assertEqual(sorted(json.loads(l)["path"] for l in new), sorted(p for p, _, _ in second))
        # The file is created with restrictive permissions, not world-readable.
        self.assertEqual(os.stat(path).st_mode & 0o007, 0, oct(os.stat(path).st_mode))


if __name__ == "__main__":
    unittest.main()
