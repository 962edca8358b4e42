# SPDX-License-Identifier: MIT
"""
Order proof, tied to the file: under `strace -f -y`, for a message ended by
DATA's dot and one ended by BDAT LAST,

  1. the spool thread (the thread that wrote the message's bytes into
     spool.db-wal) writes them,
  2. that same thread's fsync/fdatasync of spool.db-wal (or spool.db)
     starts after its last write of the transaction and returns 0,
  3. and only then does an event loop (the session's: the main loop, or
     an SMTP loop of its own, [server] loops) write the "250 ... queued
     as" reply.

Any other sync does not count: the checkpoint thread also syncs the WAL
and the database, and would hide a commit that never synced. The control
run uses the test-only switch SLUICE_TEST_SPOOL_SYNC=NORMAL (commits that
do not sync; the checkpoint connection still does): the same checker must
reject its trace.
"""
import os
import re
import shutil

import pytest

from sluicetest import Raw, mid_of

LINE = re.compile(r"^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+) (.*)$")
WRITES = ("write", "writev", "sendto", "sendmsg", "pwrite64", "pwrite",
          "pwritev")
SYNCS = ("fsync", "fdatasync")
SPOOL_FILE = re.compile(r"^\w+\(\d+<([^>]*/spool\.db(?:-wal)?)>")


def parse_trace(text):
    """Calls of strace -f -tt -y as dicts: i (order), pid, t (seconds),
    name, start (the text with the arguments), ret (the result text);
    an unfinished call and its resumption are joined, at the start's
    place in the order."""
    calls, open_ = [], {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        pid, h, mi, s, rest = m.groups()
        pid, t = int(pid), int(h) * 3600 + int(mi) * 60 + float(s)
        if rest.startswith(("---", "+++")):
            continue
        if rest.startswith("<... "):
            c = open_.pop(pid, None)
            if c is not None:
                c["ret"] = rest.rsplit("=", 1)[-1].strip()
                c["t_end"] = t
                c["i_end"] = len(calls)
            continue
        name = rest.split("(", 1)[0]
        # i_end: the calls that came before its return (a whole line
        # means it returned before any other thread's next event)
        c = {"i": len(calls), "i_end": len(calls), "pid": pid, "t": t,
             "t_end": t, "name": name, "start": rest, "ret": None}
        if rest.endswith("<unfinished ...>"):
            open_[pid] = c
        else:
            c["ret"] = rest.rsplit("=", 1)[-1].strip()
        calls.append(c)
    return calls


def spool_file(c):
    m = SPOOL_FILE.match(c["start"])
    return m.group(1) if m else None


def check_order(calls, main_pid, token):
    """Assert the order above for the message carrying token; returns a
    one-line account of it."""
    ws = [c for c in calls if c["name"] in WRITES
          and "250 2.0.0 Ok: queued as" in c["start"]]
    assert len(ws) == 1, f"the 250 write not found once: {ws}"
    w = ws[0]
    mine = [c for c in calls[:w["i"]] if c["name"] in WRITES
            and (spool_file(c) or "").endswith("-wal") and token in c["start"]]
    assert mine, "the message's bytes were not written to spool.db-wal " \
        "before the 250"
    spool_tid = mine[-1]["pid"]
    assert spool_tid != main_pid and spool_tid != w["pid"], \
        "the WAL is written by an event loop"
    # the first sync of a spool file by the spool thread after the message
    syncs = [c for c in calls[mine[-1]["i"] + 1:] if c["name"] in SYNCS
             and c["pid"] == spool_tid and spool_file(c)]
    assert syncs, "the spool thread never synced a spool file after the " \
        "message's last write"
    s = syncs[0]
    assert s["ret"] == "0", f"the sync failed: {s['start']} = {s['ret']}"
    assert s["i_end"] < w["i"] and s["t_end"] <= w["t"], (
        f"the 250 was written at {w['t']:.6f} before the spool thread's "
        f"sync {s['start']} returned at {s['t_end']:.6f}")
    # and the transaction was whole at the sync: no WAL write of the
    # spool thread between the sync and the 250 (a commit frame written
    # after the sync would not be durable)
    later = [c for c in calls[s["i"] + 1:w["i"]] if c["pid"] == spool_tid
             and c["name"] in WRITES and (spool_file(c) or "").endswith("-wal")]
    assert not later, f"WAL writes after the sync, before the 250: {later}"
    return (f"WAL write {mine[-1]['t']:.6f}, {s['name']} of "
            f"{os.path.basename(spool_file(s))} by the spool thread "
            f"{s['t']:.6f}..{s['t_end']:.6f}, 250 written {w['t']:.6f}")


def traced(make_sluiced, tmp_path, env_extra=None):
    strace = shutil.which("strace")
    assert strace, "strace is not installed (scripts/deps.sh)"
    trace = tmp_path / "trace"
    env = dict(os.environ)
    # LeakSanitizer cannot run under ptrace (an ASan build): leaks are the
    # other tests' business
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    env.update(env_extra or {})
    d = make_sluiced(env=env, wrapper=[
        strace, "-f", "-y", "-tt", "-s", "8192", "-o", str(trace), "-e",
        "trace=fdatasync,fsync,write,writev,sendto,sendmsg,pwrite64,"
        "pwritev"])
    return d, trace


def send_data(c, token):
    msg = b"Subject: order proof\r\n\r\n" + token.encode() + b"\r\n"
    c.expect_ok("MAIL FROM:<a@client.sluice.test>")
    c.expect_ok("RCPT TO:<b@local.test>")
    c.send("DATA\r\n")
    c.expect("354")
    c.send(msg + b".\r\n")
    return msg, c.reply()


def send_bdat(c, token):
    msg = b"Subject: order proof, BDAT\r\n\r\n" + token.encode() + b"\r\n"
    c.expect_ok("MAIL FROM:<a@client.sluice.test>")
    c.expect_ok("RCPT TO:<b@local.test>")
    half = len(msg) // 2
    c.send(b"BDAT %d\r\n" % half + msg[:half])
    c.expect("250")
    c.send(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
    return msg, c.reply()


SENDERS = {"data": send_data, "bdat": send_bdat}


def run_one(make_sluiced, tmp_path, how, env_extra=None):
    d, trace = traced(make_sluiced, tmp_path, env_extra)
    token = f"order-token-{how}-0123456789"
    with Raw(d.port, timeout=30) as c:
        ehlo = c.ehlo()
        if how == "bdat":
            assert "CHUNKING" in ehlo
        msg, r = SENDERS[how](c, token)
        assert r.startswith("250 2.0.0 Ok: queued as"), r
        c.cmd("QUIT")
    main_pid = d.pid
    d.stop()
    assert d.spool.message(mid_of(r)) == msg
    return parse_trace(trace.read_text(errors="replace")), main_pid, token


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.parametrize("how", ["data", "bdat"])
def test_spool_thread_syncs_wal_before_250(make_sluiced, tmp_path, how,
                                           capsys):
    calls, main_pid, token = run_one(make_sluiced, tmp_path, how)
    account = check_order(calls, main_pid, token)
    with capsys.disabled():
        print(f"\norder ({how}): {account}")


@pytest.mark.slow
@pytest.mark.serial
def test_checker_rejects_commit_without_sync(make_sluiced, tmp_path, capsys):
    """The control run: with commits that do not sync, check_order fails
    (the checkpoint connection still syncs, later, or on another thread)."""
    calls, main_pid, token = run_one(make_sluiced, tmp_path, "data", {
        "SLUICE_TEST_SPOOL_SYNC": "NORMAL"})
    with pytest.raises(AssertionError) as e:
        check_order(calls, main_pid, token)
    with capsys.disabled():
        print(f"\norder, test-only synchronous=NORMAL: rejected: "
              f"{str(e.value).splitlines()[0]}")
