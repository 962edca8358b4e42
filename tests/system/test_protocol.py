"""
SMTP protocol over raw sockets: the chats of chats/*.chat (one parametrized
test), pipelined input split at every byte boundary, and the connection
limits.
"""
import random
import socket
import time

import pytest

from chat import Chat, all_chats
from sluicetest import (NoopFlood, Raw, dot_stuff, mid_of, split_received,
                        wait_until)


@pytest.mark.parametrize("path", all_chats(), ids=lambda p: p.stem)
def test_chat(make_sluiced, path):
    chat = Chat(path)
    d = make_sluiced(conf=chat.conf)
    chat.run(d)


# ---- pipelined input split anywhere ----

MSG1 = (b"From: a@client.sluice.test\r\nSubject: split one\r\n\r\n"
        b"line one\r\n.dot line\r\n\r\n.\r\nlast\r\n")
MSG2 = b"Subject: split two\r\n\r\nBDAT\r\nQUIT\r\n"
MSG3 = b"Subject: three\r\n\r\n" + bytes(range(0x80, 0x100)) + b"\r\n"

# one whole session, as a client that never waits would send it
SESSION = (b"EHLO client.sluice.test\r\n"
           b"MAIL FROM:<a@client.sluice.test> BODY=8BITMIME\r\n"
           b"RCPT TO:<b@local.test> NOTIFY=FAILURE\r\n"
           b"RCPT TO:<c@local.test>\r\n"
           b"DATA\r\n" + dot_stuff(MSG1) + b".\r\n"
           b"NOOP\r\n"
           b"MAIL FROM:<>\r\n"
           b"RCPT TO:<d@local.test>\r\n"
           + b"BDAT %d\r\n" % 20 + MSG2[:20]
           + b"BDAT %d LAST\r\n" % (len(MSG2) - 20) + MSG2[20:]
           + b"RSET\r\n"
           b"MAIL FROM:<e@client.sluice.test> BODY=8BITMIME\r\n"
           b"RCPT TO:<f@local.test>\r\n"
           b"DATA\r\n" + dot_stuff(MSG3) + b".\r\n"
           b"QUIT\r\n")

REPLIES = ["220", "250 CHUNKING", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354",
           "250 2.0.0 Ok: queued as", "250 2.0.0", "250 2.1.0", "250 2.1.5",
           "250 2.0.0 20 octets", "250 2.0.0 Ok: queued as", "250 2.0.0",
           "250 2.1.0", "250 2.1.5", "354", "250 2.0.0 Ok: queued as",
           "221 2.0.0"]


def run_split_session(d, chunks, pause=0.0):
    c = Raw(d.port, greet=False)
    try:
        for ch in chunks:
            c.send(ch)
            if pause:
                time.sleep(pause)
        replies = []
        for want in REPLIES:
            r = c.reply()
            assert r is not None, f"EOF after {replies}"
            assert r.split("\n")[-1].startswith(want), \
                f"reply {len(replies)}: expected {want!r}, got {r!r}"
            replies.append(r)
        c.expect_closed()
    finally:
        c.close()
    mids = [mid_of(r) for r in replies if "queued as" in r]
    sp = d.spool
    assert [sp.message(m) for m in mids] == [MSG1, MSG2, MSG3]
    assert [r["addr"] for r in sp.recipients(mids[0])] == ["b@local.test",
                                                           "c@local.test"]
    assert sp.recipients(mids[0])[0]["notify"] == 4
    assert sp.envelope(mids[2])["flags"] & 1
    return mids


def test_pipelined_whole(sluiced):
    run_split_session(sluiced, [SESSION])


def test_pipelined_one_byte_at_a_time(sluiced):
    run_split_session(sluiced, [SESSION[i:i + 1] for i in range(len(SESSION))])


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
def test_pipelined_random_chunks(sluiced, seed):
    rnd = random.Random(seed)
    chunks, i = [], 0
    while i < len(SESSION):
        n = rnd.choice([1, 2, 3, 5, 7, 13, 64, 200])
        chunks.append(SESSION[i:i + n])
        i += n
    run_split_session(sluiced, chunks, pause=0.0005)


def test_smuggling_split_one_byte_at_a_time(sluiced):
    """The smuggling check must hold whatever the read boundaries are."""
    with Raw(sluiced.port) as c:
        c.ehlo()
        for end in (b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"):
            c.send(b"MAIL FROM:<a@client.sluice.test>\r\n"
                   b"RCPT TO:<b@local.test>\r\nDATA\r\n")
            c.expect("250")
            c.expect("250")
            c.expect("354")
            data = (b"Subject: x\r\n\r\nhi" + end
                    + b"MAIL FROM:<x@local.test>\r\nRCPT TO:<v@local.test>\r\n"
                    b"DATA\r\nSMUGGLED\r\n.\r\n")
            for i in range(len(data)):
                c.send(data[i:i + 1])
            r = c.reply()
            assert r.startswith("5"), f"{end!r}: {r!r}"
            c.expect_ok("NOOP")
    assert sluiced.spool.count() == 0


def test_large_message_and_long_lines(sluiced):
    """A 5 MB body of long lines and odd bytes arrives intact."""
    rnd = random.Random(7)
    lines = []
    size = 0
    while size < 5 * 1024 * 1024:
        n = rnd.choice([0, 1, 78, 998, 5000, 70000])
        line = bytes(rnd.choice(b"abcdefXYZ .\t\x80\xff") for _ in range(n))
        lines.append(line)
        size += n + 2
    msg = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    with Raw(sluiced.port, timeout=60) as c:
        c.ehlo()
        r = c.send_message("a@client.sluice.test", ["b@local.test"], msg)
        assert r.startswith("250 2.0.0 Ok: queued as"), r
    assert sluiced.spool.message(mid_of(r)) == msg


# ---- connection limits ----

def connect_raw(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    return s


def test_max_connections(make_sluiced):
    d = make_sluiced(conf={"server": {"max_connections": "3"}})
    held = [d.connect() for _ in range(3)]
    try:
        for c in held:
            assert c.greeting.startswith("220")
        with Raw(d.port, greet=False) as c4:
            c4.expect("421 4.7.0")
            c4.expect_closed()
        for c in held:          # the three still work
            c.ehlo()
            c.expect_ok("NOOP")
        held.pop().cmd("QUIT")
        # a slot is free again once the server has seen the close
        def try_connect():
            with Raw(d.port, greet=False) as c:
                r = c.reply()
                if r and r.startswith("220"):
                    return True
            return False
        deadline = time.monotonic() + 10
        while not try_connect():
            assert time.monotonic() < deadline, "slot never freed"
            time.sleep(0.05)
    finally:
        for c in held:
            c.close()


def test_max_connections_per_ip(make_sluiced):
    d = make_sluiced(conf={"server": {"max_connections_per_ip": "2",
                                      "trusted_networks": "192.0.2.0/24",
                                      "relay_domains": "local.test"}})
    a, b = d.connect(), d.connect()
    try:
        assert a.greeting.startswith("220") and b.greeting.startswith("220")
        with Raw(d.port, greet=False) as c3:
            c3.expect("421 4.7.0")
            c3.expect_closed()
        a.ehlo()
        r = a.send_message("x@client.sluice.test", ["y@local.test"],
                           b"Subject: still works\r\n\r\n")
        assert r.startswith("250 2.0.0 Ok: queued as")
        assert d.spool.message(mid_of(r)) == b"Subject: still works\r\n\r\n"
    finally:
        a.close()
        b.close()


def test_max_connections_per_ip_trusted_exempt(make_sluiced):
    """Trusted clients are exempt from the per-address limit (listener.c)."""
    d = make_sluiced(conf={"server": {"max_connections_per_ip": "2"}})
    held = [d.connect() for _ in range(4)]
    try:
        for c in held:
            assert c.greeting.startswith("220")
    finally:
        for c in held:
            c.close()


def test_client_disconnect_mid_data(sluiced):
    """A client that drops in DATA: nothing stored, the server goes on."""
    with Raw(sluiced.port) as c:
        c.ehlo()
        c.expect_ok("MAIL FROM:<a@client.sluice.test>")
        c.expect_ok("RCPT TO:<b@local.test>")
        c.send("DATA\r\n")
        c.expect("354")
        c.send(b"Subject: DROPPED\r\n\r\npartial")
    sluiced.wait_log(r"connection closed")
    with Raw(sluiced.port) as c:
        c.ehlo()
        r = c.send_message("a@client.sluice.test", ["b@local.test"],
                           b"Subject: after\r\n\r\n")
        assert r.startswith("250 2.0.0")
    assert sluiced.spool.bodies_containing(b"DROPPED") == []
    assert sluiced.spool.count() == 1
    hdr, rest = split_received(sluiced.spool.body(mid_of(r)))
    assert rest == b"Subject: after\r\n\r\n"


def test_disconnect_right_after_dot(sluiced):
    """The client sends the final dot and closes without waiting: the
    message is complete, so it is stored, and the server copes."""
    msg = b"Subject: hit and run\r\n\r\nbye\r\n"
    for i in range(5):
        c = Raw(sluiced.port)
        c.send(b"EHLO client.sluice.test\r\nMAIL FROM:<a@client.sluice.test>\r\n"
               b"RCPT TO:<b@local.test>\r\nDATA\r\n")
        c.expect("250")
        c.expect("250")
        c.expect("250")
        c.expect("354")
        c.send(msg + b".\r\nQUIT\r\n")
        c.close()
    wait_until(lambda: sluiced.spool.count() == 5, timeout=15,
         what="5 messages stored")
    for mid in sluiced.spool.mids():
        assert sluiced.spool.message(mid) == msg
    with Raw(sluiced.port) as c:
        c.ehlo()


def test_many_transactions_in_one_write(sluiced):
    """100 whole transactions in one write: 100 messages, replies in order."""
    n = 100
    batch = b"EHLO client.sluice.test\r\n"
    msgs = []
    for i in range(n):
        msg = b"Subject: batch %d\r\n\r\n" % i + b"body %d\r\n" % i * (i % 7)
        msgs.append(msg)
        batch += (b"MAIL FROM:<a%d@client.sluice.test>\r\n" % i
                  + b"RCPT TO:<b%d@local.test>\r\n" % i
                  + b"DATA\r\n" + dot_stuff(msg) + b".\r\n")
    batch += b"QUIT\r\n"
    with Raw(sluiced.port, timeout=60) as c:
        c.send(batch)
        c.expect("250")
        mids = []
        for i in range(n):
            c.expect("250 2.1.0")
            c.expect("250 2.1.5")
            c.expect("354")
            mids.append(mid_of(c.expect("250 2.0.0 Ok: queued as")))
        c.expect("221")
        c.expect_closed()
    assert mids == sorted(mids) and len(set(mids)) == n
    for i, mid in enumerate(mids):
        assert sluiced.spool.message(mid) == msgs[i]
        assert sluiced.spool.recipients(mid)[0]["addr"] == f"b{i}@local.test"


def test_client_that_reads_late(sluiced):
    """A client that pipelines NOOP and reads no reply until the server has
    stopped reading (its send stalls; 64 MB are offered, far more than the
    socket buffers hold, where 5 000 NOOPs fit and proved nothing), then
    reads: every NOOP is answered, in order, and the session goes on."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", sluiced.port))
    msg = b"Subject: late\r\n\r\n"
    then = (b"VRFY x\r\nMAIL FROM:<a@client.sluice.test>\r\n"
            b"RCPT TO:<b@local.test>\r\nBDAT %d LAST\r\n%sQUIT\r\n"
            % (len(msg), msg))
    with sock:
        flood = NoopFlood(sock, b"EHLO client.sluice.test\r\n").send(
            64 << 20)
        assert flood.stalled, "the server read 64 MB without a reply read"
        lines = flood.drain(then=then)
    ends = [l for l in lines if l[3:4] == b" "]
    assert ends[0].startswith(b"220 ") and ends[1].startswith(b"250 ")
    assert ends[2:2 + flood.noops] == [b"250 2.0.0 Ok"] * flood.noops
    rest = [l.decode() for l in ends[2 + flood.noops:]]
    assert [r[:9] for r in rest] == ["252 2.5.2", "250 2.1.0", "250 2.1.5",
                                     "250 2.0.0", "221 2.0.0"], rest
    assert sluiced.spool.message(mid_of(rest[3])) == msg


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_bdat_huge_size_does_not_bypass_limit(make_sluiced):
    """BDAT sizes near 2^64 must not wrap the size check: a chunk over
    max_message_size is swallowed, not buffered, however big it claims to be
    (else a client fills the server's memory)."""
    import os
    env = dict(os.environ)     # ASan: keep freed memory out of the RSS
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1"
    d = make_sluiced(conf={"server": {"max_message_size": "1024"}}, env=env)
    with Raw(d.port, timeout=60) as c:
        c.ehlo()
        c.expect_ok("MAIL FROM:<a@client.sluice.test>")
        c.expect_ok("RCPT TO:<b@local.test>")
        c.send(b"BDAT 10\r\n0123456789")
        c.expect("250 2.0.0 10 octets")
        # 10 + (2^64 - 1) wraps to 9 in 64 bits
        c.send(b"BDAT 18446744073709551615\r\n")
        base = rss_kb(d.pid)
        block = b"A" * (1 << 20)
        for _ in range(40):
            c.send(block)
        c.send(b"NOOP\r\n")
        c.sock.settimeout(0.5)
        try:
            extra = c.reply()
        except TimeoutError:
            extra = None
        assert extra is None, f"reply inside a chunk: {extra!r}"
        grown = rss_kb(d.pid) - base
        assert grown < 20 * 1024, \
            f"sluiced grew {grown} KB buffering a chunk over the limit"
