"""The admin socket and veerctl: show output and JSON shape, reply framing,
refusals that change nothing, hostile clients, exit codes, the audit log's
hash chain and the state file across kill -9 (ARCHITECTURE.md, "Admin socket
protocol and veerctl", "Traffic model", "Config" precedence)."""

import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from helpers import (AdminConn, admin_top, audit_records, parse_ok, pool_shares, show_pool,
                     state_shares, veerctl)
from veertest import DEADLINE, VEERCTL_BIN, Client, VeerTestCase, wait_for

SHOW_POOLS_HEADER = "pool backend group state weight share active conns gen".split()
POOL_KEYS = {"pool", "generation", "balance", "groups", "backends"}
GROUP_KEYS = {"name", "share"}
BACKEND_KEYS = {"name", "address", "group", "state", "weight", "effective_weight", "active",
                "conns"}


def backends_text(backends):
    return ", ".join('{ name = "%s"; address = "%s"; weight = %d; group = "%s"; }' % b
                     for b in backends)


def two_pool_config(api, tri, api_shares="blue = 90; green = 10;",
                    tri_shares="a = 50; b = 30; c = 20;", persist_dir="{tmp}"):
    """Pool api (listened on) and pool tri (three groups, no listener); backends
    are (name, address, weight, group)."""
    # capacity_headroom 3: one green of three READY backends may take all of pool api (the
    # capacity guard itself is tested in test_rollout.py); these tests are about the protocol.
    return ('timeouts = { quiet_ms = 100; };\n' + admin_top(persist_dir) +
            'listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'pools = (\n'
            '  { name = "api"; capacity_headroom = 3.0; shares = { %s }; backends = ( %s ); },\n'
            '  { name = "tri"; balance = "leastconn"; capacity_headroom = 3.0; shares = { %s };'
            ' backends = ( %s ); }\n'
            ');\n' % (api_shares, backends_text(api), tri_shares, backends_text(tri)))


class AdminTestCase(VeerTestCase):
    """A veer with pool api (blue-1 w100, blue-2 w300 in blue 90%; green-1 w100
    in green 10%) and pool tri (a1, b1, c1 in groups a 50%, b 30%, c 20%)."""

    def start(self, **kw):
        self.blue1 = self.backend("blue-1")
        self.blue2 = self.backend("blue-2")
        self.green1 = self.backend("green-1")
        self.a1 = self.backend("a1")
        self.b1 = self.backend("b1")
        self.c1 = self.backend("c1")
        api = [("blue-1", self.blue1.address, 100, "blue"), ("blue-2", self.blue2.address, 300, "blue"),
               ("green-1", self.green1.address, 100, "green")]
        tri = [("a1", self.a1.address, 100, "a"), ("b1", self.b1.address, 100, "b"),
               ("c1", self.c1.address, 100, "c")]
        self.v = self.veer(two_pool_config(api, tri, **kw))
        self.sock = self.v.admin_socket
        return self.v

    def ctl(self, *args):
        return veerctl(self.sock, *args)

    def snapshot(self):
        """Everything the admin socket says about the routing state, as text."""
        return (self.ctl("show", "pools").stdout, self.ctl("show", "pool", "api", "--json").stdout,
                self.ctl("show", "pool", "tri", "--json").stdout)

    def assertOK(self, p):
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return parse_ok(p.stdout)

    def admin(self):
        c = AdminConn(self.sock)
        self._cleanup.append(c.close)
        return c

    def http_ok(self):
        """veer still proxies: one request through the api pool answers 200."""
        c = Client(self.v.port)
        try:
            r = c.request("GET", "/still-serving")
            self.assertIsNotNone(r)
            self.assertEqual(r.status, 200)
            self.assertIn(r.header("X-Backend"), ("blue-1", "blue-2", "green-1"))
        finally:
            c.close()


class ShowTest(AdminTestCase):
    def test_show_pools_table(self):
        self.start()
        p = self.ctl("show", "pools")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertTrue(p.stdout.endswith("\n\n"), repr(p.stdout))
        lines = p.stdout[:-2].split("\n")
        self.assertEqual(lines[0].split(), SHOW_POOLS_HEADER)
        gen = show_pool(self.sock, "api")["generation"]
        rows = sorted(l.split() for l in lines[1:])
        # conns (upstream connections) is whatever veer keeps open; a number.
        for r in rows:
            self.assertEqual(len(r), len(SHOW_POOLS_HEADER), r)
            self.assertTrue(r[7].isdigit(), r)
        want = sorted([
            ["api", "blue-1", "blue", "READY", "100", "90", "0", str(gen)],
            ["api", "blue-2", "blue", "READY", "300", "90", "0", str(gen)],
            ["api", "green-1", "green", "READY", "100", "10", "0", str(gen)],
            ["tri", "a1", "a", "READY", "100", "50", "0", str(gen)],
            ["tri", "b1", "b", "READY", "100", "30", "0", str(gen)],
            ["tri", "c1", "c", "READY", "100", "20", "0", str(gen)],
        ])
        self.assertEqual([r[:7] + r[8:] for r in rows], want)

        # The table follows a change: weight, share and gen of the rows.
        ok = parse_ok(self.ctl("shift", "api", "blue=40", "green=60").stdout)
        self.assertOK(self.ctl("set", "weight", "tri/c1", "7"))
        self.assertOK(self.ctl("set", "state", "api/blue-1", "maint"))
        rows = {(r[0], r[1]): r for r in
                (l.split() for l in self.ctl("show", "pools").stdout[:-2].split("\n")[1:])}
        self.assertEqual(len(rows), 6)
        self.assertEqual(rows[("api", "blue-2")][5], "40")
        self.assertEqual(rows[("api", "green-1")][5], "60")
        self.assertEqual(rows[("tri", "c1")][4], "7")
        self.assertEqual(rows[("api", "blue-1")][3], "MAINT")
        self.assertEqual({r[8] for r in rows.values()}, {str(ok["gen"] + 2)})
        self.v.stop()

    def test_show_pool_json_shape_and_values(self):
        self.start()
        p = self.ctl("show", "pool", "api", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.endswith("}\n\n"), repr(p.stdout[-20:]))
        doc = json.loads(p.stdout)
        self.assertEqual(set(doc), POOL_KEYS)
        self.assertEqual(doc["pool"], "api")
        self.assertIsInstance(doc["generation"], int)
        self.assertEqual(doc["balance"], "swrr")
        self.assertEqual(doc["groups"], [{"name": "blue", "share": 90}, {"name": "green", "share": 10}])
        for b in doc["backends"]:
            self.assertEqual(set(b), BACKEND_KEYS, b)
            for k in ("weight", "active", "conns"):
                self.assertIsInstance(b[k], int, (k, b))
            self.assertIsInstance(b["effective_weight"], (int, float), b)
            self.assertGreaterEqual(b["conns"], 0, b)
        self.assertEqual([(b["name"], b["address"], b["group"], b["state"], b["weight"], b["active"])
                          for b in doc["backends"]],
                         [("blue-1", self.blue1.address, "blue", "READY", 100, 0),
                          ("blue-2", self.blue2.address, "blue", "READY", 300, 0),
                          ("green-1", self.green1.address, "green", "READY", 100, 0)])
        # share x weight / eligible weight of the group: 90 x 100/400, 90 x 300/400, 10 x 100/100.
        eff = [b["effective_weight"] for b in doc["backends"]]
        for got, want in zip(eff, [22.5, 67.5, 10]):
            self.assertAlmostEqual(got, want, places=6)

        tri = show_pool(self.sock, "tri")
        self.assertEqual(set(tri), POOL_KEYS)
        self.assertEqual(tri["balance"], "leastconn")
        self.assertEqual(tri["generation"], doc["generation"])
        self.assertEqual(tri["groups"], [{"name": "a", "share": 50}, {"name": "b", "share": 30},
                                         {"name": "c", "share": 20}])
        self.assertEqual([b["effective_weight"] for b in tri["backends"]], [50, 30, 20])

        # A backend leaving its group: the others absorb the group's share.
        gen = doc["generation"]
        ok = parse_ok(self.ctl("set", "state", "api/blue-2", "maint").stdout)
        self.assertEqual(ok["gen"], gen + 1)
        doc = show_pool(self.sock, "api")
        self.assertEqual(doc["generation"], gen + 1)
        self.assertEqual([(b["name"], b["state"]) for b in doc["backends"]],
                         [("blue-1", "READY"), ("blue-2", "MAINT"), ("green-1", "READY")])
        for got, want in zip([b["effective_weight"] for b in doc["backends"]], [90, 0, 10]):
            self.assertAlmostEqual(got, want, places=6)
        # Weight 0 in a group that keeps another eligible backend.
        parse_ok(self.ctl("set", "state", "api/blue-2", "ready").stdout)
        parse_ok(self.ctl("set", "weight", "api/blue-1", "0").stdout)
        doc = show_pool(self.sock, "api")
        for got, want in zip([b["effective_weight"] for b in doc["backends"]], [0, 90, 10]):
            self.assertAlmostEqual(got, want, places=6)
        self.assertEqual(doc["generation"], gen + 3)
        self.v.stop()

    def test_show_pool_text_and_help(self):
        self.start()
        p = self.ctl("show", "pool", "api")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.endswith("\n\n"))
        for name in ("blue-1", "blue-2", "green-1", self.blue1.address):
            self.assertIn(name, p.stdout)
        h = self.ctl("help")
        self.assertEqual(h.returncode, 0)
        self.assertTrue(h.stdout.endswith("\n\n"))
        self.assertEqual(h.stdout.count("\n\n"), 1, "help text has an empty line inside")
        for usage in ("show pools", "show pool", "set weight", "set state", "shift", "swap",
                      "rollback", "audit verify"):
            self.assertIn(usage, h.stdout)
        self.v.stop()


class FramingTest(AdminTestCase):
    """The line protocol over a raw unix socket."""

    def test_every_reply_ends_with_one_empty_line(self):
        self.start()
        c = self.admin()
        for line in ("show pools", "show pool api --json", "show pool api", "help",
                     "shift api blue=80 green=20", "set weight api/nope 1", "bogus", "audit verify"):
            r = c.command(line)
            self.assertTrue(r.endswith("\n\n"), (line, r))
            self.assertNotIn("\n\n", r[:-2], (line, r))
            self.assertNotEqual(r.strip(), "", line)
        self.assertEqual(c.buf, b"")
        self.v.stop()

    def test_commands_in_one_write_are_answered_in_order(self):
        self.start()
        c = self.admin()
        c.send(b"show pool api --json\nshift api blue=50 green=50\nshow pool api --json\n"
               b"no such command\nswap api\nshow pool api --json\n")
        first = json.loads(c.reply())
        self.assertEqual(pool_shares(first), {"blue": 90, "green": 10})
        ok1 = parse_ok(c.reply().decode())
        self.assertEqual(ok1["gen"], first["generation"] + 1)
        second = json.loads(c.reply())
        self.assertEqual(pool_shares(second), {"blue": 50, "green": 50})
        self.assertEqual(second["generation"], ok1["gen"])
        self.assertTrue(c.reply().startswith(b"ERR "))
        ok2 = parse_ok(c.reply().decode())
        self.assertEqual(ok2["gen"], ok1["gen"] + 1)
        third = json.loads(c.reply())
        self.assertEqual(pool_shares(third), {"blue": 50, "green": 50})
        self.assertEqual(third["generation"], ok2["gen"])
        # The connection stays open for more.
        self.assertTrue(c.command("show pools").startswith("pool "))
        self.v.stop()

    def test_half_close_after_three_lines_gets_three_replies_then_eof(self):
        self.start()
        c = self.admin()
        c.send(b"show pool api --json\nshift api blue=70 green=30\nbogus command\n")
        c.half_close()
        out = c.read_to_eof()
        self.assertTrue(out.endswith(b"\n\n"), out)
        replies = out.split(b"\n\n")[:-1]
        self.assertEqual(len(replies), 3, out)
        self.assertEqual(pool_shares(json.loads(replies[0])), {"blue": 90, "green": 10})
        parse_ok(replies[1].decode() + "\n\n")
        self.assertTrue(replies[2].startswith(b"ERR "), replies[2])
        self.assertEqual(pool_shares(show_pool(self.sock)), {"blue": 70, "green": 30})
        self.v.stop()

    def test_last_line_without_newline_is_answered_on_half_close(self):
        self.start()
        c = self.admin()
        c.send(b"show pools\nshift api blue=60 green=40")
        c.half_close()
        out = c.read_to_eof()
        replies = out.split(b"\n\n")
        self.assertEqual(replies[-1], b"", out)
        self.assertEqual(len(replies), 3, out)
        self.assertTrue(replies[0].startswith(b"pool "), out)
        parse_ok(replies[1].decode() + "\n\n")
        self.assertEqual(pool_shares(show_pool(self.sock)), {"blue": 60, "green": 40})

        # Alone too, with nothing before it.
        c = self.admin()
        c.send(b"show pool tri --json")
        c.half_close()
        out = c.read_to_eof()
        self.assertTrue(out.endswith(b"}\n\n"), out)
        self.assertEqual(json.loads(out)["pool"], "tri")
        self.v.stop()

    def test_command_trickled_byte_by_byte_and_crlf(self):
        self.start()
        c = self.admin()
        for ch in b"shift api blue=30 green=70\n":
            c.send(bytes([ch]))
        parse_ok(c.reply().decode())
        c.send(b"show pool api --json\r\n")
        self.assertEqual(pool_shares(json.loads(c.reply())), {"blue": 30, "green": 70})
        self.v.stop()


# (line, text the reason must mention). The pool tri has three groups, and
# nothing has been changed yet, so there is nothing to roll back.
BAD_COMMANDS = [
    ("frobnicate api", "frobnicate"),
    ("show pool nope", "pool"),
    ("shift nope blue=50 green=50", "nope"),
    ("set weight nope/blue-1 10", "nope"),
    ("set weight api/nope 10", "nope"),
    ("set state api/nope maint", "nope"),
    ("shift api blue=50 purple=50", "purple"),
    ("set weight api/blue-1 1001", "1001"),
    ("set weight api/blue-1 -5", "-5"),
    ("set weight api/blue-1 ten", "ten"),
    ("shift api blue=60 green=60", "100"),
    ("shift api blue=50", "100"),
    ("shift api blue=101 green=0", "101"),
    ("shift api blue=50 blue=50", "blue"),
    ("swap tri", "tri"),
    ("rollback api", "api"),
    ("set state api/blue-1 bogus", "bogus"),
    ("set state api/blue-1", "usage"),
    ("shift api", "usage"),
    ("shift api blue=90 green=10 --json", "--json"),
    ("set weight api/blue-1 10 --bogus", "--bogus"),
    ("show", "usage"),
    ("audit verify /nonexistent/dir/audit.log", "/nonexistent/dir/audit.log"),
]

# Lines veerctl cannot carry (a NUL) or that are not text at all.
GARBAGE = [b"\x00\xff\xfe\x80 \x01\x02", b"\xde\xad\xbe\xef", b"\x1b[2J\x07 shift api",
           b"shift\x00api blue=0 green=100", b"\xff" * 300]


class BadCommandTest(AdminTestCase):
    def test_bad_commands_are_refused_and_change_nothing(self):
        self.start()
        before = self.snapshot()
        gen = json.loads(before[1])["generation"]
        for line, hint in BAD_COMMANDS:
            with self.subTest(line=line):
                p = self.ctl(*line.split(" "))
                self.assertTrue(p.stdout.startswith("ERR "), (line, p.stdout, p.stderr))
                self.assertTrue(p.stdout.endswith("\n\n"), (line, p.stdout))
                self.assertEqual(p.stdout.count("\n"), 2, (line, p.stdout))
                self.assertEqual(p.returncode, 1, (line, p.stdout))
                self.assertIn(hint.lower(), p.stdout.lower(), (line, p.stdout))
        # Not text: veerctl passes the bytes through.
        p = self.ctl(b"\xff\xfe\xfd", b"\x80api")
        self.assertTrue(p.stdout.startswith("ERR "), p.stdout)
        self.assertEqual(p.returncode, 1)
        after = self.snapshot()
        self.assertEqual(after, before)
        self.assertEqual(json.loads(after[1])["generation"], gen)
        self.http_ok()
        self.v.stop()

    def test_bad_lines_on_one_connection_each_get_err(self):
        self.start()
        before = self.snapshot()
        c = self.admin()
        lines = [l.encode() for l, _ in BAD_COMMANDS] + GARBAGE
        c.send(b"".join(l + b"\n" for l in lines))
        for l in lines:
            r = c.reply()
            self.assertIsNotNone(r, l)
            self.assertTrue(r.startswith(b"ERR "), (l, r))
            self.assertEqual(r.count(b"\n"), 2, (l, r))
        # The connection is still good, and nothing changed.
        self.assertTrue(c.command("show pools").startswith("pool "))
        self.assertEqual(self.snapshot(), before)
        self.v.stop()


class HostileClientTest(AdminTestCase):
    def test_huge_line_is_refused_and_the_connection_closed(self):
        self.start()
        before = self.snapshot()
        c = self.admin()
        errors = []

        def send():
            try:
                c.send(b"shift api " + b"x" * (100 * 1024))
            except OSError as e:  # veer may hang up before taking it all
                errors.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        out = c.read_to_eof()
        t.join(DEADLINE)
        self.assertEqual(out, b"ERR line too long\n\n")
        # The daemon serves other admin clients and HTTP, and nothing changed.
        self.assertEqual(self.snapshot(), before)
        p = self.ctl("shift", "api", "blue=20", "green=80")
        parse_ok(p.stdout)
        self.http_ok()
        self.v.stop()

    def test_disconnect_mid_line(self):
        self.start()
        for partial in (b"shift api blu", b"show po", b"\xff\xfe"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.sock)
            s.sendall(partial)
            s.close()
        c = self.admin()
        self.assertTrue(c.command("show pools").startswith("pool "))
        self.assertEqual(pool_shares(show_pool(self.sock)), {"blue": 90, "green": 10})
        parse_ok(self.ctl("shift", "api", "blue=10", "green=90").stdout)
        self.http_ok()
        self.v.stop()

    def test_disconnect_mid_reply(self):
        self.start()
        # Many replies queued (about 2 MB of help text), then the client goes
        # away after reading a little: veer's writes fail with EPIPE.
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(DEADLINE)
            s.connect(self.sock)
            s.sendall(b"help\n" * 1500)
            self.assertTrue(s.recv(100))
            s.close()
        # A reply cut off after its first bytes: one big show, closed at once.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        s.sendall(b"show pools\nshow pool api --json\n")
        s.close()
        self.assertEqual(self.v.proc.poll(), None)
        c = self.admin()
        self.assertTrue(c.command("show pools").startswith("pool "))
        parse_ok(c.command("shift api blue=0 green=100"))
        self.http_ok()
        self.v.stop()

    def test_idle_client_does_not_block_other_clients(self):
        self.start()
        idle = self.admin()               # connected, sends nothing
        half = self.admin()
        half.send(b"show pool ap")        # half a line, then nothing
        # Another client is answered while both wait, including a change.
        p = veerctl(self.sock, "show", "pools", timeout=DEADLINE)
        self.assertEqual(p.returncode, 0)
        self.assertTrue(p.stdout.startswith("pool "))
        parse_ok(veerctl(self.sock, "shift", "api", "blue=50", "green=50").stdout)
        self.http_ok()
        # The waiting ones are still served when they speak.
        self.assertTrue(idle.command("show pools").startswith("pool "))
        half.send(b"i --json\n")
        self.assertEqual(pool_shares(json.loads(half.reply())), {"blue": 50, "green": 50})
        self.v.stop()

    def test_client_not_reading_replies_does_not_block_other_clients(self):
        self.start()
        hog = self.admin()
        hog.sock.setblocking(False)
        # Pipelined commands whose replies (about 2 KB each) are never read,
        # until the socket takes no more: veer stopped reading them (or is slow).
        chunk, sent = b"help\n" * 200, 0
        while sent < 20 * 1024 * 1024:
            try:
                sent += hog.sock.send(chunk)
            except BlockingIOError:
                break
        self.assertGreater(sent, 0)
        for i in range(5):
            p = veerctl(self.sock, "show", "pool", "api", "--json")
            self.assertEqual(p.returncode, 0, p.stderr)
            json.loads(p.stdout)
        parse_ok(veerctl(self.sock, "shift", "api", "blue=25", "green=75").stdout)
        self.http_ok()
        # Its replies are still coming, in order, when it finally reads.
        hog.sock.setblocking(True)
        hog.sock.settimeout(DEADLINE)
        first = hog.reply()
        self.assertTrue(first.startswith(b"show pools"), first[:100])
        hog.close()
        self.assertTrue(self.admin().command("show pools").startswith("pool "))
        self.assertLess(self.v.rss_kib(), 512 * 1024)
        self.v.stop()


class VeerctlTest(AdminTestCase):
    def test_exit_codes(self):
        self.start()
        p = self.ctl("show", "pools")
        self.assertEqual(p.returncode, 0)
        p = self.ctl("show", "pool", "api", "--json")
        self.assertEqual(p.returncode, 0)
        p = self.ctl("shift", "api", "blue=80", "green=20")
        self.assertEqual(p.returncode, 0)
        parse_ok(p.stdout)
        p = self.ctl("shift", "api", "blue=80", "green=80")
        self.assertEqual(p.returncode, 1)
        self.assertTrue(p.stdout.startswith("ERR "))
        p = self.ctl("nonsense")
        self.assertEqual(p.returncode, 1)
        missing = os.path.join(self.v.tmp, "no-such-dir", "admin.sock")
        p = veerctl(missing, "show", "pools")
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertIn(missing, p.stderr)
        # A path that exists but where nobody listens.
        dead = os.path.join(self.v.tmp, "dead.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(dead)
        s.close()
        self.assertEqual(veerctl(dead, "show", "pools").returncode, 2)
        # The socket from the environment when -s is not given.
        env = dict(os.environ, VEER_SOCKET=self.sock)
        p = subprocess.run([VEERCTL_BIN, "show", "pools"], capture_output=True, text=True,
                           env=env, timeout=DEADLINE)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("pool "))
        self.v.stop()


class SocketModeTest(VeerTestCase):
    def test_socket_mode(self):
        b = self.backend("b")
        for mode_conf, want in (("", 0o660), ('mode = "0600"; ', 0o600)):
            with self.subTest(mode=oct(want)):
                cfg = two_pool_config([("blue-1", b.address, 100, "blue"),
                                       ("green-1", b.address, 100, "green")],
                                      [("a1", b.address, 100, "a"), ("b1", b.address, 100, "b"),
                                       ("c1", b.address, 100, "c")])
                cfg = cfg.replace('admin = { socket = "{tmp}/admin.sock"; };',
                                  'admin = { socket = "{tmp}/admin.sock"; %s};' % mode_conf)
                v = self.veer(cfg)
                st = os.stat(v.admin_socket)
                self.assertTrue(stat.S_ISSOCK(st.st_mode))
                self.assertEqual(stat.S_IMODE(st.st_mode), want)
                self.assertEqual(veerctl(v.admin_socket, "show", "pools").returncode, 0)
                v.stop()


    def test_world_writable_directory_is_refused(self):
        # Anyone could replace the socket there: veer refuses to start.
        b = self.backend("b")
        d = tempfile.mkdtemp(prefix="veer-ww-")
        self._cleanup.append(lambda: shutil.rmtree(d, ignore_errors=True))
        os.chmod(d, 0o777)
        cfg = ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
               'admin = { socket = "%s/admin.sock"; };\n'
               'pools = ( { name = "api"; backends = ( { name = "b"; address = "%s"; } ); } );\n'
               % (d, b.address))
        v = self.veer(cfg, check_ready=False)
        self.assertEqual(v.proc.wait(DEADLINE), 1)
        v.wait_log(r"admin socket: directory %s is world-writable; refusing to create "
                   r"%s/admin\.sock there" % (re.escape(d), re.escape(d)))
        self.assertFalse(os.path.exists(os.path.join(d, "admin.sock")))


class StrandTest(VeerTestCase):
    """A change that leaves a group with a share but no eligible weight is refused
    unless --force."""

    def test_refuses_to_strand_traffic_without_force(self):
        blue = self.backend("blue-1")
        green = self.backend("green-1")
        cfg = two_pool_config([("blue-1", blue.address, 100, "blue"),
                               ("green-1", green.address, 0, "green")],
                              [("a1", blue.address, 100, "a"), ("b1", blue.address, 100, "b"),
                               ("c1", blue.address, 100, "c")],
                              api_shares="blue = 100; green = 0;")
        v = self.veer(cfg)
        sock = v.admin_socket
        before = show_pool(sock)
        for args in (["shift", "api", "blue=0", "green=100"],
                     ["shift", "api", "blue=50", "green=50"],
                     ["set", "weight", "api/blue-1", "0"],
                     ["set", "state", "api/blue-1", "maint"],
                     ["set", "state", "api/blue-1", "drain"]):
            with self.subTest(args=args):
                p = veerctl(sock, *args)
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertTrue(p.stdout.startswith("ERR "), p.stdout)
                self.assertIn("--force", p.stdout)
                self.assertEqual(show_pool(sock), before)
        # Traffic still flows to blue.
        c = self.client(v.port)
        for i in range(5):
            r = c.request("GET", "/s/%d" % i)
            self.assertEqual((r.status, r.header("X-Backend")), (200, "blue-1"))
        p = veerctl(sock, "shift", "api", "blue=0", "green=100", "--force")
        self.assertEqual(p.returncode, 0, p.stdout)
        ok = parse_ok(p.stdout)
        after = show_pool(sock)
        self.assertEqual(pool_shares(after), {"blue": 0, "green": 100})
        self.assertEqual(after["generation"], ok["gen"])
        self.assertEqual(ok["gen"], before["generation"] + 1)
        # A change that does not add to the stranding is not blocked by it.
        p = veerctl(sock, "set", "weight", "api/blue-1", "50")
        self.assertEqual(p.returncode, 0, p.stdout)
        v.stop()


def verify_chain(tc, lines):
    """Check seq, prev and hash of every audit line in Python."""
    prev = "0" * 64
    for i, line in enumerate(lines):
        k = line.rindex(b',"hash":')
        rec = json.loads(line)
        tc.assertEqual(rec["seq"], i + 1, line)
        tc.assertEqual(rec["prev"], prev, "record %d: prev" % (i + 1))
        tc.assertEqual(rec["hash"], hashlib.sha256(line[:k]).hexdigest(), "record %d: hash" % (i + 1))
        tc.assertTrue(line.endswith(b'"}'), line)
        prev = rec["hash"]


AUDIT_KEYS = {"seq", "time", "actor", "uid", "gid", "pid", "user", "command", "result",
              "generation", "before", "after", "prev", "hash"}


class AuditTest(AdminTestCase):
    def run_ctl(self, *args):
        """veerctl with its pid (the peer the audit record must name)."""
        p = subprocess.Popen([VEERCTL_BIN, "-s", self.sock] + list(args), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=DEADLINE)
        return p.pid, p.returncode, out

    def test_audit_records_and_hash_chain(self):
        self.start()
        log = os.path.join(self.v.tmp, "audit.log")
        gen0 = show_pool(self.sock)["generation"]
        pid1, rc1, out1 = self.run_ctl("shift", "api", "blue=0", "green=100")
        self.assertEqual(rc1, 0, out1)
        ok1 = parse_ok(out1)
        # The record is written before the reply: no waiting.
        lines, recs = audit_records(log)
        self.assertEqual(len(recs), 1, lines)
        pid2, rc2, out2 = self.run_ctl("shift", "api", "blue=50", "green=60")
        self.assertEqual(rc2, 1, out2)
        pid3, rc3, out3 = self.run_ctl("set", "weight", "api/blue-2", "150")
        ok3 = parse_ok(out3)
        lines, recs = audit_records(log)
        self.assertEqual(len(recs), 3, lines)
        for r in recs:
            self.assertEqual(set(r), AUDIT_KEYS, r)
            self.assertEqual(r["actor"], "operator")
            self.assertEqual(r["uid"], os.getuid())
            self.assertEqual(r["gid"], os.getgid())
            self.assertEqual(r["user"], pwd.getpwuid(os.getuid()).pw_name)
            self.assertRegex(r["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")
        r1, r2, r3 = recs
        self.assertEqual((r1["pid"], r2["pid"], r3["pid"]), (pid1, pid2, pid3))
        self.assertEqual(r1["command"], "shift api blue=0 green=100")
        self.assertEqual(r1["result"], "OK")
        self.assertEqual(r1["generation"], ok1["gen"])
        self.assertEqual(ok1["gen"], gen0 + 1)
        self.assertEqual(r1["before"]["shares"], {"blue": 90, "green": 10})
        self.assertEqual(r1["after"]["shares"], {"blue": 0, "green": 100})
        self.assertEqual(r2["command"], "shift api blue=50 green=60")
        self.assertEqual(r2["result"], out2.rstrip("\n"))
        self.assertTrue(r2["result"].startswith("ERR "))
        self.assertEqual(r2["generation"], ok1["gen"])
        self.assertEqual(r3["command"], "set weight api/blue-2 150")
        self.assertEqual(r3["result"], "OK")
        self.assertEqual(r3["generation"], ok3["gen"])
        self.assertEqual(ok3["gen"], ok1["gen"] + 1)
        self.assertIn("150", json.dumps(r3["after"]))
        self.assertIn("300", json.dumps(r3["before"]))
        verify_chain(self, lines)

        p = self.ctl("audit", "verify")
        self.assertEqual((p.returncode, p.stdout), (0, "OK records=3\n\n"))
        copy = os.path.join(self.v.tmp, "copy.log")
        shutil.copy(log, copy)
        p = self.ctl("audit", "verify", copy)
        self.assertEqual((p.returncode, p.stdout), (0, "OK records=3\n\n"))
        self.v.stop()

    def test_tampered_record_is_named(self):
        self.start()
        log = os.path.join(self.v.tmp, "audit.log")
        parse_ok(self.ctl("shift", "api", "blue=0", "green=100").stdout)
        parse_ok(self.ctl("shift", "api", "blue=100", "green=0").stdout)
        parse_ok(self.ctl("swap", "api").stdout)
        self.assertEqual(self.ctl("audit", "verify").stdout, "OK records=3\n\n")
        with open(log, "rb") as f:
            lines = f.read().split(b"\n")
        i = lines[1].index(b"blue=100")
        lines[1] = lines[1][:i] + b"blue=101" + lines[1][i + 8:]
        with open(log, "wb") as f:
            f.write(b"\n".join(lines))
        p = self.ctl("audit", "verify")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertTrue(p.stdout.startswith("ERR "), p.stdout)
        self.assertRegex(p.stdout, r"\brecord 2\b")
        # A record removed from the middle breaks the chain at the next one.
        with open(log, "wb") as f:
            f.write(lines[0] + b"\n" + lines[2] + b"\n")
        p = self.ctl("audit", "verify")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stdout, r"\brecord 3\b")
        self.v.stop()


class AuditEndsTest(AdminTestCase):
    """audit verify of the live log also checks its ends against the chain veer holds, and
    reads only regular files, off the control thread."""

    def three_records(self):
        self.start()
        log = os.path.join(self.v.tmp, "audit.log")
        parse_ok(self.ctl("shift", "api", "blue=0", "green=100").stdout)
        parse_ok(self.ctl("shift", "api", "blue=100", "green=0").stdout)
        parse_ok(self.ctl("swap", "api").stdout)
        self.assertEqual(self.ctl("audit", "verify").stdout, "OK records=3\n\n")
        with open(log, "rb") as f:
            return log, f.read().split(b"\n")[:3]

    def test_records_removed_from_the_end_are_named(self):
        log, lines = self.three_records()
        with open(log, "wb") as f:
            f.write(lines[0] + b"\n" + lines[1] + b"\n")
        p = self.ctl("audit", "verify")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertEqual(p.stdout, "ERR record 3 (line 3): missing: the log ends at record 2 but "
                                   "veer wrote up to record 3 (records were removed from its "
                                   "end)\n\n")
        # The same file under another name is a good chain on its own: a rotated log.
        copy = os.path.join(self.v.tmp, "copy.log")
        shutil.copy(log, copy)
        self.assertEqual(self.ctl("audit", "verify", copy).stdout, "OK records=2\n\n")
        self.v.stop()

    def test_records_removed_from_the_start_are_named(self):
        log, lines = self.three_records()
        with open(log, "wb") as f:
            f.write(lines[1] + b"\n" + lines[2] + b"\n")
        p = self.ctl("audit", "verify")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertEqual(p.stdout, "ERR record 1 (line 1): missing: the log starts at record 2 "
                                   "(records were removed from its start)\n\n")
        self.v.stop()

    def test_a_fifo_or_a_device_is_refused_and_veer_keeps_answering(self):
        self.start()
        fifo = os.path.join(self.v.tmp, "fifo")
        os.mkfifo(fifo)
        for path in (fifo, "/dev/zero", self.v.tmp):
            with self.subTest(path=path):
                p = self.ctl("audit", "verify", path)
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertEqual(p.stdout, "ERR cannot read %s: not a regular file\n\n" % path)
        self.assertTrue(self.ctl("show", "pools").stdout.startswith("pool "))
        parse_ok(self.ctl("shift", "api", "blue=50", "green=50").stdout)
        self.assertLess(self.v.rss_kib(), 512 * 1024)
        self.v.stop()

    def test_a_long_verify_does_not_hold_the_control_thread(self):
        # A big (valid) log: while it is verified, shifts are still answered at once.
        self.start()
        big = os.path.join(self.v.tmp, "big.log")
        prev, out = "0" * 64, []
        for seq in range(1, 300001):
            body = ('{"seq":%d,"time":"2026-01-01T00:00:00.000Z","actor":"x","uid":0,"gid":0,'
                    '"pid":1,"user":"root","command":"c","result":"OK","generation":1,'
                    '"before":null,"after":null,"prev":"%s"' % (seq, prev))
            prev = hashlib.sha256(body.encode()).hexdigest()
            out.append('%s,"hash":"%s"}\n' % (body, prev))
        with open(big, "w") as f:
            f.write("".join(out))
        result = {}

        def verify():
            result["p"] = self.ctl("audit", "verify", big)
            result["t"] = time.monotonic()
        t = threading.Thread(target=verify)
        t.start()
        done = []  # (when the reply came, how long it took)
        while t.is_alive():
            t0 = time.monotonic()
            parse_ok(self.ctl("set", "weight", "api/blue-1", str(1 + len(done) % 900)).stdout)
            done.append((time.monotonic(), time.monotonic() - t0))
        t.join()
        self.assertEqual(result["p"].stdout, "OK records=300000\n\n")
        during = [took for when, took in done if when < result["t"]]
        # On the control thread the first shift would wait for the whole verify.
        self.assertGreaterEqual(len(during), 3, done)
        print("\n  verify of 300,000 records: %d shifts answered meanwhile, slowest %.1f ms"
              % (len(during), max(during) * 1000))
        self.v.stop()


class AuditFailureTest(AdminTestCase):
    """A change the audit log cannot take is not made: ERR, and nothing changes."""

    def test_changes_that_cannot_be_audited_are_refused_and_change_nothing(self):
        # /dev/full takes the open and fails every write with ENOSPC: a full disk, on demand.
        self.blue1 = self.backend("blue-1")
        self.blue2 = self.backend("blue-2")
        self.green1 = self.backend("green-1")
        backends = [("blue-1", self.blue1.address, 100, "blue"),
                    ("blue-2", self.blue2.address, 300, "blue"),
                    ("green-1", self.green1.address, 100, "green")]
        cfg = two_pool_config(backends, backends, tri_shares="blue = 90; green = 10;")
        cfg = cfg.replace('audit_log = "{tmp}/audit.log";', 'audit_log = "/dev/full";')
        self.assertIn("/dev/full", cfg)
        self.v = self.veer(cfg)
        self.sock = self.v.admin_socket
        before = self.snapshot()
        state = os.path.join(self.v.tmp, "state")
        for line in ("shift api blue=0 green=100", "set weight api/blue-1 7", "swap api",
                     "set state api/blue-1 maint", "drain api/blue-2", "maintenance on",
                     "maintenance on api --retry-after 5", "add backend api green-2 127.0.0.1:9",
                     "del backend api green-1 --force",
                     "rollout start api canary=green steps=20,100 interval=60s"):
            with self.subTest(line=line):
                p = self.ctl(*line.split(" "))
                self.assertEqual(p.returncode, 1, (line, p.stdout))
                self.assertRegex(p.stdout, r"\AERR audit log cannot be written \(No space left "
                                           r"on device\): nothing changed\n\n\Z")
                self.assertEqual(self.snapshot(), before, line)
        self.assertEqual(show_pool(self.sock)["generation"], json.loads(before[1])["generation"])
        # Nothing to persist either: the state file, if written at start, still says the same.
        if os.path.exists(state):
            self.assertEqual(state_shares(state)["api"], {"blue": 90, "green": 10})
        self.http_ok()
        self.v.stop()


class AuditFailureRolloutTest(VeerTestCase):
    def test_rollout_commands_that_cannot_be_audited_change_nothing(self):
        d = tempfile.mkdtemp(prefix="veer-audit-full-")
        self._cleanup.append(lambda: shutil.rmtree(d, ignore_errors=True))
        blue, green = self.backend("blue-1"), self.backend("green-1")
        cfg = two_pool_config([("blue-1", blue.address, 100, "blue"),
                               ("green-1", green.address, 100, "green")],
                              [("a1", blue.address, 100, "a"), ("b1", blue.address, 100, "b"),
                               ("c1", blue.address, 100, "c")], persist_dir=d)
        v = self.veer(cfg)
        parse_ok(veerctl(v.admin_socket, "rollout", "start", "api", "canary=green",
                         "steps=10,50,100", "interval=60s").stdout)
        v.stop()
        # The rollout is restored from the state file; now the audit log takes nothing.
        v = self.veer(cfg.replace('audit_log = "%s/audit.log";' % d, 'audit_log = "/dev/full";'))
        before = (show_pool(v.admin_socket), veerctl(v.admin_socket, "rollout", "status", "api").stdout)
        self.assertIn("state running", before[1])
        for line in ("rollout pause api", "rollout abort api"):
            with self.subTest(line=line):
                p = veerctl(v.admin_socket, *line.split(" "))
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertTrue(p.stdout.startswith("ERR audit log cannot be written"), p.stdout)
                self.assertEqual(show_pool(v.admin_socket), before[0])
                status = veerctl(v.admin_socket, "rollout", "status", "api").stdout
                self.assertIn("state running", status)
                self.assertEqual(pool_shares(show_pool(v.admin_socket)), {"blue": 90, "green": 10})
        v.stop()


class NoPublishReplyTest(AdminTestCase):
    def test_commands_that_publish_nothing_report_applied_us_0(self):
        # rollout pause/resume store no snapshot: no time to it, not a wrapped-around difference.
        self.start()
        parse_ok(self.ctl("rollout", "start", "api", "canary=green", "steps=10,100",
                          "interval=60s").stdout)
        for line in ("rollout pause api", "rollout resume api"):
            with self.subTest(line=line):
                ok = parse_ok(self.ctl(*line.split(" ")).stdout)
                self.assertEqual(ok["applied_us"], 0)
        self.v.stop()


class StateFileTest(VeerTestCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="veer-state-")
        self._cleanup.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.blue = self.backend("blue-1")
        self.green = self.backend("green-1")
        self.config = two_pool_config(
            [("blue-1", self.blue.address, 100, "blue"), ("green-1", self.green.address, 100, "green")],
            [("a1", self.blue.address, 100, "a"), ("b1", self.blue.address, 100, "b"),
             ("c1", self.blue.address, 100, "c")],
            api_shares="blue = 100; green = 0;", persist_dir=self.dir)
        self.state = os.path.join(self.dir, "state")

    def answered_by(self, v, n=10):
        c = Client(v.port)
        try:
            out = set()
            for i in range(n):
                r = c.request("GET", "/who/%d" % i)
                self.assertEqual(r.status, 200)
                out.add(r.header("X-Backend"))
            return out
        finally:
            c.close()

    def test_shifted_shares_survive_kill_9(self):
        v = self.veer(self.config)
        self.assertEqual(self.answered_by(v), {"blue-1"})
        parse_ok(veerctl(v.admin_socket, "shift", "api", "blue=0", "green=100").stdout)
        wait_for(lambda: (state_shares(self.state) or {}).get("api") == {"blue": 0, "green": 100},
                 what="the state file to hold the shift")
        ok = parse_ok(veerctl(v.admin_socket, "set", "weight", "tri/b1", "7").stdout)

        def saved():
            try:
                with open(self.state) as f:
                    text = f.read()
            except FileNotFoundError:
                return False
            return "backend b1 weight 7 " in text and "generation %d\n" % ok["gen"] in text
        wait_for(saved, what="the state file to hold the weight change")
        self.assertEqual(self.answered_by(v), {"green-1"})
        v.kill()

        v2 = self.veer(self.config)
        v2.wait_log(r"state file .*restored", what="the state file restored at start")
        doc = show_pool(v2.admin_socket)
        self.assertEqual(pool_shares(doc), {"blue": 0, "green": 100})
        self.assertGreaterEqual(doc["generation"], ok["gen"])
        tri = show_pool(v2.admin_socket, "tri")
        self.assertEqual([b["weight"] for b in tri["backends"]], [100, 7, 100])
        self.assertEqual(self.answered_by(v2, 20), {"green-1"})
        # Generations keep growing across the restart; the audit chain goes on.
        ok2 = parse_ok(veerctl(v2.admin_socket, "shift", "api", "blue=100", "green=0").stdout)
        self.assertEqual(ok2["gen"], doc["generation"] + 1)
        self.assertEqual(veerctl(v2.admin_socket, "audit", "verify").stdout, "OK records=3\n\n")
        self.assertEqual(self.answered_by(v2), {"blue-1"})
        v2.stop()

    def audited_changes(self, v, n):
        for i in range(n):
            parse_ok(veerctl(v.admin_socket, "set", "weight", "tri/b1", str(10 + i)).stdout)
        log = os.path.join(self.dir, "audit.log")
        last = audit_records(log)[1][-1]

        def saved():
            try:
                with open(self.state) as f:
                    text = f.read()
            except FileNotFoundError:
                return False
            return re.search(r"^audit 1 0{64} %d %s$" % (last["seq"], last["hash"]), text,
                             re.M) is not None
        wait_for(saved, what="the state file to hold the audit chain's ends")
        return log

    def test_records_cut_from_the_log_while_veer_was_down_are_named(self):
        v = self.veer(self.config)
        log = self.audited_changes(v, 3)
        v.stop()
        lines, _ = audit_records(log)
        with open(log, "wb") as f:
            f.write(lines[0] + b"\n" + lines[1] + b"\n")
        v2 = self.veer(self.config)
        v2.wait_log(r"audit log .* ends before record 3 the state file saw written")
        p = veerctl(v2.admin_socket, "audit", "verify")
        self.assertEqual(p.stdout, "ERR record 3 (line 3): missing: the log ends at record 2 but "
                                   "veer wrote up to record 3 (records were removed from its "
                                   "end)\n\n")
        # The chain goes on from record 3, so the gap stays in the file for good.
        parse_ok(veerctl(v2.admin_socket, "set", "weight", "tri/b1", "99").stdout)
        p = veerctl(v2.admin_socket, "audit", "verify")
        self.assertEqual(p.stdout, "ERR record 4 (line 3): prev does not match record 2\n\n")
        v2.stop()

    def test_records_cut_from_the_start_while_veer_was_down_are_named(self):
        v = self.veer(self.config)
        log = self.audited_changes(v, 3)
        v.stop()
        lines, _ = audit_records(log)
        with open(log, "wb") as f:
            f.write(b"".join(l + b"\n" for l in lines[1:]))
        v2 = self.veer(self.config)
        v2.wait_log(r"audit log .* does not start with record 1")
        p = veerctl(v2.admin_socket, "audit", "verify")
        self.assertEqual(p.stdout, "ERR record 1 (line 1): missing: the log starts at record 2 "
                                   "(records were removed from its start)\n\n")
        v2.stop()

    def test_a_rotated_log_continues_the_chain(self):
        v = self.veer(self.config)
        log = self.audited_changes(v, 2)
        v.stop()
        os.rename(log, log + ".1")
        v2 = self.veer(self.config)
        self.assertEqual(veerctl(v2.admin_socket, "audit", "verify").stdout, "OK records=0\n\n")
        parse_ok(veerctl(v2.admin_socket, "set", "weight", "tri/b1", "42").stdout)
        self.assertEqual(veerctl(v2.admin_socket, "audit", "verify").stdout, "OK records=1\n\n")
        self.assertEqual(veerctl(v2.admin_socket, "audit", "verify", log + ".1").stdout,
                         "OK records=2\n\n")
        _, old = audit_records(log + ".1")
        _, new = audit_records(log)
        self.assertEqual((new[0]["seq"], new[0]["prev"]), (3, old[-1]["hash"]))
        v2.stop()

    def test_state_applies_to_backends_that_still_exist(self):
        v = self.veer(self.config)
        parse_ok(veerctl(v.admin_socket, "set", "weight", "api/blue-1", "7").stdout)
        parse_ok(veerctl(v.admin_socket, "set", "state", "api/green-1", "maint").stdout)
        ok = parse_ok(veerctl(v.admin_socket, "shift", "api", "blue=100", "green=0").stdout)

        def saved():
            try:
                with open(self.state) as f:
                    text = f.read()
            except FileNotFoundError:
                return False
            return "generation %d\n" % ok["gen"] in text
        wait_for(saved, what="the state file at generation %d" % ok["gen"])
        v.kill()
        # The config gains a backend: it starts from the config, the others from the state.
        blue2 = self.backend("blue-2")
        cfg = self.config.replace(
            '{ name = "green-1"',
            '{ name = "blue-2"; address = "%s"; weight = 100; group = "blue"; }, '
            '{ name = "green-1"' % blue2.address, 1)
        v2 = self.veer(cfg)
        doc = show_pool(v2.admin_socket)
        self.assertEqual([(b["name"], b["weight"], b["state"]) for b in doc["backends"]],
                         [("blue-1", 7, "READY"), ("blue-2", 100, "READY"),
                          ("green-1", 100, "MAINT")])
        self.assertGreaterEqual(doc["generation"], ok["gen"])
        v2.stop()

    def test_corrupt_state_file_is_ignored(self):
        cases = [
            ("garbage", b"this is not a state file\n\x00\xff\xfe garbage\n"),
            ("binary", bytes(range(256)) * 8),
            ("truncated", b"veer-state 1\ngeneration 9\npool api\nshare blue 0\nshare green 100\n"
                          b"backend blue-1 weight 100 admin ready\n"),
            ("empty", b""),
        ]
        for name, text in cases:
            with self.subTest(case=name):
                d = tempfile.mkdtemp(prefix="veer-state-", dir=self.dir)
                state = os.path.join(d, "state")
                with open(state, "wb") as f:
                    f.write(text)
                v = self.veer(self.config.replace(self.dir, d))
                try:
                    v.wait_log(r"state file .*ignored",
                               what="a warning that the state file was ignored")
                    doc = show_pool(v.admin_socket)
                    self.assertEqual(pool_shares(doc), {"blue": 100, "green": 0})
                    self.assertEqual(self.answered_by(v), {"blue-1"})
                    # The next change writes a good file again.
                    parse_ok(veerctl(v.admin_socket, "shift", "api", "blue=40", "green=60").stdout)
                    wait_for(lambda: (state_shares(state) or {}).get("api") ==
                             {"blue": 40, "green": 60}, what="a good state file")
                    v.stop()
                finally:
                    v.kill()


if __name__ == "__main__":
    unittest.main()
