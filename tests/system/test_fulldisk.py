"""
Full disk: the spool on a 3 MB tmpfs. When it fills, DATA gets 451 4.3.0,
the daemon lives on, and what it accepted before is intact; with room again
(remount bigger) the same session is answered 250. Needs root (mount): if
mount fails the test fails.
"""
import subprocess

import pytest

from sluicetest import Raw, mid_of


def sh(*argv):
    p = subprocess.run(list(argv), capture_output=True, timeout=30)
    assert p.returncode == 0, f"{argv}: {p.stderr.decode()}"


@pytest.mark.slow
def test_full_disk(make_sluiced, tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt))
    d = None
    try:
        d = make_sluiced(conf={"spool": {"dir": str(mnt / "spool")}})
        accepted = {}
        replies = []
        with Raw(d.port, timeout=60) as c:
            c.ehlo()
            for i in range(60):
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

            sh("mount", "-o", "remount,size=20m", str(mnt))
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
