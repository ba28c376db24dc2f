#!/usr/bin/env python3
"""Every function a header of proxy/ declares is defined in the file the
header belongs to (house style: "a declaration lives in the header of the
file that defines it").

A header X.h (or X-i.h) belongs to X.c. A folder's internal header may
group declarations of several files: a comment line naming one file,
`/* drain.c */` or `/* drain.c: ... */`, starts that file's section, and
each declaration after it must be defined there. Declarations defined by no
.c (inline, or implemented elsewhere by design) are reported too.
Prints each mismatch and exits 1; prints "decls: ok" otherwise.
"""
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
os.chdir(root)

folders = ["proxy/core", "proxy/data", "proxy/control", "proxy/admin"]
sources = {}
for d in folders + ["proxy", "modules"]:
    for f in sorted(os.listdir(d)):
        if f.endswith(".c"):
            sources[os.path.join(d, f)] = open(os.path.join(d, f)).read()

# A non-static function definition: a line starting with its return type, the
# name, the parameters, then a line holding "{" (kernel brace style).
DEF = re.compile(r"^(?!static\b)[A-Za-z_][\w \*]*?\b(\w+)\s*\([^;{]*?\)[ \t]*"
                 r"(?:__attribute__\(\([^;{\n]*\)\)[ \t]*)?\n\{", re.M)
definitions = {}
for f, text in sources.items():
    for m in DEF.finditer(text):
        definitions.setdefault(m.group(1), []).append(f)


def defined_in(name):
    return definitions.get(name, [])


def strip(text):
    """Comments out (keeping section markers), static inline bodies out."""
    text = re.sub(r"/\*\s*([\w-]+\.c)\b[^*]*?\*/", r"@section \1@", text)
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"static inline[^;{]*\{.*?\n\}", "", text, flags=re.S)
    return text


DECL = re.compile(r"^(?!typedef|static|extern|struct \w+ \{|#)[A-Za-z_][\w \*]*?\b(\w+)\s*\(", re.M)

bad = 0
for d in folders:
    for h in sorted(os.listdir(d)):
        if not h.endswith(".h"):
            continue
        path = os.path.join(d, h)
        own = os.path.join(d, re.sub(r"(-i)?\.h$", ".c", h))
        section = own
        for line in strip(open(path).read()).split("\n"):
            m = re.search(r"@section ([\w-]+\.c)@", line)
            if m:
                section = os.path.join(d, m.group(1))
                continue
            m = DECL.match(line)
            if not m or line.rstrip().endswith("{"):
                continue
            name = m.group(1)
            where = defined_in(name)
            if where != [section]:
                print("decls: %s declares %s, defined in %s (expected %s)"
                      % (path, name, ", ".join(where) or "no .c", section))
                bad = 1
if bad:
    print("decls: FAILED (see above)", file=sys.stderr)
    sys.exit(1)
print("decls: ok")
