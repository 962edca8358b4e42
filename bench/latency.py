#!/usr/bin/python3
"""bench/latency.py: end-of-DATA latency of an SMTP server under load.

Runs SESSIONS concurrent SMTP sessions against 127.0.0.1:PORT (loopback only)
that between them send MESSAGES messages of SIZE bytes, each session reusing
its connection (EHLO once, then MAIL/RCPT/DATA per message, no pipelining).
For every message it times the interval from writing the final ".\\r\\n" (the
body, ending in CRLF, has been written just before) to reading the complete
250 reply: for a durable server that is the time to make the message safe on
disk. Prints a summary (or --json) with median, p90, p99 and max in ms.

Bounded: at most MESSAGES messages and --timeout seconds in all.
"""
import argparse
import asyncio
import json
import math
import socket
import sys
import time


def pct(xs, p):
    """Nearest-rank percentile of sorted xs."""
    if not xs:
        return float("nan")
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def median(xs):
    n = len(xs)
    if not n:
        return float("nan")
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


class Load:
    def __init__(self, args):
        self.args = args
        self.left = args.messages
        self.lat = []          # end-of-DATA -> 250, seconds
        self.txn = []          # MAIL .. 250 after DATA, seconds
        self.trace = []        # (time of the 250, latency) for --dump
        self.errors = []
        body = bytearray()
        body += b"From: bench@example.org\r\nTo: rcpt@example.com\r\n"
        body += b"Subject: latency probe\r\n\r\n"
        line = b"x" * 76 + b"\r\n"
        while len(body) < args.size:
            body += line
        self.body = bytes(body[: args.size - 2]) + b"\r\n" if args.size > 2 else b"\r\n"

    async def reply(self, r):
        """Read one (possibly multi-line) reply; return (code, text)."""
        lines = []
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionError("connection closed")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
        return int(lines[-1][:3]), b"".join(lines)

    async def expect(self, r, want, what):
        code, text = await self.reply(r)
        if code // 100 != want:
            raise RuntimeError("%s: %r" % (what, text[:200]))
        return text

    async def session(self, idx):
        a = self.args
        r, w = await asyncio.open_connection("127.0.0.1", a.port, limit=1 << 20)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self.expect(r, 2, "greeting")
            w.write(b"EHLO latency.invalid\r\n")
            await self.expect(r, 2, "EHLO")
            while self.left > 0:
                self.left -= 1
                t0 = time.perf_counter()
                w.write(b"MAIL FROM:<bench@example.org>\r\n")
                await self.expect(r, 2, "MAIL")
                w.write(b"RCPT TO:<rcpt@example.com>\r\n")
                await self.expect(r, 2, "RCPT")
                w.write(b"DATA\r\n")
                await self.expect(r, 3, "DATA")
                w.write(self.body)
                await w.drain()
                t1 = time.perf_counter()
                w.write(b".\r\n")
                await self.expect(r, 2, "end of DATA")
                t2 = time.perf_counter()
                self.lat.append(t2 - t1)
                self.trace.append((t2, t2 - t1))
                self.txn.append(t2 - t0)
            w.write(b"QUIT\r\n")
            await w.drain()
            try:
                await asyncio.wait_for(self.reply(r), 5)
            except (asyncio.TimeoutError, ConnectionError):
                pass
        finally:
            w.close()

    async def run(self):
        tasks = [asyncio.create_task(self.session(i)) for i in range(self.args.sessions)]
        for t in asyncio.as_completed(tasks):
            try:
                await t
            except Exception as e:  # one broken session does not stop the others
                self.errors.append(repr(e))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dump", metavar="FILE",
                    help="write 'seconds-since-start latency-ms' per message to FILE")
    a = ap.parse_args()

    load = Load(a)
    t0 = time.perf_counter()
    timed_out = False
    try:
        asyncio.run(asyncio.wait_for(load.run(), a.timeout))
    except asyncio.TimeoutError:
        timed_out = True
    elapsed = time.perf_counter() - t0
    if a.dump:
        with open(a.dump, "w") as f:
            f.write("# t0 %.6f (CLOCK_MONOTONIC seconds)\n" % t0)
            for t, l in sorted(load.trace):
                f.write("%.4f %.3f\n" % (t - t0, l * 1000))
    lat = sorted(load.lat)
    txn = sorted(load.txn)
    ms = lambda v: round(v * 1000, 3)
    out = {
        "messages": len(lat),
        "sessions": a.sessions,
        "size": a.size,
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else None,
        "eod_ms": {"median": ms(median(lat)), "p90": ms(pct(lat, 90)),
                   "p99": ms(pct(lat, 99)), "max": ms(lat[-1]) if lat else None},
        "txn_ms": {"median": ms(median(txn)), "p99": ms(pct(txn, 99))},
        "errors": len(load.errors),
        "first_error": load.errors[0] if load.errors else None,
        "timed_out": timed_out,
    }
    if a.json:
        print(json.dumps(out))
    else:
        e = out["eod_ms"]
        print("%d messages, %d sessions, %.1f msg/s; end-of-DATA->250 ms: "
              "median %.2f p90 %.2f p99 %.2f max %.2f; errors %d%s"
              % (out["messages"], a.sessions, out["msgs_per_s"] or 0, e["median"],
                 e["p90"], e["p99"], e["max"] or 0, out["errors"],
                 " (TIMED OUT)" if timed_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
