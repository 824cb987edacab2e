#!/usr/bin/env python3
"""docs/api.md lists exactly the routes membraned registers (both ways).

The routes are read from the source (every `api_->route("M", "/path", ...)` and
`routeStream(...)` call under src/daemon/), the documented ones from the first
column of docs/api.md's "Paths" table (`METHOD /path`). A route added without
documenting it, or a documented route that no longer exists, fails this test
with the list of differences. Pure file parsing: no root, no agent.
"""
import os
import pathlib
import re
import sys

root = pathlib.Path(os.environ.get("MEMBRANE_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))

registered = set()
for src in sorted((root / "src" / "daemon").glob("*.cc")):
    text = src.read_text()
    for m in re.finditer(r'route(?:Stream)?\(\s*"([A-Z]+)"\s*,\s*"(/[^"]*)"', text):
        registered.add(f"{m.group(1)} {m.group(2)}")

documented = set()
api = (root / "docs" / "api.md").read_text()
for line in api.splitlines():
    m = re.match(r'^\|\s*`([A-Z]+) (/v1/[^` ]*)`\s*\|', line)
    if m:
        documented.add(f"{m.group(1)} {m.group(2)}")

ok = True
if len(registered) < 20:
    print(f"only {len(registered)} routes found in src/daemon/*.cc: the route regex no longer matches the source")
    ok = False
for r in sorted(registered - documented):
    print(f"route {r} is registered in src/daemon but not documented in docs/api.md (add a row to the Paths table)")
    ok = False
for r in sorted(documented - registered):
    print(f"docs/api.md documents {r}, but no route of src/daemon registers it (remove or fix the row)")
    ok = False
if ok:
    print(f"docs/api.md documents all {len(registered)} routes of src/daemon")
sys.exit(0 if ok else 1)
