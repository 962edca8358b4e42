# SPDX-License-Identifier: MIT
"""sinkutil.py: start and stop `sluice sink` for the system tests.

A Sink runs build/sluice sink on 127.0.0.1 port 0 (the kernel picks a free
one), reads the ports it prints, and on stop() sends SIGTERM and returns
the exit code. The binary directory comes from SLUICE_BUILD (default
"build").
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sluice_bin():
    build = os.environ.get("SLUICE_BUILD", "build")
    if not os.path.isabs(build):
        build = os.path.join(ROOT, build)
    return os.path.join(build, "sluice")


def run_sluice(*args, timeout=120):
    """Run `sluice ARGS` to completion; returns the CompletedProcess."""
    return subprocess.run([sluice_bin(), *args], capture_output=True,
                          text=True, timeout=timeout)


class Sink:
    def __init__(self, tmp_path, *args, http=False, maildir=True,
                 stats_json=True, seed=1, pop3=False):
        self.dir = tmp_path
        self.maildir = str(tmp_path / "Maildir") if maildir else None
        self.stats_path = str(tmp_path / "stats.json") if stats_json else None
        self.out_path = tmp_path / "sink.out"
        self.err_path = tmp_path / "sink.err"
        cmd = [sluice_bin(), "sink", "--listen", "127.0.0.1:0",
               "--seed", str(seed)]
        cmd += ["--maildir", self.maildir] if maildir else ["--discard"]
        if http:
            cmd += ["--http", "127.0.0.1:0"]
        if pop3:
            cmd += ["--pop3", "127.0.0.1:0"]
        if stats_json:
            cmd += ["--stats-json", self.stats_path]
        cmd += list(args)
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err)
        self.port = self.http_port = self.pop3_port = None
        deadline = time.time() + 10
        while time.time() < deadline:
            text = self.out_path.read_text()
            for line in text.splitlines():
                if "listening on" in line:
                    self.port = int(line.rsplit(":", 1)[1])
                if "http on" in line:
                    self.http_port = int(line.rsplit(":", 1)[1])
                if "pop3 on" in line:
                    self.pop3_port = int(line.rsplit(":", 1)[1])
            if self.port and (self.http_port or not http) and \
                    (self.pop3_port or not pop3):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("sink did not start: " + self.err_path.read_text())

    def stats(self):
        """The statistics, via SIGUSR1 and --stats-json."""
        before = os.stat(self.stats_path).st_mtime_ns if os.path.exists(
            self.stats_path) else 0
        os.unlink(self.stats_path) if before else None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(self.stats_path):
                with open(self.stats_path) as f:
                    return json.load(f)
            time.sleep(0.02)
        raise RuntimeError("no stats written")

    def api(self, path, method="GET", raw=False, headers=None):
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.http_port, path), method=method,
            headers=headers or {})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return body if raw else json.loads(body)

    def http(self, path, method="GET", headers=None):
        """(status, headers, body) of one request, errors included."""
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.http_port, path), method=method,
            headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def messages(self):
        """The captured files in new/, sorted by name: list of bytes."""
        d = os.path.join(self.maildir, "new")
        return [open(os.path.join(d, n), "rb").read()
                for n in sorted(os.listdir(d))]

    def index(self):
        with open(os.path.join(self.maildir, "index.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.err.close()
        return self.proc.returncode

    def check_clean(self):
        """Stop, and assert a clean exit with no sanitizer report."""
        rc = self.stop()
        err = self.stderr_text()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert bad not in err, err
        assert rc == 0, "sink exited %r: %s" % (rc, err)

    def stderr_text(self):
        return self.err_path.read_text()

    def stdout_text(self):
        return self.out_path.read_text()


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def read_reply(f):
    """Read one (possibly multi-line) reply from a socket file: (code, text)."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            return (None, "\n".join(lines))
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return (int(line[:3]), "\n".join(lines))
