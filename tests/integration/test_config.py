"""Command line and configuration checking: `veer -t -c FILE` accepts the
shipped configs and reports each error as FILE:LINE: message, exit 1."""

import os
import subprocess
import unittest

from veertest import DEADLINE, ROOT, VEER_BIN, VeerTestCase, veer_check_config

GOOD_POOL = '''pools = ( { name = "api";
  backends = ( { name = "a"; address = "127.0.0.1:9001"; } );
} );
'''

# Each bad config, and the line its error must name.
BAD_CONFIGS = {
    "unknown top-level key": ('''workers = 1;
listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
frobnicate = true;
''' + GOOD_POOL, 3),
    "unknown key in a backend": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
pools = ( { name = "api";
  backends = (
    { name = "a"; address = "127.0.0.1:9001"; },
    { name = "b"; address = "127.0.0.1:9002"; wieght = 5; }
  );
} );
''', 5),
    "bad backend address": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
pools = ( { name = "api";
  backends = (
    { name = "a";
      address = "not-an-address"; }
  );
} );
''', 5),
    "bad listen address": ('''listen = (
  { address = "127.0.0.1:99999"; pool = "api"; }
);
''' + GOOD_POOL, 2),
    "weight over 1000": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
pools = ( { name = "api";
  backends = (
    { name = "a"; address = "127.0.0.1:9001"; weight = 1000; },
    { name = "b"; address = "127.0.0.1:9002"; weight = 1001; }
  );
} );
''', 5),
    "listener naming an unknown pool": ('''workers = 1;

listen = (
  { address = "127.0.0.1:0"; pool = "api"; },
  { address = "127.0.0.1:0"; pool = "nope"; }
);
''' + GOOD_POOL, 5),
    "duplicate backend name": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
pools = ( { name = "api";
  backends = (
    { name = "a"; address = "127.0.0.1:9001"; },
    { name = "b"; address = "127.0.0.1:9002"; },
    { name = "a"; address = "127.0.0.1:9003"; }
  );
} );
''', 6),
    "header_bytes past 1 MiB (a head buffer's 32-bit size could wrap)": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
limits = {
  request_line_bytes = 1048576;
  header_bytes = 2147483647;
};
''' + GOOD_POOL, 4),
    "wrong type": ('''workers = "two";
listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
''' + GOOD_POOL, 1),
    "syntax error": ('''listen = ( { address = "127.0.0.1:0"; pool = "api"; } );
workers = = 2;
''' + GOOD_POOL, 2),
}


class ConfigCheckTest(VeerTestCase):
    def check(self, path):
        return subprocess.run([VEER_BIN, "-t", "-c", path], capture_output=True, text=True,
                              timeout=DEADLINE)

    def test_shipped_configs_are_valid(self):
        for name in ("veer.conf", "demo.conf"):
            with self.subTest(name):
                p = self.check(os.path.join(ROOT, "conf", name))
                self.assertEqual(p.returncode, 0, p.stderr)

    def test_bad_configs_report_file_and_line(self):
        for what, (text, line) in BAD_CONFIGS.items():
            with self.subTest(what):
                rc, err, path = veer_check_config(text)
                self.addCleanup(os.unlink, path)
                self.assertEqual(rc, 1, err)
                first = err.splitlines()[0] if err else ""
                self.assertTrue(first.startswith("%s:%d: " % (path, line)),
                                "expected %s:%d: ..., got %r" % (path, line, err))
                self.assertGreater(len(first), len("%s:%d: " % (path, line)))

    def test_missing_config_file_is_an_error(self):
        p = self.check("/nonexistent/veer.conf")
        self.assertEqual(p.returncode, 1)
        self.assertIn("/nonexistent/veer.conf", p.stderr)

    def test_help_prints_usage(self):
        p = subprocess.run([VEER_BIN, "-h"], capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 0)
        self.assertIn("usage:", p.stdout)
        self.assertIn("-c FILE", p.stdout)
        self.assertIn("-t", p.stdout)

    def test_bad_config_exits_without_serving(self):
        text, line = BAD_CONFIGS["unknown key in a backend"]
        v = self.veer(text, check_ready=False)  # writes "workers = 2;" above the text
        rc = v.proc.wait(DEADLINE)
        v._reader.join(DEADLINE)
        self.assertEqual(rc, 1)
        log = "\n".join(v.log())
        self.assertIn("%s:%d: " % (v.config_path, line + 1), log)  # Veer() adds a line on top
        self.assertNotIn("listening on", log)
        self.assertNotIn("ready", log)
        self.assertEqual(v.ports, [])


if __name__ == "__main__":
    unittest.main()
