"""TLS termination on listeners (issue 10; ARCHITECTURE.md listener `tls`).

The real veer with a `tls` block on its listener, real plain-HTTP backends
(veertest.Backend), clients from Python's ssl module and `openssl s_client`.
Every certificate, key and OCSP response is made at test time in a temp dir
(`openssl req -x509`, `openssl ocsp`); nothing secret is committed.

What is checked, precisely:
- which certificate veer presented (its DER equals the file's), per SNI
  name: exact SAN, case-insensitive, one-label wildcards, default otherwise;
- negotiated protocol version, ALPN, cipher (TLS 1.2: only Mozilla
  "intermediate" suites; TLS 1.0/1.1 refused with a protocol_version alert);
- session resumption (session id cache, TLS 1.2 and 1.3 tickets, across
  workers; `openssl s_client -reconnect` and `-sess_in`);
- the stapled OCSP response's bytes equal the configured file;
- proxying over TLS: X-Forwarded-Proto, keep-alive, pipelining, 5 MB up and
  down (a slow reader too);
- reload re-reads certificate files (good ones swap, bad ones refused with
  FILE:LINE naming the file, the old certificate kept), `veer -t` errors;
- how bytes arrive: a ClientHello one byte per segment, the request in the
  segment of the client's Finished, close_notify from the client (answered
  with veer's own), TLS 1.3 KeyUpdate, refused TLS 1.2 renegotiation,
  backpressure to a TLS client that stops reading;
- handshake timeouts and garbage, graceful stop and binary upgrade with TLS
  connections open.

Needs the `openssl` command line tool (Debian package openssl).

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_tls
"""

import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import unittest

import veertest
from helpers import (MiB, BodyDigest, Pattern, RssSampler, SendProgress, StreamBackend,
                     StreamReader, Successor, TlsClient, TlsFiles, become_subreaper, iter_body,
                     pid_lines, read_head, s_client, s_client_messages, send_tracked,
                     shutdown_summary, stapled_ocsp, tls_client_context, tls_listen_text,
                     tls_listener_ports, veerctl)
from veertest import DEADLINE, VeerTestCase, veer_check_config, wait_for

FILES = None       # TlsFiles made once for the module (read-only for the tests)
SUBREAPER = False

# Mozilla "intermediate" TLS 1.2 suites (ECDHE, and DHE with RSA, AEAD only).
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
}
ECDHE_ECDSA = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
               "ECDHE-ECDSA-CHACHA20-POLY1305"}
ECDHE_RSA = {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
             "ECDHE-RSA-CHACHA20-POLY1305"}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


def setUpModule():
    global FILES, SUBREAPER
    FILES = TlsFiles()
    FILES.ca()
    # The default certificate is signed by the test CA, so it can have an OCSP response.
    FILES.issued("default", ["default.test"])
    FILES.ocsp_response("default")
    FILES.self_signed("wild", ["*.example.test"])
    FILES.self_signed("exact", ["www.exact.test", "Mixed.Case.Test"])
    FILES.self_signed("rsa", ["rsa.test"], kind="rsa")
    FILES.self_signed("cnonly", ["san-of-cnonly.test"], cn="cn-only.test")
    FILES.self_signed("spare", ["spare.test"])
    SUBREAPER = become_subreaper()


def tearDownModule():
    become_subreaper(False)
    if FILES is not None:
        FILES.close()


def entry(name, ocsp=False, files=None):
    """A certificate entry (cert, key, ocsp or None) for tls_listen_text."""
    f = files or FILES
    return (f.cert(name), f.key(name), f.ocsp(name) if ocsp else None)


def config(backends, entries, protocols=None, ciphers=None, plain_too=False, top="",
           workers=None):
    """veer config: a TLS listener (and a plain one first when plain_too) on pool api;
    entries=None makes that listener plain."""
    listeners = []
    if plain_too:
        listeners.append('{ address = "127.0.0.1:0"; pool = "api"; }')
    if entries is None:
        listeners.append('{ address = "127.0.0.1:0"; pool = "api"; }')
    else:
        tls = tls_listen_text(entries, protocols=protocols, ciphers=ciphers)
        listeners.append('{ address = "127.0.0.1:0"; pool = "api";\n    %s }' % tls)
    lines = ", ".join('{ name = "%s"; address = "%s"; }' % (n, a) for n, a in backends)
    text = ""
    if workers is not None:
        text += "workers = %d;\n" % workers
    if "timeouts" not in top:
        text += "timeouts = { quiet_ms = 100; };\n"
    text += top
    text += "listen = ( %s );\n" % ",\n  ".join(listeners)
    text += 'pools = ( { name = "api"; backends = ( %s ); } );\n' % lines
    return text


def send_and_read_to_eof(port, data, timeout=DEADLINE):
    """Send data (veer may close before all of it is taken) and return what
    came back until the close; AssertionError if veer never closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while True:
            d = s.recv(4096)
            if not d:
                break
            out += d
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError("connection not closed within %.0fs; got %r" % (timeout, out[:200]))
    finally:
        s.close()
    return out


class TLSTestCase(VeerTestCase):
    def start(self, entries=None, backend=None, workers=1, **kw):
        """A backend (or the given one) and veer with a TLS listener; returns
        (backend, veer, tls port)."""
        b = backend or self.backend("b")
        v = self.veer(config([("b", b.address)], entries or [entry("default")], workers=workers,
                             **kw))
        ports = tls_listener_ports(v)
        self.assertEqual(len(ports["tls"]), 1, v.log())
        return b, v, ports["tls"][0]

    def tls(self, port, **kw):
        c = TlsClient(port, **kw)
        self._cleanup.append(c.close)
        return c

    def get_ok(self, c, path="/", name="b"):
        r = c.request("GET", path)
        self.assertIsNotNone(r, "connection closed without a response to %s" % path)
        self.assertEqual((r.status, r.body), (200, (name + "\n").encode()), r.body[:200])
        return r

    def assert_cert(self, c, name, files=None, what=""):
        got = c.cert_der()
        f = files or FILES
        self.assertEqual(f.name_of(got), name, "%s: presented %s, expected %s"
                         % (what, f.name_of(got), name))


# --- handshake, protocols, ciphers ---------------------------------------------------


class HandshakeTest(TLSTestCase):
    def test_tls12_and_tls13_requests_proxied(self):
        b, v, port = self.start()
        for ver, text in ((TLS12, "TLSv1.2"), (TLS13, "TLSv1.3")):
            c = self.tls(port, ctx=tls_client_context(min_version=ver, max_version=ver),
                         sni="default.test")
            self.assertEqual(c.sock.version(), text)
            self.assert_cert(c, "default", what=text)
            self.get_ok(c, "/over/" + text)
            c.close()
        self.assertEqual([r.target for r in b.requests], ["/over/TLSv1.2", "/over/TLSv1.3"])
        self.assertIn(", tls)", "\n".join(v.log()))
        v.stop()

    def test_default_client_gets_tls13(self):
        b, v, port = self.start()
        c = self.tls(port)
        self.assertEqual(c.sock.version(), "TLSv1.3")
        self.assertIn(c.sock.cipher()[0], TLS13_SUITES)
        self.get_ok(c)
        c.close()
        v.stop()

    def assert_protocol_refused(self, port, ver, what):
        """A handshake limited to version ver fails with the server's
        protocol_version alert (not a client-side refusal)."""
        ctx = tls_client_context(min_version=ver, max_version=ver, ciphers="ALL:@SECLEVEL=0")
        with self.assertRaises(ssl.SSLError, msg=what) as cm:
            TlsClient(port, ctx=ctx, sni="default.test").close()
        self.assertIn("PROTOCOL_VERSION", str(cm.exception), "%s: %r" % (what, cm.exception))

    def test_tls10_and_tls11_refused(self):
        b, v, port = self.start()
        for ver, what in ((ssl.TLSVersion.TLSv1, "TLS 1.0"), (ssl.TLSVersion.TLSv1_1, "TLS 1.1")):
            self.assert_protocol_refused(port, ver, what)
        # openssl s_client too (its own ClientHello), at security level 0 so the
        # client itself is willing to speak them.
        for flag in ("-tls1", "-tls1_1"):
            p = s_client(port, flag, "-cipher", "ALL:@SECLEVEL=0", "-servername", "default.test")
            self.assertNotEqual(p.returncode, 0, p.stdout)
            self.assertIn("alert protocol version", p.stdout + p.stderr, flag)
            self.assertNotRegex(p.stdout, r"(?m)^New, TLSv1", flag)
        # Veer is still fine.
        c = self.tls(port)
        self.get_ok(c)
        c.close()
        v.stop()

    def test_protocols_tls12_only(self):
        b, v, port = self.start(protocols="TLSv1.2")
        self.assert_protocol_refused(port, TLS13, "TLS 1.3 against protocols = TLSv1.2")
        self.assert_protocol_refused(port, ssl.TLSVersion.TLSv1_1, "TLS 1.1")
        c = self.tls(port)  # offers 1.2 and 1.3
        self.assertEqual(c.sock.version(), "TLSv1.2")
        self.get_ok(c)
        c.close()
        v.stop()

    def test_protocols_tls13_only(self):
        for text in ("TLSv1.3", "TLSv1.3+"):
            b, v, port = self.start(protocols=text)
            self.assert_protocol_refused(port, TLS12, "TLS 1.2 against protocols = " + text)
            c = self.tls(port)
            self.assertEqual(c.sock.version(), "TLSv1.3", text)
            self.get_ok(c)
            c.close()
            v.stop()

    def test_protocols_tls12_plus_explicit(self):
        b, v, port = self.start(protocols="TLSv1.2+")
        for ver, text in ((TLS12, "TLSv1.2"), (TLS13, "TLSv1.3")):
            c = self.tls(port, ctx=tls_client_context(min_version=ver, max_version=ver))
            self.assertEqual(c.sock.version(), text)
            self.get_ok(c)
            c.close()
        self.assert_protocol_refused(port, ssl.TLSVersion.TLSv1, "TLS 1.0")
        v.stop()

    def accepted_tls12_ciphers(self, port, sni):
        """Every TLS 1.2-or-older suite this OpenSSL knows, offered alone:
        the set veer accepts (the negotiated suite is the offered one)."""
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
        names = sorted({c["name"] for c in probe.get_ciphers() if c["protocol"] != "TLSv1.3"})
        self.assertGreater(len(names), 40, "the client offers too few suites to judge")
        accepted = set()
        for name in names:
            ctx = tls_client_context(min_version=ssl.TLSVersion.TLSv1, max_version=TLS12,
                                     ciphers=name + ":@SECLEVEL=0")
            try:
                c = TlsClient(port, ctx=ctx, sni=sni)
            except (ssl.SSLError, ConnectionError):
                continue
            got = c.sock.cipher()
            c.close()
            self.assertEqual(got[0], name)
            self.assertEqual(got[1], "TLSv1.2", name)
            accepted.add(name)
        return accepted

    def test_tls12_ciphers_are_mozilla_intermediate(self):
        b, v, port = self.start([entry("default"), entry("rsa")])
        ec = self.accepted_tls12_ciphers(port, "default.test")
        rsa = self.accepted_tls12_ciphers(port, "rsa.test")
        weak = re.compile(r"CBC|-SHA$|RC4|DES|NULL|EXP|MD5|ADH|AECDH|PSK|SRP|CAMELLIA|ARIA|CCM|SEED"
                          r"|IDEA|^AES|^RSA")
        for what, got, need in (("ECDSA certificate", ec, ECDHE_ECDSA),
                                ("RSA certificate", rsa, ECDHE_RSA)):
            self.assertLessEqual(got, INTERMEDIATE_TLS12, "%s: suites outside Mozilla "
                                 "intermediate: %s" % (what, sorted(got - INTERMEDIATE_TLS12)))
            self.assertGreaterEqual(got, need, "%s: missing %s" % (what, sorted(need - got)))
            self.assertEqual([n for n in got if weak.search(n)], [], what)
        # The ECDSA key gets no RSA suites and vice versa.
        self.assertFalse(ec & ECDHE_RSA, ec)
        self.assertFalse(rsa & ECDHE_ECDSA, rsa)
        v.stop()

    def test_tls13_suites(self):
        b, v, port = self.start()
        for suite in TLS13_SUITES:
            p = s_client(port, "-tls1_3", "-ciphersuites", suite, "-servername", "default.test")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertRegex(p.stdout, r"(?m)^New, TLSv1\.3, Cipher is %s$" % suite)
        for suite in ("TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"):
            p = s_client(port, "-tls1_3", "-ciphersuites", suite, "-servername", "default.test")
            self.assertNotRegex(p.stdout, r"(?m)^New, TLSv1\.3, Cipher is %s$" % suite, suite)
        v.stop()

    def test_ciphers_setting_replaces_tls12_list(self):
        b, v, port = self.start(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(self.accepted_tls12_ciphers(port, "default.test"),
                         {"ECDHE-ECDSA-AES256-GCM-SHA384"})
        c = self.tls(port)  # TLS 1.3 is not affected
        self.assertEqual(c.sock.version(), "TLSv1.3")
        self.get_ok(c)
        c.close()
        v.stop()

    def test_many_concurrent_handshakes(self):
        b, v, port = self.start(workers=2)
        errors, done = [], []
        lock = threading.Lock()

        def one(i):
            try:
                for k in range(5):
                    c = TlsClient(port, sni="default.test")
                    r = c.request("GET", "/c/%d/%d" % (i, k))
                    c.close()
                    if r is None or r.status != 200 or r.body != b"b\n":
                        raise AssertionError("bad answer %r" % (r and (r.status, r.body)))
                with lock:
                    done.append(i)
            except Exception as e:  # reported below
                with lock:
                    errors.append((i, repr(e)))
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE * 2)
        self.assertEqual(errors, [])
        self.assertEqual(len(done), 40)
        self.assertEqual(len(b.requests), 200)
        v.stop()


# --- SNI -------------------------------------------------------------------------------


class SNITest(TLSTestCase):
    CASES = [
        (None, "default"),
        ("default.test", "default"),
        ("www.exact.test", "exact"),
        ("WWW.Exact.TEST", "exact"),
        ("mixed.case.test", "exact"),
        ("MIXED.CASE.TEST", "exact"),
        ("a.example.test", "wild"),
        ("Other-Label.EXAMPLE.test", "wild"),
        ("a.b.example.test", "default"),   # a wildcard covers one label only
        ("example.test", "default"),       # ... and at least one
        ("xexample.test", "default"),
        ("exact.test", "default"),
        ("www.exact.test.evil", "default"),
        ("rsa.test", "rsa"),
        ("unknown.test", "default"),
    ]

    def test_sni_selects_certificate(self):
        b, v, port = self.start([entry("default"), entry("wild"), entry("exact"), entry("rsa")])
        for ver in (TLS12, TLS13):
            for sni, want in self.CASES:
                c = self.tls(port, ctx=tls_client_context(min_version=ver, max_version=ver),
                             sni=sni)
                self.assert_cert(c, want, what="%s SNI %r" % (ver.name, sni))
                self.get_ok(c, "/sni/%s" % sni)
                c.close()
        # The RSA certificate's handshake used an RSA suite (TLS 1.2).
        c = self.tls(port, ctx=tls_client_context(max_version=TLS12), sni="rsa.test")
        self.assertIn("-RSA-", c.sock.cipher()[0])
        c.close()
        v.stop()

    def test_sni_openssl_s_client(self):
        b, v, port = self.start([entry("default"), entry("wild"), entry("exact")])
        for sni, want in (("b.example.test", "wild"), ("www.exact.test", "exact"),
                          ("nope.test", "default")):
            p = s_client(port, "-servername", sni, "-showcerts")
            self.assertEqual(p.returncode, 0, p.stderr)
            pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                            p.stdout, re.S).group(0)
            self.assertEqual(FILES.name_of(ssl.PEM_cert_to_DER_cert(pem)), want, sni)
        p = s_client(port, "-noservername", "-showcerts")
        pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                        p.stdout, re.S).group(0)
        self.assertEqual(FILES.name_of(ssl.PEM_cert_to_DER_cert(pem)), "default")
        v.stop()

    def test_sni_ignores_common_name_when_sans_exist(self):
        b, v, port = self.start([entry("default"), entry("cnonly")])
        c = self.tls(port, sni="cn-only.test")
        self.assert_cert(c, "default", what="CN of a certificate that has SANs")
        c.close()
        c = self.tls(port, sni="san-of-cnonly.test")
        self.assert_cert(c, "cnonly", what="its SAN")
        c.close()
        v.stop()

    def test_single_certificate_serves_every_name(self):
        b, v, port = self.start([entry("wild")])
        for sni in (None, "a.example.test", "unrelated.test"):
            c = self.tls(port, sni=sni)
            self.assert_cert(c, "wild", what=repr(sni))
            self.get_ok(c)
            c.close()
        v.stop()


# --- ALPN ------------------------------------------------------------------------------


class ALPNTest(TLSTestCase):
    def test_alpn(self):
        b, v, port = self.start()
        cases = [(["http/1.1"], "http/1.1"), (["h2", "http/1.1"], "http/1.1"),
                 (["http/1.1", "h2"], "http/1.1"), (["h2"], None), (["h2", "spdy/3"], None),
                 (None, None)]
        for ver in (TLS12, TLS13):
            for offer, want in cases:
                c = self.tls(port, ctx=tls_client_context(min_version=ver, max_version=ver,
                                                          alpn=offer))
                self.assertEqual(c.sock.selected_alpn_protocol(), want, "%s %r" % (ver, offer))
                self.get_ok(c, "/alpn")  # HTTP/1.1 is spoken in every case
                c.close()
        v.stop()

    def test_alpn_s_client(self):
        b, v, port = self.start()
        p = s_client(port, "-alpn", "h2,http/1.1")
        self.assertRegex(p.stdout, r"(?m)^ALPN protocol: http/1\.1$")
        p = s_client(port, "-alpn", "h2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"(?m)^No ALPN negotiated$")
        v.stop()


# --- session resumption -----------------------------------------------------------------


class ResumptionTest(TLSTestCase):
    def first_session(self, port, ctx):
        c = self.tls(port, ctx=ctx, sni="default.test")
        self.assertFalse(c.sock.session_reused)
        self.get_ok(c)  # a TLS 1.3 ticket arrives after the handshake: read a response first
        sess = c.sock.session
        c.close()
        self.assertIsNotNone(sess)
        return sess

    def resume(self, port, ctx, sess, times):
        for i in range(times):
            c = self.tls(port, ctx=ctx, sni="default.test", session=sess)
            self.assertTrue(c.sock.session_reused, "connection %d after the first: full "
                            "handshake" % (i + 1))
            self.assert_cert(c, "default")
            self.get_ok(c, "/resumed/%d" % i)
            c.close()

    def test_tls12_session_id_cache(self):
        b, v, port = self.start(workers=2)
        ctx = tls_client_context(max_version=TLS12, tickets=False)
        sess = self.first_session(port, ctx)
        self.assertFalse(sess.has_ticket)
        self.assertTrue(sess.id)
        # Two workers, each with its own socket: the cache must serve them all.
        self.resume(port, ctx, sess, 8)
        v.stop()

    def test_tls12_ticket(self):
        b, v, port = self.start(workers=2)
        ctx = tls_client_context(max_version=TLS12)
        sess = self.first_session(port, ctx)
        self.assertTrue(sess.has_ticket)
        self.assertGreater(sess.ticket_lifetime_hint, 0)
        self.resume(port, ctx, sess, 8)
        v.stop()

    def test_tls13_ticket(self):
        b, v, port = self.start(workers=2)
        ctx = tls_client_context(min_version=TLS13)
        sess = self.first_session(port, ctx)
        self.assertTrue(sess.has_ticket)
        # A TLS 1.3 client may use a ticket once and then the new one it got.
        for i in range(8):
            c = self.tls(port, ctx=ctx, sni="default.test", session=sess)
            self.assertTrue(c.sock.session_reused, "TLS 1.3 resumption %d" % i)
            self.get_ok(c)
            sess = c.sock.session
            c.close()
        v.stop()

    def test_sni_certificate_resumes(self):
        b, v, port = self.start([entry("default"), entry("exact")])
        for ver in (TLS12, TLS13):
            ctx = tls_client_context(min_version=ver, max_version=ver)
            c = self.tls(port, ctx=ctx, sni="www.exact.test")
            self.assert_cert(c, "exact")
            self.get_ok(c)
            sess = c.sock.session
            c.close()
            c = self.tls(port, ctx=ctx, sni="www.exact.test", session=sess)
            self.assertTrue(c.sock.session_reused, ver)
            self.get_ok(c)
            c.close()
        v.stop()

    def test_s_client_reconnect_tls12(self):
        b, v, port = self.start()
        p = s_client(port, "-tls1_2", "-reconnect", "-servername", "default.test")
        lines = re.findall(r"(?m)^(New|Reused), (TLSv1\.2)", p.stdout)
        self.assertEqual(lines[0], ("New", "TLSv1.2"), p.stdout)
        self.assertEqual(lines[1:], [("Reused", "TLSv1.2")] * 5, p.stdout)
        # and without tickets: the session id cache
        p = s_client(port, "-tls1_2", "-no_ticket", "-reconnect", "-servername", "default.test")
        lines = re.findall(r"(?m)^(New|Reused), (TLSv1\.2)", p.stdout)
        self.assertEqual(lines, [("New", "TLSv1.2")] + [("Reused", "TLSv1.2")] * 5, p.stdout)
        v.stop()

    def test_s_client_sess_in_tls13(self):
        # s_client -reconnect does not wait for a TLS 1.3 ticket; -sess_out after
        # a request (the ticket is read with the response), then -sess_in.
        b, v, port = self.start()
        sess = os.path.join(FILES.dir, "s13-%d.pem" % os.getpid())
        req = b"GET /s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        p = s_client(port, "-tls1_3", "-sess_out", sess, "-ign_eof", input=req)
        self.assertRegex(p.stdout, r"(?m)^New, TLSv1\.3")
        self.assertIn("HTTP/1.1 200", p.stdout)
        p = s_client(port, "-tls1_3", "-sess_in", sess, "-ign_eof", input=req)
        self.assertRegex(p.stdout, r"(?m)^Reused, TLSv1\.3", p.stdout)
        self.assertIn("HTTP/1.1 200", p.stdout)
        os.unlink(sess)
        v.stop()

    def test_other_process_does_not_resume(self):
        # Ticket keys are random per process: a ticket from one veer is a full
        # handshake (not an error) at another.
        b = self.backend("b")
        _, v1, p1 = self.start(backend=b)
        _, v2, p2 = self.start(backend=b)
        for ctx in (tls_client_context(max_version=TLS12),
                    tls_client_context(min_version=TLS13)):
            sess = self.first_session(p1, ctx)
            c = self.tls(p2, ctx=ctx, sni="default.test", session=sess)
            self.assertFalse(c.sock.session_reused)
            self.get_ok(c)
            c.close()
        v1.stop()
        v2.stop()


# --- OCSP stapling ----------------------------------------------------------------------


class OCSPTest(TLSTestCase):
    def test_ocsp_stapled(self):
        b, v, port = self.start([entry("default", ocsp=True), entry("exact")])
        der = read_bytes(FILES.ocsp("default"))
        for flag in ("-tls1_2", "-tls1_3"):
            p = s_client(port, flag, "-status", "-msg", "-servername", "default.test")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("OCSP Response Status: successful", p.stdout, flag)
            self.assertIn("Cert Status: good", p.stdout, flag)
            self.assertTrue(stapled_ocsp(s_client_messages(p.stdout), der),
                            "%s: the stapled response is not the file's bytes" % flag)
            # A certificate without ocsp staples nothing.
            p = s_client(port, flag, "-status", "-msg", "-servername", "www.exact.test")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("OCSP response: no response sent", p.stdout, flag)
            # A client that does not ask gets no status.
            p = s_client(port, flag, "-msg", "-servername", "default.test")
            self.assertFalse(stapled_ocsp(s_client_messages(p.stdout), der), flag)
        v.stop()

    def test_ocsp_on_sni_certificate(self):
        b, v, port = self.start([entry("exact"), entry("default", ocsp=True)])
        der = read_bytes(FILES.ocsp("default"))
        for flag in ("-tls1_2", "-tls1_3"):
            p = s_client(port, flag, "-status", "-msg", "-servername", "default.test")
            self.assertTrue(stapled_ocsp(s_client_messages(p.stdout), der), flag)
            p = s_client(port, flag, "-status", "-msg", "-servername", "www.exact.test")
            self.assertIn("OCSP response: no response sent", p.stdout, flag)
        v.stop()


# --- proxying over TLS ------------------------------------------------------------------


class ProxyTest(TLSTestCase):
    def test_x_forwarded_proto(self):
        b = self.backend("b")
        v = self.veer(config([("b", b.address)], [entry("default")], plain_too=True))
        ports = tls_listener_ports(v)
        self.assertEqual((len(ports["plain"]), len(ports["tls"])), (1, 1), v.log())
        c = self.tls(ports["tls"][0])
        r = c.request("GET", "/tls", headers={"X-Forwarded-Proto": "http"})
        self.assertEqual(r.status, 200)
        p = self.client(ports["plain"][0])
        r = p.request("GET", "/plain", headers={"X-Forwarded-Proto": "https"})
        self.assertEqual(r.status, 200)
        by = {q.target: q for q in b.requests}
        self.assertEqual(by["/tls"].header_all("X-Forwarded-Proto"), ["https"])
        self.assertEqual(by["/plain"].header_all("X-Forwarded-Proto"), ["http"])
        # A plaintext request to the TLS port is not answered as HTTP.
        out = send_and_read_to_eof(ports["tls"][0], b"GET /oops HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertNotIn(b"HTTP/1.1 200", out)
        self.assertNotIn("/oops", [q.target for q in b.requests])
        c.close()
        p.close()
        v.stop()

    def test_keepalive_over_tls(self):
        b, v, port = self.start()
        c = self.tls(port)
        for i in range(50):
            r = self.get_ok(c, "/ka/%d" % i)
            self.assertNotEqual((r.header("Connection") or "").lower(), "close")
        self.assertEqual([q.target for q in b.requests], ["/ka/%d" % i for i in range(50)])
        self.assertTrue(all(q.header("X-Forwarded-Proto") == "https" for q in b.requests))
        self.assertLessEqual(b.connections, 2)  # upstream keep-alive, not one per request
        c.close()
        v.stop()

    def test_pipelining_over_tls(self):
        # Ten requests in one TLS write (one record): veer must serve the
        # plaintext OpenSSL already decrypted, not wait for the socket.
        b, v, port = self.start()
        c = self.tls(port)
        reqs = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(10))
        c.send(reqs)
        for i in range(10):
            r = c.response()
            self.assertIsNotNone(r, "response %d missing" % i)
            self.assertEqual((r.status, r.body), (200, b"b\n"), i)
        self.assertEqual([q.target for q in b.requests], ["/p/%d" % i for i in range(10)])
        # A head larger than one TLS record (16 KiB), sent as one write.
        big = "x" * 20000
        r = c.request("GET", "/big-head", headers={"X-Big": big})
        self.assertEqual((r.status, r.body), (200, b"b\n"))
        self.assertEqual(b.requests[-1].header("X-Big"), big)
        # A request split across records, byte by byte for its head.
        head = b"GET /split HTTP/1.1\r\nHost: t\r\n\r\n"
        for i in range(len(head)):
            c.send(head[i:i + 1])
        r = c.response()
        self.assertEqual((r.status, r.body), (200, b"b\n"))
        c.close()
        v.stop()

    def test_large_upload_and_download(self):
        size = 5 * MiB
        pat = Pattern(7)

        def handler(conn, reader, head):
            if head.method == "POST":
                d = BodyDigest()
                for piece in iter_body(reader, head):
                    d.update(piece)
                body = ("%d %s" % (d.n, d.hexdigest())).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                return True
            for _ in iter_body(reader, head):
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for piece in pat.pieces(size):
                conn.sendall(piece)
            return True
        sb = StreamBackend(handler)
        self._cleanup.append(sb.close)
        v = self.veer(config([("b", sb.address)], [entry("default")], workers=1))
        port = tls_listener_ports(v)["tls"][0]

        # Upload: the whole request in one sendall (many records buffered at once).
        c = self.tls(port)
        head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
        c.send(head + b"".join(pat.pieces(size)))
        r = c.response()
        self.assertEqual((r.status, r.body.decode()), (200, "%d %s" % (size, pat.digest(size))))
        # Download on the same connection, read fast.
        c.send(b"GET /down HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = StreamReader(c.sock)
        reader.buf += c.reader.buf
        res = read_head(reader)
        self.assertEqual(res.status, 200)
        d = BodyDigest()
        for piece in iter_body(reader, res):
            d.update(piece)
        self.assertEqual((d.n, d.hexdigest()), (size, pat.digest(size)))
        c.close()

        # Download with a slow reader on a small receive buffer: veer's
        # SSL_write sees a full socket again and again (partial writes).
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        raw.settimeout(DEADLINE)
        raw.connect(("127.0.0.1", port))
        s = tls_client_context().wrap_socket(raw)
        self._cleanup.append(s.close)
        s.sendall(b"GET /down HTTP/1.1\r\nHost: t\r\n\r\nGET /down HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = StreamReader(s)
        for k in range(2):  # two pipelined downloads, back to back
            res = read_head(reader)
            self.assertEqual(res.status, 200, k)
            d = BodyDigest()
            left = size
            while left:
                piece = reader.read_some(min(left, 4096))
                self.assertTrue(piece, "EOF with %d bytes left" % left)
                d.update(piece)
                left -= len(piece)
            self.assertEqual(d.hexdigest(), pat.digest(size), k)
        s.close()

        # Up and down at once: a POST whose 5 MB answer flows while the body
        # still does (the answer's last 64 KiB only once the whole body is read).
        tail = 65536

        def echo_big(conn, reader, head):
            data = b"".join(pat.pieces(size))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            t = threading.Thread(target=conn.sendall, args=(data[:-tail],), daemon=True)
            t.start()
            got = BodyDigest()
            for piece in iter_body(reader, head):
                got.update(piece)
            t.join(DEADLINE)
            if got.n != size:
                raise ValueError("request body of %d bytes" % got.n)
            conn.sendall(data[-tail:])
            return True
        sb.handler = echo_big
        c = self.tls(port)
        sender = threading.Thread(target=lambda: c.send(head.replace(b"/up", b"/both") +
                                                        b"".join(pat.pieces(size))), daemon=True)
        sender.start()
        reader = StreamReader(c.sock)
        res = read_head(reader)
        self.assertEqual(res.status, 200)
        d = BodyDigest()
        for piece in iter_body(reader, res):
            d.update(piece)
        sender.join(DEADLINE)
        self.assertFalse(sender.is_alive())
        self.assertEqual((d.n, d.hexdigest()), (size, pat.digest(size)))
        c.close()
        self.assertEqual(sb.errors, [])
        v.stop()


class BioClient:
    """A TLS client driven through memory BIOs over a plain socket, so a test
    decides how the bytes go out: a ClientHello one byte per TCP segment, or
    the client's last handshake flight and the first request in one segment."""

    def __init__(self, port, ctx=None, sni="default.test", session=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = (ctx or tls_client_context()).wrap_bio(self.inc, self.out,
                                                          server_hostname=sni, session=session)

    def _flush(self, bytewise=False, extra=b""):
        data = self.out.read() + extra
        if bytewise:
            for i in range(len(data)):
                self.sock.sendall(data[i:i + 1])
        elif data:
            self.sock.sendall(data)

    def _recv(self):
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError("server closed the connection")
        self.inc.write(d)

    def handshake(self, bytewise_hello=False, then=b""):
        """Finish the handshake; with then, the request goes out in the same
        send as the client's last handshake flight."""
        first = True
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush(bytewise=bytewise_hello and first)
                first = False
                self._recv()
        if then:
            self.obj.write(then)
        self._flush(extra=b"")

    def response(self):
        """One response (veertest Response) read through the TLS object."""
        buf = b""
        while True:
            try:
                d = self.obj.read(65536)
                if not d:
                    return None
                buf += d
            except ssl.SSLWantReadError:
                self._flush()
                self._recv()
                continue
            r = veertest.read_response(_BufReader(buf))
            if r is not None and r.complete:
                return r

    def close(self):
        self.sock.close()


class _BufReader(veertest.Reader):
    """A veertest.Reader over bytes already received; fill() never reads more."""

    def __init__(self, data):
        self.buf = data

    def fill(self):
        return False


class WireTest(TLSTestCase):
    """How the TLS bytes arrive: split, coalesced, after close_notify, with
    post-handshake messages."""

    def test_client_hello_one_byte_per_segment(self):
        b, v, port = self.start()
        for ver in (TLS12, TLS13):
            c = BioClient(port, tls_client_context(min_version=ver, max_version=ver))
            self._cleanup.append(c.close)
            c.handshake(bytewise_hello=True)
            self.assertEqual(c.obj.version(), ver.name.replace("_", "."))
            self.assertEqual(FILES.name_of(c.obj.getpeercert(binary_form=True)), "default")
            c.obj.write(b"GET /bytewise HTTP/1.1\r\nHost: t\r\n\r\n")
            c._flush()
            r = c.response()
            self.assertEqual((r.status, r.body), (200, b"b\n"), ver)
            c.close()
        v.stop()

    def test_request_in_same_segment_as_client_finished(self):
        b, v, port = self.start(workers=1)
        req = b"GET /with-finished HTTP/1.1\r\nHost: t\r\n\r\n"
        # TLS 1.3: the client's Finished and the request together (what browsers do).
        c = BioClient(port, tls_client_context(min_version=TLS13))
        self._cleanup.append(c.close)
        c.handshake(then=req)
        r = c.response()
        self.assertIsNotNone(r, "no answer to a request sent with the client Finished")
        self.assertEqual((r.status, r.body), (200, b"b\n"))
        c.close()
        # TLS 1.2, an abbreviated (resumed) handshake: the client speaks last, so
        # its ChangeCipherSpec, Finished and the request arrive together.
        ctx = tls_client_context(max_version=TLS12)
        first = self.tls(port, ctx=ctx, sni="default.test")
        self.get_ok(first)
        sess = first.sock.session
        first.close()
        c = BioClient(port, ctx, session=sess)
        self._cleanup.append(c.close)
        c.handshake(then=req)
        self.assertTrue(c.obj.session_reused)
        r = c.response()
        self.assertIsNotNone(r, "no answer to a request sent with the resumed Finished")
        self.assertEqual((r.status, r.body), (200, b"b\n"))
        c.close()
        self.assertEqual([q.target for q in b.requests], ["/with-finished", "/", "/with-finished"])
        v.stop()

    def test_close_notify_from_client(self):
        b, v, port = self.start()
        for ver in (TLS12, TLS13):
            c = self.tls(port, ctx=tls_client_context(min_version=ver, max_version=ver,
                                                      strict_eof=True))
            self.get_ok(c)
            try:
                raw = c.sock.unwrap()  # sends close_notify, reads until veer's
            except ssl.SSLError as e:
                if "EOF" not in str(e).upper():
                    raise
                self.fail("%s: veer closed the connection without answering the client's "
                          "close_notify with its own (RFC 5246 7.2.1, RFC 8446 6.1)" % ver.name)
            raw.settimeout(DEADLINE)
            self.assertEqual(raw.recv(1), b"", "veer left the connection open after "
                             "close_notify (%s)" % ver.name)
            raw.close()
        v.stop()

    def interactive_s_client(self, port, *args):
        """An s_client whose stdin we feed line by line (commands enabled) and
        whose stdout is collected by a thread."""
        p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] +
                             list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        def stop():
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
        self._cleanup.append(stop)
        out = bytearray()
        t = threading.Thread(target=lambda: [out.extend(d) for d in iter(
            lambda: p.stdout.read1(65536), b"")], daemon=True)
        t.start()
        return p, out

    def test_tls13_key_update_requested_by_client(self):
        # s_client "K": a KeyUpdate asking veer to update its keys too. veer
        # must read it (a post-handshake message inside SSL_read) and keep
        # serving with the new keys.
        b, v, port = self.start()
        p, out = self.interactive_s_client(port, "-tls1_3", "-servername", "default.test")
        wait_for(lambda: b"Verify return code" in out, what="s_client connected")
        for i in range(2):
            p.stdin.write(b"K\n")
            p.stdin.flush()
            wait_for(lambda: out.count(b"KEYUPDATE") > i, what="s_client to send KeyUpdate")
            p.stdin.write(b"GET /after-key-update-%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            p.stdin.flush()
            wait_for(lambda: out.count(b"HTTP/1.1 200") > i,
                     what="an answer after KeyUpdate %d" % i)
        p.stdin.close()
        p.wait(DEADLINE)
        self.assertEqual([q.target for q in b.requests],
                         ["/after-key-update-0", "/after-key-update-1"])
        v.stop()

    def test_tls12_renegotiation_refused_without_harm(self):
        b, v, port = self.start()
        p, out = self.interactive_s_client(port, "-tls1_2", "-servername", "default.test")
        wait_for(lambda: b"Verify return code" in out, what="s_client connected")
        p.stdin.write(b"R\n")
        p.stdin.flush()
        wait_for(lambda: b"RENEGOTIATING" in out, what="s_client to try renegotiating")
        try:
            p.stdin.write(b"GET /after-renegotiation HTTP/1.1\r\nHost: t\r\n\r\n")
            p.stdin.flush()
            p.stdin.close()
        except BrokenPipeError:
            pass
        p.wait(DEADLINE)
        text = out.decode(errors="replace")
        # Refused with a no_renegotiation alert; no second handshake completed.
        after = text[text.index("RENEGOTIATING"):]
        self.assertIn("no renegotiation", after, after[:1000])
        self.assertNotIn("Verify return code", after, after[:1000])
        # veer is unharmed.
        c = self.tls(port)
        self.get_ok(c)
        c.close()
        v.stop()

    def test_idle_tls_connection_closed_after_idle_ms(self):
        b, v, port = self.start(top="timeouts = { idle_ms = 1000; quiet_ms = 100; };\n")
        c = self.tls(port)
        t0 = time.monotonic()
        self.get_ok(c)
        self.assertTrue(c.is_closed(), "idle TLS connection never closed")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "closed before idle_ms")
        v.stop()

    def test_backpressure_to_slow_tls_reader(self):
        # 64 MB to a client that stops reading: veer must stop reading the
        # backend (watermarks), not buffer the body (its RSS stays far below
        # it), then deliver everything intact once the client reads again.
        size = 64 * MiB
        pat = Pattern(3)
        progress = SendProgress()

        def handler(conn, reader, head):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            send_tracked(conn, pat.pieces(size), progress)
            return True
        sb = StreamBackend(handler)
        self._cleanup.append(sb.close)
        v = self.veer(config([("b", sb.address)], [entry("default")], workers=1))
        port = tls_listener_ports(v)["tls"][0]
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        raw.settimeout(DEADLINE)
        raw.connect(("127.0.0.1", port))
        s = tls_client_context().wrap_socket(raw)
        self._cleanup.append(s.close)
        base = v.rss_kib()
        rss = RssSampler(v)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: progress.stalled_for() > 0.5, what="the backend to be held back")
        sent_when_stalled = progress.sent
        peak = rss.stop()
        self.assertLess(sent_when_stalled, size // 2, "veer kept reading the backend")
        self.assertLess(peak - base, 32 * 1024, "veer buffered %d KiB" % (peak - base))
        reader = StreamReader(s)
        res = read_head(reader)
        self.assertEqual(res.status, 200)
        d = BodyDigest()
        for piece in iter_body(reader, res):
            d.update(piece)
        self.assertEqual((d.n, d.hexdigest()), (size, pat.digest(size)))
        s.close()
        v.stop()


# --- reload and veer -t -------------------------------------------------------------------


def replace_file(src, dst):
    """Copy src over dst atomically (a reload never reads half a file)."""
    tmp = dst + ".new"
    with open(src, "rb") as f, open(tmp, "wb") as g:
        g.write(f.read())
    os.replace(tmp, dst)


def rewrite(v, text):
    """Replace veer's config file atomically (keeping its admin socket)."""
    if "admin" not in text:
        text += '\nadmin = { socket = "{tmp}/admin.sock"; };\n'
    write_file(v.config_path, text.replace("{tmp}", v.tmp).encode())


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(dst, data):
    tmp = dst + ".new"
    with open(tmp, "wb") as g:
        g.write(data)
    os.replace(tmp, dst)


class ReloadTest(TLSTestCase):
    def setUp(self):
        super().setUp()
        # Files the test changes: site.pem/site.key (the default) and alt.pem/alt.key
        # (SNI alt.test), first holding the module's "default" and "exact" pairs.
        self.files = TlsFiles()
        self._cleanup.append(self.files.close)
        self.files.adopt("site", FILES, "default")
        self.files.adopt("alt", FILES, "exact")
        self.files.self_signed("site2", ["default.test"])
        self.files.self_signed("alt2", ["www.exact.test"])
        self.files.self_signed("site3", ["default.test"])

    def start_reloadable(self, workers=2):
        b = self.backend("b")
        v = self.veer(config([("b", b.address)], [entry("site", files=self.files),
                                                   entry("alt", files=self.files)],
                             workers=workers))
        return b, v, tls_listener_ports(v)["tls"][0]

    def install(self, src, dst):
        replace_file(self.files.cert(src), self.files.cert(dst))
        replace_file(self.files.key(src), self.files.key(dst))

    def served(self, port, sni="default.test"):
        """The name of the certificate a new connection gets (or why it got none)."""
        try:
            c = TlsClient(port, sni=sni)
        except (ssl.SSLError, OSError) as e:
            return "<handshake failed: %r>" % e
        try:
            return self.files.name_of(c.cert_der())
        finally:
            c.close()

    def wait_served(self, port, want, sni="default.test", what=""):
        """Until a new connection gets certificate want; then the next ten do too."""
        wait_for(lambda: self.served(port, sni) == want, what="%s: new connections to get %s"
                 % (what, want))
        self.assertEqual([self.served(port, sni) for _ in range(10)], [want] * 10, what)

    def test_reload_swaps_certificates_and_keeps_connections(self):
        b, v, port = self.start_reloadable()
        old = self.tls(port, sni="default.test")
        self.assertEqual(self.files.name_of(old.cert_der()), "site")
        self.get_ok(old, "/before")
        old_alt = self.tls(port, sni="www.exact.test")
        self.assertEqual(self.files.name_of(old_alt.cert_der()), "alt")

        self.install("site2", "site")
        self.install("alt2", "alt")
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"\AOK gen=\d+ ")
        self.wait_served(port, "site2", what="veerctl reload")
        self.wait_served(port, "alt2", sni="www.exact.test", what="veerctl reload, SNI")
        # Connections from before the reload go on, with their certificate.
        self.get_ok(old, "/after-reload")
        self.get_ok(old_alt, "/after-reload-alt")
        self.assertEqual(self.files.name_of(old.cert_der()), "site")

        # SIGHUP does the same.
        n = sum(1 for l in v.log() if re.search(r"reloaded \S+: gen=", l))
        self.install("site3", "site")
        v.send_signal(signal.SIGHUP)
        wait_for(lambda: sum(1 for l in v.log() if re.search(r"reloaded \S+: gen=", l)) > n,
                 what="the SIGHUP reload to be logged")
        self.wait_served(port, "site3", what="SIGHUP")
        self.get_ok(old, "/after-sighup")
        self.get_ok(old_alt, "/after-sighup-alt")
        old.close()
        old_alt.close()
        self.assertNotIn("reload failed", "\n".join(v.log()))
        v.stop()

    def test_reload_with_edited_certificate_list(self):
        # The config itself changes: another path for the default, a new SNI
        # entry; then TLS off and on again for the same listener.
        b, v, port = self.start_reloadable(workers=1)
        old = self.tls(port, sni="default.test")
        self.get_ok(old)
        text = config([("b", b.address)], [entry("site2", files=self.files),
                                           entry("alt", files=self.files), entry("wild")],
                      workers=1)
        rewrite(v, text)
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertRegex(p.stdout, r" listeners_added=0 listeners_removed=0\b")
        self.wait_served(port, "site2", what="a new cert path")
        self.assertEqual(self.served(port, "www.exact.test"), "alt")
        c = self.tls(port, sni="x.example.test")
        self.assertEqual(FILES.name_of(c.cert_der()), "wild")
        c.close()
        self.get_ok(old, "/old-connection")
        # Without tls the same socket speaks plain HTTP to new connections...
        rewrite(v, config([("b", b.address)], None, workers=1))
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)

        def plain_ok():
            c = veertest.Client(port)
            try:
                r = c.request("GET", "/plain")
                return r is not None and r.status == 200
            except (OSError, ValueError):
                return False
            finally:
                c.close()
        wait_for(plain_ok, what="plain HTTP on the listener after tls was removed")
        self.get_ok(old, "/old-connection-still-tls")
        # ... and with it again, TLS.
        rewrite(v, config([("b", b.address)], [entry("site2", files=self.files)], workers=1))
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.wait_served(port, "site2", what="tls added back")
        old.close()
        v.stop()

    def test_reload_under_handshake_load(self):
        # Clients keep making new TLS connections while the certificates are
        # swapped back and forth: every handshake and request succeeds, each
        # with one of the two certificates.
        b, v, port = self.start_reloadable(workers=2)
        stop = threading.Event()
        seen, errors = [], []
        lock = threading.Lock()

        def client(i):
            k = 0
            while not stop.is_set():
                k += 1
                try:
                    c = TlsClient(port, sni="default.test")
                    name = self.files.name_of(c.cert_der())
                    r = c.request("GET", "/load/%d/%d" % (i, k))
                    c.close()
                    if r is None or r.status != 200:
                        raise AssertionError("answer %r" % (r and r.status))
                    with lock:
                        seen.append(name)
                except Exception as e:  # reported below
                    with lock:
                        errors.append(repr(e))
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
        for t in threads:
            t.start()
        self._cleanup.append(stop.set)
        for n in range(6):
            self.install("site2" if n % 2 == 0 else "site3", "site")
            count = len(seen)
            p = veerctl(v.admin_socket, "reload")
            self.assertEqual(p.returncode, 0, p.stdout)
            wait_for(lambda: len(seen) > count + 20, what="handshakes after reload %d" % n)
        stop.set()
        for t in threads:
            t.join(DEADLINE)
        self.assertEqual(errors, [])
        self.assertEqual(set(seen) - {"site", "site2", "site3"}, set())
        self.assertEqual(set(seen), {"site", "site2", "site3"})
        v.stop()

    def bad_reload(self, v, port, conn, path, what, line):
        """veerctl reload fails with ERR CONF:LINE: ... naming path; the old
        certificate is still served and the open connection still works."""
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 1, "%s: %r" % (what, p.stdout))
        self.assertTrue(p.stdout.startswith("ERR "), "%s: %r" % (what, p.stdout))
        self.assertIn(path, p.stdout, what)
        self.assertIn("%s:%d:" % (v.config_path, line), p.stdout, what)
        self.assertEqual(self.served(port), "site", what)
        self.assertEqual(self.served(port, "www.exact.test"), "alt", what)
        self.get_ok(conn, "/after-bad-reload")

    def test_bad_certificate_at_reload_keeps_old(self):
        b, v, port = self.start_reloadable()
        conn = self.tls(port, sni="default.test")
        self.get_ok(conn)
        site_line = line_of(v.config, self.files.cert("site"))
        alt_line = line_of(v.config, self.files.cert("alt"))
        good = {n: read_bytes(p) for n, p in (
            ("site.pem", self.files.cert("site")), ("site.key", self.files.key("site")),
            ("alt.pem", self.files.cert("alt")), ("alt.key", self.files.key("alt")))}

        def restore():
            for n, data in good.items():
                write_file(os.path.join(self.files.dir, n), data)

        # A certificate file that is not PEM.
        write_file(self.files.cert("alt"), b"this is not a certificate\n")
        self.bad_reload(v, port, conn, self.files.cert("alt"), "garbage certificate", alt_line)
        restore()
        # A key that does not match its certificate.
        replace_file(FILES.key("spare"), self.files.key("site"))
        self.bad_reload(v, port, conn, self.files.key("site"), "mismatched key", site_line)
        restore()
        # A garbage key.
        write_file(self.files.key("alt"), b"-----BEGIN PRIVATE KEY-----\nnope\n"
                                          b"-----END PRIVATE KEY-----\n")
        self.bad_reload(v, port, conn, self.files.key("alt"), "garbage key", alt_line)
        restore()
        # A missing file.
        os.unlink(self.files.cert("site"))
        self.bad_reload(v, port, conn, self.files.cert("site"), "missing certificate", site_line)
        restore()
        os.unlink(self.files.key("alt"))
        self.bad_reload(v, port, conn, self.files.key("alt"), "missing key", alt_line)
        restore()
        self.assertIn("reload failed", "\n".join(v.log()))

        # A SIGHUP with a bad file changes nothing either, and says why in the log.
        n = sum(1 for l in v.log() if "reload failed" in l)
        write_file(self.files.cert("site"), b"garbage")
        v.send_signal(signal.SIGHUP)
        line = wait_for(lambda: [l for l in v.log() if "reload failed" in l][n:],
                        what="the failed SIGHUP reload to be logged")[0]
        self.assertIn(self.files.cert("site"), line)
        self.assertEqual(self.served(port), "site")
        restore()

        # Good files again: the reload goes through.
        self.install("site2", "site")
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.wait_served(port, "site2", what="reload after the failures")
        self.get_ok(conn, "/still")
        conn.close()
        v.stop()

    def test_reload_rereads_ocsp_file(self):
        # Re-reading covers the OCSP file too: a listener's entry that names
        # an OCSP file gets the file's new bytes after a reload.
        files = self.files
        files.ca()
        files.issued("st", ["default.test"])
        files.ocsp_response("st")
        first = read_bytes(files.ocsp("st"))
        b = self.backend("b")
        v = self.veer(config([("b", b.address)], [entry("st", ocsp=True, files=files)]))
        port = tls_listener_ports(v)["tls"][0]
        p = s_client(port, "-tls1_2", "-status", "-msg", "-servername", "default.test")
        self.assertTrue(stapled_ocsp(s_client_messages(p.stdout), first))
        files.ocsp_response("st", out="st.ocsp.2")
        second = read_bytes(files.path("st.ocsp.2"))
        self.assertNotEqual(first, second)
        replace_file(files.path("st.ocsp.2"), files.ocsp("st"))
        p = veerctl(v.admin_socket, "reload")
        self.assertEqual(p.returncode, 0, p.stdout)

        def staples_second():
            q = s_client(port, "-tls1_2", "-status", "-msg", "-servername", "default.test")
            return stapled_ocsp(s_client_messages(q.stdout), second)
        wait_for(staples_second, what="the new OCSP response to be stapled")
        v.stop()


def line_of(text, needle):
    """1-based line of the first line of text containing needle."""
    for i, line in enumerate(text.split("\n"), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in config" % needle)


def last_line_of(text, needle):
    """1-based line of the last line of text containing needle."""
    found = [i for i, line in enumerate(text.split("\n"), 1) if needle in line]
    if not found:
        raise AssertionError("%r not in config" % needle)
    return found[-1]


class CheckConfigTest(TLSTestCase):
    def check(self, entries, bad_path, what):
        text = config([("b", "127.0.0.1:9")], entries)
        rc, err, path = veer_check_config(text)
        try:
            self.assertEqual(rc, 1, "%s: veer -t exit %d: %s" % (what, rc, err))
            line = last_line_of(text, "{ cert = ")  # the bad entry is the last one
            self.assertRegex(err, r"(?m)^%s:%d: .*%s" % (re.escape(path), line,
                                                        re.escape(bad_path)), what)
        finally:
            os.unlink(path)

    def test_veer_t_certificate_errors(self):
        files = TlsFiles()
        self._cleanup.append(files.close)
        files.adopt("good", FILES, "default")
        rc, err, path = veer_check_config(config([("b", "127.0.0.1:9")], [entry("good",
                                                                                 files=files)]))
        os.unlink(path)
        self.assertEqual(rc, 0, err)
        good = entry("good", files=files)

        garbage = files.path("garbage.pem")
        write_file(garbage, b"not a certificate at all\n")
        self.check([good, (garbage, good[1], None)], garbage, "garbage certificate")
        self.check([good, (good[0], FILES.key("spare"), None)], FILES.key("spare"),
                   "key of another certificate")
        self.check([good, (good[0], garbage, None)], garbage, "garbage key")
        missing = files.path("missing.pem")
        self.check([good, (missing, good[1], None)], missing, "missing certificate")
        self.check([good, (good[0], missing, None)], missing, "missing key")
        self.check([good, (good[0], good[1], missing)], missing, "missing OCSP file")
        # The first entry bad, with a good one after it: its own line.
        text = config([("b", "127.0.0.1:9")], [(garbage, good[1], None), good])
        rc, err, path = veer_check_config(text)
        os.unlink(path)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"(?m)^%s:%d: .*%s" % (re.escape(path), line_of(text, garbage),
                                                    re.escape(garbage)))

    def test_bad_certificate_at_start_fails(self):
        files = TlsFiles()
        self._cleanup.append(files.close)
        bad = files.path("bad.pem")
        write_file(bad, b"garbage\n")
        b = self.backend("b")
        v = veertest.Veer(config([("b", b.address)], [(bad, FILES.key("default"), None)]),
                          check_ready=False)
        self._cleanup.append(v.kill)
        try:
            rc = v.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.fail("veer started with a garbage certificate:\n" + "\n".join(v.log()))
        self.assertEqual(rc, 1)
        wait_for(lambda: any(bad in l for l in v.log()), what="the bad file named in the log")


# --- timeouts, garbage, shutdown, upgrade ----------------------------------------------------


class HandshakeTimeoutTest(TLSTestCase):
    HEADER_MS = 2000

    def start_t(self):
        return self.start(workers=1, top="timeouts = { client_header_ms = %d; quiet_ms = 100; };\n"
                          % self.HEADER_MS)

    def closed_after(self, s):
        """Seconds until the server closed s (EOF or reset), reading and dropping bytes."""
        t0 = time.monotonic()
        s.settimeout(DEADLINE)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            self.fail("not closed within %.0fs" % DEADLINE)
        return time.monotonic() - t0

    def test_silent_client_closed_after_client_header_ms(self):
        b, v, port = self.start_t()
        silent = []
        t0 = time.monotonic()
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            self._cleanup.append(s.close)
            silent.append(s)
        # While they hang in the handshake, a real client is served at once.
        c = self.tls(port)
        self.get_ok(c)
        served_at = time.monotonic() - t0
        # A partial ClientHello (a record header and a few bytes), then silence.
        t_part = time.monotonic()
        part = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self._cleanup.append(part.close)
        part.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        for s in silent:
            self.closed_after(s)
        waited = time.monotonic() - t0
        self.assertGreaterEqual(waited, self.HEADER_MS / 1000.0 * 0.9,
                                "closed before client_header_ms")
        self.assertLess(served_at, self.HEADER_MS / 1000.0,
                        "the real client waited for the silent ones")
        self.closed_after(part)
        self.assertGreaterEqual(time.monotonic() - t_part, self.HEADER_MS / 1000.0 * 0.9)
        # The established connection was not touched by the handshake timer.
        self.get_ok(c, "/still")
        c.close()
        v.stop()

    def test_garbage_instead_of_client_hello(self):
        b, v, port = self.start_t()
        garbage = [
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
            b"\x16\x03\x01\x00\x05hello",                       # a record that is no ClientHello
            b"\x16\x03\x01\xff\xff" + b"\x01" * 300,             # oversize record, truncated
            b"\x15\x03\x03\x00\x02\x02\x28",                    # an alert first
            b"\x17\x03\x03\x00\x10" + b"\x00" * 16,             # application data first
            bytes(range(256)) * 16,
            b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + b"\x00" * 37,  # SSLv2 hello
        ]
        for i, g in enumerate(garbage):
            t0 = time.monotonic()
            out = send_and_read_to_eof(port, g)
            self.assertNotIn(b"HTTP/1.1 200", out, i)
            # Closed at once for garbage, not after the timeout (except a
            # truncated record, which is waited for).
            if i != 2:
                self.assertLess(time.monotonic() - t0, self.HEADER_MS / 1000.0 + 2, i)
            c = self.tls(port)
            self.get_ok(c, "/after/%d" % i)
            c.close()
        self.assertEqual([q.target for q in b.requests], ["/after/%d" % i
                                                         for i in range(len(garbage))])
        v.stop()

    def test_client_going_away_mid_handshake(self):
        b, v, port = self.start_t()
        for i in range(20):
            raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            ctx = tls_client_context()
            # Send a real ClientHello and close before reading the server's flight.
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(inc, out, server_hostname="default.test")
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            raw.sendall(out.read())
            if i % 2:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
        c = self.tls(port)
        self.get_ok(c)
        c.close()
        v.stop()


class LifecycleTest(TLSTestCase):
    def test_graceful_stop_closes_idle_tls_connections(self):
        b, v, port = self.start(workers=2, top="timeouts = { quiet_ms = 300; };\n")
        conns = [self.tls(port) for _ in range(6)]
        for c in conns:
            self.get_ok(c)
        v.send_signal(signal.SIGTERM)
        for i, c in enumerate(conns):
            self.assertTrue(c.is_closed(), "connection %d left open at shutdown" % i)
        self.assertEqual(v.proc.wait(DEADLINE), 0, "\n".join(v.log()))
        v.stop()
        s = shutdown_summary(v.log())
        self.assertIsNotNone(s, "\n".join(v.log()))
        self.assertEqual(s["aborted"], 0, s)

    def test_request_at_shutdown_answered_with_connection_close(self):
        b, v, port = self.start(workers=1, top="timeouts = { quiet_ms = 5000; };\n")
        c = self.tls(port)
        self.get_ok(c)
        v.send_signal(signal.SIGTERM)
        v.wait_log(r"graceful shutdown", what="veer to begin its shutdown")

        def answered_close():
            r = self.get_ok(c, "/during-shutdown")
            return (r.header("Connection") or "").lower() == "close"
        wait_for(answered_close, what="a request answered with Connection: close")
        self.assertTrue(c.is_closed())
        self.assertEqual(v.proc.wait(DEADLINE), 0, "\n".join(v.log()))
        v.stop()

    def test_connection_over_the_limit_is_closed_without_a_plain_answer(self):
        """At max_connections a TLS listener closes the extra connection; a
        plain-text 503 would reach the client's TLS stack as garbage (it read
        as WRONG_VERSION_NUMBER), so nothing is written."""
        b, v, port = self.start(workers=1, top="limits = { max_connections = 1; };\n")
        c = self.tls(port)
        self.get_ok(c)
        hello = ssl.create_default_context()
        hello.check_hostname = False
        hello.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = hello.wrap_bio(incoming, outgoing)
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        self.assertEqual(send_and_read_to_eof(port, outgoing.read()), b"",
                         "veer wrote to a TLS client it refused")
        self.get_ok(c, "/still-served")
        v.stop()

    def test_upgrade_hands_a_plain_connection_to_the_plain_listener(self):
        """Two listeners whose configured address text is the same
        (127.0.0.1:0), TLS first: an idle plain keep-alive connection handed
        over in a binary upgrade is adopted by the plain listener (it was
        matched by address text, so it landed on the TLS one and its next
        request was read as a TLS handshake)."""
        b = self.backend("b")
        tls = tls_listen_text([entry("default")])
        text = ("workers = 1;\ntimeouts = { quiet_ms = 3000; };\n"
                'listen = ( { address = "127.0.0.1:0"; pool = "api";\n    %s },\n'
                '  { address = "127.0.0.1:0"; pool = "api"; } );\n'
                'pools = ( { name = "api"; backends = ( { name = "b"; address = "%s"; } ); } );\n'
                % (tls, b.address))
        v = self.veer(text)
        ports = tls_listener_ports(v)
        self.assertEqual((len(ports["tls"]), len(ports["plain"])), (1, 1), v.log())
        old_pid = v.proc.pid
        c = veertest.Client(ports["plain"][0])
        self._cleanup.append(c.close)
        r = c.request("GET", "/before")
        self.assertEqual((r.status, r.body), (200, b"b\n"))
        v.send_signal(signal.SIGUSR2)
        new = Successor(v, old_pid)
        self._cleanup.append(lambda: new.alive() and new.stop())
        v.wait_log(r"upgrade: new binary pid %d is ready" % new.pid)
        self.assertEqual(v.proc.wait(DEADLINE), 0, "\n".join(v.log()))
        self.assertGreaterEqual(shutdown_summary(v.log())["handed_over"], 1, v.log())
        r = c.request("GET", "/after")
        self.assertIsNotNone(r, "the handed-over connection was closed")
        self.assertEqual((r.status, r.body), (200, b"b\n"))
        new.stop()

    def test_binary_upgrade_closes_tls_connections_at_request_boundary(self):
        gate = threading.Event()

        def handler(conn, req):
            if req.target.startswith("/slow"):
                gate.wait(DEADLINE)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nb\n")
            return True
        b = self.backend("b", handler)
        self._cleanup.append(gate.set)
        _, v, port = self.start(backend=b, workers=1, top="timeouts = { quiet_ms = 3000; };\n")
        old_pid = v.proc.pid
        busy = self.tls(port, sni="default.test")    # will send a request after the upgrade
        idle = self.tls(port, sni="default.test")    # stays idle
        inflight = self.tls(port, sni="default.test")  # a request in flight during the upgrade
        self.get_ok(busy, "/before/busy")
        self.get_ok(idle, "/before/idle")
        inflight.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: any(q.target == "/slow" for q in b.requests), what="/slow at the backend")
        v.send_signal(signal.SIGUSR2)
        new = Successor(v, old_pid)
        self._cleanup.append(lambda: new.alive() and new.stop())
        v.wait_log(r"upgrade: new binary pid %d is ready" % new.pid)
        # The request in flight is answered in full; the connection closes at
        # that boundary (its answer says Connection: close) or at the next
        # one (the next request is answered, with Connection: close).
        gate.set()
        r = inflight.response()
        self.assertIsNotNone(r, "the in-flight request lost its answer")
        self.assertEqual((r.status, r.body), (200, b"b\n"))
        if (r.header("Connection") or "").lower() != "close":
            r = inflight.request("GET", "/after/inflight")
            self.assertIsNotNone(r, "closed instead of answering the request after the "
                                    "in-flight one")
            self.assertEqual((r.status, r.body), (200, b"b\n"))
            self.assertEqual((r.header("Connection") or "").lower(), "close")
        self.assertTrue(inflight.is_closed())

        # The busy connection stays with the old process: its next request is
        # answered (never dropped) and the answer says Connection: close. (The
        # worker learns of the handover just after the log line; an answer
        # before that is a plain keep-alive one.)
        closes = []

        def next_request_closes():
            r = busy.request("GET", "/after/busy")
            self.assertIsNotNone(r, "the TLS connection was closed instead of answered")
            self.assertEqual((r.status, r.body), (200, b"b\n"))
            closes.append(r)
            return (r.header("Connection") or "").lower() == "close"
        wait_for(next_request_closes, what="an answer with Connection: close")
        self.assertTrue(busy.is_closed(), "closed after its Connection: close answer")
        # The idle one is closed by the old process after the quiet period.
        self.assertTrue(idle.is_closed(timeout=DEADLINE + 3), "idle TLS connection left open")
        self.assertEqual(v.proc.wait(DEADLINE), 0, "\n".join(v.log()))
        # Its last lines come through a pipe the new process shares: wait for them.
        summary = wait_for(lambda: shutdown_summary(pid_lines(v, old_pid)),
                           what="the old process's shutdown summary")
        self.assertEqual(summary["handed_over"], 0, summary)
        self.assertEqual(summary["aborted"], 0, summary)

        # The new process serves TLS on the inherited socket with the same certificate.
        c = self.tls(port, sni="default.test")
        self.assert_cert(c, "default")
        self.get_ok(c, "/new-process")
        c.close()
        rc = new.stop()
        if SUBREAPER:
            self.assertEqual(rc, 0, "\n".join(new.log()))
        v.stop()


if __name__ == "__main__":
    unittest.main()
