# SPDX-License-Identifier: MIT
"""test_install.py: `make install` into a DESTDIR puts the daemon, the
command line and the sendmail/mailq names where applications look."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = os.environ.get("SLUICE_BUILD", "build")


def test_make_install_destdir(tmp_path):
    dest = tmp_path / "root"
    r = subprocess.run(["make", "-s", "install", f"BUILD={BUILD}",
                        f"DESTDIR={dest}", "PREFIX=/usr/local"],
                       cwd=ROOT, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    pre = dest / "usr/local"
    assert os.access(pre / "sbin/sluiced", os.X_OK)
    assert os.access(pre / "bin/sluice", os.X_OK)
    # sendmail and mailq are the one program under other names
    assert (pre / "sbin/sendmail").resolve() == (pre / "bin/sluice").resolve()
    assert (pre / "bin/mailq").resolve() == (pre / "bin/sluice").resolve()
    assert (pre / "share/doc/sluice/CONFIG.md").is_file()
    # invoked as sendmail with no recipient it says so and exits 64
    r = subprocess.run([str(pre / "sbin/sendmail")], input=b"Subject: x\n\nhi\n",
                       capture_output=True, timeout=30)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert b"recipient" in r.stderr.lower()
    # nothing was written outside DESTDIR's prefix
    assert sorted(p.name for p in dest.iterdir()) == ["usr"]
