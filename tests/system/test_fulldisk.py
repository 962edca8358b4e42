"""
Full disk: the spool on a small ext4 file system (a loop-mounted image, so
that fsync goes to a block device as on a real disk; tmpfs would make it
free), filled up to a few MB by a ballast file. When it fills, DATA gets
451 4.3.0, the daemon lives on, and what it accepted before is intact;
with room again (the ballast removed) the same session is answered 250.
Needs root (mkfs, mount -o loop): if that fails the test fails.
"""
import os
import subprocess

import pytest

from sluicetest import Raw, mid_of

IMAGE_MB = 24
ROOM_MB = 3


def sh(*argv):
    p = subprocess.run([str(a) for a in argv], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, f"{argv}: {p.stderr.decode()}"


def ext4_mount(tmp_path):
    """A fresh ext4 file system on a loop device, mounted; its path."""
    img, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    with open(img, "wb") as f:
        f.truncate(IMAGE_MB << 20)
    # -m 0: no blocks reserved for root (sluiced runs as root here)
    sh("mkfs.ext4", "-q", "-F", "-m", "0", img)
    mnt.mkdir()
    sh("mount", "-o", "loop", img, mnt)
    return mnt


def fill(mnt, room):
    """A ballast file that leaves about room bytes free on mnt."""
    st = os.statvfs(mnt)
    ballast = mnt / "ballast"
    n = st.f_bfree * st.f_frsize - room
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, n)
        os.fsync(fd)
    finally:
        os.close(fd)
    return ballast


@pytest.mark.slow
@pytest.mark.serial     # a loop device: a machine-wide resource
def test_full_disk(make_sluiced, tmp_path):
    mnt = ext4_mount(tmp_path)
    d = None
    try:
        d = make_sluiced(conf={"spool": {"dir": str(mnt / "spool")}})
        ballast = fill(mnt, ROOM_MB << 20)
        accepted = {}
        replies = []
        with Raw(d.port, timeout=60) as c:
            c.ehlo()
            for i in range(200):
                msg = (b"Subject: fill %d\r\n\r\n" % i
                       + (b"%05d" % i + b"x" * 993 + b"\r\n") * 200)
                r = c.send_message("a@client.sluice.test", ["b@local.test"],
                                   msg)
                replies.append(r)
                if r.startswith("250"):
                    accepted[mid_of(r)] = msg
                    continue
                assert r.startswith("4"), r
                break
            assert replies[-1].startswith("451 4.3.0"), replies[-5:]
            assert len(accepted) >= 3, replies
            assert d.running()
            d.wait_log(r"not queued reason=\"?spool full")
            # another try while full: 451 again, the session lives on
            r = c.send_message("a@client.sluice.test", ["b@local.test"],
                               b"Subject: still full\r\n\r\n" + b"y" * 500000
                               + b"\r\n")
            assert r.startswith("451 4.3.0"), r
            c.expect_ok("NOOP")
            for mid, msg in accepted.items():
                assert d.spool.message(mid) == msg, f"MID {mid:016X} damaged"

            ballast.unlink()
            msg = b"Subject: room again\r\n\r\nhello\r\n"
            r = c.send_message("a@client.sluice.test", ["b@local.test"], msg)
            assert r.startswith("250 2.0.0 Ok: queued as"), r
            accepted[mid_of(r)] = msg
            c.cmd("QUIT")
        d.restart()
        d.wait_log(rf"spool recovered dir=\S+ messages={len(accepted)}\b")
        assert sorted(d.spool.mids()) == sorted(accepted)
        for mid, msg in accepted.items():
            assert d.spool.message(mid) == msg
        assert d.spool.bodies_containing(b"still full") == []
    finally:
        if d is not None:
            d.stop()
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)
        if subprocess.run(["mountpoint", "-q", str(mnt)]).returncode == 0:
            subprocess.run(["umount", "-l", str(mnt)], timeout=30)
