"""
chat.py: runs the protocol chats of tests/system/chats/*.chat.

A chat is a conversation with a fresh sluiced, one step per line:

  # text                 a comment (blank lines too)
  ! section.key = value  a setting of the daemon (before the first step)
  > TEXT                 send TEXT and CRLF (UTF-8)
  >> ESCAPED             send bytes with Python escapes (\\r \\n \\xff ...),
                         no CRLF added
  >= EXPR                send the bytes of a Python expression, e.g.
                         b"x" * 2000 + b"\\r\\n"
  < PREFIX               read one reply; one of its lines starts with PREFIX
  < EOF                  the server closes the connection
  ? count N              the spool holds N messages
  ? absent ESCAPED       no stored body contains these bytes
  ? message ESCAPED      the message of the last "queued as" reply, minus
                         the Received: header, is exactly these bytes
  ? connect              close this connection and open a new one
                         (the greeting is then the next reply to read)
"""
import codecs
import re
from pathlib import Path

from sluicetest import Raw, mid_of

CHATS = Path(__file__).parent / "chats"


def unescape(s):
    return codecs.escape_decode(s.encode("utf-8"))[0]


class Chat:
    def __init__(self, path):
        self.path = Path(path)
        self.conf = {}
        self.steps = []
        for n, raw in enumerate(self.path.read_text(encoding="utf-8")
                                .split("\n"), 1):
            line = raw.rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            m = re.match(r"(>>|>=|>|<|\?|!) ?(.*)$", line)
            assert m, f"{self.path.name}:{n}: bad chat line {line!r}"
            op, arg = m.groups()
            if op == "!":
                key, _, value = arg.partition("=")
                section, _, k = key.strip().partition(".")
                self.conf.setdefault(section, {})[k] = value.strip()
            else:
                self.steps.append((n, op, arg))

    def run(self, daemon, timeout=15):
        c = Raw(daemon.port, timeout=timeout, greet=False)
        last_mid = None
        try:
            for n, op, arg in self.steps:
                where = f"{self.path.name}:{n}"
                if op == ">":
                    c.send(arg.encode("utf-8") + b"\r\n")
                elif op == ">>":
                    c.send(unescape(arg))
                elif op == ">=":
                    data = eval(arg, {"__builtins__": {}})
                    c.send(data)
                elif op == "<":
                    try:
                        r = c.reply()
                    except ConnectionResetError:
                        r = None
                    if arg == "EOF":
                        assert r is None, f"{where}: expected EOF, got {r!r}"
                        continue
                    assert r is not None, f"{where}: EOF, expected {arg!r}"
                    assert any(l.startswith(arg) for l in r.split("\n")), \
                        f"{where}: expected {arg!r}, got {r!r}"
                    if "queued as" in r:
                        last_mid = mid_of(r)
                elif op == "?":
                    what, _, val = arg.partition(" ")
                    sp = daemon.spool
                    if what == "count":
                        assert sp.count() == int(val), \
                            f"{where}: spool has {sp.count()} messages"
                    elif what == "absent":
                        found = sp.bodies_containing(unescape(val))
                        assert not found, f"{where}: {val!r} stored in {found}"
                    elif what == "message":
                        assert last_mid is not None, f"{where}: nothing queued"
                        got = sp.message(last_mid)
                        assert got == unescape(val), \
                            f"{where}: stored {got!r}"
                    elif what == "connect":
                        c.close()
                        c = Raw(daemon.port, timeout=timeout, greet=False)
                    else:
                        raise AssertionError(f"{where}: unknown check {what}")
        finally:
            c.close()


def all_chats():
    return sorted(CHATS.glob("*.chat"))
