"""
Operations: the control socket and `sluice queue ...`, `status`, `reload`,
`stop`; `sluice sendmail`; /metrics and /healthz. Against a running sluiced
whose mail goes to a receiver the test controls (ops_util.Receiver), which
answers 451 until told to accept.
"""
import json
import os
import shutil
import signal
import stat
import time

import pytest

from ops_util import (SLUICE, Receiver, list_json, metric, ops_conf,
                      parse_prom, port_open, run_sluice, scrape, send,
                      traversable_dir, wait_rcpt_state)
from sluicetest import wait_until

SENDER = "alice@src.sluice.test"


@pytest.fixture
def ops(make_sluiced, receiver, tmp_path):
    """A started daemon routing everything to receiver; retries every 1s."""
    def make(retry="1s", extra=None, sock=None, name=None):
        sock = sock or tmp_path / (name or "ops") / "run" / "sluice.sock"
        d = make_sluiced(conf=ops_conf(receiver, sock, retry=retry,
                                       extra=extra), name=name)
        d.sock = sock
        d.metrics_port = int(d.conf["http"]["listen"].rsplit(":", 1)[1])
        return d
    return make


def deferred(d, receiver, rcpt, retry="1s"):
    """A message to rcpt, deferred once by the receiver (451)."""
    receiver.defer(rcpt)
    mid = send(d, SENDER, [rcpt])
    return mid, wait_rcpt_state(d.conf_path, mid, "deferred")


# ---- the control socket itself ----

def test_socket_mode_0660(ops):
    d = ops()
    st = os.stat(d.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_protocol_errors_answered(ops):
    import socket
    d = ops()
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(d.sock))
    f = s.makefile("rwb")
    for line, want in [(b"not json\n", "not JSON"),
                       (b'{"v":2,"cmd":"status"}\n', "version"),
                       (b'{"v":1}\n', "cmd"),
                       (b'{"v":1,"cmd":"frob"}\n', "unknown command"),
                       (b'{"v":1,"cmd":"status","args":[]}\n', "args")]:
        f.write(line)
        f.flush()
        r = json.loads(f.readline())
        assert r["v"] == 1 and r["ok"] is False, r
        assert want in r["error"], r
    f.write(b'{"v":1,"cmd":"status"}\n')
    f.flush()
    r = json.loads(f.readline())
    assert r["ok"] is True and r["result"]["pid"] > 0
    s.close()


# ---- queue list / show / summary ----

def test_list_shows_deferred_message_with_reply(ops, receiver):
    d = ops(retry="1h")
    receiver.defer("bob@dest.sluice.test")
    mid = send(d, SENDER, ["bob@dest.sluice.test", "carol@dest.sluice.test"])
    m = wait_until(lambda: next((m for m in list_json(d.conf_path)
                                 if m["mid"] == mid and
                                 m["recipients"][0]["state"] == "deferred"),
                                None), what="deferred")
    assert m["sender"] == SENDER
    assert m["size"] > 0 and abs(m["arrival"] - time.time()) < 60
    r = m["recipients"][0]
    assert r["rid"] == 0 and r["address"] == "bob@dest.sluice.test"
    assert r["attempts"] == 1
    assert r["next_retry"] > time.time() + 600
    assert r["last_reply"].startswith("451 4.7.1 Try again later")
    assert receiver.got("carol@dest.sluice.test")
    # the table for people names the message, recipient and reply
    out = run_sluice("queue", "list", conf=d.conf_path)
    assert out.returncode == 0, out.stderr
    assert mid in out.stdout and "bob@dest.sluice.test" in out.stdout
    assert "deferred" in out.stdout and "451 4.7.1" in out.stdout
    # filters
    assert [m["mid"] for m in json.loads(run_sluice(
        "queue", "list", "--state", "deferred", "--json",
        conf=d.conf_path).stdout)] == [mid]
    assert json.loads(run_sluice("queue", "list", "--state", "held", "--json",
                                 conf=d.conf_path).stdout) == []
    assert json.loads(run_sluice("queue", "list", "--domain", "other.test",
                                 "--json", conf=d.conf_path).stdout) == []
    assert len(json.loads(run_sluice(
        "queue", "list", "--domain", "DEST.sluice.test", "--json",
        conf=d.conf_path).stdout)) == 1


def test_show_with_body(ops, receiver):
    d = ops(retry="1h")
    mid, _ = deferred(d, receiver, "bob@dest.sluice.test")
    r = run_sluice("queue", "show", mid, "--body", "--json", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["mid"] == mid and "Subject: ops test" in m["body"]
    assert m["body"].startswith("Received: ")
    r = run_sluice("queue", "show", mid, "--body", conf=d.conf_path)
    assert mid in r.stdout and "Subject: ops test" in r.stdout


@pytest.mark.serial     # strace -f on the daemon
def test_show_body_read_off_the_loop(ops, receiver, tmp_path):
    """`queue show --body` reads the body on the spool's reader thread,
    as delivery does, never on the event loop thread: strace attached to
    the daemon sees reads of the spool's files by the reader only. On
    main the loop thread read it (spool_body_load)."""
    import re
    import subprocess
    d = ops(retry="1h")
    body = b"".join(b"line %05d of a body read for show\r\n" % i
                    for i in range(8000))
    receiver.defer("bob@dest.sluice.test")
    mid = send(d, SENDER, ["bob@dest.sluice.test"], body=body)
    wait_rcpt_state(d.conf_path, mid, "deferred")
    trace = tmp_path / "show.trace"
    st = subprocess.Popen(["strace", "-f", "-y", "-o", str(trace), "-e",
                           "trace=read,pread64,preadv,preadv2",
                           "-p", str(d.pid)],
                          stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "attached" in _peek(st), timeout=20,
                   what="strace attached")
        r = run_sluice("queue", "show", mid, "--body", "--json",
                       conf=d.conf_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["body"].endswith(
            "line 07999 of a body read for show\r\n")
    finally:
        st.terminate()
        st.wait(timeout=30)
    spool_reads = [l for l in trace.read_text().splitlines()
                   if re.search(r"read\w*\(\d+<[^>]*/spool\.db", l)]
    by_loop = [l for l in spool_reads if l.split()[0] == str(d.pid)]
    assert spool_reads, "no read of the spool seen"
    assert not by_loop, "the loop thread read the body:\n" + \
        "\n".join(by_loop[:5])


def _peek(proc):
    """What a process printed on stderr so far (non-blocking)."""
    import os
    import select
    out = getattr(proc, "_seen", "")
    while select.select([proc.stderr], [], [], 0)[0]:
        chunk = os.read(proc.stderr.fileno(), 4096).decode(errors="replace")
        if not chunk:
            break
        out += chunk
    proc._seen = out
    return out


def test_summary_counts_match(ops, make_sluiced, receiver, tmp_path):
    other = Receiver()
    try:
        d = ops(retry="1h", extra={"routes": {
            "b.sluice.test": f"[127.0.0.1]:{other.port}"}})
        receiver.defer("*")
        other.defer("*")
        mids = [send(d, SENDER, ["x@a.sluice.test", "y@a.sluice.test"]),
                send(d, SENDER, ["x@a.sluice.test"]),
                send(d, SENDER, ["x@a.sluice.test", "z@b.sluice.test"]),
                send(d, SENDER, ["z@b.sluice.test"])]
        for mid in mids:
            wait_rcpt_state(d.conf_path, mid, "deferred")
        r = run_sluice("queue", "summary", "--json", conf=d.conf_path)
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        by = {x["destination"]: x for x in s["destinations"]}
        a = by[f"[127.0.0.1]:{receiver.port}"]
        b = by[f"[127.0.0.1]:{other.port}"]
        assert (a["messages"], a["recipients"]) == (3, 4)
        assert (b["messages"], b["recipients"]) == (2, 2)
        assert a["ages"][0] == 3 and sum(a["ages"]) == 3
        assert s["messages"] == 4 and s["recipients"] == 6
        assert 0 < time.time() - s["oldest"] < 120
        t = run_sluice("queue", "summary", conf=d.conf_path).stdout
        line = next(l for l in t.splitlines()
                    if l.startswith(f"[127.0.0.1]:{receiver.port}"))
        assert line.split()[1:4] == ["4", "3", "3"]
        assert "total: 4 message(s), 6 recipient(s)" in t
    finally:
        other.close()


# ---- actions ----

def test_flush_delivers_once_the_receiver_accepts(ops, receiver):
    d = ops(retry="1h")
    mid, _ = deferred(d, receiver, "bob@dest.sluice.test")
    receiver.accept_all()
    time.sleep(0.5)
    assert not receiver.got("bob@dest.sluice.test")   # no retry for 1h
    r = run_sluice("queue", "flush", mid, conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    assert "flushed 1 recipient" in r.stdout
    # with retries an hour apart, only the flush can have sent it
    wait_until(lambda: receiver.got("bob@dest.sluice.test"), timeout=30,
               what="delivery after flush")
    wait_until(lambda: list_json(d.conf_path) == [], what="queue empty")


def test_flush_domain_and_all(ops, receiver):
    d = ops(retry="1h")
    m1, _ = deferred(d, receiver, "a@one.sluice.test")
    m2, _ = deferred(d, receiver, "b@two.sluice.test")
    receiver.accept_all()
    r = run_sluice("queue", "flush", "--domain", "one.sluice.test",
                   conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: receiver.got("a@one.sluice.test"), what="one")
    assert not receiver.got("b@two.sluice.test")
    assert run_sluice("queue", "flush", conf=d.conf_path).returncode == 0
    wait_until(lambda: receiver.got("b@two.sluice.test"), what="two")


def test_delete_never_delivered_even_after_restart(ops, receiver):
    d = ops(retry="1s")
    mid, _ = deferred(d, receiver, "bob@dest.sluice.test")
    keep, _ = deferred(d, receiver, "keep@dest.sluice.test")
    r = run_sluice("queue", "delete", mid, conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    assert "deleted 1 message" in r.stdout
    assert int(mid, 16) not in d.spool.mids()
    assert [m["mid"] for m in list_json(d.conf_path)] == [keep]
    receiver.accept_all()
    wait_until(lambda: receiver.got("keep@dest.sluice.test"), timeout=10,
               what="the other message delivered")
    d.restart()
    time.sleep(2.5)
    assert not receiver.got("bob@dest.sluice.test")
    assert list_json(d.conf_path) == []
    assert d.spool.count() == 0


def test_delete_all_must_be_spelled_out(ops, receiver):
    d = ops(retry="1h")
    deferred(d, receiver, "bob@dest.sluice.test")
    r = run_sluice("queue", "delete", conf=d.conf_path)
    assert r.returncode == 2 and "--all" in r.stderr
    assert len(list_json(d.conf_path)) == 1
    r = run_sluice("queue", "delete", "--all", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    assert list_json(d.conf_path) == []


def test_hold_means_no_retry_until_release(ops, receiver):
    d = ops(retry="1s")
    rcpt = "bob@dest.sluice.test"
    mid, _ = deferred(d, receiver, rcpt)
    r = run_sluice("queue", "hold", mid, conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    wait_rcpt_state(d.conf_path, mid, "held")
    tries = receiver.tries(rcpt)
    receiver.accept_all()
    time.sleep(3.5)                      # three retry periods
    assert receiver.tries(rcpt) == tries
    assert not receiver.got(rcpt)
    assert [m["mid"] for m in json.loads(run_sluice(
        "queue", "list", "--state", "held", "--json",
        conf=d.conf_path).stdout)] == [mid]
    # held survives a restart
    d.restart()
    time.sleep(1.5)
    assert not receiver.got(rcpt)
    wait_rcpt_state(d.conf_path, mid, "held")
    r = run_sluice("queue", "release", mid, conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: receiver.got(rcpt), timeout=5, what="delivered")


def test_bounce_sends_the_dsn(ops, receiver):
    d = ops(retry="1h")
    rcpt = "bob@dest.sluice.test"
    mid, _ = deferred(d, receiver, rcpt)
    r = run_sluice("queue", "bounce", mid, conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    dsn = wait_until(lambda: receiver.got(SENDER), timeout=10,
                     what="the DSN to the sender")[0]
    assert dsn["mail_from"] == ""
    assert b"multipart/report" in dsn["data"]
    assert rcpt.encode() in dsn["data"]
    assert not receiver.got(rcpt)
    wait_until(lambda: list_json(d.conf_path) == [], what="queue empty")
    # the failed recipient and its DSN are counted
    samples, _ = parse_prom(scrape(d.metrics_port)[2])
    assert metric(samples, "sluice_messages_bounced_total") == 1
    assert metric(samples, "sluice_dsn_sent_total") == 1


# ---- status, metrics ----

def test_relayed_message_costs_one_insert_and_one_delete(ops, receiver):
    """Delivered at the first try: its outcome is recorded by the delete
    alone (no separate update commit), and its body goes out from memory,
    never read back from the spool."""
    d = ops(retry="1h")
    for i in range(5):
        send(d, SENDER, [f"r{i}@dest.sluice.test"])
    wait_until(lambda: len(receiver.messages) == 5, what="5 delivered")

    def spool_counts():
        sm, _ = parse_prom(scrape(d.metrics_port)[2])
        if metric(sm, "sluice_queue_messages") == 0:
            return sm
    sm = wait_until(spool_counts, what="an empty queue")
    assert metric(sm, "sluice_spool_requests_total", kind="insert") == 5
    assert metric(sm, "sluice_spool_requests_total", kind="delete") == 5
    assert metric(sm, "sluice_spool_requests_total", kind="update") == 0
    assert metric(sm, "sluice_spool_body_reads_total") == 0
    # a deferred one is recorded (update), and read back at its retry
    receiver.defer("late@dest.sluice.test")
    mid = send(d, SENDER, ["late@dest.sluice.test"])
    wait_rcpt_state(d.conf_path, mid, "deferred")
    receiver.accept_all()
    assert run_sluice("queue", "flush", mid, conf=d.conf_path).returncode == 0
    wait_until(lambda: receiver.got("late@dest.sluice.test"), what="late")
    sm = wait_until(spool_counts, what="an empty queue")
    assert metric(sm, "sluice_spool_requests_total", kind="update") >= 1
    assert metric(sm, "sluice_spool_body_reads_total") >= 1

def test_status(ops, receiver):
    d = ops(retry="1h")
    deferred(d, receiver, "bob@dest.sluice.test")
    r = run_sluice("status", "--json", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["pid"] == d.pid
    # uptime counts from the daemon's start: it grows with the clock
    time.sleep(1.1)
    s2 = json.loads(run_sluice("status", "--json", conf=d.conf_path).stdout)
    assert s2["uptime"] >= s["uptime"] + 1, (s["uptime"], s2["uptime"])
    assert s["messages"]["received"] == 1
    assert s["queue"] == {"messages": 1, "recipients": 1, "destinations": 1}
    assert s["spool"]["bytes"] > 0
    assert s["connections"]["in_total"] >= 1
    t = run_sluice("status", conf=d.conf_path).stdout
    for word in ("up ", "connections", "received 1", "queue", "spool"):
        assert word in t, t


def test_metrics_scraped_and_counters_match(ops, receiver):
    d = ops(retry="1s")
    status, ctype, text = scrape(d.metrics_port, "/healthz")
    assert status == 200 and text.strip() == "ok"
    rcpts = 0
    for i in range(5):
        send(d, SENDER, [f"r{i}@dest.sluice.test", f"s{i}@dest.sluice.test"])
        rcpts += 2
    receiver.defer("late@dest.sluice.test")
    late = send(d, SENDER, ["late@dest.sluice.test"])
    wait_rcpt_state(d.conf_path, late, "deferred", timeout=60)
    wait_until(lambda: len(receiver.messages) == 5, what="5 delivered",
               timeout=60)

    def delivered():
        # a delivered message leaves the queue once its delete (which
        # records the outcome too) is committed: wait for it
        samples, _ = parse_prom(scrape(d.metrics_port)[2])
        if metric(samples, "sluice_messages_delivered_total") == rcpts and \
                metric(samples, "sluice_queue_messages") == 1:
            return samples
    samples = wait_until(delivered, what="delivered counter", timeout=60)
    status, ctype, text = scrape(d.metrics_port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples, types = parse_prom(text)
    assert metric(samples, "sluice_messages_received_total") == 6
    assert metric(samples, "sluice_connections_total", direction="in") >= 6
    assert metric(samples, "sluice_messages_deferred_total") >= 1
    assert metric(samples, "sluice_messages_bounced_total") == 0
    assert metric(samples, "sluice_messages_expired_total") == 0
    assert metric(samples, "sluice_queue_messages") == 1
    assert metric(samples, "sluice_queue_recipients") == 1
    assert metric(samples, "sluice_destination_queue",
                  destination=f"[127.0.0.1]:{receiver.port}") == 1
    # the connection gauges follow what is open: the two SMTP sessions
    # the test holds; and no delivery connection once the last message is
    # delivered and the idle timeout (1s) has passed
    def gauge(direction):
        sm, _ = parse_prom(scrape(d.metrics_port)[2])
        return metric(sm, "sluice_connections", direction=direction)
    held = [d.connect(), d.connect()]
    wait_until(lambda: gauge("in") == 2, what="connections in=2", timeout=60)
    for c in held:
        c.close()
    wait_until(lambda: gauge("in") == 0, what="connections in=0", timeout=60)
    receiver.accept_all()
    wait_until(lambda: receiver.got("late@dest.sluice.test"), what="late",
               timeout=60)
    wait_until(lambda: gauge("out") == 0, what="connections out=0", timeout=60)
    for h in ("sluice_spool_commit_seconds", "sluice_spool_batch_size",
              "sluice_delivery_latency_seconds"):
        assert types[h] == "histogram"
        buckets = sorted(((float(dict(k[1])["le"]), v)
                          for k, v in samples.items()
                          if k[0] == h + "_bucket"))
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), h
        assert buckets[-1][0] == float("inf")
        assert buckets[-1][1] == metric(samples, h + "_count")
    assert metric(samples, "sluice_delivery_latency_seconds_count") == rcpts
    assert metric(samples, "sluice_spool_commit_seconds_count") >= 6
    # where the time goes: one histogram per step, every message counted
    # in each accepting step, every delivery attempt in each relaying one
    assert types["sluice_step_seconds"] == "histogram"
    for step in ("read", "parse", "queue", "commit", "reply", "schedule",
                 "deliver", "outcome"):
        buckets = sorted(((float(dict(k[1])["le"]), v)
                          for k, v in samples.items()
                          if k[0] == "sluice_step_seconds_bucket"
                          and dict(k[1])["step"] == step))
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and len(counts) == 20, step
        n = metric(samples, "sluice_step_seconds_count", step=step)
        assert buckets[-1] == (float("inf"), n), step
        if step in ("read", "parse", "queue", "commit", "reply"):
            assert n == 6, step
        else:
            # 5 delivered at the first try, "late" deferred at least once
            # (whose outcome's record may still be on its way)
            assert n >= (5 if step == "outcome" else 6), step
        assert metric(samples, "sluice_step_seconds_sum", step=step) >= 0
    assert types["sluice_messages_received_total"] == "counter"
    assert types["sluice_queue_messages"] == "gauge"


# ---- sendmail ----

PHP_MSG = ("To: Bob <bob@dest.sluice.test>, carol@dest.sluice.test\n"
           "Bcc: dave@dest.sluice.test\n"
           "Subject: from PHP\n"
           "\n"
           "line one\n"
           ".\n"
           "..dots\n"
           "last line\n")


def test_sendmail_t_i_delivers(ops, receiver, tmp_path):
    d = ops()
    link = tmp_path / "sendmail"
    link.symlink_to(SLUICE)
    r = run_sluice("-t", "-i", "-f", SENDER, "-F", "Alice A.", "-C",
                   d.conf_path, input=PHP_MSG, argv0=link)
    assert r.returncode == 0, r.stderr
    for rcpt in ("bob@dest.sluice.test", "carol@dest.sluice.test",
                 "dave@dest.sluice.test"):
        wait_until(lambda: receiver.got(rcpt), what=rcpt)
    m = receiver.got("dave@dest.sluice.test")[0]
    assert m["mail_from"] == SENDER
    body = m["data"].decode()
    assert "Bcc" not in body
    assert "\r\nDate: " in body and "\r\nMessage-ID: <" in body
    assert f'\r\nFrom: "Alice A." <{SENDER}>\r\n' in body
    # -i: the lone "." is message text, dots intact after unstuffing
    assert "\r\n.\r\n..dots\r\nlast line\r\n" in body


def test_sendmail_subcommand_dot_ends_without_i(ops, receiver):
    d = ops()
    msg = "From: me@src.sluice.test\nSubject: x\n\nkept\n.\ndropped\n"
    r = run_sluice("sendmail", "-f", SENDER, "-C", d.conf_path,
                   "eve@dest.sluice.test", input=msg)
    assert r.returncode == 0, r.stderr
    m = wait_until(lambda: receiver.got("eve@dest.sluice.test"))[0]
    assert b"kept" in m["data"] and b"dropped" not in m["data"]
    assert b"From: me@src.sluice.test" in m["data"]


def test_sendmail_verbose_shows_dialogue(ops, receiver):
    d = ops()
    r = run_sluice("sendmail", "-v", "-t", "-C", d.conf_path,
                   input="To: v@dest.sluice.test\n\nhi\n")
    assert r.returncode == 0, r.stderr
    assert ">>> RCPT TO:<v@dest.sluice.test>" in r.stderr
    assert "<<< 250 2.0.0 Ok: queued as" in r.stderr


def test_sendmail_no_recipient(ops):
    d = ops()
    r = run_sluice("sendmail", "-t", "-i", "-C", d.conf_path,
                   input="Subject: nobody to send to\n\nhi\n")
    assert r.returncode == 64
    assert "no recipients" in r.stderr


def test_sendmail_errors(ops, receiver, tmp_path):
    d = ops()
    receiver.defer("*")
    r = run_sluice("sendmail", "-Z", input="")
    assert r.returncode == 64 and "unknown flag -Z" in r.stderr
    # the daemon down: EX_TEMPFAIL, nothing sent
    conf = tmp_path / "down.ini"
    conf.write_text(f"[server]\nlisten = 127.0.0.1:{d.port + 0}\n")
    d.stop()
    r = run_sluice("sendmail", "-C", conf, "x@dest.sluice.test",
                   input="Subject: x\n\nhi\n")
    assert r.returncode == 75
    assert "cannot connect to sluiced" in r.stderr


def test_sendmail_refused_recipient(make_sluiced, tmp_path):
    # a daemon that refuses relaying for this client: 5xx -> EX_NOUSER
    d = make_sluiced(conf={"server": {"trusted_networks": "192.0.2.0/24"}})
    r = run_sluice("sendmail", "-C", d.conf_path, "x@elsewhere.test",
                   input="Subject: x\n\nhi\n")
    assert r.returncode == 67, r.stderr
    assert "recipient refused" in r.stderr


def test_mailq_name(ops, receiver, tmp_path):
    d = ops(retry="1h")
    mid, _ = deferred(d, receiver, "bob@dest.sluice.test")
    link = tmp_path / "mailq"
    link.symlink_to(SLUICE)
    r = run_sluice(conf=d.conf_path, argv0=link)
    assert r.returncode == 0, r.stderr
    assert mid in r.stdout


# ---- reload and stop ----

def test_reload_with_broken_file_keeps_old_config(ops):
    d = ops(extra={"server": {"max_recipients": "2"}})

    def rcpts_accepted(n):
        with d.connect() as c:
            c.ehlo()
            c.expect_ok(f"MAIL FROM:<{SENDER}>")
            ok = sum(c.cmd(f"RCPT TO:<r{i}@dest.sluice.test>")
                     .startswith("250") for i in range(n))
            c.cmd("QUIT")
        return ok

    assert rcpts_accepted(4) == 2
    good = d.conf_path.read_text()
    broken = good.replace("max_recipients = 2", "max_recipients = 0")
    lineno = broken.splitlines().index("max_recipients = 0") + 1
    d.conf_path.write_text(broken)
    r = run_sluice("reload", conf=d.conf_path)
    assert r.returncode == 1
    assert f"sluiced.ini:{lineno}: [server] max_recipients" in r.stderr
    assert "keeps the configuration in use" in r.stderr
    assert rcpts_accepted(4) == 2
    # SIGHUP: the same, logged
    d.signal(signal.SIGHUP)
    d.wait_log(rf"reload failed, the configuration in use stays: .*"
               rf"sluiced.ini:{lineno}")
    assert d.running() and rcpts_accepted(4) == 2
    # a good file is taken, by the command and by SIGHUP
    d.conf_path.write_text(good.replace("max_recipients = 2",
                                        "max_recipients = 3"))
    r = run_sluice("reload", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    assert rcpts_accepted(4) == 3
    d.conf_path.write_text(good.replace("max_recipients = 2",
                                        "max_recipients = 4"))
    d.signal(signal.SIGHUP)
    d.wait_log(r"configuration reloaded")
    wait_until(lambda: rcpts_accepted(4) == 4, what="SIGHUP reload")


def test_reload_keeps_sessions(ops, receiver):
    d = ops()
    with d.connect() as c:
        c.ehlo()
        c.expect_ok(f"MAIL FROM:<{SENDER}>")
        c.expect_ok("RCPT TO:<s@dest.sluice.test>")
        n = d.log_text().count("configuration reloaded")
        assert run_sluice("reload", conf=d.conf_path).returncode == 0
        d.signal(signal.SIGHUP)
        # both reloads done while the transaction is open
        wait_until(lambda: d.log_text().count("configuration reloaded")
                   >= n + 2, what="two 'configuration reloaded' lines")
        c.send("DATA\r\n")
        c.expect("354")
        c.send(b"Subject: across reloads\r\n\r\nhi\r\n.\r\n")
        c.expect("250 2.0.0")
    wait_until(lambda: receiver.got("s@dest.sluice.test"), what="delivered")


def test_reload_warns_about_restart_settings(ops):
    d = ops()
    d.conf_path.write_text(d.conf_path.read_text().replace(
        "[spool]\n", "[spool]\ncheckpoint_pages = 99\n"))
    r = run_sluice("reload", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    d.wait_log(r"\[spool\] checkpoint_pages changed: it takes effect at "
               r"the next restart")


def test_stop_drains_gracefully(ops, receiver):
    d = ops(extra={"server": {"shutdown_timeout": "20s"}})
    c = d.connect()
    c.ehlo()
    c.expect_ok(f"MAIL FROM:<{SENDER}>")
    c.expect_ok("RCPT TO:<late@dest.sluice.test>")
    c.send("DATA\r\n")
    c.expect("354")
    r = run_sluice("stop", "--no-wait", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    assert "is stopping" in r.stdout
    d.wait_log(r"sluice stop: shutting down")
    assert d.running()
    c.send(b"Subject: finished during the drain\r\n\r\nhi\r\n.\r\n")
    reply = c.expect("250 2.0.0 Ok: queued as")
    c.close()
    assert d.wait_exit(timeout=20) == 0
    mid = reply.split()[-1]
    assert int(mid, 16) in d.spool.mids()
    # and the daemon is gone for the command line: exit 3
    r = run_sluice("status", conf=d.conf_path)
    assert r.returncode == 3 and "cannot connect" in r.stderr


def test_stop_waits_for_exit(ops):
    d = ops()
    r = run_sluice("stop", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    assert "sluiced stopped" in r.stdout
    assert d.wait_exit(timeout=20) == 0


# ---- bad input and permissions ----

def test_unknown_mids_exit_1_naming_each(ops, receiver):
    d = ops(retry="1h")
    mid, _ = deferred(d, receiver, "bob@dest.sluice.test")
    for cmd in ("flush", "hold", "release", "bounce", "delete"):
        r = run_sluice("queue", cmd, "00000000000000AA", "nonsense",
                       conf=d.conf_path)
        assert r.returncode == 1, (cmd, r)
        assert "00000000000000AA" in r.stderr and "nonsense" in r.stderr
    # partly done: the known one is acted on, the unknown named
    r = run_sluice("queue", "hold", mid, "00000000000000BB", conf=d.conf_path)
    assert r.returncode == 1 and "00000000000000BB" in r.stderr
    assert mid not in r.stderr.replace(f"{mid}:", "")
    wait_rcpt_state(d.conf_path, mid, "held")
    r = run_sluice("queue", "show", "00000000000000CC", conf=d.conf_path)
    assert r.returncode == 1 and "00000000000000CC" in r.stderr


def test_bad_flags_exit_2(ops):
    d = ops()
    for args in (["queue"], ["queue", "frob"], ["queue", "list", "--bogus"],
                 ["queue", "list", "--state", "weird"],
                 ["queue", "list", "extra"], ["queue", "show"],
                 ["queue", "flush", "--domain"],
                 ["queue", "bounce", "--all"],
                 ["queue", "hold", "--all", "--domain", "x.test"],
                 ["status", "--bogus"], ["reload", "extra"], ["frob"]):
        r = run_sluice(*args, conf=d.conf_path)
        assert r.returncode == 2, (args, r)
        assert r.stderr.strip(), args


def test_daemon_down_exit_3(tmp_path):
    conf = tmp_path / "none.ini"
    conf.write_text(f"[control]\nsocket = {tmp_path}/no/such.sock\n")
    for args in (["queue", "list"], ["status"], ["reload"], ["stop"],
                 ["queue", "flush", "--all"]):
        r = run_sluice(*args, conf=conf)
        assert r.returncode == 3, (args, r)
        assert "cannot connect" in r.stderr and "is sluiced running" in \
            r.stderr


def test_missing_config_file_is_a_usage_error(tmp_path):
    r = run_sluice("status", conf=tmp_path / "missing.ini")
    assert r.returncode == 2 and "missing.ini" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv")
def test_nobody_is_refused(ops):
    base = traversable_dir()
    try:
        d = ops(sock=os.path.join(base, "run", "sluice.sock"))
        os.chmod(os.path.join(base, "run"), 0o755)
        conf = os.path.join(base, "sluice.ini")      # readable by nobody
        shutil.copy(d.conf_path, conf)
        os.chmod(conf, 0o644)
        # the file's mode keeps nobody out
        r = run_sluice("queue", "list", conf=conf, as_nobody=True)
        assert r.returncode == 3, r
        assert "Permission denied" in r.stderr
        assert "root and the group sluice" in r.stderr
        # and so does the daemon's check of the peer, if the mode is opened
        os.chmod(d.sock, 0o666)
        r = run_sluice("queue", "list", conf=conf, as_nobody=True)
        assert r.returncode != 0, r
        assert "permission denied" in r.stderr
        d.wait_log(r"control: refused uid 65534")
        # root still gets in
        assert run_sluice("queue", "list", conf=d.conf_path).returncode == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_metrics_port_in_use_is_a_warning(ops, make_sluiced, receiver):
    d = ops()
    d2 = make_sluiced(conf={"http": {"listen": d.conf["http"]["listen"]},
                            "control": {"socket": str(d.sock) + "2"}},
                      name="second")
    d2.wait_log(r"running without metrics")
    assert port_open(d.metrics_port)
    assert run_sluice("status", conf=d2.conf_path).returncode == 0


def test_second_daemon_on_the_same_socket_refused(ops, make_sluiced):
    d = ops()
    d2 = make_sluiced(conf={"control": {"socket": str(d.sock)}},
                      start=False, name="dup")
    with pytest.raises(AssertionError, match="another sluiced answers"):
        d2.start()
    # the first still answers
    assert run_sluice("status", conf=d.conf_path).returncode == 0
