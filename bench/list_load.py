#!/usr/bin/python3
"""bench/list_load.py: `sluice queue list --json` on a big queue while mail
flows in, and what the listing costs the accept rate.

Given a running sluiced (its SMTP port, its /metrics port and its config):

  1. `sluice blast` sends mail without pause (SESSIONS sessions, SIZE bytes,
     connection reuse), for the whole run;
  2. a sampler reads sluice_messages_received_total from /metrics every
     0.1 s;
  3. REPS times: IDLE seconds of load alone, then `sluice -c CONF queue list
     --json` into a file, timing its first message (the first '{"mid"' on
     its standard output) and its end; then IDLE seconds more;
  4. the load stops; each listing must parse as one JSON array of at least
     --min messages, every MID once.

The accept rate during a listing is the received counter's growth over the
listing's span; the rate without it is the mean of the same over the IDLE
windows just before and just after it (their first and last 0.5 s left
out), because the rate drifts as the queue grows. Prints one JSON object.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

SAMPLE_S = 0.1


class Sampler(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.samples = []
        self.stop = False

    def run(self):
        rx = re.compile(r"^sluice_messages_received_total (\S+)$", re.M)
        while not self.stop:
            t = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    m = rx.search(r.read().decode())
                if m:
                    self.samples.append((t, float(m.group(1))))
            except OSError:
                pass
            time.sleep(max(0, SAMPLE_S - (time.monotonic() - t)))

    def count_at(self, t):
        """The counter at time t, linearly between the samples around it."""
        s = self.samples
        for (t0, c0), (t1, c1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        raise ValueError(f"no samples around {t}")

    def rate(self, a, b):
        return (self.count_at(b) - self.count_at(a)) / (b - a)


def listing(args, path):
    """Run one listing into path; (start, first message, end) times."""
    t0 = time.monotonic()
    p = subprocess.Popen([args.sluice, "-c", args.conf, "queue", "list",
                          "--json"], stdout=subprocess.PIPE)
    first = None
    tail = b""
    with open(path, "wb") as f:
        while True:
            chunk = p.stdout.read1(1 << 20)
            if not chunk:
                break
            if first is None and b'{"mid"' in tail[-8:] + chunk:
                first = time.monotonic()
            tail = chunk[-8:]
            f.write(chunk)
    t1 = time.monotonic()
    rc = p.wait()
    if rc != 0:
        raise SystemExit(f"list_load.py: sluice queue list exited {rc}")
    return t0, first, t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--conf", required=True)
    ap.add_argument("--smtp", type=int, required=True)
    ap.add_argument("--metrics", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle", type=float, default=6)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--size", default="10K")
    ap.add_argument("--min", type=int, default=0)
    a = ap.parse_args()

    sampler = Sampler(a.metrics)
    sampler.start()
    blast = subprocess.Popen(
        [a.sluice, "blast", "--server", f"127.0.0.1:{a.smtp}", "--sessions",
         str(a.sessions), "--messages", "100000000", "--size", a.size,
         "--domains", "100"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    runs = []
    try:
        time.sleep(2)                       # warm up
        idle0 = time.monotonic()
        for i in range(a.reps):
            time.sleep(a.idle)
            path = os.path.join(a.out, f"list{i}.json")
            t0, first, t1 = listing(a, path)
            runs.append({"path": path, "before": (idle0 + 0.5, t0 - 0.5),
                         "t0": t0, "first": first, "t1": t1})
            idle0 = t1
        time.sleep(a.idle)
        for i, r in enumerate(runs):
            end = runs[i + 1]["t0"] if i + 1 < len(runs) else \
                time.monotonic()
            r["after"] = (r["t1"] + 0.5, end - 0.5)
        time.sleep(0.5)
    finally:
        blast.send_signal(signal.SIGTERM)
        blast.wait()
        sampler.stop = True
        sampler.join()
    out = []
    for r in runs:
        before = (sampler.rate(*r["before"]) + sampler.rate(*r["after"])) / 2
        during = sampler.rate(r["t0"], r["t1"])
        with open(r["path"]) as f:
            msgs = json.load(f)
        mids = [m["mid"] for m in msgs]
        if len(set(mids)) != len(mids):
            raise SystemExit("list_load.py: a MID listed twice")
        if len(mids) < a.min:
            raise SystemExit(f"list_load.py: {len(mids)} messages listed, "
                             f"expected at least {a.min}")
        out.append({
            "messages": len(mids),
            "bytes": os.path.getsize(r["path"]),
            "first_message_s": round(r["first"] - r["t0"], 3)
            if r["first"] else None,
            "list_s": round(r["t1"] - r["t0"], 2),
            "accept_without": round(before, 1),
            "accept_during": round(during, 1),
            "drop_pct": round(100 * (before - during) / before, 1)
            if before else None,
        })
        os.unlink(r["path"])
    print(json.dumps({"runs": out}))


if __name__ == "__main__":
    main()
