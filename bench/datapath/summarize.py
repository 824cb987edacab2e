#!/usr/bin/env python3
"""Summarize bench/datapath/run.sh samples as Markdown.

Input: a TSV of `config  round  metric  value` lines. Output: medians per config, ratios of
medians to the baseline A with a bootstrap 95% CI over rounds, and the DESIGN.md §7 targets.
"""
import argparse
import datetime
import os
import platform
import random
import statistics
import sys

METRICS = [  # (key, column title, higher_is_better, format)
    ("rr_rate", "TCP_RR trans/s", True, "{:,.0f}"),
    ("rr_p50", "RR p50 µs", False, "{:.1f}"),
    ("rr_p99", "RR p99 µs", False, "{:.1f}"),
    ("crr_rate", "TCP_CRR conn/s", True, "{:,.0f}"),
    ("crr_p50", "CRR p50 µs", False, "{:.1f}"),
    ("crr_p99", "CRR p99 µs", False, "{:.1f}"),
    ("stream_gbps", "1 stream Gbit/s", True, "{:.2f}"),
    ("rr_agent_ms_per_k", "agent ms CPU / 1k RR", False, "{:.2f}"),
    ("crr_agent_ms_per_k", "agent ms CPU / 1k CRR", False, "{:.2f}"),
]
# DESIGN.md §7 / performance-anchors.md §9: ratio to bare veth (A).
TARGETS = {"rr_rate": (">=", 0.97), "rr_p99": ("<=", 1.05), "crr_rate": (">=", 0.95), "stream_gbps": (">=", 0.98)}
RATIO_COLS = [("rr_rate", "TCP_RR"), ("rr_p99", "RR p99 (lower=better)"), ("crr_rate", "TCP_CRR"),
              ("stream_gbps", "stream")]
NAMES = {
    "V": "bare veth pair, direct (no host)",
    "A": "bare veth via host (baseline)",
    "B": "membrane, L3/L4 policy",
    "C": "membrane, big maps",
    "D": "iptables, 10k rules",
}


def load(path):
    data = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4 or not parts[3]:
                continue
            c, r, m, v = parts
            data.setdefault(c, {}).setdefault(m, []).append(float(v))
    return data


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def ratio_ci(xs, base, iters=4000, seed=1):
    """Ratio of medians and a percentile-bootstrap 95% CI (rounds resampled independently)."""
    if not xs or not base:
        return float("nan"), None
    point = median(xs) / median(base)
    if len(xs) < 3 or len(base) < 3:
        return point, None
    rnd = random.Random(seed)
    rs = sorted(median(rnd.choices(xs, k=len(xs))) / median(rnd.choices(base, k=len(base)))
                for _ in range(iters))
    return point, (rs[int(0.025 * iters)], rs[int(0.975 * iters) - 1])


def passes(op, bound, value):
    return value >= bound if op == ">=" else value <= bound


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tsv")
    ap.add_argument("--configs", default="")
    ap.add_argument("--skipped", default="")
    ap.add_argument("--rounds", default="?")
    ap.add_argument("--seconds", default="?")
    ap.add_argument("--load-before", default="?")
    ap.add_argument("--load-after", default="?")
    ap.add_argument("--maps", default="")
    ap.add_argument("--iptables", default="iptables")
    ap.add_argument("--iptables-restore-ms", default="")
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--unpinned", action="store_true")
    ap.add_argument("--revision", default="")
    a = ap.parse_args()

    data = load(a.tsv)
    configs = [c for c in a.configs.split() if c in data] or sorted(data)
    out = []
    p = out.append
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    p(f"### Datapath benchmark, {now}")
    p("")
    p(f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, kernel {platform.release()}")
    if a.revision:
        p(f"- code: {a.revision}")
    pinning = ("server and client unpinned (the scheduler places them, next to the agents)" if a.unpinned else
               f"server pinned to CPU {a.server_cpu}, client to CPU {a.client_cpu}")
    p(f"- {a.rounds} interleaved round(s) x {a.seconds} s per test ({' '.join(configs)} per test, then the next test); "
      f"{pinning}")
    p(f"- load average (1/5/15 min) before: {a.load_before}; after: {a.load_after}")
    if a.skipped.strip():
        p(f"- **not measured: {a.skipped.strip()}** (see the run's warnings)")
    p("")
    p("Medians over rounds:")
    p("")
    p("| config | " + " | ".join(t for _, t, _, _ in METRICS) + " | n |")
    p("|---|" + "---:|" * (len(METRICS) + 1))
    for c in configs:
        cells = []
        for key, _, _, fmt in METRICS:
            xs = data[c].get(key, [])
            cells.append(fmt.format(median(xs)) if xs else "–")
        n = max((len(v) for v in data[c].values()), default=0)
        p(f"| {c}: {NAMES.get(c, c)} | " + " | ".join(cells) + f" | {n} |")
    p("")
    if "A" in data:
        p("Ratio of medians to A (bare veth via host); [bootstrap 95% CI over rounds]:")
        p("")
        p("| config | " + " | ".join(t for _, t in RATIO_COLS) + " |")
        p("|---|" + "---:|" * len(RATIO_COLS))
        for c in configs:
            if c == "A":
                continue
            cells = []
            for key, _ in RATIO_COLS:
                r, ci = ratio_ci(data[c].get(key, []), data["A"].get(key, []))
                if r != r:  # nan
                    cells.append("–")
                    continue
                s = f"{r * 100:.1f}%"
                if ci:
                    s += f" [{ci[0] * 100:.1f}–{ci[1] * 100:.1f}]"
                cells.append(s)
            p(f"| {c} | " + " | ".join(cells) + " |")
        p("| target for B, C (DESIGN.md §7) | " +
          " | ".join(f"{TARGETS[k][0]} {TARGETS[k][1] * 100:.0f}%" for k, _ in RATIO_COLS) + " |")
        p("")
        verdicts = []
        for c in ("B", "C"):
            if c not in data:
                continue
            for key, title in RATIO_COLS:
                op, bound = TARGETS[key]
                r, ci = ratio_ci(data[c].get(key, []), data["A"].get(key, []))
                if r != r:
                    continue
                point_ok = passes(op, bound, r)
                # A goal passes when the CI bound on the unfavourable side meets it.
                ci_ok = None if ci is None else passes(op, bound, ci[0] if op == ">=" else ci[1])
                status = "pass" if point_ok and ci_ok is not False else ("pass (point only, CI crosses)" if point_ok else "**below target**")
                if ci is None and point_ok:
                    status = "pass (point estimate; too few rounds for a CI)"
                verdicts.append(f"{c} {title}: {r * 100:.1f}% vs {op} {bound * 100:.0f}%: {status}")
        if verdicts:
            p("Targets: " + "; ".join(verdicts) + ".")
            p("")
        if "B" in data and "C" in data:
            cells = []
            for key, title in RATIO_COLS:
                r, ci = ratio_ci(data["C"].get(key, []), data["B"].get(key, []))
                if r == r:
                    cells.append(f"{title} {r * 100:.1f}%" + (f" [{ci[0] * 100:.1f}–{ci[1] * 100:.1f}]" if ci else ""))
            p("Big maps vs small (C / B): " + ", ".join(cells) + ".")
            p("")
    if a.maps and os.path.exists(a.maps):
        with open(a.maps) as f:
            p("Checks: " + "; ".join(l.strip() for l in f if l.strip()) + ".")
    if a.iptables_restore_ms and os.path.exists(a.iptables_restore_ms):
        with open(a.iptables_restore_ms) as f:
            ms = [int(x) for x in f.read().split()]
        if ms:
            p(f"D: `{a.iptables}-restore` of the rule set took {median(ms):.0f} ms (median of {len(ms)}).")
    # Every sample, so the spread behind each median is visible.
    rounds = max((len(v) for c in configs for v in data[c].values()), default=0)
    if rounds > 1:
        p("")
        p("All rounds (TCP_RR trans/s · TCP_CRR conn/s · stream Gbit/s):")
        p("")
        p("| config | " + " | ".join(f"round {i + 1}" for i in range(rounds)) + " |")
        p("|---|" + "---:|" * rounds)
        for c in configs:
            cells = []
            for i in range(rounds):
                vals = []
                for key, fmt in (("rr_rate", "{:,.0f}"), ("crr_rate", "{:,.0f}"), ("stream_gbps", "{:.1f}")):
                    xs = data[c].get(key, [])
                    vals.append(fmt.format(xs[i]) if i < len(xs) else "–")
                cells.append(" · ".join(vals))
            p(f"| {c} | " + " | ".join(cells) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
