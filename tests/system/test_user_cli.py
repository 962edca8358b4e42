# SPDX-License-Identifier: MIT
"""
test_user_cli.py: `sluice user add|del|list` on a users file.

The password comes from standard input, or, on a terminal, from two
prompts without echo (a pty here); the file is rewritten atomically with a
yescrypt hash, mode 0600 (no other user can read it; as root with a
[server] user that exists, 0640 for its group); bad names, an unknown user
and differing passwords get an error and a non-zero exit, and leave the
file as it was.
"""
import os
import pty
import select
import subprocess
import warnings

with warnings.catch_warnings():
    # Debian 12's Python 3.11 has it; it checks the hashes libxcrypt made
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

from sinkutil import sluice_bin


def user(*args, input=None):
    return subprocess.run([sluice_bin(), "user", *args], input=input,
                          capture_output=True, text=True, timeout=60)


def entries(path):
    return dict(line.split(":", 1) for line in
                path.read_text().splitlines())


def test_add_list_del(tmp_path):
    f = tmp_path / "users"
    r = user("-f", str(f), "add", "bob", input="first pw\n")
    assert r.returncode == 0, r.stderr
    assert "user bob set in" in r.stdout and "sluice reload" in r.stdout
    h = entries(f)["bob"]
    assert h.startswith("$y$") and crypt.crypt("first pw", h) == h
    assert os.stat(f).st_mode & 0o777 in (0o600, 0o640)
    # replace the password, add another
    assert user("-f", str(f), "add", "bob", input="second\n").returncode == 0
    assert user("-f", str(f), "add", "amy@x.test", input="x\n").returncode == 0
    e = entries(f)
    assert crypt.crypt("second", e["bob"]) == e["bob"]
    assert user("-f", str(f), "list").stdout.split() == ["amy@x.test", "bob"]
    assert user("-f", str(f), "del", "amy@x.test").returncode == 0
    assert list(entries(f)) == ["bob"]
    before = f.read_text()
    for args, inp, want in (
            (("del", "nobody"), None, "no user nobody in"),
            (("add", "b:b"), "x\n", "is not a valid user name"),
            (("add", "carol"), "", "no password given"),
            (("add", "carol"), "\n", "empty password")):
        r = user("-f", str(f), *args, input=inp)
        assert r.returncode != 0 and want in r.stderr, (args, r.stderr)
    assert f.read_text() == before
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]
    r = user("add")
    assert r.returncode == 2 and "usage" in r.stderr


def run_on_pty(args, lines):
    """Run sluice user ARGS on a terminal, answering each prompt with the
    next line; returns (exit code, everything the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sluice_bin(), "user", *args], stdin=slave,
                         stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    shown = b""
    for line in lines:
        while not shown.rstrip().endswith(b":"):
            r, _, _ = select.select([master], [], [], 20)
            assert r, f"no prompt, terminal showed {shown!r}"
            shown += os.read(master, 1024)
        os.write(master, line.encode() + b"\n")
        shown += b"|"
    rc = p.wait(timeout=30)
    try:
        while select.select([master], [], [], 0.5)[0]:
            shown += os.read(master, 1024)
    except OSError:
        pass
    os.close(master)
    return rc, shown.decode(errors="replace")


def test_prompt_without_echo(tmp_path):
    f = tmp_path / "users"
    rc, shown = run_on_pty(["-f", str(f), "add", "bob"],
                           ["typed secret", "typed secret"])
    assert rc == 0, shown
    assert "Password:" in shown and "Again:" in shown
    assert "typed secret" not in shown          # no echo
    h = entries(f)["bob"]
    assert crypt.crypt("typed secret", h) == h
    rc, shown = run_on_pty(["-f", str(f), "add", "bob"], ["one", "two"])
    assert rc == 1 and "the passwords differ" in shown
    assert entries(f)["bob"] == h
