# SPDX-License-Identifier: MIT
"""
test_cluster_view.py: `sluice cluster status|queue summary|queue list`
over three real sluiced nodes on loopback, each with mail queued for its
own mix of domains (delivery waits on a DNS server that never answers).
The cluster summary equals the sum of the nodes' own summaries, per
destination and in total; the listing holds every node's messages, each
with its node; a node that is down, or refuses the token, is named, and
the exit code is 1.
"""
import json
import smtplib
import subprocess

import pytest

from sinkutil import run_sluice
from sluicetest import free_port, wait_until

TOKEN = "cluster-test-token-0123456789"


@pytest.fixture
def nodes(make_sluiced, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    out = {}
    mix = {"n1": {"a.test": 3, "b.test": 1}, "n2": {"a.test": 2},
           "n3": {"c.test": 4, "b.test": 2}}
    for name, doms in mix.items():
        d = make_sluiced(name=name, conf={"http": {
            "listen": f"127.0.0.1:{free_port()}",
            "api_token_file": str(token)}})
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            for dom, n in doms.items():
                for i in range(n):
                    s.sendmail(f"s@{name}.test", [f"u{i}@{dom}",
                                                  f"v{i}@{dom}"],
                               f"Subject: {name} {dom} {i}\r\n\r\nx\r\n")
        out[name] = d
    return out, token


def cluster_conf(tmp_path, nodes, token, extra=""):
    f = tmp_path / "cluster.ini"
    f.write_text("[cluster]\nnodes = " + ", ".join(
        f"{n}=http://{d.conf['http']['listen']}" for n, d in nodes.items())
        + extra + f"\ntoken_file = {token}\ntimeout = 5s\n")
    return str(f)


def own_summary(d):
    r = subprocess.run([str(__import__("sinkutil").sluice_bin()), "queue",
                        "summary", "--json", "-c", str(d.conf_path)],
                       cwd=d.root, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cluster_summary_is_the_sum(nodes, tmp_path):
    ns, token = nodes
    conf = cluster_conf(tmp_path, ns, token)
    r = run_sluice("cluster", "queue", "summary", "--json", "-c", conf)
    assert r.returncode == 0, r.stderr
    merged = json.loads(r.stdout)
    own = {n: own_summary(d) for n, d in ns.items()}
    assert merged["unreachable"] == []
    for key in ("messages", "recipients"):
        assert merged[key] == sum(s[key] for s in own.values()), key
    assert merged["messages"] == 12 and merged["recipients"] == 24
    want = {}
    for s in own.values():
        for dest in s["destinations"]:
            w = want.setdefault(dest["destination"], [0, 0])
            w[0] += dest["messages"]
            w[1] += dest["recipients"]
    got = {d["destination"]: [d["messages"], d["recipients"]]
           for d in merged["destinations"]}
    assert got == want, (got, want)
    assert got["a.test"] == [5, 10]
    per = {n["name"]: n["summary"] for n in merged["nodes"]}
    assert per["n3"] == {"messages": 6, "recipients": 12}
    # the table says the same
    r = run_sluice("cluster", "queue", "summary", "-c", conf)
    assert r.returncode == 0
    assert "total: 12 message(s), 24 recipient(s)" in r.stdout
    assert "n2         2 message(s)" in r.stdout


def test_cluster_names_a_node_that_is_down(nodes, tmp_path):
    ns, token = nodes
    ns["n2"].stop()
    conf = cluster_conf(tmp_path, ns, token)
    r = run_sluice("cluster", "queue", "summary", "--json", "-c", conf)
    assert r.returncode == 1
    merged = json.loads(r.stdout)
    assert merged["unreachable"] == ["n2"]
    assert merged["messages"] == 10     # n1 and n3
    assert "node n2 (http://" in r.stderr and "did not answer" in r.stderr
    for cmd in (["status"], ["queue", "list"], ["queue", "summary"]):
        r = run_sluice("cluster", *cmd, "-c", conf)
        assert r.returncode == 1, cmd
        assert "n2" in r.stdout and "DOWN" in r.stdout, (cmd, r.stdout)


def test_cluster_status_and_list(nodes, tmp_path):
    ns, token = nodes
    conf = cluster_conf(tmp_path, ns, token)
    r = run_sluice("cluster", "status", "--json", "-c", conf)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert [n["name"] for n in st["nodes"]] == ["n1", "n2", "n3"]
    assert st["total"]["messages"] == 12
    assert all(n["status"]["queue"]["messages"] > 0 for n in st["nodes"])
    r = run_sluice("cluster", "queue", "list", "--json", "-c", conf)
    assert r.returncode == 0, r.stderr
    lst = json.loads(r.stdout)
    assert lst["count"] == 12 and len(lst["messages"]) == 12
    by_node = {}
    for m in lst["messages"]:
        by_node[m["node"]] = by_node.get(m["node"], 0) + 1
        assert m["sender"] == f"s@{m['node']}.test"
    assert by_node == {"n1": 4, "n2": 2, "n3": 6}
    r = run_sluice("cluster", "queue", "list", "--domain", "c.test", "-c",
                   conf)
    assert r.returncode == 0
    assert r.stdout.count("s@n3.test") == 4 and "s@n1.test" not in r.stdout


def test_cluster_wrong_token_is_named(nodes, tmp_path):
    ns, token = nodes
    bad = tmp_path / "bad"
    bad.write_text("not-the-token\n")
    conf = cluster_conf(tmp_path, ns, bad)
    r = run_sluice("cluster", "status", "-c", conf)
    assert r.returncode == 1
    assert "HTTP 401" in r.stdout and "HTTP 401" in r.stderr
    assert r.stdout.count("DOWN") == 3
