"""Header handling: hop-by-hop fields removed both ways, forwarding headers
(X-Forwarded-For, X-Forwarded-Proto, Via), request targets in absolute and
asterisk form."""

import unittest

from helpers import json_error, quick_config
from veertest import VeerTestCase

HOP_BY_HOP = ("Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade")


def ok_handler(conn, req):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return True


class HeaderTest(VeerTestCase):
    def start(self, handler=ok_handler):
        b = self.backend("b", handler)
        v = self.veer(quick_config([("b", b.address)]))
        return b, v

    def test_hop_by_hop_request_headers_are_removed(self):
        b, v = self.start()
        c = self.client(v.port)
        c.send(b"GET /h HTTP/1.1\r\n"
               b"Host: t\r\n"
               b"X-Early: listed by the second Connection field\r\n"
               b"Accept: */*\r\n"
               b"Connection: X-Foo, keep-alive\r\n"
               b"X-Dup: first\r\n"
               b"X-Foo: private to this hop\r\n"
               b"Keep-Alive: timeout=5\r\n"
               b"Proxy-Connection: keep-alive\r\n"
               b"TE: trailers\r\n"
               b"Trailer: X-Checksum\r\n"
               b"Upgrade: h2c\r\n"
               b"X-Dup: second\r\n"
               b"X-Keep: yes\r\n"
               b"connection: x-early\r\n"
               b"\r\n")
        r = c.response()
        self.assertEqual((r.status, r.body), (200, b"ok"))
        req = b.requests[-1]
        for name in HOP_BY_HOP + ("X-Foo", "X-Early"):
            self.assertEqual(req.header_all(name), [], "%s was forwarded" % name)
        self.assertEqual(req.header("Host"), "t")
        self.assertEqual(req.header("Accept"), "*/*")
        self.assertEqual(req.header("X-Keep"), "yes")
        self.assertEqual(req.header_all("X-Dup"), ["first", "second"])
        # The end-to-end fields keep their relative order.
        names = [k.lower() for k, _ in req.headers]
        ends = [n for n in names if n in ("host", "accept", "x-dup", "x-keep")]
        self.assertEqual(ends, ["host", "accept", "x-dup", "x-dup", "x-keep"])
        # keep-alive in Connection was honoured: the connection stays usable.
        self.assertEqual(c.request("GET", "/again").status, 200)
        c.close()
        v.stop()

    def test_hop_by_hop_response_headers_are_removed(self):
        def handler(conn, req):
            conn.sendall(b"HTTP/1.1 200 OK\r\n"
                         b"Connection: X-Bar\r\n"
                         b"X-Bar: private to the backend hop\r\n"
                         b"Keep-Alive: timeout=5, max=100\r\n"
                         b"X-End: kept\r\n"
                         b"Set-Cookie: a=1\r\n"
                         b"Set-Cookie: b=2\r\n"
                         b"Content-Length: 2\r\n\r\nok")
            return True
        b, v = self.start(handler)
        c = self.client(v.port)
        r = c.request("GET", "/")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assertEqual(r.header_all("X-Bar"), [])
        self.assertEqual(r.header_all("Keep-Alive"), [])
        for value in r.header_all("Connection"):
            self.assertNotIn("x-bar", value.lower())
        self.assertEqual(r.header("X-End"), "kept")
        self.assertEqual(r.header_all("Set-Cookie"), ["a=1", "b=2"])
        c.close()
        v.stop()

    def test_connection_naming_a_framing_header_is_rejected(self):
        b, v = self.start()
        for token in ("content-length", "Transfer-Encoding", "host"):
            with self.subTest(token):
                c = self.client(v.port)
                c.send(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: %s\r\n"
                       b"Content-Length: 2\r\n\r\nhi" % token.encode())
                json_error(self, c.response(), 400)
                self.assertTrue(c.is_closed())
                c.close()
        self.assertEqual(b.requests, [])
        self.assertEqual(b.connections, 0)
        v.stop()

    def test_x_forwarded_for_is_combined_and_extended(self):
        b, v = self.start()
        c = self.client(v.port)
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n"
               b"X-Forwarded-For: 203.0.113.1\r\n"
               b"X-Other: between\r\n"
               b"X-Forwarded-For: 198.51.100.2, 192.0.2.3\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        req = b.requests[-1]
        self.assertEqual(req.header_all("X-Forwarded-For"),
                         ["203.0.113.1, 198.51.100.2, 192.0.2.3, 127.0.0.1"])
        self.assertEqual(req.header("X-Other"), "between")
        # Without one, veer starts the list.
        self.assertEqual(c.request("GET", "/").status, 200)
        self.assertEqual(b.requests[-1].header_all("X-Forwarded-For"), ["127.0.0.1"])
        c.close()
        v.stop()

    def test_x_forwarded_proto_replaces_client_value(self):
        b, v = self.start()
        c = self.client(v.port)
        r = c.request("GET", "/", headers={"X-Forwarded-Proto": "https"})
        self.assertEqual(r.status, 200)
        self.assertEqual(b.requests[-1].header_all("X-Forwarded-Proto"), ["http"])
        c.close()
        v.stop()

    def test_via_is_appended_both_ways(self):
        def handler(conn, req):
            conn.sendall(b"HTTP/1.1 200 OK\r\nVia: 1.1 origin-cache\r\nContent-Length: 2\r\n"
                         b"\r\nok")
            return True
        b, v = self.start(handler)
        c = self.client(v.port)
        r = c.request("GET", "/", headers={"Via": "1.0 fred, 1.1 p.example.net"})
        self.assertEqual(r.header_all("Via"), ["1.1 origin-cache, 1.1 veer"])
        self.assertEqual(b.requests[-1].header_all("Via"),
                         ["1.0 fred, 1.1 p.example.net, 1.1 veer"])
        c.close()
        # An HTTP/1.0 request was received as 1.0.
        c = self.client(v.port)
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        self.assertEqual(b.requests[-1].header_all("Via"), ["1.0 veer"])
        c.close()
        v.stop()

    def test_absolute_form_target_sets_path_and_host(self):
        b, v = self.start()
        c = self.client(v.port)
        c.send(b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        req = b.requests[-1]
        self.assertEqual(req.start, b"GET /p?q HTTP/1.1")
        self.assertEqual(req.header_all("Host"), ["example.com:8080"])
        # An empty path becomes "/".
        c.send(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        req = b.requests[-1]
        self.assertEqual(req.start, b"GET / HTTP/1.1")
        self.assertEqual(req.header_all("Host"), ["example.com"])
        c.close()
        v.stop()

    def test_asterisk_form_options_is_forwarded(self):
        b, v = self.start()
        c = self.client(v.port)
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.response()
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assertEqual(b.requests[-1].start, b"OPTIONS * HTTP/1.1")
        # Asterisk form is for OPTIONS only.
        c.send(b"GET * HTTP/1.1\r\nHost: t\r\n\r\n")
        json_error(self, c.response(), 400)
        self.assertEqual(len(b.requests), 1)
        c.close()
        v.stop()


if __name__ == "__main__":
    unittest.main()
