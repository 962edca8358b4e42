"""
sluicetest.py: helpers of the system tests. A real sluiced on 127.0.0.1 and
a free port (Daemon), a raw SMTP client (Raw), and readers of the SQLite
spool. conftest.py makes fixtures of them; tests import what they need.
"""
import hashlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / os.environ.get("SLUICE_BUILD", "build")
SLUICED = BUILD / "sluiced"

# The sanitizer build (make test-asan) runs every test, the slow ones with
# smaller loads (scaled) so that make test stays within its time budget.
ASAN = "asan" in os.environ.get("SLUICE_BUILD", "")


def scaled(n, asan_n):
    """n, or asan_n under the sanitizer build."""
    return asan_n if ASAN else n


# What a sanitizer prints when it finds something (ASan, UBSan, LSan).
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:",
                   "LeakSanitizer")

MID_RE = re.compile(rb"queued as ([0-9A-F]{16})")


# Ports for the servers the tests start. bind(0) and close leaves a race:
# before the server binds, any outgoing connection on the machine may be
# given that port (it is in the kernel's ephemeral range), and so may a
# parallel test's bind(0). These come from below the ephemeral range, where
# the kernel hands out none, and each is reserved for the life of the test
# process by a lock on its byte of PORT_LOCKS (fcntl record locks: every
# pytest process and xdist worker on this machine sees them, and they go
# when the process ends, however it ends).
PORT_LOCKS = "/tmp/sluicetest-ports.lock"
_port_fd = None
_ports_held = set()


def _port_range():
    """[lo, hi) of the ports to hand out: 10000 up to the ephemeral range,
    or above it if it starts too low to leave room."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            elo, ehi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        elo, ehi = 32768, 61000
    return (10000, elo) if elo >= 14000 else (ehi + 1, 65536)


def _bindable(port, addrs, udp):
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for addr in addrs:
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((addr, port))
                except OSError:
                    return False
    return True


def free_port(addrs=("127.0.0.1",), udp=False):
    """A port that is this test process's alone and free for TCP (and
    with udp for UDP too) on 127.0.0.1 and every address of addrs."""
    import fcntl
    import random
    global _port_fd
    if _port_fd is None:
        _port_fd = os.open(PORT_LOCKS, os.O_RDWR | os.O_CREAT, 0o666)
    lo, hi = _port_range()
    addrs = ["127.0.0.1"] + [a for a in addrs if a != "127.0.0.1"]
    for _ in range(2000):
        port = random.randrange(lo, hi)
        if port in _ports_held:
            continue
        try:
            fcntl.lockf(_port_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:
            continue            # another test process holds it
        _ports_held.add(port)   # held even if not bindable: tried once
        if _bindable(port, addrs, udp):
            return port
    raise AssertionError(f"no free port in [{lo}, {hi})")


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a true value; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_listening(port, v6=False, addr="127.0.0.1", pid=None):
    """True if something listens on addr:port (127.0.0.1), or with v6 on
    [::1]:port (from /proc, no connect: a probe connection would count
    against the connection limits). With pid: in that process's network
    namespace."""
    net = f"/proc/{pid}/net" if pid else "/proc/net"
    a4 = "" if v6 else "".join(f"{int(b):02X}"
                               for b in reversed(addr.split(".")))
    path, want = (net + "/tcp6", "0" * 24 + f"01000000:{port:04X}") if v6 \
        else (net + "/tcp", f"{a4}:{port:04X}")
    try:
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


LOG_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def log_times(text, pattern):
    """[(seconds since the epoch, match)] of the log lines matching the
    regex pattern, by the daemon's own timestamps (ms): timing checks use
    these, never the test's clock."""
    import datetime
    rx = re.compile(pattern)
    out = []
    for line in text.splitlines():
        m = rx.search(line)
        t = LOG_TIME_RE.match(line)
        if m and t:
            dt = datetime.datetime.strptime(t.group(1), "%Y-%m-%dT%H:%M:%S.%f")
            out.append((dt.replace(tzinfo=datetime.timezone.utc).timestamp(),
                        m))
    return out


def split_received(body):
    """(Received header, rest) of a stored body: the header sluice adds is
    the first field, with its continuation lines."""
    assert body.startswith(b"Received: "), body[:80]
    pos = 0
    while True:
        end = body.index(b"\r\n", pos) + 2
        pos = end
        if body[pos:pos + 1] not in (b" ", b"\t"):
            return body[:pos], body[pos:]


def make_cert(d, cn):
    """(certificate, key): a self-signed RSA pair for cn in directory d,
    valid for a day."""
    c, k = Path(d) / "cert.pem", Path(d) / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "1", "-subj", f"/CN={cn}",
                    "-keyout", str(k), "-out", str(c)],
                   check=True, capture_output=True, timeout=60)
    return c, k


def splice(a, b, on_data=None, hold=0):
    """Copy what socket a sends to socket b until a closes, then shut both
    down; on_data(bytes) sees each chunk, hold seconds before it goes on."""
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            if on_data:
                on_data(data)
            if hold:
                time.sleep(hold)
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def mid_of(reply):
    """The MID (int) in a '250 2.0.0 Ok: queued as XXXXXXXXXXXXXXXX' reply."""
    if isinstance(reply, str):
        reply = reply.encode()
    m = MID_RE.search(reply)
    assert m, f"no MID in reply {reply!r}"
    return int(m.group(1), 16)


_sections = None


# [server] loops for every daemon the tests start (SLUICE_TEST_LOOPS to
# change it; empty: the daemon's default, one per core)
SLUICE_LOOPS = os.environ.get("SLUICE_TEST_LOOPS", "2")


def daemon_sections():
    """The config sections this sluiced knows (from --print-config)."""
    global _sections
    if _sections is None:
        out = subprocess.run([str(SLUICED), "--print-config"], cwd="/",
                             capture_output=True, timeout=20).stdout.decode()
        _sections = set(re.findall(r"(?m)^\[(\w+)\]$", out))
    return _sections


_blackhole = None


def dns_blackhole_port():
    """A UDP port on 127.0.0.1 that takes DNS queries and never answers.
    Tests are hermetic (no host DNS), and queued mail stays in the spool
    (delivery waits for DNS) so the tests can read it there."""
    global _blackhole
    if _blackhole is None:
        _blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _blackhole.bind(("127.0.0.1", 0))
    return _blackhole.getsockname()[1]


class Spool:
    """Read-only view of <spool dir>/spool.db (safe while sluiced runs)."""

    def __init__(self, spool_dir):
        self.path = Path(spool_dir) / "spool.db"

    def _db(self):
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def _all(self, sql, args=()):
        db = self._db()
        try:
            return [dict(r) for r in db.execute(sql, args)]
        finally:
            db.close()

    def mids(self):
        return [r["mid"] for r in self._all("SELECT mid FROM envelopes ORDER BY mid")]

    def count(self):
        return self._all("SELECT count(*) AS n FROM envelopes")[0]["n"]

    def envelope(self, mid):
        rows = self._all("SELECT * FROM envelopes WHERE mid = ?", (mid,))
        return rows[0] if rows else None

    def recipients(self, mid):
        return self._all("SELECT * FROM recipients WHERE mid = ? ORDER BY rid",
                         (mid,))

    def body(self, mid):
        rows = self._all("SELECT data FROM bodies WHERE mid = ?", (mid,))
        return bytes(rows[0]["data"]) if rows else None

    def message(self, mid):
        """The stored body without the Received: header sluice added."""
        b = self.body(mid)
        return None if b is None else split_received(b)[1]

    def bodies(self):
        """{mid: stored body} of every message."""
        return {r["mid"]: bytes(r["data"])
                for r in self._all("SELECT mid, data FROM bodies")}

    def bodies_containing(self, needle):
        return [m for m, b in self.bodies().items() if needle in b]


class Daemon:
    """One sluiced process on a temp dir: start, stop, restart, kill -9."""

    def __init__(self, root, conf=None, args=(), wrapper=(), env=None,
                 listen="127.0.0.1:{port}", netns=None):
        self.root = Path(root)
        # [server] listen, {port} filled in at start; started means the
        # first address listens (127.0.0.1, [::1], or netns's address)
        self.netns = netns
        self.listen = listen if netns is None else netns.addr + ":{port}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.spool_dir = self.root / "spool"
        self.conf_path = self.root / "sluiced.ini"
        self.args = list(args)
        self.wrapper = list(wrapper)
        self.env = env
        self.port = None
        self.proc = None
        self.runs = 0
        self.stderr_path = None
        self.conf = {
            # CI runs as root: keep it (test_privs.py tests the drop)
            "server": {"hostname": "mx.sluice.test", "user": ""},
            "spool": {"dir": str(self.spool_dir)},
            "log": {},
        }
        # two SMTP loops of their own whatever the machine (issue 16: the
        # whole suite runs with them); a test may ask for loops = 1
        if SLUICE_LOOPS:
            self.conf["server"]["loops"] = SLUICE_LOOPS
        if "dns" in daemon_sections():
            self.conf["dns"] = {"servers": f"127.0.0.1:{dns_blackhole_port()}",
                                "timeout": "300s"}
        if "http" in daemon_sections():
            # parallel daemons must not fight over the default metrics port
            self.conf["http"] = {"listen": ""}
        for section, kv in (conf or {}).items():
            self.conf.setdefault(section, {}).update(kv)
        self.spool_dir = Path(self.conf["spool"]["dir"])
        self.spool = Spool(self.spool_dir)

    # -- the configuration --

    def write_conf(self):
        self.conf["server"]["listen"] = self.listen.format(port=self.port)
        lines = []
        for section, kv in self.conf.items():
            lines.append(f"[{section}]")
            for k, v in kv.items():
                lines.append(f"{k} = {v}")
            lines.append("")
        self.conf_path.write_text("\n".join(lines))

    @property
    def log(self):
        """The log: [log] file if set, else the daemon's stderr."""
        f = self.conf.get("log", {}).get("file", "-")
        return Path(f) if f != "-" else self.stderr_path

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10.0, start=0):
        """Wait until the log (from offset start) matches regex pattern."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log_text()[start:]),
                          timeout=timeout, what=f"log line /{pattern}/")

    # -- the process --

    def start(self, port=None, tries=3):
        """Start sluiced and wait until it listens. A port taken between our
        probe and its bind (a parallel test) is retried with a new one."""
        for attempt in range(tries):
            self.port = port or self.port or free_port()
            self.write_conf()
            self.runs += 1
            self.stderr_path = self.root / f"stderr.{self.runs}.log"
            ns = ["ip", "netns", "exec", self.netns.ns] if self.netns else []
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    ns + self.wrapper + [str(SLUICED), "-c",
                                         str(self.conf_path)]
                    + self.args, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, env=self.env,
                    cwd=self.root)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if port_listening(self.port,
                                  v6=self.listen.startswith("["),
                                  addr=self.listen.rsplit(":", 1)[0],
                                  pid=self.proc.pid if self.netns else None):
                    return self
                time.sleep(0.01)
            else:
                self.kill9()
                raise AssertionError("sluiced did not listen within 20s")
            text = self.stderr_path.read_text(errors="replace")
            self.proc = None
            if "Address already in use" in text and port is None:
                self.port = None
                continue
            raise AssertionError(f"sluiced exited at start: {text}")
        raise AssertionError("no free port after retries")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        """The daemon's pid (under a wrapper such as strace: its child)."""
        if not self.wrapper:
            return self.proc.pid

        def child():
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}"
                            "/children").read_text().split()
            except OSError:
                return None
            return int(kids[0]) if kids else None
        return wait_until(child, timeout=10, what="wrapped daemon pid")

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stderr_text(self):
        return self.stderr_path.read_text(errors="replace")

    def check_sanitizers(self):
        text = self.stderr_text()
        bad = [l for l in text.splitlines()
               if any(m in l for m in SANITIZER_MARKS)]
        assert not bad, "sanitizer report in sluiced stderr:\n" + text[-8000:]

    def stop(self, timeout=30):
        """SIGTERM; the daemon must exit 0 with a clean stderr."""
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.proc = None
            raise AssertionError(f"sluiced did not exit {timeout}s after "
                                 f"SIGTERM:\n{self.stderr_text()[-4000:]}")
        self.proc = None
        self.check_sanitizers()
        assert rc == 0, f"sluiced exited {rc}:\n{self.stderr_text()[-4000:]}"

    def wait_exit(self, timeout=30):
        """Wait for an exit the test caused; return the exit code."""
        rc = self.proc.wait(timeout=timeout)
        self.proc = None
        self.check_sanitizers()
        return rc

    def kill9(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    # -- clients --

    def connect(self, timeout=15):
        return Raw(self.port, timeout=timeout)


class Raw:
    """A raw SMTP client: send bytes, read replies (multi-line aware)."""

    def __init__(self, port, timeout=15, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line):
        """Send one command line; return its reply."""
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply()

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    raise AssertionError(f"EOF in a reply line: {self.buf!r}")
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """One reply: its lines joined by \\n; None at EOF."""
        lines = []
        while True:
            line = self._line()
            if line is None:
                if lines:
                    raise AssertionError(f"EOF inside reply {lines}")
                return None
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def expect(self, prefix):
        r = self.reply()
        assert r is not None, f"connection closed, expected {prefix!r}"
        last = r.split("\n")[-1]
        assert last.startswith(prefix), f"expected {prefix!r}, got {r!r}"
        return r

    def expect_closed(self, timeout=15):
        """The server closes: EOF (or a reset) with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            r = self.reply()
        except ConnectionResetError:
            r = None
        assert r is None, f"expected the connection closed, got {r!r}"

    def ehlo(self, name="client.sluice.test"):
        self.send(f"EHLO {name}\r\n")
        return self.expect("250")

    def send_message(self, sender, rcpts, msg):
        """MAIL, RCPT..., DATA, dot-stuffed msg (CRLF lines); the final reply."""
        self.expect_ok(f"MAIL FROM:<{sender}>")
        for r in rcpts:
            self.expect_ok(f"RCPT TO:<{r}>")
        self.send("DATA\r\n")
        self.expect("354")
        self.send(dot_stuff(msg) + b".\r\n")
        return self.reply()

    def expect_ok(self, line):
        self.send(line + "\r\n")
        return self.expect("250")


def dot_stuff(msg):
    """msg (CRLF lines, ends with CRLF) as sent after DATA."""
    assert msg.endswith(b"\r\n")
    out = re.sub(rb"(?m)^\.", b"..", msg)
    return out


def client_ctx():
    """A TLS client context that checks nothing: test certificates are
    self-signed."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def proc_status_kb(pid, key="VmRSS"):
    """A size from /proc/PID/status in KB: VmRSS (resident now) or VmHWM
    (the peak resident size)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


class NoopFlood:
    """A client that pipelines NOOP and reads none of the replies.

    send() writes NOOP lines without blocking until `limit` bytes are out
    or the server has taken nothing for `stall` seconds (it stopped
    reading: its TCP window is closed). each_mb(sent) is called after
    every MB sent; it may raise to stop the flood. Then drain() sends the
    end of the last line and QUIT, reads every reply and returns their
    status lines. sock may be a TLS socket (non-blocking sends raise
    ssl.SSLWantWriteError there)."""

    LINE = b"NOOP\r\n"

    def __init__(self, sock, first=b""):
        import ssl
        self.sock = sock
        self.want_write = (BlockingIOError, ssl.SSLWantWriteError)
        self.first = first
        self.sent = 0           # bytes, the first ones included
        self.pending = None     # the write that did not go out
        self.stalled = False

    def send(self, limit, stall=2.0, each_mb=None):
        import select
        block = self.LINE * 65536
        data = memoryview(self.first + block)
        off = 0
        last = time.monotonic()
        next_mb = 1 << 20
        self.sock.setblocking(False)
        while self.sent < limit:
            # a TLS write that could not go out is retried as it was
            self.pending = data[off:off + 65536]
            try:
                n = self.sock.send(self.pending)
            except self.want_write:
                if time.monotonic() - last > stall:
                    self.stalled = True
                    break
                select.select([], [self.sock], [], 0.05)
                continue
            self.pending = None
            self.sent += n
            off += n
            last = time.monotonic()
            if off == len(data):
                data, off = memoryview(block), 0
            if each_mb and self.sent >= next_mb:
                next_mb += 1 << 20
                each_mb(self.sent)
        return self

    @property
    def noops(self):
        """NOOP lines sent in full once drain() completes the last one."""
        return -(-(self.sent - len(self.first)) // len(self.LINE))

    def drain(self, then=b"QUIT\r\n", timeout=120):
        """Complete the last line, send then (it should end the session),
        and read to EOF (one thread: a TLS socket takes no concurrent reads
        and writes); returns the reply lines (bytes)."""
        import select
        import ssl
        want_read = (BlockingIOError, ssl.SSLWantReadError)
        out = None
        got = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, "replies did not end in time"
            if out is None and self.pending is None:
                # the end of the last line, then QUIT
                cut = (self.sent - len(self.first)) % len(self.LINE)
                out = memoryview((self.LINE[cut:] if cut else b"") + then)
            try:
                if self.pending is not None:
                    self.sent += self.sock.send(self.pending)
                    self.pending = None
                elif len(out):
                    out = out[self.sock.send(out):]
            except self.want_write:
                pass
            try:
                chunk = self.sock.recv(1 << 20)
            except want_read:
                select.select([self.sock], [self.sock] if out is None or len(out)
                          else [], [], 0.05)
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            got.append(chunk)
        return b"".join(got).split(b"\r\n")
