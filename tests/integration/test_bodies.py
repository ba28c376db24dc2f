"""Message bodies both ways: Content-Length, chunked, close-delimited,
bodiless responses, 100-continue and 1xx, and 50 MiB streams that must pass
through veer with bounded memory, also when the client reads slowly."""

import socket
import unittest

from helpers import (MiB, BodyDigest, Pattern, RssSampler, SendProgress, StreamBackend,
                     StreamReader, iter_body, quick_config, read_head, send_tracked)
from veertest import DEADLINE, VeerTestCase, wait_for

BIG = 50 * MiB
RSS_SLACK_KIB = 16 * 1024
PATTERN = Pattern()


def tx_queue(local_port, remote_port):
    """Bytes queued for sending (in flight and unsent) in the loopback TCP socket
    127.0.0.1:local_port -> 127.0.0.1:remote_port, from /proc/net/tcp."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if (int(cols[1].split(":")[1], 16) == local_port and
                    int(cols[2].split(":")[1], 16) == remote_port):
                return int(cols[4].split(":")[0], 16)
    raise AssertionError("no socket %d -> %d in /proc/net/tcp" % (local_port, remote_port))


def echo_body_handler(conn, req):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(req.body), req.body))
    return True


class SmallBodiesTest(VeerTestCase):
    def test_content_length_body_is_forwarded_exactly(self):
        b = self.backend("b", echo_body_handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        body = bytes(range(256)) * 40 + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        r = c.request("POST", "/upload", body=body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, body)
        req = b.requests[-1]
        self.assertEqual(req.header("Content-Length"), str(len(body)))
        self.assertIsNone(req.header("Transfer-Encoding"))
        self.assertEqual(req.body, body)
        # Body bytes that look like a request never become one.
        self.assertEqual(len(b.requests), 1)
        c.close()
        v.stop()

    def test_chunked_request_body_is_forwarded_chunked(self):
        b = self.backend("b", echo_body_handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        parts = [b"a" * 10, b"0\r\n" * 7, bytes(range(256)) * 30, b"z"]
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        c.send(b"POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + wire)
        r = c.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"".join(parts))
        req = b.requests[-1]
        self.assertEqual(req.header("Transfer-Encoding"), "chunked")
        self.assertIsNone(req.header("Content-Length"))
        self.assertEqual(req.body, b"".join(parts))
        # The connection is still good for the next request.
        self.assertEqual(c.request("POST", "/next", body=b"x").body, b"x")
        c.close()
        v.stop()

    def chunked_response_backend(self, parts):
        def handler(conn, req):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                         b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")
            return True
        return self.backend("b", handler)

    def test_chunked_response_is_relayed_to_http11_client(self):
        parts = [b"hello ", b"chunked ", b"world" * 1000]
        b = self.chunked_response_backend(parts)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        for _ in range(2):
            r = c.request("GET", "/chunked")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("Transfer-Encoding"), "chunked")
            self.assertEqual(r.body, b"".join(parts))
        self.assertFalse(c.is_closed(timeout=0.05))
        c.close()
        v.stop()

    def test_chunked_response_is_dechunked_for_http10_client(self):
        parts = [b"hello ", b"chunked ", b"world" * 1000, b"\r\n0\r\n"]
        b = self.chunked_response_backend(parts)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        c.send(b"GET /chunked HTTP/1.0\r\n\r\n")
        head = read_head(c.reader)
        self.assertEqual(head.status, 200)
        self.assertIsNone(head.header("Transfer-Encoding"))
        cl = head.header("Content-Length")
        rest = c.reader.read_all()  # until veer closes
        if cl is not None:
            self.assertEqual(int(cl), len(b"".join(parts)))
        self.assertEqual(rest, b"".join(parts))
        self.assertTrue(c.is_closed())
        self.assertEqual(b.requests[-1].target, "/chunked")
        v.stop()

    def test_close_delimited_response_is_relayed_then_closed(self):
        body = b"no length, ends at close\n" * 500

        def handler(conn, req):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
            return False
        b = self.backend("b", handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        r = c.request("GET", "/eof")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, body)
        self.assertTrue(r.complete)
        self.assertTrue(c.is_closed())
        v.stop()

    def test_head_response_has_headers_but_no_body(self):
        def handler(conn, req):
            body = b"x" * 1234
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Method: %s\r\n\r\n" % \
                req.method.encode()
            conn.sendall(head if req.method == "HEAD" else head + body)
            return True
        b = self.backend("b", handler)
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        r = c.request("HEAD", "/thing")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Length"), "1234")
        self.assertEqual(r.header("X-Method"), "HEAD")
        self.assertEqual(r.body, b"")
        # Were any body bytes sent after the HEAD answer, this GET would read them.
        r = c.request("GET", "/thing")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("X-Method"), "GET")
        self.assertEqual(r.body, b"x" * 1234)
        self.assertEqual([q.method for q in b.requests], ["HEAD", "GET"])
        c.close()
        v.stop()

    def bodiless_backend(self):
        def handler(conn, req):
            if req.target == "/204":
                conn.sendall(b"HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n")
            elif req.target == "/204-length":
                # Not allowed from a server, but framing still says: no body.
                conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
            elif req.target == "/304":
                conn.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
            elif req.target == "/304-length":
                # A 304's Content-Length describes the representation it stands
                # for: there is still no body (RFC 9110 8.6, RFC 9112 6.3).
                conn.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n"
                             b"Content-Length: 500\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True
        return self.backend("b", handler)

    def check_bodiless(self, path, status):
        b = self.bodiless_backend()
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        for _ in range(2):
            r = c.request("GET", path, headers={"If-None-Match": '"v1"'})
            self.assertEqual(r.status, status)
            self.assertEqual(r.body, b"")
            self.assertIsNone(r.header("Transfer-Encoding"))
            # A body byte sent after the head would corrupt this next response.
            try:
                r = c.request("GET", "/200")
            except socket.timeout:
                self.fail("no answer to the request after the %d: veer awaits a body" % status)
            self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assertEqual([q.target for q in b.requests], [path, "/200"] * 2)
        self.assertEqual(b.connections, 1)
        c.close()
        v.stop()

    def test_204_has_no_body(self):
        self.check_bodiless("/204", 204)

    def test_204_with_content_length_has_no_body(self):
        self.check_bodiless("/204-length", 204)

    def test_304_has_no_body(self):
        self.check_bodiless("/304", 304)

    def test_304_with_content_length_has_no_body(self):
        self.check_bodiless("/304-length", 304)


class InterimResponsesTest(VeerTestCase):
    def test_expect_100_continue_round_trip(self):
        def handler(conn, reader, head):
            if (head.header("Expect") or "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = b"".join(iter_body(reader, head))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return True
        b = StreamBackend(handler)
        self._cleanup.append(b.close)
        v = self.veer(quick_config([("b", b.address)]))
        s = socket.create_connection(("127.0.0.1", v.port), timeout=DEADLINE)
        self._cleanup.append(s.close)
        reader = StreamReader(s)
        body = b"the body, sent only after 100 Continue"
        s.sendall(b"POST /expect HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        interim = read_head(reader)
        self.assertEqual(interim.start, b"HTTP/1.1 100 Continue")
        s.sendall(body)
        final = read_head(reader)
        self.assertEqual(final.status, 200)
        self.assertEqual(b"".join(iter_body(reader, final)), body)
        self.assertEqual(b.heads[0].header("Expect"), "100-continue")
        self.assertEqual(b.heads[0].header("Content-Length"), str(len(body)))
        v.stop()

    def expect_backend(self, refuse=None, keep=False):
        """A backend for Expect: 100-continue. With refuse (a status), it answers
        a request that expects 100 with that at once, without a 100 and before
        reading the body; then it closes, or with keep=True it stays open and
        reads (drops) the body, as RFC 9110 lets a server that did not say
        close. Otherwise (and for requests without Expect) it sends 100
        Continue when asked, reads the body and echoes it."""
        def handler(conn, reader, head):
            expects = (head.header("Expect") or "").lower() == "100-continue"
            if refuse is not None and expects:
                conn.sendall(b"HTTP/1.1 %d Refused\r\nContent-Length: 7\r\n%s\r\nrefused"
                             % (refuse, b"" if keep else b"Connection: close\r\n"))
                if not keep:
                    return False
                b"".join(iter_body(reader, head))
                return True
            if expects:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = b"".join(iter_body(reader, head))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return True
        b = StreamBackend(handler)
        self._cleanup.append(b.close)
        return b

    def check_refused_expectation(self, status, keep=False):
        b = self.expect_backend(refuse=status, keep=keep)
        v = self.veer(quick_config([("b", b.address)]))
        s = socket.create_connection(("127.0.0.1", v.port), timeout=DEADLINE)
        self._cleanup.append(s.close)
        reader = StreamReader(s)
        # The body, never asked for, looks like a request: it must never become one.
        body = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
        s.sendall(b"POST /expect HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        final = read_head(reader)
        self.assertEqual(final.status, status, final.start)
        self.assertEqual(b"".join(iter_body(reader, final)), b"refused")
        # The client goes on as RFC 9110 allows: it sends the body anyway, then
        # another request. veer either passes the body on and answers /next
        # (keep-alive), or says Connection: close and closes.
        closing = (final.header("Connection") or "").lower() == "close"
        try:
            s.sendall(body + b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
            nxt = read_head(reader)
        except (ConnectionResetError, BrokenPipeError):
            nxt = None
        if closing:
            self.assertIsNone(nxt, "veer said Connection: close and answered again")
        else:
            self.assertIsNotNone(nxt, "veer closed the connection without Connection: close")
            self.assertEqual(nxt.status, 200, nxt.start)
            self.assertEqual(b"".join(iter_body(reader, nxt)), b"")
        self.assertNotIn("/smuggled", [h.target for h in b.heads])
        self.assertEqual([h.target for h in b.heads],
                         ["/expect"] if closing else ["/expect", "/next"])
        v.stop()
        return closing

    def test_expect_100_continue_refused_with_417_before_the_body(self):
        self.check_refused_expectation(417)

    def test_expect_100_continue_refused_with_401_before_the_body(self):
        self.check_refused_expectation(401)

    def test_expect_100_continue_refused_by_a_backend_that_keeps_the_connection(self):
        # The backend says 401 without Connection: close, then reads the body:
        # veer may keep the client (sending the body on) or close it, but
        # must say which, and the body never becomes a request.
        closing = self.check_refused_expectation(401, keep=True)
        print("\n  veer %s the client after a keep-alive 401 to Expect"
              % ("closed" if closing else "kept"))

    def test_expect_100_continue_with_the_body_sent_at_once(self):
        # The client does not wait for 100 Continue (RFC 9110 allows it): the
        # body goes along, the backend's 100 is relayed or dropped, the final
        # answer echoes the body exactly, and the connection stays usable.
        b = self.expect_backend()
        v = self.veer(quick_config([("b", b.address)]))
        s = socket.create_connection(("127.0.0.1", v.port), timeout=DEADLINE)
        self._cleanup.append(s.close)
        reader = StreamReader(s)
        body = b"sent with the head, before any 100 Continue"
        s.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = read_head(reader)
        if head.status == 100:
            head = read_head(reader)
        self.assertEqual(head.status, 200, head.start)
        self.assertEqual(b"".join(iter_body(reader, head)), body)
        s.sendall(b"POST /again HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        head = read_head(reader)
        self.assertEqual(head.status, 200, head.start)
        self.assertEqual(b"".join(iter_body(reader, head)), b"abc")
        self.assertEqual([h.target for h in b.heads], ["/early", "/again"])
        v.stop()

    def early_hints_backend(self):
        def handler(conn, req):
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLink: </style.css>\r\n\r\n"
                         b"final")
            return True
        return self.backend("b", handler)

    def test_103_early_hints_is_relayed_to_http11_client(self):
        b = self.early_hints_backend()
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        c.send(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n")
        hints = read_head(c.reader)
        self.assertEqual(hints.status, 103)
        self.assertEqual(hints.header("Link"), "</style.css>; rel=preload")
        r = c.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"final")
        # The connection goes on normally after the interim response.
        c.send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(read_head(c.reader).status, 103)
        self.assertEqual(c.response().body, b"final")
        c.close()
        v.stop()

    def test_1xx_is_not_sent_to_http10_client(self):
        b = self.early_hints_backend()
        v = self.veer(quick_config([("b", b.address)]))
        c = self.client(v.port)
        c.send(b"GET /page HTTP/1.0\r\n\r\n")
        r = read_head(c.reader)
        self.assertEqual(r.status, 200)
        self.assertEqual(c.reader.read(5), b"final")
        self.assertTrue(c.is_closed())
        v.stop()


class LargeBodiesTest(VeerTestCase):
    """50 MiB through veer; its RSS must stay within baseline + 16 MiB."""

    def start(self, backend):
        v = self.veer(quick_config([("b", backend.address)]), workers=1)
        # Warm up so the baseline includes what any request allocates.
        s = socket.create_connection(("127.0.0.1", v.port), timeout=DEADLINE)
        s.sendall(b"GET /warm HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reader = StreamReader(s)
        head = read_head(reader)
        for _ in iter_body(reader, head):
            pass
        s.close()
        return v, v.rss_kib()

    def big_response_handler(self, progress=None):
        def handler(conn, req):
            total = BIG if req.target == "/big" else 10
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            if progress is not None and req.target == "/big":
                send_tracked(conn, PATTERN.pieces(total), progress)
            else:
                for p in PATTERN.pieces(total):
                    conn.sendall(p)
            return True
        return handler

    def test_50mib_response_streams_with_bounded_memory(self):
        b = self.backend("b", self.big_response_handler())
        v, baseline = self.start(b)
        rss = RssSampler(v)
        s = socket.create_connection(("127.0.0.1", v.port), timeout=DEADLINE)
        self._cleanup.append(s.close)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = StreamReader(s)
        head = read_head(reader)
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header("Content-Length"), str(BIG))
        got = BodyDigest()
        for piece in iter_body(reader, head):
            got.update(piece)
        peak = rss.stop()
        self.assertEqual(got.n, BIG)
        self.assertEqual(got.hexdigest(), PATTERN.digest(BIG))
        self.assertEqual([q.target for q in b.requests], ["/warm", "/big"])
        self.assertLess(peak, baseline + RSS_SLACK_KIB,
                        "RSS grew from %d to %d KiB" % (baseline, peak))
        s.close()
        v.stop()

    def counting_backend(self):
        def handler(conn, reader, head):
            got = BodyDigest()
            for piece in iter_body(reader, head):
                got.update(piece)
            body = b"%d %s" % (got.n, got.hexdigest().encode())
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return True
        b = StreamBackend(handler)
        self._cleanup.append(b.close)
        return b

    def upload(self, chunked):
        b = self.counting_backend()
        v, baseline = self.start(b)
        rss = RssSampler(v)
        s = socket.create_connection(("127.0.0.1", v.port), timeout=DEADLINE)
        self._cleanup.append(s.close)
        if chunked:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            for p in PATTERN.pieces(BIG, 65521):
                s.sendall(b"%x\r\n%s\r\n" % (len(p), p))
            s.sendall(b"0\r\n\r\n")
        else:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % BIG)
            for p in PATTERN.pieces(BIG):
                s.sendall(p)
        reader = StreamReader(s)
        head = read_head(reader)
        body = b"".join(iter_body(reader, head))
        peak = rss.stop()
        self.assertEqual(head.status, 200, body)
        self.assertEqual(body, b"%d %s" % (BIG, PATTERN.digest(BIG).encode()))
        self.assertEqual(b.heads[-1].target, "/up")
        self.assertLess(peak, baseline + RSS_SLACK_KIB,
                        "RSS grew from %d to %d KiB" % (baseline, peak))
        s.close()
        v.stop()

    def test_50mib_content_length_upload_streams_with_bounded_memory(self):
        self.upload(chunked=False)

    def test_50mib_chunked_upload_streams_with_bounded_memory(self):
        self.upload(chunked=True)

    def test_slow_client_backpressure_bounds_memory(self):
        progress = SendProgress()
        self._cleanup.append(lambda: setattr(progress, "abort", True))
        b = self.backend("b", self.big_response_handler(progress))
        v, baseline = self.start(b)
        rss = RssSampler(v)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._cleanup.append(s.close)
        # A small receive window that does not grow: the kernel holds little for us.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(DEADLINE)
        s.connect(("127.0.0.1", v.port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        # Read nothing until the backend cannot send any more: veer stopped reading it.
        wait_for(lambda: progress.stalled_for() >= 1.0, what="backend send to block")
        sent_while_blocked = progress.sent
        rss_while_blocked = v.rss_kib()
        # Nor did it pile the response into the kernel: the bytes it left unsent in its
        # socket to us stay around one buffer (TCP_NOTSENT_LOWAT), whatever the kernel's
        # send buffer would accept.
        queued = tx_queue(v.port, s.getsockname()[1])
        self.assertLess(queued, 65536 * 2 + 128 * 1024,
                        "veer queued %d bytes in its socket to a client that reads nothing"
                        % queued)
        self.assertFalse(progress.done)
        self.assertLess(sent_while_blocked, BIG,
                        "veer kept reading the backend though the client reads nothing")
        self.assertLess(rss_while_blocked, baseline + RSS_SLACK_KIB,
                        "RSS grew from %d to %d KiB" % (baseline, rss_while_blocked))
        # Now the client reads everything, and gets it all.
        reader = StreamReader(s)
        head = read_head(reader)
        self.assertEqual(head.status, 200)
        got = BodyDigest()
        for piece in iter_body(reader, head):
            got.update(piece)
        peak = rss.stop()
        self.assertEqual(got.n, BIG)
        self.assertEqual(got.hexdigest(), PATTERN.digest(BIG))
        wait_for(lambda: progress.done, what="backend to finish sending")
        self.assertEqual([q.target for q in b.requests], ["/warm", "/big"])
        self.assertLess(peak, baseline + RSS_SLACK_KIB,
                        "RSS grew from %d to %d KiB" % (baseline, peak))
        s.close()
        v.stop()


if __name__ == "__main__":
    unittest.main()
