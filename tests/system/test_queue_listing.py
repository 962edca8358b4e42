"""
Listing a big queue (issue 9 item 19): `sluice queue list` (and mailq),
`summary` and `show` work at any size. The daemon streams the listing (one
message per line over the control socket), builds it a slice per loop turn
while mail flows, and the CLI still prints one JSON array with --json.

The queue is written straight into the spool by bench/gen_spool.py (every
recipient deferred for 30 days, so nothing is delivered) and recovered.
"""
import json
import socket
import subprocess

import pytest

from ops_util import run_sluice, send
from sluicetest import REPO

N = 20000          # about 4 MB of listing: main failed from ~5 000
DESTS = 50


@pytest.fixture
def big(make_sluiced, tmp_path):
    d = make_sluiced(conf={"control": {"socket": str(tmp_path / "s.sock")},
                           "delivery": {"retry_initial": "1h"}})
    d.stop()
    out = subprocess.run(
        ["/usr/bin/python3", str(REPO / "bench" / "gen_spool.py"), "--dir",
         str(d.spool_dir), "--recipients", str(N), "--destinations",
         str(DESTS)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    d.start()
    d.wait_log(rf"spool recovered .*messages={N}", timeout=60)
    d.sock = tmp_path / "s.sock"
    return d


def test_list_summary_show_of_a_big_queue(big):
    r = run_sluice("queue", "list", "--json", conf=big.conf_path,
                   timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    msgs = json.loads(r.stdout)
    assert len(msgs) == N
    mids = [m["mid"] for m in msgs]
    assert len(set(mids)) == N and mids == sorted(mids)
    assert all(m["recipients"][0]["state"] == "deferred" for m in msgs)
    # the table (mailq) too, and a filter
    r = run_sluice("queue", "list", conf=big.conf_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.rstrip().endswith(f"-- {N} messages, {N} recipients")
    r = run_sluice("queue", "list", "--domain", "d7.queue.test", "--json",
                   conf=big.conf_path, timeout=300)
    assert len(json.loads(r.stdout)) == N // DESTS
    # summary: every destination, counts that add up
    r = run_sluice("queue", "summary", "--json", conf=big.conf_path,
                   timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    assert s["messages"] == N and s["recipients"] == N
    assert len(s["destinations"]) == DESTS
    assert sum(x["messages"] for x in s["destinations"]) == N
    # show, with its body
    r = run_sluice("queue", "show", mids[123], "--body", "--json",
                   conf=big.conf_path)
    m = json.loads(r.stdout)
    assert m["mid"] == mids[123] and m["body"].startswith("Received: ")


def test_list_goes_on_while_the_queue_changes(big):
    """A reader that takes the listing slowly: the daemon waits for it
    without holding mail flow; messages deleted meanwhile may be listed or
    not, every other one exactly once; new mail is accepted meanwhile (and
    not listed: a listing shows what was queued when it began)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(big.sock))
    s.sendall(b'{"v":1,"cmd":"queue.list","args":{}}\n')
    f = s.makefile("rb")
    head = json.loads(f.readline())
    assert head == {"v": 1, "ok": True, "stream": "messages",
                    "kind": "array"}
    first = [json.loads(f.readline()) for _ in range(100)]
    # the listing waits for us now; meanwhile the queue changes
    r = run_sluice("queue", "delete", "--domain", "d3.queue.test",
                   conf=big.conf_path, timeout=120)
    assert r.returncode == 0 and "deleted 400 message(s)" in r.stdout, \
        (r.stdout, r.stderr)
    new = send(big, "a@src.sluice.test", ["b@new.sluice.test"])
    r = run_sluice("status", "--json", conf=big.conf_path)
    assert json.loads(r.stdout)["queue"]["messages"] == N - 400 + 1
    rest = []
    for line in f:
        if line == b"\n":
            break
        rest.append(json.loads(line))
    final = json.loads(f.readline())
    s.close()
    assert final["ok"] is True
    listed = [m["mid"] for m in first + rest]
    assert len(listed) == len(set(listed)), "a message listed twice"
    assert final["result"]["count"] == len(listed)
    d3 = {m["mid"] for m in first + rest
          if m["recipients"][0]["address"].endswith("@d3.queue.test")}
    others = set(listed) - d3
    # what arrived after the listing began is not in it
    assert len(others) == N - 400 and new not in others


def test_a_reader_that_leaves_midway(big):
    """The daemon stops the walk when the reader goes, and serves on."""
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(big.sock))
        s.sendall(b'{"v":1,"cmd":"queue.summary","args":{}}\n'
                  if _ == 2 else b'{"v":1,"cmd":"queue.list","args":{}}\n')
        s.recv(4096)
        s.close()
    r = run_sluice("queue", "list", "--state", "held", "--json",
                   conf=big.conf_path, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout) == []
