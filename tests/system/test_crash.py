"""
Crash test: kill -9 in the middle of a load, restart on the same spool.
Every message answered 250 must be there, byte for byte; nothing may be there
that was not answered 250, except messages whose whole body was sent but
whose reply was lost when the daemon died ("in flight").

The kill moment is seeded (SLUICE_CRASH_SEED, printed on failure) and falls
between 20% and 80% of the run.
"""
import os
import random
import smtplib
import threading
import time

import pytest

from sluicetest import dot_stuff, mid_of, scaled, sha256, wait_until

TOTAL = scaled(500, 200)
SESSIONS = 20


def make_messages(rnd):
    msgs = []
    for i in range(TOTAL):
        n = rnd.choice([100, 1000, 4000, 20000])
        payload = bytes(rnd.choice(b"abcdefghij .-\x80\xfe") for _ in range(n))
        lines = [payload[j:j + 76] for j in range(0, len(payload), 76)]
        msgs.append(b"Subject: crash test %d\r\nX-Seq: %d\r\n\r\n" % (i, i)
                    + b"\r\n".join(lines) + b"\r\n")
    return msgs


class Load:
    """20 smtplib sessions sharing 500 messages; what happened to each."""

    def __init__(self, port, msgs):
        self.port = port
        self.msgs = msgs
        self.lock = threading.Lock()
        self.next = 0
        self.acked = {}         # index -> MID
        self.in_flight = set()  # body sent in full, no reply
        self.failed = {}        # index -> error, before the body was sent
        self.refused = {}       # index -> a non-250 reply

    def take(self):
        with self.lock:
            i = self.next
            self.next += 1
            return i if i < TOTAL else None

    def worker(self):
        s = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            i = self.take()
            if i is None:
                break
            sent = False
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", self.port, timeout=30,
                                     local_hostname="client.sluice.test")
                    s.ehlo()
                code, resp = s.mail(f"sender{i}@client.sluice.test",
                                    ["BODY=8BITMIME"])
                if code != 250:
                    raise smtplib.SMTPResponseException(code, resp)
                for r in range(1 + i % 3):
                    code, resp = s.rcpt(f"r{i}.{r}@local.test")
                    if code != 250:
                        raise smtplib.SMTPResponseException(code, resp)
                s.putcmd("data")
                code, resp = s.getreply()
                if code != 354:
                    raise smtplib.SMTPResponseException(code, resp)
                s.send(dot_stuff(self.msgs[i]) + b".\r\n")
                sent = True
                code, resp = s.getreply()
                with self.lock:
                    if code == 250:
                        self.acked[i] = mid_of(resp)
                    else:
                        self.refused[i] = (code, resp)
            except (OSError, smtplib.SMTPException) as e:
                with self.lock:
                    if sent:
                        self.in_flight.add(i)
                    else:
                        self.failed[i] = repr(e)
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
                s = None
        if s is not None:
            try:
                s.quit()
            except (OSError, smtplib.SMTPException):
                s.close()


@pytest.mark.slow
def test_kill9_loses_nothing_acknowledged(make_sluiced):
    seed = int(os.environ.get("SLUICE_CRASH_SEED", "5321"))
    rnd = random.Random(seed)
    kill_at = rnd.randint(TOTAL * 20 // 100, TOTAL * 80 // 100)
    msgs = make_messages(rnd)
    shas = [sha256(m) for m in msgs]
    assert len(set(shas)) == TOTAL
    d = make_sluiced(conf={"server": {"relay_domains": "local.test"}})

    load = Load(d.port, msgs)
    threads = [threading.Thread(target=load.worker, daemon=True)
               for _ in range(SESSIONS)]
    for t in threads:
        t.start()
    wait_until(lambda: len(load.acked) >= kill_at, timeout=120, interval=0.001,
               what=f"{kill_at} messages acknowledged (seed {seed})")
    d.kill9()
    for t in threads:
        t.join(timeout=150)
        assert not t.is_alive(), "a client thread hung"
    ctx = (f"seed={seed} kill_at={kill_at} acked={len(load.acked)} "
           f"in_flight={len(load.in_flight)} failed={len(load.failed)} "
           f"refused={len(load.refused)}")
    assert not load.refused, f"{ctx}: {load.refused}"
    assert kill_at <= len(load.acked) < TOTAL, ctx

    d.start()
    # the recovery count is the number of messages in the spool
    m = d.wait_log(r"spool recovered dir=\S+ messages=(\d+)")
    recovered = int(m.group(1))
    sp = d.spool
    stored = {mid: sha256(sp.message(mid)) for mid in sp.mids()}
    assert recovered == len(stored), ctx

    # every 250 is there, intact
    for i, mid in load.acked.items():
        assert mid in stored, f"{ctx}: acknowledged message {i} MID {mid:016X} lost"
        assert stored[mid] == shas[i], f"{ctx}: message {i} MID {mid:016X} damaged"
    # nothing is there that was not answered 250, except in-flight ones
    by_sha = {shas[i]: i for i in range(TOTAL)}
    acked_mids = set(load.acked.values())
    extra = [mid for mid in stored if mid not in acked_mids]
    for mid in extra:
        i = by_sha.get(stored[mid])
        assert i is not None, f"{ctx}: MID {mid:016X} holds no message sent"
        assert i in load.in_flight, \
            f"{ctx}: message {i} stored but neither acknowledged nor in flight"
    assert len(stored) == len(load.acked) + len(extra)
    assert len(extra) <= len(load.in_flight)

    # the spool is consistent: each envelope has its recipients and body
    for mid in stored:
        env = sp.envelope(mid)
        rc = sp.recipients(mid)
        assert len(rc) == env["nrcpt"] == 1 + int(
            env["sender"][len("sender"):].split("@")[0]) % 3
        assert env["size"] == len(sp.body(mid))
    assert len(sp.bodies()) == len(stored)

    # and the restarted daemon works
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("client.sluice.test")
        code, resp = s.mail("after@client.sluice.test")
        assert code == 250
        s.rcpt("x@local.test")
        code, resp = s.data(msgs[0])
        assert code == 250, resp
        assert mid_of(resp) > max(stored)
    print(ctx, f"stored={len(stored)} in_flight_stored={len(extra)}")
