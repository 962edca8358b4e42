"""
test_hostile.py: clients an attacker would write, against sluiced and
`sluice sink` (both are src/smtpd): a reject that closes the session stays
closed (no fd or per-address slot kept, nothing executed after the 421);
a client that pipelines NOOP and never reads its replies (500 MB of them
offered, in plaintext and in TLS) leaves the server under 64 MB resident
while others are served; 500 clients sending 10 MB bodies at once keep it
under max_inflight_bytes plus a fixed overhead.

Memory is read from /proc/PID/status: VmRSS while the test runs (to stop
early instead of filling the machine) and VmHWM, the peak, at the end.
Under AddressSanitizer (SLUICE_BUILD=build-asan) the bounds are the
growth over the resident size at start, as the sanitizer's own shadow
memory and quarantine are not ours.
"""
import os
import socket
import threading

import pytest

from sluicetest import NoopFlood, Raw, client_ctx, proc_status_kb, wait_until

MB = 1 << 20
ASAN = "asan" in os.environ.get("SLUICE_BUILD", "")
# ASan keeps freed memory in quarantine (256 MB by default): keep it out of
# the resident sizes measured here
ENV = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "")
           + ":quarantine_size_mb=1")


class Memory:
    """The resident size of a process against a bound in KB: the size
    itself, or under ASan its growth over what it was at the start."""

    def __init__(self, pid, bound_kb):
        self.pid = pid
        self.base = proc_status_kb(pid, "VmRSS") if ASAN else 0
        self.bound = bound_kb

    def check(self, what="", key="VmRSS"):
        kb = proc_status_kb(self.pid, key) - self.base
        assert kb < self.bound, (f"{key} {kb} KB over {self.bound} KB "
                                 f"{'growth ' if ASAN else ''}{what}")
        return kb


class Served(threading.Thread):
    """Another client, served while the flood goes on: a message every
    0.1 s on its own connection; counts the 250s."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.ok, self.errors = port, 0, []
        self.stop = threading.Event()

    def run(self):
        try:
            with Raw(self.port, timeout=60) as c:
                c.ehlo()
                while not self.stop.wait(0.1):
                    r = c.send_message("a@client.sluice.test",
                                       ["b@local.test"],
                                       b"Subject: meanwhile\r\n\r\n")
                    assert r.startswith("250 2.0.0 Ok: queued as"), r
                    self.ok += 1
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))


# ---- CLOSING is terminal (session.c smtpd_enter) ----

def untrusted_one_per_ip(make_sluiced, **server):
    conf = {"max_connections_per_ip": "1", "max_errors": "2",
            "trusted_networks": "192.0.2.0/24", "relay_domains": "local.test"}
    conf.update(server)
    return make_sluiced(conf={"server": conf})


def test_closed_session_frees_its_per_ip_slot(make_sluiced):
    """The 421 of max_errors, reached by the reject at the end of DATA, then
    pipelined commands: the session is closed and freed, so the client's
    only per-address slot is free again for its next connection."""
    d = untrusted_one_per_ip(make_sluiced)
    for attempt in range(3):
        with Raw(d.port) as c:
            assert c.greeting.startswith("220"), (attempt, c.greeting)
            c.ehlo()
            c.send("BOGUS\r\n")
            c.expect("500")
            c.send(b"MAIL FROM:<a@client.sluice.test>\r\n"
                   b"RCPT TO:<b@local.test>\r\nDATA\r\n")
            c.expect("250")
            c.expect("250")
            c.expect("354")
            c.send(b"Subject: x\r\n\r\nbare\nLF\r\n.\r\nNOOP\r\nRSET\r\n")
            c.expect("550 5.5.2")
            c.expect("421 4.7.0")
            c.expect_closed()
        # the server saw its own close: the slot is released
        wait_until(lambda: d.log_text().count("connection closed") > attempt,
                   what="session freed")
    assert d.spool.count() == 0


def test_check_421_at_first_bdat_is_final(make_sink):
    """The sink's rule answers the first BDAT with 421: the chunk is not
    read, and the commands pipelined after it are not executed."""
    sink = make_sink("--rule", "rate 421 1 at data")
    with Raw(sink.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@sink.test>\r\n")
        c.expect("250")
        c.expect("250")
        c.send(b"BDAT 6\r\nRSET\r\nNOOP\r\nMAIL FROM:<c@client.test>\r\n")
        c.expect("421")
        c.expect_closed()
    st = sink.stats()
    assert st["replies"].get("250", 0) == 3, st["replies"]


# ---- output backpressure (session.c smtpd_out_full) ----

def flood_and_check(port, pid, first=b"EHLO flood.sluice.test\r\n",
                    sock=None, served_port=None):
    """Offer 500 MB of NOOP without reading from a fresh connection (or
    sock): the server must stop reading (the send stalls), stay under
    64 MB resident, and answer every NOOP in order once the client reads.
    With served_port, another client sends mail meanwhile."""
    mem = Memory(pid, 64 * 1024)
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=60)
    served = Served(served_port) if served_port else None
    if served:
        served.start()
    try:
        flood = NoopFlood(sock, first).send(
            500 * MB, each_mb=lambda sent: mem.check(f"after {sent} bytes"))
        assert flood.stalled, "the server read all 500 MB of NOOP"
        assert flood.sent < 100 * MB
        if served:
            seen = served.ok
            wait_until(lambda: served.ok >= seen + 3 or served.errors,
                       timeout=30, what="mail served during the flood")
            assert not served.errors, served.errors
        mem.check("at the stall")
        lines = flood.drain()
    finally:
        if served:
            served.stop.set()
            served.join(30)
        sock.close()
    mem.check("at the end", key="VmHWM" if not ASAN else "VmRSS")
    noops = [l for l in lines if l == b"250 2.0.0 Ok"]
    assert len(noops) == flood.noops, (len(noops), flood.noops)
    assert lines[-2].startswith(b"221 "), lines[-3:]
    return flood


def test_noop_flood_without_reading(make_sluiced):
    d = make_sluiced(env=ENV)
    flood_and_check(d.port, d.pid, served_port=d.port)
    d.wait_log(r"ICID 1 connection closed reason=closed")


def test_noop_flood_without_reading_tls(make_sluiced, cert):
    """The same in TLS: the filter keeps what the socket's output does not
    take (tls.c's write watermark), and its output counts."""
    c, k = cert
    d = make_sluiced(conf={"server": {"tls_cert": str(c),
                                      "tls_key": str(k)}}, env=ENV)
    raw = Raw(d.port, timeout=60)
    raw.ehlo()
    assert raw.cmd("STARTTLS").startswith("220 2.0.0")
    tls = client_ctx().wrap_socket(raw.sock, server_hostname="mx.test")
    flood_and_check(d.port, d.pid, sock=tls, served_port=d.port)
    d.wait_log(r"ICID 1 connection closed reason=closed")


def test_never_reading_client_times_out(make_sluiced):
    """A client that never reads: once reading has stopped, the command
    timeout runs on the writes, then the session is closed and freed."""
    d = make_sluiced(conf={"server": {"command_timeout": "2s"}}, env=ENV)
    mem = Memory(d.pid, 64 * 1024)
    sock = socket.create_connection(("127.0.0.1", d.port), timeout=60)
    try:
        # the client calls it a stall after 0.5 s without progress, well
        # inside the 2 s timeout that starts when sluiced stops reading
        # (with 2.0 s against 2 s, a slow server closed first: a reset)
        try:
            flood = NoopFlood(sock, b"EHLO flood.sluice.test\r\n").send(
                500 * MB, stall=0.5, each_mb=lambda sent: mem.check())
            assert flood.stalled
        except ConnectionResetError:
            # sluiced closed first; only its timeout may have done that
            d.wait_log(r"ICID 1 closing reason=timeout", timeout=60)
        d.wait_log(r"ICID 1 closing reason=timeout", timeout=60)
        d.wait_log(r"ICID 1 connection closed", timeout=60)
    finally:
        sock.close()


@pytest.mark.parametrize("rules", [[], ["--rule", "delay 5ms"]],
                         ids=["direct", "delayed-replies"])
def test_noop_flood_without_reading_sink(make_sink, rules):
    """The sink is the same server; with delayed replies its writes wait
    on a timer, and reading must still resume once they are out."""
    sink = make_sink(*rules, maildir=False)
    flood_and_check(sink.port, sink.proc.pid)


# ---- bodies in memory: [server] max_inflight_bytes (body.c) ----

class SlowBody:
    """One client sending one message of `size` bytes, a piece at a time:
    EHLO, MAIL, RCPT and DATA pipelined, then the body by send()."""

    LINE = b"x" * 1022 + b"\r\n"

    def __init__(self, port, size, i):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        assert self.reply().startswith(b"220")
        self.sock.sendall(b"EHLO slow%d.sluice.test\r\n"
                          b"MAIL FROM:<slow%d@client.sluice.test>\r\n"
                          b"RCPT TO:<b@local.test>\r\nDATA\r\n" % (i, i))
        self.replies = [self.reply() for _ in range(4)]
        self.left = size // len(self.LINE)
        self.final = None
        self.sock.setblocking(False)

    def reply(self):
        """The last line of the next reply."""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                assert chunk, "connection closed"
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\r\n")
            if line[3:4] != b"-":
                return line

    @property
    def accepted(self):
        """DATA got 354 (else it was refused at once)."""
        return self.replies[3].startswith(b"354")

    def piece(self, lines=64):
        """Send up to `lines` lines (the last piece ends the data);
        False once all is sent."""
        n = min(lines, self.left)
        data = self.LINE * n + (b".\r\n" if n == self.left else b"")
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            return True
        if sent < len(data):    # finish this piece before the next
            self.sock.setblocking(True)
            self.sock.sendall(data[sent:])
            self.sock.setblocking(False)
        self.left -= n
        return self.left > 0

    def finish(self):
        self.sock.setblocking(True)
        self.final = self.reply().decode()
        self.sock.close()


def test_inflight_cap_500_slow_bodies(make_sluiced):
    """500 clients each send a 10 MB body, 64 KB per client in turn, so all
    are in flight at once (5 GB against a 64 MB cap): sluiced stays under
    the cap plus a fixed overhead; each client gets 250 or 451 4.3.1, some
    of each; the messages answered 250 are stored whole."""
    clients, size = (500, 10 * MB) if not ASAN else (200, 4 * MB)
    cap = 64 * MB
    d = make_sluiced(conf={"server": {"max_inflight_bytes": "64M",
                                      "max_message_size": "20M"}}, env=ENV)
    # the fixed overhead: 500 sessions, SQLite, the allocator (ASan: more)
    mem = Memory(d.pid, (cap + (80 if ASAN else 40) * MB) // 1024)
    conns = []
    try:
        for i in range(clients):
            conns.append(SlowBody(d.port, size, i))
        sending = [c for c in conns if c.accepted]
        rounds = 0
        while sending:
            sending = [c for c in sending if c.piece()]
            rounds += 1
            if rounds % 8 == 0:
                mem.check(f"in round {rounds}")
        for c in conns:
            if c.accepted:
                c.finish()
    finally:
        for c in conns:
            c.sock.close()
    peak = mem.check("at the end", key="VmHWM" if not ASAN else "VmRSS")
    refused = [c for c in conns if not c.accepted]
    for c in refused:
        assert c.replies[3].startswith(b"451 4.3.1"), c.replies
    finals = [c.final for c in conns if c.accepted]
    ok = [f for f in finals if f.startswith("250 2.0.0 Ok: queued as")]
    late = [f for f in finals if f.startswith("451 4.3.1")]
    assert len(ok) + len(late) == len(finals), set(finals) - set(ok + late)
    assert ok and (late or refused), (len(ok), len(late), len(refused))
    assert d.spool.count() == len(ok)
    want = size // len(SlowBody.LINE) * len(SlowBody.LINE)
    for mid in d.spool.mids()[:3]:
        assert len(d.spool.message(mid)) == want
    print(f"peak {peak} KB, {len(ok)} stored, {len(late)} 451 at the end, "
          f"{len(refused)} 451 at DATA")
    # nothing is held any more: a message as big as the cap allows
    with Raw(d.port, timeout=60) as c:
        c.ehlo()
        r = c.send_message("a@client.sluice.test", ["b@local.test"],
                           SlowBody.LINE * (16 * MB // len(SlowBody.LINE)))
        assert r.startswith("250 2.0.0 Ok: queued as"), r
