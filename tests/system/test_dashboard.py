# SPDX-License-Identifier: MIT
"""test_dashboard.py: the queue dashboard sluiced serves at / on [http]
listen, and the API routes behind it. With deferred mail to three
destinations (their MX hosts down, found through the test's dnsmasq):
the routes' counts, sorting, filtering and paging; the token for reading
(unless [http] dashboard_public) and always for actions; refusals of
cross-origin actions and of DNS-rebound reads. In headless Chromium: the
page shows the right counts, filtering narrows the table, a flush from the
page delivers the mail and the page follows without a reload, a subject
holding <script> is text, and no page of another origin can make the
browser act on the queue. Each page leaves a screenshot, checked not
blank."""
import http.server
import json
import signal
import smtplib
import threading
import time
import urllib.error
import urllib.request

import pytest

from delivery_util import net  # noqa: F401 (fixture)
from sluicetest import daemon_sections, free_port, wait_until

TOKEN = "dashboard-test-token-0123456789"
EVIL_SUBJECT = "Hi <script>window.__pwned=1</script><img src=x onerror=alert(1)>"
# messages per destination: different counts, to check sorting and sums
PLAN = {"a.test": 1, "b.test": 2, "c.test": 3}
ADDRS = {"a.test": "127.0.0.11", "b.test": "127.0.0.12", "c.test": "127.0.0.13"}


@pytest.fixture
def mta(net, make_sluiced, tmp_path):  # noqa: F811
    """sluiced with the API on, and deferred mail to a, b and c.test (MX
    hosts that refuse connections until the test starts receivers)."""
    for dom, addr in ADDRS.items():
        net.dns.mx(dom, "mx." + dom, 10)
        net.dns.host("mx." + dom, addr)
    net.dns.start()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    conf = net.conf(retry_initial="1h", retry_max="1h")
    conf["http"] = {"listen": "127.0.0.1:%d" % free_port(),
                    "api_token_file": str(token)}
    d = make_sluiced(conf=conf)
    d.http_port = int(conf["http"]["listen"].rsplit(":", 1)[1])
    n = 0
    for dom, count in PLAN.items():
        for _ in range(count):
            c = smtplib.SMTP("127.0.0.1", d.port, timeout=30)
            c.sendmail("app@back.test", ["user%d@%s" % (n, dom)],
                       "From: app@back.test\r\nSubject: %s\r\n\r\nbody %d\r\n"
                       % (EVIL_SUBJECT, n))
            c.quit()
            n += 1
    # every destination has tried once and holds its mail back
    wait_until(lambda: len([r for r in api(d, "/api/v1/destinations")[
        "destinations"] if r["last_reply"]]) == 3, timeout=30,
        what="a refusal at each destination")
    return d


def req(d, path, method="GET", token=TOKEN, body=None, headers=None):
    """(status, headers, parsed JSON or bytes) of one request."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    r = urllib.request.Request("http://127.0.0.1:%d%s" % (d.http_port, path),
                               data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=20) as resp:
            code, hdrs, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        code, hdrs, raw = e.code, e.headers, e.read()
    try:
        return code, hdrs, json.loads(raw)
    except ValueError:
        return code, hdrs, raw


def api(d, path, **kw):
    code, _, body = req(d, path, **kw)
    assert code == 200, (path, code, body)
    return body


def test_routes(mta):
    d = mta
    s = api(d, "/api/v1/dashboard")
    assert s["queue"] == {"messages": 6, "recipients": 6, "destinations": 3}
    assert s["totals"]["received"] == 6
    assert 3 <= s["totals"]["deferred"] <= 6     # a try at each destination
    assert len(s["rates"]["received"]) == 60
    r = api(d, "/api/v1/destinations")
    assert (r["count"], r["total"]) == (3, 3)
    # busiest first by default
    assert [(x["name"], x["queued"]) for x in r["destinations"]] == \
        [("c.test", 3), ("b.test", 2), ("a.test", 1)]
    for x in r["destinations"]:
        assert x["state"] == "suspended" and x["paused_until"] > r["now"]
        assert "Connection refused" in x["last_reply"]
        assert 0 <= r["now"] - x["oldest"] < 120
    names = lambda q: [x["name"] for x in api(
        d, "/api/v1/destinations?" + q)["destinations"]]
    assert names("sort=name") == ["a.test", "b.test", "c.test"]
    assert names("sort=queued&order=asc") == ["a.test", "b.test", "c.test"]
    assert names("q=B.TE") == ["b.test"]
    assert names("q=nothing") == []
    assert names("state=suspended&sort=name&limit=1&offset=1") == ["b.test"]
    assert names("state=active") == []
    assert api(d, "/api/v1/destinations?q=test&limit=1")["count"] == 3
    for bad in ("sort=size", "order=up", "limit=0", "limit=501", "offset=-1",
                "state=sleepy", "limit=x"):
        assert req(d, "/api/v1/destinations?" + bad)[0] == 400, bad

    # one destination: its replies and its messages, a page at a time
    one = api(d, "/api/v1/destinations/c.test")
    assert one["destination"]["queued"] == 3
    assert one["destination"]["replies"][0]["count"] >= 1
    assert "messages" not in one
    p1 = api(d, "/api/v1/destinations/c.test?messages=2")
    assert len(p1["messages"]) == 2 and p1["next_after"]
    p2 = api(d, "/api/v1/destinations/c.test?messages=2&after=" +
             p1["next_after"])
    assert len(p2["messages"]) == 1 and p2["next_after"] is None
    mids = [m["mid"] for m in p1["messages"] + p2["messages"]]
    assert mids == sorted(mids) and len(set(mids)) == 3
    assert all(m["recipients"][0]["address"].endswith("@c.test")
               for m in p1["messages"] + p2["messages"])
    assert req(d, "/api/v1/destinations/nowhere.test")[0] == 404
    assert req(d, "/api/v1/destinations/c.test?after=nope&messages=1")[0] \
        == 400

    # a message with its header fields
    m = api(d, "/api/v1/queue/%s?headers=1" % mids[0])
    assert ["Subject", EVIL_SUBJECT] in m["headers"]
    assert m["headers"][0][0] == "Received"

    # the page needs no token, and keeps to itself
    code, h, body = req(d, "/", token=None)
    assert code == 200 and b'src="dashboard.js"' in body
    assert "script-src 'self'" in h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY"
    for path in ("/dashboard.js", "/dashboard.css", "/base.js", "/base.css"):
        assert req(d, path, token=None)[0] == 200, path


def test_token_and_origins(mta):
    d = mta
    # reading and acting both need the token
    for path in ("/api/v1/dashboard", "/api/v1/destinations",
                 "/api/v1/destinations/a.test", "/api/v1/queue/summary"):
        assert req(d, path, token=None)[0] == 401, path
        assert req(d, path, token="wrong")[0] == 401, path
    all_ = {"all": True}
    assert req(d, "/api/v1/queue/delete", "POST", token=None, body=all_)[0] \
        == 401
    # with the token, but sent by a page of another origin
    for hdrs in ({"Origin": "http://evil.test"}, {"Origin": "null"},
                 {"Origin": "http://127.0.0.1:%d" % (d.http_port + 1)},
                 {"Sec-Fetch-Site": "cross-site"},
                 {"Sec-Fetch-Site": "same-site"}):
        assert req(d, "/api/v1/queue/delete", "POST", body=all_,
                   headers=hdrs)[0] == 403, hdrs
    assert api(d, "/api/v1/dashboard")["queue"]["messages"] == 6
    same = {"Origin": "http://127.0.0.1:%d" % d.http_port,
            "Sec-Fetch-Site": "same-origin"}
    assert api(d, "/api/v1/queue/hold", method="POST", body={"domain":
               "a.test"}, headers=same)["changed"] == 1

    # dashboard_public: reads without the token (for a trusted network),
    # not from a foreign name; actions still need it
    d.conf["http"]["dashboard_public"] = "yes"
    d.write_conf()
    d.signal(signal.SIGHUP)
    d.wait_log("configuration reloaded")
    assert api(d, "/api/v1/dashboard", token=None)["queue"]["messages"] == 6
    assert req(d, "/api/v1/destinations", token=None,
               headers={"Host": "localhost:%d" % d.http_port})[0] == 200
    assert req(d, "/api/v1/destinations", token=None,
               headers={"Host": "evil.test:%d" % d.http_port})[0] == 403
    assert req(d, "/api/v1/destinations",
               headers={"Host": "evil.test:%d" % d.http_port})[0] == 200
    assert req(d, "/api/v1/queue/flush", "POST", token=None, body=all_)[0] \
        == 401
    if "archive" in daemon_sections():      # not what the dashboard reads
        assert req(d, "/api/v1/archive", token=None)[0] == 401
    assert api(d, "/api/v1/dashboard", token=None)["queue"]["messages"] == 6


def tile(b, label):
    """The number on the overview's tile with this label (read at once)."""
    v = b.js("const t = Array.from(document.querySelectorAll('#tiles .tile'))"
             ".find(t => t.querySelector('.l').innerText === arguments[0]);"
             "return t ? t.querySelector('.v').innerText : null", label)
    return int(v) if v is not None else None


def rows(b):
    return b.cells("#dests")


def test_dashboard_in_chromium(mta, net, browser, tmp_path):  # noqa: F811
    d, b = mta, browser
    base = "http://127.0.0.1:%d/" % d.http_port
    b.get(base)
    # no token yet: the page asks for it
    b.wait(lambda: b.one("#token-form").is_displayed(), what="the token form")
    b.shot(tmp_path / "token.png")
    b.one("#token").send_keys(TOKEN)
    b.one("#token-form button[type=submit]").click()
    b.wait(lambda: tile(b, "messages queued") == 6, what="6 queued")
    assert tile(b, "recipients queued") == 6
    assert tile(b, "destinations") == 3
    b.wait(lambda: len(rows(b)) == 3, what="3 destinations")
    assert [(r[0], r[1]) for r in rows(b)] == \
        [("c.test", "3"), ("b.test", "2"), ("a.test", "1")]
    assert all("suspended" in r[4] for r in rows(b))
    assert all("Connection refused" in r[5] for r in rows(b))
    b.shot(tmp_path / "overview.png")

    # sort by name, by clicking its column header
    b.one("#dests thead th[data-sort=name] button").click()
    b.wait(lambda: [r[0] for r in rows(b)] ==
           ["a.test", "b.test", "c.test"], what="sorted by name")
    assert b.one("#dests thead th[data-sort=name]").get_attribute(
        "aria-sort") == "ascending"

    # filtering narrows the table
    b.one("#dest-q").send_keys("b.te")
    b.one("#dest-filter button[type=submit]").click()
    b.wait(lambda: [r[0] for r in rows(b)] == ["b.test"],
           what="one row")
    assert "1–1 of 1 (3 in all)" in b.one("#dests-page").text
    b.shot(tmp_path / "filtered.png")
    b.one("#dest-q").clear()
    b.one("#dest-filter button[type=submit]").click()
    b.wait(lambda: len(rows(b)) == 3, what="3 rows again")

    # with the keyboard: the column headers are buttons
    from selenium.webdriver.common.keys import Keys
    b.one("#dests thead th[data-sort=queued] button").send_keys(Keys.ENTER)
    b.wait(lambda: [r[0] for r in rows(b)] ==
           ["c.test", "b.test", "a.test"], what="sorted by queued")
    # a phone-sized window: the table turns into cards
    b.phone_shot(tmp_path / "overview-phone.png", "#dests")
    assert b.unlabelled() == []

    # a destination's page and a message's: the subject stays text
    b.click_text("#dests tbody a", "c.test")
    b.wait(lambda: b.one("#d-title").text == "c.test", what="c.test")
    b.wait(lambda: len(b.css("#d-msgs tbody tr")) == 3, what="its messages")
    assert "Connection refused" in b.one("#d-replies").text
    b.shot(tmp_path / "destination.png")
    b.css("#d-msgs tbody a")[0].click()
    b.wait(lambda: EVIL_SUBJECT in b.texts("#m-headers td"),
           what="the header")
    assert b.js("return window.__pwned === undefined")
    assert b.js("return document.scripts.length") == 2
    assert b.texts("#m-rcpts td")[0].endswith("@c.test")
    b.shot(tmp_path / "message.png")

    # back to the overview; receivers come up; flush from the page
    b.one("#m-back").click()
    b.wait(lambda: len(rows(b)) == 3, what="the overview")
    b.js("window.__marker = 1")
    rx = [net.receiver(addr) for addr in ADDRS.values()]
    b.one("#flush-all").click()
    b.d.switch_to.alert.accept()
    b.wait(lambda: sum(len(r.messages) for r in rx) == 6, timeout=30,
           what="6 deliveries")
    # the page follows without a reload
    b.wait(lambda: tile(b, "messages queued") == 0, timeout=30,
           what="an empty queue on the page")
    b.wait(lambda: len(rows(b)) == 0, what="no destination left")
    assert b.js("return window.__marker") == 1
    b.wait(lambda: b.one("#dests-empty").is_displayed(), what="'none'")
    b.shot(tmp_path / "flushed.png")
    assert [e for e in b.console_errors() if "401" not in e["message"]] == []


class Attacker(http.server.BaseHTTPRequestHandler):
    """Another origin's page that tries to act on the queue."""
    target = None

    def do_GET(self):
        t = Attacker.target
        page = """<!doctype html><html><body>
<form id="f" method="POST" action="%s/api/v1/queue/delete"
      enctype="text/plain"><input name='{"all": true, "x": "' value='"}'></form>
<iframe name="sink"></iframe>
<script>
const done = [];
const note = (what, r) => done.push(what + ":" + r);
const token = "Bearer %s";
fetch("%s/api/v1/queue/delete", {method: "POST", mode: "no-cors",
  body: '{"all": true}', headers: {"Content-Type": "text/plain"}})
  .then(r => note("no-cors", r.type), e => note("no-cors", "error"));
fetch("%s/api/v1/queue/delete", {method: "POST", body: '{"all": true}',
  headers: {"Content-Type": "application/json", "Authorization": token}})
  .then(r => note("cors", r.status), e => note("cors", "blocked"));
fetch("%s/api/v1/dashboard", {credentials: "include"})
  .then(r => r.json()).then(j => note("read", JSON.stringify(j)),
                            e => note("read", "blocked"));
window.done = done;
document.getElementById("f").target = "sink";
document.getElementById("f").submit();
</script></body></html>""" % (t, TOKEN, t, t, t)
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_no_cross_origin_action(mta, browser, tmp_path):
    """The browser holds the dashboard's token (in the dashboard's tab);
    a page of another origin tries a form POST, a no-cors fetch, a CORS
    fetch with the token itself, and a read: the queue stays as it was."""
    d, b = mta, browser
    b.get("http://127.0.0.1:%d/" % d.http_port)
    b.wait(lambda: b.one("#token-form").is_displayed(), what="the form")
    b.one("#token").send_keys(TOKEN)
    b.one("#token-form button[type=submit]").click()
    b.wait(lambda: tile(b, "messages queued") == 6, what="6 queued")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    Attacker.target = "http://127.0.0.1:%d" % d.http_port
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        b.get("http://127.0.0.1:%d/" % srv.server_address[1])
        b.wait(lambda: len(b.js("return window.done || []")) >= 3,
               what="the attempts")
        time.sleep(1)       # the form's POST
        done = b.js("return window.done")
    finally:
        srv.shutdown()
        srv.server_close()
    assert "cors:blocked" in done, done             # no CORS for others
    assert "read:blocked" in done, done
    assert api(d, "/api/v1/dashboard")["queue"]["messages"] == 6
    # the form and the no-cors fetch reached sluiced, refused there
    d.wait_log(r"http: cross-origin request refused .*path=/api/v1/queue/"
               r"delete")
