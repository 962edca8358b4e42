# SPDX-License-Identifier: MIT
"""
test_dkim.py: DKIM signing ([dkim] sign, RFC 6376 / RFC 8463).

Keys come from `sluice dkim keygen` (RSA 2048 and Ed25519); sluiced signs
mail from a trusted client whose From: domain (or a parent) has a key.
Debian's python3-dkim (dkimpy) verifies the stored message against the
TXT record keygen printed; one changed body byte makes it fail. Mail from
an untrusted, unauthenticated client is not signed; a key that other
users may read, or that does not exist, stops the start; a reload with a
bad key keeps the keys in use.
"""
import os
import re
import signal
import smtplib
import subprocess

import dkim
import pytest

from sinkutil import run_sluice
from sluicetest import SLUICED, mid_of


def keygen(tmp, domain, selector, ed25519=False):
    """(key path, TXT record text) from sluice dkim keygen."""
    path = tmp / f"{domain}.{selector}.key"
    args = ["dkim", "keygen", domain, selector, "-o", str(path)]
    if ed25519:
        args.append("--ed25519")
    r = run_sluice(*args)
    assert r.returncode == 0, r.stderr
    assert (os.stat(path).st_mode & 0o077) == 0, oct(os.stat(path).st_mode)
    # the record: quoted strings of at most 255 bytes, joined
    m = re.search(r'IN TXT \((.*)\)', r.stdout)
    assert m, r.stdout
    txt = "".join(re.findall(r'"([^"]*)"', m.group(1)))
    assert txt.startswith("v=DKIM1; k=%s; p=" % ("ed25519" if ed25519
                                                  else "rsa")), txt
    assert f"sign = {domain}:{selector}:{path}" in r.stdout
    return path, txt


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dkim")
    rsa = keygen(tmp, "example.test", "s2026")
    ed = keygen(tmp, "ed.test", "e2026", ed25519=True)
    return {"rsa": rsa, "ed": ed}


def dnsfunc_for(records):
    """dkimpy's DNS look-up, answered from {name: txt}."""
    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        txt = records.get(name.rstrip("."))
        return txt.encode() if txt else None
    return dnsfunc


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
