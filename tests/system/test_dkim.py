# SPDX-License-Identifier: MIT
"""
test_dkim.py: DKIM signing ([dkim] sign, RFC 6376 / RFC 8463).

Keys come from `sluice dkim keygen` (RSA 2048 and Ed25519); sluiced signs
mail from a trusted client whose From: domain (or a parent) has a key.
Debian's python3-dkim (dkimpy) verifies the stored message against the
TXT record keygen printed; one changed body byte makes it fail. Mail from
an untrusted, unauthenticated client is not signed; a key that other
users may read, or that does not exist, stops the start; a reload with a
bad key keeps the keys in use. Mail injected through the bulk path
(POST /api/v1/inject) is signed per recipient message as it is built.
"""
import re
import signal
import smtplib
import subprocess

import dkim
import pytest

from dkimutil import dnsfunc_for, keygen, signature, verify
from injectutil import inject, inject_conf, parse, sink_count
from sluicetest import SLUICED, mid_of, scaled, wait_until


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dkim")
    rsa = keygen(tmp, "example.test", "s2026")
    ed = keygen(tmp, "ed.test", "e2026", ed25519=True)
    return {"rsa": rsa, "ed": ed}


def sign_one(d, frm):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as c:
        c.ehlo("client.test")
        c.mail(frm)
        c.rcpt("rcpt@far.test")
        msg = (f"From: Sender <{frm}>\r\nTo: <rcpt@far.test>\r\n"
               f"Subject: dkim test\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
               f"Message-ID: <x1@client.test>\r\n\r\nHello  there \r\n"
               f"second line\r\n\r\n\r\n")
        code, resp = c.data(msg.encode())
        assert code == 250, resp
    return mid_of(resp)


@pytest.mark.parametrize("alg", ["rsa", "ed"])
def test_signed_message_verifies(make_sluiced, keys, alg):
    path, txt = keys[alg]
    domain = "example.test" if alg == "rsa" else "ed.test"
    sel = "s2026" if alg == "rsa" else "e2026"
    d = make_sluiced(conf={"dkim": {"sign": f"{domain}:{sel}:{path}"}})
    # a subdomain's From: is signed with the parent domain's key
    mid = sign_one(d, f"sender@mail.{domain}")
    body = d.spool.body(mid)
    assert body.startswith(b"DKIM-Signature: v=1; a=%s; c=relaxed/relaxed;"
                           % (b"rsa-sha256" if alg == "rsa"
                              else b"ed25519-sha256")), body[:200]
    sig = body.split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"d=%s; s=%s;" % (domain.encode(), sel.encode()), sig)
    # From is oversigned: listed once more than it appears
    h = re.search(rb"h=([^;]*);", sig).group(1).replace(b"\r\n\t ", b"")
    assert h.lower().split(b":").count(b"from") == 2, h
    records = {f"{sel}._domainkey.{domain}": txt}
    assert dkim.verify(body, dnsfunc=dnsfunc_for(records)), body[:600]
    # one body byte changed: the body hash no longer matches
    bad = body.replace(b"Hello  there", b"Hello  thera")
    assert bad != body
    assert not dkim.verify(bad, dnsfunc=dnsfunc_for(records))
    # a signed header changed: fails too
    bad = body.replace(b"Subject: dkim test", b"Subject: dkim tesT")
    assert not dkim.verify(bad, dnsfunc=dnsfunc_for(records))
    d.wait_log(r"MID [0-9A-F]{16} DKIM signed domain=%s selector=%s "
               % (domain, sel))


def test_no_key_for_domain_and_untrusted_not_signed(make_sluiced, keys):
    path, _ = keys["rsa"]
    d = make_sluiced(conf={"dkim": {"sign": f"example.test:s2026:{path}"},
                           "server": {"trusted_networks": "127.0.0.1/32",
                                      "relay_domains": "far.test"}})
    mid = sign_one(d, "sender@other.test")
    assert not d.spool.body(mid).startswith(b"DKIM-Signature")
    # 127.0.0.2 is not trusted (and not authenticated): never signed
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15,
                      source_address=("127.0.0.2", 0)) as c:
        c.ehlo("client.test")
        c.mail("sender@example.test")
        c.rcpt("rcpt@far.test")
        code, resp = c.data(b"From: <sender@example.test>\r\n\r\nx\r\n")
        assert code == 250
    assert not d.spool.body(mid_of(resp)).startswith(b"DKIM-Signature")


def test_bad_keys_stop_start_and_reload_keeps_keys(make_sluiced, keys,
                                                    tmp_path):
    path, txt = keys["rsa"]
    readable = tmp_path / "open.key"
    readable.write_bytes(open(path, "rb").read())
    readable.chmod(0o644)
    for spec, want in ((f"example.test:s2026:{readable}",
                        "other users may read it"),
                       ("example.test:s2026:/nonexistent.key",
                        "No such file or directory")):
        d = make_sluiced(conf={"dkim": {"sign": spec}}, start=False)
        d.port = 1
        d.write_conf()
        r = subprocess.run([str(SLUICED), "-c", str(d.conf_path)],
                           capture_output=True, text=True, timeout=30,
                           cwd=d.root)
        assert r.returncode != 0
        assert want in r.stderr and "[dkim] sign example.test:s2026" \
            in r.stderr, r.stderr
    d = make_sluiced(conf={"dkim": {"sign": f"example.test:s2026:{path}"}})
    d.conf["dkim"]["sign"] = f"example.test:s2026:{readable}"
    d.write_conf()
    d.signal(signal.SIGHUP)
    d.wait_log(r"reload failed, the configuration and keys in use stay: "
               r"\[dkim\] sign example\.test:s2026: .*other users may read")
    mid = sign_one(d, "sender@example.test")
    body = d.spool.body(mid)
    assert dkim.verify(body, dnsfunc=dnsfunc_for(
        {"s2026._domainkey.example.test": txt}))


# ---- the bulk path: POST /api/v1/inject (RabbitMQ: test_inject_amqp.py) ----

@pytest.mark.parametrize("alg", ["rsa", "ed"])
def test_injected_batch_signed_per_recipient(make_sluiced, make_sink, keys,
                                             tmp_path, alg):
    """A templated batch: each recipient's message has its own body, and
    each carries a signature over that body which dkimpy verifies; a
    From: domain without a key is sent unsigned; a raw message is signed
    too."""
    path, txt = keys[alg]
    domain = "example.test" if alg == "rsa" else "ed.test"
    sel = "s2026" if alg == "rsa" else "e2026"
    records = {f"{sel}._domainkey.{domain}": txt}
    sink = make_sink()
    d = make_sluiced(conf=inject_conf(tmp_path, sink.port, {
        "dkim": {"sign": f"{domain}:{sel}:{path}"}}))
    n = 12
    rcpts = [{"email": f"u{i}@d{i % 3}.test",
              "vars": {"name": f"Näme {i}", "code": f"C{i:04d}"}}
             for i in range(n)]
    code, ans = inject(d, {
        "from": f"News <news@mail.{domain}>",
        "subject": "Hello {{name}}",
        "text": "Hi {{name}},  your code is {{code}}.\n\n\n",
        "html": "<p>Hi {{name}}, code {{code}}</p>",
        "headers": {"X-Campaign": "c42"},
        "unsubscribe": "https://example.test/u?e={{email}}",
        "recipients": rcpts})
    assert code == 200 and ans["accepted"] == n, ans
    code, ans2 = inject(d, {
        "from": "other@nokey.test", "subject": "s", "text": "unsigned",
        "recipients": [{"email": "plain@d0.test"}]})
    assert code == 200, ans2
    raw = (f"From: App <app@{domain}>\r\nTo: <raw@d1.test>\r\n"
           "Subject: raw\r\n\r\nraw body\r\n")
    code, ans3 = inject(d, {"from": f"app@{domain}", "raw": raw,
                            "recipients": [{"email": "raw@d1.test"}]})
    assert code == 200, ans3
    wait_until(lambda: sink_count(sink) >= n + 2, timeout=120,
               what=f"{n + 2} messages at the sink")
    got = {str(parse(m)["To"]).strip("<>"): m for m in sink.messages()}
    assert len(got) == n + 2
    bodies, bhs = set(), set()
    for r in rcpts:
        msg = got[r["email"]]
        assert verify(msg, records), msg[:800]
        tags = signature(msg)
        assert (tags["a"], tags["d"], tags["s"]) == (
            "rsa-sha256" if alg == "rsa" else "ed25519-sha256", domain, sel)
        assert "to" in tags["h"].lower().split(":")
        assert tags["h"].lower().split(":").count("from") == 2
        body = msg.split(b"\r\n\r\n", 1)[1]
        assert r["vars"]["code"].encode() in body
        bodies.add(body)
        bhs.add(tags["bh"])
        # the signature covers this recipient's body: one byte changed fails
        bad = msg.replace(r["vars"]["code"].encode(), b"X9999")
        assert bad != msg and not verify(bad, records)
    # every recipient got a body of its own, each signed over its own
    assert len(bodies) == n and len(bhs) == n
    assert not got["plain@d0.test"].startswith(b"DKIM-Signature")
    assert b"DKIM-Signature" not in got["plain@d0.test"].split(b"\r\n\r\n")[0]
    assert verify(got["raw@d1.test"], records), got["raw@d1.test"][:800]
    # once per recipient, with its MID and RID in the log
    d.wait_log(r"MID %s RID \[%d\] DKIM signed domain=%s selector=%s "
               % (ans["batch_id"], n - 1, domain, sel))
    # stopped while messages are being built and signed: a clean exit
    # (the sanitizer build checks what is freed), and after the restart
    # every recipient arrives, signed
    before = sink_count(sink)
    m = scaled(300, 100)
    code, ans = inject(d, {
        "from": f"news@{domain}", "subject": "Again {{name}}",
        "text": "Hi {{name}}.\n", "recipients": [
            {"email": f"s{i}@d{i % 3}.test", "vars": {"name": f"S{i}"}}
            for i in range(m)]})
    assert code == 200 and ans["accepted"] == m, ans
    wait_until(lambda: sink_count(sink) > before, what="one delivered")
    d.stop()
    d.start()
    want = {f"s{i}@d{i % 3}.test" for i in range(m)}

    def again():
        return [x for x in sink.messages() if b"Subject: Again" in x]
    # a delivery in flight at the stop may arrive twice (at least once)
    wait_until(lambda: {str(parse(x)["To"]) for x in again()} == want,
               timeout=300, what=f"all {m} at the sink")
    assert all(verify(x, records) for x in again())
