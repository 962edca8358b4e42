"""
Health and draining (issue 11 item 5): `sluice drain` closes the SMTP
listeners (so HAProxy's `option smtpchk` marks the node down) while
sessions in progress and delivery go on; `sluice undrain` opens them again;
/healthz answers 503 while the node drains or its spool fails.
"""
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from ops_util import (ops_conf, port_open, run_sluice, send,
                      wait_rcpt_state)
from sluicetest import Raw, free_port, port_listening, wait_until


@pytest.fixture
def node(make_sluiced, receiver, tmp_path):
    http = free_port()
    d = make_sluiced(conf=ops_conf(receiver, tmp_path / "run" / "s.sock",
                                   retry="1h", metrics_port=http))
    d.http_port = http
    return d


def healthz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                    timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def via(port, subject):
    """One message through port (HAProxy's); its reply."""
    with Raw(port) as c:
        c.ehlo()
        r = c.send_message("a@src.sluice.test", ["b@dst.sluice.test"],
                           f"Subject: {subject}\r\n\r\nhi\r\n".encode())
        c.cmd("QUIT")
    return r


def test_drain_stops_accepting_delivery_goes_on(node, receiver):
    receiver.defer("*")
    mid = send(node, "a@src.sluice.test", ["b@dst.sluice.test"])
    wait_rcpt_state(node.conf_path, mid, "deferred")
    assert healthz(node.http_port) == (200, "ok\n")
    with Raw(node.port) as open_before:
        open_before.ehlo()
        r = run_sluice("drain", conf=node.conf_path)
        assert r.returncode == 0, r.stderr
        assert "1 session(s) still open" in r.stdout
        assert not port_listening(node.port) and not port_open(node.port)
        assert healthz(node.http_port) == (503, "unavailable: draining\n")
        st = run_sluice("status", conf=node.conf_path).stdout
        assert "draining" in st
        node.wait_log(r"draining: the SMTP listeners are closed")
        # the session that was open goes on and its message is queued
        r2 = open_before.send_message("a@src.sluice.test",
                                      ["c@dst.sluice.test"],
                                      b"Subject: x\r\n\r\nhi\r\n")
        assert r2.startswith("250"), r2
        open_before.cmd("QUIT")
    # delivery goes on while draining
    receiver.accept_all()
    assert run_sluice("queue", "flush", conf=node.conf_path).returncode == 0
    wait_until(lambda: receiver.got("b@dst.sluice.test")
               and receiver.got("c@dst.sluice.test"), timeout=20,
               what="delivery while draining")
    assert not port_open(node.port)
    # drain again: nothing changes
    assert run_sluice("drain", conf=node.conf_path).returncode == 0
    r = run_sluice("undrain", conf=node.conf_path)
    assert r.returncode == 0 and "accepting mail again" in r.stdout
    assert port_listening(node.port)
    assert healthz(node.http_port) == (200, "ok\n")
    send(node, "a@src.sluice.test", ["d@dst.sluice.test"])
    assert run_sluice("undrain", conf=node.conf_path).returncode == 0
    # a stop while draining exits cleanly (the fixture checks exit 0)
    assert run_sluice("drain", conf=node.conf_path).returncode == 0


HAPROXY_CFG = """
global
    stats socket {sock} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 20s
    timeout server 20s
frontend smtp
    bind 127.0.0.1:{front}
    default_backend nodes
backend nodes
    option smtpchk EHLO check.sluice.test
    server n1 127.0.0.1:{port} check inter 200ms fall 2 rise 2
"""


def haproxy_status(sock):
    """The status of server n1 from the stats socket (UP, DOWN, ...)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    s.sendall(b"show stat\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    lines = out.decode().splitlines()
    cols = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(cols, line.split(",")))
        if row.get("svname") == "n1":
            return row["status"].split()[0]
    return None


def test_haproxy_smtpchk_follows_drain(node, tmp_path):
    front = free_port()
    sock = tmp_path / "haproxy.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(sock=sock, front=front,
                                      port=node.port))
    hp = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)],
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    try:
        wait_until(lambda: sock.exists() and haproxy_status(sock) == "UP",
                   timeout=20, what="haproxy sees the node UP")
        r = via(front, "via haproxy")
        assert r.startswith("250"), r
        assert run_sluice("drain", conf=node.conf_path).returncode == 0
        wait_until(lambda: haproxy_status(sock) == "DOWN", timeout=20,
                   what="haproxy marks the drained node DOWN")
        assert run_sluice("undrain", conf=node.conf_path).returncode == 0
        wait_until(lambda: haproxy_status(sock) == "UP", timeout=20,
                   what="haproxy marks the node UP again")
        r = via(front, "again")
        assert r.startswith("250"), r
    finally:
        hp.terminate()
        hp.wait(timeout=10)


def sh(*argv):
    p = subprocess.run(list(argv), capture_output=True, timeout=30)
    assert p.returncode == 0, f"{argv}: {p.stderr.decode()}"


@pytest.mark.slow
def test_healthz_503_while_the_spool_fails(make_sluiced, tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt))
    http = free_port()
    try:
        d = make_sluiced(conf={"spool": {"dir": str(mnt / "spool")},
                               "http": {"listen": f"127.0.0.1:{http}"}})
        assert healthz(http)[0] == 200
        with Raw(d.port, timeout=60) as c:
            c.ehlo()
            for i in range(60):
                msg = (b"Subject: fill %d\r\n\r\n" % i
                       + (b"x" * 998 + b"\r\n") * 200)
                r = c.send_message("a@client.sluice.test", ["b@local.test"],
                                   msg)
                if not r.startswith("250"):
                    break
            assert r.startswith("451"), r
            code, text = healthz(http)
            assert code == 503 and "spool" in text, (code, text)
            sh("mount", "-o", "remount,size=20m", str(mnt))
            r = c.send_message("a@client.sluice.test", ["b@local.test"],
                               b"Subject: room again\r\n\r\nhi\r\n")
            assert r.startswith("250"), r
            c.cmd("QUIT")
        assert healthz(http) == (200, "ok\n")
        d.stop()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)
        if subprocess.run(["mountpoint", "-q", str(mnt)]).returncode == 0:
            subprocess.run(["umount", "-l", str(mnt)], timeout=30)
