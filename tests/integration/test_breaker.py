"""Passive health: the circuit breaker and retries, with a backend killed under
load (issue 5, "Kill a backend under load"; ARCHITECTURE.md `retries` and
`breaker`).

A KillableBackend dies between two responses, as a process killed while it
is not writing: its listening socket closes (new connects are refused) and
its connections are reset; a request it had read but not answered gets no
answer. It never truncates a response it started, which no proxy could hide
from a client. It can come back on the same port.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_breaker
"""

import re
import socket
import struct
import threading
import time
import unittest

from helpers import (ReservedPort, StrictLoad, admin_http_port, audit_records, http_get, quick_config,
                     status_doc)
from veertest import DEADLINE, Backend, VeerTestCase, close_listener, wait_for

COOLDOWN_MS = 1000
FAILURES = 3
HALF_OPEN_OK = 2


def breaker_text(failures=FAILURES, cooldown_ms=COOLDOWN_MS, max_ejection_percent=50):
    return ("retries = { count = 2; base_ms = 1; cap_ms = 20; budget_percent = 20; }; "
            "breaker = { failures = %d; window_ms = 10000; cooldown_ms = %d; "
            "half_open_successes = %d; max_ejection_percent = %d; };"
            % (failures, cooldown_ms, HALF_OPEN_OK, max_ejection_percent))


class KillableBackend:
    """A veertest.Backend that can be killed and brought back on its port."""

    def __init__(self, name):
        self.name = name
        self.gate = threading.Lock()  # held while a response is written, and by kill()
        self.dead = False
        self.served = 0
        # The port stays ours while the backend is dead: a bound, never
        # listening socket (SO_REUSEADDR, as Backend's listener has) keeps a
        # parallel suite from being given it between kill() and revive(),
        # and connects to it are refused meanwhile.
        self.reserved = ReservedPort()
        self.port = self.reserved.port
        self.b = Backend(name, self._handle, port=self.port)
        self.address = self.b.address

    def _handle(self, conn, req):
        body = (self.name + "\n").encode()
        with self.gate:
            if self.dead:
                return False
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                         % (len(body), self.name.encode(), body))
            self.served += 1
        return True

    def kill(self):
        """Refuse connects and reset every connection from now on; returns the
        monotonic time of death."""
        with self.gate:
            self.dead = True
            b = self.b
            b.closed = True
            close_listener(b.sock)
            with b.lock:
                for c in b.conns:
                    try:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        c.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            return time.monotonic()

    def revive(self):
        """Listen on the same port again; returns the monotonic time."""
        with self.gate:
            self.b = Backend(self.name, self._handle, port=self.port)
            self.dead = False
            return time.monotonic()

    def close(self):
        with self.gate:
            self.dead = True
            self.b.close()
            self.reserved.close()


class BreakerTest(VeerTestCase):
    def kb(self, name):
        b = KillableBackend(name)
        self._cleanup.append(b.close)
        return b

    def start(self, backends, **kw):
        cfg = quick_config([(b.name, b.address, 100) for b in backends],
                           extra_top='admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
                                     'audit_log = "{tmp}/audit.log";\n',
                           extra_pool=breaker_text(**kw))
        self.v = self.veer(cfg)
        self.sock = self.v.tmp + "/admin.sock"
        self.audit = self.v.tmp + "/audit.log"
        return self.v

    def retries(self):
        status, _, body = http_get(admin_http_port(self.v), "/metrics")
        self.assertEqual(status, 200)
        return int(re.search(rb"^veer_retries_total (\d+)$", body, re.M).group(1))

    def circuits(self):
        """{backend: circuit} from the admin HTTP /status document."""
        pool = [p for p in status_doc(admin_http_port(self.v))["pools"] if p["name"] == "api"][0]
        return {b["name"]: b["circuit"] for b in pool["backends"]}

    def wait_circuit(self, name, state, timeout=DEADLINE):
        wait_for(lambda: self.circuits()[name] == state, timeout=timeout,
                 what="circuit of %s to be %s" % (name, state))

    def transitions(self, name):
        """(from, to) of the breaker's audit records for api/NAME, in order."""
        _, recs = audit_records(self.audit)
        return [(r["before"]["circuit"], r["after"]["circuit"]) for r in recs
                if r["actor"] == "breaker" and r["command"] == "breaker api/%s" % name]

    def test_kill_under_load_no_client_errors_breaker_opens_and_closes(self):
        bs = [self.kb("a"), self.kb("b"), self.kb("c")]
        victim = bs[2]
        v = self.start(bs)
        load = StrictLoad(v.port, n=8)
        self._cleanup.append(load.stop)
        load.wait_count(300)
        self.assertGreater(victim.served, 0)

        victim.kill()
        # The breaker opens on the connect errors and resets, within the deadline.
        self.wait_circuit("c", "open")
        # The cooldown passes, the trial requests fail (still dead): open again.
        wait_for(lambda: ("half_open", "open") in self.transitions("c"),
                 what="a failed half-open trial to reopen the circuit of c")
        served_dead = victim.served

        t_back = victim.revive()
        self.wait_circuit("c", "closed")
        load.wait_each_sent_after(time.monotonic(), 5)
        load.stop()

        self.assertEqual(load.failures(), [], load.describe())
        self.assertGreater(self.retries(), 0, "the failed attempts were retried elsewhere")
        tr = self.transitions("c")
        self.assertEqual(tr[0], ("closed", "open"), tr)
        self.assertEqual(tr[-1], ("half_open", "closed"), tr)
        for prev, cur in zip(tr, tr[1:]):
            self.assertEqual(prev[1], cur[0], tr)  # a chain of real transitions
        self.assertIn(("open", "half_open"), tr)
        # a and b never tripped.
        self.assertEqual(self.transitions("a"), [])
        self.assertEqual(self.transitions("b"), [])
        # The revived backend serves again: its half-open trials, then its share.
        self.assertGreaterEqual(victim.served - served_dead, HALF_OPEN_OK)
        before = victim.served
        load2 = StrictLoad(v.port, n=4)
        self._cleanup.append(load2.stop)
        load2.wait_count(150)
        load2.stop()
        self.assertEqual(load2.failures(), [], load2.describe())
        self.assertGreater(victim.served - before, 150 // 3 // 3,
                           "c gets its share back once closed")
        print("\n  killed c under load: %d requests, 0 failed; circuit %s; back after %.2f s"
              % (load.count(), " -> ".join([tr[0][0]] + [t[1] for t in tr]),
                 time.monotonic() - t_back))
        v.stop()

    def test_no_more_than_max_ejection_percent(self):
        # Four backends, at most 50% ejected: with three dead, one stays in
        # rotation even though it fails (so the pool is never emptied by a
        # failure that looks like everyone's).
        bs = [self.kb("a"), self.kb("b"), self.kb("c"), self.kb("d")]
        v = self.start(bs, cooldown_ms=60000)
        load = StrictLoad(v.port, n=4, accept=(200, 502))
        self._cleanup.append(load.stop)
        load.wait_count(100)
        for b in bs[1:]:
            b.kill()
        wait_for(lambda: sum(1 for c in self.circuits().values() if c == "open") == 2,
                 what="two circuits open")
        t = time.monotonic()
        # The third dead one keeps failing and keeps being reported, yet is not ejected.
        load.wait_each_sent_after(t, 20)
        load.stop()
        circ = self.circuits()
        self.assertEqual(sorted(circ.values()), ["closed", "closed", "open", "open"], circ)
        self.assertEqual(circ["a"], "closed")
        v.wait_log(r"backend api/\w failing .* not ejected: max_ejection_percent 50 of 4 ready",
                   what="the refusal to eject logged")
        v.stop()


if __name__ == "__main__":
    unittest.main()
