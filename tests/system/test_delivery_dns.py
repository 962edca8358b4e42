"""
Delivery and DNS: MX order and fallback, equal preferences sharing the
load, implicit MX (A record), null MX and NXDOMAIN bounces, SERVFAIL holding
the whole domain until DNS recovers.

dnsmasq serves .test (delivery_util.Dns); receivers are scripted SMTP
servers on 127.0.0.x at the test's smtp_port. The sender's domain back.test
has its own receiver so that bounces come back to the test.
"""
import re
import time

from delivery_util import (inject, make_body, net, parse_dsn, send,  # noqa: F401
                           wait_spool_empty)
from sluicetest import wait_until

SENDER = "sender@back.test"


def finished(d, n):
    """The spool is empty and the log says Message finished n times or
    more (DSNs are messages too)."""
    wait_spool_empty(d)
    wait_until(lambda: len(re.findall(
        r"Message finished MID [0-9A-F]{16} done", d.log_text())) >= n,
        timeout=5, what=f"{n} 'Message finished' lines")


def one_bounce(net, d, mid):
    """The one DSN that reached the sender's domain: (parsed, per-rcpt)."""
    back = net.back()
    wait_until(lambda: back.count() >= 1, timeout=15, what="a bounce")
    finished(d, 2)
    assert back.count() == 1, back.messages
    m = back.messages[0]
    assert m.mail_from == "", m.mail_from          # DSNs come from <>
    assert m.rcpts == [SENDER], m.rcpts
    msg, per_msg, rcpts = parse_dsn(m.data)
    assert per_msg["Reporting-MTA"] == "dns; mx.sluice.test", per_msg
    # the returned headers are the original's (its MID in Received:)
    assert f"{mid:016X}" in msg.as_string()
    return msg, rcpts


def test_first_mx_down_second_gets_it(net, make_sluiced):
    # mx1 (preference 10) has nothing listening; mx2 (20) takes the mail
    net.dns.mx("dest.test", "mx1.dest.test", 10).host("mx1.dest.test",
                                                       "127.0.0.11")
    net.dns.mx("dest.test", "mx2.dest.test", 20).host("mx2.dest.test",
                                                       "127.0.0.12")
    net.dns.start()
    mx2 = net.receiver("127.0.0.12")
    d = make_sluiced(conf=net.conf())
    toks = [f"fallback-{i}" for i in range(3)]
    for t in toks:
        send(d.port, SENDER, [f"{t}@dest.test"], make_body(t))
    wait_until(lambda: mx2.count() >= 3, timeout=15, what="3 messages at mx2")
    finished(d, 3)
    assert mx2.tokens() == {t: 1 for t in toks}
    log = d.log_text()
    # it did try mx1 first, and was refused there
    assert re.search(r"connect failed reason=\"?connect to mx1\.dest\.test"
                     r"\[127\.0\.0\.11\]", log), log[-3000:]
    assert re.search(r"Message done DCID \d+ MID [0-9A-F]{16} to RID \[0\] "
                     r"rcpt=fallback-0@dest\.test "
                     r"relay=mx2\.dest\.test\[127\.0\.0\.12\]", log), log[-3000:]


def test_equal_preference_shares_load(net, make_sluiced):
    net.dns.mx("dest.test", "mxa.dest.test", 10).host("mxa.dest.test",
                                                       "127.0.0.11")
    net.dns.mx("dest.test", "mxb.dest.test", 10).host("mxb.dest.test",
                                                       "127.0.0.12")
    net.dns.start()
    a = net.receiver("127.0.0.11")
    b = net.receiver("127.0.0.12")
    # one message per connection, so that each connection picks a host
    d = make_sluiced(conf=net.conf(messages_per_connection=1))
    toks = [f"share-{i}" for i in range(20)]
    inject(d.port, [(SENDER, [f"{t}@dest.test"], make_body(t)) for t in toks],
           sessions=4)
    wait_until(lambda: a.count() + b.count() >= 20, timeout=20,
               what="20 deliveries")
    finished(d, 20)
    print(f"mxa got {a.count()}, mxb got {b.count()}")
    assert a.count() >= 2 and b.count() >= 2, (a.count(), b.count())
    both = a.tokens()
    for t, n in b.tokens().items():
        both[t] = both.get(t, 0) + n
    assert both == {t: 1 for t in toks}


def test_no_mx_uses_a_record(net, make_sluiced):
    net.dns.host("amx.test", "127.0.0.13")      # an A record, no MX
    net.dns.start()
    assert net.dns.ask("amx.test", "MX") == (0, [])     # NODATA
    rx = net.receiver("127.0.0.13")
    d = make_sluiced(conf=net.conf())
    send(d.port, SENDER, ["u@amx.test"], make_body("implicit"))
    wait_until(lambda: rx.count() == 1, timeout=15, what="delivery by A")
    finished(d, 1)
    assert rx.messages[0].rcpts == ["u@amx.test"]
    assert rx.tokens() == {"implicit": 1}
    assert re.search(r"Message done DCID \d+ MID [0-9A-F]{16} to RID \[0\] "
                     r"rcpt=u@amx\.test relay=amx\.test"
                     r"\[127\.0\.0\.13\]", d.log_text())


def test_null_mx_bounces_5_1_10(net, make_sluiced):
    net.dns.null_mx("null.test")
    net.dns.start()
    net.back()
    d = make_sluiced(conf=net.conf())
    mid = send(d.port, SENDER, ["nobody@null.test"], make_body("nullmx"))
    msg, rcpts = one_bounce(net, d, mid)
    assert len(rcpts) == 1, rcpts
    r = rcpts[0]
    assert r["action"] == "failed", r
    assert r["status"] == "5.1.10", r
    assert "nobody@null.test" in r["final-recipient"], r
    assert "null MX" in r.get("diagnostic-code", ""), r
    assert "X-Token: nullmx" in msg.as_string()    # the original's headers


def test_nxdomain_bounces_5_1_2(net, make_sluiced):
    net.dns.start()
    net.back()
    assert net.dns.ask("nx.test", "MX")[0] == 3     # NXDOMAIN
    d = make_sluiced(conf=net.conf())
    mid = send(d.port, SENDER, ["nobody@nx.test"], make_body("nxdomain"))
    msg, rcpts = one_bounce(net, d, mid)
    assert [r["status"] for r in rcpts] == ["5.1.2"], rcpts
    assert rcpts[0]["action"] == "failed"
    assert "nobody@nx.test" in rcpts[0]["final-recipient"]


def test_servfail_holds_domain_until_dns_recovers(net, make_sluiced):
    zone = net.dns.script("sf.test")            # SERVFAIL for now
    zone.zones["sf.test"] = [(10, "mx.sfhost.test")]
    net.dns.host("mx.sfhost.test", "127.0.0.14")
    net.dns.start()
    assert net.dns.ask("sf.test", "MX")[0] in (2, 5)    # SERVFAIL/REFUSED
    rx = net.receiver("127.0.0.14")
    d = make_sluiced(conf=net.conf())
    toks = ["sf-1", "sf-2", "sf-3"]
    for t in toks:
        send(d.port, SENDER, [f"{t}@sf.test"], make_body(t))
    d.wait_log(r"destination held destination=sf\.test reason=\"?451 4\.4\.3")
    # it keeps asking (retries), and keeps it all: nothing delivered,
    # nothing bounced
    q0 = zone.queries
    wait_until(lambda: zone.queries > q0 and
               len(re.findall(r"destination held destination=sf\.test",
                              d.log_text())) >= 2,
               timeout=15, what="a second DNS try, held again")
    assert rx.conns == 0 and rx.count() == 0
    assert d.spool.count() == 3
    assert "bounced" not in d.log_text()
    # DNS recovers: everything goes, once
    zone.fail = False
    wait_until(lambda: rx.count() >= 3, timeout=20, what="delivery after "
               "DNS recovered")
    finished(d, 3)
    assert rx.tokens() == {t: 1 for t in toks}
    assert net.backrx is None or net.backrx.count() == 0


def test_mx_without_address_bounces_5_4_4(net, make_sluiced):
    # the only MX host has no address (its name is NXDOMAIN)
    net.dns.mx("noaddr.test", "gone.noaddr-host.test", 10)
    net.dns.start()
    net.back()
    d = make_sluiced(conf=net.conf())
    mid = send(d.port, SENDER, ["u@noaddr.test"], make_body("noaddr"))
    _, rcpts = one_bounce(net, d, mid)
    assert [r["status"] for r in rcpts] == ["5.4.4"], rcpts


def test_all_mx_down_then_one_comes_up(net, make_sluiced):
    net.dns.mx("dest.test", "mx1.dest.test", 10).host("mx1.dest.test",
                                                       "127.0.0.11")
    net.dns.mx("dest.test", "mx2.dest.test", 20).host("mx2.dest.test",
                                                       "127.0.0.12")
    net.dns.start()
    d = make_sluiced(conf=net.conf())
    send(d.port, SENDER, ["a@dest.test"], make_body("down"))
    # both refused: the destination waits, the message stays
    d.wait_log(r"destination deferred destination=dest\.test")
    wait_until(lambda: len(re.findall(r"destination deferred destination="
                                      r"dest\.test", d.log_text())) >= 2,
               timeout=10, what="a second try")
    assert d.spool.count() == 1
    mx2 = net.receiver("127.0.0.12")
    wait_until(lambda: mx2.count() == 1, timeout=15, what="delivery to mx2")
    finished(d, 1)
    assert mx2.tokens() == {"down": 1}
    assert net.backrx is None


def test_servfail_until_expiry_bounces_4_4_3(net, make_sluiced):
    zone = net.dns.script("sf.test")            # SERVFAIL for good
    net.dns.start()
    net.back()
    d = make_sluiced(conf=net.conf(queue_lifetime="3s"))
    mid = send(d.port, SENDER, ["u@sf.test"], make_body("sfexpire"))
    _, rcpts = one_bounce(net, d, mid)
    assert len(rcpts) == 1
    assert rcpts[0]["action"] == "failed"
    # expired (issue 9 item 21): 5.4.7, the last reason the diagnostic
    assert rcpts[0]["status"] == "5.4.7", rcpts
    assert "451 4.4.3 DNS lookup failed" in rcpts[0]["diagnostic-code"], \
        rcpts
    assert zone.queries >= 2


def test_static_routes(net, make_sluiced):
    """[routes]: "[addr]:port" goes there without MX; "host:port" uses the
    MX of host; both override the domain's own MX."""
    net.dns.mx("routed.test", "mx1.dest.test", 10)      # ignored
    net.dns.host("mx1.dest.test", "127.0.0.11")
    net.dns.mx("relay.test", "mx.relay.test", 10).host("mx.relay.test",
                                                        "127.0.0.16")
    net.dns.start()
    wrong = net.receiver("127.0.0.11")
    lit = net.receiver("127.0.0.15")
    viamx = net.receiver("127.0.0.16")
    conf = net.conf()
    conf["routes"] = {"routed.test": f"[127.0.0.15]:{net.smtp_port}",
                      "other.test": f"relay.test:{net.smtp_port}"}
    d = make_sluiced(conf=conf)
    send(d.port, SENDER, ["a@routed.test"], make_body("lit"))
    send(d.port, SENDER, ["b@other.test"], make_body("viamx"))
    wait_until(lambda: lit.count() + viamx.count() >= 2, timeout=15,
               what="both routed")
    finished(d, 2)
    assert lit.tokens() == {"lit": 1}
    assert viamx.tokens() == {"viamx": 1}
    assert wrong.conns == 0


def test_best_mx_is_ourselves_bounces_5_4_6(net, make_sluiced):
    """Issue 9 item 9: sluiced listens on 127.0.0.1 at the smtp_port, and
    the best MX of dest.test is 127.0.0.1: the mail would come back to us.
    It fails with 5.4.6 'mail loops back to myself' (as Postfix does) and
    the worse MX is not tried either."""
    net.dns.mx("dest.test", "self.dest.test", 10).host("self.dest.test",
                                                        "127.0.0.1")
    net.dns.mx("dest.test", "mx2.dest.test", 20).host("mx2.dest.test",
                                                       "127.0.0.12")
    net.dns.start()
    mx2 = net.receiver("127.0.0.12")
    d = make_sluiced(conf=net.conf(), start=False)
    d.start(port=net.smtp_port)
    mid = send(d.port, SENDER, ["u@dest.test"], make_body("loop"))
    _, rcpts = one_bounce(net, d, mid)
    assert rcpts[0]["action"] == "failed", rcpts
    assert rcpts[0]["status"] == "5.4.6", rcpts
    assert "mail loops back to myself" in rcpts[0]["diagnostic-code"], rcpts
    assert mx2.count() == 0 and mx2.conns == 0
    # the only inbound connection was the test's own
    assert len(re.findall(r"New SMTP connection address=", d.log_text())) == 1


def test_worse_mx_that_is_ourselves_not_tried(net, make_sluiced):
    """The best MX is down and the next one is us: the message waits for
    the best one instead of coming back to us (on main it was handed to
    ourselves, a loop)."""
    net.dns.mx("dest.test", "mx1.dest.test", 10).host("mx1.dest.test",
                                                       "127.0.0.11")
    net.dns.mx("dest.test", "self.dest.test", 20).host("self.dest.test",
                                                        "127.0.0.1")
    net.dns.start()
    d = make_sluiced(conf=net.conf(), start=False)
    d.start(port=net.smtp_port)
    mid = send(d.port, SENDER, ["u@dest.test"], make_body("loop2"))
    d.wait_log(rf"MID {mid:016X} RID \[0\] deferred attempts=1 .*"
               r"connect to mx1\.dest\.test", timeout=15)
    rx = net.receiver("127.0.0.11")
    wait_until(lambda: rx.count() == 1, timeout=15, what="delivery to mx1")
    finished(d, 1)
    assert rx.tokens() == {"loop2": 1}
    assert len(re.findall(r"New SMTP connection address=", d.log_text())) == 1


def test_equal_mx_set_is_one_site(net, make_sluiced):
    """Issue 9 item 12: six domains whose MX are the same two hosts at one
    preference share one site, and so its connection limit, whatever
    order the shuffle of equal preferences gives (on main the site key
    followed that order, so the domains split into two sites and two
    connections ran at once against a limit of 1)."""
    from delivery_util import Gauge
    doms = [f"share{i}.test" for i in range(6)]
    for dom in doms:
        net.dns.mx(dom, "mxa.share.test", 10).mx(dom, "mxb.share.test", 10)
    net.dns.host("mxa.share.test", "127.0.0.11").host("mxb.share.test",
                                                       "127.0.0.12")
    net.dns.start()
    gauge = Gauge()
    rxs = [net.receiver(a, gauge=gauge, delays={"data_end": 0.3})
           for a in ("127.0.0.11", "127.0.0.12")]
    d = make_sluiced(conf=net.conf(destination_concurrency=1))
    inject(d.port, [(SENDER, [f"u@{dom}"], make_body(dom)) for dom in doms],
           sessions=6)
    wait_until(lambda: sum(r.count() for r in rxs) == 6, timeout=40,
               what="six deliveries, one connection at a time")
    finished(d, 6)
    assert gauge.peak == 1, f"{gauge.peak} connections at once to one site"


def test_connection_keeps_its_site(net, make_sluiced):
    """A connection counts against the site it was opened for, even when
    its destination has since moved to other hosts: on main the first
    connection, closing, took its count off the new site, so the new
    site let two connections run against a limit of 1."""
    zone = net.dns.script("mv.test")
    zone.fail = False
    zone.zones["mv.test"] = [(10, "mx1.mv.test")]
    net.dns.host("mx1.mv.test", "127.0.0.11").host("mx2.mv.test",
                                                     "127.0.0.12")
    net.dns.start()
    # the first connection is busy 2.5 s, then idle 1 s; the second busy
    # 3 s from about 1.5 s: it is still busy when the first one closes
    rx1 = net.receiver("127.0.0.11", delays={"data_end": 2.5})
    rx2 = net.receiver("127.0.0.12", delays={"data_end": 3})
    d = make_sluiced(conf=net.conf(destination_concurrency=1,
                                   data_timeout="10s"))
    send(d.port, SENDER, ["a@mv.test"], make_body("mv1"))
    wait_until(lambda: rx1.conns == 1, timeout=10, what="mx1 connected")
    zone.zones["mv.test"] = [(10, "mx2.mv.test")]
    time.sleep(1.5)       # the answer's TTL (1 s) runs out
    send(d.port, SENDER, ["b@mv.test"], make_body("mv2"))
    wait_until(lambda: rx2.conns == 1, timeout=10, what="mx2 connected")
    d.wait_log(r"DCID 1 close reason=", timeout=15)
    assert rx2.count() == 0, "the second connection is not busy any more"
    send(d.port, SENDER, ["c@mv.test"], make_body("mv3"))
    wait_until(lambda: rx2.count() == 2, timeout=20, what="two at mx2")
    finished(d, 3)
    assert rx1.tokens() == {"mv1": 1}
    assert rx2.tokens() == {"mv2": 1, "mv3": 1}
    assert rx2.peak == 1, f"{rx2.peak} connections at once, limit 1"
