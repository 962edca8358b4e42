"""
Order proof: under strace, the spool thread's fsync/fdatasync returns after
the end of the data was read and before the "250 ... queued" is written to
the client. The 250 means on disk.
"""
import os
import re
import shutil

import pytest

from sluicetest import Raw, mid_of

LINE = re.compile(r"^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+) (.*)$")


def parse_trace(text):
    """Events of strace -f -tt: (index, pid, seconds, kind, name, text);
    kind is 'start' (unfinished), 'end' (resumed) or 'call' (whole)."""
    events = []
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        pid, h, mi, s, rest = m.groups()
        t = int(h) * 3600 + int(mi) * 60 + float(s)
        if rest.startswith("<... "):
            name = rest[5:].split()[0]
            kind = "end"
        elif rest.startswith("---") or rest.startswith("+++"):
            continue
        else:
            name = rest.split("(", 1)[0]
            kind = "start" if rest.endswith("<unfinished ...>") else "call"
        events.append((len(events), int(pid), t, kind, name, rest))
    return events


@pytest.mark.slow
def test_fsync_before_250(make_sluiced, tmp_path):
    strace = shutil.which("strace")
    assert strace, "strace is not installed"
    trace = tmp_path / "trace"
    # LeakSanitizer cannot run under ptrace (an ASan build): leaks are the
    # other tests' business
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    d = make_sluiced(env=env, wrapper=[strace, "-f", "-tt", "-s", "256", "-o",
                              str(trace), "-e",
                              "trace=fdatasync,fsync,write,sendto,writev,"
                              "read,readv,recvfrom"])
    msg = b"Subject: order proof\r\n\r\nhello\r\n"
    with Raw(d.port, timeout=30) as c:
        c.ehlo()
        c.expect_ok("MAIL FROM:<a@client.sluice.test>")
        c.expect_ok("RCPT TO:<b@local.test>")
        c.send("DATA\r\n")
        c.expect("354")
        c.send(msg + b".\r\n")
        r = c.expect("250 2.0.0 Ok: queued as")
        c.cmd("QUIT")
    main_pid = d.pid
    d.stop()
    assert d.spool.message(mid_of(r)) == msg

    ev = parse_trace(trace.read_text(errors="replace"))
    # W: the write of the 250 on the socket (its start)
    ws = [e for e in ev if e[4] in ("write", "writev", "sendto")
          and e[3] in ("call", "start") and "250 2.0.0 Ok: queued as" in e[5]]
    assert len(ws) == 1, f"the 250 write not found once in the trace: {ws}"
    w = ws[0]
    assert w[1] == main_pid, "the 250 is written by the event loop thread"
    # R: the read that brought the end of the data, before W
    end_of_data = r"\r\n.\r\n"
    rs = [e for e in ev[:w[0]] if e[4] in ("read", "readv", "recvfrom")
          and e[1] == w[1] and end_of_data in e[5] and "order proof" in e[5]]
    assert rs, "the read of the end of data not found before the 250"
    rd = rs[-1]
    # S: a sync of another thread that started after R and returned before W
    starts = {}
    syncs = []
    for e in ev[rd[0] + 1:w[0]]:
        if e[4] not in ("fsync", "fdatasync"):
            continue
        if e[3] == "start":
            starts[e[1]] = e
        elif e[3] == "call" and e[5].rstrip().endswith("= 0"):
            syncs.append((e, e))
        elif e[3] == "end" and e[5].rstrip().endswith("= 0") and e[1] in starts:
            syncs.append((starts.pop(e[1]), e))
    assert syncs, ("no fsync/fdatasync returned between the end of data and "
                   "the 250:\n" + "\n".join(x[5] for x in ev[rd[0]:w[0] + 1]))
    for start, end in syncs:
        assert start[1] != main_pid, "the sync ran on the event loop thread"
        assert rd[2] <= start[2] and end[2] <= w[2]
