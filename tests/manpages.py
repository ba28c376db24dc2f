#!/usr/bin/env python3
"""The man pages document everything the code accepts.

- veer.conf(5) names every configuration key in bold by its dotted path
  (*pools.health.rise*): the keys are read from the parser's own tables,
  the struct conf_field arrays of proxy/core/conf.c and of each module's
  struct conf_section, following CF_GROUP rows and the tables a CF_CUSTOM
  row's parse function (or what it calls) walks.
- veerctl(8) quotes every admin command's usage from proxy/core/cmd.c's
  command table verbatim, and names veerctl's own -s flag.
- veer(8) names every flag of main.c's getopt string (*-c*, *-t*, ...).

So a key, command or flag added without its documentation fails here.
Prints each omission and exits 1; prints "manpages: ok" and the counts
otherwise. With --list, prints the keys and usages it found and exits 0.
"""
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
os.chdir(root)
MAN = "conf/man"

ROW = re.compile(
    r"CF_GROUP\(\s*struct\s+\w+\s*,\s*(?P<gkey>\w+)\s*,\s*(?P<gtab>\w+)\s*\)"
    r"|CF_(?:REQ_)?CUSTOM\(\s*\"(?P<ckey>\w+)\"\s*,\s*(?P<cfn>\w+)\s*\)"
    r"|CF_(?:INT|INT64|BOOL|STR|REQ_STR|STRS)\(\s*struct\s+\w+\s*,\s*(?P<key>\w+)"
    r"|\{\s*\.name\s*=\s*\"(?P<nkey>\w+)\"")
TABLE = re.compile(r"^(?:static\s+)?const struct conf_field (\w+)\[\]\s*=\s*\{(.*?)^\};",
                   re.S | re.M)
FUNC = re.compile(r"^(?:static\s+)?[A-Za-z_][\w \*]*?\b(\w+)\s*\([^;{]*?\)\s*\n\{(.*?)^\}",
                  re.S | re.M)
SECTION = re.compile(r"\.conf\s*=\s*\{(.*?)\}", re.S)


class Source:
    """One C file's tables (name -> rows) and functions (name -> body)."""

    def __init__(self, path):
        text = open(path).read()
        self.path = path
        self.tables = {m.group(1): list(ROW.finditer(m.group(2))) for m in TABLE.finditer(text)}
        self.funcs = {m.group(1): m.group(2) for m in FUNC.finditer(text)}
        self.text = text

    def tables_of(self, fn, seen=None):
        """The tables a parse function walks, directly or through the functions it calls."""
        seen = set() if seen is None else seen
        if fn in seen or fn not in self.funcs:
            return []
        seen.add(fn)
        out = []
        for ident in re.findall(r"\b\w+\b", self.funcs[fn]):
            if ident in self.tables and ident not in out:
                out.append(ident)
            elif ident in self.funcs and ident != fn:
                out += [t for t in self.tables_of(ident, seen) if t not in out]
        return out

    def walk(self, table, prefix, out, stack=()):
        """Every key of table under prefix, groups and leaves, as dotted paths."""
        if table in stack:
            return
        for m in self.tables[table]:
            key = m.group("gkey") or m.group("ckey") or m.group("key") or m.group("nkey")
            path = prefix + key
            if path not in out:
                out.append(path)
            subs = []
            if m.group("gtab"):
                subs = [m.group("gtab")]
            elif m.group("cfn"):
                subs = self.tables_of(m.group("cfn"))
            for t in subs:
                self.walk(t, path + ".", out, stack + (table,))


def config_keys():
    keys = []
    conf = Source("proxy/core/conf.c")
    if "top_fields" not in conf.tables:
        sys.exit("manpages: no top_fields table in proxy/core/conf.c (the parser changed?)")
    conf.walk("top_fields", "", keys)
    for f in sorted(os.listdir("modules")):
        if not f.endswith(".c"):
            continue
        mod = Source(os.path.join("modules", f))
        for sec in SECTION.finditer(mod.text):
            tab = re.search(r"\.keys\s*=\s*(\w+)", sec.group(1))
            group = re.search(r"\.group\s*=\s*\"(\w+)\"", sec.group(1))
            if tab is None or tab.group(1) not in mod.tables:
                continue
            mod.walk(tab.group(1), group.group(1) + "." if group else "", keys)
    return keys


def commands():
    text = open("proxy/core/cmd.c").read()
    table = re.search(r"cmd_defs\[\]\s*=\s*\{(.*?)^\};", text, re.S | re.M)
    if table is None:
        sys.exit("manpages: no cmd_defs table in proxy/core/cmd.c (the parser changed?)")
    usages = []
    for m in re.finditer(r"\{\s*CMD_\w+\s*,\s*\"[^\"]*\"\s*,\s*(?:\"[^\"]*\"|NULL)\s*,\s*"
                         r"((?:\"[^\"]*\"\s*)+),", table.group(1)):
        usages.append("".join(re.findall(r"\"([^\"]*)\"", m.group(1))))
    return usages


def veer_flags():
    text = open("proxy/main.c").read()
    m = re.search(r"getopt\(\s*argc\s*,\s*argv\s*,\s*\"([^\"]+)\"", text)
    if m is None:
        sys.exit("manpages: no getopt string in proxy/main.c")
    return ["-" + ch for ch in m.group(1) if ch != ":"]


def page(name):
    return open(os.path.join(MAN, name)).read()


def main():
    keys, usages, flags = config_keys(), commands(), veer_flags()
    if "--list" in sys.argv:
        print("\n".join(keys + usages + flags))
        return 0
    # The parser's tables were found, not silently skipped.
    for must in ("listen.address", "pools.backends.name", "timeouts.connect_ms"):
        if must not in keys:
            sys.exit(f"manpages: key {must} not found in the parser's tables (extraction broken)")
    if len(usages) < 20:
        sys.exit(f"manpages: only {len(usages)} commands found in cmd_defs (extraction broken)")
    missing = []
    conf5, ctl8, veer8 = page("veer.conf.5.scd"), page("veerctl.8.scd"), page("veer.8.scd")
    for k in keys:
        if f"*{k}*" not in conf5:
            missing.append(f"veer.conf(5): key {k} (write it as *{k}*)")
    for u in usages:
        if u not in ctl8:
            missing.append(f"veerctl(8): command usage '{u}' (quote it verbatim)")
    for f in flags:
        if f"*{f}*" not in veer8:
            missing.append(f"veer(8): flag {f} (write it as *{f}*)")
    if "*-s*" not in ctl8:
        missing.append("veerctl(8): flag -s")
    for m in missing:
        print("manpages: missing", m)
    if missing:
        return 1
    print(f"manpages: ok ({len(keys)} keys, {len(usages)} commands, {len(flags)} flags)")
    return 0


sys.exit(main())
