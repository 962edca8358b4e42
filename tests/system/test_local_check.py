# SPDX-License-Identifier: MIT
"""
test_local_check.py: unknown local users are refused at RCPT ([local]
recipient_check), never accepted and bounced later: from the users file,
or by asking the LMTP server that holds the mailboxes (Debian's Dovecot,
started once for the module) while the client waits; pipelined commands
keep their order around the wait; a server that cannot be asked gives
451 4.4.1; a client that leaves during a check costs nothing.
"""
import socket
import threading

import pytest

from dovecot_util import Dovecot
from sluicetest import Raw, wait_until


@pytest.fixture(scope="module")
def dovecot():
    d = Dovecot({"alice@local.test": None, "bob@local.test": None})
    yield d
    d.close()


def untrusted_conf(extra):
    conf = {"server": {"local_domains": "local.test",
                       "trusted_networks": "192.0.2.0/24"}}
    for k, v in extra.items():
        conf.setdefault(k, {}).update(v)
    return conf


def rcpt_replies(d, rcpts):
    """The replies to RCPT for each address, pipelined in one write."""
    with d.connect() as c:
        c.ehlo()
        c.send("MAIL FROM:<s@client.test>\r\n" +
               "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "RSET\r\n")
        c.expect("250")
        out = [c.reply() for _ in rcpts]
        c.expect("250")
        return out


def test_users_file(make_sluiced, tmp_path):
    users = tmp_path / "users"
    users.write_text("# the known ones\nalice@local.test\n Bob@Local.Test \n")
    d = make_sluiced(conf=untrusted_conf({"local": {
        "users_file": str(users), "recipient_check": "file"}}))
    got = rcpt_replies(d, ["alice@local.test", "carol@local.test",
                           "BOB@local.test"])
    assert got[0].startswith("250 2.1.5")
    assert got[1].startswith("550 5.1.1 <carol@local.test>: Recipient "
                             "address rejected"), got[1]
    assert got[2].startswith("250 2.1.5")
    d.wait_log(r"rejected cmd=RCPT reply=\"550 5\.1\.1 <carol@local\.test>")
    # a reload reads the file again
    users.write_text("carol@local.test\n")
    d.signal(__import__("signal").SIGHUP)
    d.wait_log("configuration reloaded")
    got = rcpt_replies(d, ["alice@local.test", "carol@local.test"])
    assert got[0].startswith("550 5.1.1") and got[1].startswith("250")


def test_users_file_unreadable_refuses_start(make_sluiced, tmp_path):
    d = make_sluiced(conf=untrusted_conf({"local": {
        "users_file": str(tmp_path / "missing")}}), start=False)
    with pytest.raises(AssertionError, match=r"\[local\]: .*missing: No "
                       r"such file"):
        d.start()


def test_lmtp_check(make_sluiced, dovecot):
    d = make_sluiced(conf=untrusted_conf({"local": {
        "agent": "lmtp", "lmtp": f"[127.0.0.1]:{dovecot.port}",
        "recipient_check": "lmtp"}}))
    got = rcpt_replies(d, ["alice@local.test", "nobody@local.test",
                           "bob@local.test", "x@relay.test"])
    assert got[0].startswith("250 2.1.5"), got
    assert got[1].startswith("550 5.1.1 <nobody@local.test>: Recipient "
                             "address rejected: 550 5.1.1"), got
    assert "User doesn't exist" in got[1]
    assert got[2].startswith("250 2.1.5"), got
    # not local: the relay policy answers, nobody is asked
    assert got[3].startswith("554 5.7.1"), got


def test_lmtp_check_over_unix_socket(make_sluiced, dovecot):
    d = make_sluiced(conf=untrusted_conf({"local": {
        "agent": "lmtp", "lmtp": f"unix:{dovecot.socket_path}",
        "recipient_check": "lmtp"}}))
    got = rcpt_replies(d, ["bob@local.test", "eve@local.test"])
    assert got[0].startswith("250") and got[1].startswith("550 5.1.1")


class Silent:
    """An LMTP 'server' that accepts and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_lmtp_check_unavailable(make_sluiced):
    """No server (connection refused), and one that never answers: 451
    4.4.1, so the client comes back later; nothing is refused for it."""
    s = Silent()
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    dead = refused.getsockname()[1]
    refused.close()
    try:
        for port in (dead, s.port):
            d = make_sluiced(conf=untrusted_conf({"local": {
                "agent": "lmtp", "lmtp": f"[127.0.0.1]:{port}",
                "recipient_check": "lmtp",
                "recipient_check_timeout": "1s"}}))
            got = rcpt_replies(d, ["alice@local.test"])
            assert got[0].startswith("451 4.4.1 <alice@local.test>: "
                                     "Recipient check unavailable"), got
            d.stop()
    finally:
        s.close()


def test_client_leaves_during_check(make_sluiced):
    """The client sends RCPT and goes; the check still open is dropped
    with the session, and the daemon goes on (and stops cleanly: no
    sanitizer report)."""
    s = Silent()
    try:
        d = make_sluiced(conf=untrusted_conf({"local": {
            "agent": "lmtp", "lmtp": f"[127.0.0.1]:{s.port}",
            "recipient_check": "lmtp", "recipient_check_timeout": "2s"}}))
        for _ in range(3):
            c = d.connect()
            c.ehlo()
            c.send("MAIL FROM:<s@client.test>\r\nRCPT TO:<a@local.test>\r\n")
            c.expect("250")
            c.close()
        wait_until(lambda: d.log_text().count("connection closed") >= 3
                   or None, timeout=30, what="three sessions closed")
        with d.connect() as c:
            c.ehlo()
            c.expect_ok("NOOP")
    finally:
        s.close()


def test_check_asks_the_backend_by_smtp(make_sluiced, tmp_path):
    """A frontend whose mailbox map ([local] mailbox_map, a file) sends
    local.test to a sluice backend: the check asks that backend over SMTP,
    whose own users file refuses the unknown user."""
    users = tmp_path / "b-users"
    users.write_text("dave@local.test\n")
    backend = make_sluiced(name="backend", conf={
        "server": {"local_domains": "local.test"},
        "local": {"users_file": str(users)}})
    mmap = tmp_path / "mailboxes"
    mmap.write_text("# domain = backend\nLocal.Test = b1\n")
    d = make_sluiced(name="front", conf=untrusted_conf({
        "local": {"recipient_check": "lmtp", "mailbox_map": str(mmap)},
        "backends": {"b1": f"smtp:[127.0.0.1]:{backend.port}"}}))
    got = rcpt_replies(d, ["dave@local.test", "erin@local.test"])
    assert got[0].startswith("250 2.1.5"), got
    assert got[1].startswith("550 5.1.1 <erin@local.test>: Recipient "
                             "address rejected: 550 5.1.1"), got


def test_mailbox_map_errors_name_file_and_line(make_sluiced, tmp_path):
    mmap = tmp_path / "mailboxes"
    mmap.write_text("a@local.test = b1\nb@local.test = nosuch\n")
    d = make_sluiced(conf=untrusted_conf({
        "local": {"recipient_check": "none", "mailbox_map": str(mmap)},
        "backends": {"b1": "lmtp:[127.0.0.1]:24"}}), start=False)
    with pytest.raises(AssertionError, match=rf"{mmap}:2: no backend "
                       r"'nosuch' in \[backends\]"):
        d.start()
