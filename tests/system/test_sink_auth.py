# SPDX-License-Identifier: MIT
"""test_sink_auth.py: `sluice sink --auth USER:PASS` as an application's
test server sees it (swaks, smtplib): AUTH PLAIN and LOGIN offered with
and without TLS, right passwords answered 235 and wrong ones 535 5.7.8 at
once and again, --auth-required refusing MAIL before AUTH with 530 5.7.0,
the user recorded in the index and shown by the API; without --auth no
AUTH at all. The AUTH exchange is smtpd's own (src/smtpd/auth.c)."""
import smtplib
import ssl
import subprocess

import pytest

from sluicetest import wait_until


def swaks(sink, *args):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % sink.port,
                        "--from", "app@shop.test", "--to", "ann@example.test",
                        "--timeout", "20", *args],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout


@pytest.fixture
def sink(make_sink):
    return make_sink("--auth", "alice:s3cret word", "--auth", "bob:b0b:colon",
                     http=True)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_right_and_wrong(sink, mech):
    rc, out = swaks(sink, "--auth", mech, "--auth-user", "alice",
                    "--auth-password", "s3cret word")
    assert rc == 0, out
    assert "<-  235 2.7.0 Authentication successful" in out
    wait_until(lambda: len(sink.index()) == 1, what="the message")
    assert sink.index()[0]["auth_user"] == "alice"
    # a colon in the password is the password's (the first ends the name)
    rc, out = swaks(sink, "--auth", mech, "--auth-user", "bob",
                    "--auth-password", "b0b:colon")
    assert "<-  235 " in out, out
    for user, pw in (("alice", "wrong"), ("bob", "s3cret word"),
                     ("nobody", "x"), ("alice", "s3cret wor")):
        rc, out = swaks(sink, "--auth", mech, "--auth-user", user,
                        "--auth-password", pw)
        assert rc != 0
        assert "<** 535 5.7.8 Authentication credentials invalid" in out, out
    assert len(sink.index()) == 2


def test_auth_in_tls_and_failures_do_not_lock(make_sink, cert):
    s = make_sink("--auth", "alice:pw", "--tls-cert", str(cert[0]),
                  "--tls-key", str(cert[1]))
    rc, out = swaks(s, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                    "--auth-password", "pw")
    assert rc == 0 and "<~  235 2.7.0" in out, out     # <~: in TLS
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=20)
    c.ehlo("client.test")
    assert c.has_extn("auth") and c.has_extn("starttls")
    # a test server answers every wrong password at once: no lockout
    for _ in range(15):
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login("alice", "nope")
        assert e.value.smtp_code == 535
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.starttls(context=ctx)
    c.ehlo("client.test")
    assert c.login("alice", "pw")[0] == 235
    c.sendmail("app@shop.test", ["ann@example.test"], b"Subject: t\r\n\r\nx\r\n")
    c.quit()
    wait_until(lambda: len(s.index()) == 2, what="2 messages")
    assert [m["auth_user"] for m in s.index()] == ["alice", "alice"]
    assert [m["tls"] for m in s.index()] == [True, True]


def test_auth_required(make_sink):
    s = make_sink("--auth", "alice:pw", "--auth-required", http=True)
    rc, out = swaks(s)
    assert rc != 0
    assert "<** 530 5.7.0 Authentication required" in out, out
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=20)
    c.ehlo("client.test")
    assert c.mail("app@shop.test") == (530, b"5.7.0 Authentication required")
    c.login("alice", "pw")
    assert c.mail("app@shop.test")[0] == 250
    assert c.rcpt("ann@example.test")[0] == 250
    assert c.data(b"Subject: after AUTH\r\n\r\nx\r\n")[0] == 250
    c.quit()
    m = s.api("/api/messages")["messages"]
    assert [x["auth_user"] for x in m] == ["alice"]
    v = s.api("/api/messages/%s/view" % m[0]["id"])
    assert v["auth_user"] == "alice" and v["subject"] == "after AUTH"
    server = s.api("/api/server")
    assert server["auth_users"] == ["alice"] and server["auth_required"]
    assert "pw" not in str(server)


def test_no_auth_without_users(make_sink):
    s = make_sink()
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=20)
    c.ehlo("client.test")
    assert not c.has_extn("auth")
    assert c.docmd("AUTH", "PLAIN AGEAYg==")[0] == 502
    assert c.mail("app@shop.test")[0] == 250
    c.quit()


def test_bad_flags():
    from sinkutil import run_sluice
    r = run_sluice("sink", "--auth-required")
    assert r.returncode == 2 and "--auth-required needs a user" in r.stderr
    for bad in ("nocolon", ":pw", "user:"):
        r = run_sluice("sink", "--auth", bad)
        assert r.returncode == 2 and "USER:PASS" in r.stderr, bad
