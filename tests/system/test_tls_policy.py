# SPDX-License-Identifier: MIT
"""
test_tls_policy.py: outbound TLS levels ([delivery] tls, tls_ca_file,
[tls_policy]).

The test makes its own CA and, signed by it, certificates for
mx.v-right.test and wrong.test. dnsmasq gives each receiver's MX name
127.0.0.1; each domain is routed to its own `sluice sink` by that name
([routes] d = [mx.d]:port) and has its own level:

  enc-tls.test    encrypt -> a sink with STARTTLS: delivered in TLS
  enc-plain.test  encrypt -> a sink without it: deferred, "TLS required
                  but not offered" in the log and in `sluice queue list`
  v-wrong.test    verify  -> a sink whose certificate is for wrong.test:
                  deferred, "certificate name mismatch: ..."
  v-right.test    verify  -> a sink with a certificate for its MX name
                  from the test CA: delivered, verified=yes
  v-selfsigned.test verify -> a self-signed certificate: deferred,
                  "certificate verification failed"
  may.test        (the default, may) -> the plaintext sink: delivered
"""
import smtplib
import subprocess

import pytest

from delivery_util import Dns
from ops_util import run_sluice
from sluicetest import mid_of, wait_until


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and certificates: {name: (cert, key)} and the CA file."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=Sluice Test CA", "-keyout", "ca.key", "-out",
            "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    certs = {}
    for name in ("mx.v-right.test", "wrong.test"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj",
                f"/CN={name}", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
                "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
        certs[name] = (d / f"{name}.pem", d / f"{name}.key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=mx.v-selfsigned.test", "-addext",
            "subjectAltName=DNS:mx.v-selfsigned.test", "-keyout", "ss.key",
            "-out", "ss.pem", cwd=d)
    certs["self"] = (d / "ss.pem", d / "ss.key")
    return d / "ca.pem", certs


@pytest.fixture
def world(make_sluiced, make_sink, pki, tmp_path):
    ca, certs = pki
    tls = lambda n: ("--tls-cert", str(certs[n][0]), "--tls-key",  # noqa
                     str(certs[n][1]))
    sinks = {
        "enc-tls.test": make_sink(*tls("wrong.test")),
        "enc-plain.test": make_sink(),
        "v-wrong.test": make_sink(*tls("wrong.test")),
        "v-right.test": make_sink(*tls("mx.v-right.test")),
        "v-selfsigned.test": make_sink(*tls("self")),
    }
    sinks["may.test"] = sinks["enc-plain.test"]
    dns = Dns(str(tmp_path))
    for dom in sinks:
        dns.host(f"mx.{dom}", "127.0.0.1")
    dns.start()
    d = make_sluiced(conf={
        "dns": {"servers": f"127.0.0.1:{dns.port}", "timeout": "5s"},
        "routes": {dom: f"[mx.{dom}]:{s.port}" for dom, s in sinks.items()},
        "delivery": {"tls_ca_file": str(ca), "retry_initial": "1h"},
        "control": {"socket": str(tmp_path / "ctl.sock")},
        "tls_policy": {"enc-tls.test": "encrypt", "enc-plain.test": "encrypt",
                       "v-wrong.test": "verify", "v-right.test": "verify",
                       "v-selfsigned.test": "verify"}})
    yield d, sinks
    dns.close()


def send(d, dom):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as c:
        c.ehlo("client.test")
        c.mail("a@client.test")
        c.rcpt(f"u@{dom}")
        code, resp = c.data(f"Subject: to {dom}\r\n\r\nbody\r\n".encode())
        assert code == 250
    return mid_of(resp)


def delivered(d, sink, dom):
    # the sink writes the Maildir file before its index line: wait for both
    def entries():
        return [e for e in sink.index() if f"u@{dom}" in str(e)]
    wait_until(lambda: any(f"to {dom}".encode() in m
                           for m in sink.messages()) and entries(),
               timeout=30, what=f"delivery to {dom}")
    return entries()


def test_levels(world):
    d, sinks = world
    mids = {dom: send(d, dom) for dom in sinks}
    # encrypt with a TLS receiver: in TLS, its certificate not checked
    e = delivered(d, sinks["enc-tls.test"], "enc-tls.test")
    assert e and e[0]["tls"] is True
    # verify with the right name from the CA: delivered, verified
    e = delivered(d, sinks["v-right.test"], "v-right.test")
    assert e and e[0]["tls"] is True
    d.wait_log(r"TLS established relay=mx\.v-right\.test\[127\.0\.0\.1\] "
               r"version=TLSv1\.[23] cipher=\S+ verified=yes")
    # may (the default) to a plaintext receiver: delivered as before
    e = delivered(d, sinks["may.test"], "may.test")
    assert e and e[0]["tls"] is False
    # the refusals, with their reasons in the log
    d.wait_log(r"destination deferred destination=enc-plain\.test "
               r"reason=\"?TLS required but not offered by "
               r"mx\.enc-plain\.test\[127\.0\.0\.1\]", timeout=30)
    d.wait_log(r"destination deferred destination=v-wrong\.test "
               r"reason=\"?certificate name mismatch: mx\.v-wrong\.test is "
               r"not among the certificate's names \(wrong\.test\)",
               timeout=30)
    d.wait_log(r"destination deferred destination=v-selfsigned\.test "
               r"reason=\"?certificate verification failed: self.signed",
               timeout=30)
    assert not any(b"to enc-plain.test" in m
                   for m in sinks["enc-plain.test"].messages())
    assert not sinks["v-wrong.test"].messages()
    assert not sinks["v-selfsigned.test"].messages()
    # and in `sluice queue list`
    out = wait_until(lambda: (lambda o: o if "certificate name mismatch" in o
                              and "TLS required but not offered" in o
                              else None)(run_sluice("queue", "list",
                                                    conf=d.conf_path).stdout),
                     timeout=20, what="reasons in queue list")
    for dom in ("enc-plain.test", "v-wrong.test", "v-selfsigned.test"):
        assert "%016X" % mids[dom] in out, out
    for dom in ("enc-tls.test", "v-right.test", "may.test"):
        assert "%016X" % mids[dom] not in out


def test_bad_policy_names_line(tmp_path):
    f = tmp_path / "p.ini"
    f.write_text("[tls_policy]\nok.test = verify\nbank.test = strict\n")
    r = subprocess.run([str(__import__("sluicetest").SLUICED), "-n", "-c",
                        str(f)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert (f"{f}:3: [tls_policy] bank.test: 'strict' is not none, may, "
            "encrypt or verify") in r.stderr
