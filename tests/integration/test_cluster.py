"""Fleet mode: three veer instances sharing their routing intent through a
real etcd (issue 11; ARCHITECTURE.md "Fleet mode").

etcd runs on loopback with its data directory on tmpfs (/dev/shm when it
exists) and ephemeral ports. The backends are in the test process: blue
and green answer with their name, so every response says which group
served it; load runs against all three instances at once.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_cluster
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

from helpers import (AdminConn, ReservedPort, StrictLoad, admin_http_port, audit_records,
                     http_get, show_pool, veerctl)
from veertest import DEADLINE, VeerTestCase, wait_for

OK_RE = re.compile(r"\AOK gen=(\d+) applied_us=(\d+) revision=(\d+) applied=(\S+) instances=(\d+) "
                   r"fleet_ms=([\d.]+)\n\n\Z")


class Etcd:
    """An etcd server on loopback, its data on tmpfs; stop() and start() keep the data."""

    def __init__(self):
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="veer-etcd-", dir=base)
        # Held for etcd's whole life (restarts included): a port bound and
        # released could be taken by a parallel suite before etcd binds it.
        self.reserved = (ReservedPort(), ReservedPort())
        self.port = self.reserved[0].port
        self.peer = self.reserved[1].port
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        self.start()

    def start(self):
        binary = shutil.which("etcd")
        if binary is None:
            raise AssertionError("etcd is missing: install the Debian package etcd-server")
        peer = "http://127.0.0.1:%d" % self.peer
        self.log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [binary, "--name", "t", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "t=" + peer],
            stdout=self.log, stderr=self.log)
        wait_for(self.healthy, timeout=DEADLINE, what="etcd healthy")

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None

    def close(self):
        self.kill()
        for r in self.reserved:
            r.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClusterTest(VeerTestCase):
    def setUp(self):
        super().setUp()
        self.etcd = Etcd()
        self._cleanup.append(self.etcd.close)
        self.blue = self.backend("blue")
        self.green = self.backend("green")
        self.prefix = "/veer/test-%d" % os.getpid()
        self.instances = {}

    def config(self, name):
        return (
            'workers = 2;\n'
            'timeouts = { quiet_ms = 100; };\n'
            'listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
            'audit_log = "{tmp}/audit.log";\n'
            'cluster = { etcd = ( "%s" ); prefix = "%s"; instance = "%s"; };\n'
            'pools = ( { name = "api"; backends = (\n'
            '  { name = "blue-1"; address = "%s"; group = "blue"; },\n'
            '  { name = "green-1"; address = "%s"; group = "green"; } );\n'
            '  shares = { blue = 100; green = 0; }; } );\n'
            % (self.etcd.url, self.prefix, name, self.blue.address, self.green.address))

    def start(self, name):
        v = self.veer(self.config(name))
        self.instances[name] = v
        return v

    def start_fleet(self, n=3):
        for i in range(1, n + 1):
            self.start("edge-%d" % i)
        wait_for(lambda: len(self.cluster("edge-1")["instances"]) == n,
                 what="%d instances in the cluster" % n)

    def sock(self, name):
        return self.instances[name].admin_socket

    def cluster(self, name):
        p = veerctl(self.sock(name), "show", "cluster", "--json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return json.loads(p.stdout)

    def shares(self, name):
        return {g["name"]: g["share"] for g in show_pool(self.sock(name))["groups"]}

    def shift(self, name, blue, green):
        p = veerctl(self.sock(name), "shift", "api", "blue=%d" % blue, "green=%d" % green)
        return p

    def metric(self, name, metric):
        status, _, body = http_get(admin_http_port(self.instances[name]), "/metrics")
        self.assertEqual(status, 200)
        m = re.search(rb"^%s (\S+)$" % metric.encode(), body, re.M)
        return float(m.group(1)) if m else None

    def stop_all(self):
        """Stop every instance with SIGTERM: each must exit 0 with no sanitizer
        report (fleet-mode shutdown revokes the lease, stops the watch and frees
        the cluster state; a SIGKILL in the cleanup would check none of it)."""
        for name in sorted(self.instances):
            self.instances.pop(name).stop()

    def loads(self):
        out = {}
        for name, v in self.instances.items():
            ld = StrictLoad(v.port, n=3)
            self._cleanup.append(ld.stop)
            out[name] = ld
        return out

    # --- tests -----------------------------------------------------------------------

    def test_shift_is_applied_by_every_instance_before_the_ack(self):
        self.start_fleet()
        loads = self.loads()
        for ld in loads.values():
            ld.wait_count(50)
        acks = []
        for k, (blue, green) in enumerate([(0, 100), (100, 0), (0, 100), (100, 0)]):
            t_send = time.monotonic()
            p = self.shift("edge-%d" % (k % 3 + 1), blue, green)
            t_ack = time.monotonic()
            m = OK_RE.match(p.stdout)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIsNotNone(m, p.stdout)
            self.assertEqual(int(m.group(5)), 3, p.stdout)
            applied = dict(a.split(":") for a in m.group(4).split(","))
            self.assertEqual(set(applied), {"edge-1", "edge-2", "edge-3"}, p.stdout)
            # Every instance has it at the ack: nothing is still on its way.
            for name in self.instances:
                self.assertEqual(self.shares(name), {"blue": blue, "green": green}, name)
                self.assertGreaterEqual(self.cluster(name)["revision"], int(m.group(3)), name)
            acks.append((t_send, t_ack, "blue" if blue else "green"))
            for ld in loads.values():
                ld.wait_each_sent_after(t_ack, 3)
        for ld in loads.values():
            ld.stop()
        # No request sent after an ack (to any instance), and before the next
        # shift was sent, reached the old group.
        checked = 0
        for name, ld in loads.items():
            self.assertEqual(ld.failures(), [], ld.describe())
            for r in ld.all():
                for k, (_, t_ack, group) in enumerate(acks):
                    t_next = acks[k + 1][0] if k + 1 < len(acks) else float("inf")
                    if t_ack < r.sent and r.done < t_next:
                        self.assertEqual(r.backend, group,
                                         "%s: %r sent after the ack of %s" % (name, r, group))
                        checked += 1
        self.assertGreaterEqual(checked, 4 * 3 * 3, "too few requests between the acks")
        # The writer audited each change with the operator's uid; every instance logged
        # the revision it applied.
        for k in range(len(acks)):
            name = "edge-%d" % (k % 3 + 1)
            _, recs = audit_records(self.instances[name].tmp + "/audit.log")
            shifts = [r for r in recs if r["command"].startswith("shift api ")]
            self.assertTrue(shifts, name)
            for r in shifts:
                self.assertEqual((r["actor"], r["result"], r["uid"]),
                                 ("operator", "OK", os.getuid()), r)
        for name, v in self.instances.items():
            v.wait_log(r"cluster: applied revision \d+ \(gen \d+\)")
        self.stop_all()

    def test_concurrent_conflicting_shifts_one_wins(self):
        self.start_fleet()
        a = AdminConn(self.sock("edge-1"))
        b = AdminConn(self.sock("edge-2"))
        self._cleanup.extend([a.close, b.close])
        conflicts = 0
        for k in range(30):
            ga, gb = (10 + k % 40, 60 + k % 30)
            # Both lines leave back to back: each instance writes against the
            # revision it read, before either sees the other's change.
            a.send(b"shift api blue=%d green=%d\n" % (100 - ga, ga))
            b.send(b"shift api blue=%d green=%d\n" % (100 - gb, gb))
            ra, rb = a.reply().decode(), b.reply().decode()
            for r in (ra, rb):
                self.assertTrue(r.startswith("OK gen=") or r.startswith("ERR conflict: "), r)
            oks = [g for g, r in ((ga, ra), (gb, rb)) if r.startswith("OK")]
            self.assertGreaterEqual(len(oks), 1, (ra, rb))
            if len(oks) == 1:
                conflicts += 1
                want = {"blue": 100 - oks[0], "green": oks[0]}
            else:
                # No overlap after all: both applied, in revision order.
                rev = {g: int(re.search(r"revision=(\d+)", r).group(1))
                       for g, r in ((ga, ra), (gb, rb))}
                last = max(rev, key=rev.get)
                want = {"blue": 100 - last, "green": last}
            # The same state everywhere, right after the acks.
            for name in self.instances:
                self.assertEqual(self.shares(name), want, (name, ra, rb))
            if conflicts >= 3:
                break
        self.assertGreaterEqual(conflicts, 3, "concurrent shifts never conflicted")
        self.stop_all()

    def test_losing_etcd_keeps_serving_refuses_changes_and_resyncs(self):
        self.start_fleet()
        p = self.shift("edge-1", 50, 50)
        self.assertEqual(p.returncode, 0, p.stdout)
        loads = self.loads()
        for ld in loads.values():
            ld.wait_count(30)
        self.etcd.kill()
        wait_for(lambda: all(self.metric(n, "veer_cluster_connected") == 0
                             for n in self.instances),
                 what="every instance to report veer_cluster_connected 0")
        t = time.monotonic()
        for ld in loads.values():
            ld.wait_each_sent_after(t, 5)
        p = self.shift("edge-2", 100, 0)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stdout, r"\AERR cluster: etcd is unreachable \(.+\); nothing changed\n\n")
        for name in self.instances:
            self.assertEqual(self.shares(name), {"blue": 50, "green": 50}, name)
        self.etcd.start()
        wait_for(lambda: all(self.metric(n, "veer_cluster_connected") == 1
                             for n in self.instances),
                 timeout=DEADLINE, what="every instance to reconnect")
        wait_for(lambda: self.shift("edge-2", 100, 0).returncode == 0,
                 what="a shift to succeed again")
        for name in self.instances:
            self.assertEqual(self.shares(name), {"blue": 100, "green": 0}, name)
        for ld in loads.values():
            ld.stop()
            self.assertEqual(ld.failures(), [], ld.describe())
        for name, v in self.instances.items():
            v.wait_log(r"cluster: lost etcd")
        self.stop_all()

    def test_change_made_while_an_instance_was_down_reaches_it(self):
        self.start_fleet()
        self.instances["edge-3"].stop()
        del self.instances["edge-3"]
        wait_for(lambda: len(self.cluster("edge-1")["instances"]) == 2,
                 what="edge-3 to leave the live set")
        p = self.shift("edge-1", 20, 80)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn(" instances=2 ", p.stdout)
        v = self.start("edge-3")
        # It applied the fleet's state before it said ready.
        self.assertEqual(self.shares("edge-3"), {"blue": 20, "green": 80})
        line = v.wait_log(r"cluster: instance edge-3 starts at revision \d+")
        self.assertTrue(v.log().index(line) < next(i for i, l in enumerate(v.log())
                                                   if re.search(r"veer \S+ ready", l)))
        self.stop_all()

    def test_new_instance_gets_the_current_state_before_ready(self):
        self.start_fleet(2)
        p = self.shift("edge-2", 0, 100)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.start("edge-9")
        self.assertEqual(self.shares("edge-9"), {"blue": 0, "green": 100})
        wait_for(lambda: len(self.cluster("edge-1")["instances"]) == 3, what="3 instances")
        p = self.shift("edge-9", 100, 0)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn(" instances=3 ", p.stdout)
        self.stop_all()

    def test_start_without_etcd_serves_from_the_state_file(self):
        keep = tempfile.mkdtemp(prefix="veer-cluster-state-")
        self._cleanup.append(lambda: shutil.rmtree(keep, ignore_errors=True))
        cfg = self.config("edge-1").replace(
            'audit_log = "{tmp}/audit.log";', 'state_file = "%s/state";' % keep)
        v = self.veer(cfg)
        self.instances["edge-1"] = v
        self.assertEqual(self.shift("edge-1", 30, 70).returncode, 0)
        def saved():
            try:
                with open(keep + "/state") as f:
                    return "share green 70" in f.read()
            except FileNotFoundError:
                return False
        wait_for(saved, what="the state file")
        v.stop()
        self.etcd.kill()
        v = self.veer(cfg)
        self.instances["edge-1"] = v
        v.wait_log(r"cluster: etcd unreachable at start \(.+\); serving from the state file")
        self.assertEqual(self.shares("edge-1"), {"blue": 30, "green": 70})
        got = {self.client(v.port).request("GET", "/s/%d" % i).header("X-Backend")
               for i in range(20)}
        self.assertEqual(got, {"blue", "green"})
        self.assertEqual(self.metric("edge-1", "veer_cluster_connected"), 0)
        self.etcd.start()
        wait_for(lambda: self.metric("edge-1", "veer_cluster_connected") == 1,
                 what="the instance to connect once etcd is back")
        self.assertEqual(self.shift("edge-1", 60, 40).returncode, 0)
        self.assertEqual(self.shares("edge-1"), {"blue": 60, "green": 40})
        self.stop_all()

    def shutdown_without_etcd(self, cut):
        """Start two instances with a 4 s shutdown deadline, make etcd unreachable
        with cut(), SIGTERM both at once and require each to exit 0, clean,
        within the deadline (nothing is in flight, so nothing should wait for it)."""
        deadline_s = 4.0
        for name in ("edge-1", "edge-2"):
            cfg = self.config(name).replace("quiet_ms = 100;", "quiet_ms = 100; shutdown_ms = 4000;")
            self.instances[name] = self.veer(cfg)
        wait_for(lambda: len(self.cluster("edge-1")["instances"]) == 2, what="2 instances")
        cut()
        t0 = time.monotonic()
        for v in self.instances.values():
            v.send_signal(signal.SIGTERM)
        for name in sorted(self.instances):
            v = self.instances.pop(name)
            v.stop(sig=None, timeout=max(0.1, t0 + deadline_s - time.monotonic()))
            v_log = "\n".join(v.log())
            self.assertRegex(v_log, r"shutdown summary: in_flight=0 ", name)
        return time.monotonic() - t0

    def test_shutdown_with_etcd_killed_exits_0_within_the_deadline(self):
        # etcd is gone (connection refused) and the instances may not have noticed
        # yet: the lease revoke at shutdown must not hold the exit back.
        self.shutdown_without_etcd(self.etcd.kill)

    def test_shutdown_with_etcd_silent_exits_0_within_the_deadline(self):
        # etcd accepts connections but never answers (stopped): the revoke and
        # the watch hang; shutdown must still end, exit 0, within its deadline.
        def freeze():
            self.etcd.proc.send_signal(signal.SIGSTOP)
            self._cleanup.append(lambda: self.etcd.proc.poll() is None and
                                 self.etcd.proc.send_signal(signal.SIGCONT))
        self.shutdown_without_etcd(freeze)

    def test_maintenance_reaches_the_fleet(self):
        self.start_fleet(2)
        p = veerctl(self.sock("edge-1"), "maintenance", "on", "api", "--retry-after", "7")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn(" instances=2 ", p.stdout)
        for name, v in self.instances.items():
            c = self.client(v.port)
            r = c.request("GET", "/x")
            self.assertEqual((r.status, r.header("Retry-After")), (503, "7"), name)
        p = veerctl(self.sock("edge-2"), "maintenance", "off", "api")
        self.assertEqual(p.returncode, 0, p.stdout)
        for name, v in self.instances.items():
            c = self.client(v.port)
            self.assertEqual(c.request("GET", "/x").status, 200, name)
        self.stop_all()



if __name__ == "__main__":
    unittest.main()
