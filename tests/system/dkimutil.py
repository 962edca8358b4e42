# SPDX-License-Identifier: MIT
"""
dkimutil.py: helpers of the DKIM tests: keys made by `sluice dkim keygen`
(with the TXT record it prints) and a DNS look-up for Debian's
python3-dkim (dkimpy) answered from those records, so a signature is
checked by an independent verifier against the published key.
"""
import os
import re

import dkim

from sinkutil import run_sluice


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


def dnsfunc_for(records):
    """dkimpy's DNS look-up, answered from {name: txt}."""
    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        txt = records.get(name.rstrip("."))
        return txt.encode() if txt else None
    return dnsfunc


def verify(msg, records):
    """dkimpy's verdict on msg (bytes) against {name: txt}."""
    return dkim.verify(msg, dnsfunc=dnsfunc_for(records))


def signature(msg):
    """The tags of msg's first DKIM-Signature field, unfolded: {tag: value}."""
    hdr = msg.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", hdr + b"\r\n",
                  re.M | re.S | re.I)
    assert m, hdr[:600]
    flat = re.sub(rb"\s+", b"", m.group(1)).decode()
    return dict(t.split("=", 1) for t in flat.split(";") if t)
