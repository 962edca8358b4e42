"""
Bulk injection: POST /api/v1/inject with a Python urllib client, into a
real sluiced delivering to `sluice sink`; the Idempotency-Key across a
restart; the failure queue (`sluice failures`) and the archive
(`sluice archive`); delivery events to a webhook receiver, also while it
is down.
"""
import json
import os
import time

import pytest

from injectutil import (TOKEN, Webhook, inject, inject_conf, parse, parts,
                        sink_count, to_of)
from sinkutil import run_sluice
from sluicetest import scaled, wait_until


def req(rcpts, **kw):
    r = {"from": "News <news@example.test>",
         "subject": "Hello {{name}}",
         "text": "Hi {{name|friend}}, your code is {{code}}.\n",
         "html": "<p>Hi {{name|friend}}, code {{code}}</p>",
         "headers": {"X-Campaign": "c42", "X-Who": "{{name}}"},
         "unsubscribe": "https://example.test/u?e={{email}}",
         "vars": {"code": "default"},
         "metadata": {"campaign": "c42"},
         "recipients": rcpts}
    r.update(kw)
    return r


def by_to(sink):
    """{recipient: [messages (bytes)]} of what the sink caught."""
    out = {}
    for raw in sink.messages():
        out.setdefault(to_of(raw), []).append(raw)
    return out


@pytest.fixture
def world(make_sluiced, make_sink, tmp_path):
    def make(extra=None, sink_args=(), **kw):
        sink = make_sink(*sink_args)
        d = make_sluiced(conf=inject_conf(tmp_path, sink.port, extra), **kw)
        return d, sink
    return make


def check_batch(world, n, marks):
    d, sink = world()
    rcpts = [{"email": f"u{i}@d{i % 7}.test",
              "vars": {"name": f"N{i}", "code": f"C{i}"}} for i in range(n)]
    bad = n // 2
    rcpts[bad] = {"email": "not an address", "vars": {"name": "x"}}
    xss, crlf = 1, 2
    rcpts[xss]["vars"]["name"] = "<script>alert(1)</script>"
    rcpts[crlf]["vars"]["name"] = "Eve\r\nBcc: victim@evil.test\r\nX-Injected: 1"
    code, ans = inject(d, req(rcpts))
    assert code == 200, ans
    assert ans["accepted"] == n - 1
    assert ans["rejected"] == [{"index": bad, "email": "not an address",
                                "reason": "email: not a valid address"}]
    assert len(ans["batch_id"]) == 16
    wait_until(lambda: sink_count(sink) >= n - 1, timeout=600,
               what=f"{n - 1} messages at the sink")
    got = by_to(sink)
    # exactly once each, and nothing for the bad address
    assert sorted(got) == sorted(r["email"] for i, r in enumerate(rcpts)
                                 if i != bad)
    assert all(len(v) == 1 for v in got.values())
    for i, r in enumerate(rcpts):
        if i == bad or i % marks not in (0,) and i not in (xss, crlf):
            continue
        m = parse(got[r["email"]][0])
        text, html = parts(m)
        name = r["vars"]["name"]
        if i == crlf:
            name = name.replace("\r", " ").replace("\n", " ")
        assert f"your code is C{i}." in text
        assert m["Message-ID"] == f"<{ans['batch_id']}.{i if i < bad else i - 1}@mx.sluice.test>"
        assert m["List-Unsubscribe"] == (
            "<https://example.test/u?e=" + r["email"].replace("@", "%40") + ">")
        assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        if i == xss:
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
            assert "<script>" not in html
        elif i != crlf:
            assert f"<p>Hi {name}, code C{i}</p>" in html
            assert m["Subject"] == f"Hello {name}"
    # a header value with CR/LF added no header and no recipient
    m = parse(got[rcpts[crlf]["email"]][0])
    assert m["Bcc"] is None and m["X-Injected"] is None
    assert "Bcc: victim@evil.test" in m["Subject"]
    assert str(m["To"]) == rcpts[crlf]["email"]
    # (the index also keeps each Subject, where the attempt shows as text)
    assert not any("victim@evil.test" in json.dumps(m["rcpt_to"])
                   for m in sink.index())
    return d, sink, ans


def test_batch_small(world):
    """200 recipients: every part of a built message checked (ASan too)."""
    check_batch(world, 200, 1)


@pytest.mark.slow
def test_batch_10000_each_exactly_once(world):
    check_batch(world, scaled(10000, 2000), 97)


def test_bad_requests_and_token(world):
    d, sink = world()
    code, ans = inject(d, req([{"email": "a@b.test"}]), token=None)
    assert code == 401
    code, ans = inject(d, req([{"email": "a@b.test"}]), token="wrong")
    assert code == 401
    code, ans = inject(d, None, raw=b'{"from": "a@b.test", "recipients": [')
    assert code == 400 and "recipients" in ans["error"]
    code, ans = inject(d, req([{"email": "a@b.test"}], subject="{{oops"))
    assert code == 400
    assert ans["error"] == 'subject: offset 0: "{{" without its "}}"'
    code, ans = inject(d, req([{"email": "a@b.test"}], colour="red"))
    assert code == 400 and ans["error"] == "unknown field 'colour'"
    # every address bad: nothing queued, still an answer per recipient
    code, ans = inject(d, req([{"email": "x"}, {"email": "y@"}]))
    assert code == 200 and ans["accepted"] == 0 and ans["batch_id"] is None
    assert [r["index"] for r in ans["rejected"]] == [0, 1]
    time.sleep(0.5)
    assert sink_count(sink) == 0


def test_idempotency_key_twice_sends_once(world):
    d, sink = world()
    r = req([{"email": f"k{i}@idem.test"} for i in range(5)])
    code1, a1 = inject(d, r, key="order-17")
    code2, a2 = inject(d, r, key="order-17")
    assert code1 == code2 == 200 and a1 == a2
    wait_until(lambda: sink_count(sink) >= 5, what="5 messages")
    # the key survives a restart (it is in the spool)
    d.restart()
    code3, a3 = inject(d, r, key="order-17")
    assert code3 == 200 and a3 == a1
    code4, a4 = inject(d, r, key="order-18")
    assert a4["batch_id"] != a1["batch_id"]
    wait_until(lambda: sink_count(sink) >= 10, what="10 messages")
    time.sleep(1)
    assert sink_count(sink) == 10
    assert "injection repeated: first answer returned" in d.log_text()


def test_failures_retry_after_the_sink_stops_failing(world, make_sink,
                                                     tmp_path):
    d, sink = world(sink_args=("--rule", "rcpt *@fail.test 550 5.1.1 "
                               "No such user"))
    code, ans = inject(d, req([{"email": "ok@fine.test"},
                               {"email": "gone@fail.test",
                                "vars": {"name": "Gone", "code": "G7"}}]))
    assert code == 200
    batch = ans["batch_id"]

    def listed():
        r = run_sluice("failures", "list", "--json", "-c", str(d.conf_path))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    fl = wait_until(listed, timeout=30, what="a failure listed")
    assert len(fl) == 1
    assert fl[0]["rcpt"] == "gone@fail.test" and fl[0]["batch"] == batch
    assert fl[0]["reply"].startswith("550 5.1.1")
    from injectutil import api_get
    code, api = api_get(d, "/api/v1/failures?batch=" + batch)
    assert code == 200 and api == fl
    text = run_sluice("failures", "list", "-c", str(d.conf_path)).stdout
    assert "gone@fail.test" in text and "550 5.1.1" in text
    # the message left the spool once the failure was kept
    wait_until(lambda: d.spool.count() == 0, what="spool empty")
    # a sink on the same port that accepts everyone
    port = sink.port
    sink.stop()
    from sinkutil import Sink
    (tmp_path / "s2").mkdir()
    s2 = Sink(tmp_path / "s2", "--listen", f"127.0.0.1:{port}")
    try:
        r = run_sluice("failures", "retry", "--batch", batch, "-c",
                       str(d.conf_path))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("re-queued 1 recipient(s) as MID ")
        wait_until(lambda: sink_count(s2) == 1, what="the retry delivered")
        m = parse(s2.messages()[0])
        assert str(m["To"]) == "gone@fail.test"
        # the same message: its own vars again
        assert "your code is G7." in parts(m)[0]
        assert listed() == []
        r = run_sluice("failures", "retry", "999", "-c", str(d.conf_path))
        assert r.returncode == 1 and "not in the queue" in r.stderr
    finally:
        s2.check_clean()


def test_failures_purge(world):
    d, sink = world(sink_args=("--rule", "rcpt * 554 5.7.1 Refused",))
    inject(d, req([{"email": f"p{i}@x.test"} for i in range(3)]))
    wait_until(lambda: run_sluice("failures", "list", "--json", "-c",
                                  str(d.conf_path)).stdout.count('"rcpt"') == 3,
               what="3 failures")
    r = run_sluice("failures", "purge", "-c", str(d.conf_path))
    assert r.returncode == 0 and r.stdout == "purged 3 failure(s)\n"


def test_archive_find_show_byte_for_byte(world, tmp_path):
    d, sink = world(extra={"archive": {"dir": str(tmp_path / "archive"),
                                       "match": "*@archived.test"}})
    code, ans = inject(d, req([{"email": "ann@a.test",
                                "vars": {"name": "Ann"}}], archive=True))
    assert code == 200
    code2, ans2 = inject(d, req([{"email": "ann@a.test"}]))  # not archived
    wait_until(lambda: sink_count(sink) == 2, what="2 delivered")

    def found():
        r = run_sluice("archive", "find", "--rcpt", "ann@a.test", "--json",
                       "-c", str(d.conf_path))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    hits = wait_until(found, what="the archived message")
    assert len(hits) == 1 and hits[0]["batch"] == ans["batch_id"]
    r = run_sluice("archive", "find", "--batch", ans["batch_id"], "-c",
                   str(d.conf_path))
    assert hits[0]["id"] in r.stdout
    import subprocess
    from sinkutil import sluice_bin
    shown = subprocess.run([sluice_bin(), "archive", "show", hits[0]["id"],
                            "-c", str(d.conf_path)], capture_output=True,
                           timeout=30)
    assert shown.returncode == 0, shown.stderr
    delivered = [m for m in sink.messages() if b"Subject: Hello Ann" in m]
    assert len(delivered) == 1
    assert shown.stdout == delivered[0]
    r = run_sluice("archive", "show", "0000000000000001", "-c",
                   str(d.conf_path))
    assert r.returncode == 1 and "not in the archive" in r.stderr
    # the same through the HTTP API (the same control commands)
    import base64
    from injectutil import api_get
    code, found = api_get(d, "/api/v1/archive?rcpt=ann%40a.test")
    assert code == 200 and [h["id"] for h in found] == [hits[0]["id"]]
    code, one = api_get(d, "/api/v1/archive/" + hits[0]["id"])
    assert code == 200
    assert base64.b64decode(one["message_base64"]) == delivered[0]
    code, err = api_get(d, "/api/v1/archive/0000000000000001")
    assert code == 404 and "not in the archive" in err["error"]


def test_webhook_one_event_per_outcome(world):
    hook = Webhook().start()
    try:
        d, sink = world(extra={"events": {"webhook_url": hook.url,
                                          "batch_delay": "1s"}},
                        sink_args=("--rule", "rcpt *@no.test 550 5.1.1 no",))
        rcpts = [{"email": f"w{i}@ok.test"} for i in range(50)] + \
            [{"email": "x@no.test"}]
        code, ans = inject(d, req(rcpts))
        assert code == 200
        wait_until(lambda: len(hook.of("delivered")) == 50 and
                   len(hook.of("bounced")) == 1, timeout=60,
                   what="51 outcome events")
        ev = hook.of("delivered")
        assert sorted(e["recipient"] for e in ev) == sorted(
            str(parse(m)["To"]) for m in sink.messages())
        assert len({(e["mid"], e["rid"]) for e in ev}) == 50
        e = ev[0]
        assert e["batch_id"] == ans["batch_id"] == e["mid"]
        assert e["metadata"] == {"campaign": "c42"}
        assert e["reply"].startswith("250 ")
        b = hook.of("bounced")[0]
        assert b["recipient"] == "x@no.test" and b["reply"].startswith("550")
        rec = hook.of("received")
        assert len(rec) == 1 and rec[0]["recipients"] == 51
        import urllib.request
        from injectutil import api_port
        page = urllib.request.urlopen(
            f"http://127.0.0.1:{api_port(d)}/metrics", timeout=10).read()
        assert b"sluice_inject_batches_total 1\n" in page
        assert b"sluice_inject_recipients_total 51\n" in page
        assert b"sluice_events_dropped_total 0\n" in page
        import re
        sent = int(re.search(rb"(?m)^sluice_events_sent_total (\d+)",
                             page).group(1))
        assert sent >= 52
    finally:
        hook.stop()


@pytest.mark.slow
def test_webhook_down_30s_loses_nothing_and_delivery_goes_on(world):
    hook = Webhook()          # its port is chosen, nothing listens yet
    d, sink = world(extra={"events": {"webhook_url": hook.url,
                                      "batch_delay": "1s",
                                      "retry_max": "2s"}})
    t0 = time.monotonic()
    n = scaled(2000, 500)
    code, ans = inject(d, req([{"email": f"w{i}@ok.test"}
                               for i in range(n)]))
    assert code == 200
    # every message is delivered while the receiver is down: delivery
    # never waits for the events
    wait_until(lambda: sink_count(sink) == n, timeout=120,
               what=f"{n} delivered")
    assert hook.srv is None and hook.posts == 0
    d.wait_log("events: webhook failed, events wait on disk")
    time.sleep(max(0, 30 - (time.monotonic() - t0)))
    hook.start()
    try:
        wait_until(lambda: len(hook.of("delivered")) >= n, timeout=120,
                   what="every event after the outage")
        ev = hook.of("delivered")
        assert len(ev) == n
        assert len({e["rid"] for e in ev}) == n
        d.wait_log("events: webhook answers again")
    finally:
        hook.stop()


def test_oversize_rendering_rejects_that_recipient_only(world):
    """A recipient whose values would make a part larger than [server]
    max_message_size is rejected in the answer, not failed at delivery."""
    d, sink = world(extra={"server": {"max_message_size": "2K"}})
    big = "x" * 1500
    code, ans = inject(d, {"from": "a@example.test", "subject": "s",
                           "text": "{{v}}{{v}}",
                           "recipients": [{"email": "small@a.test",
                                           "vars": {"v": "ok"}},
                                          {"email": "big@a.test",
                                           "vars": {"v": big}}]})
    assert code == 200 and ans["accepted"] == 1
    assert ans["rejected"] == [{"index": 1, "email": "big@a.test",
                                "reason": "the message would be larger "
                                "than 2048 bytes once its values are in"}]
    wait_until(lambda: sink_count(sink) == 1, what="the small one")
    assert str(parse(sink.messages()[0])["To"]) == "small@a.test"


def test_events_wait_on_disk_across_a_restart(world):
    hook = Webhook()          # down
    d, sink = world(extra={"events": {"webhook_url": hook.url,
                                      "batch_delay": "1s",
                                      "retry_max": "1s"}})
    code, ans = inject(d, req([{"email": f"r{i}@ok.test"} for i in range(40)]))
    assert code == 200
    wait_until(lambda: sink_count(sink) == 40, what="40 delivered")
    d.wait_log("events: webhook failed, events wait on disk")
    d.stop()                  # memory goes to disk at the stop
    lines = (d.spool_dir / "events.jsonl").read_text().splitlines()
    assert sum(1 for l in lines if '"delivered"' in l) == 40
    hook.start()
    try:
        d.start()
        wait_until(lambda: len(hook.of("delivered")) >= 40,
                   what="the events after the restart")
        assert sorted(e["recipient"] for e in hook.of("delivered")) == \
            sorted(f"r{i}@ok.test" for i in range(40))
        assert len(hook.of("received")) == 1
        # sent once: the file is emptied after the last batch
        wait_until(lambda: (d.spool_dir / "events.jsonl").stat().st_size
                   == 0, what="the disk spool emptied")
    finally:
        hook.stop()


def test_failures_retry_of_a_message_received_over_smtp(world, tmp_path):
    import smtplib
    d, sink = world(sink_args=("--rule", "rcpt *@fail.test 550 5.1.1 no",))
    body = b"Subject: over smtp\r\nFrom: s@src.test\r\n\r\nthe body\r\n"
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as c:
        c.sendmail("s@src.test", ["x@fail.test"], body)

    def listed():
        r = run_sluice("failures", "list", "--json", "-c", str(d.conf_path))
        return json.loads(r.stdout) if r.returncode == 0 else None
    fl = wait_until(listed, what="the failure listed")
    assert fl[0]["rcpt"] == "x@fail.test" and fl[0]["batch"] is None
    # the sender got its DSN (a message received over SMTP keeps them)
    wait_until(lambda: sink_count(sink) == 1, what="the DSN")
    port = sink.port
    sink.stop()
    from sinkutil import Sink
    (tmp_path / "s3").mkdir()
    s3 = Sink(tmp_path / "s3", "--listen", f"127.0.0.1:{port}")
    try:
        r = run_sluice("failures", "retry", str(fl[0]["id"]), "-c",
                       str(d.conf_path))
        assert r.returncode == 0, r.stderr
        wait_until(lambda: sink_count(s3) == 1, what="the retry")
        got = s3.messages()[0]
        # the same message again: our Received: line first, then its bytes
        assert got.startswith(b"Received: ") and got.endswith(body)
        assert s3.index()[0]["mail_from"] == "s@src.test"
        assert listed() == []
    finally:
        s3.check_clean()
