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
import ssl
import subprocess
import tempfile
import threading
import unittest

from helpers import quick_config, show_pool
from veertest import Backend, Client, VeerTestCase, wait_for

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
