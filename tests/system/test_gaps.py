# SPDX-License-Identifier: MIT
"""
Settings and promises no other test reached:

  connection_max_age  a delivery connection starts no new message once it
                      is that old (checked on sluiced's own timestamps),
                      and the default keeps one connection for the stream
  IPv6                sluiced listens on [::1] (an IPv6 client is trusted
                      as ::1/128), and delivers to an MX with only an
                      AAAA record (dnsmasq), to a receiver on [::1]
  reload under load   20 reloads while mail flows in and out: no session
                      cut, every message answered 250 delivered once
  spool lock          a second sluiced on the same spool refuses to start
                      and names the directory; the first goes on
  control limits      a request line over 1 MB and a 65th connection are
                      answered with an error, and the daemon goes on
"""
import json
import re
import signal
import smtplib
import socket
import threading
import time

from delivery_util import FAST, Receiver, make_body, net, send  # noqa: F401
from ops_util import run_sluice
from sluicetest import SLUICED, free_port, log_times, wait_until

SENDER = "sender@back.test"


def delivery_starts(text):
    """{DCID: [times of its Delivery start lines]} in either log form."""
    out = {}
    for t, m in log_times(text, r"DCID (\d+) [^\n]*Delivery start|"
                                r"Delivery start DCID (\d+)"):
        out.setdefault(m.group(1) or m.group(2), []).append(t)
    return out


def stream(port, n, gap, prefix):
    """n messages one after another, gap seconds apart, on one session."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30,
                      local_hostname="client.sluice.test") as s:
        s.ehlo()
        for i in range(n):
            send(port, SENDER, [f"{prefix}{i}@age.test"],
                 make_body(f"{prefix}{i}"), s=s)
            time.sleep(gap)


def age_world(make_sluiced, rx, **delivery):
    conf = dict(FAST, destination_concurrency="1",
                messages_per_connection="10000", idle_timeout="30s")
    conf.update(delivery)
    return make_sluiced(conf={"delivery": conf, "routes": {
        "age.test": f"[127.0.0.1]:{rx.port}"}})


def test_connection_max_age(make_sluiced):
    rx = Receiver("127.0.0.1", free_port(), delays={"data_end": 0.02})
    try:
        n = 30
        d = age_world(make_sluiced, rx, connection_max_age="1s")
        stream(d.port, n, 0.1, "age")
        wait_until(lambda: rx.count() >= n, timeout=30, what="all delivered")
        starts = delivery_starts(d.log_text())
        opened = {m.group(1): t for t, m in log_times(
            d.log_text(), r"DCID (\d+) New SMTP connection")}
        # control: the default age (5m) carries the same stream on one
        # connection, so the rotation above is the setting's doing
        d2 = age_world(make_sluiced, rx, connection_max_age="5m")
        before = rx.conns
        stream(d2.port, 10, 0.1, "young")
        wait_until(lambda: rx.count() >= n + 10, timeout=30,
                   what="all delivered")
        young = delivery_starts(d2.log_text())
    finally:
        rx.stop()
    assert rx.tokens() == {**{f"age{i}": 1 for i in range(n)},
                           **{f"young{i}": 1 for i in range(10)}}
    # about 3 s of mail at 1 s per connection: several connections, and
    # none started a message once it was 1 s old (ms stamps: 10 ms slack)
    assert len(starts) >= 3, starts
    for dcid, ts in starts.items():
        assert max(ts) - opened[dcid] < 1.01, (dcid, max(ts) - opened[dcid])
    assert len(young) == 1 and rx.conns - before == 1, young


# ---- IPv6 ----

def test_listen_on_ipv6_loopback(make_sluiced):
    d = make_sluiced(conf={"server": {"relay_domains": "local.test"}},
                     listen="[::1]:{port}")
    with smtplib.SMTP("::1", d.port, timeout=15,
                      local_hostname="client6.sluice.test") as s:
        refused = s.sendmail("a@client.sluice.test", ["b@local.test"],
                             b"Subject: over IPv6\r\n\r\nhi\r\n")
    assert refused == {}
    mid = d.spool.mids()[0]
    env = d.spool.envelope(mid)
    assert env["client_addr"] == "::1", env
    assert b"Subject: over IPv6" in d.spool.message(mid)
    d.wait_log(r"New SMTP connection address=::1 port=\d+ trusted=yes")
    # nothing listens on IPv4
    try:
        socket.create_connection(("127.0.0.1", d.port), timeout=5).close()
        v4 = True
    except ConnectionRefusedError:
        v4 = False
    assert not v4, "sluiced listens on 127.0.0.1 though told [::1] only"


def test_deliver_to_aaaa_only_mx(net, make_sluiced):
    net.dns.mx("v6.test", "mx6.v6.test", 10).host("mx6.v6.test", "::1")
    net.dns.start()
    assert net.dns.ask("mx6.v6.test", "A")[1] == [], "mx6 must have no A"
    rx = net.receiver("::1", name="v6")
    d = make_sluiced(conf=net.conf())
    mid = send(d.port, SENDER, ["u@v6.test"], make_body("six"))
    wait_until(lambda: rx.count() == 1, timeout=20, what="delivery over v6")
    assert rx.tokens() == {"six": 1}
    d.wait_log(rf"MID {mid:016X} Message finished|Message finished MID "
               rf"{mid:016X}")
    assert re.search(r"relay=mx6\.v6\.test\[::1\]", d.log_text()), \
        d.log_text()[-2000:]


# ---- reload under load ----

def test_reload_under_load(make_sluiced):
    rx = Receiver("127.0.0.1", free_port(), delays={"data_end": 0.005})
    lock = threading.Lock()
    acked, errors = set(), []
    stop = threading.Event()
    try:
        d = make_sluiced(conf={"delivery": dict(FAST), "server": {
            "max_recipients": "100"}, "routes": {
            "load.test": f"[127.0.0.1]:{rx.port}"}})

        def worker(w):
            i = 0
            try:
                with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
                    s.ehlo("client.sluice.test")
                    while not stop.is_set():
                        t = f"w{w}m{i}"
                        i += 1
                        send(d.port, SENDER, [f"{t}@load.test"],
                             make_body(t), s=s)
                        with lock:
                            acked.add(t)
            except Exception as e:      # a cut session: reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=worker, args=(w,), daemon=True)
                   for w in range(4)]
        for t in threads:
            t.start()
        for k in range(20):
            n = d.log_text().count("configuration reloaded")
            # a real change each time: a reloadable limit
            d.conf["server"]["max_recipients"] = str(100 + k)
            d.write_conf()
            d.signal(signal.SIGHUP)
            wait_until(lambda: d.log_text().count("configuration reloaded")
                       > n, what=f"reload {k + 1}")
            before = len(acked)
            wait_until(lambda: len(acked) > before, timeout=30,
                       what=f"mail accepted after reload {k + 1}")
        stop.set()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive()
        assert not errors, errors
        wait_until(lambda: acked <= set(rx.tokens()), timeout=60,
                   what="every acknowledged message delivered")
    finally:
        stop.set()
        rx.stop()
    toks = rx.tokens()
    assert set(toks) == acked and set(toks.values()) == {1}
    assert d.log_text().count("configuration reloaded") >= 20
    assert "reload failed" not in d.log_text()
    print(f"{len(acked)} messages through 20 reloads")


# ---- the spool lock ----

def test_second_daemon_on_the_same_spool_refused(make_sluiced, tmp_path):
    spool = tmp_path / "shared-spool"
    d1 = make_sluiced(conf={"spool": {"dir": str(spool)}}, name="first")
    d2 = make_sluiced(conf={"spool": {"dir": str(spool)}}, name="second",
                      start=False)
    try:
        d2.start()
        started = True
    except AssertionError as e:
        started = False
        err = str(e)
    assert not started, "a second sluiced started on a spool in use"
    assert f"spool: {spool} is in use by another sluiced" in err, err
    # the first goes on, and its spool was not touched
    with d1.connect() as c:
        c.ehlo()
        r = c.send_message("a@client.sluice.test", ["b@local.test"],
                           b"Subject: still mine\r\n\r\nx\r\n")
        assert r.startswith("250"), r
    d1.stop()
    # once the first is gone, the lock is free
    d2.start()
    assert d2.spool.count() == 1


# ---- the control socket's limits ----

def ctl_conf(tmp_path):
    return {"control": {"socket": str(tmp_path / "ctl" / "sluice.sock")}}


def test_control_line_too_long(make_sluiced, tmp_path):
    d = make_sluiced(conf=ctl_conf(tmp_path))
    sock = d.conf["control"]["socket"]
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.settimeout(30)
    big = b'{"v":1,"cmd":"status","pad":"' + b"x" * (1024 * 1024 + 10)
    try:
        s.sendall(big)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    s.close()
    r = json.loads(got.split(b"\n")[0])
    assert r["ok"] is False and "request line too long" in r["error"], r
    # and the daemon answers the next client
    r = run_sluice("status", "--json", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == d.pid


def test_control_connection_limit(make_sluiced, tmp_path):
    d = make_sluiced(conf=ctl_conf(tmp_path))
    sock = d.conf["control"]["socket"]
    held = []
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            held.append(s)
        # each of the 64 is served
        f = held[-1].makefile("rwb")
        f.write(b'{"v":1,"cmd":"status"}\n')
        f.flush()
        assert json.loads(f.readline())["ok"] is True
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(sock)
        extra.settimeout(30)
        line = extra.makefile("rb").readline()
        r = json.loads(line)
        assert r["ok"] is False and "too many control connections" in \
            r["error"], r
        assert extra.recv(10) == b""      # and closed
        extra.close()
    finally:
        for s in held:
            s.close()
    # the slots come back
    wait_until(lambda: run_sluice("status", conf=d.conf_path).returncode
               == 0, what="status after the limit")


def test_sluiced_refuses_unknown_test_sync_value(tmp_path):
    """The test-only switch takes OFF or NORMAL, nothing else (a typo must
    not silently leave a daemon without syncs)."""
    import os
    import subprocess
    conf = tmp_path / "s.ini"
    conf.write_text(f"[server]\nuser =\nlisten = 127.0.0.1:{free_port()}\n"
                    f"[spool]\ndir = {tmp_path}/spool\n[control]\nsocket = "
                    f"{tmp_path}/c.sock\n[http]\nlisten =\n")
    env = dict(os.environ, SLUICE_TEST_SPOOL_SYNC="of")
    p = subprocess.run([str(SLUICED), "-c", str(conf)], capture_output=True,
                       text=True, timeout=30, env=env, cwd=tmp_path)
    assert p.returncode != 0
    assert "SLUICE_TEST_SPOOL_SYNC=of: only OFF or NORMAL" in p.stderr
