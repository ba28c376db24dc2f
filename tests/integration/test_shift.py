"""Traffic shifting through the admin socket, checked by who answers: a
request *sent* after the OK of a change is routed by it (applied before ack),
no request fails while shares move back and forth under keep-alive load,
swap and rollback undo exactly, and weights and admin states divide traffic
exactly (ARCHITECTURE.md, "Traffic model", "Threads and state")."""

import socket
import threading
import time
import unittest

from helpers import (AdminConn, RoutedLoad, admin_config, parse_ok, pool_shares, show_pool,
                     veerctl)
from veertest import VeerTestCase, wait_for

LOAD_CLIENTS = 16


class ShiftTestCase(VeerTestCase):
    def admin(self, v):
        c = AdminConn(v.admin_socket)
        self._cleanup.append(c.close)
        return c

    def load(self, v, n=LOAD_CLIENTS):
        load = RoutedLoad(v.port, n)
        self._cleanup.append(load.stop)
        # Every client is up and has been answered before anything changes.
        load.wait_each_sent_after(time.monotonic())
        return load

    def change(self, admin, line):
        """Run a change on the raw admin socket: (parsed OK, t before send, t after reply)."""
        reply, t_cmd, t_ok = admin.timed_command(line)
        return parse_ok(reply), t_cmd, t_ok

    def check_window(self, load, t_ok, t_next, allowed, what, next_allowed=()):
        """Every request sent after t_ok (the change's OK arrived) was answered 200
        by a backend in allowed. With t_next (when the next change was sent): only
        requests sent before it count, and one still unanswered at t_next may have
        been routed by the next change, so next_allowed is accepted for it too."""
        recs = load.sent_between(t_ok, t_next)
        strict = [r for r in recs if t_next is None or r.done < t_next]
        self.assertTrue(strict, "no request sent and answered in the window of %s" % what)
        bad = [r for r in recs if r.error is not None or r.status != 200 or
               r.backend not in (allowed if r in strict else set(allowed) | set(next_allowed))]
        if bad:
            self.fail("%s: %d of %d requests sent after the OK were answered wrongly; "
                      "first: %r (sent %.3f ms after the OK, answered %.3f ms after)" % (
                          what, len(bad), len(recs), bad[0], (bad[0].sent - t_ok) * 1000,
                          (bad[0].done - t_ok) * 1000))
        return recs


def routing_view(doc):
    """A `show pool --json` document without its generation and load figures
    (active, conns change with warm-up and traffic): the routing decisions."""
    d = dict(doc)
    d.pop("generation")
    d["backends"] = [{k: v for k, v in b.items() if k not in ("active", "conns")}
                     for b in doc["backends"]]
    return d


def blue_green(v_factory, blue, green, shares=(("blue", 100), ("green", 0)), **kw):
    return v_factory(admin_config([("blue-1", blue.address, 100, "blue"),
                                   ("green-1", green.address, 100, "green")],
                                  shares=list(shares)), **kw)


class ShiftUnderLoadTest(ShiftTestCase):
    def test_shift_and_rollback_under_keepalive_load(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = blue_green(self.veer, blue, green)
        load = self.load(v)
        admin = self.admin(v)
        t0 = time.monotonic()
        load.wait_each_sent_after(t0, 3)

        ok, t_cmd, t_ok = self.change(admin, "shift api blue=0 green=100")
        self.check_window(load, 0, t_cmd, {"blue-1"}, "before the shift", {"green-1"})
        load.wait_each_sent_after(t_ok, 5)
        ok2, t_cmd2, t_ok2 = self.change(admin, "rollback api")
        self.assertEqual(ok2["gen"], ok["gen"] + 1)
        self.check_window(load, t_ok, t_cmd2, {"green-1"}, "shift api blue=0 green=100",
                          {"blue-1"})
        load.wait_each_sent_after(t_ok2, 5)
        load.stop()
        self.check_window(load, t_ok2, None, {"blue-1"}, "rollback api")
        self.assertEqual(load.failures(), [])
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 100, "green": 0})
        v.stop()

    def test_twenty_shifts_back_and_forth_under_load(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = blue_green(self.veer, blue, green)
        load = self.load(v)
        admin = self.admin(v)
        phases = []  # (line, t_ok, expected backend)
        cmds = []
        gen = show_pool(v.admin_socket)["generation"]
        for i in range(20):
            to_green = i % 2 == 0
            line = "shift api blue=%d green=%d" % ((0, 100) if to_green else (100, 0))
            ok, t_cmd, t_ok = self.change(admin, line)
            self.assertEqual(ok["gen"], gen + i + 1, line)
            cmds.append(t_cmd)
            phases.append((line, t_ok, "green-1" if to_green else "blue-1"))
            # Every client sends at least one request under the new shares.
            load.wait_each_sent_after(t_ok, 1)
        load.wait_each_sent_after(time.monotonic(), 1)
        load.stop()
        self.assertEqual(load.failures(), [])
        for k, (line, t_ok, want) in enumerate(phases):
            t_next, nxt = (cmds[k + 1], {phases[k + 1][2]}) if k + 1 < len(cmds) else (None, ())
            self.check_window(load, t_ok, t_next, {want}, "shift %d: %s" % (k + 1, line), nxt)
        # Both backends really took turns.
        self.assertGreater(len(blue.requests), 0)
        self.assertGreater(len(green.requests), 0)
        v.stop()


class SwapAndPartialShiftTest(ShiftTestCase):
    def test_swap_twice_is_identity(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = blue_green(self.veer, blue, green, shares=(("blue", 70), ("green", 30)))
        sock = v.admin_socket
        d0 = show_pool(sock)
        self.assertEqual(pool_shares(d0), {"blue": 70, "green": 30})
        p = veerctl(sock, "swap", "api")
        self.assertEqual(p.returncode, 0, p.stdout)
        ok1 = parse_ok(p.stdout)
        d1 = show_pool(sock)
        self.assertEqual(pool_shares(d1), {"blue": 30, "green": 70})
        self.assertEqual((ok1["gen"], d1["generation"]), (d0["generation"] + 1,) * 2)
        ok2 = parse_ok(veerctl(sock, "swap", "api").stdout)
        d2 = show_pool(sock)
        self.assertEqual(ok2["gen"], d0["generation"] + 2)
        self.assertEqual(d2["generation"], d0["generation"] + 2)
        self.assertEqual(routing_view(d2), routing_view(d0))
        v.stop()

    def test_shift_naming_some_groups_keeps_the_others(self):
        a, b, c = self.backend("a1"), self.backend("b1"), self.backend("c1")
        v = self.veer(admin_config([("a1", a.address, 100, "a"), ("b1", b.address, 100, "b"),
                                    ("c1", c.address, 100, "c")],
                                   shares=[("a", 50), ("b", 30), ("c", 20)]), workers=1)
        sock = v.admin_socket
        gen = show_pool(sock)["generation"]
        ok = parse_ok(veerctl(sock, "shift", "api", "a=30", "b=50").stdout)
        self.assertEqual(ok["gen"], gen + 1)
        self.assertEqual(pool_shares(show_pool(sock)), {"a": 30, "b": 50, "c": 20})
        # Named and kept shares must total 100.
        for args in (["a=40"], ["c=0"], ["a=0", "b=0"], ["a=100", "b=0"]):
            with self.subTest(args=args):
                p = veerctl(sock, "shift", "api", *args)
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertTrue(p.stdout.startswith("ERR "), p.stdout)
                d = show_pool(sock)
                self.assertEqual(pool_shares(d), {"a": 30, "b": 50, "c": 20})
                self.assertEqual(d["generation"], gen + 1)
        p = veerctl(sock, "swap", "api")
        self.assertEqual(p.returncode, 1, p.stdout)
        ok = parse_ok(veerctl(sock, "shift", "api", "c=0", "a=50").stdout)
        self.assertEqual(ok["gen"], gen + 2)
        self.assertEqual(pool_shares(show_pool(sock)), {"a": 50, "b": 50, "c": 0})
        # Traffic follows: a and b alternate, c gets nothing.
        cl = self.client(v.port)
        got = [cl.request("GET", "/p/%d" % i).header("X-Backend") for i in range(40)]
        self.assertEqual((got.count("a1"), got.count("b1"), got.count("c1")), (20, 20, 0), got)
        v.stop()


class RollbackTest(ShiftTestCase):
    def test_rollback_undoes_the_previous_operator_change(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = blue_green(self.veer, blue, green, shares=(("blue", 80), ("green", 20)))
        sock = v.admin_socket
        d0 = show_pool(sock)
        parse_ok(veerctl(sock, "shift", "api", "blue=30", "green=70").stdout)
        d1 = show_pool(sock)
        parse_ok(veerctl(sock, "set", "weight", "api/green-1", "40").stdout)
        parse_ok(veerctl(sock, "set", "state", "api/blue-1", "maint", "--force").stdout)
        # Undo the state change only: weight and shares stay.
        ok = parse_ok(veerctl(sock, "rollback", "api").stdout)
        d = show_pool(sock)
        self.assertEqual(d["generation"], ok["gen"])
        self.assertEqual(ok["gen"], d0["generation"] + 4)
        self.assertEqual(pool_shares(d), {"blue": 30, "green": 70})
        self.assertEqual([(b["weight"], b["state"]) for b in d["backends"]],
                         [(100, "READY"), (40, "READY")])
        # Then the weight.
        parse_ok(veerctl(sock, "rollback", "api").stdout)
        self.assertEqual(routing_view(show_pool(sock)), routing_view(d1))
        # A refused change is not an operator change: nothing to undo for it.
        p = veerctl(sock, "shift", "api", "blue=1", "green=1")
        self.assertEqual(p.returncode, 1)
        parse_ok(veerctl(sock, "rollback", "api").stdout)
        self.assertEqual(routing_view(show_pool(sock)), routing_view(d0))
        v.stop()


class ConcurrentChangesTest(ShiftTestCase):
    def test_changes_from_many_clients_are_serialised(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = blue_green(self.veer, blue, green)
        gen0 = show_pool(v.admin_socket)["generation"]
        gens, errors = [], []
        lock = threading.Lock()

        def run(k):
            try:
                c = AdminConn(v.admin_socket)
                for i in range(10):
                    g = 10 * ((k + i) % 10)
                    ok = parse_ok(c.command("shift api blue=%d green=%d" % (100 - g, g)))
                    with lock:
                        gens.append(ok["gen"])
                c.close()
            except Exception as e:  # any failure is reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(sorted(gens), list(range(gen0 + 1, gen0 + 41)))
        self.assertEqual(show_pool(v.admin_socket)["generation"], gen0 + 40)
        p = veerctl(v.admin_socket, "audit", "verify")
        self.assertEqual((p.returncode, p.stdout), (0, "OK records=40\n\n"))
        v.stop()


class WeightAndStateTest(ShiftTestCase):
    def picks(self, client, n):
        out = []
        for i in range(n):
            r = client.request("GET", "/w/%d" % i)
            self.assertEqual(r.status, 200)
            out.append(r.header("X-Backend"))
        return out

    def assertCycles(self, picks, counts):
        """Each full cycle (sum of counts requests, from the first request after the
        change) holds exactly counts[name] picks of each backend."""
        n = sum(counts.values())
        for k in range(0, len(picks), n):
            cycle = picks[k:k + n]
            self.assertEqual({b: cycle.count(b) for b in counts}, counts,
                             "cycle %d of %r" % (k // n, picks))

    def test_set_weight_changes_the_split_exactly(self):
        b1, b2 = self.backend("b1"), self.backend("b2")
        v = self.veer(admin_config([("b1", b1.address, 100), ("b2", b2.address, 100)]), workers=1)
        sock = v.admin_socket
        c = self.client(v.port)
        self.assertCycles(self.picks(c, 20), {"b1": 1, "b2": 1})
        parse_ok(veerctl(sock, "set", "weight", "api/b1", "300").stdout)
        p = self.picks(c, 40)
        self.assertEqual((p.count("b1"), p.count("b2")), (30, 10), p)
        self.assertCycles(p, {"b1": 3, "b2": 1})
        parse_ok(veerctl(sock, "set", "weight", "api/b2", "500").stdout)
        p = self.picks(c, 80)
        self.assertEqual((p.count("b1"), p.count("b2")), (30, 50), p)
        self.assertCycles(p, {"b1": 3, "b2": 5})
        parse_ok(veerctl(sock, "set", "weight", "api/b2", "0").stdout)
        self.assertEqual(set(self.picks(c, 20)), {"b1"})
        self.assertEqual([b["effective_weight"] for b in show_pool(sock)["backends"]], [100, 0])
        v.stop()

    def test_set_state_takes_a_backend_out_at_once_and_back(self):
        b1, b2 = self.backend("b1"), self.backend("b2")
        v = self.veer(admin_config([("b1", b1.address, 100), ("b2", b2.address, 100)]))
        sock = v.admin_socket
        load = self.load(v, 8)
        admin = self.admin(v)
        load.wait_each_sent_after(time.monotonic(), 2)
        for state, shown in (("maint", ("MAINT",)), ("drain", ("DRAINING", "DRAINED"))):
            with self.subTest(state=state):
                ok, t_cmd, t_ok = self.change(admin, "set state api/b1 %s" % state)
                load.wait_each_sent_after(t_ok, 5)
                self.assertIn(show_pool(sock)["backends"][0]["state"], shown)
                ok2, t_cmd2, t_ok2 = self.change(admin, "set state api/b1 ready")
                self.assertEqual(ok2["gen"], ok["gen"] + 1)
                self.check_window(load, t_ok, t_cmd2, {"b2"}, "set state api/b1 %s" % state,
                                  {"b1"})
                # Back in rotation: b1 answers requests sent after the OK.
                wait_for(lambda: any(r.backend == "b1" for r in load.sent_between(t_ok2)),
                         what="b1 back in rotation")
                self.assertEqual(show_pool(sock)["backends"][0]["state"], "READY")
        load.stop()
        self.assertEqual(load.failures(), [])
        v.stop()


class OkReplyTest(ShiftTestCase):
    def test_ok_reply_generation_and_timings(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        v = blue_green(self.veer, blue, green)
        admin = self.admin(v)
        gen = show_pool(v.admin_socket)["generation"]
        steps = [
            # (command, gains traffic: warm_us expected)
            ("shift api blue=90 green=10", True),
            ("set weight api/blue-1 50", False),
            ("shift api blue=1 green=1", None),  # refused
            ("swap api", False),
            ("shift api blue=100 green=0", False),
            ("shift api blue=0 green=100", True),
            ("rollback api", True),
            ("set weight api/green-1 200", False),
        ]
        for line, gains in steps:
            with self.subTest(line=line):
                reply, t_cmd, t_ok = admin.timed_command(line)
                if gains is None:
                    self.assertTrue(reply.startswith("ERR "), reply)
                    self.assertEqual(show_pool(v.admin_socket)["generation"], gen)
                    continue
                ok = parse_ok(reply)
                gen += 1
                self.assertEqual(ok["gen"], gen, reply)
                self.assertGreater(ok["applied_us"], 0, reply)  # a publish takes time
                if gains:
                    self.assertIn("warm_us", ok, reply)
                # Both intervals lie inside the round trip the client saw.
                rtt_us = (t_ok - t_cmd) * 1e6
                self.assertLessEqual(ok["applied_us"] + ok.get("warm_us", 0), rtt_us + 1000, reply)
                self.assertEqual(show_pool(v.admin_socket)["generation"], gen)
        v.stop()


    def test_warm_up_to_an_unresponsive_backend_is_bounded(self):
        blue = self.backend("blue-1")
        # green accepts no connection: a listener with a full accept queue
        # drops further SYNs, so connects to it hang.
        hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._cleanup.append(hole.close)
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        fillers = []
        for _ in range(3):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(hole.getsockname())
            fillers.append(f)
            self._cleanup.append(f.close)
        v = self.veer(admin_config([("blue-1", blue.address, 100, "blue"),
                                    ("green-1", "127.0.0.1:%d" % hole.getsockname()[1], 100,
                                     "green")],
                                   shares=[("blue", 100), ("green", 0)]))
        admin = self.admin(v)
        reply, t_cmd, t_ok = admin.timed_command("shift api blue=50 green=50")
        ok = parse_ok(reply)
        self.assertIn("warm_us", ok)
        # Published after a short deadline, not after connect timeouts (2 s).
        self.assertLess(t_ok - t_cmd, 1.5, reply)
        self.assertLess(ok["warm_us"], 1500000, reply)
        self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 50, "green": 50})
        # The control thread is not stuck: the next change is prompt too.
        reply, t_cmd, t_ok = admin.timed_command("shift api blue=100 green=0")
        parse_ok(reply)
        self.assertLess(t_ok - t_cmd, 1.5, reply)
        v.stop()


if __name__ == "__main__":
    unittest.main()
