"""
SMTP loops of their own ([server] loops, issue 16): sessions spread over
the loops by the kernel (SO_REUSEPORT), each session on one loop from start
to end, so nothing a client sends on one connection is lost or answered
out of order; the counters add up over the loops; drain and resume, reload
and shutdown reach every loop; and loops = 1 (everything on the main loop)
still does it all.
"""
import concurrent.futures
import json
import re
import threading

from ops_util import run_sluice
from sluicetest import Raw, mid_of, port_listening, wait_until

CONNS = 24
PER_CONN = 12


def pipelined_messages(d, conn_id):
    """One connection sends PER_CONN messages in one go (BDAT LAST needs
    no 354, so the whole batch is pipelined, RFC 3030), then reads every
    reply: [(token, MID)] in the order sent."""
    with Raw(d.port, timeout=60) as c:
        assert "CHUNKING" in c.ehlo()
        batch = b""
        tokens = []
        for j in range(PER_CONN):
            token = f"loops-{conn_id}-{j}-token"
            body = (f"Subject: {token}\r\n\r\n{token}\r\n").encode()
            batch += (b"MAIL FROM:<s@client.sluice.test>\r\n"
                      b"RCPT TO:<r@local.test>\r\n" +
                      b"BDAT %d LAST\r\n" % len(body) + body)
            tokens.append(token)
        c.send(batch)
        got = []
        for token in tokens:
            c.expect("250")            # MAIL
            c.expect("250")            # RCPT
            r = c.reply()              # the data, durable
            assert r.startswith("250 2.0.0 Ok: queued as"), r
            got.append((token, mid_of(r)))
        c.cmd("QUIT")
        return got


def test_every_message_of_every_connection_in_order(make_sluiced):
    d = make_sluiced(conf={"server": {"loops": "2"}})
    with concurrent.futures.ThreadPoolExecutor(CONNS) as ex:
        results = list(ex.map(lambda i: pipelined_messages(d, i),
                              range(CONNS)))
    bodies = d.spool.bodies()
    assert len(bodies) == CONNS * PER_CONN
    for got in results:
        mids = [m for _, m in got]
        # answered in the order sent, each its own message: MIDs grow
        # with arrival, and the MID answered for a token stores it
        assert mids == sorted(mids) and len(set(mids)) == len(mids)
        for token, mid in got:
            assert token.encode() in bodies[mid], (token, mid)
    # the kernel spread the sessions over both loops
    loops = set(re.findall(r"New SMTP connection .* loop=(\d)",
                           d.log_text()))
    assert loops == {"0", "1"}, loops
    d.stop()
    assert d.spool.count() == CONNS * PER_CONN


def test_counters_drain_shutdown_reach_every_loop(make_sluiced, tmp_path):
    d = make_sluiced(conf={"server": {"loops": "2"},
                           "control": {"socket": str(tmp_path / "s.sock")}})
    # every loop counts into status
    for i in range(8):
        pipelined_messages(d, 100 + i)
    s = json.loads(run_sluice("status", "--json",
                              conf=d.conf_path).stdout)
    assert s["messages"]["received"] == 8 * PER_CONN
    assert s["connections"]["in_total"] >= 8
    # drain: no loop listens any more; resume: both listen again
    r = run_sluice("drain", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: not port_listening(d.port),
               what="the port closed on every loop")
    r = run_sluice("undrain", conf=d.conf_path)
    assert r.returncode == 0, r.stderr
    got = pipelined_messages(d, 200)
    assert len(got) == PER_CONN
    # a session in the middle of a message at SIGTERM finishes it
    c = Raw(d.port, timeout=30)
    c.ehlo()
    c.expect_ok("MAIL FROM:<s@client.sluice.test>")
    c.expect_ok("RCPT TO:<r@local.test>")
    c.send("DATA\r\n")
    c.expect("354")
    stopper = threading.Thread(target=d.stop)
    stopper.start()
    d.wait_log(r"shutting down")
    c.send(b"Subject: late\r\n\r\nlate-token\r\n.\r\n")
    r = c.reply()
    assert r.startswith("250 2.0.0 Ok: queued as"), r
    c.close()
    stopper.join(60)
    assert d.spool.bodies_containing(b"late-token")


def test_one_loop_does_it_all(make_sluiced):
    d = make_sluiced(conf={"server": {"loops": "1"}})
    got = pipelined_messages(d, 0)
    assert len(got) == PER_CONN
    assert "loop=" not in d.log_text()
    assert "SMTP loops started" not in d.log_text()


def test_auth_lockout_and_rate_are_one_for_all_loops(make_sluiced, cert,
                                                     tmp_path):
    """What the server remembers per client address (AUTH failures, new
    connections per minute) is one table for all loops: an address locked
    out on one loop is locked out on every loop, and the rate counts every
    connection whichever loop took it. Before the table was the root's,
    each loop kept its own: about half the connections after the lockout
    reached a loop that had seen no failure."""
    import smtplib
    from test_submission import PASSWORD, add_user, auth_plain, tls_client
    from sluicetest import free_port
    c, k = cert
    users = tmp_path / "users"
    add_user(users, "bob", PASSWORD)
    d = make_sluiced(conf={
        "server": {"loops": "2", "tls_cert": str(c), "tls_key": str(k),
                   "connection_rate_per_ip": "1000"},
        "submission": {"listen": f"127.0.0.1:{free_port()}"},
        "auth": {"users_file": str(users), "failure_delay": "1s",
                 "max_failures": "2", "lockout": "10m"}})
    port = int(d.conf["submission"]["listen"].rsplit(":", 1)[1])
    wait_until(lambda: "service=submission" in d.log_text(),
               what="submission listener")
    s = tls_client(port, "127.0.0.5")
    assert auth_plain(s, "bob", "wrong")[0] == 535
    assert auth_plain(s, "bob", "wrong")[0] == 421
    s.close()
    # every later connection from that address, whichever loop takes it
    for _ in range(12):
        s = tls_client(port, "127.0.0.5")
        code, msg, _ = auth_plain(s, "bob", PASSWORD)
        assert code == 421, msg
        try:
            s.close()
        except smtplib.SMTPException:
            pass
    loops = set(re.findall(r"New SMTP connection .*127\.0\.0\.5.* loop=(\d)",
                           d.log_text()))
    assert loops == {"0", "1"}, loops
    # another address is not affected
    s = tls_client(port, "127.0.0.6")
    assert auth_plain(s, "bob", PASSWORD)[0] == 235
    s.quit()
