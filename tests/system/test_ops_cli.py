"""
The command line around the control socket: `sluice -c FILE COMMAND ...`
(issue 9 item 23) works as `sluice COMMAND -c FILE ...` does, as `git -C`.
"""
import json

import pytest

from ops_util import ops_conf, run_sluice, send


@pytest.fixture
def daemon(make_sluiced, receiver, tmp_path):
    d = make_sluiced(conf=ops_conf(receiver, tmp_path / "run" / "s.sock"))
    return d


def test_config_before_the_command(daemon, receiver):
    receiver.defer("*")
    mid = send(daemon, "a@src.sluice.test", ["b@dst.sluice.test"])
    conf = str(daemon.conf_path)
    for pre in (["-c", conf], ["--config", conf], [f"--config={conf}"],
                [f"-c{conf}"]):
        r = run_sluice(*pre, "queue", "list", "--json")
        assert r.returncode == 0, (pre, r.stderr)
        assert [m["mid"] for m in json.loads(r.stdout)] == [mid]
    r = run_sluice("-c", conf, "status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["queue"]["messages"] == 1
    r = run_sluice("-c", conf, "queue", "show", mid, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["mid"] == mid
    # the same file on both sides is fine
    r = run_sluice("-c", conf, "queue", "summary", "-c", conf)
    assert r.returncode == 0, r.stderr
    # mailq through sendmail -bp picks it up too
    r = run_sluice("-c", conf, "sendmail", "-bp")
    assert r.returncode == 0 and mid in r.stdout, r.stderr


def test_config_before_the_command_errors(daemon, tmp_path):
    conf = str(daemon.conf_path)
    other = tmp_path / "other.ini"
    other.write_text("[server]\n")
    r = run_sluice("-c", conf, "queue", "list", "-c", str(other))
    assert r.returncode == 2
    assert "two configuration files" in r.stderr
    r = run_sluice("-c", conf, "sink", "--discard")
    assert r.returncode == 2 and "talk to sluiced" in r.stderr
    r = run_sluice("-c")
    assert r.returncode == 2 and "needs a file" in r.stderr
    r = run_sluice("-c", str(tmp_path / "missing.ini"), "status")
    assert r.returncode == 2 and "missing.ini" in r.stderr


def test_usage_says_so():
    r = run_sluice("--help")
    assert r.returncode == 0
    assert "usage: sluice [-c FILE] COMMAND" in r.stdout
    assert "sluice -c FILE queue list" in r.stdout
