# SPDX-License-Identifier: MIT
"""
Kill loop: 20 times kill -9 at a random moment while mail is being accepted
and delivered, each followed by a restart on the same spool. At the end
every message answered 250 has been delivered (at least once), nothing was
delivered that was never sent, and the duplicates (deliveries in flight at
a kill, repeated: ARCHITECTURE.md promise 4) are counted and printed;
every repeated delivery must have a kill between it and the one before.
How many were in flight depends on how long the spool's commits take (a
connection goes on while its outcome waits for the next group commit),
so their number is printed, not bounded.

The receiver is a Python SMTP server (delivery_util.Receiver) that records
each message's X-Token. The kill moments are seeded (SLUICE_CRASH_SEED,
printed with the result).
"""
import os
import random
import smtplib
import threading
import time

import pytest

from delivery_util import FAST, Receiver, make_body
from sluicetest import free_port, scaled, wait_until

CYCLES = 20
SESSIONS = 4
CONC = 4


class Injector:
    """SESSIONS sessions that send until stopped, reconnecting after each
    kill; which tokens were answered 250."""

    def __init__(self, d, rx, backlog):
        self.d = d
        self.rx = rx
        self.backlog = backlog      # accepted but not delivered, at most
        self.lock = threading.Lock()
        self.n = 0
        self.acked = set()
        self.sent = set()           # the body went out (maybe stored)
        self.refused = []
        self.stop = threading.Event()

    def token(self):
        with self.lock:
            self.n += 1
            return f"k{self.n}"

    def worker(self):
        s = None
        while not self.stop.is_set():
            if len(self.acked) - self.rx.count() > self.backlog:
                time.sleep(0.01)    # let delivery keep up with accept
                continue
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", self.d.port, timeout=30,
                                     local_hostname="client.sluice.test")
                    s.ehlo()
                t = self.token()
                code, resp = s.mail("sender@back.test")
                if code != 250:
                    raise smtplib.SMTPResponseException(code, resp)
                code, resp = s.rcpt(f"{t}@kill.test")
                if code != 250:
                    raise smtplib.SMTPResponseException(code, resp)
                with self.lock:
                    self.sent.add(t)
                code, resp = s.data(make_body(t))
                with self.lock:
                    if code == 250:
                        self.acked.add(t)
                    elif code != 421:
                        self.refused.append((t, code, resp))
            except (OSError, smtplib.SMTPException):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
                s = None
                time.sleep(0.05)    # the daemon is down: try again soon
        if s is not None:
            try:
                s.quit()
            except (OSError, smtplib.SMTPException):
                pass


@pytest.mark.slow
@pytest.mark.serial     # 20 kills under load: the machine alone
def test_kill_loop_delivers_every_acknowledged_message(make_sluiced, capsys):
    seed = int(os.environ.get("SLUICE_CRASH_SEED", "25"))
    rnd = random.Random(seed)
    rx = Receiver("127.0.0.1", free_port(), delays={"data_end": 0.005})
    try:
        delivery = dict(FAST, destination_concurrency=str(CONC),
                        messages_per_connection="20")
        d = make_sluiced(conf={"delivery": delivery, "routes": {
            "kill.test": f"[127.0.0.1]:{rx.port}"}})
        inj = Injector(d, rx, scaled(150, 50))
        threads = [threading.Thread(target=inj.worker, daemon=True)
                   for _ in range(SESSIONS)]
        for t in threads:
            t.start()
        kills, windows = [], []
        for cycle in range(CYCLES):
            # let both accept and delivery run, then kill at a random moment
            before = len(inj.acked)
            wait_until(lambda: len(inj.acked) > before + scaled(5, 2),
                       timeout=60, what=f"mail accepted in cycle {cycle}")
            time.sleep(rnd.uniform(0.0, scaled(0.6, 1.2)))
            at = rx.count()
            kills.append((len(inj.acked), at))
            d.kill9()
            d.start()
            # deliveries [at, restarted) may have come before the kill or
            # after the restart: either side of it
            windows.append((at, rx.count()))
        inj.stop.set()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "an injecting thread hung"
        assert not inj.refused, inj.refused[:5]
        acked = set(inj.acked)
        wait_until(lambda: acked <= set(rx.tokens()), timeout=120,
                   interval=0.2, what="every acknowledged message delivered"
                   f" (missing {len(acked - set(rx.tokens()))})")
        wait_until(lambda: d.spool.count() == 0, timeout=60,
                   what="an empty spool")
        toks = rx.tokens()
        with rx.lock:
            order = [m.header("X-Token") for m in rx.messages]
    finally:
        rx.stop()
    dups = {t: n for t, n in toks.items() if n > 1}
    extra = set(toks) - acked
    with capsys.disabled():
        print(f"\nkill loop (seed {seed}): {CYCLES} kill -9, {len(acked)} "
              f"answered 250, {len(toks)} delivered, {len(extra)} delivered "
              f"without a 250 (in flight at a kill), "
              f"{sum(dups.values()) - len(dups)} duplicate deliveries of "
              f"{len(dups)} messages; (acked, delivered) at each kill: "
              f"{kills}")
    assert not acked - set(toks)
    # what was delivered was sent, answered or cut off in flight
    assert extra <= inj.sent, sorted(extra - inj.sent)[:10]
    # duplicates come only from deliveries in flight at a kill: between
    # two deliveries of a message, sluiced was killed and started again
    # (ARCHITECTURE.md promise 4)
    seen = {}
    unexplained = []
    for pos, t in enumerate(order):
        if t in seen and not any(seen[t] < hi and pos >= lo
                                 for lo, hi in windows):
            unexplained.append((t, seen[t], pos))
        seen[t] = pos
    assert not unexplained, (unexplained[:10], windows)
