"""Stopping veer: SIGTERM lets in-flight requests finish and refuses new
connections; SIGINT on an idle veer exits at once."""

import signal
import threading
import time
import unittest

from helpers import accepting, quick_config, refused
from veertest import DEADLINE, VeerTestCase, wait_for


class LifecycleTest(VeerTestCase):
    def test_sigterm_finishes_inflight_request_and_refuses_new_connections(self):
        gate = threading.Event()
        self._cleanup.append(gate.set)

        def handler(conn, req):
            # A slow backend, held until the test has seen the listener go
            # rather than for a fixed time, so no timing can race.
            gate.wait(DEADLINE)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
            return True
        b = self.backend("b", handler)
        v = self.veer(quick_config([("b", b.address)]))
        self.assertTrue(accepting(v.port))
        c = self.client(v.port)
        result = {}

        def inflight():
            result["res"] = c.request("GET", "/slow")
        t = threading.Thread(target=inflight, daemon=True)
        t.start()
        wait_for(lambda: any(q.target == "/slow" for q in b.requests), what="request in flight")
        v.send_signal(signal.SIGTERM)
        v.wait_log(r"SIGTERM: graceful shutdown")
        wait_for(lambda: refused(v.port), what="new connections refused")
        self.assertIsNone(v.proc.poll(), "veer exited with a request in flight")
        gate.set()
        t.join(DEADLINE)
        r = result.get("res")
        self.assertIsNotNone(r, "in-flight request got no response")
        self.assertEqual((r.status, r.body), (200, b"done"))
        self.assertEqual(r.header("Connection"), "close")
        self.assertTrue(c.is_closed())
        c.close()
        # It exits by itself; stop() would send a second signal (an abort).
        self.assertEqual(v.proc.wait(DEADLINE), 0)
        self.assertEqual(v.stop(), 0)

    def test_sigint_on_idle_veer_exits_promptly(self):
        b = self.backend("b")
        v = self.veer(quick_config([("b", b.address)],
                                   extra_top="timeouts = { shutdown_ms = 30000; };\n"))
        c = self.client(v.port)
        self.assertEqual(c.request("GET", "/").status, 200)
        c.close()
        t0 = time.monotonic()
        self.assertEqual(v.stop(sig=signal.SIGINT, timeout=5), 0)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertTrue(refused(v.port))


if __name__ == "__main__":
    unittest.main()
