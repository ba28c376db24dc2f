"""TLS on the admin HTTP address, with optional client certificates
(issue 10: "optional client certificate verification on the admin HTTP
address"; config `admin.http_tls = { cert; key; client_ca; }`, an extension
of ARCHITECTURE.md's admin block).

Run: VEER_BIN=build/veer VEERCTL_BIN=build/veerctl python3 -m unittest -v test_tls_admin
"""

import json
import os
import socket
import ssl
import unittest

from helpers import admin_http_port, quick_config
from test_tls_upstream import Certs
from veertest import VeerTestCase, veer_check_config


class AdminTLSTest(VeerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.server = cls.certs.leaf("admin.internal", "DNS:admin.internal,IP:127.0.0.1")
        cls.operator = cls.certs.leaf("operator", "DNS:operator")
        cls.stranger = cls.certs.leaf("stranger", "DNS:operator", signed=False)

    @classmethod
    def tearDownClass(cls):
        cls.certs.close()

    def start(self, client_ca=True):
        b = self.backend("b1")
        tls = 'cert = "%s"; key = "%s";' % self.server
        if client_ca:
            tls += ' client_ca = "%s";' % self.certs.ca
        cfg = quick_config([("b1", b.address, 100)],
                           extra_top='admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0";'
                                     ' http_tls = { %s }; };\n' % tls)
        self.v = self.veer(cfg)
        self.port = admin_http_port(self.v)
        return self.v

    def get(self, path, cert=None):
        """GET over TLS, verifying veer's certificate against the test CA:
        (status, body), or the exception the handshake or read raised."""
        ctx = ssl.create_default_context(cafile=self.certs.ca)
        if cert:
            ctx.load_cert_chain(*cert)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="admin.internal") as t:
                    t.sendall(b"GET %s HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
                              % path.encode())
                    data = b""
                    while True:
                        d = t.recv(65536)
                        if not d:
                            break
                        data += d
        except (OSError, ssl.SSLError) as e:
            return e
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    def test_client_certificate_required(self):
        v = self.start()
        status, body = self.get("/status", cert=self.operator)
        self.assertEqual(status, 200)
        self.assertEqual([p["name"] for p in json.loads(body)["pools"]], ["api"])
        self.assertIsInstance(self.get("/status"), (ssl.SSLError, OSError),
                              "no client certificate: refused")
        self.assertIsInstance(self.get("/status", cert=self.stranger), (ssl.SSLError, OSError),
                              "a certificate from another CA: refused")
        v.wait_log(r"admin http on 127\.0\.0\.1:\d+ .*TLS, client certificates required")
        v.stop()

    def test_tls_without_client_certificates(self):
        v = self.start(client_ca=False)
        status, body = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b"veer_generation ", body)
        # Plain HTTP on the TLS address gets no answer.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n")
            data = b""
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    data += d
            except ConnectionResetError:
                pass
        self.assertNotIn(b"HTTP/1.1 200", data)
        v.stop()

    def check(self, text):
        rc, err, path = veer_check_config(text)
        self.addCleanup(os.unlink, path)
        return rc, err, path

    def test_config_errors(self):
        rc, err, path = self.check(
            'listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'admin = { http_tls = { cert = "%s"; key = "%s"; }; };\n'
            'pools = ( { name = "api"; backends = ( ); } );\n' % self.server)
        self.assertEqual(rc, 1)
        self.assertEqual(err.strip(), "%s:2: admin.http_tls needs admin.http" % path)
        rc, err, path = self.check(
            'listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'admin = { http = "127.0.0.1:0";\n'
            '  http_tls = { cert = "%s"; key = "%s"; client_ca = "/nonexistent/ca.pem"; }; };\n'
            'pools = ( { name = "api"; backends = ( ); } );\n' % self.server)
        self.assertEqual(rc, 1)
        self.assertEqual(err.strip(), "%s:3: cannot read client CA file /nonexistent/ca.pem: "
                                      "No such file or directory" % path)


if __name__ == "__main__":
    unittest.main()
