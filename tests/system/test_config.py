"""
The configuration as sluiced reads it: errors name FILE:LINE and exit non-zero,
-n checks, --print-config shows the effective settings.
"""
import subprocess

import pytest

from sluicetest import SLUICED

GOOD = """\
# a comment
[server]
listen = 127.0.0.1:2599
hostname = mx.sluice.test
max_message_size = 10M
command_timeout = 90s
data_timeout = 2m
local_domains = a.test, b.test
local_domains = c.test

[spool]
dir = spool

[log]
level = debug
"""


def sluiced(args, cwd, timeout=20):
    # CI runs as root, where a missing [server] user stops the start
    if "-c" in args and "--print-config" not in args:
        args = args + ["-o", "server.user="]
    p = subprocess.run([str(SLUICED)] + args, cwd=cwd, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_check_good_file(tmp_path):
    f = tmp_path / "good.ini"
    f.write_text(GOOD)
    rc, out, err = sluiced(["-n", "-c", str(f)], tmp_path)
    assert rc == 0, err
    assert "valid" in out
    assert not (tmp_path / "spool").exists(), "-n must not open the spool"


def test_print_config_of_file(tmp_path):
    f = tmp_path / "good.ini"
    f.write_text(GOOD)
    rc, out, err = sluiced(["--print-config", "-c", str(f)], tmp_path)
    assert rc == 0, err
    lines = out.splitlines()
    assert "listen = 127.0.0.1:2599" in lines
    assert "max_message_size = 10M" in lines
    assert "local_domains = a.test, b.test, c.test" in lines
    assert "level = debug" in lines
    assert "max_recipients = 1000" in lines          # a default


def test_print_config_round_trip(tmp_path):
    """What --print-config prints is a configuration sluiced accepts."""
    f = tmp_path / "good.ini"
    f.write_text(GOOD)
    rc, out, _ = sluiced(["--print-config", "-c", str(f)], tmp_path)
    assert rc == 0
    g = tmp_path / "printed.ini"
    g.write_text(out)
    rc, out2, err = sluiced(["--print-config", "-c", str(g)], tmp_path)
    assert rc == 0, err
    assert out2 == out


def test_print_config_defaults(tmp_path):
    """No -c: the built-in defaults (run in an empty cwd)."""
    rc, out, err = sluiced(["--print-config"], tmp_path)
    assert rc == 0, err
    lines = out.splitlines()
    for want in ("[server]", "listen = 127.0.0.1:2525",
                 "max_message_size = 50M", "max_recipients = 1000",
                 "trusted_networks = 127.0.0.0/8, ::1/128",
                 "max_line_length = 4K", "[spool]", "dir = var/spool",
                 "[log]", "file = -", "format = text", "level = info"):
        assert want in lines, f"{want!r} not in:\n{out}"
    assert list(tmp_path.iterdir()) == [], "--print-config wrote files"


def test_check_defaults(tmp_path):
    rc, out, err = sluiced(["-n"], tmp_path)
    assert rc == 0, err


BAD = [
    # (name, file text, line of the error, words in the message)
    ("unknown-key", "[server]\nhostname = x\nno_such_key = 1\n", 3,
     "no_such_key"),
    ("unknown-section", "[server]\nhostname = x\n\n[nosuch]\nkey = 1\n", 4,
     "unknown section [nosuch]"),
    ("below-minimum", "[server]\nmax_recipients = 0\n", 2,
     "is below the minimum"),
    ("above-maximum", "[server]\nmax_errors = 1001\n", 2, "max_errors"),
    ("not-a-number", "[server]\nmax_recipients = many\n", 2,
     "max_recipients"),
    ("bad-duration-suffix", "[server]\ncommand_timeout = 5x\n", 2,
     "command_timeout"),
    ("bad-size-suffix", "[server]\nmax_message_size = 10Q\n", 2,
     "max_message_size"),
    ("size-below-minimum", "[server]\n\nmax_message_size = 1000\n", 3,
     "max_message_size"),
    ("bad-bool-like-listen", "[server]\nlisten = not-an-address\n", 2,
     "listen"),
    ("bad-network", "[server]\ntrusted_networks = 10.0.0.0/99\n", 2,
     "trusted_networks"),
    ("key-outside-section", "hostname = x\n", 1, "section"),
    ("syntax", "[server]\nthis line has no equals sign\n", 2, ""),
    ("empty-hostname", "[server]\nhostname =\n", None, "hostname"),
    ("bad-log-format", "[log]\nformat = xml\n", 2, "format"),
    ("bad-log-level", "[log]\nlevel = loud\n", 2, "level"),
]


@pytest.mark.parametrize("name,text,line,words", BAD,
                         ids=[b[0] for b in BAD])
def test_bad_config(tmp_path, name, text, line, words):
    f = tmp_path / f"{name}.ini"
    f.write_text(text)
    for args in (["-n", "-c", str(f)], ["-c", str(f)]):
        rc, out, err = sluiced(args, tmp_path)
        assert rc != 0, f"{args} accepted {text!r}: {out}"
        if line is not None:
            assert f"{f}:{line}:" in err, err
        else:
            assert str(f) in err, err
        assert words in err, err
        assert "\n" == err[-1:] and err.count("\n") <= 3, err
    assert not (tmp_path / "var").exists()


def test_missing_config_file(tmp_path):
    rc, out, err = sluiced(["-n", "-c", str(tmp_path / "nope.ini")], tmp_path)
    assert rc != 0
    assert "nope.ini" in err


def test_bad_flags(tmp_path):
    rc, _, err = sluiced(["--log-format", "xml", "-n"], tmp_path)
    assert rc != 0 and "xml" in err
    rc, _, err = sluiced(["--no-such-flag"], tmp_path)
    assert rc != 0
    rc, _, err = sluiced(["extra-arg"], tmp_path)
    assert rc != 0 and "extra-arg" in err
    rc, out, _ = sluiced(["-V"], tmp_path)
    assert rc == 0 and out.startswith("sluiced ")


def test_listen_failure_exits_nonzero(tmp_path):
    """A port already taken: sluiced says so and exits non-zero."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        f = tmp_path / "c.ini"
        f.write_text(f"[server]\nlisten = 127.0.0.1:{port}\n"
                     f"[spool]\ndir = {tmp_path}/spool\n")
        rc, out, err = sluiced(["-c", str(f)], tmp_path)
    assert rc != 0
    assert f"127.0.0.1:{port}" in err


def test_spool_dir_unusable_exits_nonzero(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    f = tmp_path / "c.ini"
    f.write_text(f"[server]\nlisten = 127.0.0.1:0\n"
                 f"[spool]\ndir = {blocker}/spool\n")
    rc, out, err = sluiced(["-c", str(f)], tmp_path)
    assert rc != 0
    assert "spool" in err
