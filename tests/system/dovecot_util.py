# SPDX-License-Identifier: MIT
"""
dovecot_util.py: Debian's Dovecot (dovecot-core, dovecot-lmtpd) as an LMTP
server for the tests, started on loopback with a throwaway configuration.

Dovecot(users={"alice@b.test": None, "full@b.test": "1"}) writes a
passwd-file userdb (the value is a storage quota in KB, None: 10 MB) and
starts `dovecot -F` with its own base_dir, state and log, LMTP on a free
TCP port of `address` and on a Unix socket. Mail is stored as Maildir
under DIR/mail/DOMAIN/USER/Maildir, owned by the dovecot user (Dovecot
refuses to store mail as root); the temporary directory is made outside
pytest's (which only root may enter). stop() ends it by its pid.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sluicetest import free_port, wait_until

CONF = """\
base_dir = {d}/run
state_dir = {d}/state
instance_name = sluicetest-{port}
protocols = lmtp
listen = {address}
log_path = {d}/dovecot.log
ssl = no
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{d}/mail/%d/%n/Maildir
mail_uid = dovecot
mail_gid = dovecot
first_valid_uid = 0
first_valid_gid = 0
mail_plugins = quota
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service lmtp {{
  process_min_avail = 1
  inet_listener lmtp {{
    address = {address}
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
plugin {{
  quota = maildir:User quota
  quota_rule = *:storage=10M
}}
"""


class Dovecot:
    def __init__(self, users, address="127.0.0.1", port=None, netns=None):
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-dovecot-"))
        os.chmod(self.dir, 0o755)
        self.address = address
        self.port = port or free_port((address,))
        self.netns = netns
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir()
        pw = pwd.getpwnam("dovecot")
        os.chown(self.dir / "mail", pw.pw_uid, pw.pw_gid)
        lines = []
        for user, quota in users.items():
            extra = f"userdb_quota_rule=*:storage={quota}K" if quota else ""
            lines.append(f"{user}:{{PLAIN}}x::::::{extra}")
        (self.dir / "users").write_text("\n".join(lines) + "\n")
        (self.dir / "dovecot.conf").write_text(CONF.format(
            d=self.dir, port=self.port, address=address))
        self.proc = None
        self.start()

    @property
    def socket_path(self):
        return str(self.dir / "run" / "lmtp")

    def start(self):
        cmd = ["dovecot", "-F", "-c", str(self.dir / "dovecot.conf")]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        self.out = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.out,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_until(self._answers, timeout=30, what="dovecot LMTP greeting")

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError("dovecot exited: " + self.log())
        if not os.path.exists(self.socket_path):
            return False
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.socket_path)
                return s.recv(100).startswith(b"220")
        except OSError:
            return False

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.out.close()
        # its children leave with the master; the sockets stay behind
        for f in (self.dir / "run").iterdir():
            if f.is_socket() or f.name == "master.pid":
                f.unlink()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def maildir(self, addr):
        user, dom = addr.split("@")
        return self.dir / "mail" / dom / user / "Maildir"

    def messages(self, addr):
        """The messages in addr's INBOX (new/ and cur/), as bytes."""
        md = self.maildir(addr)
        out = []
        for sub in ("new", "cur"):
            d = md / sub
            if d.is_dir():
                out += [p.read_bytes() for p in sorted(d.iterdir())]
        return out
