"""Request paths (issue 17, "Matching sees one canonical path"): veer forwards,
matches and logs a request by its canonical path (dot-segments removed,
slashes merged, escaped unreserved characters decoded, the query as it
came), refuses with 400 a path that has none (%2F, %5C, %00, a bad escape, a
climb above /) without the backend ever seeing it, and maintenance.allow
and the health endpoints match whole segments of that path."""

import json
import os
import unittest

from helpers import json_error, quick_config, parse_ok, veerctl
from veertest import VeerTestCase, wait_for


def echo_handler(conn, req):
    """Answer with the request line the backend received."""
    body = req.start
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return True


# (sent, forwarded): the target as the client sends it, the request line's target the backend gets
CANONICAL = [
    ("/a/./b/../c", "/a/c"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("//a///b//", "/a/b/"),
    ("/%7Euser/%41%62c", "/~user/Abc"),
    ("/%7e", "/~"),
    ("/a%20b/%2a", "/a%20b/%2A"),
    ("/a/%2e%2E/b", "/b"),
    ("/x/../y/./z?q=/../a&b=%2F%7E//", "/y/z?q=/../a&b=%2F%7E//"),
    ("/plain/path?x=1", "/plain/path?x=1"),
    ("/.well-known/x", "/.well-known/x"),
    ("/a?", "/a?"),
]

# Each gets 400 and closes; the backend never sees it.
REFUSED = [
    ("/a%2Fb", "encoded slash"),
    ("/a%2fb", "encoded slash"),
    ("/a%5Cb", "encoded backslash"),
    ("/a%5cb", "encoded backslash"),
    ("/a%00b", "encoded NUL"),
    ("/a%zz", "invalid percent escape"),
    ("/a%4", "invalid percent escape"),
    ("/a%", "invalid percent escape"),
    ("/..", "climbs above"),
    ("/a/../../b", "climbs above"),
    ("/%2e%2e/etc/passwd", "climbs above"),
    ("/a/%2E%2E/%2e%2e/b", "climbs above"),
]


class PathTest(VeerTestCase):
    def start(self, extra_top=""):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)], extra_top=extra_top))
        return b, v

    def test_canonical_path_is_forwarded_with_the_query_unchanged(self):
        b, v = self.start()
        c = self.client(v.port)
        for sent, want in CANONICAL:
            with self.subTest(target=sent):
                r = c.request("GET", sent)
                self.assertEqual(r.status, 200)
                self.assertEqual(b.requests[-1].start, b"GET %s HTTP/1.1" % want.encode())
        c.close()
        v.stop()

    def test_absolute_form_path_is_canonicalized_too(self):
        b, v = self.start()
        c = self.client(v.port)
        c.send(b"GET http://example.com/a//./b/%7e/../c?q=%2F HTTP/1.1\r\nHost: other\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        req = b.requests[-1]
        self.assertEqual(req.start, b"GET /a/b/c?q=%2F HTTP/1.1")
        self.assertEqual(req.header_all("Host"), ["example.com"])
        c.send(b"GET http://example.com/a%2Fb HTTP/1.1\r\nHost: other\r\n\r\n")
        json_error(self, c.response(), 400)
        self.assertTrue(c.is_closed())
        self.assertEqual(len(b.requests), 1)
        v.stop()

    def test_asterisk_form_is_left_alone(self):
        b, v = self.start()
        c = self.client(v.port)
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        self.assertEqual(b.requests[-1].start, b"OPTIONS * HTTP/1.1")
        c.close()
        v.stop()

    def test_refused_paths_get_400_and_never_reach_the_backend(self):
        b, v = self.start()
        for sent, why in REFUSED:
            with self.subTest(target=sent):
                c = self.client(v.port)
                # A good request first on the same connection: the refusal ends it.
                self.assertEqual(c.request("GET", "/before").status, 200)
                r = c.request("GET", sent)
                doc = json_error(self, r, 400)
                self.assertIn(why, doc["detail"])
                self.assertEqual(r.header("Connection"), "close")
                self.assertTrue(c.is_closed(), "connection left open after the refusal")
                c.close()
        targets = [r.start for r in b.requests]
        self.assertEqual(targets, [b"GET /before HTTP/1.1"] * len(REFUSED))
        v.stop()

    def test_access_log_records_the_canonical_path(self):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)],
                                   extra_top='access_log = "{tmp}/access.log";\n'))
        c = self.client(v.port)
        self.assertEqual(c.request("GET", "/logged/./x//y/%7Ez?q=1").status, 200)
        c.close()
        path = os.path.join(v.tmp, "access.log")

        def logged():
            if not os.path.exists(path):
                return None
            with open(path) as f:
                lines = [json.loads(l) for l in f if l.strip()]
            return [l for l in lines if l.get("path", "").startswith("/logged")]
        entries = wait_for(logged, what="access log line")
        self.assertEqual(entries[0]["path"], "/logged/x/y/~z")
        v.stop()

    def test_maintenance_allow_matches_whole_segments(self):
        # (An "admin" in the text: the harness adds no admin socket then.)
        b, v = self.start('admin = { socket = "{tmp}/admin.sock"; };\n'
                          'maintenance = { allow = ( "/admin" ); };\n')
        parse_ok(veerctl(v.admin_socket, "maintenance", "on", "api").stdout)
        c = self.client(v.port)
        for path, status in (("/admin", 200), ("/admin/x", 200), ("/admin/", 200),
                             ("/x/../admin/y", 200), ("//admin//z", 200),
                             ("/administrator", 503), ("/adminx/y", 503), ("/api", 503),
                             ("/admin/../administrator", 503)):
            with self.subTest(path=path):
                r = c.request("GET", path)
                self.assertEqual(r.status, status, r.body[:200])
        forwarded = [r.start for r in b.requests]
        self.assertEqual(forwarded, [b"GET /admin HTTP/1.1", b"GET /admin/x HTTP/1.1",
                                     b"GET /admin/ HTTP/1.1", b"GET /admin/y HTTP/1.1",
                                     b"GET /admin/z HTTP/1.1"])
        c.close()
        v.stop()

    def test_health_endpoints_answer_a_non_canonical_spelling(self):
        b, v = self.start()
        parse_ok(veerctl(v.admin_socket, "maintenance", "on", "api").stdout)
        c = self.client(v.port)
        for path in ("/api//health/./liveness", "/api/x/../health/%6civeness",
                     "/%61pi/health/liveness"):
            with self.subTest(path=path):
                r = c.request("GET", path)
                self.assertEqual(r.status, 200, r.body[:200])
                self.assertEqual(json.loads(r.body), {"status": "alive"})
        # Not under the prefix on a segment boundary: proxied (here: maintenance).
        self.assertEqual(c.request("GET", "/api/healthx/liveness").status, 503)
        self.assertEqual(b.requests, [])
        c.close()
        v.stop()

    def test_non_canonical_configured_prefixes_are_refused_at_load(self):
        b = self.backend("b", echo_handler)
        for key, bad in (("maintenance = { allow = ( \"/ok\", \"%s\" ); };", "/a//b"),
                         ("maintenance = { allow = ( \"/ok\", \"%s\" ); };", "/a/./b"),
                         ("health_endpoints = { prefix = \"%s\"; };", "/ops/../x"),
                         ("health_endpoints = { prefix = \"%s\"; };", "/%7Eops")):
            with self.subTest(bad=bad):
                v = self.veer(quick_config([("b", b.address)], extra_top=(key % bad) + "\n"),
                              check_ready=False)
                v.proc.wait(timeout=30)
                self.assertNotEqual(v.proc.returncode, 0)
                wait_for(lambda: any("is not canonical" in l and bad in l for l in v.log()),
                         what="the refusal in veer's log")
                line = [l for l in v.log() if "is not canonical" in l][0]
                self.assertRegex(line, r"veer\.conf:\d+: ")


if __name__ == "__main__":
    unittest.main()
