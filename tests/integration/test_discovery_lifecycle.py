"""DNS discovery where it meets the other deployment paths (issue 20): a
binary upgrade carries the discovered backends (the new process serves
before it has resolved anything, even with the DNS server silent), an
operator's rollback reaches across discovery's membership changes, and in
fleet mode each instance resolves for itself while the fleet's intent still
reaches discovered backends by name.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_discovery_lifecycle
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from helpers import (StrictLoad, Successor, become_subreaper, pid_lines, show_pool, veerctl)
from test_cluster import Etcd
from test_discovery import NAME, DiscoveryCase, common_port, disc_config, entry_text, ips
from veertest import DEADLINE, wait_for

SUBREAPER = False


def setUpModule():
    global SUBREAPER
    SUBREAPER = become_subreaper()


def tearDownModule():
    become_subreaper(False)


class UpgradeCarriesDiscoveredBackendsTest(DiscoveryCase):
    def test_upgrade_serves_discovered_backends_before_any_resolution(self):
        """Two instances found by DNS, READY, one reweighted by the operator.
        The DNS server is then paused (every query times out) and veer
        upgraded under strict load: 0 failed requests; the new process has
        both backends READY with the operator's weight although its own
        resolutions fail, counts those failures, and follows DNS again once
        the server answers (a third instance appears)."""
        addrs = ips(20, 3)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        dns = self.dns(hosts={NAME: addrs[:2]})
        cfg = disc_config(dns.port, [entry_text(dns="%s:%d" % (NAME, port))],
                          resolvers="interval_ms = 1000; min_interval_ms = 100; timeout_ms = 200;",
                          interval_ms=500).replace(
            'audit_log = "{tmp}/audit.log";',
            'audit_log = "{tmp}/audit.log";\nstate_file = "{tmp}/state";')
        v = self.start(cfg)
        names = sorted(inst)
        self.wait_states({names[0]: "READY", names[1]: "READY"})
        p = self.ctl("set", "weight", "api/" + names[0], "40")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        dns.pause()
        load = StrictLoad(self.port, 4)
        self._cleanup.append(load.stop)
        load.wait_count(40)
        old_pid = v.proc.pid
        v.send_signal(signal.SIGUSR2)
        new = Successor(v, old_pid)
        self._cleanup.append(lambda: new.stop(signal.SIGKILL) if new.alive() else None)
        try:
            self.assertEqual(v.proc.wait(DEADLINE), 0, "\n".join(pid_lines(v, old_pid)))
        except subprocess.TimeoutExpired:
            self.fail("the old veer did not exit:\n" + "\n".join(pid_lines(v, old_pid)))
        new.wait_log(r"readiness carried over: 2 ready")
        load.wait_each_sent_after(time.monotonic(), 20)
        # Answered by the new process, whose DNS has not answered once.
        doc = show_pool(self.sock)
        got = {b["name"]: (b["state"], b["weight"]) for b in doc["backends"]}
        self.assertEqual(got, {names[0]: ("READY", 40), names[1]: ("READY", 100)})
        e = wait_for(lambda: (lambda e: e if e["errors"] >= 1 else None)(self.entry()),
                     what="a failed resolution in the new process")
        self.assertEqual(e["resolutions"], 0, e)
        self.assertTrue(e["failing"], e)
        self.assertEqual(sorted(a["backend"] for a in e["addresses"]), names[:2])
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        served = {n for n, b in inst.items() if b.traffic_count()}
        self.assertEqual(served, set(names[:2]), "the load reached only the two instances")
        # The server answers again, with a third instance: the new process follows it.
        dns.resume()
        dns.set_hosts({NAME: addrs})
        self.wait_states({names[0]: "READY", names[1]: "READY", names[2]: "READY"})
        e = self.entry()
        self.assertFalse(e["failing"], e)
        self.assertGreaterEqual(e["resolutions"], 1, e)
        rc = new.stop()
        if SUBREAPER:
            self.assertEqual(rc, 0, "\n".join(new.log()))


class RestartKeepsDiscoveredBackendsStateTest(DiscoveryCase):
    def test_a_drained_discovered_backend_stays_drained_across_a_restart(self):
        """The operator drains one of two instances found by DNS and
        reweights the other; veer is stopped and started again on the same
        state file, with the DNS server silent. The new process has both
        before any resolution, serves the reweighted one once checked, and
        the drained one stays in drain (it came back ready with the first
        resolution, taking traffic the operator had taken away). Once DNS
        answers again nothing changes."""
        addrs = ips(30, 2)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        dns = self.dns(hosts={NAME: addrs})
        persist = tempfile.mkdtemp(prefix="veer-disc-state-")
        self._cleanup.append(lambda: shutil.rmtree(persist, ignore_errors=True))
        cfg = disc_config(dns.port, [entry_text(dns="%s:%d" % (NAME, port))],
                          resolvers="interval_ms = 1000; min_interval_ms = 100; timeout_ms = 200;",
                          interval_ms=300).replace(
            'audit_log = "{tmp}/audit.log";',
            'audit_log = "%s/audit.log";\nstate_file = "%s/state";' % (persist, persist))
        v = self.start(cfg)
        names = sorted(inst)
        self.wait_states({names[0]: "READY", names[1]: "READY"})
        for args in (("drain", "api/" + names[0]), ("set", "weight", "api/" + names[1], "40")):
            p = self.ctl(*args)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        v.stop()
        dns.pause()
        self.start(cfg)
        doc = show_pool(self.sock)
        got = {b["name"]: (b["state"], b["weight"]) for b in doc["backends"]}
        self.assertIn(got.pop(names[0]), {("DRAINING", 100), ("DRAINED", 100)})
        # A plain start checks its backends anew (PENDING, then READY): not DNS's doing.
        self.assertIn(got, [{names[1]: ("PENDING", 40)}, {names[1]: ("READY", 40)}])
        self.wait_states({names[0]: "DRAINED", names[1]: "READY"})
        self.assertEqual(self.entry()["resolutions"], 0)
        for n in range(20):
            c = self.client(self.port)
            self.assertEqual(c.request("GET", "/r/%d" % n).status, 200)
            c.close()
        self.assertEqual({n for n, b in inst.items() if b.traffic_count()}, {names[1]})
        dns.resume()
        wait_for(lambda: self.entry()["resolutions"] >= 1, what="a resolution after the restart")
        doc = show_pool(self.sock)
        got = {b["name"]: (b["state"], b["weight"]) for b in doc["backends"]}
        self.assertEqual(got, {names[0]: ("DRAINED", 100), names[1]: ("READY", 40)})


class RollbackAcrossDiscoveryTest(DiscoveryCase):
    def test_rollback_after_dns_added_an_instance(self):
        """shift, then DNS adds an instance to the pool: `rollback api` still
        undoes the shift (discovery's membership changes are not the
        operator's), and the new instance keeps serving its group."""
        addrs = ips(30, 2)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        names = sorted(inst)
        dns = self.dns(hosts={NAME: addrs[:1]})
        blues = [self.backend("blue-%d" % i) for i in (1, 2)]
        # Two blue backends: the capacity guard lets blue take 100% back with 2 of 4 READY.
        cfg = disc_config(dns.port, [entry_text(dns="%s:%d" % (NAME, port), group="green")],
                          health=False, static=[("blue-%d" % i, b.address)
                                                for i, b in enumerate(blues, 1)],
                          shares="blue = 100; green = 0;",
                          resolvers="interval_ms = 1000; min_interval_ms = 100;")
        self.start(cfg)
        self.wait_states({"blue-1": "READY", "blue-2": "READY", names[0]: "READY"})
        p = self.ctl("shift", "api", "blue=50", "green=50")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        dns.set_hosts({NAME: addrs})
        self.wait_states({"blue-1": "READY", "blue-2": "READY", names[0]: "READY",
                          names[1]: "READY"})
        p = self.ctl("rollback", "api")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        doc = show_pool(self.sock)
        self.assertEqual({g["name"]: g["share"] for g in doc["groups"]},
                         {"blue": 100, "green": 0})
        self.assertEqual({b["name"] for b in doc["backends"]},
                         {"blue-1", "blue-2", names[0], names[1]})


class FleetDiscoveryTest(DiscoveryCase):
    """Two instances of one fleet on etcd, each with its own resolver: each
    resolves for itself (what one's DNS says never adds a backend to the
    other), while the fleet's intent (a shift, an operator's drain of a
    backend both discovered) reaches both."""

    def setUp(self):
        super().setUp()
        self.etcd = Etcd()
        self._cleanup.append(self.etcd.close)
        self.prefix = "/veer/disc-%d" % os.getpid()

    def fleet_config(self, name, dns_port, port):
        cfg = disc_config(dns_port, [entry_text(dns="%s:%d" % (NAME, port), group="green")],
                          health=False, static=[("blue-1", self.blue.address)],
                          shares="blue = 100; green = 0;",
                          resolvers="interval_ms = 1000; min_interval_ms = 100;")
        return cfg + ('cluster = { etcd = ( "%s" ); prefix = "%s"; instance = "%s"; };\n'
                      % (self.etcd.url, self.prefix, name))

    def pool(self, sock):
        doc = show_pool(sock)
        return ({g["name"]: g["share"] for g in doc["groups"]},
                {b["name"]: b["state"] for b in doc["backends"]})

    def test_each_instance_resolves_for_itself_and_the_intent_reaches_both(self):
        addrs = ips(40, 3)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        names = sorted(inst)
        self.blue = self.backend("blue-1")
        dns1 = self.dns(hosts={NAME: addrs[:2]})
        dns2 = self.dns(hosts={NAME: addrs[1:]})
        v1 = self.veer(self.fleet_config("edge-1", dns1.port, port))
        v2 = self.veer(self.fleet_config("edge-2", dns2.port, port))
        s1, s2 = v1.admin_socket, v2.admin_socket
        wait_for(lambda: self.pool(s1)[1] == {"blue-1": "READY", names[0]: "READY",
                                               names[1]: "READY"}, what="edge-1's set")
        wait_for(lambda: self.pool(s2)[1] == {"blue-1": "READY", names[1]: "READY",
                                               names[2]: "READY"}, what="edge-2's set")
        # The fleet's intent: a shift made on edge-1 is applied by both before the ack.
        p = veerctl(s1, "shift", "api", "blue=0", "green=100")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.pool(s1)[0], {"blue": 0, "green": 100})
        self.assertEqual(self.pool(s2)[0], {"blue": 0, "green": 100})
        # An operator's drain of the backend both discovered reaches both, by name.
        p = veerctl(s1, "drain", "api/" + names[1])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for s in (s1, s2):
            wait_for(lambda: self.pool(s)[1][names[1]] in ("DRAINING", "DRAINED"),
                     what="%s drained on %s" % (names[1], s))
        # edge-1's DNS drops an instance: only edge-1's set changes.
        dns1.set_hosts({NAME: addrs[1:2]})
        wait_for(lambda: names[0] not in self.pool(s1)[1], what="%s gone on edge-1" % names[0])
        self.assertEqual(set(self.pool(s2)[1]), {"blue-1", names[1], names[2]})
        e2 = json.loads(veerctl(s2, "show", "discovery", "--json").stdout)["discovery"][0]
        self.assertEqual(sorted(a["backend"] for a in e2["addresses"]), names[1:])
        for v in (v1, v2):
            v.stop()
