"""TLS from veer to its backends, per pool (issue 10; ARCHITECTURE.md pool
`tls = { verify; ca; sni; }`).

The backends are TLS servers in the test process (Python's ssl over
veertest.Backend), with certificates made at test time by `openssl req`
and signed by a test CA. They record the SNI each handshake asked for, the
handshakes that failed, and the requests (health checks included).

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_tls_upstream
"""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

from helpers import AdminConn, TlsClient, quick_config, show_pool, tls_listen_text
from veertest import VEER_BIN, Backend, Client, VeerTestCase, asan_build, wait_for

HEALTH_UA = "veer-health"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


class Certs:
    """A test CA, and leaf certificates it signs (or self-signed ones)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="veer-tls-up-")
        self.ca = self.path("ca.pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=veer test CA",
                cwd=self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def leaf(self, name, sans, signed=True):
        """(cert, key) for subjectAltName sans, signed by the CA unless signed=False."""
        args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
                "-subj", "/CN=" + name, "-addext", "subjectAltName=" + sans]
        if signed:
            args += ["-CA", "ca.pem", "-CAkey", "ca.key"]
        openssl(*args, cwd=self.dir)
        return self.path(name + ".pem"), self.path(name + ".key")

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class TLSBackend(Backend):
    """A veertest.Backend speaking TLS. Records per handshake the SNI asked
    for (snis), failed handshakes (failures), TLS connections (tls_conns) and
    requests (health checks apart)."""

    def __init__(self, name, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = self._sni
        self.snis = []
        self.failures = []
        self.tls_conns = 0
        self.checks = 0
        self.traffic = []
        super().__init__(name, self._handle)

    def _sni(self, sock, name, ctx):
        with self.lock:
            self.snis.append(name)

    def _serve(self, c):
        try:
            c.settimeout(30)
            t = self.ctx.wrap_socket(c, server_side=True)
            t.settimeout(None)
        except (OSError, ssl.SSLError) as e:
            with self.lock:
                self.failures.append(repr(e))
            c.close()
            return
        with self.lock:
            self.tls_conns += 1
        super()._serve(t)

    def _handle(self, conn, req):
        with self.lock:
            if (req.header("User-Agent") or "") == HEALTH_UA:
                self.checks += 1
            else:
                self.traffic.append((req.target, req.header("X-Forwarded-Proto")))
        body = (self.name + "\n").encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                     % (len(body), self.name.encode(), body))
        return True


class UpstreamTLSTest(VeerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.good = cls.certs.leaf("api.internal", "DNS:api.internal,IP:127.0.0.1")
        cls.noip = cls.certs.leaf("named-only", "DNS:api.internal")
        cls.stranger = cls.certs.leaf("stranger", "DNS:api.internal,IP:127.0.0.1", signed=False)

    @classmethod
    def tearDownClass(cls):
        cls.certs.close()

    def tls_backend(self, name, pair):
        b = TLSBackend(name, *pair)
        self._cleanup.append(b.close)
        return b

    def start(self, backends, tls, health=False, workers=1):
        extra = "tls = { %s };" % tls
        if health:
            extra += (' health = { path = "/ready"; interval_ms = 100; timeout_ms = 1000; '
                      'rise = 1; fall = 1; };')
        cfg = quick_config([(b.name, b.address, 100) for b in backends],
                           extra_top='admin = { socket = "{tmp}/admin.sock"; };\n',
                           extra_pool=extra)
        self.v = self.veer(cfg, workers=workers)
        return self.v

    def tls_conf(self, verify=True, sni="api.internal", ca=None):
        out = "verify = %s;" % ("true" if verify else "false")
        out += ' ca = "%s";' % (ca or self.certs.ca)
        if sni:
            out += ' sni = "%s";' % sni
        return out

    def get(self, c, path):
        r = c.request("GET", path)
        self.assertIsNotNone(r, path)
        self.assertTrue(r.complete, path)
        return r

    def test_verified_tls_with_sni_and_keep_alive(self):
        b = self.tls_backend("b1", self.good)
        v = self.start([b], self.tls_conf())
        c = self.client(v.port)
        for i in range(20):
            r = self.get(c, "/t/%d" % i)
            self.assertEqual((r.status, r.body), (200, b"b1\n"))
        self.assertEqual([t for t, _ in b.traffic], ["/t/%d" % i for i in range(20)])
        # The client spoke plain HTTP: the backend is told so.
        self.assertEqual({p for _, p in b.traffic}, {"http"})
        self.assertEqual(b.failures, [])
        self.assertTrue(b.snis and set(b.snis) == {"api.internal"}, b.snis)
        # One worker, sequential requests: one upstream TLS connection reused.
        self.assertEqual(b.tls_conns, 1)
        v.stop()

    def test_verify_by_address_without_sni(self):
        b = self.tls_backend("b1", self.good)
        v = self.start([b], self.tls_conf(sni=None))
        r = self.get(self.client(v.port), "/ip")
        self.assertEqual(r.status, 200)
        self.assertEqual(b.snis, [None])
        v.stop()

    def test_certificate_not_naming_the_address_is_refused_without_sni(self):
        b = self.tls_backend("b1", self.noip)
        v = self.start([b], self.tls_conf(sni=None))
        r = self.get(self.client(v.port), "/ip")
        self.assertEqual(r.status, 502)
        self.assertIn(b"TLS handshake failed", r.body)
        v.wait_log(r"backend b1 \(127\.0\.0\.1:\d+\): TLS handshake failed: .*certificate verify "
                   r"failed")
        self.assertEqual(b.traffic, [])
        v.stop()

    def test_unknown_ca_is_refused_unless_verify_is_off(self):
        b = self.tls_backend("b1", self.stranger)
        v = self.start([b], self.tls_conf())
        r = self.get(self.client(v.port), "/x")
        self.assertEqual(r.status, 502)
        self.assertEqual(b.traffic, [])
        v.stop()

        v = self.start([b], self.tls_conf(verify=False))
        r = self.get(self.client(v.port), "/x")
        self.assertEqual((r.status, r.body), (200, b"b1\n"))
        v.stop()

    def test_health_checks_speak_tls_and_gate_admission(self):
        good = self.tls_backend("good", self.good)
        bad = self.tls_backend("bad", self.stranger)
        v = self.start([good, bad], self.tls_conf(), health=True)
        sock = v.tmp + "/admin.sock"

        def states():
            return {x["name"]: x["state"] for x in show_pool(sock)["backends"]}
        wait_for(lambda: states()["good"] == "READY", what="good READY over TLS checks")
        wait_for(lambda: len(bad.failures) >= 2, what="checks of bad failing verification")
        self.assertEqual(states()["bad"], "PENDING")
        self.assertGreater(good.checks, 0)
        c = self.client(v.port)
        for i in range(10):
            self.assertEqual(self.get(c, "/h/%d" % i).status, 200)
        self.assertEqual(len(good.traffic), 10)
        self.assertEqual(bad.traffic, [])
        v.wait_log(r"backend api/bad not ready yet: TLS: .*certificate verify failed")
        v.stop()

    def test_failed_handshake_is_retried_on_another_backend(self):
        good = self.tls_backend("good", self.good)
        bad = self.tls_backend("bad", self.stranger)
        v = self.start([good, bad], self.tls_conf())
        c = self.client(v.port)
        for i in range(10):
            r = self.get(c, "/r/%d" % i)
            self.assertEqual((r.status, r.header("X-Backend")), (200, "good"))
        self.assertGreater(len(bad.failures), 0, "bad was tried and refused")
        v.stop()

    def test_concurrent_large_responses(self):
        big = os.urandom(3 * 1024 * 1024)

        class Big(TLSBackend):
            def _handle(self, conn, req):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
                return True
        b = Big("big", *self.good)
        self._cleanup.append(b.close)
        v = self.start([b], self.tls_conf(), workers=2)
        results = []

        def fetch():
            c = Client(v.port, timeout=60)
            try:
                for _ in range(3):
                    r = c.request("GET", "/big")
                    results.append((r.status, r.complete, r.body == big))
            finally:
                c.close()
        ts = [threading.Thread(target=fetch) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(results, [(200, True, True)] * 12)
        v.stop()


if __name__ == "__main__":
    unittest.main()


class ReloadReclaimTest(VeerTestCase):
    """Issue 15 item 5: a reload frees the configuration it replaces once
    nothing can read it, its TLS contexts and CA stores included, while the
    connections and checks that started under it keep working."""

    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.backend_pair = cls.certs.leaf("api.internal", "DNS:api.internal,IP:127.0.0.1")
        cls.front = cls.certs.leaf("front", "DNS:front.test")

    @classmethod
    def tearDownClass(cls):
        cls.certs.close()

    def start(self, b, checked):
        listen = tls_listen_text([(self.front[0], self.front[1], None)])
        cfg = ("workers = 2;\n"
               "timeouts = { quiet_ms = 100; client_header_ms = 600000; idle_ms = 600000; };\n"
               'admin = { socket = "{tmp}/admin.sock"; };\n'
               'listen = ( { address = "127.0.0.1:0"; pool = "api";\n    %s } );\n'
               'pools = ( { name = "api"; backends = ( { name = "b1"; address = "%s"; } );\n'
               '            tls = { verify = true; ca = "%s"; sni = "api.internal"; }; },\n'
               # Readiness checks over TLS go on across the reloads.
               '          { name = "chk"; backends = ( { name = "c1"; address = "%s"; } );\n'
               '            health = { path = "/ready"; interval_ms = 50; timeout_ms = 10000; };\n'
               '            tls = { verify = true; ca = "%s"; sni = "api.internal"; }; },\n'
               # Verifies against the system CA bundle: the bulk of a configuration's memory.
               '          { name = "sys"; backends = ( { name = "s1"; address = "127.0.0.1:9"; } );\n'
               '            tls = { verify = true; }; } );\n') % (
                   listen, b.address, self.certs.ca, checked.address, self.certs.ca)
        v = self.veer(cfg)
        v.wait_log(r"listening on 127\.0\.0\.1:\d+ .*tls")
        self.adm = AdminConn(v.tmp + "/admin.sock", timeout=60)
        self._cleanup.append(self.adm.close)
        return v

    def backends(self):
        b = TLSBackend("b1", *self.backend_pair)
        self._cleanup.append(b.close)
        checked = TLSBackend("c1", *self.backend_pair)
        self._cleanup.append(checked.close)
        return b, checked

    def reload(self, n):
        for _ in range(n):
            reply = self.adm.command("reload")
            self.assertTrue(reply.startswith("OK gen="), reply)

    def get(self, c, path):
        r = c.request("GET", path)
        self.assertIsNotNone(r, path)
        self.assertEqual((r.status, r.body), (200, b"b1\n"), path)

    def test_connections_and_checks_outlive_the_configuration_they_began_under(self):
        # Under ASan (its quarantine on): reading a freed configuration is an error.
        b, checked = self.backends()
        v = self.start(b, checked)
        # Past the configuration veer started with (kept until a restart).
        self.reload(3)
        # Under configuration 3, freed below: readiness checks of a backend
        # added now, a keep-alive TLS client, its upstream TLS connection,
        # and a connection whose handshake has not begun.
        reply = self.adm.command("add backend chk c2 %s" % checked.address)
        self.assertTrue(reply.startswith("OK "), reply)
        c = TlsClient(v.port, sni="front.test")
        self._cleanup.append(c.close)
        self.get(c, "/before")
        pending = socket.create_connection(("127.0.0.1", v.port), timeout=30)
        self._cleanup.append(pending.close)
        self.reload(10)
        v.wait_log(r"reloaded .* gen=\d+")
        # The handshake of a connection accepted under configuration 3 runs now.
        t = tls_client_ctx().wrap_socket(pending, server_hostname="front.test")
        t.sendall(b"GET /pending HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(t.recv(4096).startswith(b"HTTP/1.1 200 "))
        t.close()
        # Readiness checks still pass, with the path and TLS settings of the
        # configuration in force.
        n = checked.checks
        wait_for(lambda: checked.checks >= n + 6, what="six more checks of c1 and c2")
        # c's worker still has its upstream TLS connection from configuration
        # 3 (the pending client may have been on the other worker).
        conns = b.tls_conns
        self.get(c, "/after")
        self.assertEqual(b.tls_conns, conns, "the upstream TLS connection was not reused")
        late = TlsClient(v.port, sni="front.test")
        self._cleanup.append(late.close)
        self.get(late, "/new")
        self.assertEqual([p for p, _ in b.traffic], ["/before", "/pending", "/after", "/new"])
        v.stop()

    def test_rss_stays_flat_over_many_reloads(self):
        """VEER_TEST_RELOADS reloads: 500 by default, 50 on an ASan build (each
        reload loads the system CA bundle: about 0.1 s in a plain build,
        several times that under ASan), enough either way: a configuration
        kept costs about 850 KiB here. Under ASan, freed memory goes straight
        back to the allocator (no quarantine), so RSS says what is kept."""
        asan = asan_build()
        count = int(os.environ.get("VEER_TEST_RELOADS", "50" if asan else "500"))
        asan_options = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = ((asan_options + ":") if asan_options else "") + \
            "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
        try:
            b, checked = self.backends()
            v = self.start(b, checked)
        finally:
            if asan_options is None:
                os.environ.pop("ASAN_OPTIONS", None)
            else:
                os.environ["ASAN_OPTIONS"] = asan_options
        c = TlsClient(v.port, sni="front.test")
        self._cleanup.append(c.close)
        self.get(c, "/warm")
        # The allocator's arenas settle first: half as many reloads again as are
        # measured (a fresh CI machine once saw 2.6 MiB of growth after only 60
        # warm-up reloads; 1,500 measured after them stay under 2 MiB here, so
        # what grew was early arena growth, not something kept per reload).
        self.reload(max(30 if asan else 60, count // 2))
        base = v.rss_kib()
        self.reload(count)
        grown = {}
        # Issue 15's bound: 2 MiB over 500 reloads (a kept configuration costs
        # ~850 KiB each). ASan's allocator keeps more in its size-class caches
        # (2.2 MiB seen over 50 reloads on a busy machine): 4 MiB there, still
        # a tenth of what 50 kept configurations would cost.
        bound = 4096 if asan else 2048

        def settled():
            grown["kib"] = v.rss_kib() - base
            return grown["kib"] < bound
        try:
            wait_for(settled, timeout=10, interval=0.1, what="RSS back within %d KiB" % bound)
        except AssertionError:
            self.fail("RSS grew by %d KiB over %d reloads (base %d KiB)"
                      % (grown["kib"], count, base))
        self.get(c, "/after")
        v.stop()


def tls_client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
