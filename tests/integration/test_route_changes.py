"""Runtime route changes (issue 17): route maintenance, route set and its
rollback, show routes, each an atomic publish acknowledged with OK gen=N
applied_us=T, audited and kept in the state file (a kill -9 loses none), and
a reload that keeps them unless the config changed the route."""

import json
import os
import shutil
import tempfile
import threading
import time
import unittest

from helpers import admin_http_port, audit_records, parse_ok, scrape, veerctl
from test_routes import named
from veertest import DEADLINE, VeerTestCase, wait_for


POOLS = ("payments", "payments-v2", "users", "fallback")


class Load:
    """Keep-alive clients sending paths in turn, recording (sent, path, status,
    body, retry-after) for every answer and every failure to get one."""

    def __init__(self, tc, port, paths, threads=3):
        self.tc, self.port, self.paths = tc, port, paths
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.seen, self.errors = [], []
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def loop(self):
        c = None
        while not self.stop_ev.is_set():
            try:
                if c is None:
                    c = self.tc.client(self.port)
                for path in self.paths:
                    sent = time.monotonic()
                    r = c.request("GET", path)
                    with self.lock:
                        if r is None:
                            self.errors.append((path, "no response"))
                            c = None
                            break
                        self.seen.append((sent, path, r.status, r.body.decode().strip(),
                                          r.header("Retry-After")))
            except OSError as e:
                with self.lock:
                    self.errors.append(("socket", str(e)))
                c = None

    def count_after(self, t, path=None):
        with self.lock:
            return sum(1 for s in self.seen if s[0] > t and (path is None or s[1] == path))

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(DEADLINE)
        return list(self.seen)


class RouteChangesTest(VeerTestCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="veer-routes-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.b = {n: self.backend(n, named(n)) for n in POOLS}

    def config(self, payments_pool="payments"):
        pools = ",\n  ".join('{ name = "%s"; backends = ( { name = "%s"; address = "%s"; } ); }'
                             % (n, n, self.b[n].address) for n in POOLS)
        return ('listen = ( { address = "127.0.0.1:0"; pool = "fallback"; } );\n'
                'timeouts = { quiet_ms = 100; };\n'
                'admin = { socket = "{tmp}/admin.sock"; };\n'
                'audit_log = "%s/audit.log";\nstate_file = "%s/state";\n'
                'pools = (\n  %s\n);\n'
                'routes = (\n'
                '  { name = "payments"; pool = "%s"; match = { path_prefix = "/pay"; }; },\n'
                '  { name = "users"; pool = "users"; match = { path_prefix = "/users"; }; }\n'
                ');\n' % (self.dir, self.dir, pools, payments_pool))

    def ctl(self, v, *args):
        return veerctl(v.admin_socket, *args)

    def ok(self, v, *args):
        res = self.ctl(v, *args)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        return parse_ok(res.stdout)

    def routes(self, v):
        res = self.ctl(v, "show", "routes", "--json")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertTrue(res.stdout.endswith("}\n\n"), res.stdout)
        return {r["name"]: r for r in json.loads(res.stdout)["routes"]}

    def body(self, c, path):
        r = c.request("GET", path)
        self.assertIsNotNone(r, path)
        return r.status, r.body.decode().strip(), r.header("Retry-After")

    def saved(self, text):
        try:
            with open(os.path.join(self.dir, "state")) as f:
                return text in f.read()
        except FileNotFoundError:
            return False

    def test_route_maintenance_under_load_touches_only_that_route(self):
        v = self.veer(self.config())
        load = Load(self, v.port, ("/pay/1", "/users/1", "/other"))
        wait_for(lambda: load.count_after(0) >= 60, what="load before maintenance")
        ok = self.ok(v, "route", "maintenance", "payments", "on", "--retry-after", "42")
        t_on = time.monotonic()
        wait_for(lambda: load.count_after(t_on, "/pay/1") >= 30, what="payments after the ack")
        # a whole second of nothing but maintenance 503s on the route: error rate 1
        wait_for(lambda: self.routes(v)["payments"]["error_rate"] == 1,
                 what="payments error rate 1 in show routes")
        self.assertEqual(self.routes(v)["users"]["error_rate"], 0)
        t_off_sent = time.monotonic()
        off = self.ok(v, "route", "maintenance", "payments", "off")
        t_off = time.monotonic()
        self.assertEqual(off["gen"], ok["gen"] + 1)
        wait_for(lambda: load.count_after(t_off, "/pay/1") >= 30, what="payments after off")
        seen = load.stop()
        self.assertEqual(load.errors, [])
        # every payments request sent between the "on" ack and sending "off": the maintenance 503
        window = [s for s in seen if t_on < s[0] < t_off_sent and s[1] == "/pay/1"]
        self.assertGreaterEqual(len(window), 30)
        body = '{"error":"maintenance","status":503,"retry_after":42}'
        self.assertEqual({(s[2], s[3], s[4]) for s in window}, {(503, body, "42")})
        # the other route and the fallback: not one error, all the time
        others = [s for s in seen if s[1] != "/pay/1"]
        self.assertTrue(others)
        self.assertEqual([s for s in others if s[2] != 200], [])
        self.assertEqual({s[3] for s in others}, {"users", "fallback"})
        # after the "off" ack: payments serves again
        self.assertEqual({(s[2], s[3]) for s in seen if s[0] > t_off and s[1] == "/pay/1"},
                         {(200, "payments")})
        self.assertEqual(self.routes(v)["payments"]["state"], "serving")
        # both changes are in the audit log
        lines, recs = audit_records(os.path.join(self.dir, "audit.log"))
        text = b"\n".join(lines).decode()
        self.assertIn("route maintenance payments on --retry-after 42", text)
        self.assertIn("route maintenance payments off", text)
        v.stop()

    def test_route_maintenance_hold_releases_held_requests_when_it_ends(self):
        v = self.veer(self.config().replace('admin = { socket = "{tmp}/admin.sock"; };',
                                            'admin = { socket = "{tmp}/admin.sock"; '
                                            'http = "127.0.0.1:0"; };'))
        http = admin_http_port(v)
        c = self.client(v.port)
        self.ok(v, "route", "maintenance", "payments", "on", "--hold", "20s")
        self.assertEqual(self.routes(v)["payments"]["state"], "maintenance")
        held = {}

        def send():
            held["r"] = self.client(v.port).request("GET", "/pay/held")
        t = threading.Thread(target=send, daemon=True)
        t.start()
        wait_for(lambda: scrape(http).value("veer_requests_held") == 1, what="the request held")
        # the other route is untouched while payments holds
        self.assertEqual(self.body(c, "/users/1")[:2], (200, "users"))
        self.assertEqual(len(self.b["payments"].requests), 0)
        self.ok(v, "route", "maintenance", "payments", "off")
        t.join(DEADLINE)
        self.assertEqual(held["r"].status, 200)
        self.assertEqual(held["r"].body, b"payments\n")
        v.stop()

    def test_route_set_under_load_no_request_after_the_ack_reaches_the_old_pool(self):
        v = self.veer(self.config())
        load = Load(self, v.port, ("/pay/1", "/users/1"))
        wait_for(lambda: load.count_after(0) >= 60, what="load before the route set")
        ok = self.ok(v, "route", "set", "payments", "pool", "payments-v2")
        t_ack = time.monotonic()
        self.assertEqual(ok["route"], "payments")
        self.assertEqual(ok["pool"], "payments-v2")
        self.assertEqual(ok["previous"], "payments")
        wait_for(lambda: load.count_after(t_ack, "/pay/1") >= 50, what="payments after the ack")
        # show routes has the route's last second: traffic, no errors
        wait_for(lambda: self.routes(v)["payments"]["rps"] > 0, what="payments rps in show routes")
        r = self.routes(v)["payments"]
        self.assertEqual(r["error_rate"], 0)
        self.assertGreater(r["p99_ms"], 0)
        seen = load.stop()
        self.assertEqual(load.errors, [])
        self.assertEqual([s for s in seen if s[2] != 200], [])
        self.assertEqual({s[3] for s in seen if s[0] > t_ack and s[1] == "/pay/1"},
                         {"payments-v2"})
        self.assertLessEqual({s[3] for s in seen if s[1] == "/pay/1"},
                             {"payments", "payments-v2"})
        self.assertEqual({s[3] for s in seen if s[1] == "/users/1"}, {"users"})
        r = self.routes(v)["payments"]
        self.assertEqual((r["pool"], r["state"]), ("payments-v2", "serving"))
        self.assertEqual(r["match"], {"path_prefix": "/pay"})
        v.stop()

    def test_rollback_undoes_route_sets_in_order(self):
        v = self.veer(self.config())
        c = self.client(v.port)
        self.ok(v, "route", "set", "payments", "pool", "payments-v2")
        self.ok(v, "route", "set", "payments", "pool", "users")
        self.assertEqual(self.body(c, "/pay/1")[1], "users")
        # "rollback payments": a pool and a route share the name; the route changed last
        back = self.ok(v, "rollback", "payments")
        self.assertEqual((back["pool"], back["previous"]), ("payments-v2", "users"))
        self.assertEqual(self.body(c, "/pay/1")[1], "payments-v2")
        self.ok(v, "rollback", "route", "payments")
        self.assertEqual(self.body(c, "/pay/1")[1], "payments")
        res = self.ctl(v, "rollback", "route", "payments")
        self.assertEqual(res.returncode, 1)
        self.assertEqual(res.stdout, "ERR nothing to roll back in route payments\n\n")
        # a pool's own rollback is still the pool's
        res = self.ctl(v, "rollback", "users")
        self.assertEqual(res.stdout, "ERR nothing to roll back in pool users\n\n")
        v.stop()

    def test_refusals_change_nothing(self):
        v = self.veer(self.config())
        gen = self.ok(v, "route", "maintenance", "users", "off")["gen"]
        cases = [
            (("route", "set", "nope", "pool", "users"), "ERR unknown route nope"),
            (("route", "set", "payments", "pool", "nope"), "ERR unknown pool nope"),
            (("route", "set", "payments", "pool", "payments"),
             "ERR route payments already sends to pool payments"),
            (("route", "maintenance", "nope", "on"), "ERR unknown route nope"),
            (("route", "maintenance", "payments", "maybe"),
             "ERR route maintenance takes on or off (got 'maybe')"),
            (("rollback", "route", "nope"), "ERR unknown route nope"),
        ]
        for args, want in cases:
            res = self.ctl(v, *args)
            self.assertEqual((res.returncode, res.stdout), (1, want + "\n\n"), args)
        after = self.ok(v, "route", "maintenance", "users", "off")["gen"]
        self.assertEqual(after, gen + 1, "a refused command published a snapshot")
        r = self.routes(v)
        self.assertEqual((r["payments"]["pool"], r["payments"]["state"]), ("payments", "serving"))
        v.stop()

    def test_show_routes_text(self):
        v = self.veer(self.config())
        self.ok(v, "route", "maintenance", "users", "on")
        res = self.ctl(v, "show", "routes")
        self.assertEqual(res.returncode, 0)
        rows = [l.split() for l in res.stdout.strip().splitlines()]
        self.assertEqual(rows[0], ["route", "match", "pool", "state", "rps", "err%", "p99ms"])
        self.assertEqual(rows[1][:4], ["payments", "path_prefix=/pay", "payments", "serving"])
        self.assertEqual(rows[2][:4], ["users", "path_prefix=/users", "users", "maintenance"])
        self.assertEqual(len(rows), 3)
        v.stop()

    def test_state_file_restores_route_state_after_kill_9(self):
        v = self.veer(self.config())
        self.ok(v, "route", "set", "payments", "pool", "payments-v2")
        ok = self.ok(v, "route", "maintenance", "users", "on", "--retry-after", "7")
        wait_for(lambda: self.saved("generation %d\n" % ok["gen"]),
                 what="the state file at generation %d" % ok["gen"])
        v.kill()
        v = self.veer(self.config())
        r = self.routes(v)
        self.assertEqual(r["payments"]["pool"], "payments-v2")
        self.assertEqual(r["users"]["state"], "maintenance")
        c = self.client(v.port)
        self.assertEqual(self.body(c, "/pay/1")[:2], (200, "payments-v2"))
        st, body, retry = self.body(c, "/users/1")
        self.assertEqual((st, retry), (503, "7"))
        v.stop()
        # the operator edited the route's pool in the file while veer was down: the file wins
        v = self.veer(self.config(payments_pool="users"))
        self.assertEqual(self.routes(v)["payments"]["pool"], "users")
        self.assertEqual(self.routes(v)["users"]["state"], "maintenance")
        v.stop()

    def test_reload_keeps_route_state_unless_the_config_changed_the_route(self):
        v = self.veer(self.config())
        c = self.client(v.port)
        self.ok(v, "route", "set", "payments", "pool", "payments-v2")
        self.ok(v, "route", "maintenance", "users", "on")
        self.ok(v, "reload")
        self.assertEqual(self.body(c, "/pay/1")[1], "payments-v2")
        self.assertEqual(self.body(c, "/users/1")[0], 503)
        # the route's pool edited in the file: the file wins on reload
        with open(v.config_path, "w") as f:
            f.write(self.config(payments_pool="users").replace("{tmp}", v.tmp))
        self.ok(v, "reload")
        self.assertEqual(self.body(c, "/pay/1")[1], "users")
        self.assertEqual(self.routes(v)["users"]["state"], "maintenance")
        v.stop()


if __name__ == "__main__":
    unittest.main()
