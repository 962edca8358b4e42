"""
delivery_util.py: helpers of the delivery tests (outbound SMTP from sluiced).

  Dns        dnsmasq on 127.0.0.1 and a free port, serving .test: MX, null MX,
             host records; any other .test name is NXDOMAIN. restart() on the
             same port with new records.
  Scripted   a small Python DNS server for domains whose answers change
             during a test (SERVFAIL while .fail is set, then MX records);
             dnsmasq forwards those domains to it.
  Receiver   a scripted SMTP server (asyncio in a thread) on 127.0.0.x:PORT:
             counts connections and peak concurrency, records every message
             answered 250, and misbehaves on request per connection and
             per stage (reply codes, garbage, no CRLF, endless multi-line
             replies, stalls, dropped connections).
  Net        one test's world: DNS, receivers on one smtp_port, and the
             sluiced configuration pointing at them (fixture `net`).
  send/inject  messages into sluiced with smtplib; parse_dsn reads a DSN.

Timings are short (retry 1s..2s, timeouts 2s) so that every retry, expiry
and throttle happens within seconds.
"""
import asyncio
import email
import email.policy
import os
import re
import smtplib
import socket
import struct
import subprocess
import threading
import time

import pytest

from sluicetest import free_port, mid_of, wait_until

# --------------------------------------------------------------------------
# ports


def free_port_both():
    """A port free on 127.0.0.1 for both TCP and UDP (for dnsmasq)."""
    return free_port(udp=True)


def free_smtp_port(addrs):
    """A TCP port free on 127.0.0.1 and on every address of addrs."""
    return free_port(addrs)


# --------------------------------------------------------------------------
# DNS wire format (only what the tests need)

QTYPE = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16,
         "AAAA": 28}


def dns_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_read_name(buf, pos):
    """(name, position after it) of a possibly compressed name."""
    labels = []
    end = None
    for _ in range(128):
        n = buf[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | buf[pos + 1]
            continue
        labels.append(buf[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    return ".".join(labels), (end if end is not None else pos)


def dns_query_packet(name, qtype, qid=0x1234):
    return (struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + dns_name(name)
            + struct.pack(">HH", QTYPE[qtype], 1))


def dns_ask(port, name, qtype, timeout=1.0):
    """(rcode, [(type, rdata-text)]) from the server on 127.0.0.1:port, or
    None if it did not answer within timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(dns_query_packet(name, qtype), ("127.0.0.1", port))
        try:
            buf, _ = s.recvfrom(4096)
        except (socket.timeout, ConnectionRefusedError):
            return None
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", buf[:12])
    pos = 12
    for _ in range(qd):
        _, pos = dns_read_name(buf, pos)
        pos += 4
    answers = []
    for _ in range(an):
        _, pos = dns_read_name(buf, pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", buf[pos:pos + 10])
        pos += 10
        rdata = buf[pos:pos + rdlen]
        if rtype == 1:
            answers.append(("A", socket.inet_ntoa(rdata)))
        elif rtype == 15:
            pref = struct.unpack(">H", rdata[:2])[0]
            target, _ = dns_read_name(buf, pos + 2)
            answers.append(("MX", f"{pref} {target or '.'}"))
        else:
            answers.append((rtype, rdata))
        pos += rdlen
    return flags & 0xF, answers


class Scripted:
    """A DNS server in Python for the domains in .zones (lower case):
    SERVFAIL for every query while .fail is true (or the domain is in
    .fail when it is a set), else the MX records in .zones[domain]
    (a list of (pref, target)), NODATA for other types; NXDOMAIN for names
    it does not know. TTL 1. Counts the queries it got."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.zones = {}
        self.fail = True
        self.queries = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _failing(self, name):
        if isinstance(self.fail, (set, frozenset)):
            return name in self.fail
        return bool(self.fail)

    def _answer(self, q):
        qid, flags = struct.unpack(">HH", q[:4])
        name, pos = dns_read_name(q, 12)
        qtype, qclass = struct.unpack(">HH", q[pos:pos + 4])
        question = q[12:pos + 4]
        name = name.lower()
        rd = flags & 0x0100
        base = 0x8000 | 0x0400 | rd | 0x0080      # QR, AA, RD as asked, RA
        if self._failing(name):
            return struct.pack(">HHHHHH", qid, base | 2, 1, 0, 0, 0) + question
        if name not in self.zones:
            return struct.pack(">HHHHHH", qid, base | 3, 1, 0, 0, 0) + question
        answers = b""
        n = 0
        if qtype == 15:
            for pref, target in self.zones[name]:
                rdata = struct.pack(">H", pref) + dns_name(target)
                answers += (b"\xc0\x0c" + struct.pack(">HHIH", 15, 1, 1,
                                                      len(rdata)) + rdata)
                n += 1
        return (struct.pack(">HHHHHH", qid, base, 1, n, 0, 0) + question
                + answers)

    def _run(self):
        while not self.stopping:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.queries += 1
                self.sock.sendto(self._answer(q), peer)
            except (OSError, IndexError, struct.error):
                pass

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


class Dns:
    """dnsmasq for .test on 127.0.0.1:port. Add records, then start();
    restart() keeps the port. Domains in `scripted` go to a Scripted server."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port_both()
        self.mx_records = []        # (domain, target, pref)
        self.hosts = []             # (name, addr)
        self.scripted = None
        self.scripted_domains = []
        self.proc = None
        self.runs = 0

    def mx(self, domain, target, pref=10):
        self.mx_records.append((domain, target, pref))
        return self

    def null_mx(self, domain):
        self.mx_records.append((domain, ".", 0))
        return self

    def host(self, name, addr):
        self.hosts.append((name, addr))
        return self

    def script(self, domain):
        """The answers for domain come from the Scripted server."""
        if self.scripted is None:
            self.scripted = Scripted()
        self.scripted_domains.append(domain.lower())
        return self.scripted

    def argv(self):
        a = ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
             f"--port={self.port}", "--listen-address=127.0.0.1",
             "--bind-interfaces", "--conf-file=/dev/null", "--local=/test/",
             "--local-ttl=1", "--no-negcache", "--cache-size=0"]
        for d, t, p in self.mx_records:
            a.append(f"--mx-host={d},{t},{p}")
        for n, addr in self.hosts:
            a.append(f"--host-record={n},{addr}")
        for d in self.scripted_domains:
            a.append(f"--server=/{d}/127.0.0.1#{self.scripted.port}")
        return a

    def start(self):
        self.runs += 1
        self.err = open(os.path.join(self.workdir, f"dnsmasq.{self.runs}.log"),
                        "wb")
        for _ in range(50):
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=self.err, stderr=self.err)
            # a loaded machine may take long to start it: a generous wait
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if dns_ask(self.port, "ready.probe.test", "A",
                           timeout=0.2) is not None:
                    return self
            # the port was taken meanwhile (or the old one not yet freed)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            time.sleep(0.1)
        self.err.flush()
        with open(self.err.name, errors="replace") as f:
            log = f.read()[-2000:]
        raise AssertionError(f"dnsmasq did not start on port {self.port} "
                             f"({self.err.name}):\n{log}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "err", None):
            self.err.close()
            self.err = None

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        self.stop()
        if self.scripted is not None:
            self.scripted.stop()

    def ask(self, name, qtype):
        return dns_ask(self.port, name, qtype)


# --------------------------------------------------------------------------
# the scripted SMTP receiver

class Msg:
    """One message a receiver answered 250 (or refused at the end)."""

    def __init__(self, conn, mail_from, rcpts, data, mail_params, rcpt_params):
        self.conn = conn
        self.mail_from = mail_from
        self.rcpts = rcpts
        self.data = data
        self.mail_params = mail_params
        self.rcpt_params = rcpt_params
        self.reply = None

    def header(self, name):
        m = re.search(rb"(?mi)^" + name.encode() + rb":[ \t]*(.*?)\r?$",
                      self.data.split(b"\r\n\r\n", 1)[0])
        return m.group(1).decode("utf-8", "replace") if m else None

    def __repr__(self):
        return (f"<Msg conn={self.conn} from={self.mail_from} "
                f"to={self.rcpts} {len(self.data)}B>")


class Ctx:
    """What a script sees: the connection number (1-based) and the
    transaction so far."""

    def __init__(self, rcv, conn):
        self.rcv = rcv
        self.conn = conn
        self.mail_from = None
        self.rcpts = []
        self.data = None
        self.cmd = None


DEFAULT_EXT = ("PIPELINING", "8BITMIME", "SIZE 104857600",
               "ENHANCEDSTATUSCODES")


class Gauge:
    """Open connections across several receivers, and their peak."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def add(self, n):
        with self.lock:
            self.active += n
            self.peak = max(self.peak, self.active)


class Receiver:
    """An SMTP server on addr:port that plays a script.

    script(conn_no) -> {stage: action} for each new connection (conn_no
    counts from 1); stages: greeting, ehlo, mail, rcpt, data, data_end,
    quit. An action is a reply line ("451 4.3.0 later"; 421 closes after
    it), None (the normal reply), a callable ctx -> action, or one of:
      "drop"        close at once, no reply
      "garbage"     a line that is not SMTP, then wait for the client
      "nocrlf"      "250 2.0.0 Ok" without its line end, then stall
      "multiline"   "250-x" lines, never the last one, until closed
      "stall"       no reply; wait until the client closes
      "drop_mid_data" (stage data) 354, read some of the data, close
      "ok_close"    a 250 reply, then close at once
    delays: {stage: seconds} before that stage's reply.
    gauge: a Gauge shared with other receivers (total concurrency).
    """

    def __init__(self, addr, port, script=None, ext=DEFAULT_EXT, delays=None,
                 name="rx", gauge=None):
        self.addr = addr
        self.port = port
        self.script = script or (lambda n: {})
        self.ext = list(ext)
        self.delays = dict(delays or {})
        self.name = name
        self.gauge = gauge
        self.lock = threading.Lock()
        self.conns = 0
        self.active = 0
        self.peak = 0
        self.messages = []      # answered 250 at the end of the data
        self.refused = []       # data received, answered otherwise / not
        self.events = []        # (conn, what) for debugging
        self.conn_times = []    # time.monotonic() of each accept
        self.loop = None
        self.server = None
        self.tasks = set()
        started = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(started,),
                                       daemon=True)
        self.thread.start()
        started.wait(10)
        if self.error:
            raise self.error
        assert self.server is not None, f"receiver {addr}:{port} did not start"

    # -- counts for the tests --

    def count(self):
        with self.lock:
            return len(self.messages)

    def tokens(self, header="X-Token"):
        """{header value: times delivered}."""
        out = {}
        with self.lock:
            msgs = list(self.messages)
        for m in msgs:
            t = m.header(header)
            out[t] = out.get(t, 0) + 1
        return out

    def rcpt_counts(self):
        out = {}
        with self.lock:
            msgs = list(self.messages)
        for m in msgs:
            for r in m.rcpts:
                out[r] = out.get(r, 0) + 1
        return out

    # -- the server --

    def _run(self, started):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

        async def up():
            self.server = await asyncio.start_server(
                self._session, self.addr, self.port, reuse_address=True,
                backlog=200)
        try:
            self.loop.run_until_complete(up())
        except OSError as e:
            self.error = e
            started.set()
            return
        started.set()
        self.loop.run_forever()
        # stop(): close what is left
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            self.loop.run_until_complete(
                asyncio.gather(*self.tasks, return_exceptions=True))
        self.loop.close()

    def stop(self):
        if self.loop is None or self.loop.is_closed():
            return

        async def down():
            self.server.close()
            await self.server.wait_closed()
        try:
            fut = asyncio.run_coroutine_threadsafe(down(), self.loop)
            try:
                fut.result(timeout=5)
            except Exception:
                pass
            for t in list(self.tasks):
                self.loop.call_soon_threadsafe(t.cancel)
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass
        self.thread.join(timeout=10)

    async def _session(self, reader, writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        with self.lock:
            self.conns += 1
            conn = self.conns
            self.conn_times.append(time.monotonic())
            self.active += 1
            self.peak = max(self.peak, self.active)
        if self.gauge:
            self.gauge.add(1)
        released = []

        def release():
            # once per connection: at QUIT (the client is done: without
            # this, the accept of its next connection could be handled
            # before this coroutine resumes after the 221) or at the end
            if released:
                return
            released.append(1)
            with self.lock:
                self.active -= 1
            if self.gauge:
                self.gauge.add(-1)

        try:
            plan = self.script(conn) or {}
            sess = Session(self, conn, plan, reader, writer)
            sess.release = release
            await sess.run()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            release()
            with self.lock:
                self.events.append((conn, "closed"))
            try:
                writer.close()
            except Exception:
                pass
            self.tasks.discard(task)


class _Closed(Exception):
    pass


class Session:
    def __init__(self, rcv, conn, plan, reader, writer):
        self.rcv = rcv
        self.plan = plan
        self.r = reader
        self.w = writer
        self.ctx = Ctx(rcv, conn)
        self.mail_params = ""
        self.rcpt_params = []
        self.release = lambda: None

    def action(self, stage):
        a = self.plan.get(stage)
        if callable(a):
            a = a(self.ctx)
        return a

    async def send(self, text):
        self.w.write(text.encode() if isinstance(text, str) else text)
        await self.w.drain()

    async def wait_close(self, limit=60):
        """Stall: read and drop whatever comes until the client closes."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                b = await asyncio.wait_for(self.r.read(65536), 1)
            except asyncio.TimeoutError:
                continue
            if not b:
                break
        raise _Closed()

    async def reply(self, stage, normal):
        """Send the reply of stage (the script's, or normal)."""
        d = self.rcv.delays.get(stage)
        if d:
            await asyncio.sleep(d)
        a = self.action(stage)
        self.rcv.events.append((self.ctx.conn, f"{stage}:{a or 'normal'}"))
        if a is None:
            await self.send(normal)
            return normal
        if a == "drop":
            raise _Closed()
        if a == "garbage":
            await self.send(b"Hello, this is not SMTP at all\r\n")
            await self.wait_close()
        if a == "nocrlf":
            await self.send(b"250 2.0.0 Ok")
            await self.wait_close()
        if a == "multiline":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await self.send(b"250-x\r\n" * 10)
                await asyncio.sleep(0.001)
            raise _Closed()
        if a == "stall":
            await self.wait_close()
        if a == "ok_close":
            await self.send("250 2.0.0 Ok, and goodbye\r\n")
            raise _Closed()
        if a == "drop_mid_data":
            await self.send("354 go ahead\r\n")
            await self.r.readexactly(10)    # some of the data, then go
            raise _Closed()
        line = a if a.endswith("\r\n") else a + "\r\n"
        await self.send(line)
        if line.startswith("421"):
            raise _Closed()
        return line

    async def readline(self):
        line = await self.r.readline()
        if not line:
            raise _Closed()
        return line

    async def run(self):
        try:
            await self._run()
        except _Closed:
            pass

    async def _run(self):
        host = f"{self.rcv.name}.receiver.test"
        await self.reply("greeting", f"220 {host} ESMTP scripted\r\n")
        while True:
            raw = await self.readline()
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            self.ctx.cmd = line
            if verb == "EHLO":
                lines = [host] + self.rcv.ext
                text = "".join(f"250-{x}\r\n" for x in lines[:-1])
                text += f"250 {lines[-1]}\r\n"
                await self.reply("ehlo", text)
            elif verb == "HELO":
                await self.reply("ehlo", f"250 {host}\r\n")
            elif verb == "MAIL":
                m = re.match(r"(?i)MAIL FROM:\s*<([^>]*)>\s*(.*)", line)
                self.ctx.mail_from = m.group(1) if m else line
                self.mail_params = m.group(2) if m else ""
                self.ctx.rcpts = []
                self.rcpt_params = []
                await self.reply("mail", "250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                m = re.match(r"(?i)RCPT TO:\s*<([^>]*)>\s*(.*)", line)
                addr = m.group(1) if m else line
                self.ctx.addr = addr
                r = await self.reply("rcpt", "250 2.1.5 Ok\r\n")
                if r.startswith("2"):
                    self.ctx.rcpts.append(addr)
                    self.rcpt_params.append(m.group(2) if m else "")
            elif verb == "DATA":
                if not self.ctx.rcpts:
                    await self.send("554 5.5.1 No valid recipients\r\n")
                    # a pipelining client sends its data anyway: skip it
                    continue
                r = await self.reply("data", "354 End data with .\r\n")
                if not r.startswith("354"):
                    continue
                data = await self.read_data()
                self.ctx.data = data
                msg = Msg(self.ctx.conn, self.ctx.mail_from,
                          list(self.ctx.rcpts), data, self.mail_params,
                          list(self.rcpt_params))
                try:
                    r = await self.reply("data_end",
                                         "250 2.0.0 Ok: queued\r\n")
                except _Closed:
                    with self.rcv.lock:
                        if self.action("data_end") == "ok_close":
                            msg.reply = "250 ok_close"
                            self.rcv.messages.append(msg)
                        else:
                            self.rcv.refused.append(msg)
                    raise
                msg.reply = r
                with self.rcv.lock:
                    (self.rcv.messages if r.startswith("2")
                     else self.rcv.refused).append(msg)
                self.ctx.rcpts = []
            elif verb == "RSET":
                self.ctx.rcpts = []
                await self.send("250 2.0.0 Ok\r\n")
            elif verb == "NOOP":
                await self.send("250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                self.release()
                await self.reply("quit", "221 2.0.0 Bye\r\n")
                raise _Closed()
            else:
                await self.send("502 5.5.2 Command not recognized\r\n")

    async def read_data(self):
        lines = []
        while True:
            line = await self.readline()
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line)
        return b"".join(lines)


# --------------------------------------------------------------------------
# sending into sluiced

def make_body(token, subject="delivery test", extra=b""):
    return (f"From: sender@back.test\r\nTo: someone@dest.test\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{token}@sluice.test>\r\n"
            f"X-Token: {token}\r\n\r\n").encode() + \
        b"Body of " + token.encode() + b"\r\n" + extra


def send(port, sender, rcpts, body, mail_opts=(), rcpt_opts=(), s=None):
    """One message into sluiced on 127.0.0.1:port; returns its MID (int)."""
    own = s is None
    if own:
        s = smtplib.SMTP("127.0.0.1", port, timeout=30,
                         local_hostname="client.sluice.test")
        s.ehlo()
    try:
        code, resp = s.mail(sender, list(mail_opts))
        assert code == 250, (code, resp)
        for r in rcpts:
            code, resp = s.rcpt(r, list(rcpt_opts))
            assert code == 250, (r, code, resp)
        code, resp = s.data(body)
        assert code == 250, (code, resp)
        return mid_of(resp)
    finally:
        if own:
            s.quit()


def inject(port, items, sessions=8):
    """Send many messages over a few sessions (threads). items: a list of
    (sender, rcpts, body). Returns the MIDs in the order of items."""
    mids = [None] * len(items)
    lock = threading.Lock()
    nxt = [0]
    errors = []

    def worker():
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=60,
                             local_hostname="client.sluice.test")
            s.ehlo()
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(items):
                    break
                sender, rcpts, body = items[i]
                mids[i] = send(port, sender, rcpts, body, s=s)
            s.quit()
        except Exception as e:     # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(min(sessions, len(items)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "an injecting thread hung"
    assert not errors, errors
    return mids


# --------------------------------------------------------------------------
# DSNs

def parse_dsn(raw):
    """(message, [per-recipient field dicts]) of a DSN; asserts it is an
    RFC 3464 multipart/report."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", \
        msg.get_param("report-type")
    parts = msg.get_payload()
    ds = [p for p in parts if p.get_content_type() in (
        "message/delivery-status", "message/global-delivery-status")]
    assert len(ds) == 1, [p.get_content_type() for p in parts]
    blocks = ds[0].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, blocks
    per_msg = dict(blocks[0].items())
    assert "Reporting-MTA" in per_msg, per_msg
    rcpts = [dict((k.lower(), v) for k, v in b.items()) for b in blocks[1:]]
    return msg, per_msg, rcpts


# --------------------------------------------------------------------------
# sluiced's log and spool

def log_count(d, pattern):
    return len(re.findall(pattern, d.log_text()))


def wait_spool_empty(d, timeout=30):
    """Wait until the spool holds no message; returns the count (0)."""
    wait_until(lambda: d.spool.count() == 0, timeout=timeout,
               what=f"an empty spool (now {d.spool.count()})")
    return 0


# --------------------------------------------------------------------------
# one test's world

FAST = {
    "retry_initial": "1s",
    "retry_max": "2s",
    "queue_lifetime": "1h",
    "throttle_pause": "2s",
    "idle_timeout": "1s",
    "connect_timeout": "2s",
    "command_timeout": "2s",
    "data_timeout": "2s",
}


class Net:
    """DNS, receivers on 127.0.0.x:smtp_port, and sluiced's settings.

    The sender's domain back.test has its MX at 127.0.0.2 (net.back, a
    receiver started by back()) so that DSNs come back to the test."""

    BACK_ADDR = "127.0.0.2"
    ADDRS = [f"127.0.0.{i}" for i in (2, 11, 12, 13, 14, 15, 16)]

    def __init__(self, workdir):
        self.workdir = workdir
        self.dns = Dns(str(workdir))
        self.smtp_port = free_smtp_port(self.ADDRS)
        self.receivers = []
        self.backrx = None
        self.dns.mx("back.test", "mx.back.test", 10)
        self.dns.host("mx.back.test", self.BACK_ADDR)

    def receiver(self, addr, script=None, **kw):
        r = Receiver(addr, self.smtp_port, script=script,
                     name=kw.pop("name", addr.replace(".", "-")), **kw)
        self.receivers.append(r)
        return r

    def back(self, **kw):
        """The sender's domain's receiver (DSNs land there)."""
        if self.backrx is None:
            self.backrx = self.receiver(self.BACK_ADDR, name="back", **kw)
        return self.backrx

    def conf(self, **delivery):
        dl = dict(FAST)
        dl["smtp_port"] = str(self.smtp_port)
        dl.update({k: str(v) for k, v in delivery.items()})
        return {"delivery": dl,
                "dns": {"servers": f"127.0.0.1:{self.dns.port}",
                        "timeout": "1s"}}

    def close(self):
        for r in self.receivers:
            r.stop()
        self.dns.close()


@pytest.fixture
def net(tmp_path):
    """List it before make_sluiced: sluiced stops first at teardown."""
    n = Net(tmp_path)
    yield n
    n.close()
