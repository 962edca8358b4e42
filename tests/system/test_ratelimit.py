# SPDX-License-Identifier: MIT
"""
test_ratelimit.py: [server] connection_rate_per_ip.

With a limit of 60 new connections per minute, 200 connections in a few
seconds from 127.0.0.1 get the greeting 60 times and `421 4.7.0` for the
other 140, each refused at once; meanwhile 127.0.0.2 (between them) is
greeted every time and sends a message; a trusted address (127.0.0.7)
is exempt.
"""
import smtplib
import socket

from sluicetest import mid_of


def greeting(source, port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10,
                                 source_address=(source, 0))
    try:
        f = s.makefile("rb")
        line = f.readline()
        if line.startswith(b"220"):
            s.sendall(b"QUIT\r\n")
            f.readline()
        return line
    finally:
        s.close()


def test_rate_limit_per_address(make_sluiced):
    d = make_sluiced(conf={"server": {
        "trusted_networks": "127.0.0.7/32", "connection_rate_per_ip": "60",
        "max_connections_per_ip": "0", "relay_domains": "ok.test"}})
    ok = refused = 0
    for i in range(200):
        line = greeting("127.0.0.1", d.port)
        if line.startswith(b"220 "):
            ok += 1
        else:
            assert line.startswith(b"421 4.7.0 "), line
            assert b"per minute" in line
            refused += 1
        if i % 20 == 10:
            # another address is served normally throughout
            assert greeting("127.0.0.2", d.port).startswith(b"220 ")
    assert (ok, refused) == (60, 140)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15,
                      source_address=("127.0.0.2", 0)) as c:
        c.ehlo("client.test")
        c.mail("a@client.test")
        c.rcpt("b@ok.test")
        code, resp = c.data(b"Subject: rate\r\n\r\nfine\r\n")
        assert code == 250
    assert d.spool.body(mid_of(resp)) is not None
    # trusted: exempt
    for _ in range(80):
        assert greeting("127.0.0.7", d.port).startswith(b"220 ")
    d.wait_log(r"connection refused reason=connection_rate_per_ip")
