"""
The HTTP API under /api/v1/ (issue 11 item 4, docs/HTTP.md), driven with
curl: every route with the token, without it (401) and with a wrong one;
bad bodies get 400 with the reason; the answers are those of the control
socket (the same handlers); GET /api/v1/queue pages through 100 000
queued messages.
"""
import json
import os
import subprocess

import pytest

from ops_util import Receiver, ops_conf, run_sluice, send
from sluicetest import REPO, Daemon, free_port, wait_until

TOKEN = "s3cret-api-token-0123456789abcdef"
SENDER = "alice@src.sluice.test"


def curl(port, method, path, token=TOKEN, body=None, head=False):
    """(status, body text) of one request made with curl."""
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method,
           f"http://127.0.0.1:{port}{path}"]
    if head:
        cmd = ["curl", "-s", "-I", "-o", "-", "-w", "\n%{http_code}",
               f"http://127.0.0.1:{port}{path}"]
    if token is not None:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary",
                "@-"]
    r = subprocess.run(cmd, input=body.encode() if isinstance(body, str)
                       else body, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out, _, code = r.stdout.decode().rpartition("\n")
    return int(code), out


def jcurl(port, method, path, **kw):
    code, out = curl(port, method, path, **kw)
    return code, json.loads(out) if out.strip() else None


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A daemon with the API on, its mail deferred by a receiver."""
    root = tmp_path_factory.mktemp("api")
    rcv = Receiver()
    rcv.defer("*")
    tok = root / "token"
    tok.write_text(TOKEN + "\n")
    os.chmod(tok, 0o600)
    port = free_port()
    conf = ops_conf(rcv, root / "run" / "s.sock", retry="1h",
                    extra={"http": {"listen": f"127.0.0.1:{port}",
                                    "api_token_file": str(tok)}})
    d = Daemon(root / "d", conf=conf)
    d.start()
    d.http_port = port
    d.token_file = tok
    d.receiver = rcv
    yield d
    d.stop()
    rcv.close()


ROUTES = [("GET", "/api/v1/status"), ("GET", "/api/v1/queue"),
          ("GET", "/api/v1/queue/summary"),
          ("GET", "/api/v1/queue/0006610132BCD932"),
          ("POST", "/api/v1/queue/flush"), ("POST", "/api/v1/queue/hold"),
          ("POST", "/api/v1/queue/release"),
          ("POST", "/api/v1/queue/delete"),
          ("POST", "/api/v1/queue/bounce"), ("POST", "/api/v1/drain"),
          ("POST", "/api/v1/undrain")]


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_needs_the_token(api, method, path):
    body = '{"all": true}' if method == "POST" else None
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", ""):
        code, out = jcurl(api.http_port, method, path, token=token,
                          body=body)
        assert code == 401, (token, code, out)
        assert "bearer token" in out["error"]
    # curl -I shows the challenge (RFC 6750)
    if method == "GET":
        code, head = curl(api.http_port, "HEAD", path, token=None,
                          head=True)
        assert code == 401 and "WWW-Authenticate: Bearer" in head
    # nothing was done
    assert run_sluice("status", "--json", conf=api.conf_path).returncode == 0
    assert '"draining":false' in run_sluice(
        "status", "--json", conf=api.conf_path).stdout.replace(" ", "")


def test_status_is_the_control_sockets(api):
    code, st = jcurl(api.http_port, "GET", "/api/v1/status")
    assert code == 200
    sock = json.loads(run_sluice("status", "--json",
                                 conf=api.conf_path).stdout)
    assert st["pid"] == sock["pid"] and st["version"] == sock["version"]
    assert set(st) == set(sock)
    assert st["queue"]["messages"] == sock["queue"]["messages"]


def test_queue_routes(api):
    rcv = api.receiver
    mids = [send(api, SENDER, ["a@x.sluice.test"]),
            send(api, SENDER, ["b@y.sluice.test", "c@x.sluice.test"])]
    for mid in mids:
        wait_until(lambda: jcurl(api.http_port, "GET",
                                 f"/api/v1/queue/{mid}")[1]["recipients"][0]
                   ["state"] == "deferred", what="deferred")
    port = api.http_port
    # one message, and with its body
    code, m = jcurl(port, "GET", f"/api/v1/queue/{mids[1]}")
    assert code == 200 and m["mid"] == mids[1] and len(m["recipients"]) == 2
    assert "body" not in m
    code, m = jcurl(port, "GET", f"/api/v1/queue/{mids[1]}?body=1")
    assert code == 200 and m["body"].startswith("Received: ")
    assert "Subject: ops test" in m["body"]
    code, e = jcurl(port, "GET", "/api/v1/queue/00000000000000AA")
    assert code == 404 and "not in the queue" in e["error"]
    # the list is the control socket's, a page at a time
    code, page = jcurl(port, "GET", "/api/v1/queue?limit=1000")
    assert code == 200 and page["next_cursor"] is None
    assert [x["mid"] for x in page["messages"]] == [
        m["mid"] for m in json.loads(run_sluice(
            "queue", "list", "--json", conf=api.conf_path).stdout)]
    code, page = jcurl(port, "GET",
                       "/api/v1/queue?limit=10&domain=y.sluice.test")
    assert [x["mid"] for x in page["messages"]] == [mids[1]]
    code, page = jcurl(port, "GET", "/api/v1/queue?state=held")
    assert code == 200 and page["messages"] == []
    # summary equals the socket's (asked one after the other: a retry's
    # connection may open or close between the two, so until they agree)
    def same_summary():
        code, s = jcurl(port, "GET", "/api/v1/queue/summary")
        assert code == 200
        sock = json.loads(run_sluice("queue", "summary", "--json",
                                     conf=api.conf_path).stdout)
        return all(s[k] == sock[k] for k in ("destinations", "messages",
                                             "recipients", "oldest"))
    wait_until(same_summary, timeout=30, what="the socket's summary")
    # actions: hold, release, flush, bounce, delete
    code, r = jcurl(port, "POST", "/api/v1/queue/hold",
                    body=json.dumps({"mids": [mids[0]]}))
    assert (code, r) == (200, {"changed": 1})
    code, m = jcurl(port, "GET", f"/api/v1/queue/{mids[0]}")
    assert m["recipients"][0]["state"] == "held"
    code, r = jcurl(port, "POST", "/api/v1/queue/release",
                    body='{"domain": "x.sluice.test"}')
    assert (code, r) == (200, {"changed": 1})
    tried = {a: rcv.tries(a) for a in ("b@y.sluice.test", "c@x.sluice.test")}
    code, r = jcurl(port, "POST", "/api/v1/queue/flush", body='{"all":true}')
    assert code == 200 and r["changed"] >= 0
    code, r = jcurl(port, "POST", "/api/v1/queue/hold",
                    body=json.dumps({"mids": [mids[0], "00000000000000AA"]}))
    assert code == 404 and r["unknown"] == ["00000000000000AA"]
    # the flush's tries of mids[1] are over (else one could deliver it
    # once the receiver accepts)
    rc = ("b@y.sluice.test", "c@x.sluice.test")
    wait_until(lambda: all(rcv.tries(a) > tried[a] for a in rc) and all(
        x["state"] == "deferred" for x in jcurl(
            port, "GET", f"/api/v1/queue/{mids[1]}")[1]["recipients"]),
        timeout=30, what="the flush's tries over")
    rcv.accept_all()
    code, r = jcurl(port, "POST", "/api/v1/queue/bounce",
                    body=json.dumps({"mids": [mids[1]]}))
    assert (code, r) == (200, {"changed": 2})
    code, r = jcurl(port, "POST", "/api/v1/queue/delete",
                    body=json.dumps({"mids": [mids[0]]}))
    assert (code, r) == (200, {"deleted": 1})
    code, e = jcurl(port, "GET", f"/api/v1/queue/{mids[0]}")
    assert code == 404
    rcv.defer("*")


@pytest.mark.parametrize("body,why", [
    ("", "a JSON body is needed"),
    ("not json", "not JSON"),
    ('{"mids": ["A"], "mids": ["B"]}', "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ("{}", "give one of"),
    ('{"mids": [], "all": true}', "give one of"),
    ('{"mids": []}', "a list of MIDs"),
    ('{"mids": "0006610132BCD932"}', "a list of MIDs"),
    ('{"domain": ""}', "must be a name"),
    ('{"domain": 7}', "must be a name"),
    ('{"all": false}', "must be true"),
])
def test_bad_bodies_get_400_with_the_reason(api, body, why):
    for action in ("flush", "hold", "release", "delete", "bounce"):
        code, e = jcurl(api.http_port, "POST", f"/api/v1/queue/{action}",
                        body=body)
        assert code == 400, (action, body, e)
        assert why in e["error"], (action, e)


def test_bad_requests(api):
    port = api.http_port
    code, e = jcurl(port, "GET", "/api/v1/queue?limit=0")
    assert code == 400 and "limit" in e["error"]
    code, e = jcurl(port, "GET", "/api/v1/queue?limit=abc")
    assert code == 400
    code, e = jcurl(port, "GET", "/api/v1/queue?cursor=nonsense")
    assert code == 400 and "cursor" in e["error"]
    code, e = jcurl(port, "GET", "/api/v1/queue?state=weird")
    assert code == 400 and "state" in e["error"]
    code, e = jcurl(port, "GET", "/api/v1/queue?cursor="
                    "0123456789ABCDEF.00000000000000AA")
    assert code == 410 and "start again" in e["error"]
    code, e = jcurl(port, "POST", "/api/v1/status")
    assert code == 405
    code, e = jcurl(port, "GET", "/api/v1/queue/flush")
    assert code == 404
    code, e = jcurl(port, "GET", "/api/v1/nothing")
    assert code == 404
    code, e = curl(port, "POST", "/api/v1/queue/flush",
                   body='{"mids": [' + '"0006610132BCD932",' * 70000
                   + '"0006610132BCD932"]}')
    assert code == 413
    code, e = jcurl(port, "POST", "/api/v1/drain", body="{}")
    assert code == 413 and "no body" in e["error"]


def test_drain_and_undrain_over_http(api):
    port = api.http_port
    code, r = jcurl(port, "POST", "/api/v1/drain")
    assert code == 200 and r["draining"] is True
    assert curl(port, "GET", "/healthz", token=None)[0] == 503
    code, r = jcurl(port, "POST", "/api/v1/undrain")
    assert code == 200 and r["draining"] is False
    assert curl(port, "GET", "/healthz", token=None)[0] == 200


def test_metrics_and_healthz_need_no_token(api):
    assert curl(api.http_port, "GET", "/metrics", token=None)[0] == 200
    assert curl(api.http_port, "GET", "/healthz", token=None)[0] == 200


def test_token_rotation_on_reload(api):
    new = "rotated-token-9876543210"
    api.token_file.write_text(new + "\n")
    try:
        assert run_sluice("reload", conf=api.conf_path).returncode == 0
        assert curl(api.http_port, "GET", "/api/v1/status")[0] == 401
        assert curl(api.http_port, "GET", "/api/v1/status",
                    token=new)[0] == 200
        # a token file that cannot be read: the reload is refused and the
        # token in use stays
        api.token_file.write_text("\n")
        r = run_sluice("reload", conf=api.conf_path)
        assert r.returncode == 1 and "api_token_file" in r.stderr
        assert curl(api.http_port, "GET", "/api/v1/status",
                    token=new)[0] == 200
    finally:
        api.token_file.write_text(TOKEN + "\n")
        assert run_sluice("reload", conf=api.conf_path).returncode == 0
    assert curl(api.http_port, "GET", "/api/v1/status")[0] == 200


def test_no_token_file_no_api(make_sluiced):
    port = free_port()
    make_sluiced(conf={"http": {"listen": f"127.0.0.1:{port}"}})
    for method, path in ROUTES:
        code, e = jcurl(port, method, path, token=TOKEN,
                        body='{"all":true}' if method == "POST" else None)
        assert code == 403, (path, code)
        assert "api_token_file" in e["error"]
    assert curl(port, "GET", "/metrics", token=None)[0] == 200
    assert curl(port, "GET", "/healthz", token=None)[0] == 200


def test_token_file_missing_stops_sluiced(make_sluiced, tmp_path):
    d = make_sluiced(conf={"http": {"listen": f"127.0.0.1:{free_port()}",
                                    "api_token_file":
                                    str(tmp_path / "nope")}}, start=False)
    with pytest.raises(AssertionError, match="api_token_file"):
        d.start()


N = 100000


@pytest.mark.slow
def test_paging_through_100000_messages(make_sluiced, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    os.chmod(tok, 0o600)
    port = free_port()
    d = make_sluiced(conf={"http": {"listen": f"127.0.0.1:{port}",
                                    "api_token_file": str(tok)},
                           "control": {"socket": str(tmp_path / "s.sock")}})
    d.stop()
    out = subprocess.run(["/usr/bin/python3", str(REPO / "bench" /
                          "gen_spool.py"), "--dir", str(d.spool_dir),
                          "--recipients", str(N), "--destinations", "100"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d.start()
    d.wait_log(rf"spool recovered .*messages={N}", timeout=120)
    mids, cursor, pages = [], None, 0
    while True:
        q = "/api/v1/queue?limit=1000" + (f"&cursor={cursor}" if cursor
                                          else "")
        code, page = jcurl(port, "GET", q)
        assert code == 200, page
        pages += 1
        mids += [m["mid"] for m in page["messages"]]
        assert page["count"] == len(page["messages"])
        if pages == 50:
            # a page asked again gives the same messages
            code, again = jcurl(port, "GET", q)
            assert [m["mid"] for m in again["messages"]] == \
                [m["mid"] for m in page["messages"]]
            # messages leave meanwhile, among them the cursor's own
            nxt = page["next_cursor"].split(".")[1]
            gone = [nxt] + [m["mid"] for m in page["messages"][:5]]
            r = run_sluice("queue", "delete", *gone, conf=d.conf_path)
            assert r.returncode == 0, r.stderr
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 200
    assert pages == 100
    assert len(mids) == N - 1 and len(set(mids)) == N - 1
    assert mids == sorted(mids)
