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
    # two more deferrals after the restart
    wait_until(lambda: len(re.findall(rf"MID {mid:016X} RID \[0\] deferred",
                                      d.log_text())) >= 2, timeout=15)
    assert back.count() == 1, f"{back.count()} delay notices for one message"
