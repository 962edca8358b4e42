# SPDX-License-Identifier: MIT
"""test_sink.py: `sluice sink` seen by real clients (smtplib, swaks, raw
sockets): each failure rule with its exact reply, byte-identical capture,
the HTTP API, exact statistics, 1000 concurrent connections, bad flags,
bad rules files and misbehaving clients."""
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from sinkutil import connect, read_reply, run_sluice


def smtp(sink):
    c = smtplib.SMTP("127.0.0.1", sink.port, timeout=10)
    c.ehlo("client.test")
    return c


def rules_file(tmp_path, text):
    p = tmp_path / "sink.rules"
    p.write_text(text)
    return str(p)


# ---- failure rules ----

RULES = """\
# recipients
rcpt *@bounce.test 550 5.1.1 User unknown
rcpt defer+*@* 451 4.7.1 Try again later
mail spammer@* 553 5.7.1 Sender refused
"""


def test_rcpt_patterns_smtplib(make_sink, tmp_path):
    s = make_sink("--rules", rules_file(tmp_path, RULES))
    c = smtp(s)
    assert c.mail("a@src.test")[0] == 250
    assert c.rcpt("x@bounce.test") == (550, b"5.1.1 User unknown")
    assert c.rcpt("defer+x@example.test") == (451, b"4.7.1 Try again later")
    assert c.rcpt("ok@example.test")[0] == 250
    c.rset()
    assert c.mail("spammer@evil.test") == (553, b"5.7.1 Sender refused")
    c.quit()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="no swaks")
@pytest.mark.parametrize("rcpt,line", [
    ("x@bounce.test", "<** 550 5.1.1 User unknown"),
    ("defer+y@a.test", "<** 451 4.7.1 Try again later"),
])
def test_rcpt_patterns_swaks(make_sink, tmp_path, rcpt, line):
    s = make_sink("--rules", rules_file(tmp_path, RULES))
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % s.port,
                        "--to", rcpt, "--from", "a@src.test"],
                       capture_output=True, text=True, timeout=30)
    assert line in r.stdout, r.stdout
    assert r.returncode != 0


@pytest.mark.skipif(shutil.which("swaks") is None, reason="no swaks")
@pytest.mark.parametrize("rule,line", [
    ("rate 5xx 1 at mail", "<** 554 5.3.0 Injected permanent failure"),
    ("rate 4xx 1 at rcpt", "<** 451 4.3.0 Injected temporary failure"),
    ("rate 421 1 at data", "<** 421 4.3.0 Injected failure, closing connection"),
    ("rate 450 1 at data-end 4.2.1 Busy", "<** 450 4.2.1 Busy"),
    ("rate 4xx 1 at greeting",
     "<** 421 4.3.0 Injected failure, closing connection"),
    ("limit recipients 1/min total 451 4.7.1 Slow down",
     "<** 451 4.7.1 Slow down"),
    ("max-connections 1", None),
])
def test_rules_swaks(make_sink, rule, line):
    s = make_sink("--rule", rule)
    if rule.startswith("limit"):      # the first recipient uses the quota
        c = smtp(s)
        c.sendmail("a@src.test", ["b@dst.test"], b"Subject: x\r\n\r\nx\r\n")
        c.quit()
    hold = smtp(s) if rule.startswith("max-connections") else None
    if hold:
        line = "<** 421 4.7.0 Too many connections, try again later"
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % s.port,
                        "--to", "x@dst.test", "--from", "a@src.test"],
                       capture_output=True, text=True, timeout=30)
    assert line in r.stdout, r.stdout
    assert r.returncode != 0
    if hold:
        hold.quit()


@pytest.mark.parametrize("rule,stage,code,text", [
    ("rate 4xx 1 at rcpt", "rcpt", 451, b"4.3.0 Injected temporary failure"),
    ("rate 5xx 1 at rcpt", "rcpt", 554, b"5.3.0 Injected permanent failure"),
    ("rate 5xx 1 at mail", "mail", 554, b"5.3.0 Injected permanent failure"),
    ("rate 450 1 at mail 4.2.1 Mailbox busy", "mail", 450,
     b"4.2.1 Mailbox busy"),
    ("rate 4xx 1 at helo", "helo", 451, b"4.3.0 Injected temporary failure"),
    ("rate 4xx 1 at data", "data", 451, b"4.3.0 Injected temporary failure"),
    ("rate 5xx 1 at data-end", "eom", 554,
     b"5.3.0 Injected permanent failure"),
])
def test_rate_at_stage(make_sink, rule, stage, code, text):
    s = make_sink("--rule", rule)
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=10)
    got = c.ehlo("client.test")
    if stage == "helo":
        assert got == (code, text)
        return
    got = c.mail("a@src.test")
    if stage == "mail":
        assert got == (code, text)
        return
    got = c.rcpt("b@dst.test")
    if stage == "rcpt":
        assert got == (code, text)
        return
    if stage == "data":
        assert c.docmd("DATA") == (code, text)
        return
    assert c.data(b"Subject: x\r\n\r\nbody\r\n") == (code, text)
    c.quit()


def test_rate_421_closes(make_sink):
    s = make_sink("--rule", "rate 421 1 at rcpt")
    c = smtp(s)
    c.mail("a@src.test")
    assert c.rcpt("b@dst.test") == (
        421, b"4.3.0 Injected failure, closing connection")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        c.noop()


def test_rate_at_greeting(make_sink):
    s = make_sink("--rule", "rate 4xx 1 at greeting")
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", s.port, timeout=10)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error.startswith(b"4.3.0")


def test_rate_is_random_and_seeded(make_sink):
    def run():
        s = make_sink("--rule", "rate 4xx 0.5 at rcpt", seed=42)
        c = smtp(s)
        c.mail("a@src.test")
        codes = [c.rcpt("r%d@dst.test" % i)[0] for i in range(40)]
        c.quit()
        return codes
    a, b = run(), run()
    assert a == b
    assert 5 < a.count(451) < 35 and a.count(250) + a.count(451) == 40


def test_greeting_421_after(make_sink):
    s = make_sink("--greeting-421-after", "2")
    for _ in range(2):
        smtp(s).quit()
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", s.port, timeout=10)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error.startswith(b"4.7.0")


def test_drop_in_data(make_sink):
    s = make_sink("--drop-in-data", "1")
    c = smtp(s)
    c.mail("a@src.test")
    c.rcpt("b@dst.test")
    assert c.docmd("DATA")[0] == 354
    c.send(b"Subject: x\r\n\r\n" + b"y" * 100 + b"\r\n")
    # no reply ever comes: the connection is gone
    c.sock.settimeout(5)
    assert c.sock.recv(100) == b""
    st = s.stats()
    assert st["dropped"] == 1 and st["messages"] == 0


def test_drop_in_data_smtplib(make_sink):
    s = make_sink("--rule", "drop-in-data 1")
    c = smtp(s)
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        c.sendmail("a@src.test", ["b@dst.test"], b"Subject: x\r\n\r\nhi\r\n")


def test_delay(make_sink):
    s = make_sink("--delay", "300ms")
    t0 = time.monotonic()
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=10)
    t1 = time.monotonic()
    assert c.noop()[0] == 250
    t2 = time.monotonic()
    c.quit()
    assert t1 - t0 >= 0.28 and t2 - t1 >= 0.28


def test_max_connections(make_sink):
    s = make_sink("--max-connections", "2")
    a, b = smtp(s), smtp(s)
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", s.port, timeout=10)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error.startswith(b"4.7.0")
    a.quit()
    time.sleep(0.2)
    c = smtp(s)      # a slot is free again
    c.quit()
    b.quit()
    st = s.stats()
    assert st["refused"] == 1 and st["peak_connections"] == 2


def test_limit_messages_per_ip(make_sink, tmp_path):
    s = make_sink("--rules", rules_file(
        tmp_path, "limit messages 3/min per-ip 421 4.7.0 Slow down\n"))
    c = smtp(s)
    for i in range(3):
        c.sendmail("a@src.test", ["b@dst.test"], b"Subject: %d\r\n\r\nx\r\n" % i)
    assert c.mail("a@src.test") == (421, b"4.7.0 Slow down")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        c.noop()
    # the window has not moved: a new connection is refused too
    c = smtp(s)
    assert c.mail("a@src.test")[0] == 421


def test_limit_recipients_total(make_sink):
    s = make_sink("--rule", "limit recipients 2/min total 451 4.7.1")
    c = smtp(s)
    c.mail("a@src.test")
    assert c.rcpt("r1@dst.test")[0] == 250
    c2 = smtp(s)
    c2.mail("a@src.test")
    assert c2.rcpt("r2@dst.test")[0] == 250
    code, text = c.rcpt("r3@dst.test")
    assert (code, text[:5]) == (451, b"4.7.1")
    assert c2.rcpt("r4@dst.test")[0] == 451
    c.quit()
    c2.quit()


# ---- capture and the API ----

BODY = (b"From: a@src.test\r\nTo: b@dst.test\r\nSubject: capture\r\n"
        b"X-Folded: one\r\n two\r\n\r\n"
        b"line one\r\n.leading dot\r\n..two dots\r\n\r\n"
        b"8bit: \xc3\xa9t\xc3\xa9\r\nlast line\r\n")


def test_capture_byte_identical_data(make_sink):
    s = make_sink()
    c = smtp(s)
    c.sendmail("a@src.test", ["b@dst.test", "c@dst.test"], BODY,
               mail_options=["BODY=8BITMIME"])
    c.quit()
    assert s.messages() == [BODY]
    idx = s.index()
    assert len(idx) == 1
    e = idx[0]
    assert e["mail_from"] == "a@src.test"
    assert e["rcpt_to"] == ["b@dst.test", "c@dst.test"]
    assert e["size"] == len(BODY) and e["8bitmime"] is True
    assert e["client"] == "127.0.0.1" and e["icid"] >= 1 and e["time"] > 0


def test_capture_byte_identical_bdat(make_sink):
    s = make_sink()
    sock = connect(s.port)
    f = sock.makefile("rb")
    assert read_reply(f)[0] == 220
    sock.sendall(b"EHLO c.test\r\n")
    code, text = read_reply(f)
    assert code == 250 and "CHUNKING" in text
    half = len(BODY) // 2
    sock.sendall(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b@dst.test>\r\n"
                 b"BDAT %d\r\n" % half + BODY[:half] +
                 b"BDAT %d LAST\r\n" % (len(BODY) - half) + BODY[half:])
    assert [read_reply(f)[0] for _ in range(4)] == [250, 250, 250, 250]
    sock.sendall(b"QUIT\r\n")
    assert read_reply(f)[0] == 221
    sock.close()
    assert s.messages() == [BODY]


def test_smtputf8_capture(make_sink):
    s = make_sink()
    c = smtp(s)
    body = "Subject: caf\u00e9\r\n\r\nh\u00e9llo\r\n".encode()
    c.sendmail("j\u00f6rg@src.test", ["r\u00e9@dst.test"], body,
               mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    c.quit()
    assert s.messages() == [body]
    e = s.index()[0]
    assert e["smtputf8"] is True and e["rcpt_to"] == ["r\u00e9@dst.test"]


def test_ehlo_extensions(make_sink):
    s = make_sink()
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=10)
    c.ehlo("c.test")
    for ext in ("pipelining", "8bitmime", "smtputf8", "size", "chunking",
                "enhancedstatuscodes"):
        assert c.has_extn(ext), ext
    c.quit()


def test_http_api(make_sink):
    s = make_sink(http=True)
    c = smtp(s)
    c.sendmail("a@src.test", ["b@dst.test"], BODY)
    c.sendmail("x@src.test", ["y@dst.test"], b"Subject: second\r\n\r\nz\r\n")
    c.quit()
    lst = s.api("/api/messages")
    assert lst["count"] == 2
    first = lst["messages"][0]
    assert first["mail_from"] == "a@src.test"
    one = s.api("/api/messages/" + first["id"])
    assert one["raw"] == BODY.decode()
    assert ["Subject", "capture"] in one["headers"]
    assert ["X-Folded", "one two"] in one["headers"]
    raw = s.api("/api/messages/%s/raw" % first["id"], raw=True)
    assert raw == BODY
    with pytest.raises(Exception) as e:
        s.api("/api/messages/nosuch")
    assert getattr(e.value, "code", None) == 404
    st = s.api("/api/stats")
    assert st["messages"] == 2
    assert s.api("/api/messages", method="DELETE") == {"deleted": 2}
    assert s.api("/api/messages")["count"] == 0
    assert s.messages() == []


# ---- statistics ----

def test_stats_exact(make_sink):
    s = make_sink(maildir=False)
    conns = [smtp(s) for _ in range(5)]         # 5 at once: the peak
    sizes = 0
    for i, c in enumerate(conns):
        for j in range(3):
            body = b"Subject: %d/%d\r\n\r\n" % (i, j) + b"x" * (100 * i + j) \
                + b"\r\n"
            sizes += len(body)
            c.sendmail("a@src.test", ["r%d@dst.test" % k for k in range(j + 1)],
                       body)
    for c in conns:
        c.quit()
    time.sleep(0.2)
    st = s.stats()
    assert st["messages"] == 15
    assert st["recipients"] == 5 * (1 + 2 + 3)
    assert st["bytes"] == sizes
    assert st["peak_connections"] == 5
    assert st["connections"] == 5 and st["active"] == 0
    assert st["transactions"] == 15
    assert st["replies"]["220"] == 5 and st["replies"]["221"] == 5
    assert st["replies"]["354"] == 15
    s.stop()
    out = s.stdout_text()
    assert "messages 15, recipients 30, bytes %d" % sizes in out


# ---- load ----

@pytest.mark.slow
def test_1000_concurrent_connections(make_sink):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2200:
        pytest.skip("RLIMIT_NOFILE hard limit %d is too low" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096))
                                                if hard != resource.RLIM_INFINITY
                                                else 4096, hard))
    s = make_sink(maildir=False)
    socks = []
    try:
        for _ in range(1000):
            socks.append(connect(s.port, timeout=30))
        files = [x.makefile("rb") for x in socks]
        for f in files:
            assert read_reply(f)[0] == 220
        st = s.stats()
        assert st["active"] == 1000 and st["peak_connections"] == 1000
        # every connection sends one message
        for x in socks:
            x.sendall(b"EHLO c.test\r\nMAIL FROM:<a@src.test>\r\n"
                      b"RCPT TO:<b@dst.test>\r\nDATA\r\n")
        for f in files:
            assert [read_reply(f)[0] for _ in range(4)] == [250, 250, 250, 354]
        for x in socks:
            x.sendall(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        for f in files:
            assert [read_reply(f)[0] for _ in range(2)] == [250, 221]
    finally:
        for x in socks:
            x.close()
    time.sleep(0.3)
    st = s.stats()
    assert st["messages"] == 1000 and st["peak_connections"] == 1000
    assert st["refused"] == 0


# ---- bad input ----

@pytest.mark.parametrize("args,needle", [
    (["--bogus"], "unrecognized option"),
    (["--listen", "nowhere"], "--listen: 'nowhere' is not an address"),
    (["--listen", "127.0.0.1:99999"], "--listen"),
    (["--maildir", "/tmp/x", "--discard"], "exclude each other"),
    (["--seed", "abc"], "--seed: 'abc' is not a number"),
    (["--delay", "soon"], "--delay: delay: 'soon' is not a duration"),
    (["--max-connections", "0"], "is not a count above 0"),
    (["--drop-in-data", "2"], "is not a probability"),
    (["--rule", "rate 4xx 0.1 at lunch"], "'lunch' is not a stage"),
    (["--rule", "frobnicate 1"], "unknown rule 'frobnicate'"),
    (["--http", "x"], "--http: 'x' is not an address"),
    (["--max-size", "12"], "--max-size"),
    (["extra"], "unexpected argument 'extra'"),
])
def test_bad_flags(args, needle):
    r = run_sluice("sink", *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr, r.stderr


@pytest.mark.parametrize("text,lineno,needle", [
    ("rcpt *@x.test 250 ok\n", 1, "'250' is not a reply code 400-599"),
    ("# fine\n\nrcpt *@x.test\n", 3, "expected PATTERN CODE"),
    ("delay 200ms\nrate 4xx 1.5 at rcpt\n", 2, "'1.5' is not a probability"),
    ("limit messages 10/week per-ip\n", 1, "'/week' is not /s, /min or /h"),
    ("limit bananas 10/min\n", 1, "'bananas' is not messages or recipients"),
    ("rcpt *@x 550 4.1.1 wrong class\n", 1,
     "'4.1.1' is not an enhanced status code of class 5"),
    ("max-connections many\n", 1, "'many' is not a count above 0"),
])
def test_bad_rules_file(tmp_path, text, lineno, needle):
    p = tmp_path / "bad.rules"
    p.write_text(text)
    r = run_sluice("sink", "--rules", str(p))
    assert r.returncode == 2, r.stderr
    assert "%s:%d: " % (p, lineno) in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def test_missing_rules_file(tmp_path):
    r = run_sluice("sink", "--rules", str(tmp_path / "none"))
    assert r.returncode == 2 and "No such file" in r.stderr


def test_misbehaving_clients(make_sink):
    s = make_sink()
    # garbage, a bare command out of order, binary junk, an over-long line
    sock = connect(s.port)
    f = sock.makefile("rb")
    assert read_reply(f)[0] == 220
    sock.sendall(b"FROB\r\n")
    assert read_reply(f)[:1] == (500,)
    sock.sendall(b"RCPT TO:<a@b.test>\r\n")
    assert read_reply(f)[0] == 503
    sock.sendall(b"MAIL FROM:<a@b.test>\r\n")
    assert read_reply(f)[0] == 503            # no EHLO yet
    sock.sendall(b"\xff\xfe\x00junk\r\n")
    assert read_reply(f)[0] == 501
    sock.sendall(b"EHLO c.test\r\n" + b"NOOP " + b"x" * 10000 + b"\r\n")
    assert read_reply(f)[0] == 250
    assert read_reply(f)[0] == 500
    sock.sendall(b"DATA\r\n")
    assert read_reply(f)[0] == 503
    # half a message and then gone
    sock2 = connect(s.port)
    f2 = sock2.makefile("rb")
    read_reply(f2)
    sock2.sendall(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n"
                  b"RCPT TO:<c@d.test>\r\nDATA\r\nSubject: half\r\n")
    assert [read_reply(f2)[0] for _ in range(4)] == [250, 250, 250, 354]
    sock2.close()
    # a client that connects and leaves at once
    connect(s.port).close()
    # meanwhile a good client is served
    c = smtp(s)
    c.sendmail("a@src.test", ["b@dst.test"], b"Subject: ok\r\n\r\nfine\r\n")
    c.quit()
    sock.sendall(b"QUIT\r\n")
    assert read_reply(f)[0] == 221
    sock.close()
    assert s.messages() == [b"Subject: ok\r\n\r\nfine\r\n"]


def test_too_many_errors_closes(make_sink):
    s = make_sink()
    sock = connect(s.port)
    f = sock.makefile("rb")
    read_reply(f)
    codes = []
    try:
        for _ in range(1100):
            sock.sendall(b"BOGUS\r\n")
            code, _ = read_reply(f)
            if code is None:
                break
            codes.append(code)
            if code == 421:
                break
    except OSError:
        pass
    assert 421 in codes and set(codes) == {500, 421}
    sock.close()
    c = smtp(s)
    assert c.noop()[0] == 250
    c.quit()
