#!/usr/bin/env python3
"""scripts/demo.sh helper: the demo's drop and L7 counters read from membraned's own /metrics text
(stdin), printed as NAME=VALUE lines, so the demo can check that Prometheus shows exactly what the
agent counted."""
import re
import sys

WANT = {
    "drops_ingress_policy": ("cilium_drop_count_total", {"direction": "INGRESS", "reason": "Policy denied"}),
    "drop_bytes_ingress_policy": ("cilium_drop_bytes_total", {"direction": "INGRESS", "reason": "Policy denied"}),
    "drops_egress_spoofed": ("cilium_drop_count_total", {"direction": "EGRESS", "reason": "Invalid source ip"}),
    "l7_received": ("cilium_policy_l7_total", {"rule": "received"}),
    "l7_forwarded": ("cilium_policy_l7_total", {"rule": "forwarded"}),
    "l7_denied": ("cilium_policy_l7_total", {"rule": "denied"}),
}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

total = {k: 0.0 for k in WANT}
for line in sys.stdin:
    m = SAMPLE.match(line.strip())
    if not m:
        continue
    labels = dict(LABEL.findall(m.group(3) or ""))
    for key, (name, sel) in WANT.items():
        if m.group(1) == name and all(labels.get(a) == b for a, b in sel.items()):
            total[key] += float(m.group(4))
for key, v in total.items():
    print(f"{key}={int(v) if v == int(v) else v}")
