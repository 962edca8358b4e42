"""
ops_util.py: helpers of the operations tests (test_ops.py).

  Receiver        a small SMTP server the test controls: it answers RCPT
                  with 451 (or another reply) for the addresses it is told
                  to defer, 250 otherwise, and records what it got
  run_sluice      the `sluice` command line, optionally as another user
  ops_conf        daemon settings: routes to the receiver, fast retries,
                  an absolute control socket and a metrics port
  parse_prom      a small parser of the Prometheus text format
"""
import fnmatch
import os
import socket
import socketserver
import subprocess
import threading
import urllib.request

from sluicetest import BUILD, free_port, wait_until

SLUICE = BUILD / "sluice"


class _Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        rcv = self.server.receiver
        with rcv.lock:
            rcv.connections += 1
        self.reply("220 receiver.sluice.test ESMTP test receiver")
        mail_from, rcpts = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-receiver.sluice.test\r\n250 8BITMIME"
                           if verb == "EHLO" else "250 receiver")
            elif verb == "MAIL":
                mail_from = cmd[cmd.index("<") + 1:cmd.rindex(">")]
                rcpts = []
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = cmd[cmd.index("<") + 1:cmd.rindex(">")]
                with rcv.lock:
                    rcv.attempts[addr] = rcv.attempts.get(addr, 0) + 1
                    refusal = rcv.refusal_for(addr)
                if refusal:
                    self.reply(refusal)
                else:
                    rcpts.append(addr)
                    self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if not rcpts:
                    self.reply("554 5.5.1 No valid recipients")
                    continue
                self.reply("354 go ahead")
                data = b""
                while True:
                    l = self.rfile.readline()
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b".") else l
                with rcv.lock:
                    rcv.messages.append({"mail_from": mail_from,
                                         "rcpts": list(rcpts),
                                         "data": data})
                self.reply("250 2.0.0 Ok: received")
                rcpts = []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self.reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Unknown command")


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Receiver:
    """An SMTP receiver on 127.0.0.1:port. defer(pattern, reply) makes RCPT
    of matching addresses (glob) answer reply; accept_all() stops that."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.attempts = {}
        self.connections = 0
        self.rules = []
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.receiver = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def refusal_for(self, addr):
        for pattern, reply in self.rules:
            if fnmatch.fnmatch(addr.lower(), pattern):
                return reply
        return None

    def defer(self, pattern="*", reply="451 4.7.1 Try again later"):
        with self.lock:
            self.rules.append((pattern, reply))

    def accept_all(self):
        with self.lock:
            self.rules = []

    def got(self, addr):
        """Messages delivered to addr."""
        with self.lock:
            return [m for m in self.messages if addr in m["rcpts"]]

    def tries(self, addr):
        with self.lock:
            return self.attempts.get(addr, 0)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def ops_conf(receiver, sock, retry="1s", extra=None, metrics_port=None):
    """Settings of a daemon whose mail all goes to receiver."""
    conf = {
        "control": {"socket": str(sock)},
        "http": {"listen": f"127.0.0.1:{metrics_port or free_port()}"},
        "delivery": {"retry_initial": retry, "retry_max": retry,
                     "connect_timeout": "5s", "idle_timeout": "1s"},
        "routes": {"*": f"[127.0.0.1]:{receiver.port}"},
    }
    for section, kv in (extra or {}).items():
        conf.setdefault(section, {}).update(kv)
    return conf


def run_sluice(*args, conf=None, input=None, as_nobody=False, argv0=None,
               timeout=60):
    """Run build/sluice with args (and -c conf); CompletedProcess, text."""
    cmd = [str(argv0 or SLUICE)] + [str(a) for a in args]
    if conf is not None:
        cmd += ["-c", str(conf)]
    if as_nobody:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup",
               "--clear-groups"] + cmd
    return subprocess.run(cmd, input=input, capture_output=True,
                          timeout=timeout,
                          text=not isinstance(input, bytes))


def send(d, sender, rcpts, subject="ops test", body=b"hello\r\n"):
    """Send one message to the daemon; its MID (hex string)."""
    from sluicetest import mid_of
    with d.connect() as c:
        c.ehlo()
        msg = (f"From: <{sender}>\r\nSubject: {subject}\r\n\r\n").encode() \
            + body
        r = c.send_message(sender, rcpts, msg)
        assert r.startswith("250"), r
        c.cmd("QUIT")
    return "%016X" % mid_of(r)


def scrape(port, path="/metrics"):
    """(status, content type, body text) of GET path."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def parse_prom(text):
    """Prometheus text format: {(name, frozenset(labels)): value}; every
    line must be a comment, blank, or 'name{labels} value'."""
    out = {}
    types = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            assert parts[1] in ("HELP", "TYPE"), line
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram",
                                    "summary", "untyped"), line
                types[parts[2]] = parts[3]
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_text, value = rest.rsplit("}", 1)
            labels = {}
            for item in _split_labels(labels_text):
                k, v = item.split("=", 1)
                assert v.startswith('"') and v.endswith('"'), line
                labels[k] = v[1:-1].replace('\\"', '"').replace(
                    "\\n", "\n").replace("\\\\", "\\")
        else:
            name, value = line.split(None, 1)
            labels = {}
        assert name.replace("_", "a").replace(":", "a").isalnum(), line
        out[(name.strip(), frozenset(labels.items()))] = float(value.strip())
    return out, types


def _split_labels(s):
    items, cur, quoted, esc = [], "", False, False
    for ch in s:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\":
            cur += ch
            esc = True
        elif ch == '"':
            cur += ch
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    return items


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def list_json(conf):
    r = run_sluice("queue", "list", "--json", conf=conf)
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout)


def wait_rcpt_state(conf, mid, state, timeout=15):
    """Wait until every recipient of mid is in state; the message."""
    def check():
        for m in list_json(conf):
            if m["mid"] == mid and all(r["state"] == state
                                       for r in m["recipients"]):
                return m
        return None
    return wait_until(check, timeout=timeout,
                      what=f"MID {mid} recipients {state}")


def traversable_dir(prefix="sluice-ops-"):
    """A new directory under /tmp that every user may traverse (0755):
    pytest's tmp_path is 0700, which nobody could not reach."""
    import tempfile
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o755)
    return d


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False
