"""
test_postmaster.py: mail to the postmaster (RFC 5321 4.5.1) from an
untrusted client is accepted, stored for [server] postmaster and routed
like any recipient; its failure sends no DSN to the MAIL FROM the client
chose (it is stored with NOTIFY=NEVER, the original address as ORCPT).

The world of test_delivery.py: dnsmasq gives pm.test an MX at 127.0.0.11
(a scripted receiver, offering DSN so that the parameters show); the
sender's domain back.test has a receiver at 127.0.0.2 that would get any
DSN. sluiced trusts only 192.0.2.0/24, so the test client is untrusted.
"""
import re
import smtplib

import pytest

from delivery_util import DEFAULT_EXT, make_body, net  # noqa: F401
from sluicetest import mid_of, wait_until

MX1 = "127.0.0.11"
SENDER = "victim@back.test"


def world(net, make_sluiced, script=None, **server):
    net.dns.mx("pm.test", "mx1.pm.test", 10).host("mx1.pm.test", MX1)
    net.dns.start()
    rx = net.receiver(MX1, script=script, ext=DEFAULT_EXT + ("DSN",))
    back = net.back()
    conf = net.conf()
    conf["server"] = {"trusted_networks": "192.0.2.0/24",
                      "relay_domains": "local.test",
                      "postmaster": "admin@pm.test"}
    conf["server"].update(server)
    return make_sluiced(conf=conf), rx, back


def send_to(d, rcpt, token):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30,
                      local_hostname="client.sluice.test") as s:
        s.ehlo()
        code, resp = s.mail(SENDER, ["RET=FULL"])
        assert code == 250, resp
        code, resp = s.rcpt(rcpt)
        assert code == 250, (rcpt, code, resp)
        code, resp = s.data(make_body(token))
        assert code == 250, resp
        return mid_of(resp)


def finished(d, mid):
    wait_until(lambda: d.spool.count() == 0, timeout=30,
               what="an empty spool")
    d.wait_log(rf"Message finished MID {mid:016X} done", timeout=10)


@pytest.mark.parametrize("rcpt", ["Postmaster", "postmaster",
                                  "POSTMASTER@MX.SLUICE.TEST"])
def test_postmaster_delivered_to_setting(net, make_sluiced, rcpt):
    d, rx, back = world(net, make_sluiced)
    mid = send_to(d, rcpt, "pm-" + rcpt)
    wait_until(lambda: rx.count() == 1, timeout=30, what="delivery")
    m = rx.messages[0]
    assert m.rcpts == ["admin@pm.test"]
    assert m.mail_from == SENDER
    params = m.rcpt_params[0].upper()
    assert "NOTIFY=NEVER" in params, m.rcpt_params
    assert f"ORCPT=RFC822;{rcpt}".upper() in params, m.rcpt_params
    finished(d, mid)
    assert back.count() == 0


def test_postmaster_failure_sends_no_dsn(net, make_sluiced):
    """The postmaster address refuses the message (550): the recipient
    fails, and still nothing goes to the MAIL FROM the client wrote."""
    d, rx, back = world(net, make_sluiced,
                        script=lambda n: {"rcpt": "550 5.1.1 No such user"})
    mid = send_to(d, "<Postmaster>", "pm-fail")
    finished(d, mid)
    log = d.log_text()
    assert re.search(rf"Rejected DCID \d+ MID {mid:016X} to RID \[0\].*550 "
                     r"5.1.1", log), log[-3000:]
    assert "bounced" not in log and "notice" not in log
    assert back.count() == 0 and back.conns == 0
    assert rx.count() == 0


def test_postmaster_from_trusted_keeps_dsn(net, make_sluiced):
    """A trusted client's postmaster mail is rerouted the same way, but
    its DSN request stands: it may send anywhere anyway."""
    d, rx, back = world(net, make_sluiced, trusted_networks="127.0.0.0/8")
    send_to(d, "Postmaster", "pm-trusted")
    wait_until(lambda: rx.count() == 1, timeout=30, what="delivery")
    m = rx.messages[0]
    assert m.rcpts == ["admin@pm.test"]
    assert "NOTIFY=NEVER" not in m.rcpt_params[0].upper()


def test_postmaster_setting_must_be_an_address(make_sluiced):
    d = make_sluiced(conf={"server": {"postmaster": "not an address"}},
                     start=False)
    with pytest.raises(AssertionError, match=r"\[server\] postmaster: "
                       r"'not an address' is not a mail address"):
        d.start()
