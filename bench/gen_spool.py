#!/usr/bin/python3
"""bench/gen_spool.py: write a sluiced spool (spool.db) full of deferred mail.

The schema is the one sluiced itself created in DIR (start and stop sluiced
on it first, as bench/queue-scale does); rows are written directly with
sqlite3, so a sluiced started on the directory recovers them as its queue.

  gen_spool.py --dir DIR --recipients N --destinations D [--per-message R]
               [--body-size B] [--retry-in SECONDS]

N recipients in N/R messages; recipient k (counting across messages) is
u<k>@d<k % D>.queue.test, so the R recipients of one message go to R
different destinations (one scheduler job each) and the D destinations get
N/D recipients each. Every recipient is DEFERRED (state 1), attempts 1,
next_retry now + retry-in (default 30 days), last_reply a 451. Messages
arrived a minute ago (far from the 5-day expiry) and carry a small body.
Prints one JSON line: counts, seconds taken, spool.db size.
"""
import argparse
import json
import os
import sqlite3
import time

SCHEMA_VERSION = 2  # src/spool/spool_sqlite.c SPOOL_SCHEMA_VERSION (2: rcpt_vars and
# idempotency added; the envelopes, recipients and bodies this writes are as in 1)
SPOOL_RCPT_DEFERRED = 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--recipients", type=int, required=True)
    ap.add_argument("--destinations", type=int, required=True)
    ap.add_argument("--per-message", type=int, default=1)
    ap.add_argument("--body-size", type=int, default=200)
    ap.add_argument("--retry-in", type=int, default=30 * 86400)
    a = ap.parse_args()

    t0 = time.time()
    path = os.path.join(a.dir, "spool.db")
    if not os.path.exists(path):
        raise SystemExit(f"gen_spool.py: {path}: start and stop sluiced on "
                         "it first (it creates the schema)")
    db = sqlite3.connect(path, isolation_level=None)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise SystemExit(f"gen_spool.py: {path}: schema version {version}, "
                         f"this script writes version {SCHEMA_VERSION}")
    if db.execute("SELECT count(*) FROM envelopes").fetchone()[0]:
        raise SystemExit(f"gen_spool.py: {path}: the spool is not empty")
    db.execute("PRAGMA synchronous = OFF")

    now = int(time.time())
    r = max(1, a.per_message)
    nmsg = (a.recipients + r - 1) // r
    # MIDs are microseconds of arrival; below anything sluiced makes next.
    mid0 = int(time.time() * 1e6) - nmsg - 1000
    next_retry = now + a.retry_in
    reply = "451 4.7.1 Try again later"
    hdr = b"Received: from bench.invalid by bench.invalid; queue-scale\r\n" \
          b"Subject: queue scale\r\n\r\n"
    body = (hdr + b"x" * max(0, a.body_size - len(hdr) - 2) + b"\r\n")

    def envs():
        left = a.recipients
        for i in range(nmsg):
            n = min(r, left)
            left -= n
            yield (mid0 + i, now - 60, "sender@bench.test", None, 0, 0,
                   "127.0.0.1", "bench.invalid", len(body), n)

    def rcpts():
        k = 0
        for i in range(nmsg):
            for rid in range(min(r, a.recipients - i * r)):
                yield (mid0 + i, rid, "u%d@d%d.queue.test" % (k, k % a.destinations),
                       None, 0, SPOOL_RCPT_DEFERRED, 1, next_retry, reply)
                k += 1

    db.execute("BEGIN")
    db.executemany("INSERT INTO envelopes(mid, arrival, sender, envid, ret,"
                   " flags, client_addr, helo, size, nrcpt)"
                   " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", envs())
    db.executemany("INSERT INTO recipients(mid, rid, addr, orcpt, notify,"
                   " state, attempts, next_retry, last_reply)"
                   " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)", rcpts())
    db.executemany("INSERT INTO bodies(mid, data) VALUES(?, ?)",
                   ((mid0 + i, body) for i in range(nmsg)))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print(json.dumps({
        "messages": nmsg, "recipients": a.recipients,
        "destinations": min(a.destinations, a.recipients),
        "per_message": r, "seconds": round(time.time() - t0, 2),
        "db_bytes": os.path.getsize(path),
    }))


if __name__ == "__main__":
    main()
