# SPDX-License-Identifier: MIT
"""
Interop with an independent MTA: Debian's Postfix, as a private instance
(postfix_util.Postfix), on both sides of sluiced.

Outbound (sluiced's smtp client into Postfix's smtpd): plain and STARTTLS,
PIPELINING (seen on the wire by a recording tap), SIZE (Postfix's
message_size_limit refuses a big message: it is bounced with 5.3.4, never
retried), DSN parameters (NOTIFY, ORCPT, RET, ENVID reach Postfix's queue
file), 8BITMIME (BODY=8BITMIME and the 8-bit bytes arrive unchanged).
What Postfix accepted is read back from its hold queue with postcat.

Inbound (Postfix's smtp client relaying into sluiced): plain and STARTTLS,
with the DSN parameters Postfix's sendmail was given.

A bug shared by sluiced's client and `sluice sink` (built on sluiced's own
server) cannot hide here.
"""
import re
import shutil

import pytest

from delivery_util import FAST, Receiver, parse_dsn
from ops_util import traversable_dir
from postfix_util import Postfix, Tap
from sluicetest import (free_port, make_cert, mid_of, split_received,
                        wait_until)

SIZE_LIMIT = 100000


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("pfcert"), "pf.sluice.test")


@pytest.fixture(scope="module")
def postfix(cert):
    # Postfix's processes run as user postfix: pytest's 0700 temp dirs are
    # closed to them
    root = traversable_dir("sluice-postfix-")
    pf = None
    try:
        pf = Postfix(root, *cert, size_limit=SIZE_LIMIT)
        yield pf
    finally:
        if pf is not None:
            pf.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def back():
    """The sender's domain: DSNs from sluiced land here."""
    r = Receiver("127.0.0.1", free_port(), name="back")
    yield r
    r.stop()


def to_postfix(make_sluiced, port, back, **extra):
    delivery = dict(FAST, **{k: str(v) for k, v in extra.items()})
    return make_sluiced(conf={"delivery": delivery, "routes": {
        "dest.test": f"[127.0.0.1]:{port}",
        "back.test": f"[127.0.0.1]:{back.port}"}})


def body(token, extra=b""):
    return (f"From: <sender@back.test>\r\nTo: <a@dest.test>\r\n"
            f"Subject: interop {token}\r\nX-Token: {token}\r\n\r\n").encode() \
        + b"Body of " + token.encode() + b"\r\n.dot line\r\n" + extra


def send(d, rcpts, msg, mail_opts=(), rcpt_opts=()):
    with d.connect() as c:
        c.ehlo()
        c.expect_ok("MAIL FROM:<sender@back.test>" + "".join(
            " " + o for o in mail_opts))
        for r in rcpts:
            c.expect_ok(f"RCPT TO:<{r}>" + "".join(" " + o for o in rcpt_opts))
        c.send("DATA\r\n")
        c.expect("354")
        c.send(re.sub(rb"(?m)^\.", b"..", msg) + b".\r\n")
        r = c.expect("250 2.0.0 Ok: queued as")
        c.cmd("QUIT")
    return mid_of(r)


def done(d, mid):
    d.wait_log(rf"Message finished MID {mid:016X} done", timeout=30)


# ---- sluiced -> Postfix ----

def test_delivery_plain_pipelined(postfix, make_sluiced, back):
    tap = Tap(postfix.plain_port)
    try:
        d = to_postfix(make_sluiced, tap.port, back)
        msg = body("plain1")
        mid = send(d, ["a@dest.test", "b@dest.test"], msg)
        done(d, mid)
        env, head, got = postfix.find_held("plain1")
        wire = tap.client_text()
        chunks = tap.chunks()
    finally:
        tap.close()
    # Postfix holds the body as sent, dot-stuffing undone
    assert got == b"Body of plain1\n.dot line\n", got
    assert "X-Token: plain1" in head
    assert re.search(r"(?m)^recipient: a@dest\.test$", env), env
    assert re.search(r"(?m)^recipient: b@dest\.test$", env), env
    assert re.search(r"(?m)^sender: sender@back\.test$", env), env
    # PIPELINING (RFC 2920): MAIL and both RCPTs went out in one write,
    # before Postfix's reply to MAIL (held back by the tap) could arrive
    assert b"PIPELINING" in b"".join(x for c in chunks for t, x in c
                                     if t == "s")
    grouped = [x for c in chunks for t, x in c if t == "c"
               and b"MAIL FROM:" in x and x.count(b"RCPT TO:") == 2]
    assert grouped, [x for c in chunks for t, x in c if t == "c"]
    assert b"MAIL FROM:<sender@back.test> SIZE=" in wire
    # Postfix's log: accepted from sluiced, put on hold
    assert re.search(r"postfix/smtpd\[\d+\]: \w+: client=localhost\[127\.0\.0"
                     r"\.1\]", postfix.log()), postfix.log()[-2000:]


def test_delivery_starttls(postfix, make_sluiced, back):
    d = to_postfix(make_sluiced, postfix.port, back)
    mid = send(d, ["tls@dest.test"], body("tls1"))
    done(d, mid)
    env, head, got = postfix.find_held("tls1")
    d.wait_log(r"DCID \d+ TLS established relay=127\.0\.0\.1\[127\.0\.0\.1\] "
               r"version=TLSv1\.[23] cipher=\S+")
    # Postfix's own Received: line says the session was in TLS
    assert re.search(r"\(using TLSv1\.[23] with cipher \S+", head), head
    assert re.search(r"with ESMTPS id", head), head


@pytest.mark.parametrize("how", ["advertised", "enforced"])
def test_size_limit_bounces_5_3_4(postfix, make_sluiced, back, how):
    """advertised: Postfix's EHLO says SIZE 100000 and sluiced does not
    send a bigger message; enforced: Postfix does not say it, takes the
    data and refuses it with its own 552. Either way one attempt, and the
    sender gets a 5.3.4 bounce."""
    port = postfix.port if how == "advertised" else postfix.nosize_port
    d = to_postfix(make_sluiced, port, back)
    big = body("big-" + how, extra=(b"x" * 998 + b"\r\n")
               * (SIZE_LIMIT // 1000 + 20))
    mid = send(d, ["big@dest.test"], big)
    wait_until(lambda: back.count() >= 1, timeout=30, what="the bounce")
    done(d, mid)
    _, _, rs = parse_dsn(back.messages[0].data)
    assert rs[0]["status"] == "5.3.4", rs
    assert rs[0]["action"] == "failed", rs
    assert "552" in rs[0].get("diagnostic-code", ""), rs
    rejected = re.findall(rf"Rejected DCID \d+ MID {mid:016X} to RID \[0\] "
                          r".*reply="
                          r'"?(552 5\.3\.4 [^"\n]*)', d.log_text())
    assert len(rejected) == 1, d.log_text()[-3000:]
    if how == "enforced":
        # the words are Postfix's, after it read the data
        assert "message file too big" in rejected[0], rejected
    else:
        assert "of the peer (100000)" in rejected[0], rejected
    assert not any(b"big-" + how.encode() in postfix.postcat(p)[2]
                   for p in postfix.held().values())


def test_dsn_parameters_reach_postfix(postfix, make_sluiced, back):
    tap = Tap(postfix.plain_port)
    try:
        d = to_postfix(make_sluiced, tap.port, back)
        mid = send(d, ["dsn@dest.test"], body("dsn1"),
                   mail_opts=["RET=HDRS", "ENVID=env-interop-42"],
                   rcpt_opts=["NOTIFY=SUCCESS,FAILURE",
                              "ORCPT=rfc822;orig@dest.test"])
        done(d, mid)
        env, head, got = postfix.find_held("dsn1")
        wire = tap.client_text().decode(errors="replace")
    finally:
        tap.close()
    assert re.search(r"MAIL FROM:<sender@back\.test>.* RET=HDRS", wire), wire
    assert "ENVID=env-interop-42" in wire
    assert re.search(r"RCPT TO:<dsn@dest\.test> .*NOTIFY=SUCCESS,FAILURE",
                     wire), wire
    assert "ORCPT=rfc822;orig@dest.test" in wire
    # Postfix recorded them in its queue file
    attrs = dict(re.findall(r"(?m)^named_attribute: (\w+)=(.*)$", env))
    assert attrs.get("envelope_id") == "env-interop-42", env
    assert attrs.get("ret_flags") == "2", env               # HDRS
    assert attrs.get("notify_flags") == "6", env            # SUCCESS|FAILURE
    assert attrs.get("dsn_orig_rcpt") == "rfc822;orig@dest.test", env
    # Postfix took the NOTIFY on: sluiced sends no "relayed" notice itself
    assert back.count() == 0
    assert not re.search(rf"MID {mid:016X} success notice", d.log_text())


def test_8bitmime_arrives_unchanged(postfix, make_sluiced, back):
    tap = Tap(postfix.plain_port)
    eight = b"8-bit: \xc3\xa9t\xc3\xa9 \xe2\x82\xac caf\xc3\xa9\r\n"
    try:
        d = to_postfix(make_sluiced, tap.port, back)
        mid = send(d, ["eight@dest.test"], body("eight1", extra=eight),
                   mail_opts=["BODY=8BITMIME"])
        done(d, mid)
        env, head, got = postfix.find_held("eight1")
        wire = tap.client_text()
    finally:
        tap.close()
    assert re.search(rb"MAIL FROM:<sender@back\.test>[^\r]* BODY=8BITMIME",
                     wire), wire[:300]
    assert eight.rstrip(b"\r\n") in got
    # Postfix recorded the body as 8-bit (from BODY=8BITMIME)
    assert re.search(r"(?m)^named_attribute: encoding=8bit$", env), env


# ---- Postfix -> sluiced ----

def postfix_into(postfix, d):
    postfix.relay_to("in.test", d.port)


def test_postfix_relays_into_sluiced(postfix, make_sluiced):
    d = make_sluiced(conf={"server": {"relay_domains": "in.test"}})
    postfix_into(postfix, d)
    msg = b"Subject: from postfix\r\nX-Token: pf-in-1\r\n\r\nhello sluiced\r\n"
    postfix.sendmail("app@pf.sluice.test", ["u1@in.test", "u2@in.test"], msg,
                     args=["-N", "success,failure", "-R", "hdrs",
                           "-V", "env-pf-7"])
    mid = wait_until(lambda: next(iter(d.spool.bodies_containing(
        b"pf-in-1")), None), timeout=60, what="the message from Postfix")
    e = d.spool.envelope(mid)
    assert e["sender"] == "app@pf.sluice.test"
    assert e["envid"] == "env-pf-7"
    assert e["helo"] == "pf.sluice.test"
    rs = d.spool.recipients(mid)
    assert sorted(r["addr"] for r in rs) == ["u1@in.test", "u2@in.test"]
    assert all(r["notify"] != 0 for r in rs), rs
    stored = d.spool.message(mid)
    assert b"hello sluiced" in stored and b"X-Token: pf-in-1" in stored
    # Postfix saw the 250 and logged the delivery as sent
    wait_until(lambda: re.search(r"to=<u1@in\.test>, relay=127\.0\.0\.1\["
                                 r"127\.0\.0\.1\]:\d+.*status=sent \(250 "
                                 r"2\.0\.0 Ok: queued as %016X" % mid,
                                 postfix.log()), timeout=30,
               what="Postfix's status=sent line")


def test_postfix_starttls_into_sluiced(postfix, make_sluiced, cert):
    c, k = cert
    d = make_sluiced(conf={"server": {"relay_domains": "in.test",
                                      "tls_cert": str(c), "tls_key": str(k)}})
    postfix_into(postfix, d)
    msg = b"Subject: from postfix in TLS\r\nX-Token: pf-tls-1\r\n\r\nhi\r\n"
    postfix.sendmail("app@pf.sluice.test", ["t@in.test"], msg)
    mid = wait_until(lambda: next(iter(d.spool.bodies_containing(
        b"pf-tls-1")), None), timeout=60, what="the message from Postfix")
    received, _ = split_received(d.spool.body(mid))
    assert re.search(rb"with ESMTPS id %016X" % mid, received), received
    d.wait_log(r"ICID \d+ TLS established version=TLSv1\.[23]")
    wait_until(lambda: re.search(r"Trusted TLS connection established|"
                                 r"Untrusted TLS connection established|"
                                 r"Anonymous TLS connection established",
                                 postfix.log()), timeout=30,
               what="Postfix's TLS log line")
