# SPDX-License-Identifier: MIT
"""test_blast.py: `sluice blast` against `sluice sink`: the counts on both
sides agree exactly, with and without connection reuse and pipelining,
with failures injected, and bad flags exit 2."""
import json

import pytest

from sinkutil import run_sluice


def blast(sink, *args):
    r = run_sluice("blast", "--server", "127.0.0.1:%d" % sink.port,
                   "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("pipelining", [True, False])
def test_counts_agree(make_sink, reuse, pipelining):
    s = make_sink(maildir=False)
    args = ["--sessions", "8", "--messages", "400", "--size", "3K",
            "--rcpts", "3", "--domains", "2"]
    if not reuse:
        args.append("--no-reuse")
    if not pipelining:
        args.append("--no-pipelining")
    b = blast(s, *args)
    st = s.stats()
    assert b["accepted"] == 400 and b["rejected"] == 0 and b["failed"] == 0
    assert b["rcpts_accepted"] == 1200
    assert st["messages"] == b["accepted"]
    assert st["recipients"] == b["rcpts_accepted"]
    assert st["bytes"] == b["bytes_accepted"] == 400 * 3 * 1024
    assert st["connections"] == b["connections"]
    assert b["connections"] == (8 if reuse else 400)
    assert st["peak_connections"] <= 8
    assert b["latency_ms"]["data_end"]["n"] == 400
    assert b["latency_ms"]["connect"]["n"] == b["connections"]
    # the rate is the count over the time blast says it took
    assert b["elapsed_s"] > 0
    assert abs(b["msgs_per_s"] * b["elapsed_s"] - 400) < 1, b


@pytest.mark.parametrize("pipelining", [True, False])
def test_rejections_by_code(make_sink, pipelining):
    # recipients alternate between d1 and d2; d2 bounces
    s = make_sink("--rule", "rcpt *@d2.blast.test 550 5.1.1 User unknown",
                  maildir=False)
    args = ["--sessions", "4", "--messages", "200", "--domains", "2"]
    if not pipelining:
        args.append("--no-pipelining")
    b = blast(s, *args)
    st = s.stats()
    assert b["accepted"] == 100 and b["rejected"] == 100
    assert b["rejected_by_code"] == {"550": 100}
    assert b["rcpt_rejected_by_code"] == {"550": 100}
    assert st["messages"] == 100 and st["replies"]["550"] == 100


def test_random_failures_balance(make_sink):
    s = make_sink("--rule", "rate 4xx 0.1 at rcpt",
                  "--rule", "rate 5xx 0.05 at data-end",
                  "--rule", "rate 421 0.02 at mail", maildir=False)
    b = blast(s, "--sessions", "10", "--messages", "1000")
    st = s.stats()
    assert b["accepted"] + b["rejected"] + b["failed"] == 1000
    assert b["failed"] == 0
    assert st["messages"] == b["accepted"]
    for code in ("451", "554", "421"):
        assert b["rejected_by_code"].get(code, 0) > 0
        assert b["rejected_by_code"][code] == st["replies"][code]


def test_greeting_refusals_and_drops(make_sink):
    s = make_sink("--rule", "drop-in-data 0.1", "--max-connections", "3",
                  maildir=False)
    b = blast(s, "--sessions", "6", "--messages", "300", "--timeout", "10")
    st = s.stats()
    assert b["accepted"] + b["rejected"] + b["failed"] == 300
    assert st["messages"] == b["accepted"]
    assert b["failed"] == st["dropped"]
    assert b["rejected_by_code"].get("421", 0) == st["refused"]


def test_text_report(make_sink):
    s = make_sink(maildir=False)
    r = run_sluice("blast", "--server", "127.0.0.1:%d" % s.port,
                   "--messages", "50", "--sessions", "5")
    assert r.returncode == 0
    assert "accepted 50, rejected 0, failed 0" in r.stdout
    assert "data-end latency ms: p50" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--sessions", "0"], "--sessions: '0' is not a number"),
    (["--messages", "x"], "--messages: 'x' is not a number"),
    (["--size", "big"], "--size: 'big' is not a size"),
    (["--rcpts", "-1"], "--rcpts"),
    (["--server", "nowhere"], "--server: 'nowhere' is not an address"),
    (["--rcpt-pattern", "noat"], "has no @"),
    (["--frob"], "unrecognized option"),
])
def test_bad_flags(args, needle):
    r = run_sluice("blast", *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr


def test_unreachable_server():
    r = run_sluice("blast", "--server", "127.0.0.1:1", "--messages", "5",
                   "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["failed"] == 5


def test_silent_server_times_out():
    # a server that accepts but never greets: every message fails in time
    import socket
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        r = run_sluice("blast", "--server", "127.0.0.1:%d" % srv.getsockname()[1],
                       "--messages", "3", "--sessions", "2", "--timeout", "1",
                       "--json", timeout=60)
    assert r.returncode == 1
    # by blast's own clock: its 1s timeout, not longer ones, ended it
    assert 0.99 <= json.loads(r.stdout)["elapsed_s"] < 30, r.stdout
    b = json.loads(r.stdout)
    assert b["failed"] == 3 and b["accepted"] == 0
