#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/stepstat.py: where a message's time goes, from two scrapes of
sluiced's /metrics (before and after a load): per step of
sluice_step_seconds, the samples, the mean and the p50/p90/p99 estimated
from the buckets as Prometheus' histogram_quantile does (linear inside the
bucket that holds the rank).

    stepstat.py BEFORE AFTER [--json] [--label TEXT]

Prints one markdown table (or one JSON object: step -> numbers, ms)."""
import argparse
import json
import math
import re
import sys

STEPS = ["read", "parse", "queue", "commit", "reply", "schedule", "deliver",
         "outcome"]
LINE = re.compile(r'^sluice_step_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)$')


def scrape(path):
    """{step: {"le": [(bound, cumulative)], "sum": s, "count": n}}"""
    out = {}
    with open(path) as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m:
                continue
            kind, labels, value = m.groups()
            lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            st = out.setdefault(lab["step"], {"le": [], "sum": 0.0,
                                              "count": 0.0})
            if kind == "bucket":
                le = math.inf if lab["le"] == "+Inf" else float(lab["le"])
                st["le"].append((le, float(value)))
            else:
                st[kind] = float(value)
    return out


def delta(a, b):
    """b - a, step by step."""
    out = {}
    for step, sb in b.items():
        sa = a.get(step, {"le": [(le, 0.0) for le, _ in sb["le"]],
                          "sum": 0.0, "count": 0.0})
        ca = dict(sa["le"])
        out[step] = {"le": [(le, c - ca.get(le, 0.0)) for le, c in sb["le"]],
                     "sum": sb["sum"] - sa["sum"],
                     "count": sb["count"] - sa["count"]}
    return out


def quantile(st, q):
    n = st["count"]
    if n <= 0:
        return None
    rank = q * n
    lo, prev = 0.0, 0.0
    for le, cum in st["le"]:
        if cum >= rank:
            if math.isinf(le):
                return lo      # past the last bound: say the bound
            inside = cum - prev
            frac = (rank - prev) / inside if inside > 0 else 0.0
            return lo + (le - lo) * frac
        lo, prev = le, cum
    return lo


def summary(d):
    res = {}
    for step in STEPS:
        st = d.get(step)
        if not st or st["count"] <= 0:
            continue
        ms = lambda v: None if v is None else round(v * 1000, 3)
        res[step] = {"n": int(st["count"]),
                     "mean_ms": ms(st["sum"] / st["count"]),
                     "p50_ms": ms(quantile(st, 0.50)),
                     "p90_ms": ms(quantile(st, 0.90)),
                     "p99_ms": ms(quantile(st, 0.99))}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    res = summary(delta(scrape(a.before), scrape(a.after)))
    if a.json:
        print(json.dumps(res))
        return
    print("| %sstep | samples | mean ms | p50 ms | p90 ms | p99 ms |" %
          ("load | " if a.label else ""))
    print("|%s---|---|---|---|---|---|" % ("---|" if a.label else ""))
    for step, r in res.items():
        print("| %s%s | %d | %s | %s | %s | %s |" % (
            a.label + " | " if a.label else "", step, r["n"], r["mean_ms"],
            r["p50_ms"], r["p90_ms"], r["p99_ms"]))


if __name__ == "__main__":
    sys.exit(main())
