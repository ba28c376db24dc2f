"""Process lifecycle under a strict client (issue 6): reload (SIGHUP and
`veerctl reload`), binary upgrade (SIGUSR2 and `veerctl upgrade`),
maintenance mode, veer's own health endpoints, graceful shutdown, its abort
by a second signal and its deadline.

Every zero-failure test runs StrictLoad: keep-alive clients sending requests
back to back, each counted; a connection veer closes or resets while a
request is outstanding is a failure, a response with "Connection: close" is
not (the client reconnects). Every wait is a condition polled against a
deadline.
"""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

import veertest
from helpers import (HealthBackend, StrictLoad, Successor, admin_top, audit_records,
                     become_subreaper, health_text, parse_ok, pid_lines, pool_shares, pool_states,
                     refused, show_pool, shutdown_summary, veerctl)
from veertest import DEADLINE, Client, Reader, VeerTestCase, wait_for

LOAD_CLIENTS = 8
MIN_REQUESTS = 300   # per zero-failure test, over the whole load
AFTER_CHANGE = 20    # requests each load client finishes after a change was seen


SUBREAPER = False


def setUpModule():
    # The process an upgrade starts is orphaned when the old one exits: as
    # subreaper we inherit it and can read its exit status.
    global SUBREAPER
    SUBREAPER = become_subreaper()


def tearDownModule():
    become_subreaper(False)


# --- small helpers -------------------------------------------------------------


def backend_line(name, addr, weight=100, group=None):
    g = ' group = "%s";' % group if group else ""
    return '{ name = "%s"; address = "%s"; weight = %d;%s }' % (name, addr, weight, g)


def config_text(pools, listeners=None, workers=1, top="", quiet_ms=100):
    """A whole config: pools is [(name, [backend lines], extra pool text)];
    listeners [(address, pool)] (default one 127.0.0.1:0 per pool); the admin
    socket, audit log and state file in veer's {tmp}."""
    listeners = listeners or [("127.0.0.1:0", p[0]) for p in pools]
    if "timeouts" not in top:
        top = "timeouts = { quiet_ms = %d; };\n" % quiet_ms + top
    return ("workers = %d;\n" % workers + admin_top() + top +
            "listen = ( %s );\n" % ", ".join('{ address = "%s"; pool = "%s"; }' % l
                                             for l in listeners) +
            "pools = (\n%s\n);\n" % ",\n".join(
                '  { name = "%s"; %s backends = ( %s ); }' % (name, extra, ", ".join(bes))
                for name, bes, extra in pools))


def rewrite_config(v, text):
    """Replace veer's config file atomically (a reload never reads half a file)."""
    text = text.replace("{tmp}", v.tmp)
    tmp = v.config_path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, v.config_path)
    return text


def listener_ports(v, count):
    """{(address, pool): port} from the "listening on" lines, once count are there."""
    rx = re.compile(r"listening on (\S+):(\d+) \(pool (\S+?),")

    def ports():
        out = collections.OrderedDict()
        for l in v.log():
            m = rx.search(l)
            if m:
                out.setdefault((m.group(1), m.group(3)), int(m.group(2)))
        return out if len(out) >= count else None
    return wait_for(ports, what="%d listeners" % count)


def pool_port(v, pool, count):
    return [p for (addr, name), p in listener_ports(v, count).items() if name == pool][0]


class HostClient(Client):
    """veertest.Client to any loopback address (127.0.0.2 listeners)."""

    def __init__(self, host, port, timeout=DEADLINE):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = Reader(self.sock)


def refused_at(host, port):
    try:
        s = socket.create_connection((host, port), timeout=1)
    except OSError:
        return True
    try:
        s.settimeout(0.05)
        try:
            return s.recv(1) == b""
        except socket.timeout:
            return False
        except OSError:
            return True
    finally:
        s.close()


def sample(port, n, path="/sample"):
    """n requests on one connection: Counter of X-Backend."""
    c = Client(port)
    counts = collections.Counter()
    try:
        for i in range(n):
            r = c.request("GET", "%s/%d" % (path, i))
            if r is None or r.status != 200:
                raise AssertionError("sample request %d: %r" % (i, r and (r.status, r.body)))
            counts[r.header("X-Backend")] += 1
    finally:
        c.close()
    return counts


def key_values(text):
    """{key: int} of the key=N words of text."""
    return {k: int(v) for k, v in re.findall(r"\b([a-z_]+)=(\d+)\b", text)}


RELOAD_OK_RE = re.compile(r"\AOK gen=\d+(?: [a-z_]+=\d+)*\n\n\Z")


def reload_ok(reply):
    """The numbers of a reload's "OK gen=N backends_added=N ..." reply."""
    if not RELOAD_OK_RE.match(reply):
        raise AssertionError("not a reload OK reply: %r" % reply)
    out = key_values(reply)
    for k in ("gen", "backends_added", "backends_removed", "changed", "pools_added",
              "pools_removed", "listeners_added", "listeners_removed"):
        if k not in out:
            raise AssertionError("reload reply without %s: %r" % (k, reply))
    return out


def weights(doc):
    return {b["name"]: b["weight"] for b in doc["backends"]}


def stable_view(doc):
    """A show pool document without the figures that move with traffic."""
    return {"generation": doc["generation"], "groups": doc["groups"],
            "backends": [{k: v for k, v in b.items() if k not in ("active", "conns")}
                         for b in doc["backends"]]}


def get(port, path, host="127.0.0.1"):
    c = HostClient(host, port)
    try:
        return c.request("GET", path)
    finally:
        c.close()


def get_json(tc, port, path, status=200):
    r = get(port, path)
    tc.assertIsNotNone(r, path)
    tc.assertEqual(r.status, status, r.body)
    tc.assertEqual(r.header("Content-Type"), "application/json", path)
    return json.loads(r.body)


class GateBackend(veertest.Backend):
    """A backend that holds requests whose path starts with hold_prefix until
    gate is set and at least min_s seconds have passed since they arrived
    (a slow request of known length that cannot end before the test allows
    it); everything else is answered at once. Arrivals are recorded with
    their monotonic time."""

    def __init__(self, name, hold_prefix="/slow", min_s=0.0, max_s=None):
        self.gate = threading.Event()
        self.hold_prefix = hold_prefix
        self.min_s = min_s
        self.max_s = max_s
        self.arrivals = []
        super().__init__(name, self._handle)

    def _handle(self, conn, req):
        t = time.monotonic()
        with self.lock:
            self.arrivals.append((t, req.target))
        body = (self.name + "\n").encode()
        if req.target.startswith(self.hold_prefix):
            if self.max_s is not None:
                self.gate.wait(self.max_s)       # the request's own length
            else:
                self.gate.wait(DEADLINE * 4)
                left = self.min_s - (time.monotonic() - t)
                if left > 0:
                    time.sleep(left)             # the request lasts at least min_s
            body = b"done"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                     % (len(body), self.name.encode(), body))
        return True

    def held(self):
        with self.lock:
            return [a for a in self.arrivals if a[1].startswith(self.hold_prefix)]

    def close(self):
        self.gate.set()
        super().close()


class LifecycleTestCase(VeerTestCase):
    def gate_backend(self, name, **kw):
        b = GateBackend(name, **kw)
        self._cleanup.append(b.close)
        return b

    def load(self, port, n=LOAD_CLIENTS, **kw):
        ld = StrictLoad(port, n, **kw)
        self._cleanup.append(ld.stop)
        return ld

    def successor(self, v, old_pid):
        s = Successor(v, old_pid)
        self._cleanup.append(lambda: s.stop(signal.SIGKILL) if s.alive() else None)
        return s

    def in_thread(self, fn):
        """Run fn() on a thread; returns (thread, result dict with "value" or "error")."""
        out = {}

        def run():
            try:
                out["value"] = fn()
            except Exception as e:  # the test reports it
                out["error"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, out

    def wait_exit(self, v, timeout=DEADLINE):
        """veer's exit status once it has exited by itself (failing after timeout)."""
        try:
            return v.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail("veer pid %d still running %.0fs later:\n%s"
                      % (v.proc.pid, timeout, "\n".join(v.log())))

    def summary_of(self, lines):
        """The shutdown summary among lines() (a process's log lines). The lines
        come through a pipe that outlives the process (its successor shares
        it), so they may still be on their way when it has exited: wait."""
        try:
            return wait_for(lambda: shutdown_summary(lines()), timeout=10,
                            what="the shutdown summary line")
        except AssertionError:
            self.fail("no shutdown summary:\n" + "\n".join(lines()))

    def stop_successor(self, new):
        """SIGTERM the process an upgrade started; it exits 0 (when we can see
        its status) with nothing aborted."""
        rc = new.stop()
        if SUBREAPER:
            self.assertEqual(rc, 0, "\n".join(new.log()))
        s = self.summary_of(new.log)
        self.assertEqual(s["aborted"], 0, s)

    def assert_zero_failed(self, *loads, minimum=MIN_REQUESTS):
        total = sum(ld.count() for ld in loads)
        for ld in loads:
            self.assertEqual(ld.failures(), [], ld.describe())
        self.assertGreaterEqual(total, minimum, "too little load to mean anything")

    def assert_clean_exit_log(self, v):
        log = "\n".join(v.log())
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "panic at"):
            self.assertNotIn(bad, log)


# --- reload ------------------------------------------------------------------


class ReloadTest(LifecycleTestCase):
    def test_sighup_changed_weights_under_load(self):
        a, b = self.backend("a"), self.backend("b")

        def text(wa, wb):
            return config_text([("api", [backend_line("a", a.address, wa),
                                         backend_line("b", b.address, wb)], "")])
        v = self.veer(text(100, 100))
        sock = v.admin_socket
        self.assertEqual(weights(show_pool(sock)), {"a": 100, "b": 100})
        before = sample(v.port, 400)
        self.assertEqual(before, {"a": 200, "b": 200})

        ld = self.load(v.port)
        ld.wait_count(200)
        rewrite_config(v, text(300, 100))
        v.send_signal(signal.SIGHUP)
        line = v.wait_log(r"reloaded .*: gen=\d+ ")
        t_seen = time.monotonic()
        stats = key_values(line.split("reloaded ", 1)[1])
        self.assertGreaterEqual(stats["changed"], 1, line)
        self.assertEqual((stats["backends_added"], stats["backends_removed"],
                          stats["listeners_added"], stats["listeners_removed"]), (0, 0, 0, 0), line)
        doc = show_pool(sock)
        self.assertEqual(weights(doc), {"a": 300, "b": 100})
        self.assertEqual({x["name"]: x["state"] for x in doc["backends"]},
                         {"a": "READY", "b": "READY"})
        ld.wait_each_sent_after(t_seen, AFTER_CHANGE)
        ld.stop()
        self.assert_zero_failed(ld)
        # Requests sent after the reload was seen follow 3:1 (one worker: exact cycles).
        after = collections.Counter(r.backend for r in ld.all() if r.sent > t_seen)
        self.assertAlmostEqual(after["a"] / (after["a"] + after["b"]), 0.75, delta=0.05,
                               msg=str(after))
        counted = sample(v.port, 400)
        self.assertLessEqual(abs(counted["a"] - 300), 2, counted)
        self.assertLessEqual(abs(counted["b"] - 100), 2, counted)
        self.assertNotIn("reload failed", "\n".join(v.log()))
        v.stop()

    def test_broken_config_reload_keeps_running_config_under_load(self):
        a, b = self.backend("a"), self.backend("b")
        good = config_text([("api", [backend_line("a", a.address, 100),
                                     backend_line("b", b.address, 100)], "")])
        v = self.veer(good)
        sock = v.admin_socket
        before = stable_view(show_pool(sock))
        ld = self.load(v.port)
        ld.wait_count(200)

        # SIGHUP with a syntax error: logged with FILE:LINE, nothing changes.
        lines = good.rstrip("\n").split("\n")
        broken = "\n".join(lines[:3] + ["this is not = libconfig ;;"] + lines[3:]) + "\n"
        rewrite_config(v, broken)
        v.send_signal(signal.SIGHUP)
        line = v.wait_log(r"reload failed")
        self.assertRegex(line, r"reload failed.*%s:4: " % re.escape(v.config_path))
        t1 = time.monotonic()
        ld.wait_each_sent_after(t1, AFTER_CHANGE)

        # veerctl reload with an unknown key: ERR FILE:LINE, exit 1.
        bogus = good + "no_such_key = 1;\n"
        rewrite_config(v, bogus)
        p = veerctl(sock, "reload")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        n = bogus.count("\n")
        self.assertRegex(p.stdout, r"\AERR %s:%d: .*no_such_key.*\n\n\Z"
                         % (re.escape(v.config_path), n))
        t2 = time.monotonic()
        ld.wait_each_sent_after(t2, AFTER_CHANGE)
        ld.stop()
        self.assert_zero_failed(ld)
        # The service is unchanged: same generation, backends, weights, states.
        self.assertEqual(stable_view(show_pool(sock)), before)
        self.assertNotRegex("\n".join(v.log()), r"reloaded ")
        self.assertEqual({r.backend for r in ld.all()}, {"a", "b"})
        # And the running veer still reloads a good file.
        rewrite_config(v, good.replace("weight = 100; }", "weight = 50; }", 1))
        p = veerctl(sock, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(reload_ok(p.stdout)["gen"], before["generation"] + 1)
        self.assertEqual(weights(show_pool(sock)), {"a": 50, "b": 100})
        v.stop()

    def test_reload_to_an_access_log_that_cannot_open_is_refused_whole(self):
        a = self.backend("a")
        log1 = "{tmp}/access-1.log"
        good = config_text([("api", [backend_line("a", a.address, 100)], "")],
                           top='access_log = "%s";\n' % log1)
        v = self.veer(good)
        sock = v.admin_socket
        before = stable_view(show_pool(sock))
        # A new access log in a directory that does not exist, and a weight change.
        bad = good.replace(log1, "{tmp}/no-such-dir/access.log").replace(
            "weight = 100; }", "weight = 50; }", 1)
        rewrite_config(v, bad.replace("{tmp}", v.tmp))
        p = veerctl(sock, "reload")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\AERR %s: access_log %s/no-such-dir/access\.log: "
                         r"No such file or directory\n\n\Z"
                         % (re.escape(v.config_path), re.escape(v.tmp)))
        # Nothing changed: same generation and weights, requests still logged to the old file.
        self.assertEqual(stable_view(show_pool(sock)), before)
        self.assertEqual(get(v.port, "/after-refused-reload").status, 200)
        path = log1.replace("{tmp}", v.tmp)

        def logged():
            with open(path) as f:
                return "/after-refused-reload" in f.read()
        wait_for(logged, what="the request in the old access log")
        v.stop()

    def test_reload_adds_listener_and_backend_and_drains_removed_backend(self):
        a = self.backend("a")
        b = self.gate_backend("b", hold_prefix="/hold")
        c = self.backend("c")

        def text(backends, listeners):
            return config_text([("api", backends, "")], listeners=listeners)
        la = backend_line("a", a.address)
        lb = backend_line("b", b.address)
        lc = backend_line("c", c.address)
        one = [("127.0.0.1:0", "api")]
        two = one + [("127.0.0.2:0", "api")]
        v = self.veer(text([la, lb], one))
        sock = v.admin_socket
        ld = self.load(v.port)
        ld.wait_count(200)

        # A request held in flight on b, so b's drain is observable.
        holder = self.client(v.port)

        def hold_on_b():
            for i in range(200):
                r = holder.request("GET", "/hold/%d" % i)
                if r is None or r.status != 200 or r.header("X-Backend") == "b":
                    return r
            return None
        th, held = self.in_thread(hold_on_b)
        wait_for(lambda: b.held(), what="a request held on b")

        rewrite_config(v, text([la, lc], two))
        p = veerctl(sock, "reload")
        t_ok = time.monotonic()
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        st = reload_ok(p.stdout)
        self.assertEqual((st["backends_added"], st["backends_removed"], st["pools_added"],
                          st["pools_removed"], st["listeners_added"], st["listeners_removed"]),
                         (1, 1, 0, 0, 1, 0), p.stdout)
        # The new listener is logged with its port and serves.
        port2 = wait_for(lambda: listener_ports(v, 2).get(("127.0.0.2", "api")),
                         what="the new listener")
        hc = HostClient("127.0.0.2", port2)
        self._cleanup.append(hc.close)
        for i in range(10):
            r = hc.request("GET", "/new-listener/%d" % i)
            self.assertEqual(r.status, 200, r.body)
            self.assertIn(r.header("X-Backend"), ("a", "c"))
        # b drains while its request is in flight; c is admitted (no health checks).
        states = pool_states(show_pool(sock))
        self.assertEqual(states, {"a": "READY", "b": "DRAINING", "c": "READY"})
        b.gate.set()
        th.join(DEADLINE)
        r = held.get("value")
        self.assertIsNotNone(r, held)
        self.assertEqual((r.status, r.header("X-Backend"), r.body), (200, "b", b"done"))
        wait_for(lambda: "b" not in pool_states(show_pool(sock)), what="b to go away")
        t_gone = time.monotonic()
        n_b = len(b.requests)
        self.assertEqual(set(pool_states(show_pool(sock))), {"a", "c"})
        ld.wait_each_sent_after(t_gone, AFTER_CHANGE)
        wait_for(lambda: any(x.backend == "c" and x.sent > t_ok for x in ld.all()),
                 what="load to reach the new backend c")

        # Removing the listener again: it stops accepting, the first keeps serving.
        rewrite_config(v, text([la, lc], one))
        p = veerctl(sock, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)
        st = reload_ok(p.stdout)
        self.assertEqual((st["listeners_added"], st["listeners_removed"]), (0, 1), p.stdout)
        wait_for(lambda: refused_at("127.0.0.2", port2), what="the removed listener to refuse")
        t3 = time.monotonic()
        ld.wait_each_sent_after(t3, AFTER_CHANGE)
        ld.stop()
        self.assert_zero_failed(ld)
        # Nothing sent after the reload's OK reached b, nothing at all after it went away.
        recs = ld.by_path()
        late = [t for t in (q.target for q in b.requests)
                if t in recs and recs[t].sent > t_ok]
        self.assertEqual(late, [], "requests sent after the reload OK reached removed b")
        self.assertEqual(len(b.requests), n_b, "b got requests after it left the pool")
        v.stop()

    def test_reload_dropping_half_a_large_pool_removes_them_in_one_publish(self):
        # The backends a reload drops go away once DRAINED. One at a time
        # (a publish, a state file write and a shift of the backend table
        # each) dropping 1,000 of 2,000 cost 1,000 publishes and held the
        # control thread for seconds; together they cost one.
        n = 2000
        lines = [backend_line("b%d" % i, "10.0.%d.%d:80" % (i // 256, i % 256)) for i in range(n)]
        v = self.veer(config_text([("api", lines, "")]))
        sock = v.admin_socket
        self.assertEqual(len(show_pool(sock)["backends"]), n)
        rewrite_config(v, config_text([("api", lines[:n // 2], "")]))
        p = veerctl(sock, "reload")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        st = reload_ok(p.stdout)
        self.assertEqual(st["backends_removed"], n // 2, p.stdout)
        # Nothing is in flight to them: they are DRAINED at once and go away.
        doc = wait_for(lambda: (lambda d: d if len(d["backends"]) == n // 2 else None)(
            show_pool(sock)), what="the dropped backends to go away")
        self.assertEqual([b["name"] for b in doc["backends"]], ["b%d" % i for i in range(n // 2)])
        self.assertEqual(set(pool_states(doc).values()), {"READY"})
        self.assertLessEqual(doc["generation"], st["gen"] + 1,
                             "one publish for the whole batch after the reload's")
        self.assertEqual(sum("removed (no longer in the configuration)" in line
                             for line in v.log()), n // 2)
        v.stop()

    def test_reload_adds_second_listener_on_same_address_text(self):
        # Two "127.0.0.1:0" listeners are two sockets at start-up; a reload
        # that adds the second one must open it too.
        a = self.backend("a")
        la = backend_line("a", a.address)
        v = self.veer(config_text([("api", [la], "")]))
        port1 = v.port
        rewrite_config(v, config_text([("api", [la], "")],
                                      listeners=[("127.0.0.1:0", "api")] * 2))
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)
        st = reload_ok(p.stdout)
        self.assertEqual((st["listeners_added"], st["listeners_removed"]), (1, 0), p.stdout)
        rx = re.compile(r"listening on 127\.0\.0\.1:(\d+) ")
        port2 = wait_for(lambda: next((int(m.group(1)) for m in map(rx.search, v.log())
                                       if m and int(m.group(1)) != port1), None),
                         what="a second listener")
        self.assertEqual(get(port2, "/second").status, 200)
        self.assertEqual(get(port1, "/first").status, 200)
        v.stop()


# --- binary upgrade --------------------------------------------------------------


    def test_changes_and_rollback_on_a_pool_a_reload_added(self):
        """The rollback history is kept per pool: a pool a reload added has
        one too (it was indexed past the end of the array sized at start-up,
        a heap overflow under ASan)."""
        a = self.backend("a")
        x = self.backend("x")
        api = ("api", [backend_line("a", a.address)], "")
        v = self.veer(config_text([api]))
        sock = v.admin_socket
        rewrite_config(v, config_text([api, ("two", [backend_line("x", x.address)], "")]))
        self.assertEqual(reload_ok(veerctl(sock, "reload").stdout)["pools_added"], 1)
        for w in (10, 20, 30):
            p = veerctl(sock, "set", "weight", "two/x", str(w))
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        p = veerctl(sock, "rollback", "two")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        doc = json.loads(veerctl(sock, "show", "pool", "two", "--json").stdout)
        self.assertEqual([b["weight"] for b in doc["backends"]], [20])
        self.assertEqual(v.stop(), 0)

    def test_pool_added_back_without_health_stops_the_checks_of_its_earlier_life(self):
        """A pool removed by a reload (its backend still draining a request)
        and added back by a later one without its `health` block: its backend
        is no longer checked. The checks used to go on (with the settings of
        the configuration that had them) and kept it DOWN once put back in
        rotation."""
        release = threading.Event()
        a = self.backend("a")
        o = HealthBackend("o", healthy=True,
                          hold=lambda req: release.wait(60) if req.target == "/hold" else None)
        self._cleanup.append(o.close)
        self._cleanup.append(release.set)
        api = ("api", [backend_line("a", a.address)], "")
        v = self.veer(config_text([api], listeners=[("127.0.0.1:0", "api")]))
        sock = v.admin_socket
        listeners = [("127.0.0.1:0", "api"), ("127.0.0.1:0", "old")]
        checked = ("old", [backend_line("o", o.address)],
                   health_text(interval_ms=50, rise=1, fall=1))
        rewrite_config(v, config_text([api, checked], listeners=listeners))
        reload_ok(veerctl(sock, "reload").stdout)
        wait_for(lambda: len(v.ports) >= 2, what="the old pool's listener")

        def state():
            doc = json.loads(veerctl(sock, "show", "pool", "old", "--json").stdout)
            return pool_states(doc).get("o")
        wait_for(lambda: state() == "READY", what="o READY")
        holder = self.client(v.ports[1])
        holder.send(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: any(t == "/hold" for _, t, _ in o.traffic), what="a request held on o")
        rewrite_config(v, config_text([api], listeners=listeners[:1]))
        reload_ok(veerctl(sock, "reload").stdout)
        # o drains its request; its checks fail from now on.
        o.set_healthy(False)
        n = len(o.checks)
        wait_for(lambda: len(o.checks) >= n + 2, what="failing checks of o")
        rewrite_config(v, config_text([api, ("old", checked[1], "")], listeners=listeners))
        reload_ok(veerctl(sock, "reload").stdout)
        wait_for(lambda: len(v.ports) >= 3, what="the old pool's listener again")
        self.assertEqual(state(), "DRAINING")
        p = veerctl(sock, "set", "state", "old/o", "ready")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(state(), "READY", "o is still checked (and failing)")
        r = self.client(v.ports[2]).request("GET", "/o")
        self.assertEqual((r.status, r.header("X-Backend")), (200, "o"), r.body)
        release.set()
        self.assertEqual(holder.response().status, 200)
        self.assertEqual(v.stop(), 0)

    def test_connection_on_removed_listener_and_pool_outlives_later_reloads(self):
        """Issue 15 item 5: replaced configurations are freed. A keep-alive
        connection accepted on a listener a reload removed, routed to a pool
        that reload removed too (draining: veer answers 503), keeps being
        answered across later reloads (the removed pool keeps its
        configuration; the listener forgets its own); under ASan a use after
        free ends veer with an error."""
        a = self.backend("a")
        o = self.backend("o")
        pools = [("api", [backend_line("a", a.address)], ""),
                 ("old", [backend_line("o", o.address)], "")]
        v = self.veer(config_text(pools[:1], listeners=[("127.0.0.1:0", "api")]))
        sock = v.admin_socket
        # Not in the configuration veer started with (that one is kept until a restart).
        rewrite_config(v, config_text(pools, listeners=[("127.0.0.1:0", "api"),
                                                        ("127.0.0.1:0", "old")]))
        reload_ok(veerctl(sock, "reload").stdout)
        wait_for(lambda: len(v.ports) >= 2, what="the second listener")
        c = self.client(v.ports[1])
        r = c.request("GET", "/o1")
        self.assertEqual((r.status, r.header("X-Backend")), (200, "o"), r.body)
        rewrite_config(v, config_text(pools[:1], listeners=[("127.0.0.1:0", "api")]))
        for i in range(12):
            reload_ok(veerctl(sock, "reload").stdout)
            # The removed pool drains: no new requests reach o, the answer is veer's 503.
            r = c.request("GET", "/o%d" % (i + 2))
            self.assertEqual((r.status, r.header("X-Backend")), (503, None), i)
        r = self.client(v.port).request("GET", "/a")
        self.assertEqual((r.status, r.header("X-Backend")), (200, "a"))
        c.close()
        self.assertEqual(v.stop(), 0)
        self.assert_clean_exit_log(v)


class UpgradeTest(LifecycleTestCase):
    def test_veerctl_upgrade_under_load(self):
        blue, green = self.backend("blue-1"), self.backend("green-1")
        v = self.veer(config_text(
            [("api", [backend_line("blue-1", blue.address, 100, "blue"),
                      backend_line("green-1", green.address, 100, "green")],
              "shares = { blue = 100; green = 0; };")], workers=2))
        sock = v.admin_socket
        old_pid = v.proc.pid
        p = veerctl(sock, "shift", "api", "blue=70", "green=30")
        self.assertEqual(p.returncode, 0, p.stdout)
        gen = parse_ok(p.stdout)["gen"]
        ld = self.load(v.port)
        ld.wait_count(200)

        ctl = subprocess.Popen([veertest.VEERCTL_BIN, "-s", sock, "upgrade"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._cleanup.append(lambda: ctl.poll() is None and ctl.kill())
        new = self.successor(v, old_pid)
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        t_exit = time.monotonic()
        self.assertTrue(new.alive())
        new.wait_log(r"upgrade: taking over 1 listeners and the admin socket")
        new.wait_log(r"listening on 127\.0\.0\.1:%d \(.*inherited\)" % v.port)
        new.wait_log(r"admin socket %s \(inherited\)" % re.escape(sock))
        old = pid_lines(v, old_pid)
        self.assertTrue(any(re.search(r"upgrade: started \S+ as pid %d$" % new.pid, l)
                            for l in old), "\n".join(old))
        summary = self.summary_of(lambda: pid_lines(v, old_pid))
        self.assertGreaterEqual(summary["handed_over"], 1, summary)
        self.assertEqual(summary["aborted"], 0, summary)

        # The new process serves, answers on the same admin socket path, and
        # kept the shift made before the upgrade.
        ld.wait_each_sent_after(t_exit, AFTER_CHANGE)
        doc = show_pool(sock)
        self.assertEqual(pool_shares(doc), {"blue": 70, "green": 30})
        self.assertGreaterEqual(doc["generation"], gen)
        self.assertEqual(get(v.port, "/api/health/readiness").status, 200)
        ld.stop()
        self.assert_zero_failed(ld)
        after = collections.Counter(r.backend for r in ld.all() if r.sent > t_exit)
        self.assertAlmostEqual(after["green-1"] / sum(after.values()), 0.30, delta=0.08,
                               msg=str(after))
        # veerctl got its answer and ended (it must not wait on the new process).
        try:
            out, err = ctl.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.fail("veerctl upgrade still waiting %.0fs after the old veer exited "
                      "(the admin connection stays open in the new process)" % DEADLINE)
        self.assertEqual(ctl.returncode, 0, out + err)
        self.assertRegex(out, r"\AOK started \S+ as pid %d\n\n\Z" % new.pid)

        self.stop_successor(new)
        v.stop()

    def test_upgrade_closes_inherited_listeners_the_new_config_drops(self):
        # The new process inherits every listening socket; one its config no
        # longer has must close (not linger in the port's queue unaccepted).
        a = self.backend("a")
        la = backend_line("a", a.address)
        v = self.veer(config_text([("api", [la], "")],
                                  listeners=[("127.0.0.1:0", "api"), ("127.0.0.2:0", "api")]))
        old_pid = v.proc.pid
        ports = listener_ports(v, 2)
        port1, port2 = ports[("127.0.0.1", "api")], ports[("127.0.0.2", "api")]
        self.assertEqual(get(port2, "/before", host="127.0.0.2").status, 200)
        rewrite_config(v, config_text([("api", [la], "")]))
        v.send_signal(signal.SIGUSR2)
        new = self.successor(v, old_pid)
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        new.wait_log(r"upgrade: closing the 1 inherited sockets of 127\.0\.0\.2:0 "
                     r"\(not in this config\)")
        wait_for(lambda: refused_at("127.0.0.2", port2),
                 what="the dropped listener to refuse once the old process is gone")
        self.assertEqual(get(port1, "/after").status, 200)
        self.stop_successor(new)
        v.stop()

    def test_sigusr2_hands_idle_keepalive_connections_over(self):
        a = self.backend("a")
        v = self.veer(config_text([("api", [backend_line("a", a.address)], "")], workers=2))
        old_pid = v.proc.pid
        clients = [self.client(v.port) for _ in range(20)]
        for i, c in enumerate(clients):
            r = c.request("GET", "/before/%d" % i)
            self.assertEqual(r.status, 200)
            self.assertNotEqual((r.header("Connection") or "").lower(), "close")
        v.send_signal(signal.SIGUSR2)
        new = self.successor(v, old_pid)
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        summary = self.summary_of(lambda: pid_lines(v, old_pid))
        self.assertEqual(summary["handed_over"], 20, summary)
        self.assertEqual((summary["in_flight"], summary["aborted"]), (0, 0), summary)
        # The old process is gone: each of the same connections is served by the new one.
        for i, c in enumerate(clients):
            r = c.request("GET", "/after/%d" % i)
            self.assertIsNotNone(r, "connection %d closed after the upgrade" % i)
            self.assertEqual((r.status, r.body), (200, b"a\n"), i)
            self.assertNotEqual((r.header("Connection") or "").lower(), "close", i)
        targets = [q.target for q in a.requests]
        self.assertEqual(sorted(t for t in targets if t.startswith("/after/")),
                         sorted("/after/%d" % i for i in range(20)))
        for c in clients:
            c.close()
        self.assertTrue(new.alive())
        self.stop_successor(new)
        v.stop()

    def test_upgrade_hands_over_more_idle_connections_than_the_channel_holds(self):
        # The handover channel (a SEQPACKET socketpair) holds about 170 passed
        # descriptors at the default buffer size; 600 idle connections need the
        # old process to wait for room and offer them again, not close them. A
        # long quiet period: an idle connection is closed only if that failed.
        n = 600
        a = self.backend("a")
        v = self.veer(config_text([("api", [backend_line("a", a.address)], "")], workers=2,
                                  quiet_ms=20000))
        old_pid = v.proc.pid
        clients = [self.client(v.port) for _ in range(n)]
        for i, c in enumerate(clients):
            self.assertEqual(c.request("GET", "/before/%d" % i).status, 200)
        v.send_signal(signal.SIGUSR2)
        new = self.successor(v, old_pid)
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        summary = self.summary_of(lambda: pid_lines(v, old_pid))
        self.assertEqual(summary["handed_over"], n, summary)
        self.assertLess(summary["total_ms"], 10000, summary)  # none waited for the quiet period
        for i, c in enumerate(clients):
            r = c.request("GET", "/after/%d" % i)
            self.assertIsNotNone(r, "connection %d closed after the upgrade" % i)
            self.assertEqual(r.status, 200, i)
        for c in clients:
            c.close()
        self.stop_successor(new)
        v.stop()


# --- maintenance -------------------------------------------------------------------


class MaintenanceTest(LifecycleTestCase):
    def test_maintenance_cycle_under_load(self):
        a = self.gate_backend("a", hold_prefix="/slow")
        w = self.backend("w")
        v = self.veer(config_text(
            [("api", [backend_line("a", a.address)], ""),
             ("web", [backend_line("w", w.address)], "")], workers=2,
            top='maintenance = { allow = ( "/admin" ); retry_after = 30; };\n'))
        sock = v.admin_socket
        api, web = pool_port(v, "api", 2), pool_port(v, "web", 2)
        normal = self.load(api, 4, path="/load", accept=(200, 503))
        admin = self.load(api, 2, path="/admin/load")
        live = self.load(api, 1, path="/api/health/liveness", unique=False)
        other = self.load(web, 1, path="/web")
        loads = (normal, admin, live, other)
        for ld in loads:
            ld.wait_each_sent_after(0, 5)
        slow = self.client(api)
        ts, slow_res = self.in_thread(lambda: slow.request("GET", "/slow"))
        wait_for(lambda: a.held(), what="a request in flight")

        t_on0 = time.monotonic()
        p = veerctl(sock, "maintenance", "on", "api", "--retry-after", "7")
        t_on1 = time.monotonic()
        self.assertEqual(p.returncode, 0, p.stdout)
        parse_ok(p.stdout)
        for ld in loads:
            ld.wait_each_sent_after(t_on1, 10)
        # A direct look while it is on.
        r = get(api, "/direct")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("Retry-After"), "7")
        self.assertEqual(json.loads(r.body), {"error": "maintenance", "status": 503,
                                              "retry_after": 7})
        self.assertEqual(get(api, "/admin/direct").status, 200)
        self.assertEqual(get(web, "/direct").status, 200)
        status = get_json(self, api, "/api/health/status")
        self.assertEqual(status["maintenance"], {"all": False, "pools": {"api": True,
                                                                          "web": False}})
        # The request in flight when it went on finishes normally.
        a.gate.set()
        ts.join(DEADLINE)
        r = slow_res.get("value")
        self.assertIsNotNone(r, slow_res)
        self.assertEqual((r.status, r.body), (200, b"done"))
        # Persisted (state file) and audited.
        state = os.path.join(v.tmp, "state")

        def state_text():
            try:
                with open(state) as f:
                    return f.read()
            except FileNotFoundError:
                return ""
        wait_for(lambda: re.search(r"pool api\n(.*\n)*?maint on 7\n", state_text()),
                 what="maint on 7 in the state file")

        t_off0 = time.monotonic()
        p = veerctl(sock, "maintenance", "off", "api")
        t_off1 = time.monotonic()
        self.assertEqual(p.returncode, 0, p.stdout)
        parse_ok(p.stdout)
        for ld in loads:
            ld.wait_each_sent_after(t_off1, 10)
        for ld in loads:
            ld.stop()

        for ld in loads:
            self.assertEqual(ld.errors(), [], ld.describe(ld.errors()))
        for ld in (admin, live, other):
            self.assert_zero_failed(ld, minimum=10)
        self.assertTrue(all(r.backend == "a" for r in admin.all()))
        self.assertTrue(all(r.backend == "w" for r in other.all()))
        # veer answers liveness itself: no backend ever sees it.
        self.assertEqual([r for r in live.all() if r.backend is not None], [],
                         live.describe([r for r in live.all() if r.backend is not None]))
        refusals = [r for r in normal.all() if r.status == 503]
        outside = [r for r in refusals if not (r.done > t_on0 and r.sent < t_off1)]
        self.assertEqual(outside, [], normal.describe(outside))
        for r in refusals:
            self.assertEqual((r.retry_after, r.ctype), ("7", "application/json"), r)
            self.assertEqual(json.loads(r.body), {"error": "maintenance", "status": 503,
                                                  "retry_after": 7})
        during = [r for r in normal.all() if r.sent > t_on1 and r.done < t_off0]
        self.assertGreaterEqual(len(during), 4 * 10)
        self.assertEqual([r for r in during if r.status != 503], [])
        after = [r for r in normal.all() if r.sent > t_off1]
        self.assertGreaterEqual(len(after), 4 * 10)
        self.assertEqual([r for r in after if r.status != 200], [], normal.describe(after))
        before = [r for r in normal.all() if r.done < t_on0]
        self.assertEqual([r for r in before if r.status != 200], [])
        self.assertGreaterEqual(sum(ld.count() for ld in loads), MIN_REQUESTS)
        # Audited; off is no longer in the state file.
        _, recs = audit_records(os.path.join(v.tmp, "audit.log"))
        cmds = [json.dumps(x) for x in recs]
        self.assertTrue(any("maintenance on api" in c for c in cmds), cmds)
        self.assertTrue(any("maintenance off api" in c for c in cmds), cmds)
        wait_for(lambda: "maint on" not in state_text(), what="maintenance off in the state file")
        v.stop()


# --- health endpoints -----------------------------------------------------------------


class HealthEndpointsTest(LifecycleTestCase):
    STATES = {"PENDING", "READY", "DOWN", "DRAINING", "DRAINED", "MAINT"}

    def counts(self, **nonzero):
        out = dict.fromkeys(self.STATES, 0)
        out.update(nonzero)
        return out

    def test_liveness_readiness_status(self):
        a, w1, w2 = self.backend("a"), self.backend("w1"), self.backend("w2")
        t_start = time.monotonic()
        v = self.veer(config_text(
            [("api", [backend_line("a", a.address)], ""),
             ("web", [backend_line("w1", w1.address), backend_line("w2", w2.address)], "")],
            workers=2))
        t_ready = time.monotonic()
        sock = v.admin_socket
        api, web = pool_port(v, "api", 2), pool_port(v, "web", 2)
        version = subprocess.run([veertest.VEER_BIN, "-v"], capture_output=True,
                                 text=True).stdout.split()[1]
        for port in (api, web):
            self.assertEqual(get_json(self, port, "/api/health/liveness"), {"status": "alive"})
            self.assertEqual(get_json(self, port, "/api/health/readiness"), {"status": "ready"})
        t_asked = time.monotonic()
        st = get_json(self, api, "/api/health/status")
        t_got = time.monotonic()
        self.assertEqual(set(st), {"version", "uptime_s", "workers", "generation",
                                   "shutting_down", "maintenance", "pools"})
        self.assertEqual(st["version"], version)
        self.assertIsInstance(st["uptime_s"], (int, float))
        # veer started after t_start and was ready by t_ready (uptime has 1 ms steps).
        self.assertGreaterEqual(st["uptime_s"], t_asked - t_ready - 0.001, st)
        self.assertLessEqual(st["uptime_s"], t_got - t_start + 0.001, st)
        self.assertEqual(st["workers"], 2)
        self.assertEqual(st["generation"], show_pool(sock)["generation"])
        self.assertIs(st["shutting_down"], False)
        self.assertEqual(st["maintenance"], {"all": False, "pools": {"api": False, "web": False}})
        self.assertEqual(st["pools"], [
            {"name": "api", "eligible": 1, "backends": self.counts(READY=1)},
            {"name": "web", "eligible": 2, "backends": self.counts(READY=2)}])

        p = veerctl(sock, "set", "state", "web/w2", "maint")
        self.assertEqual(p.returncode, 0, p.stdout)
        gen = parse_ok(p.stdout)["gen"]
        st = get_json(self, web, "/api/health/status")
        self.assertEqual(st["generation"], gen)
        self.assertEqual(st["pools"][1], {"name": "web", "eligible": 1,
                                          "backends": self.counts(READY=1, MAINT=1)})
        self.assertEqual(get_json(self, api, "/api/health/readiness"), {"status": "ready"})

        # The api pool's only backend in maint: not ready, and the reason names the pool.
        # (--force: it leaves the pool's only group with a share and no eligible backend)
        p = veerctl(sock, "set", "state", "api/a", "maint", "--force")
        self.assertEqual(p.returncode, 0, p.stdout)
        for port in (api, web):
            doc = get_json(self, port, "/api/health/readiness", 503)
            self.assertEqual(doc["status"], "not ready")
            self.assertIn("api", doc["reason"])
            self.assertEqual(get_json(self, port, "/api/health/liveness"), {"status": "alive"})
        st = get_json(self, api, "/api/health/status")
        self.assertEqual(st["pools"][0], {"name": "api", "eligible": 0,
                                          "backends": self.counts(MAINT=1)})
        p = veerctl(sock, "set", "state", "api/a", "ready")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(get_json(self, api, "/api/health/readiness"), {"status": "ready"})

        p = veerctl(sock, "maintenance", "on")
        self.assertEqual(p.returncode, 0, p.stdout)
        st = get_json(self, api, "/api/health/status")
        self.assertEqual(st["maintenance"], {"all": True, "pools": {"api": True, "web": True}})
        self.assertEqual(get_json(self, api, "/api/health/readiness"), {"status": "ready"})
        p = veerctl(sock, "maintenance", "off")
        self.assertEqual(p.returncode, 0, p.stdout)
        # veer answered all of these itself.
        for b in (a, w1, w2):
            self.assertEqual([q.target for q in b.requests if "health" in q.target], [])
        v.stop()

    def test_disabled_or_moved_health_endpoints_are_proxied(self):
        a = self.backend("a")
        v = self.veer(config_text([("api", [backend_line("a", a.address)], "")],
                                  top="health_endpoints = { enabled = false; };\n"))
        for path in ("/api/health/liveness", "/api/health/readiness", "/api/health/status"):
            r = get(v.port, path)
            self.assertEqual((r.status, r.header("X-Backend"), r.body), (200, "a", b"a\n"), path)
        self.assertEqual([q.target for q in a.requests],
                         ["/api/health/liveness", "/api/health/readiness", "/api/health/status"])
        v.stop()

        b = self.backend("b")
        v = self.veer(config_text([("api", [backend_line("b", b.address)], "")],
                                  top='health_endpoints = { prefix = "/_veer"; };\n'))
        self.assertEqual(get_json(self, v.port, "/_veer/readiness"), {"status": "ready"})
        r = get(v.port, "/api/health/readiness")
        self.assertEqual((r.status, r.header("X-Backend")), (200, "b"))
        self.assertEqual([q.target for q in b.requests], ["/api/health/readiness"])
        v.stop()


# --- graceful shutdown -------------------------------------------------------------------


class ShutdownTest(LifecycleTestCase):
    def start_slow(self, v, b, path="/slow"):
        c = self.client(v.port)
        t, out = self.in_thread(lambda: c.request("GET", path))
        wait_for(lambda: b.held(), what="the slow request at the backend")
        return c, t, out

    def test_sigterm_with_request_in_flight(self):
        b = self.gate_backend("b", hold_prefix="/slow", min_s=2.0)
        v = self.veer(config_text([("api", [backend_line("b", b.address)], "")], workers=2,
                                  quiet_ms=5000))
        idle = self.client(v.port)
        self.assertEqual(idle.request("GET", "/warm").status, 200)
        _, t, out = self.start_slow(v, b)
        arrived = b.held()[0][0]
        v.send_signal(signal.SIGTERM)
        v.wait_log(r"SIGTERM: graceful shutdown")
        t_seen = time.monotonic()  # veer got the signal before this
        wait_for(lambda: refused(v.port), what="new connections refused")
        # The next request on an idle keep-alive connection: not ready, and closed after.
        r = idle.request("GET", "/api/health/readiness")
        self.assertIsNotNone(r, "idle connection closed without an answer during shutdown")
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(json.loads(r.body), {"status": "not ready", "reason": "shutting down"})
        self.assertEqual((r.header("Connection") or "").lower(), "close")
        self.assertTrue(idle.is_closed())
        self.assertIsNone(v.proc.poll(), "veer exited with a request in flight")
        b.gate.set()
        t.join(DEADLINE)
        r = out.get("value")
        self.assertIsNotNone(r, out)
        self.assertEqual((r.status, r.body), (200, b"done"))
        self.assertEqual((r.header("Connection") or "").lower(), "close")
        self.assertEqual(self.wait_exit(v), 0, "\n".join(v.log()))
        self.assertGreaterEqual(time.monotonic() - arrived, 2.0)
        self.assertEqual(v.stop(), 0)
        last = v.log()[-1]
        self.assertIn("shutdown summary:", last)
        s = shutdown_summary([last])
        self.assertEqual((s["in_flight"], s["completed"], s["aborted"], s["tunnels_closed"],
                          s["handed_over"]), (1, 1, 0, 0, 0), last)
        # It waited for the 2 s request: at least what was left of it at the signal.
        self.assertGreaterEqual(s["total_ms"], (arrived + 2.0 - t_seen) * 1000 - 20, last)

    def test_second_signal_aborts(self):
        b = self.gate_backend("b", hold_prefix="/slow")
        v = self.veer(config_text([("api", [backend_line("b", b.address)], "")], workers=2))
        c, t, out = self.start_slow(v, b)
        v.send_signal(signal.SIGTERM)
        v.wait_log(r"SIGTERM: graceful shutdown")
        wait_for(lambda: refused(v.port), what="new connections refused")
        self.assertIsNone(v.proc.poll())
        t0 = time.monotonic()
        v.send_signal(signal.SIGTERM)
        rc = self.wait_exit(v)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 1, "\n".join(v.log()))
        self.assertLess(elapsed, 2.5)
        t.join(DEADLINE)
        self.assertIsNone(out.get("value"), "the aborted request got a response")
        self.assertEqual(v.stop(expect_rc=1), 1)
        self.assertRegex("\n".join(v.log()), r"SIGTERM again: aborting")
        s = shutdown_summary(v.log())
        self.assertIsNotNone(s, "\n".join(v.log()))
        self.assertEqual((s["in_flight"], s["completed"], s["aborted"]), (1, 0, 1), s)

    def test_shutdown_deadline_aborts(self):
        b = self.gate_backend("b", hold_prefix="/slow", max_s=3.0)
        v = self.veer(config_text([("api", [backend_line("b", b.address)], "")], workers=2,
                                  top="timeouts = { quiet_ms = 100; shutdown_ms = 500; };\n"))
        c, t, out = self.start_slow(v, b)
        t0 = time.monotonic()
        v.send_signal(signal.SIGTERM)
        rc = self.wait_exit(v)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 1, "\n".join(v.log()))
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 2.5)
        t.join(DEADLINE)
        self.assertIsNone(out.get("value"), "the request cut at the deadline got a response")
        self.assertEqual(v.stop(expect_rc=1), 1)
        s = shutdown_summary(v.log())
        self.assertIsNotNone(s, "\n".join(v.log()))
        self.assertEqual((s["in_flight"], s["completed"], s["aborted"]), (1, 0, 1), s)
        self.assertLess(s["total_ms"], 2500, s)


if __name__ == "__main__":
    unittest.main()
