"""The upgrade handoff (issue 15 item 4): one process owns the state file and
the audit chain at a time. The old process freezes its control plane and
flushes the state before the new binary starts; the new one takes decisions
and serves the admin socket only once the old one said GO. Admin changes in
between are answered `ERR upgrading, retry` or wait in the socket's queue;
nothing acknowledged is lost, the chain never forks, rollout steps are taken
once, and an upgrade whose new binary never gets ready leaves the old
process serving and taking changes again.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest
from unittest import mock

import test_lifecycle
import veertest
from helpers import (AdminConn, pool_shares, audit_records, become_subreaper, parse_ok, pid_lines, show_pool,
                     veerctl)
from test_lifecycle import GateBackend, LifecycleTestCase, backend_line, config_text
from veertest import DEADLINE, Client, wait_for

UPGRADING = "ERR upgrading, retry\n\n"
HANDED_OVER_WARNING = "this process has handed"


def setUpModule():
    # As in test_lifecycle: inherit the orphaned new process to read its exit status.
    test_lifecycle.SUBREAPER = become_subreaper()


def tearDownModule():
    become_subreaper(False)


def one_command(sock, line):
    """One command on a fresh admin connection (as veerctl does): the reply
    text, or None when the connection closed without one."""
    try:
        c = AdminConn(sock, timeout=DEADLINE * 2)
    except OSError:
        return None
    try:
        c.send(line.encode() + b"\n")
        c.half_close()
        r = c.reply()
        return r.decode() if r is not None else None
    except OSError:
        return None
    finally:
        c.close()


class WeightLoop:
    """set weight api/BACKEND V back to back on a thread, V = 1, 2, ...,
    1000, 1, 2, ... until stopped. persistent=False: a fresh connection per
    command; True: one connection, reconnected when the server closes it (a
    command sent then has no reply: it is recorded as None). Every (value,
    reply, monotonic time of the reply) is kept, in order."""

    def __init__(self, sock, backend, persistent):
        self.sock, self.backend, self.persistent = sock, backend, persistent
        self.results = []
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn = None
        k = 0
        while not self.stop_ev.is_set():
            v = k % 1000 + 1
            k += 1
            line = "set weight api/%s %d" % (self.backend, v)
            if not self.persistent:
                reply = one_command(self.sock, line)
            else:
                reply = None
                try:
                    if conn is None:
                        conn = AdminConn(self.sock, timeout=DEADLINE * 2)
                    conn.send(line.encode() + b"\n")
                    r = conn.reply()
                    reply = r.decode() if r is not None else None
                except OSError:
                    reply = None
                if reply is None and conn is not None:
                    conn.close()
                    conn = None
            self.results.append((v, reply, time.monotonic()))
        if conn is not None:
            conn.close()

    def oks(self):
        """The acknowledged values, in order."""
        return [v for v, r, _ in list(self.results) if r is not None and r.startswith("OK ")]

    def oks_after(self, t):
        return [v for v, r, at in list(self.results) if r is not None and r.startswith("OK ")
                and at > t]

    def stop(self):
        self.stop_ev.set()
        self.thread.join(DEADLINE * 3)


class HandoffTest(LifecycleTestCase):
    def audit_path(self, v):
        return os.path.join(v.tmp, "audit.log")

    def assert_audit_verifies(self, sock):
        p = veerctl(sock, "audit", "verify")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\AOK records=\d+")

    def assert_old_wrote_nothing_after_freeze(self, v, old_pid):
        old = pid_lines(v, old_pid)
        self.assertFalse([l for l in old if HANDED_OVER_WARNING in l], "\n".join(old))

    def test_acknowledged_weights_survive_an_upgrade_under_load(self):
        blue, green = self.backend("blue-1"), self.backend("green-1")
        v = self.veer(config_text(
            [("api", [backend_line("blue-1", blue.address, 100, "blue"),
                      backend_line("green-1", green.address, 100, "green")],
              "shares = { blue = 50; green = 50; };")], workers=2))
        sock, old_pid = v.admin_socket, v.proc.pid
        ld = self.load(v.port, n=4)
        ld.wait_count(100)
        fresh = WeightLoop(sock, "blue-1", persistent=False)
        self._cleanup.append(fresh.stop)
        kept = WeightLoop(sock, "green-1", persistent=True)
        self._cleanup.append(kept.stop)
        wait_for(lambda: len(fresh.oks()) >= 20 and len(kept.oks()) >= 20,
                 what="changes acknowledged before the upgrade")

        p = veerctl(sock, "upgrade")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        new = self.successor(v, old_pid)
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        t_exit = time.monotonic()
        # Both loops go on with the new process.
        wait_for(lambda: len(fresh.oks_after(t_exit)) >= 10 and len(kept.oks_after(t_exit)) >= 10,
                 what="changes acknowledged by the new process")
        fresh.stop()
        kept.stop()
        ld.stop()
        self.assert_zero_failed(ld, minimum=100)

        records = audit_records(self.audit_path(v))[1]
        doc = show_pool(sock)
        weights = {b["name"]: b["weight"] for b in doc["backends"]}
        for loop in (fresh, kept):
            name = loop.backend
            acked = loop.oks()
            self.assertTrue(acked)
            for val, r, _ in loop.results:
                if r is None:
                    # Only a kept connection the old process closed: never for a fresh one.
                    self.assertTrue(loop.persistent, "no reply to set weight %s %d" % (name, val))
                    continue
                if not r.startswith("OK "):
                    self.assertEqual(r, UPGRADING, "set weight %s %d" % (name, val))
                else:
                    parse_ok(r)
            # Every acknowledged change is audited, once and in order; nothing else was applied.
            audited = [int(rec["command"].rsplit(" ", 1)[1]) for rec in records
                       if rec["command"].startswith("set weight api/%s " % name)
                       and rec["result"] == "OK"]
            self.assertEqual(audited, acked, name)
            # The last acknowledged value is the new process's.
            self.assertEqual(weights[name], acked[-1], name)
        self.assertGreaterEqual(len(fresh.oks_after(t_exit)) + len(kept.oks_after(t_exit)), 1)
        self.assert_audit_verifies(sock)
        self.assert_old_wrote_nothing_after_freeze(v, old_pid)
        old = pid_lines(v, old_pid)
        self.assertTrue(any("control plane frozen" in l for l in old), "\n".join(old))
        self.stop_successor(new)
        # The state file the new process left holds the last acknowledged weights.
        with open(os.path.join(v.tmp, "state")) as f:
            state = f.read()
        for loop in (fresh, kept):
            self.assertIn("backend %s weight %d " % (loop.backend, loop.oks()[-1]), state)
        v.stop()

    def test_rollout_steps_continue_once_across_an_upgrade(self):
        blue = self.gate_backend("blue-1")
        green = self.gate_backend("green-1")
        v = self.veer(config_text(
            [("api", [backend_line("blue-1", blue.address, 100, "blue"),
                      backend_line("green-1", green.address, 100, "green")],
              "shares = { blue = 100; green = 0; };")], workers=2))
        sock, old_pid = v.admin_socket, v.proc.pid
        ld = self.load(v.port, n=4)
        ld.wait_count(100)
        p = veerctl(sock, "rollout", "start", "api", "canary=green", "steps=20,40,60,80,100",
                    "interval=1s", "max-error-rate=50%", "max-p99=10000ms",
                    "min-requests=1000000")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        step_rx = re.compile(r"^rollout api step (\d+)/5: ")

        def steps():
            return [int(step_rx.match(r["command"]).group(1))
                    for r in audit_records(self.audit_path(v))[1]
                    if step_rx.match(r["command"])]
        wait_for(lambda: len(steps()) >= 2, what="the rollout's second step")
        # A request held at the old process keeps it alive well past a step
        # interval after it hands over: long enough to take a step of its own.
        slow = Client(v.port, timeout=DEADLINE * 3)
        self._cleanup.append(slow.close)
        slow.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: blue.held() or green.held(), what="the slow request at a backend")

        p = veerctl(sock, "upgrade")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        new = self.successor(v, old_pid)
        v.wait_log(r"\[%d\] info: upgrade: new binary pid %d is ready; handing over"
                   % (old_pid, new.pid))
        n_at_handover = len(steps())
        # Two more steps in the new process while the old one is still there.
        wait_for(lambda: len(steps()) >= min(n_at_handover + 2, 5), timeout=DEADLINE * 2,
                 what="two more steps after the handover")
        self.assertIsNone(v.proc.poll(), "the old process left before the test let it")
        blue.gate.set()
        green.gate.set()
        r = slow.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        wait_for(lambda: any(r["command"] == "rollout complete"
                             for r in audit_records(self.audit_path(v))[1]),
                 timeout=DEADLINE * 2, what="the rollout to complete")
        ld.stop()
        self.assert_zero_failed(ld, minimum=100)
        self.assertEqual(steps(), [1, 2, 3, 4, 5])
        records = audit_records(self.audit_path(v))[1]
        self.assertEqual(sum(1 for r in records if r["command"] == "rollout complete"), 1)
        self.assert_audit_verifies(sock)
        self.assert_old_wrote_nothing_after_freeze(v, old_pid)
        old = pid_lines(v, old_pid)
        frozen_at = next(i for i, l in enumerate(old) if "control plane frozen" in l)
        self.assertFalse([l for l in old[frozen_at:] if "rollout api step" in l],
                         "\n".join(old))
        self.stop_successor(new)
        v.stop()

    def test_rollout_rolls_back_in_the_new_process_after_an_upgrade(self):
        """A 1 s-step rollout under strict load, a binary upgrade between its
        steps, then the canary starts failing: the new process (not the old,
        frozen one) rolls back once, audited once, shares back where they
        were; only the canary's own 500s failed, and the chain verifies."""
        failing = threading.Event()

        def green_handler(conn, req):
            st = b"500 Internal Server Error" if failing.is_set() else b"200 OK"
            conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: 8\r\nX-Backend: green-1\r\n\r\n"
                         b"green-1\n" % st)
            return True
        blue, green = self.backend("blue-1"), self.backend("green-1", green_handler)
        v = self.veer(config_text(
            [("api", [backend_line("blue-1", blue.address, 100, "blue"),
                      backend_line("green-1", green.address, 100, "green")],
              "shares = { blue = 100; green = 0; };")], workers=2))
        sock, old_pid = v.admin_socket, v.proc.pid
        ld = self.load(v.port, n=4)
        ld.wait_count(100)
        p = veerctl(sock, "rollout", "start", "api", "canary=green", "steps=20,40,60,80,100",
                    "interval=1s", "max-error-rate=5%", "max-p99=10000ms", "min-requests=20")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        step_rx = re.compile(r"^rollout api step (\d+)/5: ")

        def records():
            return audit_records(self.audit_path(v))[1]

        def steps():
            return [int(step_rx.match(r["command"]).group(1)) for r in records()
                    if step_rx.match(r["command"])]
        wait_for(lambda: len(steps()) >= 1, what="the rollout's first step")
        p = veerctl(sock, "upgrade")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        new = self.successor(v, old_pid)
        v.wait_log(r"\[%d\] info: upgrade: new binary pid %d is ready; handing over"
                   % (old_pid, new.pid))
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        n_steps = len(steps())
        self.assertLess(n_steps, 5, "the rollout ended before the canary could fail")
        failing.set()
        rolled = re.compile(r"^rollout api rolled back: ")
        wait_for(lambda: [r for r in records() if rolled.match(r["command"])],
                 timeout=DEADLINE * 2, what="the automatic rollback")
        ld.stop()
        recs = records()
        backs = [r for r in recs if rolled.match(r["command"])]
        self.assertEqual(len(backs), 1, backs)
        self.assertEqual(backs[0]["actor"], "rollout")
        self.assertNotIn("operator", backs[0]["command"])
        self.assertEqual(sorted(set(steps())), steps(), "a step repeated")
        self.assertEqual(pool_shares(show_pool(sock)), {"blue": 100, "green": 0})
        bad = [f for f in ld.failures() if not (f.status == 500 and f.backend == "green-1")]
        self.assertEqual(bad, [], "failures other than the canary's own 500s")
        self.assertGreater(len(ld.all()), 100)
        self.assert_audit_verifies(sock)
        self.assert_old_wrote_nothing_after_freeze(v, old_pid)
        self.stop_successor(new)
        v.stop()

    def test_upgrade_to_a_binary_that_never_gets_ready_keeps_serving(self):
        bindir = tempfile.mkdtemp(prefix="veer-bin-")
        self._cleanup.append(lambda: shutil.rmtree(bindir, ignore_errors=True))
        exe = os.path.join(bindir, "veer")
        shutil.copy2(veertest.VEER_BIN, exe)
        a = self.backend("a")
        with mock.patch.object(veertest, "VEER_BIN", exe):
            v = self.veer(config_text([("api", [backend_line("a", a.address, 100)], "")],
                                      workers=2))
        sock, old_pid = v.admin_socket, v.proc.pid
        release = os.path.join(bindir, "release")
        # The "new binary": starts, never says READY, exits once the test lets it.
        script = exe + ".new"
        with open(script, "w") as f:
            f.write("#!/bin/sh\nwhile [ ! -e %s ]; do sleep 0.02; done\nexit 3\n" % release)
        os.chmod(script, stat.S_IRWXU)
        os.replace(script, exe)
        ld = self.load(v.port, n=4)
        ld.wait_count(100)
        conn = AdminConn(sock)
        self._cleanup.append(conn.close)
        self.assertTrue(conn.command("set weight api/a 40").startswith("OK "))

        p = veerctl(sock, "upgrade")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        v.wait_log(r"upgrade: started \S+ as pid \d+")
        # While the new binary starts: a change on an open connection is
        # refused without being applied; a query is answered.
        self.assertEqual(conn.command("set weight api/a 50"), UPGRADING)
        self.assertEqual(conn.command("shift api default=100"), UPGRADING)
        self.assertIn('"weight":40', conn.command("show pool api --json"))
        # A new connection waits in the socket's queue for whoever serves next.
        waiting = {}

        def late():
            waiting["reply"] = one_command(sock, "set weight api/a 60")
            waiting["at"] = time.monotonic()
        t = threading.Thread(target=late, daemon=True)
        t.start()
        wait_for(lambda: ld.count() >= 200, what="requests served while frozen")
        t_release = time.monotonic()
        with open(release, "w"):
            pass
        v.wait_log(r"upgrade failed: the new binary exited before it was ready")
        v.wait_log(r"upgrade abandoned")
        t.join(DEADLINE)
        self.assertFalse(t.is_alive(), "the waiting admin command was never answered")
        self.assertTrue(waiting["reply"].startswith("OK "), waiting["reply"])
        self.assertGreater(waiting["at"], t_release)
        self.assertTrue(conn.command("set weight api/a 70").startswith("OK "))
        self.assertEqual({b["name"]: b["weight"] for b in show_pool(sock)["backends"]},
                         {"a": 70})
        ld.wait_count(ld.count() + 50)
        ld.stop()
        self.assert_zero_failed(ld, minimum=100)
        records = audit_records(self.audit_path(v))[1]
        self.assertEqual([r["command"] for r in records if r["command"].startswith("set weight")],
                         ["set weight api/a 40", "set weight api/a 60", "set weight api/a 70"])
        self.assertEqual([r["actor"] for r in records if r["command"] == "upgrade abandoned"],
                         ["upgrade"])
        self.assert_audit_verifies(sock)
        self.assertEqual(v.proc.pid, old_pid)
        conn.close()
        v.stop()


if __name__ == "__main__":
    unittest.main()
