#!/usr/bin/python3
"""bench/dashboard.py: the measurements of bench/dashboard, against a
sluiced that bench/dashboard started on a large deferred queue.

  dashboard.py --http PORT --token FILE --smtp PORT --sluice BIN
               --sink-counts FILE [--reps N] [--messages M] [--chromium]

1. The API routes the dashboard reads, each asked REQS times: median and
   max seconds of the whole answer (urllib, a new connection each).
2. With --chromium: the three pages in headless Chromium (tests/system/
   browser.py), from navigation until the data is on screen: the overview
   (tiles and 50 destinations), a destination (its facts and 50 messages),
   a message (recipients and header).
3. Relay rate: REPS rounds of two `sluice blast` runs of M messages to
   r{n}@relay.test (routed to smtp-sink), A alone and B while a poller asks
   every second for what the page asks for on each tick (the overview and
   a page of destinations); each run is timed from the start of blast to
   the sink's count of the last message. A and B alternate.
Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def get(port, token, path):
    r = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                               headers={"Authorization": "Bearer " + token})
    t = time.monotonic()
    with urllib.request.urlopen(r, timeout=60) as resp:
        body = resp.read()
        if resp.status != 200:
            raise SystemExit("%s: %d" % (path, resp.status))
    return time.monotonic() - t, body


def routes(port, token, reqs):
    first = json.loads(get(port, token, "/api/v1/destinations?sort=name&limit=1")[1])
    dest = first["destinations"][0]["name"]
    page = json.loads(get(port, token, "/api/v1/destinations/%s?messages=50"
                          % dest)[1])
    mid = page["messages"][0]["mid"]
    paths = [
        "/",
        "/api/v1/dashboard",
        "/api/v1/destinations?limit=50",
        "/api/v1/destinations?sort=name&order=asc&limit=50&offset=2500",
        "/api/v1/destinations?q=d42&limit=50",
        "/api/v1/destinations?sort=oldest&limit=50",
        "/api/v1/destinations/%s?messages=50" % dest,
        "/api/v1/destinations/%s?messages=50&after=%s" % (dest, mid),
        "/api/v1/queue/%s?headers=1" % mid,
    ]
    out = []
    for p in paths:
        ts, size = [], 0
        for _ in range(reqs):
            t, body = get(port, token, p)
            ts.append(t)
            size = len(body)
        out.append({"path": p, "median_s": statistics.median(ts),
                    "max_s": max(ts), "bytes": size})
    return out, dest, mid


def pages(port, token, dest, mid, tmp):
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))
    from browser import Browser
    b = Browser(os.path.join(tmp, "chromium"))
    base = "http://127.0.0.1:%d/" % port
    out = []
    try:
        # the token, once (it stays in the tab)
        b.get(base)
        b.js("sessionStorage.setItem('sluice-token', arguments[0])", token)

        def timed(name, url, ready):
            ts = []
            for _ in range(3):
                b.get("about:blank")
                t = time.monotonic()
                b.get(url)
                b.wait(ready, timeout=60, what=name)
                ts.append(time.monotonic() - t)
            out.append({"page": name, "median_s": statistics.median(ts),
                        "max_s": max(ts)})
        timed("overview", base, lambda: len(b.css("#dests tbody tr")) == 50 and
              b.css("#tiles .tile"))
        timed("destination", base + "#/d/" + dest,
              lambda: len(b.css("#d-msgs tbody tr")) > 0)
        timed("message", base + "#/m/" + mid,
              lambda: len(b.css("#m-headers tbody tr")) > 0)
    finally:
        b.quit()
    return out


def sink_count(path):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 300))
            tail = f.read().decode(errors="replace").replace("\r", "\n")
    except OSError:
        return 0
    for line in reversed(tail.splitlines()):
        if "mesg=" in line:
            return int("".join(c for c in line.split("mesg=")[1].split()[0]
                               if c.isdigit()) or 0)
    return 0


class Poller(threading.Thread):
    """What an open dashboard asks for, once a second."""

    def __init__(self, port, token):
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.stop = threading.Event()
        self.times = []

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            for p in ("/api/v1/dashboard", "/api/v1/destinations?limit=50"):
                t, _ = get(self.port, self.token, p)
                self.times.append(t)
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))


def relay_run(a, poll):
    before = sink_count(a.sink_counts)
    poller = Poller(a.http, a.token) if poll else None
    if poller:
        poller.start()
    t0 = time.time()
    r = subprocess.run([a.sluice, "blast", "--server", "127.0.0.1:%d" % a.smtp,
                        "--sessions", "20", "--messages", str(a.messages),
                        "--size", "5K", "--rcpt-pattern", "r{n}@relay.test",
                        "--json"], capture_output=True, text=True, timeout=1800)
    accepted = json.loads(r.stdout)["accepted"]
    deadline = time.time() + 1800
    while sink_count(a.sink_counts) < before + accepted and time.time() < deadline:
        time.sleep(0.02)
    dt = time.time() - t0
    if poller:
        poller.stop.set()
        poller.join()
    return {"accepted": accepted, "seconds": dt, "rate": accepted / dt,
            "polls": poller.times if poller else []}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--smtp", type=int, required=True)
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--sink-counts", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--reqs", type=int, default=5)
    ap.add_argument("--chromium", action="store_true")
    ap.add_argument("--tmp", default="/tmp")
    a = ap.parse_args()
    a.token = open(a.token).readline().strip()

    res = {}
    res["routes"], dest, mid = routes(a.http, a.token, a.reqs)
    if a.chromium:
        res["pages"] = pages(a.http, a.token, dest, mid, a.tmp)
    alone, polled, polls = [], [], []
    for i in range(a.reps):
        for poll in ((False, True) if i % 2 == 0 else (True, False)):
            r = relay_run(a, poll)
            (polled if poll else alone).append(round(r["rate"]))
            polls += r["polls"]
            print("relay %s: %d msgs in %.1f s, %.0f msg/s" % (
                "polling" if poll else "alone", r["accepted"], r["seconds"],
                r["rate"]), file=sys.stderr)
    res["relay_alone"] = alone
    res["relay_polling"] = polled
    res["relay_drop_pct"] = 100.0 * (1 - statistics.median(polled) /
                                     statistics.median(alone))
    res["poll_median_s"] = statistics.median(polls) if polls else None
    res["poll_max_s"] = max(polls) if polls else None
    print(json.dumps(res))


if __name__ == "__main__":
    main()
