# SPDX-License-Identifier: MIT
"""
postfix_util.py: a private Postfix instance for the interop tests, and a
recording TCP tap.

  Postfix   Debian's Postfix with its own config, queue and log under a
            temp dir (like bench/lib.sh start_postfix). Its smtpd on a free
            loopback port takes mail from 127.0.0.0/8 with STARTTLS offered,
            PIPELINING, SIZE (message_size_limit), DSN and 8BITMIME, and
            puts every message it accepts on HOLD: the test reads it back
            from the hold queue with postcat (envelope, DSN records, headers,
            body). Mail handed to its sendmail goes out through its smtp
            client by transport_maps (relay_to), so Postfix can relay into
            sluiced. Nothing leaves loopback: every other transport discards.
  Tap       a TCP relay in front of a server that records what each side
            sent, chunk by chunk (to see pipelining and command parameters).
"""
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

from sluicetest import free_port, splice, wait_until


def sh(*argv, timeout=60, **kw):
    p = subprocess.run([str(a) for a in argv], capture_output=True,
                       text=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{argv}: {p.stdout}{p.stderr}"
    return p.stdout


MAIN_CF = """\
# Private test instance written by tests/system/postfix_util.py.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.sluice.test
mydomain = sluice.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtpd_relay_restrictions = permit_mynetworks, reject
# everything smtpd accepts is queued durably and parked on hold
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
message_size_limit = {size_limit}
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtp_tls_loglevel = 1
smtp_tls_security_level = may
smtp_dns_support_level = disabled
transport_maps =
default_transport = discard
relay_transport = discard
local_transport = discard
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
biff = no
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{plain_port} inet n - n - - smtpd -o smtpd_tls_security_level=none
127.0.0.1:{nosize_port} inet n - n - - smtpd -o smtpd_tls_security_level=none -o smtpd_discard_ehlo_keywords=size
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
tlsmgr     unix  - - n 1000? 1 tlsmgr
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


def wait_greeting(port, timeout=30):
    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                ok = s.recv(512).startswith(b"220")
                s.sendall(b"QUIT\r\n")
                return ok
        except OSError:
            return False
    wait_until(up, timeout=timeout, interval=0.1, what=f"220 on {port}")


class Postfix:
    def __init__(self, root, cert, key, size_limit=100000):
        self.root = Path(root)
        self.etc = self.root / "etc"
        self.port = free_port()             # STARTTLS offered
        self.plain_port = free_port()       # no STARTTLS: a tap can read it
        self.nosize_port = free_port()      # no SIZE in EHLO, limit enforced
        for d in ("etc", "queue", "data"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        sh("chown", "postfix", self.root / "data")
        (self.etc / "main.cf").write_text(MAIN_CF.format(
            root=self.root, cert=cert, key=key, size_limit=size_limit))
        (self.etc / "master.cf").write_text(MASTER_CF.format(
            port=self.port, plain_port=self.plain_port,
            nosize_port=self.nosize_port))
        sh("postfix", "-c", self.etc, "check")
        self.running = True
        sh("postfix", "-c", self.etc, "start")
        for p in (self.port, self.plain_port, self.nosize_port):
            wait_greeting(p)

    def stop(self):
        if self.running:
            subprocess.run(["postfix", "-c", str(self.etc), "stop"],
                           capture_output=True, timeout=60)
            subprocess.run(["postfix", "-c", str(self.etc), "abort"],
                           capture_output=True, timeout=60)
            self.running = False

    def log(self):
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def relay_to(self, domain, port):
        """Mail for domain goes out through Postfix's smtp client to
        127.0.0.1:port (no DNS)."""
        sh("postconf", "-c", self.etc, "-e",
           f"transport_maps = inline:{{ {domain}=smtp:[127.0.0.1]:{port} }}")
        sh("postfix", "-c", self.etc, "reload")

    def sendmail(self, sender, rcpts, msg, args=()):
        """Hand msg to Postfix's sendmail (its pickup, qmgr, smtp client)."""
        p = subprocess.run(["/usr/sbin/sendmail", "-C", str(self.etc), "-f",
                            sender, *args, "--", *rcpts], input=msg,
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr.decode()

    def held(self):
        """{queue id: path} of the messages on hold."""
        d = self.root / "queue" / "hold"
        try:
            return {f.name: f for f in d.iterdir()}
        except FileNotFoundError:
            return {}

    def postcat(self, path):
        """(envelope records, headers text, body bytes) of a queue file."""
        env = sh("postcat", "-c", self.etc, "-e", path)
        raw = subprocess.run(["postcat", "-c", str(self.etc), "-h", "-b",
                              str(path)], capture_output=True, timeout=60)
        assert raw.returncode == 0, raw.stderr
        out = raw.stdout
        # postcat frames the content with its own lines
        out = re.sub(rb"^\*\*\* [A-Z ]+ \*\*\*.*\n", b"", out, flags=re.M)
        head, _, body = out.partition(b"\n\n")
        return env, head.decode(errors="replace"), body

    def find_held(self, token, timeout=30):
        """The held message whose content holds token: postcat's view."""
        def look():
            for path in self.held().values():
                env, head, body = self.postcat(path)
                if token.encode() in body or token in head:
                    return env, head, body
            return None
        return wait_until(look, timeout=timeout,
                          what=f"a held message with {token} in Postfix")


class Tap:
    """A TCP relay on 127.0.0.1:port to 127.0.0.1:target that records the
    bytes of each direction as chunks: [(direction, bytes)] per connection,
    direction "c" (client to server) or "s". Server bytes are held back
    hold seconds, so a client that waits for replies is seen waiting."""

    def __init__(self, target, hold=0.05):
        self.target = target
        self.hold = hold
        self.lock = threading.Lock()
        self.conns = []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            rec = []
            with self.lock:
                self.conns.append(rec)
            for a, b, tag, hold in ((c, s, "c", 0), (s, c, "s", self.hold)):
                threading.Thread(target=splice, args=(
                    a, b, self._recorder(rec, tag), hold), daemon=True).start()

    def _recorder(self, rec, tag):
        def on_data(data):
            with self.lock:
                rec.append((tag, data))
        return on_data

    def client_text(self):
        with self.lock:
            return b"".join(d for conn in self.conns for t, d in conn
                            if t == "c")

    def chunks(self):
        with self.lock:
            return [list(c) for c in self.conns]

    def close(self):
        self.stopping = True
        self.srv.close()
