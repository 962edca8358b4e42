"""
test_hostile.py: clients an attacker would write, against sluiced and
`sluice sink` (both are src/smtpd): a reject that closes the session stays
closed (no fd or per-address slot kept, nothing executed after the 421).
"""
from sluicetest import Raw, wait_until


# ---- CLOSING is terminal (session.c smtpd_enter) ----

def untrusted_one_per_ip(make_sluiced, **server):
    conf = {"max_connections_per_ip": "1", "max_errors": "2",
            "trusted_networks": "192.0.2.0/24", "local_domains": "local.test"}
    conf.update(server)
    return make_sluiced(conf={"server": conf})


def test_closed_session_frees_its_per_ip_slot(make_sluiced):
    """The 421 of max_errors, reached by the reject at the end of DATA, then
    pipelined commands: the session is closed and freed, so the client's
    only per-address slot is free again for its next connection."""
    d = untrusted_one_per_ip(make_sluiced)
    for attempt in range(3):
        with Raw(d.port) as c:
            assert c.greeting.startswith("220"), (attempt, c.greeting)
            c.ehlo()
            c.send("BOGUS\r\n")
            c.expect("500")
            c.send(b"MAIL FROM:<a@client.sluice.test>\r\n"
                   b"RCPT TO:<b@local.test>\r\nDATA\r\n")
            c.expect("250")
            c.expect("250")
            c.expect("354")
            c.send(b"Subject: x\r\n\r\nbare\nLF\r\n.\r\nNOOP\r\nRSET\r\n")
            c.expect("550 5.5.2")
            c.expect("421 4.7.0")
            c.expect_closed()
        # the server saw its own close: the slot is released
        wait_until(lambda: d.log_text().count("connection closed") > attempt,
                   what="session freed")
    assert d.spool.count() == 0


def test_check_421_at_first_bdat_is_final(make_sink):
    """The sink's rule answers the first BDAT with 421: the chunk is not
    read, and the commands pipelined after it are not executed."""
    sink = make_sink("--rule", "rate 421 1 at data")
    with Raw(sink.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@sink.test>\r\n")
        c.expect("250")
        c.expect("250")
        c.send(b"BDAT 6\r\nRSET\r\nNOOP\r\nMAIL FROM:<c@client.test>\r\n")
        c.expect("421")
        c.expect_closed()
    st = sink.stats()
    assert st["replies"].get("250", 0) == 3, st["replies"]
