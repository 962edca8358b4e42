"""
The HTTP listener ([http] listen) faces whoever can connect to it (issue 9
item 5): /metrics and /healthz take GET and HEAD only, request headers and
bodies are bounded, and connections are capped ([http] max_connections).
"""
import socket
import time
import urllib.error
import urllib.request

import pytest

from sluicetest import free_port, wait_until


@pytest.fixture
def web(make_sluiced):
    """A daemon with the HTTP listener on a free port and a small cap."""
    port = free_port()
    d = make_sluiced(conf={"http": {"listen": f"127.0.0.1:{port}",
                                    "max_connections": "4"}})
    d.http_port = port
    return d


def request(port, method, path, body=None, headers=None, timeout=10):
    """(status, headers, body bytes) of one request."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw(port, data, timeout=10):
    """Send data on a new connection; everything the server answers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass                # the server may have closed already
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return out


@pytest.mark.parametrize("path", ["/metrics", "/healthz"])
def test_get_and_head_only(web, path):
    st, h, body = request(web.http_port, "GET", path)
    assert st == 200 and body
    st, h, body = request(web.http_port, "HEAD", path)
    assert st == 200 and body == b""
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        st, h, _ = request(web.http_port, method, path, body=b"")
        assert st in (405, 501), (method, st)
        if st == 405:
            assert h["Allow"] == "GET, HEAD"


def test_headers_are_bounded(web):
    big = b"X-Big: " + b"a" * 100000 + b"\r\n"
    out = raw(web.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big
              + b"\r\n")
    assert out.split(b" ", 2)[1] in (b"400", b"413", b"431"), out[:200]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    out = raw(web.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many
              + b"\r\n")
    assert out.split(b" ", 2)[1] in (b"400", b"413", b"431"), out[:200]
    # the listener still serves
    assert request(web.http_port, "GET", "/healthz")[0] == 200


def test_bodies_are_bounded(web):
    st, _, body = request(web.http_port, "GET", "/healthz", body=b"x" * 10)
    assert st == 413, (st, body)
    # a client announcing 100 MB is cut off long before it sent them
    s = socket.create_connection(("127.0.0.1", web.http_port), timeout=10)
    s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 100000000\r\n\r\n")
    sent, answer = 0, b""
    chunk = b"x" * 65536
    try:
        while sent < 50 * 1024 * 1024:
            s.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        answer = s.recv(1000)
    except ConnectionResetError:
        pass
    s.close()
    assert sent < 50 * 1024 * 1024, "the server read 50 MB of body"
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"405", b"413"), \
        answer


def test_connections_are_capped(web):
    port = web.http_port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        got = extra.recv(100)
    except ConnectionResetError:
        got = b""
    assert got == b"", "a connection over the cap was kept"
    extra.close()
    web.wait_log(r"http: more than 4 connections")
    for s in idle:
        s.close()
    # the slots come back, also after connections that ended badly
    for _ in range(20):
        raw(port, b"GET /heal")
        raw(port, b"NONSENSE\r\n\r\n")
        request(port, "GET", "/healthz")
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]

    def all_served():
        ok = 0
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            ok += s.recv(100).startswith(b"HTTP/1.1 200")
        return ok == len(held)
    assert wait_until(all_served, timeout=5, what="4 connections served")
    for s in held:
        s.close()
