# SPDX-License-Identifier: MIT
"""
test_submission.py: authenticated submission (RFC 6409, RFC 4954, RFC 8314).

One sluiced with [submission] listen (STARTTLS) and tls_listen (implicit
TLS), a users file made by `sluice user add`, and loopback NOT trusted
([server] trusted_networks = 10.0.0.0/8): only AUTH lets a client relay.
Mail to far.test goes to a `sluice sink` (a static route).

  - AUTH is not in the EHLO answer before TLS, is after it; MAIL before
    AUTH gets 530 5.7.0; AUTH in plaintext gets 538
  - smtplib: AUTH PLAIN and LOGIN, then relay to the sink; the Received:
    header says ESMTPSA and names the TLS version, never the password
  - swaks: STARTTLS + PLAIN and LOGIN; implicit TLS with --tlsc
  - a wrong password gets 535 5.7.8, logged with user and address; the
    answers to repeated failures come later and later, then 421, and the
    address's AUTH is refused for a while while another address still
    authenticates
  - the users file is read again on reload; the port-25 listener offers
    no AUTH even in TLS
"""
import re
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from sinkutil import sluice_bin
from sluicetest import client_ctx, free_port, wait_until

PASSWORD = "s3cret pass"


def add_user(users, name, password):
    r = subprocess.run([sluice_bin(), "user", "-f",
                        str(users), "add", name], input=password + "\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def sub(make_sluiced, make_sink, cert, tmp_path):
    c, k = cert
    users = tmp_path / "users"
    add_user(users, "bob", PASSWORD)
    sink = make_sink()
    d = make_sluiced(conf={
        "server": {"tls_cert": str(c), "tls_key": str(k),
                   "trusted_networks": "10.0.0.0/8"},
        "submission": {"listen": f"127.0.0.1:{free_port()}",
                       "tls_listen": f"127.0.0.1:{free_port()}"},
        "auth": {"users_file": str(users), "failure_delay": "1s",
                 "max_failures": "3", "lockout": "1m"},
        "routes": {"far.test": f"[127.0.0.1]:{sink.port}"},
        "delivery": {"retry_initial": "1s"}})
    d.sub_port = int(d.conf["submission"]["listen"].rsplit(":", 1)[1])
    d.subs_port = int(d.conf["submission"]["tls_listen"].rsplit(":", 1)[1])
    d.sink = sink
    d.users = users
    wait_until(lambda: "service=submissions" in d.log_text(),
               what="submission listeners")
    return d


MSG = (b"From: <bob@client.test>\r\nTo: <r@far.test>\r\nSubject: sub\r\n\r\n"
       b"submitted\r\n")


def sink_got(d, n=1):
    return wait_until(lambda: len(d.sink.messages()) >= n and
                      d.sink.messages(), timeout=30, what="sink message")


def test_auth_only_in_tls_and_mail_needs_auth(sub):
    with smtplib.SMTP("127.0.0.1", sub.sub_port, timeout=15) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        assert not c.has_extn("auth")
        code, msg = c.docmd("AUTH", "PLAIN")
        assert code == 538, msg
        code, msg = c.docmd("MAIL", "FROM:<bob@client.test>")
        assert (code, msg[:5]) == (530, b"5.7.0"), msg
        c.starttls(context=client_ctx())
        c.ehlo("client.test")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        code, msg = c.docmd("MAIL", "FROM:<bob@client.test>")
        assert code == 530 and b"Authentication required" in msg, msg
    # the port-25 listener: no AUTH even in TLS, and no relay for loopback
    with smtplib.SMTP("127.0.0.1", sub.port, timeout=15) as c:
        c.starttls(context=client_ctx())
        c.ehlo("client.test")
        assert not c.has_extn("auth")
        code, _ = c.docmd("AUTH", "PLAIN")
        assert code == 502
        c.mail("bob@client.test")
        code, msg = c.rcpt("r@far.test")
        assert code == 554, msg


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_auth_relays_with_esmtpsa(sub, mech):
    with smtplib.SMTP("127.0.0.1", sub.sub_port, timeout=15) as c:
        c.starttls(context=client_ctx())
        c.ehlo("client.test")
        c.user, c.password = "bob", PASSWORD
        code, msg = c.auth(mech, getattr(c, "auth_" + mech.lower()),
                           initial_response_ok=(mech == "PLAIN"))
        assert code == 235, msg
        code, msg = c.docmd("AUTH", "PLAIN")
        assert code == 503, msg          # once per session
        c.sendmail("bob@client.test", ["r@far.test"], MSG)
    got = sink_got(sub)[0]
    rec = got.split(b"\r\n\r\n")[0]
    m = re.search(rb"Received: from client\.test \(\[127\.0\.0\.1\]\) "
                  rb"\(port \d+\)\r\n"
                  rb"\t\(using (TLSv1\.[23]) with cipher \S+\)\r\n"
                  rb"\tby mx\.sluice\.test \(sluice\) with ESMTPSA id ", rec)
    assert m, rec
    assert PASSWORD.encode() not in got
    sub.wait_log(r"ICID \d+ authenticated user=bob mechanism=%s" % mech)
    assert PASSWORD not in sub.log_text()


def swaks(*args):
    return subprocess.run(["swaks", "--timeout", "20", "--from",
                           "bob@client.test", "--to", "r@far.test",
                           "--auth-user", "bob", "--auth-password",
                           PASSWORD, *args], capture_output=True, text=True,
                          timeout=60)


def test_swaks_starttls_and_implicit_tls(sub):
    r = swaks("--server", f"127.0.0.1:{sub.sub_port}", "--tls", "--auth",
              "PLAIN")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    r = swaks("--server", f"127.0.0.1:{sub.sub_port}", "--tls", "--auth",
              "LOGIN")
    assert r.returncode == 0, r.stdout + r.stderr
    # RFC 8314: the handshake first, no STARTTLS offered
    r = swaks("--server", f"127.0.0.1:{sub.subs_port}", "--tlsc", "--auth",
              "PLAIN")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started" in r.stdout and "STARTTLS" not in r.stdout, r.stdout
    got = sink_got(sub, 3)
    assert all(b" with ESMTPSA id " in m for m in got)
    # implicit TLS without a handshake: nothing is said in plaintext
    with socket.create_connection(("127.0.0.1", sub.subs_port), 5) as s:
        s.settimeout(1)
        try:
            assert s.recv(100) == b""
        except socket.timeout:
            pass


def auth_plain(c, user, pw):
    import base64
    tok = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
    t0 = time.monotonic()
    code, msg = c.docmd("AUTH", "PLAIN " + tok)
    return code, msg, time.monotonic() - t0


def tls_client(port, source="127.0.0.1"):
    c = smtplib.SMTP("127.0.0.1", port, timeout=60,
                     source_address=(source, 0))
    c.starttls(context=client_ctx())
    c.ehlo("client.test")
    return c


def test_wrong_password_slowed_then_421(sub):
    # failures from 127.0.0.3: 535 after 1s, then after 2s, then 421
    c = tls_client(sub.sub_port, "127.0.0.3")
    code, msg, t1 = auth_plain(c, "bob", "wrong")
    assert (code, msg[:5]) == (535, b"5.7.8"), msg
    code, msg, t2 = auth_plain(c, "nobody", "wrong")
    assert code == 535, msg
    # the delay doubles (lower bounds only: timers never fire early)
    assert t1 >= 0.9 and t2 >= 1.9, (t1, t2)
    code, msg, _ = auth_plain(c, "bob", "wrong")
    assert (code, msg[:5]) == (421, b"4.7.0"), msg
    with pytest.raises(smtplib.SMTPServerDisconnected):
        c.noop()
    sub.wait_log(r"authentication failed user=bob address=127\.0\.0\.3 "
                 r"failures=1")
    sub.wait_log(r"authentication failed user=nobody address=127\.0\.0\.3 "
                 r"failures=2")
    # locked: even the right password gets 421 from that address
    c = tls_client(sub.sub_port, "127.0.0.3")
    code, msg, _ = auth_plain(c, "bob", PASSWORD)
    assert code == 421, msg
    c.close()
    # another address is not affected
    c = tls_client(sub.sub_port, "127.0.0.4")
    code, msg, _ = auth_plain(c, "bob", PASSWORD)
    assert code == 235, msg
    c.quit()


def test_bad_responses_and_reload_of_users(sub):
    c = tls_client(sub.sub_port, "127.0.0.5")
    assert c.docmd("AUTH", "CRAM-MD5")[0] == 504
    assert c.docmd("AUTH", "PLAIN !!!!")[0] == 501
    code, msg = c.docmd("AUTH", "LOGIN")
    assert (code, msg) == (334, b"VXNlcm5hbWU6")
    assert c.docmd("*")[0] == 501          # cancelled
    c.quit()
    # a user added later works after `sluice reload` (SIGHUP)
    add_user(sub.users, "carol", "other pw")
    c = tls_client(sub.sub_port, "127.0.0.5")
    assert auth_plain(c, "carol", "other pw")[0] == 535
    c.close()
    sub.signal(signal.SIGHUP)
    sub.wait_log(r"configuration reloaded")
    c = tls_client(sub.sub_port, "127.0.0.6")
    assert auth_plain(c, "carol", "other pw")[0] == 235
    c.quit()


def test_submission_without_certificate_refused(make_sluiced):
    d = make_sluiced(conf={"submission": {"listen": f"127.0.0.1:{free_port()}"}},
                     start=False)
    with pytest.raises(AssertionError, match=r"\[submission\] listen needs "
                       r"\[server\] tls_cert"):
        d.start()


def test_shutdown_during_auth_delay(sub):
    """SIGTERM while a failed AUTH waits out its delay: the client gets the
    shutdown's 421 and nothing after it (no late 535), and sluiced exits 0
    (the fixture's stop checks the exit code)."""
    import base64
    c = tls_client(sub.sub_port, "127.0.0.9")
    tok = base64.b64encode(b"\0bob\0wrong").decode()
    c.send(f"AUTH PLAIN {tok}\r\n".encode())
    sub.wait_log(r"authentication failed user=bob address=127\.0\.0\.9")
    sub.signal(signal.SIGTERM)
    code, msg = c.getreply()
    assert (code, msg[:5]) == (421, b"4.3.2"), (code, msg)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        c.getreply()
    assert sub.wait_exit() == 0
