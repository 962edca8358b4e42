"""
Injection from RabbitMQ: Debian's rabbitmq-server, started once for this
module on loopback with its own node name, ports (AMQP, distribution,
epmd) and data directory; requests published with pika. sluiced consumes
them ([amqp]), acknowledges each only once it is durably queued, survives
kill -9 in the middle, dead-letters a malformed request with the
reason, and DKIM-signs what it consumed ([dkim] sign).
"""
import json
import os
import signal
import subprocess
import time

import pytest

from dkimutil import keygen, signature, verify
from injectutil import inject_conf, parse, sink_count, to_of
from sluicetest import free_port, port_listening, scaled, wait_until

pika = pytest.importorskip("pika")  # python3-pika, in scripts/deps.sh

# the scripts themselves: /usr/sbin's wrappers switch to the rabbitmq user
# (another HOME, another Erlang cookie than the broker the test started)
RMQ = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    base = tmp_path_factory.mktemp("rabbitmq")
    port, dist, epmd = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "RABBITMQ_NODENAME": f"sluicetest{os.getpid()}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "env.conf"),
        "HOME": str(base),
    })
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{port}\n")
    (base / "env.conf").write_text("")
    out = open(base / "out.log", "w")
    proc = subprocess.Popen([RMQ], env=env, stdout=out, stderr=out,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: port_listening(port) or proc.poll() is not None,
                   timeout=120, interval=0.2, what="rabbitmq-server")
        assert proc.poll() is None, (base / "out.log").read_text()[-3000:]
        yield {"port": port, "url": f"amqp://guest:guest@127.0.0.1:{port}/",
               "env": env}
    finally:
        # the broker and the epmd it started, both ours: by their group
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run(["epmd", "-kill"], env=env, capture_output=True,
                       timeout=30)
        out.close()


def channel(broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=broker["port"],
        credentials=pika.PlainCredentials("guest", "guest")))
    return conn, conn.channel()


def publish(ch, queue, body, key=None, headers=None):
    props = pika.BasicProperties(delivery_mode=2, message_id=key,
                                 headers=headers,
                                 content_type="application/json")
    ch.basic_publish(exchange="", routing_key=queue, body=body,
                     properties=props)


def request(i):
    return json.dumps({"from": "app@example.test",
                       "subject": "Order {{n}}",
                       "text": "Your order {{n}} shipped.\n",
                       "recipients": [{"email": f"r{i}@mq.test",
                                       "vars": {"n": str(i)}}]}).encode()


@pytest.fixture
def mq_world(broker, make_sluiced, make_sink, tmp_path, request):
    def make(queue):
        sink = make_sink()
        conf = inject_conf(tmp_path, sink.port, {"amqp": {
            "url": broker["url"], "queue": queue,
            "dead_letter_queue": queue + ".dead", "prefetch": "50"}})
        d = make_sluiced(conf=conf)
        d.wait_log("amqp: connected")
        conn, ch = channel(broker)
        return d, sink, conn, ch
    return make


@pytest.mark.slow
def test_1000_requests_kill9_each_delivered_once(mq_world):
    d, sink, conn, ch = mq_world("inject.kill9")
    n = scaled(1000, 300)
    for i in range(n):
        # the key as the message-id property for half, a header for half
        if i % 2:
            publish(ch, "inject.kill9", request(i), key=f"req-{i}")
        else:
            publish(ch, "inject.kill9", request(i),
                    headers={"Idempotency-Key": f"req-{i}"})
    wait_until(lambda: sink_count(sink) >= n // 3, timeout=120,
               what=f"{n // 3} delivered")
    d.kill9()
    d.start()
    d.wait_log("amqp: connected")
    want = {f"r{i}@mq.test" for i in range(n)}

    def seen():
        return {to_of(m) for m in sink.messages()}
    wait_until(lambda: seen() >= want, timeout=300,
               what=f"all {n} delivered")
    time.sleep(2)
    counts = {}
    for m in sink.messages():
        p = parse(m)
        counts[str(p["To"])] = counts.get(str(p["To"]), 0) + 1
        n = str(p["To"])[1:].split("@")[0]
        assert f"Your order {n} shipped." in p.get_content()
    assert set(counts) == want
    twice = sorted(k for k, v in counts.items() if v == 2)
    assert all(v <= 2 for v in counts.values()), counts
    # at most twice, only where a delivery was in flight at the kill
    print(f"\namqp kill -9: {n} requests, {len(twice)} delivered twice "
          "(in flight at the kill)")
    assert len(twice) <= 100
    # nothing left unacknowledged in the broker
    q = ch.queue_declare("inject.kill9", durable=True, passive=True)
    wait_until(lambda: ch.queue_declare("inject.kill9", durable=True,
                                        passive=True).method.message_count
               == 0, what="queue drained")
    conn.close()


def test_malformed_request_dead_lettered_with_reason(mq_world):
    d, sink, conn, ch = mq_world("inject.bad")
    publish(ch, "inject.bad", b'{"from": "a@example.test", "recipients": [',
            key="bad-1")
    publish(ch, "inject.bad", request(1), key="good-1")
    wait_until(lambda: sink_count(sink) == 1, what="the good one delivered")

    def dead():
        m, props, body = ch.basic_get("inject.bad.dead", auto_ack=True)
        return (props, body) if m else None
    props, body = wait_until(dead, what="the bad one dead-lettered")
    assert body == b'{"from": "a@example.test", "recipients": ['
    assert "not valid JSON" in props.headers["x-sluice-reason"]
    assert props.headers["idempotency-key"] == "bad-1"
    # a redelivered request (same key) is injected once
    publish(ch, "inject.bad", request(1), key="good-1")
    d.wait_log("injection repeated: first answer returned")
    time.sleep(1)
    assert sink_count(sink) == 1
    conn.close()


def test_broker_restart_reconnects(broker, make_sluiced, make_sink,
                                   tmp_path):
    """A broker that is not there at start: sluiced runs (SMTP, HTTP) and
    connects once it is."""
    sink = make_sink()
    conf = inject_conf(tmp_path, sink.port, {"amqp": {
        "url": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}})
    d = make_sluiced(conf=conf)
    d.wait_log("amqp: cannot connect")
    from injectutil import inject
    code, ans = inject(d, {"from": "a@example.test", "subject": "s",
                           "text": "t", "recipients": [{"email":
                                                         "x@y.test"}]})
    assert code == 200
    wait_until(lambda: sink_count(sink) == 1, what="HTTP injection works")


def test_connection_closed_by_the_broker_is_made_again(mq_world, broker):
    d, sink, conn, ch = mq_world("inject.reconnect")
    publish(ch, "inject.reconnect", request(1), key="rc-1")
    wait_until(lambda: sink_count(sink) == 1, what="the first delivered")
    conn.close()
    r = subprocess.run([RMQCTL, "-n", broker["env"]["RABBITMQ_NODENAME"],
                        "close_all_connections", "test: gone"],
                       env=broker["env"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    d.wait_log("amqp: connection lost")
    d.wait_log(r"amqp: connected.*\n(.|\n)*amqp: connected", timeout=30)
    conn, ch = channel(broker)
    publish(ch, "inject.reconnect", request(2), key="rc-2")
    wait_until(lambda: sink_count(sink) == 2, what="the second delivered")
    conn.close()


def test_consumed_requests_are_dkim_signed(broker, make_sluiced, make_sink,
                                           tmp_path):
    """[dkim] sign covers the RabbitMQ path too: a templated request with
    recipients whose bodies differ arrives with one valid signature per
    message (dkimpy against the key's TXT record)."""
    key, txt = keygen(tmp_path, "example.test", "mq2026", ed25519=True)
    records = {"mq2026._domainkey.example.test": txt}
    sink = make_sink()
    conf = inject_conf(tmp_path, sink.port, {
        "amqp": {"url": broker["url"], "queue": "inject.dkim",
                 "dead_letter_queue": "inject.dkim.dead"},
        "dkim": {"sign": f"example.test:mq2026:{key}"}})
    d = make_sluiced(conf=conf)
    d.wait_log("amqp: connected")
    conn, ch = channel(broker)
    n = 5
    publish(ch, "inject.dkim", json.dumps({
        "from": "App <app@example.test>", "subject": "Order {{n}}",
        "text": "Your order {{n}} shipped.\n",
        "html": "<p>Order <b>{{n}}</b></p>",
        "recipients": [{"email": f"r{i}@mq.test", "vars": {"n": f"N{i}"}}
                       for i in range(n)]}).encode(), key="dkim-1")
    wait_until(lambda: sink_count(sink) == n, what=f"{n} delivered")
    bodies = set()
    for m in sink.messages():
        tags = signature(m)
        assert (tags["a"], tags["d"], tags["s"]) == (
            "ed25519-sha256", "example.test", "mq2026"), tags
        assert verify(m, records), m[:800]
        i = str(parse(m)["To"]).strip("<>")[1:].split("@")[0]
        body = m.split(b"\r\n\r\n", 1)[1]
        assert f"Your order N{i} shipped.".encode() in body
        bodies.add(body)
        assert not verify(m.replace(b"N%s" % i.encode(), b"M%s" %
                                    i.encode()), records)
    assert len(bodies) == n
    conn.close()
