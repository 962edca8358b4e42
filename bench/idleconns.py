#!/usr/bin/python3
"""bench/idleconns.py: hold N idle SMTP connections (after EHLO) to a server
on 127.0.0.1:PORT and report the server's VmRSS before and after.

Opens at most --concurrency handshakes at a time, reads the greeting, sends
EHLO, reads the reply, then leaves the connection idle. When all are open it
waits --settle seconds, reads /proc/PID/status (VmRSS, VmHWM) and the
kernel's TCP memory (/proc/net/sockstat), closes everything, waits again and
reads VmRSS once more. Prints one JSON object. Bounded by --timeout.
"""
import argparse
import asyncio
import json
import resource
import sys
import time


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    return out


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                p = line.split()
                return int(p[p.index("mem") + 1])
    return None


async def reply(r):
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def open_one(port, sem, conns, errors):
    async with sem:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            line = await reply(r)
            if not line.startswith(b"220"):
                raise RuntimeError("greeting %r" % line[:100])
            w.write(b"EHLO idle.invalid\r\n")
            line = await reply(r)
            if not line.startswith(b"250"):
                raise RuntimeError("EHLO %r" % line[:100])
            conns.append((r, w))
        except Exception as e:
            errors.append(repr(e))


async def main_async(a):
    sem = asyncio.Semaphore(a.concurrency)
    conns, errors = [], []
    before = status(a.pid)
    tcp0 = tcp_mem_pages()
    t0 = time.perf_counter()
    await asyncio.gather(*(open_one(a.port, sem, conns, errors) for _ in range(a.connections)))
    t_open = time.perf_counter() - t0
    await asyncio.sleep(a.settle)
    # Still open? A server that dropped idle sessions would show EOF here.
    alive = sum(1 for r, w in conns if not r.at_eof())
    during = status(a.pid)
    tcp1 = tcp_mem_pages()
    for r, w in conns:
        w.close()
    await asyncio.sleep(a.settle)
    after = status(a.pid)
    n = len(conns)
    delta_kb = during["VmRSS"] - before["VmRSS"]
    return {
        "connections_requested": a.connections,
        "connections_open": n,
        "alive_after_settle": alive,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "open_seconds": round(t_open, 2),
        "rss_before_kb": before["VmRSS"],
        "rss_with_conns_kb": during["VmRSS"],
        "rss_after_close_kb": after["VmRSS"],
        "hwm_after_close_kb": after.get("VmHWM"),
        "hwm_kb": during.get("VmHWM"),
        "rss_anon_with_conns_kb": during.get("RssAnon"),
        "threads": during.get("Threads"),
        "per_conn_bytes": round(delta_kb * 1024 / n) if n else None,
        "kernel_tcp_mem_delta_kb": (tcp1 - tcp0) * resource.getpagesize() // 1024
        if tcp0 is not None and tcp1 is not None else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    need = a.connections + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
        except (ValueError, OSError) as e:
            print("cannot raise RLIMIT_NOFILE to %d: %s" % (need, e), file=sys.stderr)
    try:
        out = asyncio.run(asyncio.wait_for(main_async(a), a.timeout))
    except asyncio.TimeoutError:
        out = {"error": "timed out after %gs" % a.timeout}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
