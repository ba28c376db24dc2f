"""DNS service discovery (issue 20): backends that follow names, through the
readiness gate, against a real DNS server (dnsmasq on a loopback port, see
dnsfix.py).

The instances behind a name are HealthBackends on 127.0.0.2, 127.0.0.3, ...
sharing one port, each named as veer names the backend it discovers
(`api-127.0.0.2:PORT`), so X-Backend tells which instance answered and each
records the readiness checks and the client requests it saw.

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_discovery
"""

import json
import os
import socket
import threading
import time

from dnsfix import DnsServer, DnsTestMixin, query
from helpers import (HealthBackend, StrictLoad, admin_http_port, audit_records, health_text,
                     pool_states, scrape, show_pool, status_doc, veerctl)
from test_admission import Hold, SlowRequest
from veertest import (DEADLINE, VeerTestCase, require_ipv6, veer_check_config,
                      wait_for)

RISE = 2
NAME = "api.internal"


def ips(first, n):
    """n loopback addresses from 127.0.0.<first>."""
    return ["127.0.0.%d" % i for i in range(first, first + n)]


def common_port(hosts):
    """A TCP port free on every host of hosts (tries until one is)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET,
                          socket.SOCK_STREAM)
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in hosts:
            t = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise AssertionError("no port free on all of %r" % (hosts,))


def entry_text(name="api", dns=None, srv=None, group="blue", weight=None, extra=""):
    parts = ['name = "%s";' % name]
    if dns is not None:
        parts.append('dns = "%s";' % dns)
    if srv is not None:
        parts.append('srv = "%s";' % srv)
    if group is not None:
        parts.append('group = "%s";' % group)
    if weight is not None:
        parts.append("weight = %d;" % weight)
    if extra:
        parts.append(extra)
    return "{ %s }" % " ".join(parts)


def disc_config(dns_port, entries, health=True, resolvers="", static=(), shares="blue = 100;",
                extra_pools="", interval_ms=100):
    """One listener, admin socket + HTTP + audit log, resolvers at dnsmasq, and pool api
    with the discover entries (texts), optional readiness checks and static backends
    [(name, address)] in group blue."""
    stat = ", ".join('{ name = "%s"; address = "%s"; weight = 100; group = "blue"; }' % s
                     for s in static)
    h = health_text("/ready", interval_ms, 1000, RISE, 2) if health else ""
    sh = "shares = { %s };" % shares if shares else ""
    return ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'timeouts = { quiet_ms = 100; };\n'
            'admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
            'audit_log = "{tmp}/audit.log";\n'
            'resolvers = { servers = ( "127.0.0.1:%d" ); %s };\n'
            'pools = ( { name = "api"; %s %s\n'
            '  discover = ( %s );\n'
            '  %s } %s );\n'
            % (dns_port, resolvers, h, sh, ",\n    ".join(entries),
               ("backends = ( %s );" % stat) if static else "", extra_pools))


def entry_metric(s, metric, entry="api"):
    """Sum of a Scrape's samples of metric whose label name is entry (the label is
    called name, which Scrape.total's keyword arguments cannot take)."""
    return sum(v for n, l, v in s.samples if n == metric and l.get("name") == entry)


class DiscoveryCase(DnsTestMixin, VeerTestCase):
    def instances(self, addrs, port, healthy=True, hold=None, prefix="api"):
        """HealthBackends on addrs:port named as veer names their backends."""
        out = {}
        for a in addrs:
            name = "%s-%s:%d" % (prefix, "[%s]" % a if ":" in a else a, port)
            b = HealthBackend(name, healthy=healthy, hold=hold, host=a, port=port)
            self._cleanup.append(b.close)
            out[name] = b
        return out

    def start(self, cfg):
        self.v = self.veer(cfg)
        self.sock = self.v.admin_socket
        self.http = admin_http_port(self.v)
        self.port = self.v.port
        return self.v

    def ctl(self, *args):
        return veerctl(self.sock, *args)

    def discovery(self):
        p = self.ctl("show", "discovery", "--json")
        if p.returncode != 0 or not p.stdout.endswith("\n\n"):
            raise AssertionError("show discovery --json: exit %d: %r %r"
                                 % (p.returncode, p.stdout, p.stderr))
        return json.loads(p.stdout)["discovery"]

    def entry(self, name="api"):
        for e in self.discovery():
            if e["name"] == name:
                return e
        raise AssertionError("no discovery entry %r in %r" % (name, self.discovery()))

    def addresses(self, name="api"):
        """{backend: address record} of an entry's current set."""
        return {a["backend"]: a for a in self.entry(name)["addresses"]}

    def states(self):
        return pool_states(show_pool(self.sock))

    def wait_states(self, want, what=None, timeout=DEADLINE):
        """Until the pool's backends are exactly want {name: state}."""
        def ok():
            s = self.states()
            return s if s == want else None
        try:
            return wait_for(ok, timeout, interval=0.01, what=what or "states %r" % want)
        except AssertionError as e:
            raise AssertionError("%s; last: %r" % (e, self.states())) from None

    def metric(self, metric, entry="api"):
        return entry_metric(scrape(self.http), metric, entry)

    def discovery_audit(self):
        _, recs = audit_records(os.path.join(self.v.tmp, "audit.log"))
        return [r for r in recs if r["actor"] == "discovery"]


# --- the fixture itself -------------------------------------------------------------


class DnsFixtureTest(VeerTestCase, DnsTestMixin):
    """dnsmasq answers what the fixture sets, and goes down and pauses on demand."""

    def test_hosts_srv_stop_and_pause(self):
        d = self.dns(hosts={NAME: ["127.0.0.2", "127.0.0.3"], "v6.internal": ["::1"],
                            "s1.internal": ["127.0.0.4"]})
        a = d.query(NAME)
        self.assertEqual((a.rcode, sorted(a.values("A"))), ("NOERROR", ["127.0.0.2", "127.0.0.3"]))
        self.assertEqual({ttl for _, ttl, _ in a.records}, {1})
        self.assertEqual(d.query(NAME, "AAAA").records, [])
        self.assertEqual(d.query("v6.internal", "AAAA").values("AAAA"), ["::1"])
        self.assertEqual(d.query("gone.internal").rcode, "NXDOMAIN")

        d.set_hosts({NAME: ["127.0.0.5"]})
        self.assertEqual(d.query(NAME).values("A"), ["127.0.0.5"])
        self.assertEqual(d.query("v6.internal", "AAAA").rcode, "NXDOMAIN")

        port = d.port
        d.set_srv([("_grpc._tcp.api.internal", "s1.internal", 8080, 10, 30),
                   ("_grpc._tcp.api.internal", NAME, 8081, 20, 60)])
        self.assertEqual(d.port, port)
        self.assertEqual(sorted(d.query("_grpc._tcp.api.internal", "SRV").values("SRV")),
                         [(10, 30, 8080, "s1.internal"), (20, 60, 8081, NAME)])
        self.assertEqual(d.query(NAME).values("A"), ["127.0.0.5"])  # hosts survive a restart

        d.stop()
        with self.assertRaises(ConnectionRefusedError):
            query(port, NAME)
        d.start()
        self.assertEqual(d.query(NAME).values("A"), ["127.0.0.5"])

        d.pause()
        with self.assertRaises(socket.timeout):
            d.query(NAME, timeout=0.3)
        d.resume()
        self.assertEqual(d.query(NAME).values("A"), ["127.0.0.5"])
        self.assertIn("query[A] %s" % NAME, d.log())

        t = DnsServer(local_ttl=7)
        self.addCleanup(t.close)
        t.set_hosts({"x.internal": ["127.0.0.9"]})
        self.assertEqual(t.query("x.internal").records, [("A", 7, "127.0.0.9")])


# --- answers: A, AAAA, SRV --------------------------------------------------------


class AnswerTest(DiscoveryCase):
    def test_a_records_become_pending_backends_admitted_by_checks(self):
        """Each A record is a backend api-ADDR:PORT, PENDING until its checks pass; no
        client request reaches it before it is READY."""
        addrs = ips(2, 2)
        port = common_port(addrs)
        inst = self.instances(addrs, port, healthy=False)
        sb = HealthBackend("static", healthy=True)
        self._cleanup.append(sb.close)
        sname = sb.name
        d = self.dns(hosts={NAME: addrs})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port), weight=100)],
                               static=[(sname, sb.address)]))
        names = sorted(inst)
        self.wait_states({n: "PENDING" for n in names} | {sname: "READY"})
        pool = {b["name"]: b for b in show_pool(self.sock)["backends"]}
        for n in names:
            self.assertEqual(pool[n]["address"], n[len("api-"):])
            self.assertEqual((pool[n]["group"], pool[n]["weight"]), ("blue", 100))

        # Traffic while they are PENDING: all of it on the static backend.
        load = StrictLoad(self.port, n=4)
        self.addCleanup(load.stop)
        load.wait_count(100)
        self.assertEqual([b.traffic_count() for b in inst.values()], [0, 0])

        for b in inst.values():
            b.set_healthy(True)
        self.wait_states({n: "READY" for n in names} | {sname: "READY"})
        wait_for(lambda: all(b.traffic_count() > 0 for b in inst.values()),
                 what="traffic on both once READY")
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        for n, b in inst.items():
            with b.lock:
                early = [r for r in b.traffic if r[2] < RISE]
            self.assertEqual(early, [], "%s served requests before %d passing checks" % (n, RISE))

        # show discovery, /status and /metrics agree.
        e = self.entry("api")
        self.assertEqual((e["pool"], e["kind"], e["query"], e["group"]),
                         ("api", "dns", "%s:%d" % (NAME, port), "blue"))
        self.assertEqual(sorted((a["backend"], a["address"], a["weight"], a["state"])
                                for a in e["addresses"]),
                         [(n, n[len("api-"):], 100, "READY") for n in names])
        self.assertEqual(e["draining"], [])
        self.assertEqual(e["ttl_s"], 1)
        self.assertIsNone(e["last_error"])
        self.assertEqual((e["errors"], e["unconfirmed_empty"]), (0, 0))
        self.assertGreaterEqual(e["resolutions"], 1)
        self.assertIsInstance(e["last_success"], (int, float))
        self.assertLess(abs(e["last_success"] - time.time()), 60)
        self.assertIsInstance(e["next_resolution_ms"], int)
        st = [x for x in status_doc(self.http)["discovery"] if x["name"] == "api"]
        self.assertEqual(len(st), 1, st)
        self.assertEqual(sorted(a["backend"] for a in st[0]["addresses"]), names)
        s = scrape(self.http)
        self.assertEqual(entry_metric(s, "veer_discovery_backends"), 2)
        self.assertGreaterEqual(entry_metric(s, "veer_discovery_resolutions_total"), 1)
        self.assertEqual(entry_metric(s, "veer_discovery_errors_total"), 0)
        text = self.ctl("show", "discovery")
        self.assertEqual(text.returncode, 0, text.stderr)
        for n in names:
            self.assertIn(n, text.stdout)
        self.v.stop()

    def test_without_checks_backends_are_ready_at_once_and_serve(self):
        """A pool with no readiness checks and no static backend: the discovered
        backends are READY as soon as resolved and take all the traffic (group blue's
        share is not set in the config: the group's discovered weight makes it)."""
        addrs = ips(2, 3)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        d = self.dns(hosts={NAME: addrs})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))], health=False,
                               shares=None))
        self.wait_states({n: "READY" for n in inst})
        load = StrictLoad(self.port, n=3)
        self.addCleanup(load.stop)
        wait_for(lambda: all(b.traffic_count() > 0 for b in inst.values()),
                 what="traffic on every discovered backend")
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        self.v.stop()

    def test_aaaa_records(self):
        require_ipv6(self)
        port = common_port(["::1", "127.0.0.2"])
        inst = self.instances(["::1", "127.0.0.2"], port)
        d = self.dns(hosts={NAME: ["::1", "127.0.0.2"]})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))]))
        v6 = "api-[::1]:%d" % port
        self.assertIn(v6, inst)
        self.wait_states({n: "READY" for n in inst})
        self.assertEqual(self.addresses()[v6]["address"], "[::1]:%d" % port)
        load = StrictLoad(self.port, n=2)
        self.addCleanup(load.stop)
        wait_for(lambda: all(b.traffic_count() > 0 for b in inst.values()),
                 what="traffic on both the IPv6 and the IPv4 instance")
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        # veerctl addresses such a backend by its name, brackets and colons included.
        p = self.ctl("set", "weight", "api/%s" % v6, "50")
        self.assertTrue(p.stdout.startswith("OK"), p.stdout)
        self.v.stop()

    def test_srv_lowest_priority_ports_and_scaled_weights(self):
        p1, p2, p3 = (common_port(["127.0.0.2"]), common_port(["127.0.0.3"]),
                      common_port(["127.0.0.4"]))
        b1 = self.instances(["127.0.0.2"], p1, prefix="grpc")
        b2 = self.instances(["127.0.0.3"], p2, prefix="grpc")
        b3 = self.instances(["127.0.0.4"], p3, prefix="grpc")
        srv = "_grpc._tcp.api.internal"
        d = self.dns(hosts={"s1.internal": ["127.0.0.2"], "s2.internal": ["127.0.0.3"],
                            "s3.internal": ["127.0.0.4"]})
        d.set_srv([(srv, "s1.internal", p1, 10, 30), (srv, "s2.internal", p2, 10, 60),
                   (srv, "s3.internal", p3, 20, 100)])
        self.start(disc_config(d.port, [entry_text(name="grpc", srv=srv, weight=70)]))
        n1, = b1
        n2, = b2
        n3, = b3
        self.wait_states({n1: "READY", n2: "READY"})
        pool = {b["name"]: b for b in show_pool(self.sock)["backends"]}
        self.assertEqual((pool[n1]["weight"], pool[n2]["weight"]), (500, 1000))
        self.assertNotIn(n3, pool)
        e = self.entry("grpc")
        self.assertEqual((e["kind"], e["query"]), ("srv", srv))
        self.assertEqual({a["backend"]: (a["address"], a["weight"]) for a in e["addresses"]},
                         {n1: ("127.0.0.2:%d" % p1, 500), n2: ("127.0.0.3:%d" % p2, 1000)})
        load = StrictLoad(self.port, n=3)
        self.addCleanup(load.stop)
        wait_for(lambda: b1[n1].traffic_count() > 0 and b2[n2].traffic_count() > 0,
                 what="traffic on both priority-10 targets")
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        self.assertEqual(b3[n3].traffic_count(), 0)
        self.v.stop()

    def test_srv_all_zero_weights_take_the_entry_weight(self):
        p1, p2 = common_port(["127.0.0.2"]), common_port(["127.0.0.3"])
        n1, = self.instances(["127.0.0.2"], p1, prefix="grpc")
        n2, = self.instances(["127.0.0.3"], p2, prefix="grpc")
        srv = "_grpc._tcp.api.internal"
        d = self.dns(hosts={"s1.internal": ["127.0.0.2"], "s2.internal": ["127.0.0.3"]})
        d.set_srv([(srv, "s1.internal", p1, 5, 0), (srv, "s2.internal", p2, 5, 0)])
        self.start(disc_config(d.port, [entry_text(name="grpc", srv=srv, weight=70)]))
        self.wait_states({n1: "READY", n2: "READY"})
        pool = {b["name"]: b for b in show_pool(self.sock)["backends"]}
        self.assertEqual((pool[n1]["weight"], pool[n2]["weight"]), (70, 70))
        self.v.stop()


# --- re-resolution ---------------------------------------------------------------


class TtlTest(DiscoveryCase):
    def test_change_picked_up_at_the_ttl_without_any_command(self):
        """TTL 1 s, interval 30 s: a new address appears within a few seconds, so the
        TTL (not the interval) drove the re-resolution."""
        addrs = ips(2, 2)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        d = self.dns(hosts={NAME: addrs[:1]})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers="interval_ms = 30000; min_interval_ms = 100;"))
        n1, n2 = sorted(inst)
        self.wait_states({n1: "READY"})
        r0 = self.entry()["resolutions"]
        t0 = time.monotonic()
        d.set_hosts({NAME: addrs})
        wait_for(lambda: n2 in self.states(), timeout=10, interval=0.01,
                 what="the new address picked up at the 1 s TTL")
        took = time.monotonic() - t0
        self.assertLess(took, 10)
        self.wait_states({n1: "READY", n2: "READY"})
        e = self.entry()
        self.assertEqual(e["ttl_s"], 1)
        self.assertGreater(e["resolutions"], r0)
        self.assertLessEqual(e["next_resolution_ms"], 1000)
        self.v.stop()

    def test_long_ttl_is_bounded_by_the_interval(self):
        addrs = ips(2, 2)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        d = self.dns(hosts={NAME: addrs[:1]}, local_ttl=3600)
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers="interval_ms = 500; min_interval_ms = 100;"))
        n1, n2 = sorted(inst)
        self.wait_states({n1: "READY"})
        self.assertLessEqual(self.entry()["next_resolution_ms"], 500)
        d.set_hosts({NAME: addrs})
        self.wait_states({n1: "READY", n2: "READY"}, timeout=10)
        self.v.stop()


class ScaleTest(DiscoveryCase):
    def test_scale_out_new_instances_pending_then_ready_then_served(self):
        addrs = ips(2, 9)
        port = common_port(addrs)
        first = self.instances(addrs[:1], port)
        new = self.instances(addrs[1:], port, healthy=False)
        d = self.dns(hosts={NAME: addrs[:1]})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers="interval_ms = 1000; min_interval_ms = 100;"))
        (n0, b0), = first.items()
        self.wait_states({n0: "READY"})
        load = StrictLoad(self.port, n=4)
        self.addCleanup(load.stop)
        d.set_hosts({NAME: addrs})
        self.wait_states({n0: "READY"} | {n: "PENDING" for n in new})
        self.assertEqual(len(self.entry()["addresses"]), 9)
        load.wait_each_sent_after(time.monotonic(), 10)
        self.assertEqual([b.traffic_count() for b in new.values()], [0] * len(new))
        for b in new.values():
            b.set_healthy(True)
        self.wait_states({n: "READY" for n in list(first) + list(new)})
        wait_for(lambda: all(b.traffic_count() > 0 for b in new.values()),
                 what="traffic on all 8 new instances")
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        for n, b in new.items():
            with b.lock:
                early = [r for r in b.traffic if r[2] < RISE]
            self.assertEqual(early, [], "%s served before it was READY" % n)
        self.assertEqual(self.metric("veer_discovery_backends"), 9)
        self.v.stop()

    def test_scale_in_under_load_drains_with_no_failed_request(self):
        addrs = ips(2, 3)
        port = common_port(addrs)
        hold = Hold("/slow")
        inst = self.instances(addrs[:2], port)
        gone = self.instances(addrs[2:], port, hold=hold)
        (gname, gb), = gone.items()
        d = self.dns(hosts={NAME: addrs})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers="interval_ms = 1000; min_interval_ms = 100;"))
        self.wait_states({n: "READY" for n in list(inst) + [gname]})
        load = StrictLoad(self.port, n=4)
        self.addCleanup(load.stop)
        wait_for(lambda: gb.traffic_count() > 0, what="load on the instance to remove")
        slow = SlowRequest(self.port, gname)
        self.addCleanup(hold.release)
        self.assertTrue(hold.started.wait(DEADLINE), "no slow request held on %s" % gname)

        d.set_hosts({NAME: addrs[:2]})
        self.wait_states({n: "READY" for n in inst} | {gname: "DRAINING"})
        t_drain = time.monotonic()
        e = self.entry()
        self.assertNotIn(gname, [a["backend"] for a in e["addresses"]])
        self.assertEqual(e["draining"], [gname])
        load.wait_each_sent_after(t_drain, 20)
        late = [r for r in load.all() if r.sent > t_drain and r.backend == gname]
        self.assertEqual(late, [], "requests sent after %s was DRAINING reached it" % gname)
        self.assertEqual(self.states()[gname], "DRAINING")  # the slow one keeps it there

        hold.release()
        res = slow.wait()
        self.assertIsNone(slow.error)
        self.assertEqual((res.status, res.complete, res.header("X-Backend")), (200, True, gname))
        self.wait_states({n: "READY" for n in inst}, what="%s removed after its drain" % gname)
        self.assertEqual(self.entry()["draining"], [])
        p = self.ctl("show", "pools")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(gname, p.stdout)
        self.assertIn(sorted(inst)[0], p.stdout)
        load.wait_each_sent_after(time.monotonic(), 5)
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        self.assertEqual(self.metric("veer_discovery_backends"), 2)
        self.v.stop()


# --- resolver failures -------------------------------------------------------------


class ResolverFailureTest(DiscoveryCase):
    RESOLVERS = "interval_ms = 200; min_interval_ms = 200; timeout_ms = 200;"

    def outage(self, down, up, expect_error=None):
        addrs = ips(2, 3)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        d = self.dns(hosts={NAME: addrs[:2]})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers=self.RESOLVERS))
        names = sorted(inst)
        self.wait_states({n: "READY" for n in names[:2]})
        load = StrictLoad(self.port, n=3)
        self.addCleanup(load.stop)
        e0 = self.metric("veer_discovery_errors_total")
        ok0 = self.entry()["last_success"]

        down(d)
        # Several seconds of failed resolutions at 200 ms: errors keep rising, nothing goes.
        wait_for(lambda: self.metric("veer_discovery_errors_total") >= e0 + 8, timeout=20,
                 interval=0.05, what="8 resolution errors counted")
        e = self.entry()
        self.assertIsNotNone(e["last_error"])
        if expect_error:
            self.assertIn(expect_error, e["last_error"].lower())
        self.assertGreaterEqual(e["errors"], 8)
        self.assertEqual(sorted(a["backend"] for a in e["addresses"]), names[:2])
        self.assertEqual(self.states(), {n: "READY" for n in names[:2]})
        t_mid = time.monotonic()
        self.assertEqual(self.metric("veer_discovery_backends"), 2)
        load.wait_each_sent_after(t_mid, 10)

        up(d)
        wait_for(lambda: (self.entry()["last_success"] or 0) > ok0 + 1, timeout=10,
                 interval=0.02, what="a successful resolution after the outage")
        # Errors stop rising: two more successes, the same count.
        errs = self.metric("veer_discovery_errors_total")
        last = self.entry()["last_success"]
        wait_for(lambda: self.entry()["last_success"] > last, interval=0.02,
                 what="another success")
        last = self.entry()["last_success"]
        wait_for(lambda: self.entry()["last_success"] > last, interval=0.02,
                 what="yet another success")
        self.assertEqual(self.metric("veer_discovery_errors_total"), errs)
        # A change after the recovery is picked up.
        d.set_hosts({NAME: addrs})
        self.wait_states({n: "READY" for n in names}, timeout=10)
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        self.v.stop()

    def test_server_down_keeps_backends_and_counts_errors(self):
        self.outage(lambda d: d.stop(), lambda d: d.start())

    def test_server_paused_keeps_backends_and_counts_timeouts(self):
        self.outage(lambda d: d.pause(), lambda d: d.resume(), expect_error="timeout")


class ConfirmTest(DiscoveryCase):
    # 700 ms between resolutions: long enough to see each count, under ASan too.
    RESOLVERS = "interval_ms = 700; min_interval_ms = 700; timeout_ms = 500;"

    def start_two(self, confirm=3):
        addrs = ips(2, 2)
        port = common_port(addrs)
        self.inst = self.instances(addrs, port)
        self.d = self.dns(hosts={NAME: addrs})
        self.start(disc_config(self.d.port, [entry_text(dns="%s:%d" % (NAME, port),
                                                        extra="confirm = %d;" % confirm)],
                               resolvers=self.RESOLVERS))
        self.names = sorted(self.inst)
        self.wait_states({n: "READY" for n in self.names})
        return addrs

    def test_nxdomain_removes_only_after_confirm_answers_in_a_row(self):
        self.start_two(confirm=3)
        seen = []  # (unconfirmed_empty, addresses, states) while the name is gone
        self.d.set_hosts({})

        def watch():
            st = self.states()  # first: a count of 1 or 2 read after it proves it pre-removal
            e = self.entry()
            seen.append((e["unconfirmed_empty"], sorted(a["backend"] for a in e["addresses"]),
                         st))
            return not any(n in st for n in self.names)
        wait_for(watch, timeout=20, interval=0.01, what="the vanished name's backends gone")
        counts = [u for u, _, _ in seen]
        # It counts up while the answers are in doubt, then reads 0 from the answer
        # that confirms them (the empty set is then the answer, not a doubt).
        first = next(i for i, u in enumerate(counts) if u)
        doubt = counts[first:]
        k = doubt.index(0) if 0 in doubt else len(doubt)
        self.assertEqual(doubt[:k], sorted(doubt[:k]), "unconfirmed_empty counts up")
        self.assertEqual(set(doubt[k:]), {0} if k < len(doubt) else set(),
                         "0 once confirmed: %r" % counts)
        self.assertIn(1, counts)
        self.assertIn(2, counts)
        self.assertNotIn(3, counts)
        for u, addrs, st in seen:
            if u in (1, 2):
                self.assertEqual(addrs, self.names, "removed after %d empty answers" % u)
                self.assertEqual(st, {n: "READY" for n in self.names},
                                 "not serving after %d empty answers" % u)
        # Drained before removed (nothing was in flight: DRAINING/DRAINED may be brief).
        self.assertEqual(self.entry()["addresses"], [])
        self.assertEqual(self.entry()["unconfirmed_empty"], 0)
        self.assertEqual(self.metric("veer_discovery_backends"), 0)
        self.v.stop()

    def test_one_empty_answer_then_back_changes_nothing(self):
        addrs = self.start_two(confirm=3)
        self.d.set_hosts({})
        wait_for(lambda: self.entry()["unconfirmed_empty"] >= 1, interval=0.01,
                 what="one NXDOMAIN seen")
        self.d.set_hosts({NAME: addrs})
        wait_for(lambda: self.entry()["unconfirmed_empty"] == 0, interval=0.01,
                 what="the counter reset by a good answer")
        self.assertEqual(self.states(), {n: "READY" for n in self.names})
        self.assertEqual([r for r in self.discovery_audit()
                          if "DRAIN" in json.dumps(r)], [])
        self.v.stop()


class CapTest(DiscoveryCase):
    def test_max_backends_caps_an_entry_keeping_existing_ones(self):
        addrs = ips(2, 5)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        d = self.dns(hosts={NAME: addrs[3:]})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port),
                                                   extra="max_backends = 3;")],
                               resolvers="interval_ms = 300; min_interval_ms = 100;"))
        kept = ["api-%s:%d" % (a, port) for a in addrs[3:]]
        self.wait_states({n: "READY" for n in kept})
        e0 = self.metric("veer_discovery_errors_total")
        d.set_hosts({NAME: addrs})
        wait_for(lambda: len(self.states()) == 3, interval=0.01, what="a third backend")
        wait_for(lambda: self.metric("veer_discovery_errors_total") > e0,
                 what="the capped answer counted as an error")
        # Several more resolutions: still 3, and the two existing ones among them.
        r = self.entry()["resolutions"]
        wait_for(lambda: self.entry()["resolutions"] >= r + 3, interval=0.02,
                 what="3 more resolutions")
        st = self.states()
        self.assertEqual(len(st), 3, st)
        for n in kept:
            self.assertIn(n, st)
        self.assertEqual(len(self.entry()["addresses"]), 3)
        self.assertGreater(self.entry()["errors"], 0)
        self.assertEqual(self.metric("veer_discovery_backends"), 3)
        self.assertTrue(set(st) <= set(inst))
        self.v.stop()


class ReadmissionTest(DiscoveryCase):
    def test_address_back_before_its_drain_ends_is_ready_again_without_pending(self):
        addrs = ips(2, 2)
        port = common_port(addrs)
        hold = Hold("/slow")
        inst = self.instances(addrs[:1], port)
        back = self.instances(addrs[1:], port, hold=hold)
        (bname, bb), = back.items()
        d = self.dns(hosts={NAME: addrs})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers="interval_ms = 300; min_interval_ms = 100;"))
        self.wait_states({n: "READY" for n in list(inst) + [bname]})
        slow = SlowRequest(self.port, bname)
        self.addCleanup(hold.release)
        self.assertTrue(hold.started.wait(DEADLINE))

        seen = []
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    seen.append(self.states().get(bname))
                except Exception:  # noqa: BLE001 (veerctl hiccup: keep polling)
                    pass
        th = threading.Thread(target=poll, daemon=True)
        th.start()
        self.addCleanup(stop.set)
        d.set_hosts({NAME: addrs[:1]})
        wait_for(lambda: "DRAINING" in seen, interval=0.01, what="%s DRAINING" % bname)
        n_before = len(seen)
        d.set_hosts({NAME: addrs})
        wait_for(lambda: seen[-1:] == ["READY"] and len(seen) > n_before, interval=0.01,
                 what="%s READY again" % bname)
        stop.set()
        th.join(DEADLINE)
        after = seen[n_before:]
        self.assertNotIn("PENDING", after, "readmitted through a new check cycle: %r" % after)
        self.assertNotIn(None, after, "removed before readmission: %r" % after)
        # No health record of a new PENDING -> READY for it.
        _, recs = audit_records(os.path.join(self.v.tmp, "audit.log"))
        pend = [r for r in recs if bname in r["command"] and
                json.dumps(r.get("before")).find("PENDING") >= 0 and r["actor"] == "health"]
        self.assertLessEqual(len(pend), 1, pend)  # only its first admission
        mentions = [r for r in recs if r["actor"] == "discovery" and bname in json.dumps(r)]
        self.assertGreaterEqual(len(mentions), 3, "added, drained, readmitted: %r" % mentions)
        hold.release()
        self.assertEqual(slow.wait().status, 200)
        # New requests reach it again.
        t = time.monotonic()
        load = StrictLoad(self.port, n=2)
        self.addCleanup(load.stop)
        wait_for(lambda: any(r[1] != "/slow" for r in bb.traffic_after(t)),
                 what="traffic on the readmitted backend")
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        self.v.stop()


# --- reload, audit ----------------------------------------------------------------


class ReloadTest(DiscoveryCase):
    def test_reload_removes_one_entry_and_adds_another(self):
        a_addrs, w_addrs, x_addrs = ips(2, 2), ips(4, 2), ips(6, 1)
        port = common_port(a_addrs + w_addrs + x_addrs)
        a = self.instances(a_addrs, port)
        w = self.instances(w_addrs, port, prefix="web")
        x = self.instances(x_addrs, port, prefix="extra")
        d = self.dns(hosts={NAME: a_addrs, "web.internal": w_addrs, "extra.internal": x_addrs},
                     local_ttl=3600)
        res = "interval_ms = 60000; min_interval_ms = 100;"
        api_e = entry_text(dns="%s:%d" % (NAME, port))
        web_e = entry_text(name="web", dns="web.internal:%d" % port)
        ext_e = entry_text(name="extra", dns="extra.internal:%d" % port)
        self.start(disc_config(d.port, [api_e, web_e], resolvers=res))
        self.wait_states({n: "READY" for n in list(a) + list(w)})
        load = StrictLoad(self.port, n=3)
        self.addCleanup(load.stop)

        def reload(entries):
            with open(self.v.config_path, "w") as f:
                f.write("workers = 2;\n" + disc_config(d.port, entries, resolvers=res)
                        .replace("{tmp}", self.v.tmp))
            p = self.ctl("reload")
            self.assertTrue(p.stdout.startswith("OK"), p.stdout + p.stderr)

        reload([api_e])
        self.wait_states({n: "READY" for n in a}, what="web's backends drained and gone")
        self.assertEqual([e["name"] for e in self.discovery()], ["api"])
        t = time.monotonic()
        load.wait_each_sent_after(t, 10)
        late = [r for r in load.all() if r.sent > t and r.backend in w]
        self.assertEqual(late, [], "requests reached web's backends after they were gone")

        t0 = time.monotonic()
        reload([api_e, ext_e])
        # TTL 3600 s and interval 60 s: only an immediate resolution explains this.
        self.wait_states({n: "READY" for n in list(a) + list(x)},
                         what="extra resolved at once after the reload")
        self.assertLess(time.monotonic() - t0, DEADLINE)
        self.assertEqual(sorted(e["name"] for e in self.discovery()), ["api", "extra"])
        wait_for(lambda: all(b.traffic_count() > 0 for b in x.values()),
                 what="traffic on extra's backend")
        load.stop()
        self.assertEqual(load.failures(), [], load.describe())
        self.v.stop()


class AuditTest(DiscoveryCase):
    def test_changes_are_audited_as_discovery(self):
        addrs = ips(2, 3)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        d = self.dns(hosts={NAME: addrs[:1]})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers="interval_ms = 300; min_interval_ms = 100;"))
        names = sorted(inst)
        self.wait_states({names[0]: "READY"})
        wait_for(lambda: any(names[0] in json.dumps(r) for r in self.discovery_audit()),
                 what="the first address audited")
        n0 = len(self.discovery_audit())
        d.set_hosts({NAME: addrs[1:]})
        self.wait_states({n: "READY" for n in names[1:]})
        recs = self.discovery_audit()[n0:]
        self.assertGreaterEqual(len(recs), 1)
        text = json.dumps(recs)
        for n in names:
            self.assertIn(n, text)  # two added, one drained
        for r in recs:
            self.assertEqual(r["actor"], "discovery")
        gens = [r["generation"] for r in self.discovery_audit()]
        self.assertEqual(len(gens), len(set(gens)), "one publish per audited change: %r" % gens)
        p = self.ctl("audit", "verify")
        self.assertTrue(p.stdout.startswith("OK"), p.stdout)
        self.v.stop()


    def test_every_discovery_publish_is_audited(self):
        """Each change discovery makes is one publish and one audit record: the
        removal of a drained backend too (it changes the pool as much as its
        addition did), so the audit log's generations have no gap."""
        addrs = ips(2, 2)
        port = common_port(addrs)
        inst = self.instances(addrs, port)
        d = self.dns(hosts={NAME: addrs[:1]})
        self.start(disc_config(d.port, [entry_text(dns="%s:%d" % (NAME, port))],
                               resolvers="interval_ms = 300; min_interval_ms = 100;"))
        n1, n2 = sorted(inst)
        self.wait_states({n1: "READY"})
        d.set_hosts({NAME: addrs[1:]})
        self.wait_states({n2: "READY"}, what="%s added and %s drained and removed" % (n2, n1))
        gen = show_pool(self.sock)["generation"]
        _, recs = audit_records(os.path.join(self.v.tmp, "audit.log"))
        gens = sorted(r["generation"] for r in recs)
        unaudited = sorted(set(range(2, gen + 1)) - set(gens))
        self.assertEqual(unaudited, [], "publishes with no audit record, records: %s"
                         % "; ".join("%s %s gen %d %s" % (r["actor"], r["command"],
                                                          r["generation"],
                                                          json.dumps(r["after"]))
                                     for r in recs))
        self.v.stop()


# --- config errors ------------------------------------------------------------------

POOL_HEAD = '''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
pools = ( { name = "api";
  discover = (
'''

# Each bad config: (text, the line its error must name, a word the message must hold).
BAD = {
    "both dns and srv": (POOL_HEAD + '''    { name = "a"; dns = "api.internal:80"; srv = "_x._tcp.api.internal"; }
  ); } );
''', 4, 'dns'),
    "neither dns nor srv": (POOL_HEAD + '''    { name = "a"; group = "blue"; }
  ); } );
''', 4, 'dns'),
    "dns without a port": (POOL_HEAD + '''    { name = "b"; dns = "api.internal:80"; },
    { name = "a"; dns = "api.internal"; }
  ); } );
''', 5, 'dns'),
    "duplicate entry names across pools": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
pools = (
  { name = "api"; discover = ( { name = "a"; dns = "api.internal:80"; } ); },
  { name = "web"; discover = ( { name = "a"; dns = "web.internal:80"; } ); }
);
''', 4, "'a'"),
    "name over 24 characters": (POOL_HEAD + '''    { name = "abcdefghijklmnopqrstuvwxy"; dns = "api.internal:80"; }
  ); } );
''', 4, 'name'),
    "bad group": (POOL_HEAD + '''    { name = "b"; dns = "api.internal:80"; },
    { name = "a"; dns = "api.internal:80"; group = "no spaces here"; }
  ); } );
''', 5, 'group'),
    "weight out of range": (POOL_HEAD + '''    { name = "b"; dns = "api.internal:80"; },
    { name = "a"; dns = "api.internal:80"; weight = 1001; }
  ); } );
''', 5, 'weight'),
    "resolver server not an address": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );

resolvers = { servers = ( "127.0.0.1:53", "ns1.example" ); };
pools = ( { name = "api"; discover = ( { name = "a"; dns = "api.internal:80"; } ); } );
''', 3, 'servers'),
}


class ConfigTest(VeerTestCase):
    def test_good_config_accepted(self):
        rc, err, path = veer_check_config(
            'listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'resolvers = { servers = ( "127.0.0.1:5353", "[::1]:53" ); interval_ms = 5000;\n'
            '  min_interval_ms = 1000; timeout_ms = 1000; confirm = 2; max_backends = 256; };\n'
            'pools = ( { name = "api"; discover = (\n'
            '  { name = "abcdefghijklmnopqrstuvwx"; dns = "api.internal:8080"; group = "blue";'
            ' weight = 100; confirm = 3; max_backends = 10; },\n'
            '  { name = "grpc"; srv = "_grpc._tcp.api.internal"; group = "green"; } ); } );\n')
        self.addCleanup(os.unlink, path)
        self.assertEqual(rc, 0, err)

    def test_bad_discover_configs_report_file_and_line(self):
        for what, (text, line, word) in BAD.items():
            with self.subTest(what):
                rc, err, path = veer_check_config(text)
                self.addCleanup(os.unlink, path)
                self.assertEqual(rc, 1, err)
                first = err.splitlines()[0] if err else ""
                self.assertTrue(first.startswith("%s:%d: " % (path, line)),
                                "expected %s:%d: ..., got %r" % (path, line, err))
                self.assertIn(word, first[len("%s:%d: " % (path, line)):])
