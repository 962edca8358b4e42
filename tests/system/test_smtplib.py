"""
Python's smtplib against sluiced: EHLO, plain and pipelined sends, SMTPUTF8,
8BITMIME and the DSN parameters. Each send checks the reply and that the
spooled message is the sent one byte for byte, after sluice's Received:.
"""
import smtplib

from sluicetest import Raw, dot_stuff, mid_of, split_received

MSG = (b"From: Alice <alice@client.sluice.test>\r\n"
       b"To: Bob <bob@local.test>\r\n"
       b"Subject: hello\r\n"
       b"Message-ID: <1@client.sluice.test>\r\n"
       b"\r\n"
       b"Hello Bob.\r\n"
       b".a line that starts with a dot\r\n"
       b"\r\n"
       b"  trailing space \r\n")


def smtp(d):
    return smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.sluice.test",
                        timeout=15)


def sendmail(s, sender, rcpts, msg, mail_options=(), rcpt_options=()):
    """smtplib's sendmail, returning the reply to the end of data."""
    code, resp = s.mail(sender, list(mail_options))
    assert code == 250, resp
    for r in rcpts:
        code, resp = s.rcpt(r, list(rcpt_options))
        assert code == 250, resp
    code, resp = s.data(msg)
    return code, resp


def test_ehlo_extensions(sluiced):
    with smtp(sluiced) as s:
        code, resp = s.ehlo()
        assert code == 250
        assert resp.startswith(b"mx.sluice.test")
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes",
                    "smtputf8", "dsn", "chunking"):
            assert s.has_extn(ext), f"{ext} not advertised: {resp!r}"
        assert s.esmtp_features["size"] == str(50 * 1024 * 1024)


def test_helo_then_send(sluiced):
    with smtp(sluiced) as s:
        code, _ = s.helo()
        assert code == 250
        code, resp = sendmail(s, "alice@client.sluice.test", ["bob@local.test"],
                              MSG)
        assert code == 250 and resp.startswith(b"2.0.0 Ok: queued as "), resp
        assert sluiced.spool.message(mid_of(resp)) == MSG
        hdr, _ = split_received(sluiced.spool.body(mid_of(resp)))
        assert b"with SMTP id" in hdr


def test_normal_send(sluiced):
    with smtp(sluiced) as s:
        s.ehlo()
        code, resp = sendmail(s, "alice@client.sluice.test", ["bob@local.test"],
                              MSG)
        assert code == 250, resp
    mid = mid_of(resp)
    sp = sluiced.spool
    assert sp.message(mid) == MSG
    env = sp.envelope(mid)
    assert env["sender"] == "alice@client.sluice.test"
    assert env["nrcpt"] == 1
    assert env["client_addr"] == "127.0.0.1"
    assert env["helo"] == "client.sluice.test"
    assert env["size"] == len(sp.body(mid))
    assert [r["addr"] for r in sp.recipients(mid)] == ["bob@local.test"]
    hdr, _ = split_received(sp.body(mid))
    assert hdr.startswith(b"Received: from client.sluice.test ([127.0.0.1])")
    assert f"with ESMTP id {mid:016X}".encode() in hdr
    assert b"for <bob@local.test>" in hdr


def test_sendmail_several_messages_one_session(sluiced):
    sent = {}
    with smtp(sluiced) as s:
        s.ehlo()
        for i in range(5):
            msg = MSG + f"message {i}\r\n".encode()
            code, resp = sendmail(s, "alice@client.sluice.test",
                                  ["bob@local.test", f"c{i}@local.test"], msg)
            assert code == 250, resp
            sent[mid_of(resp)] = msg
    assert len(sent) == 5
    for mid, msg in sent.items():
        assert sluiced.spool.message(mid) == msg
        hdr, _ = split_received(sluiced.spool.body(mid))
        assert b"for <" not in hdr      # two recipients: none named


def test_pipelined_send(sluiced):
    """A whole transaction in one write; replies come in order."""
    with Raw(sluiced.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<alice@client.sluice.test>\r\n"
               b"RCPT TO:<bob@local.test>\r\n"
               b"RCPT TO:<carol@local.test>\r\n"
               b"RCPT TO:<dave@local.test>\r\n"
               b"DATA\r\n")
        assert c.expect("250").startswith("250 2.1.0")
        for _ in range(3):
            assert c.expect("250").startswith("250 2.1.5")
        c.expect("354")
        # the end of data, the next transaction and QUIT in one write
        c.send(dot_stuff(MSG) + b".\r\n"
               b"MAIL FROM:<>\r\nRCPT TO:<eve@local.test>\r\nDATA\r\n")
        r1 = c.expect("250 2.0.0 Ok: queued as ")
        c.expect("250 2.1.0")
        c.expect("250 2.1.5")
        c.expect("354")
        c.send(dot_stuff(MSG) + b".\r\nNOOP\r\nQUIT\r\n")
        r2 = c.expect("250 2.0.0 Ok: queued as ")
        c.expect("250 2.0.0")
        c.expect("221")
        c.expect_closed()
    sp = sluiced.spool
    assert sp.message(mid_of(r1)) == MSG
    assert sp.message(mid_of(r2)) == MSG
    assert [r["addr"] for r in sp.recipients(mid_of(r1))] == [
        "bob@local.test", "carol@local.test", "dave@local.test"]
    assert sp.envelope(mid_of(r2))["sender"] == ""


def test_smtputf8(sluiced):
    msg = ("From: Jösé <jösé@clïent.sluice.test>\r\n"
           "To: 用户@例子.广告\r\n"
           "Subject: ünïcödé\r\n\r\nGrüße\r\n").encode()
    with smtp(sluiced) as s:
        s.ehlo()
        code, resp = sendmail(s, "jösé@clïent.sluice.test",
                              ["用户@例子.广告"], msg,
                              mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250, resp
    mid = mid_of(resp)
    sp = sluiced.spool
    assert sp.message(mid) == msg
    env = sp.envelope(mid)
    assert env["sender"] == "jösé@clïent.sluice.test"
    assert env["flags"] & 2, "SMTPUTF8 flag not stored"
    assert sp.recipients(mid)[0]["addr"] == "用户@例子.广告"
    assert b"with UTF8SMTP id" in split_received(sp.body(mid))[0]


def test_smtputf8_sendmail_mail_options(sluiced):
    with smtp(sluiced) as s:
        s.ehlo()
        refused = s.sendmail("ünï@client.sluice.test", ["bøb@local.test"],
                             MSG, mail_options=["SMTPUTF8"])
        assert refused == {}
    sp = sluiced.spool
    (mid,) = sp.mids()
    assert sp.message(mid) == MSG
    assert sp.recipients(mid)[0]["addr"] == "bøb@local.test"


def test_utf8_address_without_smtputf8_refused(sluiced):
    with Raw(sluiced.port) as c:
        c.ehlo()
        c.expect_ok("MAIL FROM:<alice@client.sluice.test>")
        c.send("RCPT TO:<bøb@local.test>\r\n")
        c.expect("553 5.6.7")
        c.send("MAIL FROM:<ünï@client.sluice.test>\r\n")
        c.expect("503")     # the transaction is still open
        c.expect_ok("RSET")
        c.send("MAIL FROM:<ünï@client.sluice.test>\r\n")
        c.expect("553 5.6.7")


def test_8bitmime_body(sluiced):
    msg = (b"Subject: 8bit\r\nContent-Type: text/plain; charset=latin1\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n"
           + bytes(range(0x80, 0x100)) + b"\r\n"
           + "Grüße, ça va? — ✓\r\n".encode()
           + b"\x01\x02\x7f control bytes\r\n")
    with smtp(sluiced) as s:
        s.ehlo()
        code, resp = sendmail(s, "alice@client.sluice.test", ["bob@local.test"],
                              msg, mail_options=["BODY=8BITMIME"])
        assert code == 250, resp
    mid = mid_of(resp)
    assert sluiced.spool.message(mid) == msg
    assert sluiced.spool.envelope(mid)["flags"] & 1, "8BITMIME flag not stored"


def test_size_param_accepted(sluiced):
    with smtp(sluiced) as s:
        s.ehlo()
        code, resp = sendmail(s, "alice@client.sluice.test", ["bob@local.test"],
                              MSG, mail_options=[f"SIZE={len(MSG)}"])
        assert code == 250, resp
    assert sluiced.spool.message(mid_of(resp)) == MSG


def test_dsn_parameters_stored(sluiced):
    with smtp(sluiced) as s:
        s.ehlo()
        code, resp = s.mail("alice@client.sluice.test",
                            ["RET=HDRS", "ENVID=QQ314159+2Bx"])
        assert code == 250, resp
        code, resp = s.rcpt("bob@local.test",
                            ["NOTIFY=SUCCESS,FAILURE",
                             "ORCPT=rfc822;bob+2Borig@local.test"])
        assert code == 250, resp
        code, resp = s.rcpt("carol@local.test", ["NOTIFY=NEVER"])
        assert code == 250, resp
        code, resp = s.rcpt("dave@local.test", ["NOTIFY=DELAY"])
        assert code == 250, resp
        code, resp = s.rcpt("erin@local.test")
        assert code == 250, resp
        code, resp = s.data(MSG)
        assert code == 250, resp
    mid = mid_of(resp)
    sp = sluiced.spool
    assert sp.message(mid) == MSG
    env = sp.envelope(mid)
    assert env["ret"] == 2                     # SPOOL_RET_HDRS
    assert env["envid"] == "QQ314159+2Bx"      # xtext as given
    rc = sp.recipients(mid)
    assert [r["rid"] for r in rc] == [0, 1, 2, 3]
    assert rc[0]["addr"] == "bob@local.test"
    assert rc[0]["notify"] == 2 | 4            # SUCCESS|FAILURE
    assert rc[0]["orcpt"] == "rfc822;bob+2Borig@local.test"
    assert rc[1]["notify"] == 1 and rc[1]["orcpt"] is None    # NEVER
    assert rc[2]["notify"] == 8                # DELAY
    assert rc[3]["notify"] == 0 and rc[3]["orcpt"] is None
    assert all(r["state"] == 0 for r in rc)    # queued


def test_dsn_ret_full(sluiced):
    with smtp(sluiced) as s:
        s.ehlo()
        code, resp = sendmail(s, "alice@client.sluice.test", ["bob@local.test"],
                              MSG, mail_options=["RET=FULL"],
                              rcpt_options=["NOTIFY=FAILURE,DELAY"])
        assert code == 250, resp
    mid = mid_of(resp)
    assert sluiced.spool.envelope(mid)["ret"] == 1
    assert sluiced.spool.recipients(mid)[0]["notify"] == 4 | 8


def test_dsn_bad_values(sluiced):
    with Raw(sluiced.port) as c:
        c.ehlo()
        c.send("MAIL FROM:<a@client.sluice.test> RET=SOME\r\n")
        c.expect("501")
        c.expect_ok("MAIL FROM:<a@client.sluice.test>")
        c.send("RCPT TO:<b@local.test> NOTIFY=NEVER,SUCCESS\r\n")
        c.expect("501")
        c.send("RCPT TO:<b@local.test> FOO=BAR\r\n")
        c.expect("555 5.5.4")
