# SPDX-License-Identifier: MIT
"""test_sink_inbox.py: the sink as a test inbox (`sluice sink --http`):
the JSON API behind the page (newest first, search, paging, a message
parsed by GMime, its HTML under a sandboxing CSP, attachments, delete one
or all, refusals of cross-origin deletes), and the page itself in headless
Chromium: it lists messages, search narrows them, a message's HTML renders
in its sandbox with no script run and nothing remote loaded, a subject
holding <script> is text, new mail appears without a reload, and each page
leaves a screenshot that is not blank."""
import http.server
import smtplib
import threading
import time
import urllib.parse
from email.message import EmailMessage

import pytest

from sluicetest import wait_until


def send(sink, to, subject, text="hello", html=None, attach=None,
         sender="App <app@shop.test>", envelope_from="bounces@shop.test"):
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m.set_content(text)
    if html is not None:
        m.add_alternative(html, subtype="html")
    for name, data, ctype in attach or ():
        main, sub = ctype.split("/")
        m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    before = sink.api("/api/messages?limit=0")["total"]
    c = smtplib.SMTP("127.0.0.1", sink.port, timeout=30)
    c.send_message(m, from_addr=envelope_from, to_addrs=[to])
    c.quit()
    wait_until(lambda: sink.api("/api/messages?limit=0")["total"] > before,
               what="the message in the index")
    return m


@pytest.fixture
def inbox(make_sink):
    s = make_sink("--rule", "rcpt *@bounce.test 550 5.1.1 User unknown",
                  http=True, pop3=True)
    send(s, "ann@example.test", "Welcome aboard", "Hi Ann")
    send(s, "bob@example.test", "Your receipt 42", "Total: 42",
         sender="Shop <orders@shop.test>",
         attach=[("reçu 42.pdf", b"%PDF-1.4 fake\n" * 50, "application/pdf")])
    send(s, "carol@example.test", "Password reset", "Click",
         html="<p>Reset <b>now</b></p>")
    return s


def subjects(r):
    return [m["subject"] for m in r["messages"]]


def test_list_search_and_pages(inbox):
    r = inbox.api("/api/messages?order=newest")
    assert subjects(r) == ["Password reset", "Your receipt 42",
                           "Welcome aboard"]
    assert r["count"] == r["total"] == 3
    # the old order and shape without parameters
    assert subjects(inbox.api("/api/messages"))[0] == "Welcome aboard"
    q = lambda s: subjects(inbox.api("/api/messages?order=newest&q=" +
                                     urllib.parse.quote(s)))
    assert q("to:bob") == ["Your receipt 42"]
    assert q("from:orders@") == ["Your receipt 42"]
    assert q("from:bounces@shop") == subjects(inbox.api(
        "/api/messages?order=newest"))          # the envelope sender
    assert q("subject:password") == ["Password reset"]
    assert q("RECEIPT") == ["Your receipt 42"]
    assert q("carol reset") == ["Password reset"]
    assert q("carol welcome") == []
    assert q('subject:"receipt 42"') == ["Your receipt 42"]
    r = inbox.api("/api/messages?subject=welcome&to=ann")
    assert subjects(r) == ["Welcome aboard"] and r["count"] == 1
    r = inbox.api("/api/messages?order=newest&limit=1&offset=1")
    assert subjects(r) == ["Your receipt 42"]
    assert r["count"] == 3
    r = inbox.api("/api/messages?limit=0")
    assert r["messages"] == [] and r["total"] == 3
    for bad in ("limit=x", "offset=-1", "order=sideways",
                "q=" + "+w" * 20):
        assert inbox.http("/api/messages?" + bad)[0] == 400, bad


def find(inbox, subject):
    return [m for m in inbox.api("/api/messages")["messages"]
            if m["subject"] == subject][0]


def test_view_parts_and_downloads(inbox):
    m = find(inbox, "Your receipt 42")
    v = inbox.api("/api/messages/%s/view" % m["id"])
    assert v["text"].strip() == "Total: 42"
    assert v["html"] is False
    assert v["from"] == "Shop <orders@shop.test>"
    assert v["to"] == "bob@example.test"
    assert ["Subject", "Your receipt 42"] in v["headers"]
    assert v["mail_from"] == "bounces@shop.test"
    [a] = v["attachments"]
    assert a["filename"] == "reçu 42.pdf"
    assert a["type"] == "application/pdf"
    assert a["size"] == len(b"%PDF-1.4 fake\n" * 50)
    code, h, body = inbox.http("/api/messages/%s/part/%d" % (m["id"],
                                                             a["part"]))
    assert code == 200 and body == b"%PDF-1.4 fake\n" * 50
    assert h["Content-Type"] == "application/pdf"
    assert h["Content-Disposition"] == ("attachment; filename=\"re__u_42.pdf\"; "
                                        "filename*=UTF-8''re%C3%A7u%2042.pdf")
    assert "sandbox" in h["Content-Security-Policy"]
    assert h["X-Content-Type-Options"] == "nosniff"
    assert inbox.http("/api/messages/%s/part/9" % m["id"])[0] == 404
    assert inbox.http("/api/messages/%s/html" % m["id"])[0] == 404
    code, h, raw = inbox.http("/api/messages/%s/raw" % m["id"])
    assert code == 200 and h["Content-Type"] == "message/rfc822"
    assert raw == open("%s/%s" % (inbox.maildir, m["file"]), "rb").read()

    m = find(inbox, "Password reset")
    v = inbox.api("/api/messages/%s/view" % m["id"])
    assert v["html"] is True and v["attachments"] == []
    code, h, body = inbox.http("/api/messages/%s/html" % m["id"])
    assert code == 200 and b"<p>Reset <b>now</b></p>" in body
    assert h["Content-Type"] == "text/html; charset=utf-8"
    csp = h["Content-Security-Policy"]
    # no scripts (sandbox without allow-scripts), nothing remote
    assert csp.startswith("sandbox;") and "default-src 'none'" in csp
    assert "img-src data:;" in csp and "script-src" not in csp
    for bad in ("nope", "%s/part/x" % m["id"], "%s/other" % m["id"]):
        assert inbox.http("/api/messages/" + bad)[0] == 404


def test_page_and_headers(inbox):
    code, h, body = inbox.http("/")
    assert code == 200 and h["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script src="inbox.js"' in body
    csp = h["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("style-src")[0]
    for path in ("/inbox.js", "/inbox.css", "/base.js", "/base.css"):
        assert inbox.http(path)[0] == 200, path
    assert inbox.http("/nothing.js")[0] == 404
    assert inbox.http("/", method="POST")[0] in (405, 501)
    # a page of another name resolved to our address (DNS rebinding)
    for host, code in (("evil.test", 403), ("evil.test:%d" % inbox.http_port,
                                            403),
                       ("localhost:%d" % inbox.http_port, 200),
                       ("app.localhost", 200), ("[::1]:80", 200),
                       ("127.0.0.1", 200)):
        assert inbox.http("/api/messages?limit=0",
                          headers={"Host": host})[0] == code, host
        assert inbox.http("/", headers={"Host": host})[0] == code, host
    s = inbox.api("/api/server")
    assert s["rules"] == ["rcpt *@bounce.test 550 5.1.1 User unknown"]
    assert s["smtp_port"] == inbox.port and s["pop3_port"] == inbox.pop3_port


def test_delete_one_all_and_cross_origin(inbox):
    m = find(inbox, "Welcome aboard")
    origin = "http://127.0.0.1:%d" % inbox.http_port
    # a page of another origin may not delete
    for hdrs in ({"Origin": "http://evil.test"},
                 {"Origin": "null"},
                 {"Origin": "http://127.0.0.1:%d" % (inbox.http_port + 1)},
                 {"Sec-Fetch-Site": "cross-site"},
                 {"Sec-Fetch-Site": "same-site"}):
        assert inbox.http("/api/messages/" + m["id"], "DELETE", hdrs)[0] == \
            403, hdrs
        assert inbox.http("/api/messages", "DELETE", hdrs)[0] == 403, hdrs
    assert inbox.api("/api/messages?limit=0")["total"] == 3
    code, _, _ = inbox.http("/api/messages/" + m["id"], "DELETE",
                            {"Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert code == 200
    assert inbox.http("/api/messages/" + m["id"])[0] == 404
    assert m["id"] not in [x["id"] for x in inbox.index()]
    assert len(inbox.messages()) == 2
    assert inbox.http("/api/messages/" + m["id"], "DELETE")[0] == 404
    assert inbox.api("/api/messages", "DELETE") == {"deleted": 2}
    assert inbox.messages() == [] and inbox.index() == []


class Hits(http.server.BaseHTTPRequestHandler):
    """Counts every request: nothing from a captured message may get here."""
    hits = []

    def do_GET(self):
        Hits.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *a):
        pass


@pytest.fixture
def remote():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    Hits.hits = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


EVIL = "Invoice <script>window.__pwned = 1</script> <img src=x onerror=alert(1)>"


def test_inbox_in_chromium(inbox, browser, remote, tmp_path):
    html = ("<html><body><h1 id='hello'>Hello from HTML</h1>"
            "<p style='color: rgb(200, 0, 0)' id='styled'>styled</p>"
            "<img src='%s/remote.png' alt='remote'>"
            "<div style=\"background: url('%s/bg.png')\">bg</div>"
            "<script>document.body.setAttribute('data-ran', '1');"
            "fetch('%s/script');"
            "try { parent.document.title = 'pwned' } catch (e) {}</script>"
            "</body></html>") % (remote, remote, remote)
    send(inbox, "dave@example.test", EVIL, "text part", html=html)
    base = "http://127.0.0.1:%d/" % inbox.http_port
    b = browser
    b.get(base)
    rows = lambda: b.css("#messages tbody tr")
    b.wait(lambda: len(rows()) == 4, what="4 rows")
    assert b.texts("#messages tbody td:nth-child(3)")[0] == EVIL
    b.shot(tmp_path / "inbox.png")

    # search narrows the list
    q = b.one("#q")
    q.send_keys("to:carol")
    q.submit()
    b.wait(lambda: len(rows()) == 1, what="1 row")
    assert b.texts("#messages tbody td:nth-child(3)") == ["Password reset"]
    assert "1 of 4" in b.one("#count").text
    b.shot(tmp_path / "inbox-search.png")
    b.one("#clear").click()
    b.wait(lambda: len(rows()) == 4, what="4 rows again")

    # the message with HTML: rendered in the sandbox, its script not run
    b.css("#messages tbody td:nth-child(3) a")[0].click()
    b.wait(lambda: b.one("#msg-subject").text == EVIL, what="the message")
    frame = b.one("#html-frame")
    assert frame.get_attribute("sandbox") == ""
    b.d.switch_to.frame(frame)
    try:
        b.wait(lambda: b.one("#hello").text == "Hello from HTML",
               what="the HTML part")
        assert b.one("#styled").value_of_css_property("color") in (
            "rgba(200, 0, 0, 1)", "rgb(200, 0, 0)")
        assert b.js("return document.body.getAttribute('data-ran')") is None
    finally:
        b.d.switch_to.default_content()
    assert b.d.title != "pwned"
    assert b.js("return window.__pwned === undefined")
    # our two scripts, nothing from the subject
    assert b.js("return document.scripts.length") == 2
    b.shot(tmp_path / "message.png")
    time.sleep(1)
    assert Hits.hits == [], "the message reached out: %r" % Hits.hits

    # the other tabs
    b.one("#tab-text").click()
    assert b.one("#text").text.strip() == "text part"
    b.one("#tab-raw").click()
    b.wait(lambda: "Content-Type: multipart/alternative" in
           b.one("#raw").text, what="the raw source")
    b.one("#tab-headers").click()
    assert EVIL in b.texts("#headers td")
    b.shot(tmp_path / "message-raw.png")

    # back to the list; a new message shows up without a reload
    b.one("#back").click()
    b.wait(lambda: len(rows()) == 4, what="the list")
    b.js("window.__marker = 1")
    send(inbox, "erin@example.test", "Arrived while watching")
    b.wait(lambda: len(rows()) == 5, what="the new message")
    assert b.js("return window.__marker") == 1     # no reload
    assert b.texts("#messages tbody td:nth-child(3)")[0] == \
        "Arrived while watching"

    # delete one from the page, with its confirmation
    b.css("#messages tbody td:nth-child(3) a")[0].click()
    b.wait(lambda: b.one("#msg-subject").text == "Arrived while watching",
           what="the message")
    b.one("#delete-one").click()
    b.d.switch_to.alert.accept()
    b.wait(lambda: len(rows()) == 4, what="4 rows after the delete")
    assert inbox.api("/api/messages?limit=0")["total"] == 4

    # a phone-sized window: the list still reads, as cards
    b.phone_shot(tmp_path / "inbox-phone.png", "#messages")
    assert [e for e in b.console_errors()
            if "favicon" not in e["message"]] == []


def test_keyboard(inbox, browser):
    """Tab reaches the search, Enter searches; arrow keys move the tabs."""
    from selenium.webdriver.common.keys import Keys
    b = browser
    b.get("http://127.0.0.1:%d/" % inbox.http_port)
    b.wait(lambda: len(b.css("#messages tbody tr")) == 3, what="3 rows")
    body = b.one("body")
    body.send_keys(Keys.TAB)     # the skip link
    body = b.d.switch_to.active_element
    assert body.text == "Skip to the messages"
    for _ in range(10):
        el = b.d.switch_to.active_element
        if el.get_attribute("id") == "q":
            break
        el.send_keys(Keys.TAB)
    assert b.d.switch_to.active_element.get_attribute("id") == "q"
    b.d.switch_to.active_element.send_keys("receipt", Keys.ENTER)
    b.wait(lambda: len(b.css("#messages tbody tr")) == 1, what="1 row")
    link = b.one("#messages tbody a")
    link.send_keys(Keys.ENTER)
    b.wait(lambda: b.one("#msg-subject").text == "Your receipt 42",
           what="the message")
    tab = b.one("#tab-text")
    assert tab.get_attribute("aria-selected") == "true"
    tab.send_keys(Keys.ARROW_RIGHT)
    assert b.one("#tab-headers").get_attribute("aria-selected") == "true"
    assert not b.one("#panel-headers").get_attribute("hidden")
    assert b.one("#panel-text").get_attribute("hidden")
    # every form control has a label
    assert b.unlabelled() == []
