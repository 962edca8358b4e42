# SPDX-License-Identifier: MIT
"""
netns_util.py: a small network of Linux network namespaces that a test
creates and removes: a switch namespace holding one bridge, and a node
namespace per host, each joined to the bridge by a veth pair, with its own
address (10.77.N.0/24 by default) and its own loopback. Nothing touches the
host's network: every link and address lives in the namespaces.

  net = Net("c1")                    # prefix for names; a /24 is chosen
  a = net.add("fe1")                 # "10.77.N.11"... (a Host)
  p = a.popen(["sluiced", ...])      # runs inside fe1 (ip netns exec)
  with a.inside(): socket.create_connection(...)   # this thread, in fe1
  net.close()                        # ends what it started, deletes all

Processes are ended by their pids (SIGTERM, then SIGKILL), then the
namespaces are deleted, which removes their links.
"""
import ctypes
import itertools
import os
import signal
import subprocess
import threading
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_lock = threading.Lock()


def sh(*args):
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


@contextmanager
def setns(path):
    """Move the calling thread into the network namespace at path, and
    back when the block ends. Sockets made inside stay in it."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net",
                  os.O_RDONLY)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns " + path)
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(fd)
        os.close(own)


class Host:
    def __init__(self, net, name, addr, idx):
        self.net, self.name, self.addr, self.idx = net, name, addr, idx
        self.ns = f"{net.prefix}-{name}"
        self.procs = []

    def popen(self, cmd, **kw):
        """Start cmd in this namespace; it is ended by Net.close()."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + list(cmd),
                             **kw)
        self.procs.append(p)
        return p

    def run(self, cmd, **kw):
        kw.setdefault("timeout", 120)
        return subprocess.run(["ip", "netns", "exec", self.ns] + list(cmd),
                              **kw)

    @contextmanager
    def inside(self):
        with setns(f"/run/netns/{self.ns}"):
            yield


_veths = itertools.count(1)


class Net:
    def __init__(self, tag, subnet=None):
        # names are this process's alone: parallel test processes (xdist
        # workers, another build's run) make their own networks at once
        self.prefix = f"sl{os.getpid()}{tag}"
        self.subnet = subnet or f"10.77.{os.getpid() % 200 + 20}"
        self.sw = f"{self.prefix}-sw"
        self.hosts = {}
        with _lock:
            sh("ip", "netns", "add", self.sw)
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        sh("ip", "-n", self.sw, "link", "set", "lo", "up")

    def add(self, name, host_id=None):
        """A host with address SUBNET.host_id (default 10 + its number)."""
        idx = len(self.hosts) + 1
        addr = f"{self.subnet}.{host_id or 10 + idx}"
        h = Host(self, name, addr, idx)
        # veth names are per namespace, but the pair is made in ours, where
        # a name has at most 15 bytes: the pid and a number of this process
        n = next(_veths)
        a, b = f"sl{os.getpid()}h{n}", f"sl{os.getpid()}s{n}"
        sh("ip", "netns", "add", h.ns)
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", h.ns)
        sh("ip", "link", "set", b, "netns", self.sw)
        sh("ip", "-n", h.ns, "link", "set", a, "name", "eth0")
        sh("ip", "-n", h.ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", h.ns, "link", "set", "eth0", "up")
        sh("ip", "-n", h.ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.sw, "link", "set", b, "master", "br0")
        sh("ip", "-n", self.sw, "link", "set", b, "up")
        self.hosts[name] = h
        return h

    def close(self):
        procs = [p for h in self.hosts.values() for p in h.procs]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for h in self.hosts.values():
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.sw], capture_output=True)
