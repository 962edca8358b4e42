# SPDX-License-Identifier: MIT
"""
test_cluster.py: a sluice cluster in network namespaces this test creates
(netns_util: a bridge, each node its own address), as docs/CLUSTER.md
draws it:

  client ──SMTP──▶ HAProxy (TCP, send-proxy-v2, option smtpchk)
                      ├──▶ fe1 ┐ sluiced, proxy_protocol = v2
                      └──▶ fe2 ┤   m1.test ─SMTP─▶ b1 (sluiced, Maildir)
                               ├   m2.test ─LMTP─▶ b2 (Debian's Dovecot)
                               └ remote.test ─SMTP─▶ sink (sluice sink)

1 000 messages (scaled down under ASan), each to a user on b1, one on b2
and a remote address, sent by clients that retry as SMTP clients do. In
the middle: fe1 is killed with SIGKILL (HAProxy marks it down, the clients
retry, and once it is back nothing it answered 250 is lost), and b1 is
stopped (the frontends defer its recipients; b2's and the remote ones go
on) and started again. At the end every message is in each of its three
places exactly once (at least once for the few a client had to send
again after a broken connection, or that fe1 was delivering when it was
killed: at least once), and the frontends' logs and Received:
headers name the client's address, which HAProxy saw, not HAProxy's.
"""
import json
import os
import queue
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dovecot_util import Dovecot
from netns_util import Net
from sluicetest import SLUICED, Daemon, scaled, wait_until

# network namespaces and 1000 messages with kills: the machine alone
pytestmark = [pytest.mark.slow, pytest.mark.serial]

SLUICE = SLUICED.parent / "sluice"
N = scaled(1000, 200)
USERS = 10


class Cluster:
    def __init__(self, root):
        self.root = root
        self.net = Net("c")
        h = {n: self.net.add(n) for n in
             ("lb", "fe1", "fe2", "b1", "b2", "sink", "cl")}
        self.h = h
        self.dovecot = Dovecot({f"u{i}@m2.test": None for i in range(USERS)},
                               address=h["b2"].addr, port=24,
                               netns=h["b2"].ns)
        self.sink_dir = root / "sink"
        self.sink_dir.mkdir()
        self.sink = h["sink"].popen(
            [str(SLUICE), "sink", "--listen", f"{h['sink'].addr}:25",
             "--maildir", str(self.sink_dir / "Maildir")],
            stdout=open(root / "sink.out", "w"),
            stderr=open(root / "sink.err", "w"))
        self.token = root / "api-token"
        self.token.write_text("cluster-token-5f1e2d\n")
        users = root / "users"
        users.write_text("".join(f"u{i}@m{k}.test\n" for i in range(USERS)
                                 for k in (1, 2)))
        self.b1 = Daemon(root / "b1", netns=h["b1"], conf={
            "server": {"hostname": "b1.cluster.test",
                       "local_domains": "m1.test",
                       "trusted_networks": f"{self.net.subnet}.0/24"},
            "local": {"users_file": str(users),
                      "maildir_root": str(root / "b1" / "mail")},
            "routes": {"*": f"[{h['lb'].addr}]:25"},
            "http": self.http("b1")})
        self.b1.start(port=25)
        self.fe = {}
        for name in ("fe1", "fe2"):
            d = Daemon(root / name, netns=h[name], conf={
                "server": {"hostname": f"{name}.cluster.test",
                           "proxy_protocol": "v2",
                           "proxy_trusted_networks": h["lb"].addr,
                           "trusted_networks": "127.0.0.1/32",
                           "relay_domains": "remote.test",
                           "max_connections_per_ip": "0"},
                "local": {"users_file": str(users)},
                "backends": {"b1": f"smtp:[{h['b1'].addr}]:25",
                             "b2": f"lmtp:[{h['b2'].addr}]:24"},
                "mailboxes": {"m1.test": "b1", "m2.test": "b2"},
                "routes": {"remote.test": f"[{h['sink'].addr}]:25"},
                "delivery": {"retry_initial": "1s", "retry_max": "2s"},
                "http": self.http(name)})
            d.start(port=25)
            self.fe[name] = d
        self.hp_sock = root / "haproxy.sock"
        (root / "haproxy.cfg").write_text(f"""\
global
    maxconn 2000
    stats socket {self.hp_sock} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
frontend smtp
    bind {h['lb'].addr}:25
    default_backend frontends
backend frontends
    balance roundrobin
    option smtpchk EHLO lb.cluster.test
    default-server send-proxy-v2 check inter 300 fall 2 rise 2
    server fe1 {h['fe1'].addr}:25
    server fe2 {h['fe2'].addr}:25
""")
        self.hp = h["lb"].popen(["haproxy", "-f", str(root / "haproxy.cfg"),
                                 "-db"], stdout=open(root / "hp.log", "w"),
                                stderr=subprocess.STDOUT)
        wait_until(lambda: self.server_state("fe1") == "UP" and
                   self.server_state("fe2") == "UP", timeout=30,
                   what="both frontends UP in HAProxy")

    def http(self, name):
        return {"listen": f"{self.h[name].addr}:9025",
                "api_token_file": str(self.token)}

    def sluice(self, d, *args, host="cl"):
        """`sluice ARGS -c` d's configuration, run in host's namespace
        (from d's directory: the control socket's path is relative)."""
        return self.h[host].run([str(SLUICE), *args, "-c", str(d.conf_path)],
                                cwd=d.root, capture_output=True, text=True)

    def hp_cmd(self, cmd):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.hp_sock))
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def server_state(self, name):
        """UP or DOWN, as HAProxy's health checks say."""
        try:
            for line in self.hp_cmd("show stat").splitlines():
                f = line.split(",")
                if len(f) > 17 and f[0] == "frontends" and f[1] == name:
                    return f[17].split(" ")[0]
        except OSError:
            return None
        return None

    def close(self):
        for d in list(self.fe.values()) + [self.b1]:
            try:
                d.stop()
            except AssertionError:
                pass
        self.dovecot.close()
        self.net.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


def message(i):
    return (f"From: c{i}@client.test\r\nTo: u@m.test\r\nSubject: {i}\r\n"
            f"X-Token: tok-{i:05d}\r\n\r\nmessage {i}\r\n" +
            "body line\r\n" * 20).encode()


def rcpts(i):
    return [f"u{i % USERS}@m1.test", f"u{i % USERS}@m2.test",
            f"r{i % USERS}@remote.test"]


class Clients:
    """Threads in the client's namespace sending messages 0..n-1 through
    the balancer, never past release(k) (the test paces the phases); a
    failure before the 250 is retried (a new connection), as SMTP clients
    do."""

    def __init__(self, c, n, threads=8):
        self.c, self.n, self.lock = c, n, threading.Lock()
        self.next, self.limit = 0, 0
        self.acked, self.retried, self.failed = set(), set(), {}
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def release(self, k):
        """Let messages up to k (of n) go."""
        with self.lock:
            self.limit = min(k, self.n)

    def _take(self):
        with self.lock:
            if self.next >= self.n:
                return None
            if self.next >= self.limit:
                return -1
            self.next += 1
            return self.next - 1

    def _run(self):
        with self.c.h["cl"].inside():
            while (i := self._take()) is not None:
                if i < 0:
                    time.sleep(0.02)
                else:
                    self._send(i)

    def _send(self, i):
        for attempt in range(200):
            try:
                with smtplib.SMTP(self.c.h["lb"].addr, 25, timeout=30,
                                  local_hostname="client.test") as s:
                    s.sendmail(f"c{i}@client.test", rcpts(i), message(i))
                with self.lock:
                    self.acked.add(i)
                return
            except (OSError, smtplib.SMTPException):
                # it may have been stored before the connection broke
                with self.lock:
                    self.retried.add(i)
                time.sleep(0.1)
        self.failed[i] = "no 250 after 200 tries"

    def _send_in_cl(self, i):
        with self.c.h["cl"].inside():
            self._send(i)

    def count(self):
        with self.lock:
            return len(self.acked)

    def join(self):
        for t in self.threads:
            t.join(timeout=600)


def tokens(paths):
    """{token: copies} of the X-Token headers in the files."""
    out = {}
    for p in paths:
        m = re.search(rb"X-Token: tok-(\d+)", p.read_bytes())
        if m:
            out[int(m.group(1))] = out.get(int(m.group(1)), 0) + 1
    return out


def maildir_files(root):
    return [p for sub in ("new", "cur") for p in root.glob(f"**/Maildir/{sub}/*")
            if p.is_file()]


def test_cluster_1000_messages_kill_and_backend_down(cluster):
    c = cluster
    cl = Clients(c, N)
    # kill -9 of fe1 while mail flows: 40% released, killed at 30% acked
    cl.release(N * 4 // 10)
    wait_until(lambda: cl.count() >= N * 3 // 10, timeout=300,
               what="30% acknowledged")
    c.fe["fe1"].kill9()
    # its deliveries in flight may be repeated after the restart (at least
    # once): the messages still in its spool
    in_flight = set()
    for body in c.fe["fe1"].spool.bodies().values():
        m = re.search(rb"X-Token: tok-(\d+)", body)
        in_flight.add(int(m.group(1)))
    wait_until(lambda: c.server_state("fe1") == "DOWN", timeout=30,
               what="HAProxy marks fe1 DOWN")
    cl.release(N * 6 // 10)
    wait_until(lambda: cl.count() >= N * 6 // 10, timeout=300,
               what="mail flows through fe2 alone")
    c.fe["fe1"].start(port=25)
    wait_until(lambda: c.server_state("fe1") == "UP", timeout=30,
               what="fe1 UP again")
    # b1 stopped: only its recipients wait
    c.b1.stop()
    b2_before = len(maildir_files(c.dovecot.dir / "mail"))
    cl.release(N * 8 // 10)
    wait_until(lambda: any(re.search(r"(Delayed|destination deferred).*"
                                     r"(b1|m1\.test)", fe.log_text())
                           for fe in c.fe.values()), timeout=60,
               what="b1's recipients deferred on a frontend")
    wait_until(lambda: len(maildir_files(c.dovecot.dir / "mail")) >=
               b2_before + N // 10, timeout=120,
               what="b2 keeps receiving while b1 is down")
    c.b1.start(port=25)
    cl.release(N)
    cl.join()
    assert not cl.failed, cl.failed
    assert len(cl.acked) == N
    # every message in each of its three places
    def done():
        return (len(tokens(maildir_files(c.root / "b1" / "mail"))) == N and
                len(tokens(maildir_files(c.dovecot.dir / "mail"))) == N and
                len(tokens(maildir_files(c.sink_dir))) == N)
    wait_until(done, timeout=600, interval=1, what="all delivered")
    for where, found in (("b1", tokens(maildir_files(c.root / "b1" /
                                                     "mail"))),
                         ("b2", tokens(maildir_files(c.dovecot.dir /
                                                     "mail"))),
                         ("sink", tokens(maildir_files(c.sink_dir)))):
        extra = {i: k for i, k in found.items() if k > 1 and
                 i not in cl.retried and i not in in_flight}
        assert not extra, f"{where}: duplicates of messages sent once " \
            f"and not in flight on fe1: {extra}"
        assert set(found) == set(range(N)), where
    # the client's address, as HAProxy saw it, in logs and Received:
    client = re.escape(c.h["cl"].addr)
    for name, fe in c.fe.items():
        assert re.search(rf"New SMTP connection address={client} port=\d+ "
                         rf"trusted=no proxy={re.escape(c.h['lb'].addr)}",
                         fe.log_text()), name
    sample = maildir_files(c.sink_dir)[0].read_bytes()
    assert re.search(rb"Received: from client\.test \(\[%s\]\) \(port \d+\)"
                     rb"\r\n\tby fe[12]\.cluster\.test" %
                     c.h["cl"].addr.encode(), sample), sample[:300]


def test_drain_one_frontend(cluster):
    """sluice drain on fe2: HAProxy marks it down and sends everything to
    fe1, fe2's queue empties; sluice undrain brings it back. Then one view
    over fe1, fe2 and b1 (sluice cluster, from the client's namespace)."""
    c = cluster
    fe1, fe2 = c.fe["fe1"], c.fe["fe2"]
    r = c.sluice(fe2, "drain", host="fe2")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: c.server_state("fe2") == "DOWN", timeout=30,
               what="HAProxy marks the drained fe2 DOWN")
    before = fe2.log_text().count(f"address={c.h['cl'].addr} ")
    first = N + 1000
    cl = Clients(c, 0, threads=0)
    for i in range(first, first + 40):
        cl._send_in_cl(i)
    assert not cl.failed and len(cl.acked) == 40
    assert fe2.log_text().count(f"address={c.h['cl'].addr} ") == before
    def fe2_empty():
        r = c.sluice(fe2, "queue", "summary", "--json", host="fe2")
        return r.returncode == 0 and json.loads(r.stdout)["messages"] == 0
    wait_until(fe2_empty, timeout=120, what="fe2's queue empty")
    assert c.sluice(fe2, "undrain", host="fe2").returncode == 0
    wait_until(lambda: c.server_state("fe2") == "UP", timeout=30,
               what="fe2 UP again")
    # the cluster's view once everything is delivered
    nodes = ", ".join(f"{n}=http://{c.h[n].addr}:9025"
                      for n in ("fe1", "fe2", "b1"))
    conf = c.root / "cluster.ini"
    conf.write_text(f"[cluster]\nnodes = {nodes}\ntoken_file = {c.token}\n")
    def empty_view():
        r = c.h["cl"].run([str(SLUICE), "cluster", "queue", "summary",
                           "--json", "-c", str(conf)], capture_output=True,
                          text=True)
        v = json.loads(r.stdout)
        return r.returncode == 0 and v["messages"] == 0 and v
    v = wait_until(empty_view, timeout=120, what="an empty cluster queue")
    assert [n["name"] for n in v["nodes"]] == ["fe1", "fe2", "b1"]
    r = c.h["cl"].run([str(SLUICE), "cluster", "status", "-c", str(conf)],
                      capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count(" up ") == 3, r.stdout
