"""
injectutil.py: helpers of the injection tests: a sluiced with the HTTP API
and an API token routing everything to a `sluice sink`, a urllib client
for POST /api/v1/inject, reading what the sink caught, and a webhook
receiver (a Python HTTP server in a thread) that records the events.
"""
import email
import email.parser
import email.policy
import http.server
import json
import socket
import threading
import urllib.error
import urllib.request

from sluicetest import free_port, wait_until

TOKEN = "t0k3n-for-tests"


def inject_conf(tmp_path, sink_port, extra=None):
    """Settings for make_sluiced: HTTP API with a token, mail to the sink."""
    tok = tmp_path / "api.token"
    tok.write_text(TOKEN + "\n")
    conf = {
        "http": {"listen": f"127.0.0.1:{free_port()}",
                 "api_token_file": str(tok)},
        "routes": {"*": f"[127.0.0.1]:{sink_port}"},
        "delivery": {"retry_initial": "1s", "retry_max": "2s"},
        "control": {"socket": str(tmp_path / "ctl.sock")},
    }
    for section, kv in (extra or {}).items():
        conf.setdefault(section, {}).update(kv)
    return conf


def api_port(d):
    return int(d.conf["http"]["listen"].rsplit(":", 1)[1])


def inject(d, req, key=None, token=TOKEN, raw=None, timeout=120):
    """POST the request; returns (status, parsed JSON answer)."""
    body = raw if raw is not None else json.dumps(req).encode()
    hdrs = {"Content-Type": "application/json"}
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if key is not None:
        hdrs["Idempotency-Key"] = key
    r = urllib.request.Request(
        f"http://127.0.0.1:{api_port(d)}/api/v1/inject", data=body,
        headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def api_get(d, path, token=TOKEN):
    """GET an /api/v1/ path; returns (status, parsed JSON)."""
    r = urllib.request.Request(f"http://127.0.0.1:{api_port(d)}{path}",
                               headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


_headers = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def to_of(raw):
    """The To: field of a message, from its header alone: parse() costs
    milliseconds a message, seconds for the thousands a test may count."""
    return _headers.parsebytes(raw)["To"]


def parts(msg):
    """(text, html) of a built message: the decoded bodies."""
    text = html = None
    for p in msg.walk():
        if p.get_content_type() == "text/plain":
            text = p.get_content()
        elif p.get_content_type() == "text/html":
            html = p.get_content()
    return text, html


def sink_count(sink):
    import os
    try:
        return len(os.listdir(os.path.join(sink.maildir, "new")))
    except FileNotFoundError:
        return 0


class Webhook:
    """An HTTP server on 127.0.0.1 that records the events POSTed to it
    (JSON arrays). start() may be called later than construction: the
    port is chosen at once, so sluiced can be pointed at it while down."""

    def __init__(self, port=None, status=200):
        self.port = port or free_port()
        self.events = []
        self.posts = 0
        self.status = status
        self.lock = threading.Lock()
        self.srv = None

    def start(self):
        hook = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                data = json.loads(self.rfile.read(n))
                with hook.lock:
                    hook.posts += 1
                    if hook.status == 200:
                        hook.events.extend(data)
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                   H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    def of(self, kind):
        with self.lock:
            return [e for e in self.events if e.get("event") == kind]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"
