"""L7 routes (issue 17), first slice: a request goes to the pool of the route
that matches it (host, path or path_prefix, methods, headers, with the Gateway
API's precedence), else to its listener's pool, else gets 404 no_route; a
route's own timeout, body limit, retries, rewrite_prefix and request headers
apply to its requests; a reload swaps the table with no failed request. The
routes as operators see them: /status's "routes" (route maintenance and route
set show at once), the status page's route table in a real browser, the
health status endpoint's route maintenance map, and readiness, which a pool
only a route sends to does not decide."""

import json
import os
import threading
import time
import unittest

from helpers import (TableRows, admin_http_port, chromium_binary, chromium_dump_dom, column_of,
                     quick_config, scrape, status_doc, veerctl)  # noqa: F401 (quick_config)
from veertest import DEADLINE, VeerTestCase, wait_for


def named(name):
    """A handler answering 200 with the backend's name (the route the request took)."""
    body = (name + "\n").encode()

    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return True
    return handler


def slow(name, delay):
    """Answers like named(), after delay seconds of silence."""
    ok = named(name)

    def handler(conn, req):
        time.sleep(delay)
        return ok(conn, req)
    return handler


def hang_up(conn, req):
    """Closes the connection without a response: an upstream failure veer may retry."""
    return False


def pools_text(pools):
    """pools = ( ... ) from (pool name, [(backend name, address), ...], extra keys)."""
    out = []
    for pool, backends, extra in pools:
        bl = ", ".join('{ name = "%s"; address = "%s"; }' % b for b in backends)
        out.append('{ name = "%s"; %s backends = ( %s ); }' % (pool, extra, bl))
    return "pools = (\n  " + ",\n  ".join(out) + "\n);\n"


ROUTES = """
routes = (
  { name = "payments"; pool = "payments";
    match = { host = "api.example.com"; path_prefix = "/payments"; }; },
  { name = "payments-any"; pool = "wild";
    match = { host = "*.example.com"; path_prefix = "/payments"; }; },
  { name = "users-v2"; pool = "users2";
    match = { path_prefix = "/users"; methods = ( "GET", "HEAD" );
              headers = ( { name = "X-Api-Version"; value = "2"; } ); }; },
  { name = "users"; pool = "users"; match = { path_prefix = "/users"; }; },
  { name = "me"; pool = "exact"; match = { path = "/users/me"; }; },
  { name = "login"; pool = "auth"; match = { path = "/login"; };
    rewrite_prefix = "/v1/login";
    request_headers = { set = ( { name = "X-Route"; value = "login"; } );
                        remove = ( "X-Debug" ); }; },
  { name = "old"; pool = "auth"; match = { path_prefix = "/old/"; }; rewrite_prefix = "/new"; },
  { name = "slow"; pool = "slow"; match = { path_prefix = "/slow"; };
    timeouts = { upstream_response_ms = 200; }; },
  { name = "slow-ok"; pool = "slow"; match = { path_prefix = "/patient"; }; },
  { name = "upload"; pool = "api"; match = { path_prefix = "/upload"; }; body_bytes = 10; },
  { name = "flaky"; pool = "flaky"; match = { path_prefix = "/flaky"; }; },
  { name = "noretry"; pool = "flaky"; match = { path_prefix = "/noretry"; };
    retries = { count = 0; }; }
);
"""


class RoutesTest(VeerTestCase):
    def start_main(self):
        names = ("api", "payments", "wild", "users2", "users", "exact", "auth")
        self.b = {n: self.backend(n, named(n)) for n in names}
        self.b["slow"] = self.backend("slow", slow("slow", 2.0))
        self.b["bad"] = self.backend("bad", hang_up)
        self.b["good"] = self.backend("good", named("good"))
        pools = [(n, [(n, self.b[n].address)], "") for n in names + ("slow",)]
        # Every request earns a whole retry: the pool's retries never wait for the budget.
        pools.append(("flaky", [("bad", self.b["bad"].address), ("good", self.b["good"].address)],
                      "retries = { count = 2; budget_percent = 100; base_ms = 1; cap_ms = 1; };"
                      " breaker = { failures = 1000; };"))
        text = ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
                'access_log = "{tmp}/access.log";\n'
                "timeouts = { quiet_ms = 100; };\n" + pools_text(pools) + ROUTES)
        return self.veer(text)

    def access_records(self, v, count):
        """The first count lines of v's access log, decoded (written at least once a second)."""
        path = os.path.join(v.tmp, "access.log")

        def lines():
            if not os.path.exists(path):
                return None
            with open(path) as f:
                got = [json.loads(x) for x in f.read().splitlines()]
            return got if len(got) >= count else None
        return wait_for(lines, what="%d access log lines" % count)

    def get(self, c, path, host="test", method="GET", headers=None, body=None):
        h = {"Host": host}
        h.update(headers or {})
        r = c.request(method, path, headers=h, body=body)
        self.assertIsNotNone(r, "no response to %s %s" % (method, path))
        return r

    def where(self, c, path, **kw):
        r = self.get(c, path, **kw)
        self.assertEqual(r.status, 200, r.body[:200])
        return r.body.decode().strip()

    def test_requests_follow_the_route_table(self):
        v = self.start_main()
        c = self.client(v.port)
        # host: exact before wildcard before none; whole segments only.
        self.assertEqual(self.where(c, "/payments/1", host="api.example.com"), "payments")
        self.assertEqual(self.where(c, "/payments", host="API.Example.com:8080"), "payments")
        self.assertEqual(self.where(c, "/payments/1", host="eu.example.com"), "wild")
        self.assertEqual(self.where(c, "/payments/1", host="a.b.example.com"), "wild")
        self.assertEqual(self.where(c, "/payments/1", host="example.com"), "api")
        self.assertEqual(self.where(c, "/paymentsx", host="api.example.com"), "api")
        # methods and headers: a route whose method or header does not hold falls through.
        v2 = {"X-Api-Version": "2"}
        self.assertEqual(self.where(c, "/users/7", headers=v2), "users2")
        self.assertEqual(self.where(c, "/users/7", method="POST", headers=v2, body=b""), "users")
        self.assertEqual(self.where(c, "/users/7"), "users")
        self.assertEqual(self.where(c, "/users/7", headers={"X-Api-Version": "3"}), "users")
        # an exact path wins over a longer condition list on a prefix
        self.assertEqual(self.where(c, "/users/me", headers=v2), "exact")
        self.assertEqual(self.where(c, "/users/me/x", headers=v2), "users2")
        # no route: the listener's pool
        self.assertEqual(self.where(c, "/elsewhere"), "api")
        self.assertEqual(self.where(c, "/"), "api")
        c.close()
        v.stop()  # a clean exit: no sanitizer report, nothing leaked

    def test_access_log_names_the_route(self):
        v = self.start_main()
        c = self.client(v.port)
        self.where(c, "/payments/1", host="api.example.com")
        self.where(c, "/elsewhere")
        self.where(c, "/old/a")
        recs = self.access_records(v, 3)
        self.assertEqual([(r["path"], r["route"], r["pool"]) for r in recs[:3]],
                         [("/payments/1", "payments", "payments"), ("/elsewhere", "", "api"),
                          ("/old/a", "old", "auth")])

    def test_rewrite_prefix_and_request_headers(self):
        v = self.start_main()
        c = self.client(v.port)
        r = self.get(c, "/login?next=%2Fhome",
                     headers={"X-Debug": "1", "X-Route": "client", "X-Keep": "k"})
        self.assertEqual(r.status, 200)
        req = self.b["auth"].requests[-1]
        self.assertEqual(req.target, "/v1/login?next=%2Fhome")
        self.assertEqual(req.header_all("X-Debug"), [])
        self.assertEqual(req.header_all("X-Route"), ["login"])
        self.assertEqual(req.header("X-Keep"), "k")
        self.assertEqual(req.header("Host"), "test")
        # a prefix: the rest of the path and the query follow the new prefix
        self.assertEqual(self.where(c, "/old/a/b?q=1", headers={"X-Debug": "2"}), "auth")
        req = self.b["auth"].requests[-1]
        self.assertEqual(req.target, "/new/a/b?q=1")
        self.assertEqual(req.header("X-Debug"), "2")  # only "login" removes it
        self.assertEqual(req.header_all("X-Route"), [])
        self.assertEqual(self.where(c, "/old"), "auth")
        self.assertEqual(self.b["auth"].requests[-1].target, "/new")
        # routes without a rewrite forward the path as it came
        self.assertEqual(self.where(c, "/users/7?x=1"), "users")
        self.assertEqual(self.b["users"].requests[-1].target, "/users/7?x=1")
        c.close()
        v.stop()

    def test_route_timeout_fires_while_the_pools_would_not(self):
        v = self.start_main()
        c = self.client(v.port)
        t0 = time.monotonic()
        r = self.get(c, "/slow/x")
        self.assertEqual(r.status, 504, r.body[:200])
        self.assertEqual(json.loads(r.body)["error"], "gateway_timeout")
        self.assertLess(time.monotonic() - t0, 1.5, "the route's 200 ms did not apply")
        # the same pool through a route without the override: the global 30 s
        c2 = self.client(v.port)
        self.assertEqual(self.where(c2, "/patient"), "slow")

    def test_route_body_limit(self):
        v = self.start_main()
        c = self.client(v.port)
        self.assertEqual(self.get(c, "/upload", method="POST", body=b"x" * 10).status, 200)
        r = self.get(c, "/upload", method="POST", body=b"x" * 11)
        self.assertEqual(r.status, 413, r.body[:200])
        self.assertEqual(json.loads(r.body)["error"], "content_too_large")
        # the same pool, another path: no limit (the global one is unlimited)
        c = self.client(v.port)
        self.assertEqual(self.get(c, "/elsewhere", method="POST", body=b"x" * 5000).status, 200)
        # a chunked body over the route's limit
        c = self.client(v.port)
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"c\r\nxxxxxxxxxxxx\r\n0\r\n\r\n")
        self.assertEqual(c.response().status, 413)

    def test_route_retries_count_zero(self):
        v = self.start_main()
        bad, good = self.b["bad"], self.b["good"]
        c = self.client(v.port)
        # the pool's retries: a failure goes to the other backend, the client sees 200
        for _ in range(4):
            self.assertEqual(self.where(c, "/flaky"), "good")
        self.assertGreater(len(bad.requests), 0)
        # the route's count = 0: a failure is the client's 502
        n_bad, n_good, statuses = len(bad.requests), len(good.requests), []
        for _ in range(6):
            c = self.client(v.port)
            statuses.append(self.get(c, "/noretry").status)
        self.assertEqual(sorted(set(statuses)) <= [200, 502], True, statuses)
        self.assertEqual(statuses.count(502), len(bad.requests) - n_bad, statuses)
        self.assertEqual(statuses.count(200), len(good.requests) - n_good, statuses)
        self.assertIn(502, statuses)

    def test_route_explain_agrees_with_the_data_path(self):
        v = self.start_main()
        c = self.client(v.port)
        res = veerctl(v.admin_socket, "route", "explain", "GET", "eu.example.com",
                      "/payments/../users/7?x=1", "X-Api-Version:2")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(res.stdout,
                         "OK\n"
                         "canonical_path /users/7\n"
                         "query ?x=1 (ignored for matching)\n"
                         "route users-v2 pool users2\n"
                         "skip payments-any: path_prefix /payments does not cover /users/7\n"
                         "skip me: path /users/me is not /users/7\n"
                         "skip login: path /login is not /users/7\n"
                         "skip slow-ok: path_prefix /patient does not cover /users/7\n"
                         "skip noretry: path_prefix /noretry does not cover /users/7\n"
                         "skip upload: path_prefix /upload does not cover /users/7\n"
                         "skip 1 route for other hosts\n\n")
        # What explain names is where the same request goes.
        cases = [("GET", "eu.example.com", "/payments/../users/7?x=1", {"X-Api-Version": "2"}),
                 ("GET", "api.example.com", "/payments/1", {}),
                 ("GET", "a.b.example.com", "//payments/./1", {}),
                 ("POST", "test", "/users/7", {"X-Api-Version": "2"}),
                 ("GET", "test", "/users/%6De", {}),
                 ("GET", "test", "/elsewhere", {})]
        for method, host, path, headers in cases:
            hdr_args = ["%s:%s" % kv for kv in headers.items()]
            res = veerctl(v.admin_socket, "route", "explain", method, host, path, *hdr_args)
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
            lines = res.stdout.split("\n")
            self.assertEqual(lines[0], "OK")
            route = [x for x in lines if x.startswith("route ")]
            self.assertEqual(len(route), 1, res.stdout)
            pool = route[0].split(" pool ")[1].split(" ")[0]
            got = self.where(c, path, host=host, method=method, headers=headers,
                             body=b"" if method == "POST" else None)
            self.assertEqual(got, pool, "%s %s %s: %s" % (method, host, path, res.stdout))
        res = veerctl(v.admin_socket, "route", "explain", "GET", "test", "/elsewhere")
        self.assertIn("route none pool api (listener fallback)\n", res.stdout)
        # A path veer refuses with 400 is refused by explain too, with the reason.
        res = veerctl(v.admin_socket, "route", "explain", "GET", "test", "/a/%2Fb")
        self.assertEqual(res.returncode, 1)
        self.assertEqual(res.stdout, "ERR bad path: encoded slash (%2F)\n\n")
        self.assertEqual(self.get(c, "/a/%2Fb").status, 400)
        res = veerctl(v.admin_socket, "route", "explain", "GET", "test")
        self.assertEqual(res.returncode, 1)
        self.assertIn("usage: route explain METHOD HOST PATH", res.stdout)
        c.close()
        v.stop()

    def test_listener_without_pool_answers_404_no_route(self):
        a = self.backend("a", named("a"))
        text = ('listen = ( { address = "127.0.0.1:0"; } );\n'
                "timeouts = { quiet_ms = 100; };\n"
                + pools_text([("a", [("a", a.address)], "")])
                + 'routes = ( { name = "r"; pool = "a"; match = { path_prefix = "/r"; }; } );\n')
        v = self.veer(text)
        c = self.client(v.port)
        self.assertEqual(self.where(c, "/r/1"), "a")
        r = self.get(c, "/nothing")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertEqual(r.body, b'{"error":"no_route","status":404}\n')
        # the connection stays usable, and veer's own endpoints still answer
        self.assertEqual(self.where(c, "/r"), "a")
        self.assertEqual(self.get(c, "/api/health/liveness").status, 200)
        self.assertEqual(len(a.requests), 2)
        c.close()
        v.stop()

    def test_readiness_checks_listeners_after_one_without_pool(self):
        a = self.backend("a", named("a"))
        text = ('listen = ( { address = "127.0.0.1:0"; },\n'
                '  { address = "127.0.0.1:0"; pool = "empty"; } );\n'
                "timeouts = { quiet_ms = 100; };\n"
                'pools = ( { name = "a"; backends = ( { name = "a"; address = "%s"; } ); },\n'
                '  { name = "empty"; } );\n'
                'routes = ( { name = "r"; pool = "a"; match = { path_prefix = "/r"; }; } );\n'
                % a.address)
        v = self.veer(text)
        c = self.client(v.port)
        r = self.get(c, "/api/health/readiness")
        self.assertEqual(r.status, 503, r.body)
        self.assertIn(b"pool empty has no eligible backend", r.body)

    def test_route_hold_ms_holds_while_the_pools_does_not(self):
        text = ('listen = ( { address = "127.0.0.1:0"; pool = "empty"; } );\n'
                "timeouts = { quiet_ms = 100; };\n"
                'pools = ( { name = "empty"; } );\n'
                'routes = ( { name = "held"; pool = "empty"; match = { path_prefix = "/held"; };\n'
                '  hold_ms = 400; } );\n')
        v = self.veer(text)
        c = self.client(v.port)
        t0 = time.monotonic()
        r = self.get(c, "/now")
        self.assertEqual(r.status, 503)
        t1 = time.monotonic()
        r = self.get(c, "/held")
        self.assertEqual(r.status, 503)
        self.assertGreaterEqual(time.monotonic() - t1, 0.4, "the route's hold_ms did not apply")
        self.assertLess(t1 - t0, 0.4, "the pool's hold_ms is 0")

class RoutesReloadTest(VeerTestCase):
    def config(self, target):
        return ('listen = ( { address = "127.0.0.1:0"; pool = "fallback"; } );\n'
                'timeouts = { quiet_ms = 100; };\n'
                'admin = { socket = "{tmp}/admin.sock"; };\n'
                + pools_text([(n, [(n, self.b[n].address)], "") for n in ("a", "b", "fallback")])
                + 'routes = ( { name = "svc"; pool = "%s"; match = { path_prefix = "/svc"; }; },\n'
                  '  { name = "other"; pool = "%s"; match = { path = "/other"; }; } );\n'
                % (target, target))

    def test_reload_swaps_the_table_under_load_without_a_failed_request(self):
        self.b = {n: self.backend(n, named(n)) for n in ("a", "b", "fallback")}
        v = self.veer(self.config("a"))
        stop = threading.Event()
        seen, errors, lock = [], [], threading.Lock()

        def loop():
            c = None
            while not stop.is_set():
                try:
                    if c is None:
                        c = self.client(v.port)
                    for path in ("/svc/x", "/other"):
                        sent = time.monotonic()
                        r = c.request("GET", path)
                        with lock:
                            if r is None or r.status != 200:
                                errors.append((path, r and r.status, r and r.body[:100]))
                            else:
                                seen.append((sent, path, r.body.decode().strip()))
                except OSError as e:
                    with lock:
                        errors.append(("socket", str(e)))
                    c = None

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: len(seen) >= 100, what="load before the reload")
        tmp = v.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(self.config("b").replace("{tmp}", v.tmp))
        os.replace(tmp, v.config_path)
        res = veerctl(v.admin_socket, "reload")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        t_ack = time.monotonic()
        wait_for(lambda: sum(1 for s in list(seen) if s[0] > t_ack) >= 100,
                 what="load after the reload")
        stop.set()
        for t in threads:
            t.join(DEADLINE)
        self.assertEqual(errors, [])
        answers = {s[2] for s in seen}
        self.assertLessEqual(answers, {"a", "b"}, "an answer from neither table")
        # applied before the ack: every request sent after it sees the new table
        late = {s[2] for s in seen if s[0] > t_ack}
        self.assertEqual(late, {"b"})
        self.assertEqual(len(self.b["fallback"].requests), 0)
        v.stop()  # the replaced configuration and its table were freed, or are at exit

    def test_reload_adding_a_pool_routes_to_it_by_name(self):
        # The new pool comes first in the file but last in the running model:
        # a route must reach it by name, not by its place in the file.
        self.b = {n: self.backend(n, named(n)) for n in ("a", "b", "fallback", "c")}
        v = self.veer(self.config("a"))
        c = self.client(v.port)
        self.assertEqual(c.request("GET", "/svc").body, b"a\n")
        text = ('listen = ( { address = "127.0.0.1:0"; pool = "fallback"; } );\n'
                'timeouts = { quiet_ms = 100; };\n'
                'admin = { socket = "%s/admin.sock"; };\n' % v.tmp
                + pools_text([(n, [(n, self.b[n].address)], "") for n in ("c", "a", "fallback")])
                + 'routes = ( { name = "svc"; pool = "c"; match = { path_prefix = "/svc"; }; },\n'
                  '  { name = "other"; pool = "a"; match = { path = "/other"; }; } );\n')
        tmp = v.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, v.config_path)
        res = veerctl(v.admin_socket, "reload")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(c.request("GET", "/svc/1").body, b"c\n")
        self.assertEqual(c.request("GET", "/other").body, b"a\n")
        self.assertEqual(c.request("GET", "/x").body, b"fallback\n")
        # a config with a route to an unknown pool is refused; the running table stays
        with open(tmp, "w") as f:
            f.write(text.replace('pool = "c";', 'pool = "nope";'))
        os.replace(tmp, v.config_path)
        res = veerctl(v.admin_socket, "reload")
        self.assertNotEqual(res.returncode, 0, res.stdout)
        self.assertIn("routes[0].pool: unknown pool 'nope'", res.stdout + res.stderr)
        self.assertEqual(c.request("GET", "/svc/1").body, b"c\n")
        c.close()
        v.stop()


STATUS_ROUTES = """
routes = (
  { name = "payments"; pool = "payments";
    match = { host = "api.example.com"; path_prefix = "/payments"; methods = ( "GET" );
              headers = ( { name = "X-Api-Version"; value = "<b>2</b>&amp;"; } ); }; },
  { name = "login"; pool = "users"; match = { path = "/login"; }; },
  { name = "dead"; pool = "empty"; match = { path_prefix = "/dead"; }; }
);
"""


class RoutesStatusTest(VeerTestCase):
    """The routes as operators see them: /status's "routes", the status page's
    route table, the health status endpoint's route maintenance map; and
    readiness, which a pool only routes send to does not decide."""

    def start_veer(self, routes=STATUS_ROUTES):
        self.b = {n: self.backend(n, named(n)) for n in ("api", "payments", "users", "payments2")}
        pools = [(n, [(n, self.b[n].address)], "") for n in ("api", "payments", "users",
                                                               "payments2")]
        pools.append(("empty", [], ""))  # no backend: nothing eligible
        text = ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
                'admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
                "timeouts = { quiet_ms = 100; };\n" + pools_text(pools) + routes)
        v = self.veer(text)
        self.http = admin_http_port(v)
        return v

    def ctl_ok(self, v, *args):
        res = veerctl(v.admin_socket, *args)
        self.assertEqual(res.returncode, 0, "%s: %s%s" % (" ".join(args), res.stdout, res.stderr))
        self.assertTrue(res.stdout.startswith("OK gen="), res.stdout)

    def health_routes(self, v):
        """maintenance.routes of veer's health status document; None when it has none."""
        c = self.client(v.port)
        r = c.request("GET", "/api/health/status", headers={"Host": "test"})
        c.close()
        self.assertEqual(r.status, 200, r.body)
        return json.loads(r.body)["maintenance"].get("routes")

    def test_status_lists_the_routes_and_follows_route_changes(self):
        v = self.start_veer()
        payments = {"name": "payments",
                    "match": {"host": "api.example.com", "path_prefix": "/payments",
                              "methods": ["GET"],
                              "headers": [{"name": "X-Api-Version", "value": "<b>2</b>&amp;"}]},
                    "pool": "payments", "state": "serving",
                    "maintenance_retry_after": 0, "maintenance_hold_ms": 0,
                    "rps": 0.0, "error_rate": 0.0, "p99_ms": 0.0}
        login = {"name": "login", "match": {"path": "/login"}, "pool": "users",
                 "state": "serving", "maintenance_retry_after": 0, "maintenance_hold_ms": 0,
                 "rps": 0.0, "error_rate": 0.0, "p99_ms": 0.0}
        dead = {"name": "dead", "match": {"path_prefix": "/dead"}, "pool": "empty",
                "state": "serving", "maintenance_retry_after": 0, "maintenance_hold_ms": 0,
                 "rps": 0.0, "error_rate": 0.0, "p99_ms": 0.0}
        self.assertEqual(status_doc(self.http)["routes"], [payments, login, dead])
        self.assertEqual(self.health_routes(v), {"payments": False, "login": False,
                                                 "dead": False})

        # Applied before the ack: the next /status and health status show it.
        self.ctl_ok(v, "route", "maintenance", "payments", "on", "--retry-after", "7",
                    "--hold", "2s")
        payments.update(state="maintenance", maintenance_retry_after=7,
                        maintenance_hold_ms=2000)
        self.assertEqual(status_doc(self.http)["routes"], [payments, login, dead])
        self.assertEqual(self.health_routes(v), {"payments": True, "login": False,
                                                 "dead": False})

        self.ctl_ok(v, "route", "set", "login", "pool", "payments2")
        login["pool"] = "payments2"
        self.assertEqual(status_doc(self.http)["routes"], [payments, login, dead])
        c = self.client(v.port)
        self.assertEqual(self.where(c, "/login"), "payments2")

        # Maintenance of the pool a route sends to closes the route too; it shows.
        self.ctl_ok(v, "maintenance", "on", "payments2", "--retry-after", "9")
        login.update(state="maintenance", maintenance_retry_after=9)
        self.assertEqual(status_doc(self.http)["routes"], [payments, login, dead])
        self.assertEqual(self.health_routes(v), {"payments": True, "login": True,
                                                 "dead": False})
        self.ctl_ok(v, "maintenance", "off", "payments2")
        self.ctl_ok(v, "route", "maintenance", "payments", "off")
        for r in (payments, login):
            r.update(state="serving", maintenance_retry_after=0, maintenance_hold_ms=0)
        self.assertEqual(status_doc(self.http)["routes"], [payments, login, dead])
        self.assertEqual(self.health_routes(v), {"payments": False, "login": False,
                                                 "dead": False})
        c.close()
        v.stop()

    def test_status_without_routes_has_an_empty_routes_array(self):
        v = self.start_veer(routes="")
        self.assertEqual(status_doc(self.http)["routes"], [])
        self.assertIsNone(self.health_routes(v))  # the health document keeps its old shape
        v.stop()

    def require_chromium(self):
        if chromium_binary() is None:
            self.fail("chromium is not installed (Debian package chromium): the status page "
                      "cannot be checked in a real browser")

    def test_status_page_has_a_route_table(self):
        """Rendered by a real browser: a row per route with its match as text
        (HTML in a header value shown as text, never as markup), pool, state
        and figures; a route in maintenance says so."""
        self.require_chromium()
        v = self.start_veer()
        self.ctl_ok(v, "route", "maintenance", "login", "on")
        dom = chromium_dump_dom("http://127.0.0.1:%d/" % self.http)
        rows = TableRows(dom).rows
        self.assertIn(["route", "match", "pool", "state", "rps", "error rate", "p99 ms"], rows)
        self.assertEqual(column_of(rows, "route", "payments", "match"),
                         "host=api.example.com path_prefix=/payments methods=GET "
                         "header=X-Api-Version:<b>2</b>&amp;", rows)
        self.assertNotIn("<b>2</b>", dom.replace("&lt;b&gt;2&lt;/b&gt;", ""),
                         "a header value was rendered as markup")
        self.assertEqual(column_of(rows, "route", "payments", "pool"), "payments")
        self.assertEqual(column_of(rows, "route", "payments", "state"), "serving")
        self.assertEqual(column_of(rows, "route", "login", "match"), "path=/login")
        self.assertEqual(column_of(rows, "route", "login", "state"), "maintenance")
        self.assertEqual(column_of(rows, "route", "dead", "pool"), "empty")
        self.assertEqual(column_of(rows, "route", "dead", "rps"), "0")
        self.assertEqual(column_of(rows, "route", "dead", "error rate"), "0.00%")
        # The pools' tables are still there, below.
        self.assertEqual(column_of(rows, "backend", "users", "state"), "READY")
        v.stop()

    def test_status_page_without_routes_has_no_route_table(self):
        self.require_chromium()
        v = self.start_veer(routes="")
        dom = chromium_dump_dom("http://127.0.0.1:%d/" % self.http)
        rows = TableRows(dom).rows
        self.assertEqual(column_of(rows, "backend", "api", "state"), "READY", rows)
        self.assertFalse([r for r in rows if "route" in r], rows)
        v.stop()

    def test_readiness_ignores_a_pool_only_a_route_sends_to(self):
        """Readiness tells the outer balancer whether to send veer anything: a
        route whose pool has no eligible backend answers 503 on its own, and
        veer stays ready while the listener's pool can serve."""
        v = self.start_veer()
        c = self.client(v.port)
        r = self.get(c, "/api/health/readiness")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.get(c, "/dead/x").status, 503)
        self.assertEqual(self.where(c, "/login"), "users")
        self.assertEqual(self.where(c, "/payments/1", host="api.example.com",
                                    headers={"X-Api-Version": "<b>2</b>&amp;"}), "payments")
        self.assertEqual(self.where(c, "/elsewhere"), "api")
        self.assertEqual(self.get(c, "/api/health/readiness").status, 200)
        c.close()
        v.stop()

    get = RoutesTest.get
    where = RoutesTest.where



class RouteMetricsTest(VeerTestCase):
    """The route label on veer_requests_total and veer_request_duration_seconds:
    every request counted in exactly one series (its route's, or route="" when
    it matched none), and no series ever going down, across route set and a
    reload."""

    ROUTES = ('routes = ( { name = "r1"; pool = "a"; match = { path_prefix = "/r1"; }; },\n'
              '  { name = "r2"; pool = "b"; match = { path_prefix = "/r2"; }; } );\n')

    def config(self, routes):
        return ("workers = 2;\n"
                'listen = ( { address = "127.0.0.1:0"; pool = "fb"; },\n'
                '  { address = "127.0.0.1:0"; } );\n'
                "timeouts = { quiet_ms = 100; };\n"
                'admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
                + pools_text([(n, [(n, self.b[n].address)], "") for n in ("a", "b", "fb")])
                + routes)

    def send(self, port, path, n, status):
        """n GETs of path on port over two keep-alive connections, each answered status."""
        cs = [self.client(port) for _ in range(2)]
        for i in range(n):
            r = cs[i % 2].request("GET", path, headers={"Host": "test"})
            self.assertIsNotNone(r, "no response to %s" % path)
            self.assertEqual(r.status, status, (path, r.body[:200]))
        for c in cs:
            c.close()
        self.sent += n

    def ctl_ok(self, *args):
        res = veerctl(self.v.admin_socket, *args)
        self.assertEqual(res.returncode, 0, "veerctl %s: %r %r" % (args, res.stdout, res.stderr))

    def scrape_sent(self):
        """A scrape once every request sent is counted (counters are added as a
        transaction ends, a hair after the client read its response)."""
        last = [None]

        def counted():
            last[0] = scrape(self.http)
            return last[0].total("veer_requests_total") >= self.sent
        wait_for(counted, what="%d requests counted" % self.sent)
        return last[0]

    @staticmethod
    def series(s, name):
        return {tuple(sorted(l.items())): v for n, l, v in s.samples if n == name}

    def assert_requests(self, s, want):
        """veer_requests_total is exactly want ({(pool, group, backend, route, class): n}),
        apart from the 2xx series at 0 of a backend's requests on no route."""
        got = {(l["pool"], l["group"], l["backend"], l["route"], l["code_class"]): v
               for n, l, v in s.samples if n == "veer_requests_total"}
        zero = {k for k, v in got.items() if v == 0}
        for k in zero:
            self.assertEqual((k[3], k[4]), ("", "2xx"), "a series at 0: %r" % (k,))
        self.assertEqual({k: v for k, v in got.items() if k not in zero}, want)
        self.assertEqual(s.total("veer_requests_total"), self.sent)
        self.assertEqual(s.total("veer_request_duration_seconds_count"), self.sent)

    def test_route_label_counts_each_request_once_and_never_goes_down(self):
        self.b = {n: self.backend(n, named(n)) for n in ("a", "b", "fb")}
        self.v = v = self.veer(self.config(self.ROUTES))
        self.http = admin_http_port(v)
        self.sent = 0
        main, bare = v.ports[0], v.ports[1]
        self.send(main, "/r1/x", 7, 200)
        self.send(bare, "/r1", 3, 200)           # the route, on the listener without a pool
        self.send(main, "/r2", 5, 200)
        self.send(main, "/other", 4, 200)        # no route: the listener's pool
        self.send(bare, "/nothing", 2, 404)      # no route, no pool: 404 no_route
        self.ctl_ok("route", "maintenance", "r2", "on")
        self.send(main, "/r2/y", 3, 503)         # veer's own answer, on route r2
        s = self.scrape_sent()
        self.assert_requests(s, {
            ("a", "default", "a", "r1", "2xx"): 10,
            ("b", "default", "b", "r2", "2xx"): 5,
            ("b", "", "", "r2", "5xx"): 3,
            ("fb", "default", "fb", "", "2xx"): 4,
            ("", "", "", "", "4xx"): 2,
        })
        self.assertEqual(s.value("veer_request_duration_seconds_count",
                                 pool="a", group="default", route="r1"), 10)
        self.assertEqual(s.value("veer_request_duration_seconds_count",
                                 pool="a", group="default", route=""), 0)
        self.assertEqual(s.value("veer_request_duration_seconds_count",
                                 pool="b", group="", route="r2"), 3)
        self.assertEqual(s.value("veer_request_duration_seconds_count",
                                 pool="fb", group="default", route=""), 4)
        self.assertEqual(s.value("veer_request_duration_seconds_count",
                                 pool="", group="", route=""), 2)
        before = [self.series(s, "veer_requests_total"),
                  self.series(s, "veer_request_duration_seconds_count")]

        # A route set: r1's next requests go to pool b, its figures in a stay.
        self.ctl_ok("route", "set", "r1", "pool", "b")
        self.send(main, "/r1/z", 2, 200)
        self.ctl_ok("route", "maintenance", "r2", "off")
        self.send(main, "/r2", 1, 200)
        # A reload that drops r2 and adds r3: r2's series stay.
        routes = ('routes = ( { name = "r1"; pool = "a"; match = { path_prefix = "/r1"; }; },\n'
                  '  { name = "r3"; pool = "a"; match = { path_prefix = "/r3"; }; } );\n')
        tmp = v.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(self.config(routes).replace("{tmp}", v.tmp))
        os.replace(tmp, v.config_path)
        self.ctl_ok("reload")
        self.send(main, "/r2", 2, 200)           # no route now: the listener's pool
        self.send(main, "/r3", 1, 200)
        self.send(main, "/r1", 1, 200)           # r1 stays on b (its configured pool is unchanged)
        s = self.scrape_sent()
        self.assert_requests(s, {
            ("a", "default", "a", "r1", "2xx"): 10,
            ("b", "default", "b", "r1", "2xx"): 3,
            ("b", "default", "b", "r2", "2xx"): 6,
            ("b", "", "", "r2", "5xx"): 3,
            ("fb", "default", "fb", "", "2xx"): 6,
            ("a", "default", "a", "r3", "2xx"): 1,
            ("", "", "", "", "4xx"): 2,
        })
        after = [self.series(s, "veer_requests_total"),
                 self.series(s, "veer_request_duration_seconds_count")]
        for old, new in zip(before, after):
            for k, n in old.items():
                self.assertIn(k, new, "a series went away")
                self.assertGreaterEqual(new[k], n, "series %r went down" % (k,))
        v.stop()


    def test_no_series_goes_down_between_scrapes_under_load(self):
        # Scrapes racing requests on a route, on none, and veer's own answers
        # on a route: each series read must be at least what the one before read.
        self.b = {n: self.backend(n, named(n)) for n in ("a", "b", "fb")}
        self.v = v = self.veer(self.config(self.ROUTES))
        self.http = admin_http_port(v)
        self.ctl_ok("route", "maintenance", "r2", "on")
        stop, errors = threading.Event(), []

        def loop(path, status):
            c = self.client(v.ports[0])
            while not stop.is_set():
                r = c.request("GET", path, headers={"Host": "test"})
                if r is None or r.status != status:
                    errors.append((path, r and r.status))
                    return
        threads = [threading.Thread(target=loop, args=a, daemon=True)
                   for a in (("/r1", 200), ("/other", 200), ("/r2", 503))]
        for t in threads:
            t.start()
        prev, scrapes = {}, 0
        deadline = time.monotonic() + DEADLINE
        while scrapes < 30 and time.monotonic() < deadline:
            s = scrape(self.http)
            cur = {}
            for name in ("veer_requests_total", "veer_request_duration_seconds_count",
                         "veer_request_duration_seconds_bucket"):
                cur.update({(name,) + k: n for k, n in self.series(s, name).items()})
            for k, n in prev.items():
                self.assertGreaterEqual(cur.get(k, -1), n, "series %r went down" % (k,))
            prev, scrapes = cur, scrapes + 1
        stop.set()
        for t in threads:
            t.join(DEADLINE)
        self.assertEqual(errors, [])
        self.assertEqual(scrapes, 30)
        routes = {dict(k[1:])["route"] for k, n in prev.items()
                  if k[0] == "veer_requests_total" and n}
        self.assertEqual(routes, {"r1", "r2", ""})
        v.stop()

if __name__ == "__main__":
    unittest.main()
