"""Many concurrent keep-alive clients: every request answered correctly, no
state leaking between transactions (more clients than any per-worker cache)."""

import threading
import unittest

from veertest import DEADLINE, Client, VeerTestCase, pool_config


class ConcurrentLoadTest(VeerTestCase):
    def test_200_concurrent_keepalive_clients_all_answered(self):
        a = self.backend("a")
        b = self.backend("b")
        v = self.veer(pool_config([("a", a.address, 1), ("b", b.address, 1)]), workers=2)
        port = v.port
        errors = []
        counts = {"a": 0, "b": 0}
        lock = threading.Lock()
        start = threading.Barrier(200)

        def run(i):
            try:
                c = Client(port)
                start.wait(DEADLINE)  # a client that cannot connect breaks it for all
                for k in range(10):
                    body = b"client %d request %d" % (i, k)
                    r = c.request("POST", "/echo/%d/%d" % (i, k), body=body)
                    if r is None or r.status != 200:
                        errors.append((i, k, r and r.status))
                        return
                    with lock:
                        counts[r.header("X-Backend")] += 1
                c.close()
            except Exception as e:  # a reset or a timeout is a failure too
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE * 2)
        self.assertEqual([i for i, t in enumerate(threads) if t.is_alive()], [],
                         "clients still running")
        self.assertEqual(errors, [])
        self.assertEqual(counts["a"] + counts["b"], 2000)
        # Both backends got the bodies they were sent, each exactly once.
        seen = sorted(r.body for r in a.requests + b.requests)
        self.assertEqual(seen, sorted(b"client %d request %d" % (i, k)
                                      for i in range(200) for k in range(10)))
        v.stop()


if __name__ == "__main__":
    unittest.main()
