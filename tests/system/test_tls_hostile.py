# SPDX-License-Identifier: MIT
"""
Hostile TLS clients against sluiced's STARTTLS and the sink's (the same
server code, src/smtpd), built to be run under ASan (make test-asan): the
sequences where a libevent callback could free the session it runs in.

The client speaks TLS through an ssl.MemoryBIO, so the test decides
exactly which bytes reach the socket and when: a valid record followed by
garbage, a close_notify in the middle of pipelined commands, a reset
while megabytes of replies wait unread, a reset during the store of a
message, a handshake that never starts, a timeout while replies are
backed up. After every sequence the server must have ended that session
exactly once (sluiced: one "connection closed" per connection in its
log; the sink: no active connection left), go on serving a well-behaved
TLS client, and at the end stop cleanly with no sanitizer report.

The test that catches the free inside a failed TLS write deterministically
is tests/unit/smtpd/test_session.c (test_tls_write_error_in_read_callback);
no real peer can make OpenSSL's write fail on demand.
"""
import re
import socket
import ssl
import struct
import threading
import time

import pytest

from sinkutil import Sink
from sluicetest import Daemon, client_ctx, wait_until

SEQ_REPEAT = 3


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory):
    from sluicetest import make_cert
    return make_cert(tmp_path_factory.mktemp("tlscert"), "mx.test")


@pytest.fixture(scope="module")
def sluiced_tls(tmp_path_factory, tls_pair):
    c, k = tls_pair
    d = Daemon(tmp_path_factory.mktemp("tlshostile"),
               conf={"server": {"tls_cert": str(c), "tls_key": str(k),
                                # also the handshake's: 1 s cut a
                                # healthy client's at load 11 (ASan)
                                "command_timeout": "3s",
                                "max_errors": "1000",
                                "relay_domains": "local.test"}})
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def sink_tls(tmp_path_factory, tls_pair):
    c, k = tls_pair
    s = Sink(tmp_path_factory.mktemp("tlssink"), "--tls-cert", str(c),
             "--tls-key", str(k), "--delay", "20ms")
    yield s
    s.check_clean()


@pytest.fixture(params=["sluiced", "sink"])
def target(request):
    """(port, settled): settled() is true once every session the
    server opened has been freed."""
    if request.param == "sluiced":
        d = request.getfixturevalue("sluiced_tls")
        return d.port, _sluiced_settled(d)
    s = request.getfixturevalue("sink_tls")
    return s.port, lambda: s.stats()["active"] == 0


def plain(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    rd(s)
    return s


def rd(s, want=b"\r\n"):
    buf = b""
    while want not in buf:
        x = s.recv(65536)
        if not x:
            break
        buf += x
    return buf


def rst(s):
    """Close with a TCP reset (SO_LINGER 0), whatever waits unread."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def starttls_plain(port):
    s = plain(port)
    s.sendall(b"EHLO client.test\r\n")
    assert b"STARTTLS" in rd(s, b"250 ")
    s.sendall(b"STARTTLS\r\n")
    assert rd(s).startswith(b"220 ")
    return s


class TLS:
    """TLS over a socket; records() encrypts without sending."""

    def __init__(self, s):
        self.s = s
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.o = client_ctx().wrap_bio(self.inc, self.out,
                                       server_hostname="mx.test")
        while True:
            try:
                self.o.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                x = s.recv(65536)
                assert x, "EOF in the handshake"
                self.inc.write(x)
        self.flush()

    def flush(self):
        x = self.out.read()
        if x:
            self.s.sendall(x)

    def records(self, data):
        self.o.write(data)
        return self.out.read()

    def read_until(self, want):
        got = b""
        while want not in got:
            try:
                got += self.o.read(65536)
            except ssl.SSLWantReadError:
                x = self.s.recv(65536)
                if not x:
                    break
                self.inc.write(x)
            except ssl.SSLError:
                break
        return got


def starttls(port):
    s = starttls_plain(port)
    t = TLS(s)
    s.sendall(t.records(b"EHLO client.test\r\n"))
    assert b"250 " in t.read_until(b"250 CHUNKING")
    return s, t


def ended(s, timeout=20):
    """The server ends the connection: EOF or a reset, sooner or later."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()


def healthy(port):
    """A well-behaved TLS client still gets a full session."""
    s, t = starttls(port)
    s.sendall(t.records(b"NOOP\r\nQUIT\r\n"))
    got = t.read_until(b"221 ")
    assert b"250 2.0.0 Ok" in got and b"221 2.0.0" in got, got
    s.close()


def run(target, seq):
    port, settled = target
    for _ in range(SEQ_REPEAT):
        seq(port)
    wait_until(settled, timeout=60, what="every session freed once")
    healthy(port)
    wait_until(settled, timeout=60, what="every session freed once")


# ---- errors right after STARTTLS ----

def test_garbage_instead_of_handshake(target):
    def seq(port):
        s = starttls_plain(port)
        s.sendall(b"EHLO not-tls.test\r\n" * 20)
        ended(s)
    run(target, seq)


def test_garbage_after_first_records(target):
    """A valid record of pipelined commands, then bytes that are no
    record: replies are written while the read hits the error."""
    def seq(port):
        s = starttls_plain(port)
        t = TLS(s)
        s.sendall(t.records(b"EHLO client.test\r\nNOOP\r\nNOOP\r\n") +
                  b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        ended(s)
    run(target, seq)


def test_close_notify_in_pipeline(target):
    def seq(port):
        s = starttls_plain(port)
        t = TLS(s)
        data = t.records(b"EHLO client.test\r\nNOOP\r\n")
        try:
            t.o.unwrap()
        except ssl.SSLWantReadError:
            pass
        s.sendall(data + t.out.read() + b"MAIL FROM:<x@y.test>\r\n")
        ended(s)
    run(target, seq)


# ---- resets while replies are pending ----

def test_reset_with_replies_unread(target):
    """240 KB of replies backed up (reading paused), then a reset."""
    def seq(port):
        s, th = flood_unread(port)
        time.sleep(0.3)
        rst(s)
        th.join(timeout=20)
    run(target, seq)


def test_reset_after_quit(target):
    def seq(port):
        s = starttls_plain(port)
        t = TLS(s)
        s.sendall(t.records(b"EHLO client.test\r\nNOOP\r\nQUIT\r\n"))
        rst(s)
    run(target, seq)


def test_reset_during_store(target):
    """The message's last dot and a command behind it, then a reset: the
    store still owes its answer when the reset comes."""
    def seq(port):
        s, t = starttls(port)
        s.sendall(t.records(b"MAIL FROM:<a@client.test>\r\n"
                            b"RCPT TO:<b@local.test>\r\nDATA\r\n"))
        assert b"354 " in t.read_until(b"354 ")
        s.sendall(t.records(b"Subject: reset\r\n\r\nbody\r\n.\r\nNOOP\r\n"))
        rst(s)
    run(target, seq)


# ---- timeouts during TLS (sluiced: [server] command_timeout = 3s) ----

def test_timeout_before_handshake(sluiced_tls):
    def seq(port):
        ended(starttls_plain(port))
    run((sluiced_tls.port, _sluiced_settled(sluiced_tls)), seq)


def test_timeout_with_replies_backed_up(sluiced_tls):
    """Replies unread past the 64 KB bound, so the write timeout ends
    the session while the filter still holds output."""
    def seq(port):
        s, th = flood_unread(port)
        th.join(timeout=30)
        # the server ends it; reading its backlog through a 4 KB window
        # would take the client long, and proves nothing more
        wait_until(_sluiced_settled(sluiced_tls), timeout=60,
                   what="the session ended by its timeout")
        rst(s)
    run((sluiced_tls.port, _sluiced_settled(sluiced_tls)), seq)
    assert "reason=write timeout" in sluiced_tls.log_text() or \
        "reason=timeout" in sluiced_tls.log_text()


def test_timeout_idle_in_tls(sluiced_tls):
    def seq(port):
        s, t = starttls(port)
        got = t.read_until(b"421 ")
        assert b"421 4.4.2" in got, got
        ended(s)
    run((sluiced_tls.port, _sluiced_settled(sluiced_tls)), seq)


def _sluiced_settled(d):
    def settled():
        log = d.log_text()
        return (len(re.findall(r"ICID \d+ New SMTP connection", log)) ==
                len(re.findall(r"ICID \d+ connection closed reason=", log)))
    return settled


def flood_unread(port):
    """In TLS, 20 000 NOOPs sent (by a thread) through a 4 KB receive
    window and never read: 240 KB of replies back up. (socket, thread)"""
    s = starttls_plain(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    t = TLS(s)
    data = t.records(b"EHLO client.test\r\n" + b"NOOP\r\n" * 20000)
    th = threading.Thread(target=lambda: _sendall_quiet(s, data),
                          daemon=True)
    th.start()
    return s, th


def _sendall_quiet(s, data):
    try:
        s.sendall(data)
    except OSError:
        pass
