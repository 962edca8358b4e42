"""
The log: text lines carry ICID, MID and RID [n]; --log-format json (or
[log] format = json) writes one JSON object per line with the same ids.
"""
import json
import re

import pytest

from sluicetest import Raw, mid_of

MSG = b"Subject: log me\r\n\r\nhello\r\n"


def send_two(d):
    with Raw(d.port) as c:
        c.ehlo()
        r = c.send_message("alice@client.sluice.test",
                           ["bob@local.test", "carol@local.test"], MSG)
        assert r.startswith("250 2.0.0 Ok: queued as"), r
        c.send("FROB\r\n")
        c.expect("500")
        c.cmd("QUIT")
    return mid_of(r)


def test_text_log(sluiced):
    mid = send_two(sluiced)
    m = f"{mid:016X}"
    sluiced.wait_log(r"connection closed")
    text = sluiced.log_text()
    line_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                         r"(Debug|Info|Warning|Error): ")
    for line in text.splitlines():
        assert line_re.match(line), f"malformed log line {line!r}"
    assert re.search(rf"ICID (\d+) New SMTP connection address=127\.0\.0\.1 ",
                     text)
    icid = re.search(r"ICID (\d+) New SMTP connection", text).group(1)
    assert re.search(rf"ICID {icid} MID {m} From sender=alice@client\.sluice\.test",
                     text), text
    assert f"ICID {icid} MID {m} RID [0] To rcpt=bob@local.test" in text
    assert f"ICID {icid} MID {m} RID [1] To rcpt=carol@local.test" in text
    # the gateway's words (issue 9 item 20), the ICID after them
    assert re.search(rf"Z Info: MID {m} queued for delivery icid={icid}$",
                     text, re.M), text
    assert re.search(rf"ICID {icid} .*rejected cmd=- reply=.*500 5\.5\.2", text)
    assert f"ICID {icid} connection closed" in text


def check_json_log(d, mid):
    d.wait_log(r'"event":"connection closed"')
    events = []
    for line in d.log_text().splitlines():
        obj = json.loads(line)      # every line is one JSON object
        assert isinstance(obj, dict)
        assert "time" in obj and "level" in obj and "event" in obj, line
        events.append(obj)
    m = f"{mid:016X}"
    rcpts = [e for e in events if e["event"] == "To"]
    assert [(e.get("mid"), e.get("rid"), e.get("rcpt")) for e in rcpts] == [
        (m, 0, "bob@local.test"), (m, 1, "carol@local.test")]
    icid = rcpts[0]["icid"]
    assert isinstance(icid, int)
    queued = [e for e in events if e["event"] == "queued for delivery"]
    assert len(queued) == 1
    assert queued[0]["icid"] == icid and queued[0]["mid"] == m
    assert "rid" not in queued[0]
    started = [e for e in events if e["event"] == "sluiced started"]
    assert started and "icid" not in started[0]


def test_json_log_flag(make_sluiced):
    d = make_sluiced(args=["--log-format", "json"])
    check_json_log(d, send_two(d))


def test_json_log_config(make_sluiced):
    d = make_sluiced(conf={"log": {"format": "json"}})
    check_json_log(d, send_two(d))


def test_json_log_escapes(make_sluiced):
    """Client-supplied text with quotes, backslashes, control bytes and
    UTF-8 stays valid JSON."""
    d = make_sluiced(args=["--log-format", "json"])
    with Raw(d.port) as c:
        c.ehlo()
        c.send('MAIL FROM:<"we\\"ird\\\\"@client.sluice.test> SMTPUTF8\r\n')
        c.reply()
        c.send(b"FROB \"\\\x01\t\xc3\xa9\r\n")
        c.reply()
        c.cmd("QUIT")
    d.wait_log(r'"event":"connection closed"')
    for line in d.log_text().splitlines():
        json.loads(line)


def test_log_file(make_sluiced, tmp_path):
    logf = tmp_path / "sluiced.log"
    d = make_sluiced(conf={"log": {"file": str(logf)}})
    mid = send_two(d)
    d.wait_log(f"MID {mid:016X} queued for delivery")
    assert "sluiced started" in logf.read_text()
    d.stop()
    assert "sluiced stopped" in logf.read_text()
