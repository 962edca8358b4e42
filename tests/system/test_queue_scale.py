# SPDX-License-Identifier: MIT
"""
Queue commands on a queue of 100 000 messages (bench/gen_spool.py writes
them, all deferred for 30 days, into the schema sluiced made): while
`sluice queue list` or `sluice queue delete --all` runs, a client keeps
sending mail, and the time from each message's end of data to its 250 is
recorded. The command must succeed, and mail must keep flowing while it
runs: messages are sent and answered while it runs, and none waits for most
of it (a daemon that built the whole answer in one loop turn would hold
every session for all of it: one message answered, at the end; a loaded
machine only stretches each wait, 1.5 s of a 2.7 s delete seen at load 12).
The numbers are printed; speed targets belong in bench/.
"""
import json
import subprocess
import sys
import threading
import time

import pytest

from ops_util import run_sluice
from sluicetest import REPO, Raw, scaled

N = scaled(100000, 30000)


@pytest.fixture
def big_queue(make_sluiced, tmp_path):
    sock = tmp_path / "ctl" / "sluice.sock"
    d = make_sluiced(conf={"control": {"socket": str(sock)},
                           "server": {"relay_domains": "local.test"}})
    d.stop()
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gen_spool.py"),
                        "--dir", str(d.spool_dir), "--recipients", str(N),
                        "--destinations", "1000"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    d.start()
    d.wait_log(rf"spool recovered dir=\S+ messages={N}\b", timeout=120)
    return d


class Prober:
    """One session sending small messages back to back; the end-of-data
    to 250 time of each, with when it was sent."""

    def __init__(self, d):
        self.d = d
        self.samples = []           # (sent at, seconds to the 250)
        self.errors = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        try:
            with Raw(self.d.port, timeout=120) as c:
                c.ehlo()
                i = 0
                while not self.stop.is_set():
                    c.expect_ok("MAIL FROM:<probe@client.sluice.test>")
                    c.expect_ok("RCPT TO:<probe@local.test>")
                    c.send("DATA\r\n")
                    c.expect("354")
                    t0 = time.monotonic()
                    c.send(b"Subject: probe %d\r\n\r\nx\r\n.\r\n" % i)
                    c.expect("250")
                    self.samples.append((t0, time.monotonic() - t0))
                    i += 1
        except Exception as e:      # reported by the test
            self.errors.append(repr(e))

    def during(self, fn):
        """Run fn() while probing; (its result, its seconds, the samples
        taken meanwhile)."""
        time.sleep(0.3)
        t0 = time.monotonic()
        r = fn()
        t1 = time.monotonic()
        time.sleep(0.3)
        self.stop.set()
        self.t.join(timeout=120)
        assert not self.t.is_alive() and not self.errors, self.errors
        return r, t1 - t0, [lat for t, lat in self.samples
                            if t0 <= t + lat and t <= t1]


def report(capsys, what, took, lats):
    lats = sorted(lats)
    with capsys.disabled():
        print(f"\n{what} on {N} messages: {took:.2f}s; meanwhile "
              f"{len(lats)} messages accepted, end-of-data to 250 p50 "
              f"{lats[len(lats) // 2] * 1000:.1f} ms, max "
              f"{lats[-1] * 1000:.1f} ms" if lats else "no message")


def check_list(d, r):
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) >= N


def check_delete(d, r):
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split("deleted ")[1].split()[0]) >= N
    # the generated messages are gone (the probes sent after may remain)
    assert d.spool.count() < N


COMMANDS = [
    pytest.param(["queue", "list", "--json"], check_list, id="list"),
    pytest.param(["queue", "delete", "--all"], check_delete, id="delete-all"),
]


@pytest.mark.slow
@pytest.mark.serial     # latencies while 100 000 messages are walked
@pytest.mark.parametrize("argv,check", COMMANDS)
def test_queue_command_while_mail_flows(big_queue, capsys, argv, check):
    d = big_queue
    probe = Prober(d)
    r, took, lats = probe.during(lambda: run_sluice(*argv, conf=d.conf_path,
                                                    timeout=300))
    report(capsys, " ".join(argv), took, lats)
    check(d, r)
    assert len(lats) >= 3, f"{len(lats)} messages answered while it ran"
    assert max(lats) < took * 0.9, (max(lats), took)
