"""The test timeouts agree: no Check test may be given longer than the meson
timeout of its binary leaves it (else meson kills the binary and the hung test
is never named), and ./test.sh scales meson's and Check's timeouts alike.

    check_timeouts.py UNIT_DIR TEST_SH MESON_TIMEOUT CK_DEFAULT CK_MAX
"""
import glob
import os
import re
import sys


def main():
    unit_dir, test_sh, meson_timeout, ck_default, ck_max = sys.argv[1:6]
    meson_timeout, ck_default, ck_max = int(meson_timeout), int(ck_default), int(ck_max)
    errors = []
    if ck_default > ck_max:
        errors.append("CK_DEFAULT_TIMEOUT %d is over the largest Check timeout %d"
                      % (ck_default, ck_max))
    if meson_timeout <= ck_max:
        errors.append("meson's unit timeout %d s does not exceed the largest Check timeout %d s"
                      % (meson_timeout, ck_max))
    for path in sorted(glob.glob(os.path.join(unit_dir, "check_*.c"))):
        text = open(path).read()
        for m in re.finditer(r"tcase_set_timeout\s*\([^,]+,\s*(\d+)\s*\)", text):
            line = text.count("\n", 0, m.start()) + 1
            if int(m.group(1)) > ck_max:
                errors.append("%s:%d: tcase_set_timeout %s s is over %d s (unit_check_timeout_max"
                              " in tests/meson.build)" % (path, line, m.group(1), ck_max))
    sh = open(test_sh).read()
    for what in ("CK_TIMEOUT_MULTIPLIER=$timeout_mult", '--timeout-multiplier "$timeout_mult"'):
        if what not in sh:
            errors.append("%s: no %s (meson's and Check's timeouts must scale alike)"
                          % (test_sh, what))
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
