"""Upgrade: after a 101 the connection is a byte tunnel (WebSocket echo);
an unrequested 101 is refused; a declined upgrade stays plain HTTP."""

import base64
import os
import socket
import threading
import unittest

from helpers import (StreamBackend, StreamReader, iter_body, json_error, quick_config, read_head,
                     ws_accept, ws_frame, ws_read_frame)
from veertest import DEADLINE, VeerTestCase, wait_for


class WebSocketEchoBackend(StreamBackend):
    """Answers a WebSocket handshake with 101, then echoes every frame back
    unmasked (a close frame is answered with a close). Records EOF."""

    def __init__(self):
        super().__init__(self.handle)
        self.eof = threading.Event()
        self.frames = []

    def handle(self, conn, reader, head):
        """One request; after a 101, the frames until EOF or a close frame."""
        for _ in iter_body(reader, head):
            pass
        if (head.header("Upgrade") or "").lower() != "websocket":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
            return True
        key = head.header("Sec-WebSocket-Key")
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                     % ws_accept(key).encode())
        while True:
            try:
                frame = ws_read_frame(reader)
            except ValueError:
                frame = None
            if frame is None:
                self.eof.set()
                return False
            opcode, payload = frame
            self.frames.append(frame)
            conn.sendall(ws_frame(payload, opcode))
            if opcode == 8:
                return False  # close handshake done: the server closes first


class UpgradeTest(VeerTestCase):
    def test_websocket_echo_through_tunnel(self):
        b = WebSocketEchoBackend()
        self._cleanup.append(b.close)
        v = self.veer(quick_config([("ws", b.address)]))
        s = socket.create_connection(("127.0.0.1", v.port), timeout=DEADLINE)
        self._cleanup.append(s.close)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        reader = StreamReader(s)
        head = read_head(reader)
        self.assertEqual(head.status, 101)
        self.assertEqual(head.header("Upgrade").lower(), "websocket")
        self.assertIn("upgrade", head.header("Connection").lower())
        self.assertEqual(head.header("Sec-WebSocket-Accept"), ws_accept(key))
        req = b.heads[0]
        self.assertEqual(req.header("Upgrade"), "websocket")
        self.assertIn("upgrade", req.header("Connection").lower())
        self.assertEqual(req.header("Sec-WebSocket-Key"), key)
        messages = [b"hello", b"world " * 100, os.urandom(70000), "\u00e9t\u00e9".encode()]
        for i, msg in enumerate(messages):
            opcode = 2 if i == 2 else 1
            s.sendall(ws_frame(msg, opcode, mask=os.urandom(4)))
            self.assertEqual(ws_read_frame(reader), (opcode, msg))
        self.assertEqual([p for _, p in b.frames], messages)
        # Closing the client closes the tunnel all the way to the backend.
        s.close()
        self.assertTrue(b.eof.wait(DEADLINE), "backend never saw the client go")
        v.stop()

    def test_backend_closing_tunnel_closes_client(self):
        b = WebSocketEchoBackend()
        self._cleanup.append(b.close)
        v = self.veer(quick_config([("ws", b.address)]))
        c = self.client(v.port)
        key = base64.b64encode(os.urandom(16)).decode()
        r = c.request("GET", "/chat", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                               "Sec-WebSocket-Key": key,
                                               "Sec-WebSocket-Version": "13"})
        self.assertEqual(r.status, 101)
        c.send(ws_frame(b"\x03\xe8bye", 8, mask=os.urandom(4)))
        self.assertEqual(ws_read_frame(c.reader), (8, b"\x03\xe8bye"))
        self.assertTrue(c.is_closed(), "tunnel left open after the backend closed")
        c.close()
        v.stop()

    def test_unrequested_101_is_a_bad_gateway(self):
        def handler(conn, req):
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            return True
        b = self.backend("b", handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        json_error(self, c.request("GET", "/not-an-upgrade"), 502)
        self.assertEqual(b.requests[-1].target, "/not-an-upgrade")
        c.close()
        v.stop()

    def test_declined_upgrade_continues_as_keepalive_http(self):
        def plain(conn, reader, head):  # a backend that does not speak WebSocket
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
            return True
        b = StreamBackend(plain)
        self._cleanup.append(b.close)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        r = c.request("GET", "/chat", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                               "Sec-WebSocket-Version": "13"})
        self.assertEqual((r.status, r.body), (200, b"plain"))
        self.assertNotEqual(r.header("Connection"), "close")
        r = c.request("GET", "/next")
        self.assertEqual((r.status, r.body), (200, b"plain"))
        wait_for(lambda: len(b.heads) == 2, what="both requests at the backend")
        self.assertEqual([h.target for h in b.heads], ["/chat", "/next"])
        self.assertEqual(b.heads[1].header("Upgrade"), None)
        self.assertFalse(c.is_closed(timeout=0.05))
        c.close()
        v.stop()


if __name__ == "__main__":
    unittest.main()
