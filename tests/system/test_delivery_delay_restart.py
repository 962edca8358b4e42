"""A restart does not send a second delay notice for one message (whether
one went out is taken from the message age at recovery)."""
import re
from delivery_util import make_body, net, send  # noqa: F401
from sluicetest import wait_until


def test_one_delay_notice_across_restart(net, make_sluiced):
    net.dns.mx("dest.test", "mx1.dest.test", 10).host("mx1.dest.test",
                                                       "127.0.0.11")
    net.dns.start()
    rx = net.receiver("127.0.0.11", script=lambda n: {
        "rcpt": "451 4.7.1 Greylisted"})
    back = net.back()
    d = make_sluiced(conf=net.conf(delay_warning="2s"))
    mid = send(d.port, "sender@back.test", ["a@dest.test"], make_body("r"))
    wait_until(lambda: back.count() == 1, timeout=15, what="delay notice")
    d.stop()
    d.start()
    second = d.stderr_path
    # two more deferrals after the restart: every warning check of the
    # recovered message has run (a notice is decided at a deferral)
    wait_until(lambda: len(re.findall(rf"MID {mid:016X} RID \[0\] deferred",
                                      second.read_text())) >= 2, timeout=15)
    # a notice queued then would still be in the spool or delivered: the
    # spool holds only the original, and the receiver no second notice
    wait_until(lambda: d.spool.mids() == [mid], timeout=15,
               what="no DSN left in the spool")
    assert "delay notice" not in second.read_text()
    assert back.count() == 1, f"{back.count()} delay notices for one message"
