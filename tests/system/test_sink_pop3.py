# SPDX-License-Identifier: MIT
"""test_sink_pop3.py: `sluice sink --pop3` seen by Python's poplib and raw
sockets: what the sink caught comes back byte for byte (dot lines, bare
8-bit bytes, a message of many chunks), TOP, UIDL, DELE removes at QUIT
and only then, RSET, --auth, the maildrop fixed at login, a restart, and
the limits: long lines, bad commands, the idle timeout and clients that
never read."""
import os
import poplib
import smtplib
import socket
import time

import pytest

from sinkutil import read_reply
from sluicetest import scaled, wait_until


def send(sink, body, rcpt="ann@example.test", sender="app@example.test"):
    """Send body (bytes, CRLF lines) through the sink's SMTP; returns what
    the sink stored (the file's bytes)."""
    before = len(os.listdir(os.path.join(sink.maildir, "new")))
    c = smtplib.SMTP("127.0.0.1", sink.port, timeout=30)
    c.sendmail(sender, [rcpt], body)
    c.quit()
    wait_until(lambda: len(os.listdir(os.path.join(sink.maildir, "new")))
               > before, what="the message in new/")
    return body


def pop(sink, user="u", password="p"):
    p = poplib.POP3("127.0.0.1", sink.pop3_port, timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def retr_bytes(p, n):
    resp, lines, octets = p.retr(n)
    # poplib undoes the dot-stuffing and splits at CRLF
    return b"\r\n".join(lines) + b"\r\n", octets


def files(sink):
    return sorted(os.listdir(os.path.join(sink.maildir, "new")))


def msg(subject, body_lines):
    head = ("From: App <app@example.test>\r\nTo: ann@example.test\r\n"
            "Subject: %s\r\n\r\n" % subject).encode()
    return head + b"".join(l + b"\r\n" for l in body_lines)


@pytest.fixture
def sink(make_sink):
    return make_sink(pop3=True, http=True)


def test_retr_byte_for_byte(sink):
    bodies = [
        msg("dots", [b"first", b".", b"..two dots", b".leading", b"last"]),
        msg("8bit", [b"caf\xc3\xa9 \xff\xfe raw bytes", b"", b"end"]),
        # many chunks of the worker's reads (64 KB each)
        msg("big", [(b"%06d " % i) + b"x" * 90 + (b"." if i % 7 == 0 else b"")
                    for i in range(4000)]),
    ]
    for b in bodies:
        send(sink, b)
    stored = [open(os.path.join(sink.maildir, "new", f), "rb").read()
              for f in files(sink)]
    assert sorted(stored) == sorted(bodies)
    p = pop(sink)
    count, octets = p.stat()
    assert count == 3
    assert octets == sum(len(b) for b in bodies)
    got = [retr_bytes(p, i + 1) for i in range(3)]
    assert sorted(g for g, _ in got) == sorted(bodies)
    # RFC 1939 LIST: the octets of each message as stored
    sizes = {int(l.split()[0]): int(l.split()[1]) for l in p.list()[1]}
    index = sink.index()
    assert [sizes[i + 1] for i in range(3)] == [m["size"] for m in index]
    p.quit()


def test_top_and_uidl(sink):
    send(sink, msg("top", [b"one", b".two", b"three"]))
    send(sink, msg("second", [b"x"]))
    p = pop(sink)
    resp, lines, _ = p.top(1, 2)
    assert lines[-3:] == [b"", b"one", b".two"]
    assert b"Subject: top" in lines
    resp, lines, _ = p.top(1, 0)
    assert lines[-1] == b"" and b"one" not in lines
    uids = p.uidl()[1]
    assert len(uids) == 2
    ids = [u.split()[1] for u in uids]
    assert len(set(ids)) == 2
    assert all(0 < len(i) <= 70 for i in ids)
    # the unique-id is the Maildir name without the host part
    assert all(f.startswith(i.decode() + ".") for f, i in
               zip([m["id"] for m in sink.index()], ids))
    assert p.uidl(2).split()[2] == ids[1]
    with pytest.raises(poplib.error_proto, match="no such message"):
        p.uidl(3)
    p.quit()


def test_dele_removes_at_quit_only(sink):
    for i in range(3):
        send(sink, msg("m%d" % i, [b"body %d" % i]))
    names = files(sink)
    p = pop(sink)
    assert p.dele(2).startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match="already deleted"):
        p.retr(2)
    assert p.stat()[0] == 2
    # not removed before QUIT
    assert files(sink) == names
    assert sink.api("/api/messages")["total"] == 3
    p.quit()
    assert files(sink) == [names[0], names[2]]
    assert [m["id"] for m in sink.index()] == [names[0], names[2]]
    assert sink.api("/api/messages")["total"] == 2

    # RSET undoes DELE; a session that ends without QUIT removes nothing
    p = pop(sink)
    p.dele(1)
    assert p.rset().startswith(b"+OK maildrop has 2")
    p.dele(2)
    p.sock.close()
    time.sleep(0.3)
    assert files(sink) == [names[0], names[2]]
    p = pop(sink)
    p.dele(1)
    p.dele(2)
    p.quit()
    assert files(sink) == []
    assert sink.index() == []


def test_maildrop_fixed_at_login(sink):
    send(sink, msg("before", [b"a"]))
    p = pop(sink)
    send(sink, msg("after", [b"b"]))
    assert p.stat()[0] == 1
    p.quit()
    p = pop(sink)
    assert p.stat()[0] == 2
    p.quit()


def test_removed_over_http_while_listed(sink):
    send(sink, msg("gone", [b"a"]))
    p = pop(sink)
    mid = sink.api("/api/messages")["messages"][0]["id"]
    assert sink.api("/api/messages/" + mid, method="DELETE") == {"deleted": 1}
    with pytest.raises(poplib.error_proto, match="SYS/TEMP.*removed"):
        p.retr(1)
    assert p.noop().startswith(b"+OK")
    p.quit()


def test_restart_keeps_the_maildrop(make_sink, tmp_path):
    s = make_sink(pop3=True)
    body = msg("kept", [b"across a restart"])
    send(s, body)
    s.check_clean()
    from sinkutil import Sink
    s2 = Sink(s.dir, pop3=True, http=True)      # the same Maildir
    try:
        p = pop(s2)
        assert retr_bytes(p, 1)[0] == body
        p.quit()
        assert s2.api("/api/messages")["messages"][0]["subject"] == "kept"
    finally:
        s2.check_clean()


def test_auth(make_sink):
    s = make_sink("--auth", "ann:s3cret word", "--auth", "bob:x", pop3=True)
    send(s, msg("auth", [b"a"]))
    p = pop(s, "ann", "s3cret word")
    assert p.stat()[0] == 1
    p.quit()
    p = pop(s, "bob", "x")
    p.quit()
    p = poplib.POP3("127.0.0.1", s.pop3_port, timeout=10)
    p.user("ann")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("wrong")
    p.user("bob")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("s3cret word")      # another user's password
    # not logged in: no commands of the TRANSACTION state
    with pytest.raises(poplib.error_proto):
        p.stat()
    p.user("nobody")
    with pytest.raises(poplib.error_proto, match="closing"):
        p.pass_("x")                # the third failure closes
    assert p.sock.recv(100) == b""


def raw(sink):
    s = socket.create_connection(("127.0.0.1", sink.pop3_port), timeout=20)
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK")
    return s, f


def test_capa_pipelining_and_errors(sink):
    send(sink, msg("p", [b"x"]))
    s, f = raw(sink)
    s.sendall(b"CAPA\r\nUSER u\r\nPASS p\r\nSTAT\r\nLIST\r\nNOOP\r\nQUIT\r\n")
    lines = []
    while True:
        line = f.readline()
        if not line:
            break
        lines.append(line.rstrip(b"\r\n"))
    assert lines[0] == b"+OK Capability list follows"
    for cap in (b"USER", b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"):
        assert cap in lines
    i = lines.index(b".")
    assert lines[i + 1].startswith(b"+OK send PASS")
    assert lines[i + 2].startswith(b"+OK maildrop has 1 messages")
    assert lines[i + 3].startswith(b"+OK 1 ")
    assert lines[i + 4].startswith(b"+OK 1 messages")
    assert lines[i + 5].startswith(b"1 ")
    assert lines[i + 6] == b"."
    assert lines[i + 7] == b"+OK"
    assert lines[i + 8].startswith(b"+OK") and b"signing off" in lines[i + 8]
    s.close()

    # bad commands: -ERR each, and the 20th closes the session
    s, f = raw(sink)
    s.sendall(b"BOGUS\r\n" * 25)
    replies = [f.readline() for _ in range(25)]
    assert all(r.startswith(b"-ERR") for r in replies[:20])
    assert b"too many errors" in replies[19]
    assert replies[20:] == [b""] * 5
    s.close()


def test_long_line_closes(sink):
    s, f = raw(sink)
    s.sendall(b"USER " + b"a" * 2000)       # no line end at all
    assert f.readline().startswith(b"-ERR line too long")
    assert f.readline() == b""
    s.close()
    s, f = raw(sink)
    s.sendall(b"USER " + b"a" * 600 + b"\r\n")
    assert f.readline().startswith(b"-ERR line too long")
    assert f.readline() == b""
    s.close()


def test_idle_timeout(make_sink):
    s = make_sink("--pop3-timeout", "1s", pop3=True)
    c, f = raw(s)
    t = time.monotonic()
    line = f.readline()
    assert line.startswith(b"-ERR [SYS/TEMP] autologout")
    assert f.readline() == b""
    assert time.monotonic() - t < 15
    c.close()


def sockets(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")
        except OSError:
            pass
    return n


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_clients_that_never_read(make_sink):
    """20 clients each ask for a 16 MB message 5 times and read nothing:
    the sink keeps a slice per client, not the message (a copy each would
    be 320 MB), and the write timeout closes them."""
    s = make_sink("--pop3-timeout", "3s", pop3=True)
    big = msg("big", [b"y" * 998] * 16000)
    nsock = sockets(s.proc.pid)     # the listeners
    send(s, big)
    wait_until(lambda: sockets(s.proc.pid) == nsock, what="SMTP to close")
    base = rss_kb(s.proc.pid)
    socks = []
    for _ in range(20):
        c = socket.create_connection(("127.0.0.1", s.pop3_port), timeout=20)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"USER u\r\nPASS p\r\n" + b"RETR 1\r\n" * 5)
        socks.append(c)
    wait_until(lambda: sockets(s.proc.pid) >= nsock + 20,
               what="20 sessions")
    time.sleep(1)
    grown = rss_kb(s.proc.pid) - base
    # (ASan keeps freed memory in quarantine)
    assert grown < scaled(40, 120) * 1024, "sink grew by %d KB" % grown
    # the write timeout ends each of them; the sink still serves others
    wait_until(lambda: sockets(s.proc.pid) <= nsock, timeout=60,
               what="the stalled sessions to close")
    p = pop(s)
    assert retr_bytes(p, 1)[0] == big
    p.quit()
    for c in socks:
        c.close()
