# SPDX-License-Identifier: MIT
"""
test_proxy.py: the PROXY protocol on the SMTP listener ([server]
proxy_protocol, proxy_trusted_networks, proxy_timeout), as a balancer such
as HAProxy speaks it (send-proxy, send-proxy-v2).

The balancer is this test (raw sockets) or swaks --proxy; the listener
trusts 127.0.0.1 as the balancer. The clients the headers name come from
documentation ranges (203.0.113.0/24, 2001:db8::/32), which are not in
trusted_networks: so the relay policy, the per-address limit, the log and
the Received: header must all follow the header, never the socket.
"""
import re
import socket
import struct
import subprocess

import pytest

from sluicetest import Raw, mid_of, wait_until

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, sport, dst="127.0.0.1", dport=25, tlvs=b""):
    """A v2 PROXY header for TCP over IPv4 or IPv6."""
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    a = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst)
    a += struct.pack("!HH", sport, dport) + tlvs
    return SIG + bytes([0x21, 0x21 if fam == socket.AF_INET6 else 0x11]) + \
        struct.pack("!H", len(a)) + a


V2_LOCAL = SIG + b"\x20\x00\x00\x00"


def proxied(port, header, greet=True, timeout=15):
    """A Raw client that sends header before anything else."""
    c = Raw.__new__(Raw)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.buf = b""
    c.sock.sendall(header)
    c.greeting = c.reply() if greet else None
    return c


@pytest.fixture
def mta(make_sluiced):
    return make_sluiced(conf={"server": {
        "proxy_protocol": "any",
        "proxy_trusted_networks": "127.0.0.1/32",
        "relay_domains": "example.test",
        "trusted_networks": "127.0.0.0/8",
        "proxy_timeout": "2s"}})


def store_one(d, c, rcpt="alice@example.test"):
    """One message through client c; returns its stored body."""
    c.ehlo()
    r = c.send_message("s@sender.test", [rcpt], b"Subject: p\r\n\r\nhi\r\n")
    assert r.startswith("250"), r
    return d.spool.body(mid_of(r))


def test_v1_client_address_everywhere(mta):
    """A v1 header: the Received: header, the log and the relay policy see
    203.0.113.7:41234, not the balancer."""
    c = proxied(mta.port, f"PROXY TCP4 203.0.113.7 127.0.0.1 41234 "
                f"{mta.port}\r\n".encode())
    assert c.greeting.startswith("220 ")
    body = store_one(mta, c)
    assert body.startswith(b"Received: from client.sluice.test "
                           b"([203.0.113.7]) (port 41234)\r\n"), body[:120]
    mta.wait_log(r"ICID \d+ New SMTP connection address=203\.0\.113\.7 "
                 r"port=41234 trusted=no proxy=127\.0\.0\.1")
    # untrusted: no relaying, though the socket's 127.0.0.1 is trusted
    c.expect_ok("MAIL FROM:<s@sender.test>")
    c.send("RCPT TO:<x@elsewhere.test>\r\n")
    c.expect("554 5.7.1")
    c.close()


def test_v2_ipv6_client(mta):
    """A v2 header naming an IPv6 client, with TLVs HAProxy may add."""
    c = proxied(mta.port, v2("2001:db8::7", 5555, "::1", 25,
                             tlvs=b"\x04\x00\x02\x00\x00"))
    body = store_one(mta, c)
    assert body.startswith(b"Received: from client.sluice.test "
                           b"([IPv6:2001:db8::7]) (port 5555)\r\n"), body[:120]
    mta.wait_log(r"New SMTP connection address=2001:db8::7 port=5555 "
                 r"trusted=no proxy=127\.0\.0\.1")
    c.close()


def test_header_in_pieces_with_pipelined_ehlo(mta):
    """The header byte by byte, then the client's EHLO in the same write as
    its last byte: the greeting waits for the whole header, and the bytes
    behind it are the client's."""
    c = Raw.__new__(Raw)
    c.sock = socket.create_connection(("127.0.0.1", mta.port), timeout=15)
    c.buf = b""
    h = v2("203.0.113.8", 1000)
    for b in h[:-1]:
        c.sock.sendall(bytes([b]))
    # nothing before the header is complete (a greeting would be here)
    c.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        c.sock.recv(100)
    c.sock.settimeout(15)
    c.sock.sendall(h[-1:] + b"EHLO client.sluice.test\r\n")
    c.expect("220 ")
    c.expect("250")
    c.close()
    mta.wait_log(r"address=203\.0\.113\.8 port=1000")


def test_health_checks_use_the_socket(mta):
    """v1 UNKNOWN and v2 LOCAL (a balancer's health check) keep the
    socket's address: 127.0.0.1, trusted, may relay."""
    for h in (b"PROXY UNKNOWN\r\n", V2_LOCAL):
        c = proxied(mta.port, h)
        assert c.greeting.startswith("220 ")
        c.ehlo()
        c.expect_ok("MAIL FROM:<s@sender.test>")
        c.expect_ok("RCPT TO:<x@elsewhere.test>")
        c.cmd("QUIT")
        c.close()
    wait_until(lambda: mta.log_text().count(
        "New SMTP connection address=127.0.0.1 ") == 2, what="two lines")


@pytest.mark.parametrize("header,why", [
    (b"PROXY TCP4 203.0.113.7 127.0.0.1 41234\r\n", "has not 5 fields"),
    (b"PROXY TCP4 203.0.113.7 127.0.0.1 041234 25\r\n", "bad address or port"),
    (SIG + b"\x21\x12\x00\x0c" + bytes(12), "datagram"),
    (b"EHLO client.sluice.test\r\n", "no PROXY header"),
])
def test_bad_or_missing_header_closes(mta, header, why):
    """A malformed header, or SMTP without one: closed, nothing said."""
    c = proxied(mta.port, header, greet=False)
    c.expect_closed()
    mta.wait_log(rf"PROXY header refused proxy=127\.0\.0\.1 reason=\"?[^\n]*{why}")
    assert "New SMTP connection" not in mta.log_text()


def test_no_header_in_time_closes(mta):
    c = proxied(mta.port, b"", greet=False)
    c.expect_closed()
    mta.wait_log(r"connection closed reason=\"no PROXY header in time\"")


def test_untrusted_balancer_closed_at_accept(make_sluiced):
    """A header from outside proxy_trusted_networks is not believed: the
    connection is closed before anything is read."""
    d = make_sluiced(conf={"server": {"proxy_protocol": "v1",
                                      "proxy_trusted_networks": "192.0.2.1"}})
    c = proxied(d.port, b"PROXY TCP4 203.0.113.7 127.0.0.1 41234 25\r\n",
                greet=False)
    c.expect_closed()
    d.wait_log(r"connection refused reason=\"not in proxy_trusted_networks\" "
               r"address=127\.0\.0\.1")


def test_per_ip_limit_on_the_header_address(make_sluiced):
    """max_connections_per_ip counts the clients the headers name: two
    from 203.0.113.9 are allowed, the third gets 421; another client
    through the same balancer (127.0.0.1, trusted and so exempt itself) is
    still served."""
    d = make_sluiced(conf={"server": {"proxy_protocol": "v1",
                                      "proxy_trusted_networks": "127.0.0.1",
                                      "max_connections_per_ip": "2"}})
    h = b"PROXY TCP4 203.0.113.9 127.0.0.1 %d 25\r\n"
    held = [proxied(d.port, h % p) for p in (1, 2)]
    for c in held:
        assert c.greeting.startswith("220 ")
    third = proxied(d.port, h % 3)
    assert third.greeting.startswith("421 4.7.0"), third.greeting
    third.expect_closed()
    other = proxied(d.port, b"PROXY TCP4 203.0.113.10 127.0.0.1 4 25\r\n")
    assert other.greeting.startswith("220 ")
    d.wait_log(r"connection refused reason=max_connections_per_ip")
    for c in held + [other]:
        c.close()


def test_rate_limit_on_the_header_address(make_sluiced):
    """connection_rate_per_ip counts the clients the headers name, not the
    balancer: 203.0.113.9 is greeted 5 times in a minute and refused with
    421 after that, while 20 other clients through the same balancer (whose
    own address, 127.0.0.1, is not trusted here) are all greeted."""
    d = make_sluiced(conf={"server": {"proxy_protocol": "v1",
                                      "proxy_trusted_networks": "127.0.0.1",
                                      "trusted_networks": "192.0.2.0/24",
                                      "connection_rate_per_ip": "5",
                                      "max_connections_per_ip": "0"}})
    h = b"PROXY TCP4 %s 127.0.0.1 %d 25\r\n"
    greetings = []
    for i in range(8):
        c = proxied(d.port, h % (b"203.0.113.9", 1000 + i))
        greetings.append(c.greeting)
        if c.greeting.startswith("421"):
            c.expect_closed()
        c.close()
        # other clients of the balancer, between them
        for k in range(3 if i < 7 else 2):
            o = proxied(d.port, h % (b"203.0.113.%d" % (100 + 3 * i + k),
                                     2000 + i))
            assert o.greeting.startswith("220 "), o.greeting
            o.close()
    assert all(g.startswith("220 ") for g in greetings[:5]), greetings
    for g in greetings[5:]:
        assert g.startswith("421 4.7.0 ") and "per minute" in g, g
    d.wait_log(r"connection refused reason=connection_rate_per_ip")
    assert d.log_text().count("reason=connection_rate_per_ip") == 3
    assert not re.search(r"connection refused[^\n]*address=127\.0\.0\.1",
                         d.log_text())


def test_v1_only_refuses_v2(make_sluiced):
    d = make_sluiced(conf={"server": {"proxy_protocol": "v1",
                                      "proxy_trusted_networks": "127.0.0.1"}})
    c = proxied(d.port, v2("203.0.113.7", 1), greet=False)
    c.expect_closed()
    d.wait_log(r"reason=\"no PROXY v1 header\"")


@pytest.mark.parametrize("version", ["1", "2"])
def test_swaks_proxy(mta, version):
    """swaks --proxy-version 1 and 2: a real client's headers."""
    fam = {"1": "TCP4", "2": "AF_INET"}[version]
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{mta.port}", "--proxy-version",
         version, "--proxy-family", fam, "--proxy-source", "198.51.100.20",
         "--proxy-source-port", "6000", "--proxy-dest", "127.0.0.1",
         "--proxy-dest-port", str(mta.port), "--from", "s@sender.test",
         "--to", "bob@example.test", "--helo", "swaks.test"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    mid = mid_of(r.stdout)
    body = mta.spool.body(mid)
    assert body.startswith(b"Received: from swaks.test ([198.51.100.20]) "
                           b"(port 6000)\r\n"), body[:100]


def test_proxy_without_balancers_is_a_config_error(make_sluiced):
    d = make_sluiced(conf={"server": {"proxy_protocol": "v2"}}, start=False)
    d.port = 1
    d.write_conf()
    r = subprocess.run([str(__import__("sluicetest").SLUICED), "-c",
                        str(d.conf_path), "-n"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 1
    assert "[server] proxy_protocol = v2 needs [server] " \
        "proxy_trusted_networks" in r.stderr


def test_shutdown_closes_sessions_waiting_for_a_header(make_sluiced):
    """SIGTERM closes a connection still waiting for its header at once and
    without a word (shutdown_timeout is longer than stop() waits)."""
    d = make_sluiced(conf={"server": {"proxy_protocol": "v1",
                                      "proxy_trusted_networks": "127.0.0.1",
                                      "shutdown_timeout": "60s",
                                      "proxy_timeout": "60s"}})
    c = proxied(d.port, b"PROXY TCP4 203.0.", greet=False)
    # accepted in order: once this one is greeted, c has a session
    proxied(d.port, b"PROXY UNKNOWN\r\n").close()
    d.stop(timeout=20)
    c.expect_closed()
