"""The status page in a real browser (headless Chromium over the DevTools
protocol), against a real veer with two groups and traffic going through it:
the page stays open while a scripted shift, a rollback, maintenance and a
rollout (started, then aborted) happen through veerctl; after each, once the
page drew a /status of that generation, what it drew is checked against
/status (share bar segments and their rendered widths, backend chips, the
pool's maintenance, the rollout panel and the thresholds on the canary's
sparklines) and a screenshot is taken (PNG files in a temporary directory,
kept when VEER_SCREENSHOTS names a directory to copy them to). A page opened
later draws the seconds before it was opened at once (/status?history=1).

Every wait is a condition with a deadline; the page's data-* attributes make
the checks exact."""
import base64
import json
import os
import re
import shutil
import tempfile
import unittest

from helpers import (HeadlessChromium, RoutedLoad, admin_http_port, chromium_binary,
                     chromium_dump_dom, http_get, listener_ports, parse_ok, status_doc, veerctl)
from veertest import Client, VeerTestCase, wait_for

# What the page drew, read from its DOM: per pool its maintenance flag, its
# bar's segments (group, data-share, style width, rendered fraction of the
# bar once the width transition is over) and its chips; the rollout panel; the
# generation of the /status it drew last.
READ_PAGE = r"""(function(){
  var b=document.body; /* null until the page is parsed */
  var out={generation:b&&+b.getAttribute('data-generation')||0,pools:{}};
  document.querySelectorAll('#pools > section').forEach(function(sec){
    var bar=sec.querySelector('.bar'),bw=bar.getBoundingClientRect().width,p={
      maintenance:sec.getAttribute('data-maintenance'),
      heading:sec.querySelector('h2').textContent,
      segments:[],legend:[],chips:[],rollout:null,thresholds:[],points:{}};
    bar.querySelectorAll('.seg').forEach(function(s){p.segments.push({
      group:s.getAttribute('data-group'),share:+s.getAttribute('data-share'),
      width:s.style.width,drawn:bw?s.getBoundingClientRect().width/bw:-1});});
    sec.querySelectorAll('.legend [data-group]').forEach(function(l){p.legend.push(
      [l.getAttribute('data-group'),+l.getAttribute('data-share'),l.textContent]);});
    sec.querySelectorAll('.chips .chip').forEach(function(c){p.chips.push({
      backend:c.getAttribute('data-backend'),state:c.getAttribute('data-state'),
      circuit:c.getAttribute('data-circuit'),draining:c.getAttribute('data-draining'),
      cls:c.className,text:c.textContent});});
    var ro=sec.querySelector('.ro');
    if(ro)p.rollout={state:ro.getAttribute('data-state'),step:+ro.getAttribute('data-step'),
      steps:+ro.getAttribute('data-steps'),verdict:ro.getAttribute('data-verdict'),
      marks:Array.prototype.map.call(ro.querySelectorAll('.steps li'),function(li){
        return [+li.getAttribute('data-share'),li.className];}),text:ro.textContent};
    sec.querySelectorAll('.group').forEach(function(g){
      g.querySelectorAll('svg.spark').forEach(function(s){
        p.points[g.getAttribute('data-group')+'/'+s.getAttribute('data-series')]=
          +s.getAttribute('data-points');
        var t=s.querySelector('.thr');
        if(t)p.thresholds.push([g.getAttribute('data-group'),s.getAttribute('data-series'),
          +t.getAttribute('data-threshold')]);});});
    out.pools[sec.getAttribute('data-pool')]=p;});
  return JSON.stringify(out);})()"""


def config(blue, green):
    return ("workers = 2;\ntimeouts = { quiet_ms = 100; };\n"
            'listen = ( { address = "127.0.0.1:0"; pool = "api"; } );\n'
            'admin = { socket = "{tmp}/admin.sock"; http = "127.0.0.1:0"; };\n'
            'pools = ( { name = "api"; backends = (\n'
            '  { name = "blue-1"; address = "%s"; weight = 3; group = "blue"; },\n'
            '  { name = "blue-2"; address = "%s"; weight = 3; group = "blue"; },\n'
            '  { name = "green-1"; address = "%s"; weight = 1; group = "green"; },\n'
            '  { name = "green-2"; address = "%s"; weight = 1; group = "green"; } );\n'
            '  shares = { blue = 75; green = 25; }; } );\n'
            % (blue.address, blue.address, green.address, green.address))


class StatusPageTest(VeerTestCase):
    """Pool api: blue-1, blue-2 (blue) and green-1, green-2 (green), 3:1, with
    traffic; two backends a group so that every shift passes the capacity
    guard (capacity_headroom 2)."""
    def setUp(self):
        super().setUp()
        if chromium_binary() is None:
            self.fail("chromium is not installed (Debian package chromium): the status page "
                      "cannot be checked in a real browser")
        self.shots = tempfile.mkdtemp(prefix="veer-statuspage-")
        self._cleanup.append(lambda: self.keep_shots())
        self.v = self.veer(config(self.backend("blue-1"), self.backend("green-1")))
        self.http = admin_http_port(self.v)
        self.port = listener_ports(self.v)["api"]

    def keep_shots(self):
        keep = os.environ.get("VEER_SCREENSHOTS")
        if keep:
            os.makedirs(keep, exist_ok=True)
            for f in os.listdir(self.shots):
                shutil.copy(os.path.join(self.shots, f), os.path.join(keep, f))
        shutil.rmtree(self.shots, ignore_errors=True)

    def ctl_ok(self, *args):
        p = veerctl(self.v.admin_socket, *args)
        self.assertEqual(p.returncode, 0, "veerctl %s: %r %r" % (" ".join(args), p.stdout,
                                                                   p.stderr))
        return parse_ok(p.stdout)

    def page(self, width=1000):
        browser = HeadlessChromium("http://127.0.0.1:%d/" % self.http)
        self._cleanup.append(browser.close)
        browser.call("Emulation.setDeviceMetricsOverride", width=width, height=1200,
                     deviceScaleFactor=1, mobile=width < 500)
        return browser

    def drawn(self, browser):
        return json.loads(browser.evaluate(READ_PAGE))

    def screenshot(self, browser, name):
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        with open(os.path.join(self.shots, name), "wb") as f:
            f.write(png)

    def settled(self, browser, gen):
        """Wait until the page drew a /status of generation gen (or later) and its
        share bar's width transition is over; then what it drew, and /status
        (which must be of the same generation: nothing changes meanwhile)."""
        last = [None]

        def ready():
            d = last[0] = self.drawn(browser)
            if d["generation"] < gen or "api" not in d["pools"]:
                return None
            segs = d["pools"]["api"]["segments"]
            if any(abs(s["drawn"] - s["share"] / 100.0) > 0.01 for s in segs):
                return None  # still sliding
            # A drain ends (DRAINING to DRAINED) without a new generation: the
            # page catches up at its next refresh.
            st = status_doc(self.http)
            api = [p for p in st["pools"] if p["name"] == "api"][0]
            if st["generation"] != d["generation"] or \
                    [c["state"] for c in d["pools"]["api"]["chips"]] != \
                    [b["state"] for b in api["backends"]]:
                return None
            return d, api
        try:
            return wait_for(ready, interval=0.05, what="the page to draw generation %d" % gen)
        except AssertionError as e:
            raise AssertionError("%s; the page drew last: %r" % (e, last[0])) from None

    def assert_matches(self, d, api):
        """What the page drew for pool api is what /status says."""
        p = d["pools"]["api"]
        self.assertEqual([(s["group"], s["share"], s["width"]) for s in p["segments"]],
                         [(g["name"], g["share"], "%d%%" % g["share"]) for g in api["groups"]])
        for s in p["segments"]:  # the rendered width, not only the style
            self.assertAlmostEqual(s["drawn"], s["share"] / 100.0, delta=0.01, msg=s)
        self.assertEqual([(n, sh) for n, sh, _ in p["legend"]],
                         [(g["name"], g["share"]) for g in api["groups"]])
        self.assertEqual([(c["backend"], c["state"], c["circuit"], c["draining"])
                          for c in p["chips"]],
                         [(b["name"], b["state"], b["circuit"], "true" if "drain" in b else "false")
                          for b in api["backends"]])
        for c in p["chips"]:
            self.assertIn(c["state"], c["cls"].split(), c)  # coloured by state
        self.assertEqual(p["maintenance"], "true" if api["maintenance"] else "false")
        if api["rollout"] is None:
            self.assertIsNone(p["rollout"])
        else:
            r = api["rollout"]
            self.assertEqual({k: p["rollout"][k] for k in ("state", "step", "steps", "verdict")},
                             {k: r[k] for k in ("state", "step", "steps", "verdict")})
        return p

    def test_shift_rollback_maintenance_and_rollout_while_the_page_is_open(self):
        load = RoutedLoad(self.port, n=2)
        self._cleanup.append(load.stop)
        browser = self.page()

        d, api = self.settled(browser, 1)
        p = self.assert_matches(d, api)
        self.assertEqual([s["share"] for s in p["segments"]], [75, 25])
        self.assertEqual([c["state"] for c in p["chips"]], ["READY"] * 4)
        self.screenshot(browser, "1-start.png")

        # The scripted shift: all green.
        ok = self.ctl_ok("shift", "api", "blue=0", "green=100")
        d, api = self.settled(browser, ok["gen"])
        p = self.assert_matches(d, api)
        self.assertEqual([s["share"] for s in p["segments"]], [0, 100])
        self.screenshot(browser, "2-shift-all-green.png")

        # Rollback: 3:1 again.
        ok = self.ctl_ok("rollback", "api")
        d, api = self.settled(browser, ok["gen"])
        p = self.assert_matches(d, api)
        self.assertEqual([s["share"] for s in p["segments"]], [75, 25])
        self.screenshot(browser, "3-rollback.png")

        # green-2 drained (the chip goes DRAINING, then DRAINED), put in
        # maintenance, then back to ready.
        ok = self.ctl_ok("drain", "api/green-2", "--wait")
        d, api = self.settled(browser, ok["gen"])
        p = self.assert_matches(d, api)
        self.assertEqual([c["state"] for c in p["chips"]], ["READY"] * 3 + ["DRAINED"])
        self.screenshot(browser, "3b-drained.png")
        ok = self.ctl_ok("set", "state", "api/green-2", "maint")
        d, api = self.settled(browser, ok["gen"])
        p = self.assert_matches(d, api)
        self.assertEqual([c["state"] for c in p["chips"]], ["READY"] * 3 + ["MAINT"])
        ok = self.ctl_ok("set", "state", "api/green-2", "ready")
        d, api = self.settled(browser, ok["gen"])
        self.assert_matches(d, api)

        # Maintenance with its Retry-After and hold.
        ok = self.ctl_ok("maintenance", "on", "api", "--retry-after", "30", "--hold", "2s")
        d, api = self.settled(browser, ok["gen"])
        self.assertEqual((api["maintenance_retry_after"], api["maintenance_hold_ms"]), (30, 2000))
        p = self.assert_matches(d, api)
        self.assertIn("maintenance", p["heading"])
        note = browser.evaluate("(function(){var n=document.querySelector('.maintnote');"
                                "return n&&[n.getAttribute('data-retry-after'),"
                                "n.getAttribute('data-hold-ms')];})()")
        self.assertEqual(note, ["30", "2000"])
        self.screenshot(browser, "4-maintenance.png")
        ok = self.ctl_ok("maintenance", "off", "api")
        d, api = self.settled(browser, ok["gen"])
        self.assert_matches(d, api)

        # A rollout of green: its steps, the current one, the thresholds on
        # green's error and p99 sparklines; then aborted: rolled back.
        self.ctl_ok("shift", "api", "blue=100", "green=0")
        ok = self.ctl_ok("rollout", "start", "api", "canary=green", "steps=10,50,100",
                         "interval=60s", "max-error-rate=50%", "max-p99=60s")
        d, api = self.settled(browser, ok["gen"])
        p = self.assert_matches(d, api)
        self.assertEqual(api["rollout_plan"]["step_shares"], [10, 50, 100])
        self.assertEqual(p["rollout"]["marks"], [[10, "current"], [50, "todo"], [100, "todo"]])
        self.assertIn("rollout of green: step 1/3", p["rollout"]["text"])
        # (Thresholds no busy machine reaches: the rollout must not roll back on its own.)
        self.assertEqual(sorted(p["thresholds"]), [["green", "error_rate", 0.5],
                                                   ["green", "p99_ms", 60000]])
        self.assertEqual([s["share"] for s in p["segments"]], [90, 10])
        self.screenshot(browser, "5-rollout-step-1.png")
        self.ctl_ok("rollout", "abort", "api")
        gen = status_doc(self.http)["generation"]
        d, api = self.settled(browser, gen)
        p = self.assert_matches(d, api)
        self.assertEqual(p["rollout"]["state"], "ended")
        self.assertRegex(p["rollout"]["verdict"], r"\Arolled back: ")
        self.assertEqual(p["thresholds"], [])  # drawn while it runs only
        self.assertEqual([s["share"] for s in p["segments"]], [100, 0])
        self.screenshot(browser, "6-rollout-aborted.png")

        # The sparklines have points (one per second since the page was opened
        # at least), and traffic went through all along.
        self.assertGreater(p["points"]["blue/rps"], 0, p["points"])
        load.stop()
        self.assertFalse([r for r in load.all_records() if r.status not in (200, 503)])
        self.assertEqual(len(os.listdir(self.shots)), 7)

    def test_a_page_opened_late_draws_the_seconds_before_it(self):
        """veer keeps the last 300 s: a page opened after 5 s of traffic draws
        those seconds at its first refresh, as many points as /status?history=1
        holds."""
        load = RoutedLoad(self.port, n=1)
        self._cleanup.append(load.stop)

        def history():
            status, _, body = http_get(self.http, "/status?history=1")
            self.assertEqual(status, 200)
            h = json.loads(body)["history"]
            g = h["pools"][0]["groups"][0]
            return h if len(g["rps"]) >= 5 and max(g["rps"]) > 0 else None
        h = wait_for(history, interval=0.1, what="5 seconds of history")
        self.assertEqual(h["pools"][0]["groups"][0]["first"], 1)
        self.assertEqual(h["capacity"], 300)
        dom = chromium_dump_dom("http://127.0.0.1:%d/" % self.http, virtual_time_ms=3000)
        m = re.search(r'<div class="group" data-group="blue">.*?data-series="rps" '
                      r'data-points="(\d+)"', dom, re.S)
        self.assertIsNotNone(m, dom[-3000:])
        self.assertGreaterEqual(int(m.group(1)), 5)
        load.stop()

    def test_shadow_traffic_and_a_shadow_phase_are_drawn(self):
        """The shadow traffic table: per pool and route, the mirrored count
        /status has (blue takes every request, green answers other than blue:
        every pair differs); a rollout in its shadow phase draws the phase's
        line."""
        self.ctl_ok("shift", "api", "blue=100", "green=0")
        self.ctl_ok("mirror", "api", "on", "group=green", "percent=100")
        c = Client(self.port)
        for i in range(20):
            r = c.request("GET", "/m/%d" % i)
            self.assertEqual(r.status, 200)
        c.sock.close()

        def mirrored():
            m = [x for x in status_doc(self.http)["mirror"] if x["pool"] == "api"]
            t = m[0]["routes"][0]["totals"] if m and m[0]["routes"] else None
            return t if t and t["mirrored"] == 20 else None
        t = wait_for(mirrored, interval=0.05, what="20 mirrored requests in /status")
        self.assertEqual(t["body_diff"] + t["status_diff"], 20)
        self.ctl_ok("rollout", "start", "api", "canary=green", "steps=50,100", "interval=60s",
                    "shadow=60s")
        dom = chromium_dump_dom("http://127.0.0.1:%d/" % self.http, virtual_time_ms=3000)
        self.assertIn("<h2>shadow traffic</h2>", dom)
        self.assertIsNotNone(re.search(r'data-mirror="api/" data-mirrored="(\d+)"', dom), dom[-3000:])
        self.assertGreaterEqual(int(re.search(r'data-mirror="api/" data-mirrored="(\d+)"',
                                              dom).group(1)), 20)
        self.assertIn('data-shadow="running"', dom)
        self.ctl_ok("rollout", "abort", "api")

    def test_readable_on_a_phone_dark_and_light(self):
        """At 375 px the page does not scroll sideways (the tables scroll in
        their own boxes); its colours follow prefers-color-scheme."""
        browser = self.page(width=375)
        d, api = self.settled(browser, 1)
        self.assert_matches(d, api)
        wide = browser.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(wide, 375)
        background = "getComputedStyle(document.body).backgroundColor"
        for scheme, color in (("light", "rgb(255, 255, 255)"), ("dark", "rgb(15, 18, 22)")):
            browser.call("Emulation.setEmulatedMedia",
                         features=[{"name": "prefers-color-scheme", "value": scheme}])
            wait_for(lambda: browser.evaluate(background) == color, interval=0.05,
                     what="the %s background" % scheme)
            self.screenshot(browser, "phone-%s.png" % scheme)


if __name__ == "__main__":
    unittest.main()
