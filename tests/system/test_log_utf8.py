"""
JSON log lines are valid UTF-8 whatever a peer sent (issue 9 item 22).
sluiced's SMTP server refuses command lines that are not UTF-8, but the
next hop's replies come into the log as they are: a receiver that answers
RCPT with bytes that are not UTF-8 must leave a log whose every line parses
as JSON, with U+FFFD where the bytes were ill-formed.
"""
import json
import socket
import threading

from ops_util import send

BAD = b"\xff\xc3(\xed\xa0\x80\xf0\x9f\x98!"


class BadReplies:
    """An SMTP receiver whose RCPT reply is 451 followed by BAD."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.rcpts = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(c,),
                             daemon=True).start()

    def session(self, c):
        f = c.makefile("rwb")
        f.write(b"220 bad.sluice.test \xfe\xfe ESMTP\r\n")
        f.flush()
        for line in f:
            verb = line[:4].upper()
            if verb == b"RCPT":
                self.rcpts += 1
                f.write(b"451 4.7.1 no " + BAD + b" later\r\n")
            elif verb == b"QUIT":
                f.write(b"221 bye\r\n")
                f.flush()
                break
            else:
                f.write(b"250 ok\r\n")
            f.flush()
        c.close()


def test_json_log_lines_are_utf8_whatever_the_peer_sent(make_sluiced):
    rcv = BadReplies()
    d = make_sluiced(conf={
        "log": {"format": "json"},
        "routes": {"*": f"[127.0.0.1]:{rcv.port}"},
        "delivery": {"retry_initial": "1h"},
    })
    send(d, "a@src.sluice.test", ["b@dst.sluice.test"])
    d.wait_log(r"no \\ufffd|no \ufffd", timeout=20)
    raw = d.log.read_bytes()
    raw.decode("utf-8")           # strict: the whole log is valid UTF-8
    events = [json.loads(l) for l in raw.splitlines() if l.strip()]
    replies = [v for e in events for v in e.values()
               if isinstance(v, str) and "451 4.7.1 no" in v]
    assert replies, events
    assert "451 4.7.1 no \ufffd\ufffd(\ufffd\ufffd\ufffd\ufffd! later" \
        in replies, replies
    rcv.sock.close()
