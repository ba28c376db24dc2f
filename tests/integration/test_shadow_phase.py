"""The shadow phase of a rollout (issue 19): `rollout start ... shadow=T`
mirrors the pool's requests to the canary group for T before step 1 (after
the preflight, when there is one); the canary's answers are compared with
the primary's, and a diff rate over max-diff-rate (a difference, a timeout
or an error, of the mirrored requests) or a shadow p99 over max-p99 ends the
rollout before any traffic moved, audited. Otherwise step 1 begins.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl \\
     BACKEND_BIN=build/tests/backend/veer-backend python3 -m unittest -v test_shadow_phase
"""

import json
import os
import threading
import time

from helpers import audit_records, show_pool, status_doc
from test_mirror import MirrorCase, config, pool_text
from test_preflight import SMOKE
from veertest import DEADLINE, Client, wait_for


class Load:
    """GETs back to back on one keep-alive connection until stopped; every answer
    must be blue's (200 "x\\n"): the client never sees the shadow."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.answers = 0
        self.bad = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        c = Client(self.port)
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                r = c.request("GET", "/load/%d" % i)
                if r is None or (r.status, r.body) != (200, b"x\n"):
                    self.bad.append(r and (r.status, r.body))
                    return
                self.answers += 1
        finally:
            c.sock.close()

    def end(self):
        self.stop.set()
        self.thread.join(DEADLINE)
        return self.answers


class ShadowPhaseTest(MirrorCase):
    def start_pool(self, green_name="x", green_delay=None, lists=""):
        blue = self.proc_backend("x")
        if green_delay is None:
            green = self.proc_backend(green_name)
            address = green.address
        else:
            green = self.recorder("x", delay=green_delay)
            address = green.address
        cfg = lists + config([pool_text("api", [("blue-1", blue.address, "blue"),
                                                ("green-1", address, "green")])])
        self.start(cfg)
        self.load = Load(self.v.port)
        self._cleanup.append(self.load.end)
        return green

    def rollout(self, *args):
        return self.ctl("rollout", "start", "api", "canary=green", "steps=10,100", "interval=60s",
                        *args)

    def rollout_doc(self):
        return [p for p in status_doc(self.http)["pools"] if p["name"] == "api"][0]["rollout"]

    def shares(self):
        return {g["name"]: g["share"] for g in show_pool(self.sock)["groups"]}

    def test_an_identical_canary_passes_and_step_1_follows(self):
        self.start_pool(green_name="x")
        p = self.rollout("shadow=1s", "max-diff-rate=1%")
        self.assertEqual(p.returncode, 0, p.stdout)
        ok = self.ok_line(p.stdout)
        self.assertEqual((ok["state"], ok["shadow_ms"], ok["shadow_percent"]), ("shadow", 1000, 100))
        doc = self.rollout_doc()
        self.assertEqual(doc["state"], "shadow")
        self.assertEqual(doc["shadow"]["state"], "running")
        self.assertEqual(self.shares(), {"blue": 100, "green": 0})  # nothing moved yet
        wait_for(lambda: self.rollout_doc()["state"] == "running", what="step 1 after the phase")
        self.assertEqual(self.shares(), {"blue": 90, "green": 10})
        sh = self.rollout_doc()["shadow"]
        self.assertEqual(sh["state"], "passed", sh)
        t = self.totals()
        self.assertGreater(t["match"], 0)
        self.assertEqual((t["status_diff"], t["body_diff"], t["timeout"], t["error"]), (0, 0, 0, 0))
        # The phase is over: requests are no longer mirrored (the pool has no mirror of its own).
        before = self.totals()["mirrored"]
        n = self.load.answers
        wait_for(lambda: self.load.answers > n + 50, what="more load after the phase")
        self.assertEqual(self.totals()["mirrored"], before)
        self.assertEqual(self.load.end() > 0 and self.load.bad, [])

    def test_a_differing_canary_aborts_before_any_traffic_moved(self):
        self.start_pool(green_name="y")  # green answers "y\n": every pair differs
        gen = show_pool(self.sock)["generation"]
        p = self.rollout("shadow=700ms", "shadow-percent=50", "max-diff-rate=5%")
        self.assertEqual(p.returncode, 0, p.stdout)
        wait_for(lambda: self.rollout_doc()["state"] == "ended", what="the phase's verdict")
        doc = self.rollout_doc()
        self.assertIn("aborted in its shadow phase", doc["verdict"])
        self.assertIn("max-diff-rate 5.00%", doc["verdict"])
        self.assertIn("no traffic moved", doc["verdict"])
        self.assertEqual(doc["shadow"]["state"], "failed")
        self.assertEqual(self.shares(), {"blue": 100, "green": 0})
        # Two publishes (mirror on, mirror off), no share change in between.
        self.assertEqual(show_pool(self.sock)["generation"], gen + 2)
        t = self.totals()
        self.assertGreater(t["body_diff"], 0)
        self.assertEqual(t["match"], 0)
        _, recs = audit_records(os.path.join(self.v.tmp, "audit.log"))
        self.assertTrue(any("aborted in its shadow phase" in r.get("command", "") for r in recs),
                        recs[-3:])
        self.assertEqual(self.load.end() > 0 and self.load.bad, [])

    def test_a_slow_canary_aborts_on_its_shadow_p99(self):
        self.start_pool(green_delay=0.15)
        p = self.rollout("shadow=800ms", "max-p99=50ms", "max-diff-rate=100%")
        self.assertEqual(p.returncode, 0, p.stdout)
        wait_for(lambda: self.rollout_doc()["state"] == "ended", what="the phase's verdict")
        verdict = self.rollout_doc()["verdict"]
        self.assertIn("shadow p99", verdict)
        self.assertIn("max-p99 50 ms", verdict)
        self.assertEqual(self.shares(), {"blue": 100, "green": 0})
        self.assertEqual(self.load.end() > 0 and self.load.bad, [])

    def test_abort_during_the_phase_stops_the_mirror(self):
        self.start_pool(green_name="x")
        self.assertEqual(self.rollout("shadow=60s").returncode, 0)
        self.wait_totals("mirrored requests", mirrored=5)
        p = self.ctl("rollout", "abort", "api")
        self.assertEqual(p.returncode, 0, p.stdout)
        doc = self.rollout_doc()
        self.assertEqual(doc["state"], "ended")
        self.assertIn("aborted by operator in its shadow phase", doc["verdict"])
        self.assertEqual(doc["shadow"]["state"], "stopped")
        # Shadows begun before the abort finish (the primary never waits for them,
        # and they leave in batches: a few may be in flight), at the latest at the
        # mirror's timeout_ms (2000 by default, and up to 1/16 more); none begins after.
        n, ended_by = self.load.answers, time.monotonic() + 2.2
        wait_for(lambda: self.load.answers > n + 50 and time.monotonic() > ended_by,
                 what="more load after the abort, past the shadows' timeout")
        settled = self.totals()
        n = self.load.answers
        wait_for(lambda: self.load.answers > n + 50, what="more load after that")
        self.assertEqual(self.totals(), settled)
        self.assertEqual(self.shares(), {"blue": 100, "green": 0})
        # It ended: a second abort is refused.
        self.assertEqual(self.ctl("rollout", "abort", "api").returncode, 1)

    def test_a_failed_preflight_never_starts_the_phase(self):
        lists = SMOKE % 2000  # /v1/ping must answer "pong": veer-backend answers "x\n"
        self.start_pool(green_name="x", lists=lists)
        p = self.rollout("preflight=smoke", "shadow=1s")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("preflight smoke failed", p.stdout)
        doc = self.rollout_doc()
        self.assertEqual(doc["state"], "ended")
        n = self.load.answers
        wait_for(lambda: self.load.answers > n + 50, what="load after the refusal")
        self.assertEqual(self.totals()["mirrored"], 0)
        self.assertEqual(self.load.end() > 0 and self.load.bad, [])

    def ok_line(self, out):
        from helpers import parse_ok
        return parse_ok(out)


if __name__ == "__main__":
    import unittest
    unittest.main()
