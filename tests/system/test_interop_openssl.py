# SPDX-License-Identifier: MIT
"""
TLS against openssl's own programs, not against sluiced's code.

Outbound: sluiced delivers to a receiver whose TLS is `openssl s_server`:
a small Python server speaks the plaintext SMTP prelude, answers STARTTLS
with 220, then hands the raw connection to s_server (a TCP splice) and
goes on with SMTP over s_server's stdin and stdout, in clear. s_server is
pinned to TLS 1.2 or to TLS 1.3: sluiced's client must negotiate either
and deliver the message intact, and its log must name the version.

Inbound: `openssl s_client -starttls smtp` against sluiced's STARTTLS,
pinned to TLS 1.2 and to TLS 1.3: the handshake completes with the
certificate sluiced was given, the EHLO in TLS no longer offers
STARTTLS, and after QUIT sluiced closes with a close_notify (s_client
exits 0, no "unexpected eof").
"""
import re
import socket
import subprocess
import threading
import time

import pytest

from sluicetest import (free_port, make_cert, port_listening, splice,
                        wait_until)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("osslcert"), "ossl.sluice.test")


class SServerReceiver:
    """SMTP in plaintext until STARTTLS, then over openssl s_server."""

    def __init__(self, cert, key, version):
        self.cert, self.key, self.version = cert, key, version
        self.messages = []
        self.errors = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.procs = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,),
                             daemon=True).start()

    def _session(self, c):
        try:
            self._run(c)
        except Exception as e:          # reported by the test
            self.errors.append(repr(e))
        finally:
            c.close()

    def _run(self, c):
        f = c.makefile("rb")
        c.sendall(b"220 ossl.sluice.test ESMTP plaintext prelude\r\n")
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:8].upper()
            if verb.startswith(b"EHLO"):
                c.sendall(b"250-ossl.sluice.test\r\n250 STARTTLS\r\n")
            elif verb.startswith(b"STARTTLS"):
                break
            else:
                c.sendall(b"503 5.5.1 STARTTLS first\r\n")
        port = free_port()
        p = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
             "-naccept", "1", "-quiet", "-cert", str(self.cert),
             "-key", str(self.key), f"-{self.version}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_until(lambda: port_listening(port), timeout=10,
                   what="openssl s_server listening")
        c.sendall(b"220 2.0.0 Ready to start TLS\r\n")
        s = socket.create_connection(("127.0.0.1", port))
        threading.Thread(target=splice, args=(c, s), daemon=True).start()
        threading.Thread(target=splice, args=(s, c), daemon=True).start()
        # SMTP in clear through s_server's stdin and stdout
        rd, wr = p.stdout, p.stdin

        def reply(text):
            wr.write(text)
            wr.flush()
        mail, rcpts = None, []
        while True:
            line = rd.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                reply(b"250-ossl.sluice.test\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL":
                mail, rcpts = line.strip(), []
                reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(line.strip())
                reply(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                reply(b"354 go ahead\r\n")
                data = b""
                while (l := rd.readline()) not in (b".\r\n", b""):
                    data += l[1:] if l.startswith(b".") else l
                self.messages.append((mail, rcpts, data))
                reply(b"250 2.0.0 Ok: through s_server\r\n")
            elif verb == b"QUIT":
                reply(b"221 2.0.0 Bye\r\n")
                time.sleep(0.2)
                p.terminate()
                return
            else:
                reply(b"250 2.0.0 Ok\r\n")

    def close(self):
        self.srv.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_delivery_over_s_server(make_sluiced, cert, version):
    rx = SServerReceiver(*cert, version)
    try:
        d = make_sluiced(conf={"routes": {"ossl.test": f"[127.0.0.1]:{rx.port}"},
                               "delivery": {"retry_initial": "1s",
                                            "idle_timeout": "1s"}})
        msg = (b"Subject: through openssl s_server\r\nX-Token: ossl\r\n\r\n"
               b".leading dot\r\n8-bit \xc3\xa9\r\n")
        with d.connect() as c:
            c.ehlo()
            r = c.send_message("a@client.sluice.test", ["u@ossl.test"], msg)
            assert r.startswith("250"), r
        wait_until(lambda: rx.messages, timeout=30,
                   what="the message through s_server")
        d.wait_log(r"Message done .*reply=\"?250 2\.0\.0 Ok: through s_server")
    finally:
        rx.close()
    assert not rx.errors, rx.errors
    mail, rcpts, data = rx.messages[0]
    assert mail.startswith(b"MAIL FROM:<a@client.sluice.test>")
    assert rcpts[0].startswith(b"RCPT TO:<u@ossl.test>")
    assert data.endswith(msg), data[-200:]
    want = {"tls1_2": r"TLSv1\.2", "tls1_3": r"TLSv1\.3"}[version]
    d.wait_log(rf"DCID \d+ TLS established relay=127\.0\.0\.1\[127\.0\.0\.1\] "
               rf"version={want} cipher=\S+")


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_s_client_starttls_inbound(make_sluiced, cert, version):
    c, k = cert
    d = make_sluiced(conf={"server": {"tls_cert": str(c),
                                      "tls_key": str(k)}})
    p = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"127.0.0.1:{d.port}", f"-{version}", "-servername", "mx.test",
         "-ign_eof"],
        input=b"EHLO s-client.sluice.test\r\nQUIT\r\n",
        capture_output=True, timeout=60)
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    # sluiced ends TLS with a close_notify after the 221 (RFC 8446 6.1):
    # without it s_client says "unexpected eof while reading" and exits 1
    assert "unexpected eof" not in err, err
    assert p.returncode == 0, (p.returncode, err)
    want = {"tls1_2": "TLSv1.2", "tls1_3": "TLSv1.3"}[version]
    assert re.search(rf"(?m)^\s*Protocol\s*:\s*{re.escape(want)}$", out) or \
        f"New, {want}," in out, out
    assert "subject=CN = ossl.sluice.test" in out or \
        "CN = ossl.sluice.test" in out, out
    # the EHLO sent in TLS: answered, without STARTTLS
    ehlo = re.findall(r"(?m)^250[- ].*$", out)
    assert any("PIPELINING" in l for l in ehlo), out
    assert not any("STARTTLS" in l for l in ehlo), ehlo
    assert re.search(r"(?m)^221 2\.0\.0", out), out
    d.wait_log(rf"ICID \d+ TLS established version={re.escape(want)}")
