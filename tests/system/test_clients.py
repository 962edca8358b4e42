"""
Other people's SMTP clients against sluiced: swaks, curl, and Postfix's
smtp-source for concurrency.
"""
import re
import subprocess

import pytest

from sluicetest import mid_of, scaled

MSG = (b"From: Alice <alice@client.sluice.test>\r\n"
       b"To: Bob <bob@local.test>\r\n"
       b"Subject: from a client\r\n"
       b"Message-ID: <c1@client.sluice.test>\r\n"
       b"\r\n"
       b"Body line one.\r\n"
       b".leading dot\r\n"
       b"\r\n"
       b"last line\r\n")


def run(argv, timeout=60):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), \
        p.stderr.decode(errors="replace")


# swaks sends its data, then "\r\n.\r\n": the message it sends is the
# file and one more CRLF.
SWAKS_SENT = MSG + b"\r\n"


def queued_mids(text):
    return [mid_of(m.group(0)) for m in
            re.finditer(r"queued as [0-9A-F]{16}", text)]


@pytest.mark.parametrize("pipe", [False, True], ids=["plain", "pipelining"])
def test_swaks_several_recipients(sluiced, tmp_path, pipe):
    f = tmp_path / "msg.eml"
    f.write_bytes(MSG)
    rcpts = ["bob@local.test", "carol@local.test", "dave@relay.test"]
    argv = ["swaks", "--server", f"127.0.0.1:{sluiced.port}",
            "--helo", "client.sluice.test",
            "--from", "alice@client.sluice.test", "--to", ",".join(rcpts),
            "--data", "@" + str(f), "--timeout", "30"]
    if pipe:
        argv.append("--pipeline")
    rc, out, err = run(argv)
    assert rc == 0, out + err
    # the transcript shows what swaks sent before each reply: pipelined,
    # MAIL, the three RCPTs and DATA go out before the first reply
    # (RFC 2920); plain, the reply to MAIL comes before the first RCPT
    lines = [l for l in out.splitlines() if l.startswith((" -> ", "<-  "))]
    i = lines.index(" -> MAIL FROM:<alice@client.sluice.test>")
    head = lines[i + 1:i + 5]
    if pipe:
        assert head == [f" -> RCPT TO:<{r}>" for r in rcpts] + [" -> DATA"], \
            lines[i:i + 10]
    else:
        assert head[0].startswith("<-  250 2.1.0"), lines[i:i + 10]
    mids = queued_mids(out)
    assert len(mids) == 1, out
    sp = sluiced.spool
    assert sp.message(mids[0]) == SWAKS_SENT
    assert [r["addr"] for r in sp.recipients(mids[0])] == rcpts
    assert sp.envelope(mids[0])["sender"] == "alice@client.sluice.test"


def test_swaks_refused_recipient(make_sluiced, tmp_path):
    """swaks with one recipient refused (relay): the others get the mail."""
    d = make_sluiced(conf={"server": {"trusted_networks": "192.0.2.0/24",
                                      "relay_domains": "local.test"}})
    f = tmp_path / "msg.eml"
    f.write_bytes(MSG)
    rc, out, err = run(["swaks", "--server", f"127.0.0.1:{d.port}",
                        "--from", "alice@client.sluice.test",
                        "--to", "bob@local.test,x@elsewhere.test",
                        "--data", "@" + str(f), "--timeout", "30"])
    assert "554 5.7.1" in out, out
    mids = queued_mids(out)
    assert len(mids) == 1, out + err
    assert d.spool.message(mids[0]) == SWAKS_SENT
    assert [r["addr"] for r in d.spool.recipients(mids[0])] == [
        "bob@local.test"]


def test_curl(sluiced, tmp_path):
    f = tmp_path / "msg.eml"
    f.write_bytes(MSG)
    rc, out, err = run(["curl", "-sS", "-v",
                        f"smtp://127.0.0.1:{sluiced.port}/client.sluice.test",
                        "--mail-from", "alice@client.sluice.test",
                        "--mail-rcpt", "bob@local.test",
                        "--mail-rcpt", "carol@local.test",
                        "--upload-file", str(f)])
    assert rc == 0, err
    mids = queued_mids(err)
    assert len(mids) == 1, err
    sp = sluiced.spool
    assert sp.message(mids[0]) == MSG
    assert [r["addr"] for r in sp.recipients(mids[0])] == [
        "bob@local.test", "carol@local.test"]
    assert sp.envelope(mids[0])["helo"] == "client.sluice.test"


def test_curl_refused_recipient_fails(make_sluiced, tmp_path):
    d = make_sluiced(conf={"server": {"trusted_networks": "192.0.2.0/24"}})
    f = tmp_path / "msg.eml"
    f.write_bytes(MSG)
    rc, out, err = run(["curl", "-sS", "-v", f"smtp://127.0.0.1:{d.port}",
                        "--mail-from", "alice@client.sluice.test",
                        "--mail-rcpt", "bob@elsewhere.test",
                        "--upload-file", str(f)])
    assert rc != 0
    assert "554 5.7.1" in err
    assert d.spool.count() == 0


@pytest.mark.slow
def test_smtp_source_concurrency(make_sluiced):
    d = make_sluiced(conf={"server": {"relay_domains": "local.test"}})
    n = scaled(500, 200)
    rc, out, err = run(["/usr/sbin/smtp-source", "-s", "20", "-m", str(n),
                        "-l", "4096", "-f", "source@client.sluice.test",
                        "-t", "sink@local.test", "-M", "client.sluice.test",
                        f"127.0.0.1:{d.port}"], timeout=120)
    assert rc == 0, out + err
    assert "error" not in (out + err).lower(), out + err
    sp = d.spool
    assert sp.count() == n
    bodies = sp.bodies()
    assert len(bodies) == n
    for mid, body in bodies.items():
        msg = sp.message(mid)
        assert b"From: <source@client.sluice.test>" in msg
        assert len(msg) >= 4096
    rcpts = {r["addr"] for m in list(bodies)[:20] for r in sp.recipients(m)}
    assert rcpts == {"sink@local.test"}
