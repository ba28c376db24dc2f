"""Basic proxying: requests reach backends and answers come back, split by weight."""

import unittest

from veertest import VeerTestCase, pool_config, require_ipv6


class BasicTest(VeerTestCase):
    def test_get_is_proxied_with_forwarding_headers(self):
        b = self.backend("blue-1")
        v = self.veer(pool_config([("blue-1", b.address, 100)]))
        c = self.client(v.port)
        r = c.request("GET", "/hello?x=1", headers={"X-Forwarded-For": "10.0.0.1"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"blue-1\n")
        self.assertEqual(r.header("X-Backend"), "blue-1")
        self.assertEqual(r.header("Via"), "1.1 veer")
        req = b.requests[-1]
        self.assertEqual(req.method, "GET")
        self.assertEqual(req.target, "/hello?x=1")
        self.assertEqual(req.header("Host"), "test")
        self.assertEqual(req.header("X-Forwarded-For"), "10.0.0.1, 127.0.0.1")
        self.assertEqual(req.header("X-Forwarded-Proto"), "http")
        self.assertEqual(req.header("Via"), "1.1 veer")
        v.stop()

    def test_ipv6_listener_and_backend_on_loopback(self):
        # Listener on [::1], backend on [::1]: the log names the address in
        # brackets, and X-Forwarded-For carries the client's v6 address bare.
        require_ipv6(self)
        b = self.backend("v6-1", host="::1")
        cfg = pool_config([("v6-1", b.address, 100)]).replace('"127.0.0.1:0"', '"[::1]:0"')
        v = self.veer(cfg)
        line = v.wait_log(r"listening on ")
        self.assertIn("listening on [::1]:%d " % v.port, line)
        c = self.client(v.port, host="::1")
        for i in range(3):  # keep-alive on both sides over v6
            r = c.request("GET", "/six/%d" % i, headers={"X-Forwarded-For": "2001:db8::7"})
            self.assertEqual((r.status, r.body), (200, b"v6-1\n"))
        self.assertEqual([q.target for q in b.requests], ["/six/0", "/six/1", "/six/2"])
        for q in b.requests:
            self.assertEqual(q.header("X-Forwarded-For"), "2001:db8::7, ::1")
        self.assertEqual(b.connections, 1)
        v.stop()

    def test_weights_split_traffic_exactly_per_cycle(self):
        a = self.backend("a")
        b = self.backend("b")
        v = self.veer(pool_config([("a", a.address, 3), ("b", b.address, 1)]), workers=1)
        c = self.client(v.port)
        names = [c.request().header("X-Backend") for _ in range(40)]
        self.assertEqual(names.count("a"), 30)
        self.assertEqual(names.count("b"), 10)
        v.stop()


if __name__ == "__main__":
    unittest.main()
