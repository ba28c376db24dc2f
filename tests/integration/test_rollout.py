"""Canary rollouts, the capacity guard, routing by request (sticky cohorts,
override header) and request hold (issue 9; README "Canary rollouts").

Every timing claim is measured in this process: a client's monotonic clock
for when a response arrived or a request was sent, a thread polling `show
pool --json` for when a publish became visible, and the kernel's receive
timestamps (SO_TIMESTAMPNS) at the backend for the order in which veer wrote
requests to it. Waits are conditions polled against deadlines; the only
fixed delays are the ones a scenario prescribes ("the backend is gone for
300 ms"), and those are checked to have really held traffic back.
"""

import math
import os
import re
import select
import shutil
import tempfile
import threading
import time
import unittest

from helpers import (AdminConn, RoutedLoad, SharePoller, StampBackend, StrictLoad, admin_config,
                     audit_records, health_text, parse_ok, pool_shares, pool_states,
                     rollout_status, show_pool, sticky_point, veerctl, warm_upstreams)
from veertest import DEADLINE, Client, VeerTestCase, wait_for

# How late a timer-driven answer (hold deadline, rollout step) may come on a
# busy 2-core machine under ASan. Timers must never fire early.
SLACK = float(os.environ.get("VEER_TEST_TIMER_SLACK", "1.0"))
# How early a rollout step may end: libevent (without EVENT_BASE_FLAG_PRECISE_TIMER)
# arms timers from CLOCK_MONOTONIC_COARSE, up to a kernel tick (4 ms at HZ=250)
# behind the CLOCK_MONOTONIC this process reads, so a 1 s step may end that much
# early; 10 ms leaves a margin. Request holds re-check the real clock and are
# held to "never early" exactly.
TICK = 0.010

BLUE_GREEN_0 = [("blue", 100), ("green", 0)]


def blue_green(blue, green, shares=BLUE_GREEN_0, extra_pool="", **kw):
    return admin_config([("blue-1", blue.address, 100, "blue"),
                         ("green-1", green.address, 100, "green")],
                        shares=list(shares), extra_pool=extra_pool, **kw)


def failing_handler(name, every):
    """A Backend handler answering 500 to every `every`-th request it gets
    (the first one included), 200 otherwise; X-Backend: name on both."""
    state = {"n": 0}
    lock = threading.Lock()

    def handle(conn, req):
        with lock:
            n = state["n"]
            state["n"] += 1
        body = (name + "\n").encode()
        status = b"500 Internal Server Error" if n % every == 0 else b"200 OK"
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                     % (status, len(body), name.encode(), body))
        return True
    return handle


def rollout_audit(path):
    """The audit records written by the rollout engine (actor "rollout")."""
    return [r for r in audit_records(path)[1] if r["actor"] == "rollout"]


class RolloutCase(VeerTestCase):
    def admin(self, v):
        c = AdminConn(v.admin_socket)
        self._cleanup.append(c.close)
        return c

    def poller(self, v, interval=0.005):
        p = SharePoller(v.admin_socket, "api", interval)
        self._cleanup.append(lambda: p.stop())
        return p

    def routed_load(self, v, n):
        load = RoutedLoad(v.port, n)
        self._cleanup.append(load.stop)
        load.wait_each_sent_after(time.monotonic(), 3)
        return load

    def stamp_backend(self, name, healthy=True):
        b = StampBackend(name, healthy=healthy)
        self._cleanup.append(b.close)
        return b

    def ok(self, v, *args):
        p = veerctl(v.admin_socket, *args)
        self.assertEqual(p.returncode, 0, "%s: %r %r" % (" ".join(args), p.stdout, p.stderr))
        return parse_ok(p.stdout)

    def refused(self, v, *args):
        p = veerctl(v.admin_socket, *args)
        self.assertEqual(p.returncode, 1, "%s: %r %r" % (" ".join(args), p.stdout, p.stderr))
        self.assertTrue(p.stdout.startswith("ERR "), p.stdout)
        return p.stdout

    def groups_of(self, v, rnd=0):
        """{user: X-Backend} for the 1,000 USERS (X-User-Id), each user's
        request sent on connection (index + rnd) % STICKY_CLIENTS of
        STICKY_CLIENTS connections running in parallel."""
        out = {}
        errors = []

        def run(k):
            c = Client(v.port)
            try:
                for i, u in enumerate(USERS):
                    if (i + rnd) % STICKY_CLIENTS != k:
                        continue
                    r = c.request("GET", "/sticky/%s" % u, headers={"X-User-Id": u})
                    if r is None or r.status != 200:
                        errors.append((u, r and r.status))
                        return
                    out[u] = r.header("X-Backend")
            except (OSError, ValueError) as e:
                errors.append(repr(e))
            finally:
                c.close()
        threads = [threading.Thread(target=run, args=(k,)) for k in range(STICKY_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE * 4)
        self.assertEqual(errors, [])
        self.assertEqual(len(out), len(USERS))
        return out


# --- 1, 2: analysis and rollback, a healthy canary -----------------------------------------


class RolloutAnalysisTest(RolloutCase):
    def test_fault_injection_canary_rolls_back_within_a_second(self):
        """green answers 500 to one request in five. With interval=10s the
        analysis must react on its sliding window as soon as min-requests=20
        canary requests are in it, not at the end of the step: the rollback
        is visible < 1 s after the first 500 reached a client."""
        blue = self.backend("blue-1")
        green = self.backend("green-1", failing_handler("green-1", every=5))
        # The analysis alone judges here: a worker that happens to see five of
        # green's 500s in a row would trip the breaker, which rolls back too
        # (test_canary_tripping_its_breaker_rolls_back), with another reason.
        v = self.veer(blue_green(blue, green, extra_pool="breaker = { failures = 1000; };"))
        audit = v.tmp + "/audit.log"
        load = self.routed_load(v, 8)
        poller = self.poller(v)
        poller.wait_first(lambda s: s == {"blue": 100, "green": 0}, what="the poller")
        adm = self.admin(v)

        reply, t_cmd, t_ok = adm.timed_command(
            "rollout start api canary=green steps=10,50,100 interval=10s min-requests=20")
        ok = parse_ok(reply)
        self.assertEqual((ok["step"], ok["share"]), ("1/3", 10), reply)
        # The first step became visible, then the rollback put green back to 0.
        step1 = poller.wait_first(lambda s: s == {"blue": 90, "green": 10}, after=t_cmd,
                                  what="green=10 visible")
        back = poller.wait_first(lambda s: s["green"] == 0, after=step1[0],
                                 timeout=DEADLINE + 10, what="the rollback (green share 0)")
        t_back_seen = back[1]
        fails = [r for r in load.all_records() if r.status == 500]
        self.assertTrue(fails, "no client saw a 500 from green")
        t_first_500 = min(r.done for r in fails)
        reaction = t_back_seen - t_first_500
        self.assertLess(reaction, 1.0,
                        "rollback visible %.3f s after the first 500 reached a client "
                        "(%d 500s seen by then)" % (
                            reaction, sum(1 for r in fails if r.done <= t_back_seen)))
        self.assertLess(t_back_seen - t_ok, 10.0, "not rolled back during the first step")
        self.assertEqual(back[3], {"blue": 100, "green": 0})

        line = v.wait_log(r"rollout api rolled back: ", what="the rollback log line")
        # Traffic sent after the rollback is visible goes to blue only.
        load.wait_each_sent_after(t_back_seen, 5)
        load.stop()
        recs = load.all_records()
        errors = [r for r in recs if r.error is not None]
        self.assertEqual(errors, [], "requests without a response (connection errors)")
        blue_bad = [r for r in recs if r.backend == "blue-1" and r.status != 200]
        self.assertEqual(blue_bad, [], "requests answered by the stable group failed")
        self.assertEqual({r.backend for r in recs if r.status != 200}, {"green-1"})
        late = [r for r in recs if r.sent > t_back_seen and r.backend != "blue-1"]
        self.assertEqual(late, [], "requests sent after the rollback not answered by blue")

        st = rollout_status(v.admin_socket)
        self.assertEqual((st["canary"], st["stable"], st["state"]), ("green", "blue", "ended"))
        self.assertEqual((st["step"], st["nsteps"]), (1, 3))
        self.assertTrue(st["verdict"].startswith("rolled back"), st["raw"])
        self.assertIn("error rate", st["verdict"])

        recs = rollout_audit(audit)
        cmds = [r["command"] for r in recs]
        self.assertEqual(len(recs), 2, cmds)
        self.assertEqual(cmds[0], "rollout api step 1/3: green=10 blue=90")
        m = re.match(r"rollout api rolled back: green error rate ([\d.]+)% over (\d+) requests "
                     r"> max-error-rate 5(\.0+)?%$", cmds[1])
        self.assertTrue(m, "rollback audit record without reason and figures: %r" % cmds[1])
        rate, n = float(m.group(1)), int(m.group(2))
        self.assertGreater(rate, 5.0)
        self.assertGreaterEqual(n, 20)
        # One in five failed: the judged window cannot show much else.
        self.assertTrue(10.0 <= rate <= 40.0, "rate %.2f%% for a 20%% fault" % rate)
        self.assertEqual(recs[1]["result"], "OK")
        self.assertEqual(recs[1]["generation"], recs[0]["generation"] + 1,
                         "the rollback is not exactly one publish after the step")
        self.assertIn(cmds[1], line, "log and audit disagree")
        v.stop()

    def test_canary_tripping_its_breaker_rolls_back(self):
        """green fails every request: its circuit breaker trips before the
        analysis has min-requests canary requests, and once ejected green takes
        no traffic, so its window would stay empty and the steps go on to 100%
        with the canary ejected. The trip itself rolls the rollout back."""
        blue = self.backend("blue-1")
        green = self.backend("green-1", failing_handler("green-1", every=1))
        v = self.veer(blue_green(blue, green))
        load = self.routed_load(v, 8)
        adm = self.admin(v)
        parse_ok(adm.command("rollout start api canary=green steps=10,50,100 interval=1s "
                             "min-requests=1000"))
        line = v.wait_log(r"rollout api rolled back: ", what="the rollback")
        load.stop()
        self.assertRegex(line, r"rolled back: green backend green-1 circuit breaker: "
                               r"\d+ consecutive failures")
        st = rollout_status(v.admin_socket)
        self.assertEqual((st["state"], st["step"]), ("ended", 1), st["raw"])
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        cmds = [r["command"] for r in rollout_audit(v.tmp + "/audit.log")]
        self.assertEqual(len(cmds), 2, cmds)
        self.assertEqual(cmds[0], "rollout api step 1/3: green=10 blue=90")
        self.assertTrue(cmds[1].startswith("rollout api rolled back: green backend green-1 "
                                           "circuit breaker: "), cmds)
        v.stop()

    def test_healthy_canary_completes_every_step(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = self.veer(blue_green(blue, green))
        audit = v.tmp + "/audit.log"
        load = self.routed_load(v, 4)
        poller = self.poller(v, 0.01)
        poller.wait_first(lambda s: s["green"] == 0, what="the poller")
        adm = self.admin(v)
        gen0 = show_pool(v.admin_socket)["generation"]

        reply, t_cmd, t_ok = adm.timed_command(
            "rollout start api canary=green steps=10,50,100 interval=1s")
        ok = parse_ok(reply)
        self.assertEqual((ok["step"], ok["share"]), ("1/3", 10), reply)
        self.assertEqual(ok["gen"], gen0 + 1)

        def ended():
            st = rollout_status(v.admin_socket)
            return (st, time.monotonic()) if st["state"] != "running" else None
        st, t_end = wait_for(ended, timeout=3 + DEADLINE, interval=0.02, what="the rollout to end")
        self.assertEqual(st["state"], "ended", st["raw"])
        self.assertTrue(st["verdict"].startswith("complete"), st["raw"])
        self.assertEqual((st["step"], st["nsteps"], st["share"]), (3, 3, 100), st["raw"])
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 0, "green": 100})

        # Each step lasted its interval: step k is not visible before (k-1) s,
        # the end not before 3 s (give or take a clock tick), nor much later.
        s50 = poller.first(lambda s: s == {"blue": 50, "green": 50}, after=t_cmd)
        s100 = poller.first(lambda s: s == {"blue": 0, "green": 100}, after=t_cmd)
        self.assertIsNotNone(s50, "share 50 never visible")
        self.assertIsNotNone(s100, "share 100 never visible")
        self.assertGreaterEqual(s50[1] - t_cmd, 1.0 - TICK)
        self.assertGreaterEqual(s100[1] - t_cmd, 2.0 - 2 * TICK)
        self.assertGreaterEqual(t_end - t_cmd, 3.0 - 3 * TICK)
        self.assertLess(s50[0] - t_ok, 1.0 + SLACK)
        self.assertLess(s100[0] - t_ok, 2.0 + 2 * SLACK)
        self.assertLess(t_end - t_ok, 3.0 + 3 * SLACK)

        load.wait_each_sent_after(s100[1], 3)
        load.stop()
        self.assertEqual(load.failures(), [], "requests failed during a healthy rollout")
        after = load.sent_between(s100[1])
        self.assertTrue(after and all(r.backend == "green-1" for r in after))
        self.assertGreater(len(green.requests), 0)

        recs = rollout_audit(audit)
        self.assertEqual([r["command"] for r in recs],
                         ["rollout api step 1/3: green=10 blue=90",
                          "rollout api step 2/3: green=50 blue=50",
                          "rollout api step 3/3: green=100 blue=0",
                          "rollout complete"])
        self.assertEqual([r["generation"] for r in recs[:3]], [gen0 + 1, gen0 + 2, gen0 + 3])
        self.assertEqual([r["after"]["shares"] for r in recs[:3]],
                         [{"green": 10, "blue": 90}, {"green": 50, "blue": 50},
                          {"green": 100, "blue": 0}])
        self.assertEqual([r["before"]["shares"] for r in recs[:3]],
                         [{"green": 0, "blue": 100}, {"green": 10, "blue": 90},
                          {"green": 50, "blue": 50}])
        self.assertTrue(all(r["result"] == "OK" for r in recs))
        starts = [r for r in audit_records(audit)[1] if r["command"].startswith("rollout start")]
        self.assertEqual([r["actor"] for r in starts], ["operator"])
        v.stop()


    def test_slow_canary_rolls_back_on_p99(self):
        """green answers after 60 ms: with max-p99=20ms the rollout rolls back
        during its first step on latency, the reason and figures audited."""
        blue = self.backend("blue-1")

        def slow(conn, req):
            time.sleep(0.06)
            return green.default_handler(conn, req)
        green = self.backend("green-1", slow)
        v = self.veer(blue_green(blue, green))
        load = self.routed_load(v, 4)
        self.ok(v, "rollout", "start", "api", "canary=green", "steps=20,100", "interval=10s",
                "max-p99=20ms", "min-requests=20")
        line = v.wait_log(r"rollout api rolled back: ", timeout=DEADLINE,
                          what="the rollback log line")
        load.stop()
        self.assertEqual(load.failures(), [])
        m = re.search(r"rolled back: green p99 ([\d.]+) ms over (\d+) requests > max-p99 20 ms",
                      line)
        self.assertTrue(m, line)
        self.assertGreater(float(m.group(1)), 20.0)
        self.assertGreaterEqual(int(m.group(2)), 20)
        st = rollout_status(v.admin_socket)
        self.assertEqual((st["state"], st["step"]), ("ended", 1), st["raw"])
        self.assertTrue(st["verdict"].startswith("rolled back: green p99"), st["raw"])
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        cmds = [r["command"] for r in rollout_audit(v.tmp + "/audit.log")]
        self.assertEqual(len(cmds), 2, cmds)
        self.assertTrue(cmds[1].startswith("rollout api rolled back: green p99 "), cmds)
        v.stop()

    def test_pause_resume_and_refusals(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = self.veer(blue_green(blue, green))
        self.assertIn("no rollout", self.refused(v, "rollout", "status", "api"))
        self.assertIn("no rollout", self.refused(v, "rollout", "abort", "api"))
        self.refused(v, "rollout", "start", "api", "canary=purple", "steps=10,100",
                     "interval=1s")
        self.ok(v, "rollout", "start", "api", "canary=green", "steps=10,50,100", "interval=1s")
        self.assertIn("already running",
                      self.refused(v, "rollout", "start", "api", "canary=green", "steps=5,100",
                                   "interval=1s"))
        self.ok(v, "rollout", "pause", "api")
        t_pause = time.monotonic()
        st = rollout_status(v.admin_socket)
        self.assertEqual((st["state"], st["step"], st["share"]), ("paused", 1, 10), st["raw"])
        # Paused for two intervals: no step is taken.
        wait_for(lambda: time.monotonic() >= t_pause + 2.0, what="two intervals")
        st = rollout_status(v.admin_socket)
        self.assertEqual((st["state"], st["step"], st["share"]), ("paused", 1, 10), st["raw"])
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 90, "green": 10})
        t_resume = time.monotonic()
        self.ok(v, "rollout", "resume", "api")
        st = wait_for(lambda: (lambda s: s if s["step"] == 2 else None)(
            rollout_status(v.admin_socket)), timeout=1 + DEADLINE, interval=0.02,
            what="step 2 after resume")
        self.assertGreaterEqual(time.monotonic() - t_resume, 1.0 - TICK)
        self.assertEqual((st["state"], st["share"]), ("running", 50), st["raw"])
        self.ok(v, "rollout", "abort", "api")
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        st = rollout_status(v.admin_socket)
        self.assertEqual(st["state"], "ended")
        self.assertEqual(st["verdict"], "rolled back: aborted by operator")
        self.assertIn("has ended", self.refused(v, "rollout", "resume", "api"))
        v.stop()

    def test_rollout_needs_exactly_two_groups(self):
        bs = [self.backend(n) for n in ("blue-1", "green-1", "red-1")]
        v = self.veer(admin_config([(b.name, b.address, 100, b.name[:-2]) for b in bs],
                                   shares=[("blue", 100), ("green", 0), ("red", 0)]))
        self.assertIn("exactly two groups",
                      self.refused(v, "rollout", "start", "api", "canary=green", "steps=10,100",
                                   "interval=1s"))
        self.assertEqual(pool_shares(show_pool(v.admin_socket)),
                         {"blue": 100, "green": 0, "red": 0})
        v.stop()

# --- 3, 4: sticky cohorts and the override header ------------------------------------------

USERS = ["user-%04d" % i for i in range(1000)]
STICKY_CLIENTS = 8


class StickyTest(RolloutCase):
    def test_thousand_users_through_1_5_20_100(self):
        """1,000 users (fixed ids, so the run is deterministic) at shares 0, 1,
        5, 20, 100 for green, driven by shifts (the second group of a
        two-group pool is the canary without a rollout), two workers.

        Tolerance: for a well-mixed hash the canary count at share p is
        Binomial(1000, p/100): sigma = sqrt(1000 p (1-p)) users, 3.1 at 1%,
        6.9 at 5%, 12.6 at 20%. A cohort off by more than 5 sigma (or 3 users
        at the smallest share) would mean the cohort does not follow the share.
        The ids are fixed, so within tolerance once is within tolerance always."""
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = self.veer(blue_green(blue, green, extra_pool='sticky = { header = "X-User-Id"; };'),
                      workers=2)
        stages = []
        for share in (0, 1, 5, 20, 100):
            if share:
                self.ok(v, "shift", "api", "blue=%d" % (100 - share), "green=%d" % share)
            self.assertEqual(pool_shares(show_pool(v.admin_socket))["green"], share)
            a = self.groups_of(v, 0)
            b = self.groups_of(v, 3)
            flipped = [u for u in USERS if a[u] != b[u]]
            if flipped:
                self.fail("%d users changed group between two requests at a fixed share of "
                          "%d%% (first: %s)" % (len(flipped), share, flipped[0]))
            stages.append((share, {u for u in USERS if a[u] == "green-1"}))

        for (s0, c0), (s1, c1) in zip(stages, stages[1:]):
            back = sorted(c0 - c1)
            if back:
                self.fail("%d users went back from canary to stable between %d%% and %d%% "
                          "(first: %s)" % (len(back), s0, s1, back[0]))
        for share, canary in stages:
            n, p = len(canary), share / 100.0
            tol = max(3.0, 5 * math.sqrt(len(USERS) * p * (1 - p)))
            self.assertLessEqual(abs(n - len(USERS) * p), tol,
                                 "%d of %d users in the canary at %d%%" % (n, len(USERS), share))
        # The documented cohort function: canary iff the user's point is below its share.
        for share, canary in stages:
            want = {u for u in USERS if sticky_point(u) < share}
            self.assertEqual(canary, want, "cohort at %d%% differs from FNV-1a points" % share)
        v.stop()


    def test_cohorts_stay_put_across_an_unrelated_change(self):
        """Shares 80/20 from the config: a change that moves no share (a weight
        set to what it is) must not move any user, and the cohorts follow the
        documented function (canary = green, the second group, first)."""
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = self.veer(blue_green(blue, green, (("blue", 80), ("green", 20)),
                                 extra_pool='sticky = { header = "X-User-Id"; };'), workers=2)
        before = self.groups_of(v)
        self.ok(v, "set", "weight", "api/blue-1", "100")
        after = self.groups_of(v)
        moved = [u for u in USERS if before[u] != after[u]]
        if moved:
            self.fail("%d of 1000 users changed group on a change that moved no share "
                      "(first: %s %s -> %s)" % (len(moved), moved[0], before[moved[0]],
                                               after[moved[0]]))
        want = {u for u in USERS if sticky_point(u) < 20}
        self.assertEqual({u for u in USERS if after[u] == "green-1"}, want)
        v.stop()

class OverrideHeaderTest(RolloutCase):
    def start(self, shares=BLUE_GREEN_0):
        self.blue = self.backend("blue-1")
        self.green = self.backend("green-1")
        extra = 'override_header = "X-Canary"; sticky = { header = "X-User-Id"; };'
        self.v = self.veer(blue_green(self.blue, self.green, shares, extra_pool=extra))
        self.c = self.client(self.v.port)
        return self.v

    def answers(self, n, headers=None):
        out = []
        for i in range(n):
            r = self.c.request("GET", "/o/%d" % i, headers=headers)
            self.assertEqual(r.status, 200, r.body)
            out.append(r.header("X-Backend"))
        return out

    def assert_all(self, n, headers, backend, when):
        got = self.answers(n, headers)
        wrong = [b for b in got if b != backend]
        if wrong:
            self.fail("%s: %d of %d requests with %r answered by %s, not %s"
                      % (when, len(wrong), n, headers, sorted(set(wrong)), backend))

    def test_always_never_and_absent(self):
        """At 10% green (shifted at runtime): always -> green, never -> blue,
        absent -> the 90/10 split; the override beats the sticky cohort."""
        v = self.start()
        self.ok(v, "shift", "api", "blue=90", "green=10")
        self.assert_all(40, {"X-Canary": "always"}, "green-1", "at 90/10")
        self.assert_all(40, {"X-Canary": "never"}, "blue-1", "at 90/10")
        # Absent: the pool's plain 90/10 balance. One connection is one worker
        # whose SWRR is exact over each cycle of 10 picks: 20 of 200 (+-2
        # for a cycle cut at either end).
        plain = self.answers(200)
        self.assertTrue(18 <= plain.count("green-1") <= 22, plain.count("green-1"))
        self.assertEqual(plain.count("blue-1") + plain.count("green-1"), 200)

        # The override wins over the sticky cohort.
        in_blue = next(u for u in USERS if sticky_point(u) >= 10)
        in_green = next(u for u in USERS if sticky_point(u) < 10)
        self.assert_all(5, {"X-User-Id": in_blue}, "blue-1", "a blue-cohort user")
        self.assert_all(5, {"X-User-Id": in_green}, "green-1", "a green-cohort user")
        self.assert_all(5, {"X-User-Id": in_blue, "X-Canary": "always"}, "green-1",
                        "override vs cohort")
        self.assert_all(5, {"X-User-Id": in_green, "X-Canary": "never"}, "blue-1",
                        "override vs cohort")

        # At 0% green has no eligible backend: "always" falls back to the
        # plain balance instead of failing.
        self.ok(v, "shift", "api", "blue=100", "green=0")
        self.assert_all(20, {"X-Canary": "always"}, "blue-1", "at 100/0 (fallback)")
        v.stop()

    def test_override_right_after_start(self):
        """Shares 90/10 from the config, no change made yet: the override
        already applies (the second group is the canary)."""
        v = self.start((("blue", 90), ("green", 10)))
        self.assert_all(40, {"X-Canary": "always"}, "green-1",
                        "right after start, shares 90/10 from the config")
        self.assert_all(40, {"X-Canary": "never"}, "blue-1",
                        "right after start, shares 90/10 from the config")
        v.stop()

    def test_rollout_canary_is_the_override_target(self):
        """With a rollout running, "always" means the rollout's canary, even
        when it is the first group; after abort, the second group again."""
        v = self.start()
        self.ok(v, "shift", "api", "blue=90", "green=10")
        ok = self.ok(v, "rollout", "start", "api", "canary=blue", "steps=50,100", "interval=30s")
        self.assertEqual((ok["step"], ok["share"]), ("1/2", 50))
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 50, "green": 50})
        self.assert_all(30, {"X-Canary": "always"}, "blue-1", "rollout canary=blue at 50%")
        self.assert_all(30, {"X-Canary": "never"}, "green-1", "rollout canary=blue at 50%")
        self.ok(v, "rollout", "abort", "api")
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 90, "green": 10})
        self.assert_all(30, {"X-Canary": "always"}, "green-1",
                        "after rollout abort (90/10, no rollout)")
        self.assert_all(30, {"X-Canary": "never"}, "blue-1",
                        "after rollout abort (90/10, no rollout)")
        v.stop()


# --- 5: the capacity guard -------------------------------------------------------------------


class CapacityGuardTest(RolloutCase):
    def start(self, headroom=None):
        self.bs = [self.backend("blue-%d" % i) for i in range(1, 5)]
        self.g = self.backend("green-1")
        backends = [(b.name, b.address, 100, "blue") for b in self.bs]
        backends.append(("green-1", self.g.address, 100, "green"))
        extra = "capacity_headroom = %s;" % headroom if headroom is not None else ""
        self.v = self.veer(admin_config(backends, shares=BLUE_GREEN_0, extra_pool=extra))
        return self.v

    def test_shift_bound_is_ready_fraction_times_headroom(self):
        """4 blue and 1 green READY, headroom 2: green may take 1/5 x 2 = 40%."""
        v = self.start()
        gen = show_pool(v.admin_socket)["generation"]
        err = self.refused(v, "shift", "api", "blue=50", "green=50")
        self.assertIn("capacity_headroom", err)
        self.assertIn("40", err)
        doc = show_pool(v.admin_socket)
        self.assertEqual((pool_shares(doc), doc["generation"]), ({"blue": 100, "green": 0}, gen))
        self.ok(v, "shift", "api", "blue=60", "green=40")  # equal to the bound
        self.assertIn("capacity_headroom", self.refused(v, "shift", "api", "blue=0", "green=100"))
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 60, "green": 40})
        self.ok(v, "shift", "api", "blue=0", "green=100", "--force")
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 0, "green": 100})
        # Shrinking a group is never refused by the guard.
        self.ok(v, "shift", "api", "blue=100", "green=0")
        v.stop()

    def test_headroom_is_a_pool_key(self):
        v = self.start(headroom="3.0")  # 1/5 x 3 = 60%
        self.assertIn("capacity_headroom", self.refused(v, "shift", "api", "blue=39", "green=61"))
        self.ok(v, "shift", "api", "blue=40", "green=60")
        v.stop()

    def test_rollout_step_over_the_bound_pauses(self):
        v = self.start()
        # A first step over the bound refuses the start.
        self.assertIn("capacity_headroom",
                      self.refused(v, "rollout", "start", "api", "canary=green", "steps=50,100",
                                   "interval=1s"))
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        t0 = time.monotonic()
        self.ok(v, "rollout", "start", "api", "canary=green", "steps=20,40,60", "interval=1s")

        def paused():
            st = rollout_status(v.admin_socket)
            return st if st["state"] != "running" else None
        st = wait_for(paused, timeout=2 + DEADLINE, interval=0.02, what="the rollout to pause")
        self.assertGreaterEqual(time.monotonic() - t0, 2.0 - 2 * TICK)
        self.assertEqual(st["state"], "paused", st["raw"])
        self.assertEqual((st["step"], st["share"]), (2, 40), st["raw"])
        self.assertTrue(st["verdict"].startswith("paused"), st["raw"])
        self.assertIn("capacity_headroom", st["verdict"])
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 60, "green": 40})
        self.ok(v, "rollout", "abort", "api")
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        self.assertEqual(rollout_status(v.admin_socket)["state"], "ended")
        v.stop()


# --- 6, 7: request hold ----------------------------------------------------------------------


class Probes:
    """n client connections, one GET each (path PREFIX/i), sent one after the
    other from this thread; each response is read by a thread of its own.
    sent[i] / done[i] are monotonic times, res[i] the response (or an error)."""

    def __init__(self, tc, port, n, prefix):
        self.clients = [tc.client(port) for _ in range(n)]
        self.prefix = prefix
        self.sent = [None] * n
        self.done = [None] * n
        self.res = [None] * n
        self.threads = []

    def path(self, i):
        return "%s/%d" % (self.prefix, i)

    def send(self, indexes=None):
        for i in (range(len(self.clients)) if indexes is None else indexes):
            c = self.clients[i]
            self.sent[i] = time.monotonic()
            c.send(("GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % self.path(i)).encode())
            t = threading.Thread(target=self._read, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def _read(self, i):
        try:
            self.res[i] = self.clients[i].response()
        except (OSError, ValueError) as e:
            self.res[i] = e
        self.done[i] = time.monotonic()

    def answered(self):
        """Indexes of connections on which veer has sent anything."""
        socks = [c.sock for c in self.clients]
        r, _, _ = select.select(socks, [], [], 0)
        return [socks.index(s) for s in r] + [i for i, d in enumerate(self.done) if d]

    def join(self, timeout=DEADLINE):
        for t in self.threads:
            t.join(timeout)


class HoldTest(RolloutCase):
    def order_at_backend(self, b, probes):
        """Probe indexes in the order their bytes reached the backend."""
        mine = {probes.path(i): i for i in range(len(probes.clients))}
        arrived = sorted((r for r in b.snapshot() if r.target in mine), key=lambda r: r.kernel_ts)
        self.assertTrue(all(r.kernel_ts is not None for r in arrived), "no kernel timestamps")
        return [mine[r.target] for r in arrived], {mine[r.target]: r for r in arrived}

    def describe_arrivals(self, b, probes, arrived, t0):
        """One line per probe: when sent, when its bytes reached the backend, on
        which backend connection (and whether that connection was new)."""
        lines = []
        for i in sorted(arrived, key=lambda i: arrived[i].kernel_ts):
            r = arrived[i]
            lines.append("  probe %d sent %+.6f arrived %+.6f on backend conn %d accepted %+.6f"
                         % (i, probes.sent[i] - t0, r.mono - t0, r.conn, b.accepted[r.conn] - t0))
        return "\n".join(lines)

    def test_hold_until_a_backend_is_admitted(self):
        """The only backend fails readiness for 300 ms: requests wait (hold_ms
        = 1000) instead of failing, then go on in the order they came; a
        continuous load sees zero 503s. One worker, so "in order" is one FIFO.
        veer holds idle keep-alive connections to the backend, as it does after
        any traffic or warm-up, so the order in which veer writes the released
        requests is the order in which their bytes reach the backend (no
        connect in between to race)."""
        b = self.stamp_backend("b")
        cfg = admin_config([("b", b.address, 100)],
                           extra_pool="hold_ms = 1000; " + health_text("/ready", 50, 1000, 1, 1))
        v = self.veer(cfg, workers=1)
        wait_for(lambda: pool_states(show_pool(v.admin_socket))["b"] == "READY", what="b READY")
        warm_upstreams(v.port, b, 16)
        load = StrictLoad(v.port, 3, path="/load")
        self._cleanup.append(load.stop)
        load.wait_count(30)
        probes = Probes(self, v.port, 8, "/probe")

        b.set_healthy(False)
        wait_for(lambda: pool_states(show_pool(v.admin_socket))["b"] == "DOWN", what="b DOWN")
        t_down = time.monotonic()
        probes.send()
        # The scenario: no eligible backend for 300 ms. Nothing is answered meanwhile.
        wait_for(lambda: time.monotonic() >= t_down + 0.3, what="300 ms without a backend")
        self.assertEqual(probes.answered(), [], "held requests answered while b was DOWN: %s %r port %d" % ("\n".join(v.log()), b.checks, b.port))
        self.assertEqual([r for r in b.snapshot() if r.target.startswith("/probe")], [])
        t_up = b.set_healthy(True)
        probes.join()
        load.wait_each_sent_after(time.monotonic(), 2)
        load.stop()

        for i, r in enumerate(probes.res):
            self.assertFalse(isinstance(r, Exception) or r is None, "probe %d: %r" % (i, r))
            self.assertEqual(r.status, 200, "probe %d: %r" % (i, r.body))
            self.assertGreaterEqual(probes.done[i], t_up)
            self.assertLess(probes.done[i] - probes.sent[i], 1.0 + SLACK)
        self.assertEqual(load.failures(), [], load.describe())
        self.assertTrue(any(r.done - r.sent > 0.25 for r in load.all()),
                        "no load request was held across the gap")
        order, arrived = self.order_at_backend(b, probes)
        self.assertTrue(all(r.mono >= t_up for r in arrived.values()))
        self.assertEqual(order, list(range(8)), "held requests reached the backend out of "
                         "order:\n" + self.describe_arrivals(b, probes, arrived, t_up))
        v.stop()

    def test_hold_expires_with_503(self):
        """hold_ms = 200 and the only backend DOWN for good: 503 after ~200 ms,
        never before."""
        b = self.stamp_backend("b")
        cfg = admin_config([("b", b.address, 100)],
                           extra_pool="hold_ms = 200; " + health_text("/ready", 50, 1000, 1, 1))
        v = self.veer(cfg, workers=1)
        wait_for(lambda: pool_states(show_pool(v.admin_socket))["b"] == "READY", what="b READY")
        b.set_healthy(False)
        wait_for(lambda: pool_states(show_pool(v.admin_socket))["b"] == "DOWN", what="b DOWN")
        probes = Probes(self, v.port, 4, "/gone")
        probes.send()
        probes.join()
        for i, r in enumerate(probes.res):
            self.assertFalse(isinstance(r, Exception) or r is None, "probe %d: %r" % (i, r))
            self.assertEqual(r.status, 503, "probe %d: %r\nchecks: %r\nveer log:\n%s"
                             % (i, r.body, b.checks, "\n".join(v.log())))
            waited = probes.done[i] - probes.sent[i]
            self.assertGreaterEqual(waited, 0.2, "503 before hold_ms")
            self.assertLess(waited, 0.2 + SLACK, "503 long after hold_ms")
        self.assertEqual(b.snapshot(), [])
        v.stop()

    def maintenance_veer(self):
        b = self.stamp_backend("b")
        v = self.veer(admin_config([("b", b.address, 100)]), workers=1)
        warm_upstreams(v.port, b, 8)  # idle keep-alive connections, as after any traffic
        return b, v, self.admin(v)

    def test_maintenance_hold_then_off(self):
        """maintenance on --hold 2s: requests wait; off after 300 ms -> they
        complete 200, reaching the backend in the order they were sent."""
        b, v, adm = self.maintenance_veer()
        parse_ok(adm.command("maintenance on api --hold 2s"))
        probes = Probes(self, v.port, 6, "/m1")
        t_on = time.monotonic()
        probes.send()
        wait_for(lambda: time.monotonic() >= t_on + 0.3, what="a 300 ms maintenance window")
        self.assertEqual(probes.answered(), [], "held requests answered during maintenance")
        self.assertEqual([r for r in b.snapshot() if r.target.startswith("/m1")], [])
        reply, t_off, _ = adm.timed_command("maintenance off api")
        parse_ok(reply)
        probes.join()
        for i, r in enumerate(probes.res):
            self.assertFalse(isinstance(r, Exception) or r is None, "probe %d: %r" % (i, r))
            self.assertEqual(r.status, 200, "probe %d: %r" % (i, r.body))
            self.assertGreaterEqual(probes.done[i], t_off)
        order, arrived = self.order_at_backend(b, probes)
        self.assertTrue(all(r.mono >= t_off for r in arrived.values()))
        self.assertEqual(order, list(range(6)), "held requests reached the backend out of "
                         "order:\n" + self.describe_arrivals(b, probes, arrived, t_off))
        v.stop()

    def test_maintenance_hold_expires_with_503(self):
        """Maintenance outlasts the hold: two batches sent 0.5 s apart each get
        their 503 with Retry-After 2 s after they were sent, not earlier."""
        b, v, adm = self.maintenance_veer()
        parse_ok(adm.command("maintenance on api --hold 2s --retry-after 7"))
        probes = Probes(self, v.port, 6, "/m2")
        t_a = time.monotonic()
        probes.send([0, 1, 2])
        wait_for(lambda: time.monotonic() >= t_a + 0.5, what="0.5 s between the batches")
        probes.send([3, 4, 5])
        probes.join()
        for i, r in enumerate(probes.res):
            self.assertFalse(isinstance(r, Exception) or r is None, "probe %d: %r" % (i, r))
            self.assertEqual(r.status, 503, "probe %d: %r" % (i, r.body))
            self.assertEqual(r.header("Retry-After"), "7")
            waited = probes.done[i] - probes.sent[i]
            self.assertGreaterEqual(waited, 2.0, "probe %d: 503 before the hold ended" % i)
            self.assertLess(waited, 2.0 + SLACK, "probe %d: 503 long after the hold" % i)
        self.assertEqual([r for r in b.snapshot() if r.target.startswith("/m2")], [])
        parse_ok(adm.command("maintenance off api"))
        self.assertEqual(self.client(v.port).request("GET", "/after").status, 200)
        v.stop()


# --- 8: a rollout survives reload and kill -9 --------------------------------------------------


class RolloutPersistenceTest(RolloutCase):
    def test_rollout_survives_reload_and_restart_then_abort_restores(self):
        persist = tempfile.mkdtemp(prefix="veer-rollout-")
        self._cleanup.append(lambda: shutil.rmtree(persist, ignore_errors=True))
        blue1, blue2, green = (self.backend(n) for n in ("blue-1", "blue-2", "green-1"))
        cfg = admin_config([("blue-1", blue1.address, 100, "blue"),
                            ("blue-2", blue2.address, 100, "blue"),
                            ("green-1", green.address, 100, "green")],
                           shares=BLUE_GREEN_0, persist_dir=persist)
        state = os.path.join(persist, "state")

        def state_text():
            try:
                with open(state) as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        def weights(v):
            return {b["name"]: b["weight"] for b in show_pool(v.admin_socket)["backends"]}

        v = self.veer(cfg)
        self.ok(v, "set", "weight", "api/blue-2", "50")  # an operator change before the rollout
        ok = self.ok(v, "rollout", "start", "api", "canary=green", "steps=10,50,100",
                     "interval=30s")
        self.assertEqual((ok["step"], ok["share"]), ("1/3", 10))
        self.ok(v, "set", "weight", "api/green-1", "30")  # and one during it
        # The state file is fsynced off the reply path, within 100 ms.
        wait_for(lambda: re.search(r"^rollout canary=green;", state_text(), re.M) and
                 re.search(r"^backend green-1 weight 30 ", state_text(), re.M),
                 what="the state file to hold the rollout and the weight")

        # A reload keeps it where it is.
        self.ok(v, "reload")
        st = rollout_status(v.admin_socket)
        self.assertEqual((st["state"], st["step"], st["share"]), ("running", 1, 10), st["raw"])

        v.kill()  # SIGKILL: only the state file remembers
        v = self.veer(cfg)
        v.wait_log(r"rollout of pool api restored at step 1/3")
        st = rollout_status(v.admin_socket)
        self.assertEqual((st["canary"], st["stable"], st["state"]), ("green", "blue", "running"),
                         st["raw"])
        self.assertEqual((st["step"], st["nsteps"], st["share"]), (1, 3, 10), st["raw"])
        self.assertEqual(st["interval_s"], 30.0)
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 90, "green": 10})
        self.assertEqual(weights(v), {"blue-1": 100, "blue-2": 50, "green-1": 30})

        self.ok(v, "rollout", "abort", "api")
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        self.assertEqual(weights(v), {"blue-1": 100, "blue-2": 50, "green-1": 100},
                         "abort did not restore the pre-rollout weights")
        st = rollout_status(v.admin_socket)
        self.assertEqual(st["state"], "ended")
        self.assertTrue(st["verdict"].startswith("rolled back"), st["raw"])
        wait_for(lambda: not re.search(r"^rollout ", state_text(), re.M),
                 what="the rollout to leave the state file")

        # An ended rollout does not come back after another kill -9.
        v.kill()
        v = self.veer(cfg)
        self.assertIn("no rollout", self.refused(v, "rollout", "status", "api"))
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        self.assertEqual(weights(v), {"blue-1": 100, "blue-2": 50, "green-1": 100})
        v.stop()


    def test_sticky_cohorts_survive_restart(self):
        """A rollout at 20% with sticky cohorts, then kill -9 and a restart:
        the rollout resumes at its step and every user stays in its group."""
        persist = tempfile.mkdtemp(prefix="veer-rollout-")
        self._cleanup.append(lambda: shutil.rmtree(persist, ignore_errors=True))
        blue, green = self.backend("blue-1"), self.backend("green-1")
        cfg = blue_green(blue, green, extra_pool='sticky = { header = "X-User-Id"; };',
                         persist_dir=persist)
        v = self.veer(cfg)
        self.ok(v, "rollout", "start", "api", "canary=green", "steps=20,100", "interval=60s")
        before = self.groups_of(v)
        n = sum(1 for g in before.values() if g == "green-1")
        self.assertTrue(150 <= n <= 250, "%d users in the canary at 20%%" % n)

        def saved():
            try:
                with open(os.path.join(persist, "state")) as f:
                    return re.search(r"^rollout canary=green;", f.read(), re.M)
            except FileNotFoundError:
                return None
        wait_for(saved, what="the state file to hold the rollout")
        v.kill()
        v = self.veer(cfg)
        v.wait_log(r"rollout of pool api restored at step 1/2")
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 80, "green": 20})
        after = self.groups_of(v)
        moved = [u for u in USERS if before[u] != after[u]]
        if moved:
            self.fail("%d of 1000 users changed group across the restart (first: %s %s -> %s)"
                      % (len(moved), moved[0], before[moved[0]], after[moved[0]]))
        self.ok(v, "rollout", "abort", "api")
        v.stop()

if __name__ == "__main__":
    unittest.main()
