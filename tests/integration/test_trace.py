"""W3C Trace Context (issue 22): a valid traceparent goes to the backend
unchanged with its tracestate; a request without one gets a new trace
(random trace-id and parent-id, flags 00 unless trace_context.sampled) and no
tracestate; a malformed one, or several, is never forwarded as is: the
trace restarts and its tracestate is dropped. The trace-id forwarded is the
access log's trace_id. generate = false adds nothing; the keys are checked
like every other."""

import json
import os
import re
import unittest

from helpers import admin_http_port, parse_ok, quick_config, scrape, veerctl
from veertest import VeerTestCase, veer_check_config, wait_for

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
VALID = "00-%s-%s-01" % (TID, PID)
NEW = re.compile(r"\A00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])\Z")

# Values a client may send that must never reach a backend.
MALFORMED = [
    "00-%s-%s-01" % (TID.upper(), PID),           # upper-case hex
    "00-%s-%s-01" % ("0" * 32, PID),              # all-zero trace-id
    "00-%s-%s-01" % (TID, "0" * 16),              # all-zero parent-id
    "ff-%s-%s-01" % (TID, PID),                   # version ff
    "00-%s-%s-01-extra" % (TID, PID),             # fields after a version 00 value
    "00-%s-%s-1" % (TID, PID),                    # short flags
    "00-%s-%s-01" % (TID[:31], PID),              # short trace-id
    "00_%s-%s-01" % (TID, PID),                   # bad separator
    "cc-%s-%s-01.future" % (TID, PID),            # future version, flags not followed by '-'
    "garbage",
]


class TraceTest(VeerTestCase):
    def start(self, trace="", **kw):
        self.b = self.backend("b")
        top = 'access_log = "{tmp}/access.log";\n' + trace
        self.v = self.veer(quick_config([("b", self.b.address)], extra_top=top), **kw)
        self.c = self.client(self.v.port)

    def send(self, path, fields=()):
        """GET path with the given (name, value) fields, repeated names kept; the backend's view."""
        n = len(self.b.requests)
        head = "GET %s HTTP/1.1\r\nHost: test\r\n" % path
        head += "".join("%s: %s\r\n" % f for f in fields) + "\r\n"
        self.c.send(head.encode())
        r = self.c.response()
        self.assertEqual(r.status, 200, r.body[:200])
        wait_for(lambda: len(self.b.requests) > n, what="the backend to see %s" % path)
        return self.b.requests[-1]

    def records(self, count):
        """The access log's records by path, once it has count lines."""
        path = os.path.join(self.v.tmp, "access.log")

        def lines():
            if not os.path.exists(path):
                return None
            with open(path) as f:
                got = [json.loads(x) for x in f.read().splitlines()]
            return got if len(got) >= count else None
        return {r["path"]: r for r in wait_for(lines, what="%d access log lines" % count)}

    def test_valid_traceparent_and_tracestate_are_forwarded_unchanged(self):
        self.start()
        future = "cc-%s-%s-01-what-the-future-will-be-like" % (TID, PID)
        sent = {
            "/one": [("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")],
            "/two": [("TraceParent", VALID.replace("-01", "-00")),
                     ("tracestate", "rojo=00f067aa0ba902b7"), ("X-Other", "x"),
                     ("tracestate", "congo=t61rcWkgMzE")],
            "/future": [("traceparent", future)],
            "/flags": [("traceparent", VALID.replace("-01", "-09"))],
        }
        for path, fields in sent.items():
            req = self.send(path, fields)
            tp = [v for k, v in fields if k.lower() == "traceparent"][0]
            self.assertEqual(req.header_all("traceparent"), [tp], path)
            self.assertEqual(req.header_all("tracestate"),
                             [v for k, v in fields if k == "tracestate"], path)
        recs = self.records(len(sent))
        for path in sent:
            self.assertEqual(recs[path]["trace_id"], TID, recs[path])
        self.v.stop()

    def test_a_request_without_one_starts_a_trace(self):
        self.start()
        forwarded = {}
        for i in range(20):
            # A tracestate without a traceparent belongs to no trace: it goes too.
            fields = [("tracestate", "congo=t61rcWkgMzE")] if i % 2 else []
            req = self.send("/new/%d" % i, fields)
            tps = req.header_all("traceparent")
            self.assertEqual(len(tps), 1, tps)
            m = NEW.match(tps[0])
            self.assertIsNotNone(m, tps[0])
            self.assertEqual(m.group(3), "00", "not sampled unless configured")
            self.assertNotEqual(m.group(1), "0" * 32)
            self.assertNotEqual(m.group(2), "0" * 16)
            self.assertEqual(req.header_all("tracestate"), [])
            forwarded["/new/%d" % i] = m.groups()
        self.assertEqual(len({t for t, _, _ in forwarded.values()}), 20, "trace-ids repeat")
        self.assertEqual(len({p for _, p, _ in forwarded.values()}), 20, "parent-ids repeat")
        recs = self.records(20)
        for path, (tid, _, _) in forwarded.items():
            self.assertEqual(recs[path]["trace_id"], tid, "the access log has the trace-id sent")
        self.v.stop()

    def test_malformed_and_repeated_traceparents_are_replaced(self):
        self.start()
        cases = [[("traceparent", bad), ("tracestate", "congo=t61rcWkgMzE")]
                 for bad in MALFORMED]
        # Two fields, even two valid ones, are not one traceparent.
        cases.append([("traceparent", VALID), ("traceparent", VALID),
                      ("tracestate", "congo=t61rcWkgMzE")])
        cases.append([("traceparent", VALID), ("traceparent", "garbage")])
        tids = {}
        for i, fields in enumerate(cases):
            path = "/bad/%d" % i
            req = self.send(path, fields)
            tps = req.header_all("traceparent")
            self.assertEqual(len(tps), 1, "%s: %r" % (fields, tps))
            for k, v in fields:
                if k == "traceparent":
                    self.assertNotEqual(tps[0], v, "forwarded as is: %r" % fields)
            m = NEW.match(tps[0])
            self.assertIsNotNone(m, tps[0])
            self.assertNotEqual(m.group(1), TID, "the trace was not restarted")
            self.assertEqual(m.group(3), "00")
            self.assertEqual(req.header_all("tracestate"), [], "the old trace's tracestate went")
            tids[path] = m.group(1)
        recs = self.records(len(cases))
        for path, tid in tids.items():
            self.assertEqual(recs[path]["trace_id"], tid)
        self.v.stop()

    def test_sampled_sets_the_flag_of_new_traces_only(self):
        self.start("trace_context = { sampled = true; };\n")
        m = NEW.match(self.send("/new").header("traceparent"))
        self.assertIsNotNone(m)
        self.assertEqual(m.group(3), "01")
        unsampled = VALID.replace("-01", "-00")
        self.assertEqual(self.send("/kept", [("traceparent", unsampled)]).header_all("traceparent"),
                         [unsampled])
        self.v.stop()

    def test_generate_off_adds_nothing_but_still_drops_malformed(self):
        self.start("trace_context = { generate = false; };\n")
        req = self.send("/none", [("tracestate", "congo=t61rcWkgMzE")])
        self.assertEqual(req.header_all("traceparent"), [])
        self.assertEqual(req.header_all("tracestate"), ["congo=t61rcWkgMzE"])
        req = self.send("/valid", [("traceparent", VALID), ("tracestate", "congo=1")])
        self.assertEqual(req.header_all("traceparent"), [VALID])
        self.assertEqual(req.header_all("tracestate"), ["congo=1"])
        req = self.send("/bad", [("traceparent", MALFORMED[0]), ("tracestate", "congo=1")])
        self.assertEqual(req.header_all("traceparent"), [])
        self.assertEqual(req.header_all("tracestate"), [])
        recs = self.records(3)
        self.assertEqual([recs[p]["trace_id"] for p in ("/none", "/valid", "/bad")], ["", TID, ""])
        self.v.stop()

    def test_a_held_request_keeps_the_trace_it_started(self):
        """A request held by maintenance --hold goes through the modules again
        at every publish: the trace it started stays the one forwarded and
        logged, however often it comes back."""
        self.start('admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n',
                   workers=1)
        http = admin_http_port(self.v)

        def ctl(*args):
            p = veerctl(self.v.admin_socket, *args)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            return p.stdout

        ctl("maintenance", "on", "api", "--hold", "60s")
        self.c.send(b"GET /held HTTP/1.1\r\nHost: test\r\n\r\n")
        wait_for(lambda: scrape(http).value("veer_requests_held") == 1, what="the request held")
        for i in range(8):
            parse_ok(ctl("set", "weight", "api/b", str(50 + i)))
        ctl("maintenance", "off", "api")
        r = self.c.response()
        self.assertEqual(r.status, 200, r.body[:200])
        tps = self.b.requests[-1].header_all("traceparent")
        self.assertEqual(len(tps), 1, tps)
        m = NEW.match(tps[0])
        self.assertIsNotNone(m, tps[0])
        self.assertEqual(self.records(1)["/held"]["trace_id"], m.group(1))
        self.v.stop()

    def test_trace_context_keys_are_checked(self):
        base = ('listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
                'pools = ( { name = "api"; backends = ( { name = "a"; '
                'address = "127.0.0.1:9001"; } ); } );\n')
        rc, err, path = veer_check_config(base + "trace_context = { generate = false; sampled = true; };\n")
        self.addCleanup(os.unlink, path)
        self.assertEqual(rc, 0, err)
        for bad in ("trace_context = {\n  generate = true;\n  sample = true;\n};\n",
                    "trace_context = {\n  generate = true;\n  sampled = \"yes\";\n};\n",
                    "trace_context = {\n  generate = true;\n  sampled = 1;\n};\n"):
            rc, err, path = veer_check_config(base + bad)
            self.addCleanup(os.unlink, path)
            self.assertEqual(rc, 1, bad)
            self.assertTrue(err.startswith("%s:5: " % path), "%r: %r" % (bad, err))


if __name__ == "__main__":
    unittest.main()
