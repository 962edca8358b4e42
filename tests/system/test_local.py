# SPDX-License-Identifier: MIT
"""
test_local.py: local delivery ([server] local_domains, [local],
[backends], [mailboxes]) through the same queue as relayed mail.

- Maildir: the file in new/ is the message byte for byte behind the two
  headers added (Return-Path:, Delivered-To:) and our Received:; nothing
  is left in tmp/; a full disk (a small tmpfs) defers and the message is
  delivered once there is room, exactly once.
- LMTP to Debian's Dovecot (started once for the module): both recipients
  in one transaction; one of them over quota fails alone (a DSN to the
  sender, caught by a sink) while the other lands in its mailbox.
- A mailbox map: one address to a Dovecot backend, the rest to Maildir; the
  backend stopped defers only its recipient, which goes once it is back.
"""
import os
import re
import smtplib
import subprocess

import pytest

from dovecot_util import Dovecot
from sluicetest import split_received, wait_until


@pytest.fixture(scope="module")
def dovecot():
    d = Dovecot({"alice@d.test": None, "bob@d.test": None,
                 "full@d.test": "1"})
    yield d
    d.close()


def files(path):
    return sorted(path.iterdir()) if path.is_dir() else []


def send(d, rcpts, msg, sender="s@sender.test"):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30,
                      local_hostname="client.sluice.test") as s:
        refused = s.sendmail(sender, rcpts, msg)
        assert not refused, refused


def delivered(d, n=1):
    """Wait until n messages finished (every recipient final)."""
    wait_until(lambda: d.log_text().count("Message finished") >= n,
               timeout=60, what=f"{n} messages finished")


MSG = (b"From: s@sender.test\r\nSubject: local\r\nX-Token: md-1\r\n\r\n"
       b"a line\r\n.a line with a leading dot\r\n..two dots\r\n"
       b"8bit: \xc3\xa9t\xc3\xa9\r\n" + b"x" * 2000 + b"\r\n"
       b"no trailing newline in the last line\r\n")


def test_maildir_byte_identical(make_sluiced):
    d = make_sluiced(conf={"server": {"local_domains": "local.test"},
                           "local": {"recipient_check": "none"}})
    send(d, ["Alice@local.test", "bob@local.test"], MSG)
    delivered(d)
    for user, rcpt in (("alice", "Alice@local.test"),
                       ("bob", "bob@local.test")):
        md = d.root / "var" / "mail" / "local.test" / user / "Maildir"
        new = files(md / "new")
        assert len(new) == 1, new
        assert files(md / "tmp") == [] and files(md / "cur") == []
        data = new[0].read_bytes()
        head = b"Return-Path: <s@sender.test>\r\nDelivered-To: %s\r\n" % \
            rcpt.encode()
        assert data.startswith(head), data[:120]
        received, rest = split_received(data[len(head):])
        assert received.startswith(b"Received: from client.sluice.test "
                                   b"([127.0.0.1])")
        assert rest == MSG
        assert re.match(r"^\d+\.M\d+P\d+Q\d+\.", new[0].name), new[0].name
    d.wait_log(r"Message done DCID \d+ MID [0-9A-F]{16} to RID \[0\] "
               r"rcpt=Alice@local\.test relay=maildir reply=\"250 2\.0\.0 "
               r"Delivered to ")
    assert d.spool.count() == 0


def test_maildir_full_disk_defers_then_delivers(make_sluiced, tmp_path):
    """A Maildir on a 256 KB tmpfs, nearly full: a 100 KB message is
    deferred (452 4.3.1, nothing in new/ or tmp/), stays queued, and is
    delivered once space is back."""
    root = tmp_path / "mail"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs",
                    str(root)], check=True, timeout=30)
    try:
        filler = root / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * (220 * 1024))
        d = make_sluiced(conf={
            "server": {"local_domains": "local.test"},
            "local": {"recipient_check": "none",
                      "maildir_root": str(root)},
            "delivery": {"retry_initial": "1s", "retry_max": "2s"}})
        big = b"Subject: big\r\nX-Token: full-1\r\n\r\n" + \
            (b"y" * 998 + b"\r\n") * 100
        send(d, ["carol@local.test"], big)
        d.wait_log(r"Delayed DCID \d+ MID [0-9A-F]{16} to RID \[0\] "
                   r"rcpt=carol@local\.test relay=maildir "
                   r"reply=\"452 4\.3\.1 Insufficient system storage")
        md = root / "local.test" / "carol" / "Maildir"
        assert files(md / "new") == [] and files(md / "tmp") == []
        assert d.spool.count() == 1
        filler.unlink()
        delivered(d)
        new = files(md / "new")
        assert len(new) == 1
        assert new[0].read_bytes().endswith(big)
        assert files(md / "tmp") == []
        d.stop()
    finally:
        subprocess.run(["umount", str(root)], timeout=30)


def lmtp_conf(dovecot, sink, extra=None):
    conf = {"server": {"local_domains": "d.test"},
            "local": {"agent": "lmtp", "lmtp": f"unix:{dovecot.socket_path}",
                      "recipient_check": "none"},
            "routes": {"*": f"[127.0.0.1]:{sink.port}"}}
    for k, v in (extra or {}).items():
        conf.setdefault(k, {}).update(v)
    return conf


def test_lmtp_one_over_quota(make_sluiced, make_sink, dovecot):
    sink = make_sink()
    d = make_sluiced(conf=lmtp_conf(dovecot, sink))
    msg = b"Subject: lmtp\r\nX-Token: lmtp-1\r\n\r\n" + b"z" * 3000 + b"\r\n"
    send(d, ["alice@d.test", "full@d.test"], msg)
    delivered(d)
    got = dovecot.messages("alice@d.test")
    assert len(got) == 1 and b"X-Token: lmtp-1" in got[0], got
    assert dovecot.messages("full@d.test") == []
    log = d.log_text()
    # one LMTP transaction for both: the same DCID
    start = re.findall(r"Delivery start DCID (\d+) MID \w+ to RID \[(\d)\] "
                       r"rcpt=\S+ relay=unix:", log)
    assert len(start) == 2 and start[0][0] == start[1][0], start
    assert re.search(r"Message done DCID \d+ MID \w+ to RID \[0\] "
                     r"rcpt=alice@d\.test relay=unix:\S+ reply=\"250 2\.0\.0",
                     log), log
    assert re.search(r"Rejected DCID \d+ MID \w+ to RID \[1\] "
                     r"rcpt=full@d\.test relay=unix:\S+ reply=\"552 5\.2\.2",
                     log), log
    # the sender is told about full@ alone
    wait_until(lambda: sink.messages(), timeout=60, what="the DSN")
    dsn = sink.messages()[0]
    assert b"full@d.test" in dsn and b"5.2.2" in dsn
    assert b"Action: failed" in dsn and b"alice@d.test" not in dsn


def test_backend_down_defers_only_its_recipients(make_sluiced, make_sink,
                                                 dovecot):
    """alice@d.test's mailbox is on a Dovecot backend; the other users of
    d.test are this node's Maildirs. With the backend stopped, bob's copy
    is delivered at once and alice's deferred; once it is back, hers goes
    at the next retry."""
    sink = make_sink()
    d = make_sluiced(conf={
        "server": {"local_domains": "d.test"},
        "local": {"recipient_check": "none"},
        "backends": {"b1": f"lmtp:[127.0.0.1]:{dovecot.port}"},
        "mailboxes": {"alice@d.test": "b1"},
        "routes": {"*": f"[127.0.0.1]:{sink.port}"},
        "delivery": {"retry_initial": "1s", "retry_max": "2s"}})
    before = len(dovecot.messages("alice@d.test"))
    dovecot.stop()
    try:
        send(d, ["alice@d.test", "bob@d.test"],
             b"Subject: split\r\nX-Token: split-1\r\n\r\nhi\r\n")
        md = d.root / "var" / "mail" / "d.test" / "bob" / "Maildir" / "new"
        wait_until(lambda: files(md), timeout=30, what="bob's copy")
        d.wait_log(r"destination deferred destination=backend:b1|"
                   r"Delayed DCID \d+ MID \w+ to RID \[0\] rcpt=alice@d\.test")
        assert d.spool.count() == 1
    finally:
        dovecot.start()
    delivered(d)
    got = dovecot.messages("alice@d.test")
    assert len(got) == before + 1 and b"X-Token: split-1" in got[-1]
    assert len(files(md)) == 1
