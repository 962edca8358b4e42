#!/usr/bin/python3
"""bench/list_load.py: `sluice queue list --json` on a big queue while mail
flows in, and what the listings cost the accept rate.

Given a running sluiced (its SMTP port and its config), REPS rounds of two
runs of `sluice blast` (SESSIONS sessions, SIZE bytes, connection reuse,
MESSAGES messages each), in turn:

  A  the blast alone;
  B  the same blast while `sluice -c CONF queue list --json` runs over and
     over into a file (a new listing as soon as one ends), each timed: to
     its first message (the first '{"mid"' on its standard output) and to
     its end.

The accept rate is blast's own (messages / its elapsed time); A and B
alternate so that whatever else the machine does weighs on both alike, and
the medians are compared. The first listing of each B run must parse as one
JSON array of at least --min messages, every MID once. Prints one JSON
object.
"""
import argparse
import json
import os
import statistics
import subprocess
import threading
import time


def blast(a):
    r = subprocess.run([a.sluice, "blast", "--server",
                        f"127.0.0.1:{a.smtp}", "--sessions", str(a.sessions),
                        "--messages", str(a.messages), "--size", a.size,
                        "--domains", "100", "--json"],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"list_load.py: blast failed: {r.stderr}")
    out = json.loads(r.stdout)
    if out["failed"] or out["rejected"]:
        raise SystemExit(f"list_load.py: blast: {out}")
    return out["msgs_per_s"]


def listing(a, path):
    """One listing into path: (seconds to the first message, to the end)."""
    t0 = time.monotonic()
    p = subprocess.Popen([a.sluice, "-c", a.conf, "queue", "list",
                          "--json"], stdout=subprocess.PIPE)
    first, tail = None, b""
    with open(path, "wb") as f:
        while True:
            chunk = p.stdout.read1(1 << 20)
            if not chunk:
                break
            if first is None and b'{"mid"' in tail + chunk:
                first = time.monotonic() - t0
            tail = chunk[-8:]
            f.write(chunk)
    if p.wait() != 0:
        raise SystemExit("list_load.py: sluice queue list failed")
    return first, time.monotonic() - t0


class Lister(threading.Thread):
    """Listings back to back until stopped; keeps the first one's file."""

    def __init__(self, a, keep):
        super().__init__(daemon=True)
        self.a, self.keep = a, keep
        self.stop = False
        self.runs = []

    def run(self):
        scratch = self.keep + ".more"
        while not self.stop:
            path = self.keep if not self.runs else scratch
            self.runs.append(listing(self.a, path))
        if os.path.exists(scratch):
            os.unlink(scratch)


def check(path, least):
    with open(path) as f:
        msgs = json.load(f)
    mids = [m["mid"] for m in msgs]
    if len(set(mids)) != len(mids):
        raise SystemExit("list_load.py: a MID listed twice")
    if len(mids) < least:
        raise SystemExit(f"list_load.py: {len(mids)} messages listed, "
                         f"expected at least {least}")
    return len(mids), os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--conf", required=True)
    ap.add_argument("--smtp", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--messages", type=int, default=150000)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--size", default="10K")
    ap.add_argument("--min", type=int, default=0)
    a = ap.parse_args()

    alone, during, listings, checked = [], [], [], []
    for i in range(a.reps):
        alone.append(blast(a))
        keep = os.path.join(a.out, f"list{i}.json")
        lister = Lister(a, keep)
        lister.start()
        during.append(blast(a))
        lister.stop = True
        lister.join()
        listings += lister.runs
        checked.append(check(keep, a.min))
        os.unlink(keep)
    firsts = [f for f, _ in listings if f is not None]
    drop = 100 * (1 - statistics.median(during) / statistics.median(alone))
    print(json.dumps({
        "accept_alone": [round(x) for x in alone],
        "accept_listing": [round(x) for x in during],
        "drop_pct": round(drop, 1),
        "listings": len(listings),
        "first_message_s_max": round(max(firsts), 3),
        "list_s": [round(t, 1) for _, t in listings],
        "checked": [{"messages": n, "bytes": b} for n, b in checked],
    }))


if __name__ == "__main__":
    main()
