# SPDX-License-Identifier: MIT
"""
test_privs.py: privileges. Started as root with [server] user = nobody,
sluiced binds, opens its spool, then runs as nobody (uid, gid and no
other group, read from /proc/PID/status); the spool is handed to it and
not readable by others; a message still flows end to end to a sink, and
to a local Maildir made for the user. A user that does not exist stops
the start with a clear error.
"""
import os
import pwd
import shutil
import smtplib
import subprocess
import tempfile

import pytest

from sluicetest import SLUICED, Daemon, mid_of, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root (CI runs as root)")


@pytest.fixture
def world_dir():
    """A directory nobody can reach (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="sluice-privs-", dir="/tmp")
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def proc_ids(pid):
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.split()
    return st


def send_finished(d, rcpt, text):
    """One message to rcpt; wait until it is finished (delivered)."""
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as c:
        c.ehlo("client.test")
        c.mail("a@client.test")
        c.rcpt(rcpt)
        code, resp = c.data(b"Subject: privs\r\n\r\n" + text + b"\r\n")
        assert code == 250
    d.wait_log(r"Message finished MID %016X done" % mid_of(resp), timeout=30)


def test_drops_to_user_and_mail_flows(world_dir, make_sink):
    nobody = pwd.getpwnam("nobody")
    sink = make_sink()
    d = Daemon(os.path.join(world_dir, "d"), conf={
        "server": {"user": "nobody"},
        "spool": {"dir": os.path.join(world_dir, "d", "spool")},
        "control": {"socket": os.path.join(world_dir, "d", "ctl.sock")},
        "log": {"file": os.path.join(world_dir, "d", "sluiced.log")},
        "routes": {"far.test": f"[127.0.0.1]:{sink.port}"},
        "delivery": {"retry_initial": "1s"}})
    d.start()
    try:
        ids = wait_until(lambda: (lambda s: s if s["Uid"][0] != "0" else
                                  None)(proc_ids(d.pid)), what="uid change")
        assert ids["Uid"] == [str(nobody.pw_uid)] * 4, ids["Uid"]
        assert ids["Gid"] == [str(nobody.pw_gid)] * 4, ids["Gid"]
        assert ids["Groups"] == [str(nobody.pw_gid)], ids["Groups"]
        # every thread, the spool's too
        for tid in os.listdir(f"/proc/{d.pid}/task"):
            t = proc_ids(f"{d.pid}/task/{tid}")
            assert t["Uid"][0] == str(nobody.pw_uid), (tid, t["Uid"])
        d.wait_log(r"dropped root user=nobody")
        spool = d.spool_dir
        assert os.stat(spool).st_uid == nobody.pw_uid
        assert os.stat(spool).st_mode & 0o077 == 0, oct(os.stat(spool).st_mode)
        for name in os.listdir(spool):
            st = os.stat(os.path.join(spool, name))
            assert st.st_uid == nobody.pw_uid, name
            assert st.st_mode & 0o007 == 0, (name, oct(st.st_mode))
        send_finished(d, "b@far.test", b"as nobody")
        got = wait_until(lambda: sink.messages(), what="message at the sink")
        assert b"as nobody" in got[0]
        # new files made after the drop (WAL, log) are not world-readable
        assert os.stat(d.log).st_mode & 0o007 == 0
    finally:
        d.stop()


def test_local_maildir_as_user(world_dir):
    """A Maildir node started as root: maildir_root, missing at start, is
    made for the user, and mail for a local user lands there in files and
    directories of the user, not readable by others."""
    nobody = pwd.getpwnam("nobody")
    root = os.path.join(world_dir, "d")
    d = Daemon(root, conf={
        "server": {"user": "nobody", "local_domains": "local.test"},
        "local": {"maildir_root": os.path.join(root, "mail"),
                  "recipient_check": "none"},
        "spool": {"dir": os.path.join(root, "spool")},
        "control": {"socket": os.path.join(root, "ctl.sock")},
        "log": {"file": os.path.join(root, "sluiced.log")}})
    d.start()
    try:
        d.wait_log(r"dropped root user=nobody")
        send_finished(d, "Alice@local.test", b"to a Maildir")
        mail = os.path.join(root, "mail")
        md = os.path.join(mail, "local.test", "alice", "Maildir")
        new = os.listdir(os.path.join(md, "new"))
        assert len(new) == 1, new
        f = os.path.join(md, "new", new[0])
        with open(f, "rb") as fp:
            assert b"to a Maildir" in fp.read()
        for path in (mail, md, f):
            st = os.stat(path)
            assert st.st_uid == nobody.pw_uid, path
            assert st.st_mode & 0o007 == 0, (path, oct(st.st_mode))
    finally:
        d.stop()


def test_missing_user_stops_start(tmp_path):
    conf = tmp_path / "s.ini"
    conf.write_text("[server]\nuser = no-such-sluice-user\n"
                    "listen = 127.0.0.1:0\n[spool]\ndir = spool\n"
                    "[http]\nlisten =\n")
    p = subprocess.run([str(SLUICED), "-c", str(conf)], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 1
    assert "[server] user no-such-sluice-user: no such user" in p.stderr
    assert not (tmp_path / "spool").exists()
