# SPDX-License-Identifier: MIT
"""
test_tls.py: STARTTLS (RFC 3207) on both sides.

Inbound: sluiced with [server] tls_cert and tls_key (a self-signed
certificate made at test time) takes STARTTLS from smtplib, a raw client
and swaks; EHLO in TLS no longer offers it; the Received: header says
ESMTPS; commands pipelined after STARTTLS are dropped (CVE-2011-0411);
the wrong orders get their replies; a certificate that does not load
stops sluiced at start, naming the file.

Outbound: sluiced relays (a static route) to `sluice sink --tls-cert`:
the log says "TLS established" with the version and cipher, and the sink
got the message in TLS; a sink without TLS still gets it in plaintext.
After QUIT's 221 the client ends TLS with a close_notify, as a receiver
in Python's ssl sees it.
"""
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading

import pytest

from sinkutil import Sink
from sluicetest import (SLUICED, Raw, client_ctx, mid_of, split_received,
                        wait_until)


@pytest.fixture
def tls_sluiced(make_sluiced, cert):
    c, k = cert
    return make_sluiced(conf={"server": {"tls_cert": str(c),
                                         "tls_key": str(k)}})


@pytest.fixture
def make_sink(tmp_path):
    sinks = []

    def make(*args):
        d = tmp_path / f"sink{len(sinks)}"
        d.mkdir()
        s = Sink(d, *args)
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.check_clean()


def starttls(raw):
    """STARTTLS on a Raw client; returns the TLS socket in its place."""
    assert raw.cmd("STARTTLS").startswith("220 2.0.0"), "no 220"
    assert raw.buf == b""
    raw.sock = client_ctx().wrap_socket(raw.sock, server_hostname="mx.test")
    return raw.sock


MSG = b"From: <a@client.test>\r\nSubject: tls\r\n\r\nover TLS\r\n"


# ---- inbound ----

def test_smtplib_starttls(tls_sluiced):
    d = tls_sluiced
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15,
                      local_hostname="client.sluice.test") as c:
        c.ehlo()
        assert c.has_extn("starttls")
        code, _ = c.starttls(context=client_ctx())
        assert code == 220
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        code, _ = c.ehlo()
        assert code == 250
        # RFC 3207 4.2: not offered again in TLS
        assert not c.has_extn("starttls")
        assert c.has_extn("pipelining") and c.has_extn("size")
        code, _ = c.docmd("STARTTLS")
        assert code == 503
        c.mail("a@client.test")
        c.rcpt("b@example.com")
        code, resp = c.data(MSG)
        assert code == 250
        mid = mid_of(resp)
    received, rest = split_received(d.spool.body(mid))
    assert rest == MSG
    assert re.search(rb"with ESMTPS id %016X" % mid, received), received
    assert re.search(rb"\(using TLSv1\.[23] with cipher \S+\)", received)
    d.wait_log(r"ICID \d+ TLS established version=TLSv1\.[23] cipher=\S+")


def test_smtputf8_in_tls_is_utf8smtps(tls_sluiced):
    d = tls_sluiced
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as c:
        c.starttls(context=client_ctx())
        c.ehlo()
        c.mail("a@client.test", ["SMTPUTF8"])
        c.rcpt("b@example.com")
        code, resp = c.data(MSG)
        assert code == 250
    received, _ = split_received(d.spool.body(mid_of(resp)))
    assert b" with UTF8SMTPS id " in received


def test_pipelined_after_starttls_is_dropped(tls_sluiced):
    """STARTTLS\\r\\nRSET\\r\\n in one write: the RSET was sent in plaintext
    and must never be answered, in plaintext or in TLS."""
    d = tls_sluiced
    with Raw(d.port) as r:
        r.ehlo()
        r.send("STARTTLS\r\nRSET\r\n")
        assert r.reply().startswith("220 2.0.0 Ready to start TLS")
        assert r.buf == b""
        r.sock.settimeout(1)
        try:
            extra = r.sock.recv(100)
        except socket.timeout:
            extra = b""
        assert extra == b"", extra        # no 250 for the plaintext RSET
        t = client_ctx().wrap_socket(r.sock, server_hostname="mx.test")
        r.sock = t
        t.settimeout(1)
        try:
            extra = t.recv(100)
        except socket.timeout:
            extra = b""
        assert extra == b"", extra        # nor in TLS
        t.settimeout(15)
        # the session starts over: EHLO first
        assert r.cmd("MAIL FROM:<a@client.test>").startswith("503 5.5.1")
        r.ehlo()
        assert r.cmd("NOOP").startswith("250")
        assert r.cmd("QUIT").startswith("221")
    d.wait_log(r"discarded input after STARTTLS bytes=6")


def test_starttls_wrong_order(tls_sluiced):
    d = tls_sluiced
    with Raw(d.port) as r:
        assert r.cmd("STARTTLS").startswith("503 5.5.1 Error: send EHLO")
        r.ehlo()
        assert r.cmd("STARTTLS now").startswith("501 5.5.4")
        r.expect_ok("MAIL FROM:<a@client.test>")
        assert r.cmd("STARTTLS").startswith("503 5.5.1 Error: MAIL")
        r.expect_ok("RSET")
        starttls(r)
        assert "STARTTLS" not in r.ehlo()
        assert r.cmd("STARTTLS").startswith(
            "503 5.5.1 Error: TLS already active")
        assert r.cmd("QUIT").startswith("221")


def test_no_tls_configured(sluiced):
    with Raw(sluiced.port) as r:
        assert "STARTTLS" not in r.ehlo()
        assert r.cmd("STARTTLS").startswith("502 5.5.1")


def test_client_quits_in_handshake(tls_sluiced):
    """A client that says STARTTLS and hangs up, or speaks plaintext
    instead of TLS: the session ends, the daemon goes on."""
    d = tls_sluiced
    with Raw(d.port) as r:
        r.ehlo()
        starttls_reply = r.cmd("STARTTLS")
        assert starttls_reply.startswith("220")
    with Raw(d.port) as r:
        r.ehlo()
        assert r.cmd("STARTTLS").startswith("220")
        r.send("EHLO plaintext\r\n")
        r.expect_closed()
    d.wait_log(r"connection closed reason=\"?TLS: ")
    with Raw(d.port) as r:
        r.ehlo()
        assert r.cmd("QUIT").startswith("221")


def test_shutdown_421_in_tls(tls_sluiced):
    """SIGTERM: an idle session in TLS gets its 421 (the ciphertext goes
    out before the session is freed) and sluiced exits 0."""
    d = tls_sluiced
    with Raw(d.port) as r:
        r.ehlo()
        starttls(r)
        r.ehlo()
        d.proc.send_signal(signal.SIGTERM)
        assert r.reply().startswith("421 4.3.2")
        r.expect_closed()
    assert d.wait_exit() == 0


def test_reload_keeps_certificate_that_loads(tls_sluiced, tmp_path):
    """Reload reads the files again; one that does not load is a warning
    and the certificate in use stays."""
    d = tls_sluiced
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    d.conf["server"]["tls_cert"] = str(bad)
    d.write_conf()
    d.signal(signal.SIGHUP)
    d.wait_log(r"reload: \[server\] tls_cert .*bad\.pem: not a PEM "
               r"certificate .*the TLS certificate in use stays")
    d.wait_log(r"configuration reloaded")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as c:
        assert c.starttls(context=client_ctx())[0] == 220
    # without tls_cert, STARTTLS is no longer offered
    d.conf["server"]["tls_cert"] = ""
    d.conf["server"]["tls_key"] = ""
    d.write_conf()
    n = d.log_text().count("configuration reloaded")
    d.signal(signal.SIGHUP)
    wait_until(lambda: d.log_text().count("configuration reloaded") > n,
               what="the second reload")
    with Raw(d.port) as r:
        assert "STARTTLS" not in r.ehlo()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="no swaks")
def test_swaks_tls(tls_sluiced):
    d = tls_sluiced
    p = subprocess.run(["swaks", "--server", f"127.0.0.1:{d.port}",
                        "--tls", "--to", "b@example.com",
                        "--from", "a@client.test", "--helo", "swaks.test"],
                       capture_output=True, text=True, timeout=60)
    if "requires Net::SSLeay" in p.stdout + p.stderr:
        pytest.skip("swaks without Net::SSLeay (scripts/deps.sh)")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "TLS started" in p.stdout
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as", p.stdout), p.stdout


@pytest.mark.parametrize("which", ["missing", "garbage", "mismatch"])
def test_bad_certificate_stops_start(tmp_path, cert, which):
    c, k = cert
    bad = tmp_path / "bad.pem"
    if which == "missing":
        cert_path, key_path, want = bad, k, f"[server] tls_cert {bad}: No " \
            "such file or directory"
    elif which == "garbage":
        bad.write_text("not a certificate\n")
        cert_path, key_path, want = bad, k, f"[server] tls_cert {bad}: " \
            "not a PEM certificate"
    else:
        other = subprocess.run(
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
             "ec_paramgen_curve:P-256"], capture_output=True, check=True,
            timeout=60).stdout
        bad.write_bytes(other)
        cert_path, key_path, want = c, bad, f"[server] tls_key {bad}: the " \
            "key does not match the certificate"
    conf = tmp_path / "s.ini"
    conf.write_text(f"[server]\nuser =\nlisten = 127.0.0.1:0\n"
                    f"tls_cert = {cert_path}\n"
                    f"tls_key = {key_path}\n[spool]\ndir = {tmp_path}/spool\n"
                    f"[control]\nsocket = {tmp_path}/ctl.sock\n[http]\n"
                    "listen =\n")
    p = subprocess.run([str(SLUICED), "-c", str(conf)], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    assert p.returncode != 0
    assert want in p.stderr, p.stderr


# ---- outbound ----

def relay_conf(sink):
    return {"routes": {"tls.test": f"[127.0.0.1]:{sink.port}"},
            "delivery": {"retry_initial": "1s", "idle_timeout": "1s"}}


def relay_one(d, token):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as c:
        c.sendmail("a@client.test", ["u@tls.test"],
                   MSG + f"token {token}\r\n".encode())


def test_relay_in_tls(make_sluiced, make_sink, cert):
    c, k = cert
    sink = make_sink("--tls-cert", str(c), "--tls-key", str(k), "-v")
    d = make_sluiced(conf=relay_conf(sink))
    relay_one(d, "tls1")
    wait_until(lambda: len(sink.messages()) == 1, timeout=20,
               what="the message at the sink")
    assert b"token tls1" in sink.messages()[0]
    assert sink.index()[0]["tls"] is True
    d.wait_log(r"DCID \d+ TLS established relay=127\.0\.0\.1\[127\.0\.0\.1\] "
               r"version=TLSv1\.[23] cipher=\S+")
    d.wait_log(r"Message done DCID \d+ MID [0-9A-F]{16} to RID \[0\] "
               r"rcpt=u@tls\.test")
    wait_until(lambda: "TLS established" in sink.stderr_text(), timeout=5,
               what="the sink's TLS log line")


def test_relay_plaintext_without_offer(make_sluiced, make_sink):
    sink = make_sink()
    d = make_sluiced(conf=relay_conf(sink))
    relay_one(d, "plain1")
    wait_until(lambda: len(sink.messages()) == 1, timeout=20,
               what="the message at the sink")
    assert sink.index()[0]["tls"] is False
    d.wait_log(r"Message done DCID \d+ MID [0-9A-F]{16} to RID \[0\] "
               r"rcpt=u@tls\.test")
    assert "TLS established" not in d.log_text()


def test_relay_reuses_tls_connection(make_sluiced, make_sink, cert):
    """Five messages to one destination, one connection at a time: one
    connection, one handshake, five deliveries on it."""
    c, k = cert
    sink = make_sink("--tls-cert", str(c), "--tls-key", str(k))
    conf = relay_conf(sink)
    conf["delivery"].update({"destination_concurrency": "1",
                             "idle_timeout": "30s"})
    d = make_sluiced(conf=conf)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        for i in range(5):
            s.sendmail("a@client.test", ["u@tls.test"],
                       MSG + f"token r{i}\r\n".encode())
    wait_until(lambda: len(sink.messages()) == 5, timeout=20,
               what="5 messages at the sink")
    assert all(e["tls"] for e in sink.index())
    # (either form of the line: "DCID d MID m RID [r] Message done" or
    # issue 9's "Message done DCID d MID m to RID [r]")
    done = re.compile(r"DCID (\d+) [^\n]*Message done|Message done DCID (\d+)")
    wait_until(lambda: len(done.findall(d.log_text())) == 5,
               what="5 Message done lines")
    log = d.log_text()
    dcids = {a or b for a, b in done.findall(log)}
    assert len(dcids) == 1, f"5 messages over connections {dcids}"
    assert len(re.findall(r"TLS established relay=", log)) == 1, log


# ---- sluice blast --starttls ----

def test_blast_starttls(tls_sluiced, make_sink):
    """blast --starttls: every session in TLS; a server without STARTTLS
    fails every message instead of sending in plaintext."""
    from sinkutil import run_sluice
    d = tls_sluiced
    r = run_sluice("blast", "--server", f"127.0.0.1:{d.port}", "--starttls",
                   "--sessions", "4", "--messages", "40", "--size", "2K",
                   "--json")
    assert r.returncode == 0, r.stderr
    j = __import__("json").loads(r.stdout)
    assert (j["accepted"], j["failed"], j["starttls"]) == (40, 0, True), j
    wait_until(lambda: d.log_text().count("TLS established") ==
               j["connections"], what="one handshake per connection")
    plain = make_sink()
    r = run_sluice("blast", "--server", f"127.0.0.1:{plain.port}",
                   "--starttls", "--sessions", "2", "--messages", "4",
                   "--json")
    j = __import__("json").loads(r.stdout)
    assert (j["accepted"], j["failed"]) == (0, 4), j
    assert plain.messages() == []


class CloseNotifyReceiver:
    """An SMTP receiver in Python's ssl (not sluice's server): STARTTLS,
    one message, QUIT; after its 221 it reads on and records how the
    client ended TLS: "close_notify", or how it did not (the socket closed
    without one: an SSLError with suppress_ragged_eofs off)."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        # Python sets OP_IGNORE_UNEXPECTED_EOF, which reads a bare EOF as
        # a clean end: off, so only a real close_notify is one
        self.ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.endings = []
        self.messages = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            c, _ = self.srv.accept()
        except OSError:
            return
        c.settimeout(30)
        try:
            self._session(c)
        except Exception as e:          # reported by the test
            self.endings.append(repr(e))
        finally:
            c.close()

    @staticmethod
    def _line(f):
        return f.readline().upper()

    def _session(self, c):
        c.sendall(b"220 py.sluice.test ESMTP\r\n")
        f = c.makefile("rb")
        while True:
            line = self._line(f)
            if line.startswith(b"EHLO"):
                c.sendall(b"250-py.sluice.test\r\n250 STARTTLS\r\n")
            elif line.startswith(b"STARTTLS"):
                c.sendall(b"220 2.0.0 go ahead\r\n")
                break
            else:
                return
        t = self.ctx.wrap_socket(c, server_side=True,
                                 suppress_ragged_eofs=False)
        f = t.makefile("rb")
        while True:
            line = self._line(f)
            if line.startswith(b"EHLO"):
                t.sendall(b"250-py.sluice.test\r\n250 PIPELINING\r\n")
            elif line.startswith(b"DATA"):
                t.sendall(b"354 go ahead\r\n")
                data = b""
                while (l := f.readline()) not in (b".\r\n", b""):
                    data += l
                self.messages.append(data)
                t.sendall(b"250 2.0.0 Ok\r\n")
            elif line.startswith(b"QUIT"):
                t.sendall(b"221 2.0.0 Bye\r\n")
                break
            elif line:
                t.sendall(b"250 2.0.0 Ok\r\n")
            else:
                return
        try:
            rest = t.recv(4096)
            self.endings.append("close_notify" if rest == b"" else
                                f"data after QUIT: {rest!r}")
        except ssl.SSLError as e:
            self.endings.append(f"no close_notify: {e}")

    def close(self):
        self.srv.close()


def test_relay_quit_ends_tls_with_close_notify(make_sluiced, cert):
    """After QUIT's 221 the client sends a TLS close_notify before it
    closes the socket (RFC 8446 6.1); on main it closed without one."""
    rx = CloseNotifyReceiver(*cert)
    try:
        d = make_sluiced(conf={"routes": {"tls.test":
                                          f"[127.0.0.1]:{rx.port}"},
                               "delivery": {"retry_initial": "1s",
                                            "idle_timeout": "1s"}})
        relay_one(d, "notify1")
        wait_until(lambda: rx.endings, timeout=30,
                   what="the receiver to see the end of TLS")
    finally:
        rx.close()
    assert rx.messages and b"token notify1" in rx.messages[0]
    assert rx.endings == ["close_notify"], rx.endings
    d.wait_log(r"DCID \d+ close reason=quit")
