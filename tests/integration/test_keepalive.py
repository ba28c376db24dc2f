"""Keep-alive on both sides: client connections carry many requests (also
pipelined), upstream connections are pooled and reused across clients, and a
pooled connection the backend closed is retried without the client noticing."""

import socket
import threading
import unittest

from helpers import quick_config
from veertest import VeerTestCase


def echo_handler(conn, req):
    """Answer with the method, target and body the backend received."""
    body = b"%s %s\n" % (req.method.encode(), req.target.encode()) + req.body
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return True


class ClientKeepAliveTest(VeerTestCase):
    def test_many_requests_share_one_client_connection(self):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        for i in range(50):
            r = c.request("GET", "/r/%d" % i)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"GET /r/%d\n" % i)
            self.assertNotEqual(r.header("Connection"), "close")
        self.assertEqual([q.target for q in b.requests], ["/r/%d" % i for i in range(50)])
        self.assertEqual(b.connections, 1)
        self.assertFalse(c.is_closed(timeout=0.05))
        c.close()
        v.stop()

    def test_upstream_connection_is_reused_across_clients(self):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)]), workers=1)
        for i in range(3):
            c = self.client(v.port)
            r = c.request("GET", "/client/%d" % i)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"GET /client/%d\n" % i)
            c.close()
        self.assertEqual([q.target for q in b.requests], ["/client/%d" % i for i in range(3)])
        self.assertEqual(b.connections, 1)
        v.stop()

    def test_pipelined_requests_are_answered_in_order(self):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        c.send(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
               b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"POST /4 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
               b"GET /5 HTTP/1.1\r\nHost: t\r\n\r\n")
        expected = [b"GET /1\n", b"POST /2\nhello", b"GET /3\n", b"POST /4\nabcdefg", b"GET /5\n"]
        for want in expected:
            r = c.response()
            self.assertIsNotNone(r)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, want)
        self.assertEqual([(q.method, q.target, q.body) for q in b.requests],
                         [("GET", "/1", b""), ("POST", "/2", b"hello"), ("GET", "/3", b""),
                          ("POST", "/4", b"abcdefg"), ("GET", "/5", b"")])
        self.assertFalse(c.is_closed(timeout=0.05))
        c.close()
        v.stop()

    def test_http10_without_keepalive_is_closed_after_response(self):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = c.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"GET /old\n")
        self.assertTrue(c.is_closed())
        self.assertEqual(b.requests[-1].target, "/old")
        v.stop()

    def test_http10_keepalive_stays_open_and_says_so(self):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        for i in range(3):
            r = c.request("GET", "/ka/%d" % i, headers={"Connection": "keep-alive"},
                          version="HTTP/1.0")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"GET /ka/%d\n" % i)
            self.assertEqual((r.header("Connection") or "").lower(), "keep-alive")
        self.assertFalse(c.is_closed(timeout=0.05))
        self.assertEqual([q.target for q in b.requests], ["/ka/0", "/ka/1", "/ka/2"])
        c.close()
        v.stop()

    def test_connection_close_from_client_closes_after_response(self):
        b = self.backend("b", echo_handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        r = c.request("GET", "/bye", headers={"Connection": "close"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"GET /bye\n")
        self.assertEqual(r.header("Connection"), "close")
        self.assertTrue(c.is_closed())
        self.assertEqual(b.requests[-1].target, "/bye")
        v.stop()


class StaleUpstreamTest(VeerTestCase):
    """Backends close idle keep-alive connections; veer must hide that from clients."""

    def check_all_succeed(self, b, v, method, n=10):
        c = self.client(v.port)
        for i in range(n):
            body = b"body-%d" % i if method == "POST" else None
            r = c.request(method, "/s/%d" % i, body=body)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.body, b"%s /s/%d\n%s" % (method.encode(), i, body or b""))
        # In order, each at least once (a retried request reaches the backend twice).
        self.assertEqual(list(dict.fromkeys(q.target for q in b.requests)),
                         ["/s/%d" % i for i in range(n)])
        c.close()

    def test_backend_closing_after_each_response_is_invisible_get(self):
        b = self.backend("b", lambda conn, req: echo_handler(conn, req) and False)
        v = self.veer(quick_config([("b", b.address)]), workers=1)
        self.check_all_succeed(b, v, "GET")
        v.stop()

    def test_backend_closing_after_each_response_is_invisible_post(self):
        b = self.backend("b", lambda conn, req: echo_handler(conn, req) and False)
        v = self.veer(quick_config([("b", b.address)]), workers=1)
        self.check_all_succeed(b, v, "POST")
        v.stop()

    def stale_on_reuse_handler(self):
        """Answer the first request of a connection; close on the second unanswered,
        as a backend whose idle timeout fires just as veer reuses the connection."""
        seen = {}
        lock = threading.Lock()

        def handler(conn, req):
            with lock:
                seen[conn] = seen.get(conn, 0) + 1
                first = seen[conn] == 1
            if not first:
                conn.shutdown(socket.SHUT_RDWR)
                return False
            return echo_handler(conn, req)
        return handler

    def test_pooled_connection_closed_on_reuse_is_retried_get(self):
        b = self.backend("b", self.stale_on_reuse_handler())
        v = self.veer(quick_config([("b", b.address)]), workers=1)
        self.check_all_succeed(b, v, "GET", n=5)
        # Every request after the first met a stale connection and was resent once.
        self.assertEqual(len(b.requests), 2 * 5 - 1)
        self.assertEqual(b.connections, 5)
        v.stop()

    def test_pooled_connection_closed_on_reuse_is_retried_post(self):
        b = self.backend("b", self.stale_on_reuse_handler())
        v = self.veer(quick_config([("b", b.address)]), workers=1)
        self.check_all_succeed(b, v, "POST", n=5)
        self.assertEqual(len(b.requests), 2 * 5 - 1)
        self.assertEqual(b.connections, 5)
        # The resent requests carried their whole body again.
        for q in b.requests:
            self.assertEqual(q.body, b"body-" + q.target.split("/")[-1].encode())
        v.stop()


if __name__ == "__main__":
    unittest.main()
