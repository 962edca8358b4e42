"""
Delivery to receivers that answer badly: temporary and permanent refusals,
421 throttling, dropped connections, garbage, missing line ends, endless
multi-line replies, stalls; queue lifetime; DSNs (bounces, NOTIFY=NEVER,
NOTIFY=SUCCESS).

Each test: dnsmasq gives dest.test one MX (mx1.dest.test, 127.0.0.11) where
a scripted receiver plays its part; the sender's domain back.test has a
receiver at 127.0.0.2 that collects the DSNs. Every message must end
delivered once (counted by its X-Token header) or bounced, and the spool
must end empty with "Message finished" in the log.
"""
import re

import pytest

from delivery_util import (DEFAULT_EXT, inject, make_body, net,  # noqa: F401
                           parse_dsn, send)
from sluicetest import log_times, wait_until

SENDER = "sender@back.test"
MX1 = "127.0.0.11"


def world(net, make_sluiced, script=None, ext=DEFAULT_EXT, delays=None,
          **delivery):
    net.dns.mx("dest.test", "mx1.dest.test", 10).host("mx1.dest.test", MX1)
    net.dns.start()
    rx = net.receiver(MX1, script=script, ext=ext, delays=delays)
    back = net.back()
    d = make_sluiced(conf=net.conf(**delivery))
    return d, rx, back


def finished_re(mid):
    """The line that ends a message, in either form (issue 9 renames it)."""
    return (rf"MID {mid:016X} Message finished status=done|"
            rf"Message finished MID {mid:016X} done")


def queued_re(mid):
    return rf"MID {mid:016X} queued for delivery"


def finished(d, n, timeout=30):
    """Spool empty; at least n "Message finished" in the log."""
    wait_until(lambda: d.spool.count() == 0, timeout=timeout,
               what="an empty spool")
    wait_until(lambda: len(re.findall(
        r"Info: Message finished MID [0-9A-F]{16} done", d.log_text())) >= n,
        timeout=5, what=f"{n} 'Message finished' lines")


def first_time(reply):
    """A script action: reply the first time a token is seen, then normal."""
    seen = set()

    def act(ctx):
        tok = re.search(rb"X-Token: (\S+)", ctx.data or b"")
        key = tok.group(1) if tok else ctx.rcpts and ctx.rcpts[0]
        if key in seen:
            return None
        seen.add(key)
        return reply
    return act


def test_451_then_success_delivered_once(net, make_sluiced):
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        "data_end": first_time("451 4.3.0 Try again later")})
    mid = send(d.port, SENDER, ["a@dest.test"], make_body("t451"))
    wait_until(lambda: rx.count() >= 1, timeout=15, what="the retry")
    finished(d, 1)
    assert rx.tokens() == {"t451": 1}
    assert len(rx.refused) == 1 and rx.refused[0].reply.startswith("451")
    log = d.log_text()
    # the retry came after retry_initial (1s), not at once (sluiced's clock)
    (t_def, _), = log_times(log, rf"MID {mid:016X} RID \[0\] deferred")
    (t_done, _), = log_times(log, finished_re(mid))
    assert t_done - t_def >= 0.99, t_done - t_def
    assert re.search(rf"MID {mid:016X} RID \[0\] deferred attempts=1 "
                     r"retry_in=1s reply=\"?451 4\.3\.0 Try again later", log)
    assert back.count() == 0       # no DSN for a delay that ended well


@pytest.mark.parametrize("stage", ["rcpt", "data_end"])
def test_550_dsn_reaches_sender(net, make_sluiced, stage):
    refusal = ("550 5.1.1 <bad@dest.test>: Recipient address rejected: "
               "User unknown" if stage == "rcpt" else
               "554 5.7.1 Message content rejected, id=42")

    def rcpt(ctx):
        return refusal if ctx.addr == "bad@dest.test" else None
    script = {"rcpt": rcpt} if stage == "rcpt" else {"data_end": refusal}
    d, rx, back = world(net, make_sluiced, script=lambda n: script)
    rcpts = ["good@dest.test", "bad@dest.test"] if stage == "rcpt" else \
        ["bad@dest.test"]
    mid = send(d.port, SENDER, rcpts, make_body("t550"),
               mail_opts=["RET=HDRS", "ENVID=env-550"])
    wait_until(lambda: back.count() >= 1, timeout=15, what="the bounce")
    finished(d, 2)
    assert back.count() == 1, back.messages
    m = back.messages[0]
    assert m.mail_from == "" and m.rcpts == [SENDER]
    msg, per_msg, rs = parse_dsn(m.data)
    assert per_msg.get("Original-Envelope-Id") == "env-550", per_msg
    assert len(rs) == 1, rs         # only the refused recipient
    r = rs[0]
    assert r["final-recipient"].endswith("bad@dest.test"), r
    assert r["action"] == "failed", r
    want = "5.1.1" if stage == "rcpt" else "5.7.1"
    assert r["status"] == want, r
    assert r["diagnostic-code"].startswith("smtp;"), r
    assert refusal in " ".join(r["diagnostic-code"].split()), r
    assert "mx1.dest.test" in r.get("remote-mta", ""), r
    # a human-readable part first, the original's headers last
    parts = msg.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    assert "X-Token: t550" in parts[-1].as_string()
    assert f"{mid:016X}" in msg.as_string()
    if stage == "rcpt":
        assert rx.tokens() == {"t550": 1}
        assert rx.messages[0].rcpts == ["good@dest.test"]
    else:
        assert rx.count() == 0 and len(rx.refused) == 1
    # attempted once: a 5xx is final
    assert len(re.findall(rf"Info: Delivery start DCID \d+ MID {mid:016X} to "
                          r"RID \[\d\] rcpt=bad@", d.log_text())) == 1


@pytest.mark.parametrize("stage", ["greeting", "mail"])
def test_421_throttles_then_delivers(net, make_sluiced, stage):
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        stage: "421 4.7.0 Too many connections, slow down"} if n == 1 else {})
    send(d.port, SENDER, ["a@dest.test"], make_body("t421"))
    d.wait_log(r"destination throttled destination=dest\.test limit=\d+ "
               r"reply=\"?[^\n]*421 4\.7\.0 Too many")
    wait_until(lambda: rx.count() >= 1, timeout=15, what="delivery after "
               "the pause")
    finished(d, 1)
    assert rx.tokens() == {"t421": 1}
    # the next connection waited for throttle_pause (2s)
    gap = rx.conn_times[1] - rx.conn_times[0]
    assert gap >= 1.5, f"reconnected {gap:.2f}s after a 421"
    assert back.count() == 0


def test_dropped_mid_data_retried_delivered_once(net, make_sluiced):
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        "data": "drop_mid_data"} if n == 1 else {})
    toks = ["drop-1", "drop-2"]
    for t in toks:
        send(d.port, SENDER, [f"{t}@dest.test"], make_body(t, extra=b"x" * 5000
                                                           + b"\r\n"))
    wait_until(lambda: rx.count() >= 2, timeout=15, what="both delivered")
    finished(d, 2)
    assert rx.tokens() == {t: 1 for t in toks}
    assert rx.conns >= 2
    assert re.search(r"Delayed DCID \d+ MID [0-9A-F]{16} to RID \[0\] rcpt=drop-\d@dest\.test .*reply=\"?451 4\.4\.2 "
                     r"lost connection", d.log_text()), d.log_text()[-3000:]
    assert back.count() == 0


# (stage, behaviour, what the log says about the first session)
BAD = [
    ("greeting", "garbage", r"malformed reply"),
    ("mail", "garbage", r"malformed reply"),
    ("rcpt", "nocrlf", r"timed out"),
    ("ehlo", "multiline", r"malformed reply"),
    ("data_end", "multiline", r"malformed reply"),
    ("data_end", "stall", r"timed out while sending end of data"),
    ("greeting", "stall", r"timed out"),
]


@pytest.mark.parametrize("stage,behaviour,why", BAD,
                         ids=[f"{b}-at-{s}" for s, b, _ in BAD])
def test_bad_receiver_fails_cleanly_then_delivers(net, make_sluiced, stage,
                                                  behaviour, why):
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        stage: behaviour} if n == 1 else {})
    # the first message alone, so that it meets the bad session (with two,
    # sluiced may open a second connection that takes both)
    mid = send(d.port, SENDER, ["bad-1@dest.test"], make_body("bad-1"))
    wait_until(lambda: rx.count() >= 1, timeout=30, what="delivery after the "
               "receiver came good")
    send(d.port, SENDER, ["bad-2@dest.test"], make_body("bad-2"))
    wait_until(lambda: rx.count() >= 2, timeout=10, what="the second message")
    finished(d, 2)
    assert rx.tokens() == {"bad-1": 1, "bad-2": 1}, rx.tokens()
    assert rx.conns >= 2
    d.wait_log(why)
    # it failed once, temporarily, and was retried
    d.wait_log(rf"MID {mid:016X} RID \[0\] deferred attempts=1 ")
    # the 2s timeouts were the ones used, not the 5 and 10 minute
    # defaults: by sluiced's clock the first attempt failed within seconds
    log = d.log_text()
    (t_q, _), = log_times(log, queued_re(mid))
    (t_def, _), = log_times(log, rf"MID {mid:016X} RID \[0\] deferred "
                            r"attempts=1 ")
    (t_done, _), = log_times(log, finished_re(mid))
    took = t_done - t_q
    assert t_def - t_q < 60, f"the first attempt failed after {t_def - t_q}s"
    assert back.count() == 0, "a bounce for a temporary failure"
    print(f"{behaviour} at {stage}: delivered after {took:.1f}s, "
          f"{rx.conns} connections")


def test_queue_lifetime_expiry_bounces(net, make_sluiced):
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        "rcpt": "451 4.7.1 Greylisted, try again later"}, queue_lifetime="3s")
    mid = send(d.port, SENDER, ["a@dest.test"], make_body("expire"))
    wait_until(lambda: back.count() >= 1, timeout=30, what="the expiry bounce")
    finished(d, 2)
    # by sluiced's clock: expired no sooner than the 3s lifetime, and not
    # at the 5 days of the default
    log = d.log_text()
    (t_q, _), = log_times(log, queued_re(mid))
    (t_exp, _), = log_times(log, rf"MID {mid:016X} expired")
    assert 2.99 <= t_exp - t_q < 60, f"expired after {t_exp - t_q:.3f}s"
    assert rx.count() == 0
    tries = re.findall(rf"Delivery start DCID \d+ MID {mid:016X} to RID \[0\]",
                       d.log_text())
    assert len(tries) >= 2, "not retried before expiring"
    assert back.count() == 1
    _, _, rs = parse_dsn(back.messages[0].data)
    assert len(rs) == 1
    r = rs[0]
    assert r["action"] == "failed", r
    # issue 9 item 21: RFC 3463 5.4.7, delivery time expired; the last
    # reply is the diagnostic, as the receiver gave it
    assert r["status"] == "5.4.7", r
    assert " ".join(r["diagnostic-code"].split()) == \
        "smtp; 451 4.7.1 Greylisted, try again later", r
    assert re.search(rf"MID {mid:016X} expired", d.log_text())


@pytest.mark.parametrize("how", ["expiry", "550"])
def test_notify_never_no_bounce(net, make_sluiced, how):
    reply = "451 4.7.1 Greylisted" if how == "expiry" else \
        "550 5.1.1 User unknown"
    d, rx, back = world(net, make_sluiced, script=lambda n: {"rcpt": reply},
                        queue_lifetime="3s")
    mid = send(d.port, SENDER, ["a@dest.test"], make_body("never"),
               rcpt_opts=["NOTIFY=NEVER"])
    # a DSN is queued before its original leaves the spool, so once the
    # spool is empty, no bounce exists anywhere
    finished(d, 1, timeout=20)
    assert d.spool.count() == 0
    log = d.log_text()
    assert re.search(rf"Message finished MID {mid:016X} done", log)
    assert "bounced" not in log
    assert back.count() == 0 and back.conns == 0
    assert len(rx.refused) == 0 and rx.count() == 0
    if how == "expiry":
        assert re.search(rf"MID {mid:016X} expired", log)


def test_notify_success_peer_without_dsn(net, make_sluiced):
    """A peer that does not offer DSN: we say "relayed" ourselves."""
    d, rx, back = world(net, make_sluiced)
    assert "DSN" not in DEFAULT_EXT
    mid = send(d.port, SENDER, ["a@dest.test", "b@dest.test"],
               make_body("success"),
               rcpt_opts=["NOTIFY=SUCCESS,FAILURE"])
    wait_until(lambda: back.count() >= 1, timeout=15, what="success notice")
    finished(d, 2)
    assert rx.tokens() == {"success": 1}
    assert back.count() == 1
    m = back.messages[0]
    assert m.mail_from == "" and m.rcpts == [SENDER]
    msg, _, rs = parse_dsn(m.data)
    assert sorted(r["final-recipient"].split(";")[-1].strip() for r in rs) \
        == ["a@dest.test", "b@dest.test"], rs
    for r in rs:
        assert r["action"] in ("relayed", "delivered"), r
        assert r["status"].startswith("2."), r
    # RET is for failures only (RFC 3461 4.3): headers only
    assert "Body of success" not in msg.as_string()
    assert re.search(rf"MID {mid:016X} success notice", d.log_text())


def test_notify_success_peer_with_dsn(net, make_sluiced):
    """A peer that offers DSN takes the NOTIFY on (RFC 3461 5.2.2): the
    request goes with the RCPT, and we send no "relayed" notice."""
    d, rx, back = world(net, make_sluiced, ext=DEFAULT_EXT + ("DSN",))
    mid = send(d.port, SENDER, ["a@dest.test"], make_body("dsnpeer"),
               rcpt_opts=["NOTIFY=SUCCESS"])
    finished(d, 1)
    assert rx.tokens() == {"dsnpeer": 1}
    assert rx.messages[0].rcpt_params == ["NOTIFY=SUCCESS"]
    assert back.count() == 0, back.messages
    assert not re.search(rf"MID {mid:016X} success notice", d.log_text())


def test_many_domains_split_transactions_mixed_outcomes(net, make_sluiced):
    """One message, six recipients at two domains, two recipients per
    transaction: each recipient gets exactly one copy, the refused one
    one bounce that lists only it."""
    net.dns.mx("other.test", "mx.other.test", 10).host("mx.other.test",
                                                        "127.0.0.12")

    def rcpt(ctx):
        return "550 5.1.1 No such user" if ctx.addr == "x3@dest.test" \
            else None
    d, rx, back = world(net, make_sluiced, script=lambda n: {"rcpt": rcpt},
                        recipients_per_transaction=2)
    other = net.receiver("127.0.0.12")
    rcpts = [f"x{i}@dest.test" for i in range(4)] + \
        ["y0@other.test", "y1@other.test"]
    send(d.port, SENDER, rcpts, make_body("split"))
    wait_until(lambda: back.count() >= 1, timeout=15, what="the bounce")
    finished(d, 2)
    got = rx.rcpt_counts()
    got.update(other.rcpt_counts())
    assert got == {r: 1 for r in rcpts if r != "x3@dest.test"}, got
    # at most two recipients per transaction
    for m in rx.messages + other.messages:
        assert len(m.rcpts) <= 2, m
    assert len(rx.messages) == 2 and len(other.messages) == 1
    _, _, rs = parse_dsn(back.messages[0].data)
    assert [r["final-recipient"].split(";")[-1].strip() for r in rs] == \
        ["x3@dest.test"], rs
    assert rs[0]["status"] == "5.1.1"
    assert back.count() == 1


def test_bounce_that_bounces_is_dropped(net, make_sluiced):
    """The DSN itself refused: no DSN about a DSN (no loop), and both
    messages leave the spool."""
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        "rcpt": "550 5.1.1 No such user"})
    back.script = lambda n: {"rcpt": "550 5.7.1 We refuse bounces"}
    mid = send(d.port, SENDER, ["a@dest.test"], make_body("double"))
    finished(d, 2)
    dsn = d.wait_log(rf"MID {mid:016X} bounced dsn_mid=([0-9A-F]{{16}})"
                     ).group(1)
    d.wait_log(rf"MID {dsn} double bounce: not returned")
    assert len(re.findall(r"bounced dsn_mid", d.log_text())) == 1
    assert back.count() == 0 and len(back.refused) == 0
    assert back.conns >= 1


def test_421_under_load_lowers_concurrency_and_pauses(net, make_sluiced):
    """A 421 on one of several connections: a pause of throttle_pause for
    the whole destination, then everything delivered once."""
    N = 60
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        "mail": "421 4.7.0 Too busy"} if n == 3 else {},
        delays={"data_end": 0.02}, destination_concurrency=5)
    inject(d.port, [(SENDER, [f"l{i}@dest.test"], make_body(f"l{i}"))
                    for i in range(N)], sessions=5)
    wait_until(lambda: rx.count() >= N, timeout=30, what=f"{N} delivered")
    finished(d, N)
    toks = rx.tokens()
    assert len(toks) == N and set(toks.values()) == {1}
    d.wait_log(r"destination throttled destination=dest\.test limit=\d+")
    # no connection opened in the pause: by sluiced's own log, the first
    # connection it opened after taking the 421 came throttle_pause (2s)
    # later. ("New SMTP connection" is logged once connected: one whose
    # connect was already under way shows within a few ms; ms timestamps,
    # so 1.99 s allows for their rounding.)
    log = d.log_text()
    (t421, _), = log_times(log, r"destination throttled destination=dest")
    later = [t - t421 for t, _ in log_times(log, r"DCID \d+ New SMTP "
                                            r"connection") if t >= t421]
    assert later and min(x for x in later if x > 0.05) >= 1.99, later
    assert back.count() == 0


def test_partial_451_retries_only_the_deferred_recipient(net, make_sluiced):
    """RCPT 451 for one recipient of three: the others are delivered at
    once and never again; the retry carries only the deferred one."""
    def rcpt(ctx):
        return "451 4.2.1 Mailbox busy" if ctx.addr == "r1@dest.test" and \
            ctx.conn == 1 and not ctx.rcv.messages else None
    d, rx, back = world(net, make_sluiced, script=lambda n: {"rcpt": rcpt})
    rcpts = ["r0@dest.test", "r1@dest.test", "r2@dest.test"]
    mid = send(d.port, SENDER, rcpts, make_body("partial"))
    wait_until(lambda: sum(rx.rcpt_counts().values()) >= 3, timeout=15,
               what="all three recipients")
    finished(d, 1)
    assert rx.rcpt_counts() == {r: 1 for r in rcpts}
    assert [m.rcpts for m in rx.messages] == [
        ["r0@dest.test", "r2@dest.test"], ["r1@dest.test"]]
    assert re.search(rf"MID {mid:016X} RID \[1\] deferred attempts=1",
                     d.log_text())
    assert back.count() == 0


def test_sigterm_with_deferred_mail_then_restart(net, make_sluiced):
    """Deferred mail survives a clean stop: after the restart it is retried
    and delivered once (attempts kept in the spool)."""
    good = {"on": False}
    d, rx, back = world(net, make_sluiced, script=lambda n: {} if good["on"]
                        else {"rcpt": "451 4.3.0 Not now"})
    mids = [send(d.port, SENDER, [f"t{i}@dest.test"], make_body(f"term{i}"))
            for i in range(3)]
    wait_until(lambda: len(re.findall(r"deferred attempts=2",
                                      d.log_text())) >= 3,
               timeout=15, what="three messages deferred twice")
    d.stop()
    assert d.spool.count() == 3
    for mid in mids:
        (r,) = d.spool.recipients(mid)
        assert r["attempts"] >= 2 and r["state"] == 1, r     # DEFERRED
        assert "451 4.3.0 Not now" in r["last_reply"]
    good["on"] = True
    d.start()
    d.wait_log(r"spool recovered dir=\S+ messages=3")
    wait_until(lambda: rx.count() >= 3, timeout=15, what="delivery after "
               "the restart")
    finished(d, 3)
    assert rx.tokens() == {f"term{i}": 1 for i in range(3)}
    assert back.count() == 0


def test_expiry_while_a_delivery_is_in_flight(net, make_sluiced):
    """The lifetime ends while a session hangs (data_timeout 2s): the
    outcome that comes later finds the message expired and bounces it."""
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        "data_end": "stall"}, queue_lifetime="3s")
    mid = send(d.port, SENDER, ["a@dest.test"], make_body("hang"))
    wait_until(lambda: back.count() >= 1, timeout=20, what="the bounce")
    finished(d, 2)
    assert rx.count() == 0
    _, _, rs = parse_dsn(back.messages[0].data)
    assert rs[0]["action"] == "failed" and rs[0]["status"] == "5.4.7", rs
    assert "timed out" in rs[0]["diagnostic-code"], rs
    assert re.search(rf"MID {mid:016X} expired", d.log_text())


def test_receiver_closes_after_every_message(net, make_sluiced):
    """A receiver that hangs up right after each 250 (one message per
    connection): a message sent into the closing connection is retried,
    nothing is lost or doubled."""
    d, rx, back = world(net, make_sluiced, script=lambda n: {
        "data_end": "ok_close"})
    toks = [f"oc{i}" for i in range(10)]
    inject(d.port, [(SENDER, [f"{t}@dest.test"], make_body(t)) for t in toks],
           sessions=3)
    wait_until(lambda: rx.count() >= 10, timeout=30, what="10 delivered")
    finished(d, 10)
    assert rx.tokens() == {t: 1 for t in toks}
    assert rx.conns >= 10
    assert back.count() == 0


def test_body_arrives_byte_for_byte(net, make_sluiced):
    """Dot-stuffing and 8-bit data: the receiver gets exactly what was
    sent, after the Received: header sluice adds."""
    d, rx, back = world(net, make_sluiced)
    body = (b"Subject: dots\r\nX-Token: dots\r\n\r\n"
            b".\r\n..\r\n.leading dot\r\n...three\r\n"
            b"8-bit: \xc3\xa9\xe2\x82\xac \xff\xfe\r\n"
            + b"L" * 990 + b"\r\n" + b"\r\n" + b". \r\n" + b"end\r\n")
    with __import__("smtplib").SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("client.sluice.test")
        assert s.mail(SENDER, ["BODY=8BITMIME"])[0] == 250
        assert s.rcpt("a@dest.test")[0] == 250
        # smtplib's data() dot-stuffs and ends with CRLF.CRLF itself
        code, resp = s.data(body)
        assert code == 250, resp
    wait_until(lambda: rx.count() == 1, timeout=15, what="delivery")
    finished(d, 1)
    got = rx.messages[0].data
    assert got.startswith(b"Received: ")
    assert got.endswith(body), got[-200:]
    i = got.index(b"Subject: dots")
    assert got[i:] == body
    assert "BODY=8BITMIME" in rx.messages[0].mail_params


@pytest.mark.parametrize("notify", [None, "FAILURE"])
def test_delay_notice_once_then_delivered(net, make_sluiced, notify):
    """delay_warning = 2s and a receiver that defers three times: one
    "delayed" DSN (none when NOTIFY leaves DELAY out), then the message is
    delivered once and no other notice follows."""
    tries = {"n": 0}

    def rcpt(ctx):
        tries["n"] += 1
        return "451 4.7.1 Greylisted" if tries["n"] <= 3 else None
    d, rx, back = world(net, make_sluiced, script=lambda n: {"rcpt": rcpt},
                        delay_warning="2s")
    mid = send(d.port, SENDER, ["a@dest.test"], make_body("late"),
               rcpt_opts=[f"NOTIFY={notify}"] if notify else [])
    wait_until(lambda: rx.count() >= 1, timeout=20, what="the delivery")
    finished(d, 2 if notify is None else 1)
    assert rx.tokens() == {"late": 1}
    log = d.log_text()
    if notify is None:
        assert back.count() == 1, back.messages
        _, _, rs = parse_dsn(back.messages[0].data)
        assert len(rs) == 1
        assert rs[0]["action"] == "delayed", rs
        assert rs[0]["status"] == "4.4.7", rs         # issue 9 item 21
        assert "451 4.7.1 Greylisted" in rs[0]["diagnostic-code"], rs
        assert len(re.findall(rf"MID {mid:016X} delay notice", log)) == 1
    else:
        assert back.count() == 0
        assert "delay notice" not in log


def test_long_line_folded(net, make_sluiced):
    """Issue 9 item 10: a body line longer than 998 octets goes out folded
    with CRLF SPACE (as Postfix's smtp_line_length_limit does): every line
    the receiver gets fits RFC 5321 4.5.3.1.6, and taking the folds out
    gives the message back."""
    d, rx, back = world(net, make_sluiced)
    long_line = b"X-Long: " + b"y" * 2500
    body = (b"Subject: long\r\nX-Token: long\r\n" + long_line + b"\r\n\r\n"
            + b"z" * 1500 + b"\r\nend\r\n")
    send(d.port, SENDER, ["a@dest.test"], body)
    wait_until(lambda: rx.count() == 1, timeout=15, what="delivery")
    got = rx.messages[0].data
    for line in got.split(b"\r\n"):
        assert len(line) <= 998, len(line)
    assert got.count(b"\r\n ") == 3       # 2508 = 998+997+513, 1500
    assert got.replace(b"\r\n ", b"").endswith(body)
    finished(d, 1)
