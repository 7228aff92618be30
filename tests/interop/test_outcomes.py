"""Outcome classes and the retry policy on real brokers: a misconfigured bridge stops (fatal)
while the others run on; a message that keeps coming back is counted by the gateway's own
header and dead-lettered with reason `max-retries` (case 3)."""

import json
import shutil
import subprocess
import uuid

import pika
import pytest

from conftest import KAFKA_BROKERS, RABBIT_URL, create_topic, free_port, unique, wait_until
from faults import TANSU_BIN, tansu  # noqa: F401 (fixture)
from wire091 import typed_get

RETRY = {"initial_backoff": "20ms", "max_backoff": "200ms", "multiplier": 2.0}
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def config(bridges, rabbit_url=RABBIT_URL):
    connections = {
        "rabbit": {"protocol": "amqp091", "url": RABBIT_URL},
        "target": {"protocol": "amqp091", "url": rabbit_url},
        "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS},
    }
    return f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\n"


def publish(queue, count, prefix="m"):
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for n in range(count):
            ch.basic_publish("", queue, f"{prefix}-{n}".encode(), pika.BasicProperties(message_id=f"{prefix}-{n}"))
    finally:
        conn.close()


def metric(p, name):
    return p.metrics().get(name, 0)


def wait_stopped(p, part):
    """Waits until /readyz reports `part` stopped; returns that line."""

    def stopped():
        status, text = p.http("/readyz")
        lines = [line for line in text.splitlines() if line.startswith(f"{part}: stopped")]
        return status == 503 and lines and lines[0]

    return wait_until(stopped, 60, f"{part} stopped\n{p.log()[-2000:]}")


def fatal_and_healthy(portico, rabbit, broken_sink, rabbit_url=RABBIT_URL):
    """Runs a bridge whose sink is `broken_sink` beside a healthy one; returns (portico,
    the /readyz line of the broken bridge, its source queue)."""
    broken_src, good_src, good_dst = (rabbit.queue(unique(n)) for n in ("fatal-src", "ok-src", "ok-dst"))
    broken, good = unique("broken"), unique("good")
    publish(broken_src, 5)
    bridges = [
        {"name": broken, "source": {"connection": "rabbit", "queue": broken_src}, "sink": broken_sink, "retry": RETRY},
        {"name": good, "source": {"connection": "rabbit", "queue": good_src},
         "sink": {"connection": "rabbit", "exchange": "", "routing_key": good_dst}},
    ]
    p = portico(config(bridges, rabbit_url), ready=False)
    line = wait_stopped(p, f"{broken} sink")
    # The process and the other bridge keep running.
    publish(good_src, 3)
    wait_until(lambda: rabbit.depth(good_dst) == 3, 30, "the healthy bridge delivering")
    assert p.proc.poll() is None
    # Nothing of the broken bridge was acked: after its stop every message is back, ready.
    wait_until(lambda: rabbit.depth(broken_src) == 5, 30, f"5 messages back on {broken_src}")
    assert metric(p, "portico_messages_dead_lettered_total") == 0
    assert metric(p, "portico_messages_rejected_total") == 0
    wait_until(lambda: "Bridge stopped" in p.log(), 10, "the 'Bridge stopped' log line")
    assert p.stop() == 0
    return p, line


def test_a_missing_exchange_stops_that_bridge_only(portico, rabbit):
    exchange = unique("nowhere")
    sink = {"connection": "rabbit", "exchange": exchange, "routing_key": "k"}
    p, line = fatal_and_healthy(portico, rabbit, sink)
    print(line)
    assert f'exchange "{exchange}" does not exist' in line
    assert "declare.exchanges" in line
    assert "declare.exchanges" in p.log()


def test_an_exchange_deleted_while_running_stops_that_bridge(portico, rabbit):
    """The exchange existed when the bridge started and messages crossed; then it is deleted.
    The next publish closes the channel (NOT_FOUND): portico must ask again on the new channel
    and stop the bridge with the missing exchange named, not republish forever into a channel
    that closes each time. Nothing is lost: every message after the delete is back in the
    source."""
    exchange = unique("deleted")
    src, dst = rabbit.queue(unique("del-src")), rabbit.queue(unique("del-dst"))
    rabbit.ch.exchange_declare(exchange, "fanout", durable=False, auto_delete=False)
    rabbit.ch.queue_bind(dst, exchange)
    name = unique("deleted-exchange")
    bridges = [{"name": name, "source": {"connection": "rabbit", "queue": src},
                "sink": {"connection": "rabbit", "exchange": exchange, "routing_key": "k"},
                "retry": RETRY}]
    p = portico(config(bridges))
    publish(src, 3, prefix="before")
    wait_until(lambda: rabbit.depth(dst) == 3, 30, "3 messages through the exchange")
    rabbit.ch.exchange_delete(exchange)
    publish(src, 5, prefix="after")
    line = wait_stopped(p, f"{name} sink")
    print(line)
    assert f'exchange "{exchange}" does not exist' in line
    wait_until(lambda: rabbit.depth(src) == 5, 30, f"5 messages back on {src}")
    assert rabbit.depth(dst) == 3
    assert metric(p, "portico_messages_dead_lettered_total") == 0
    assert p.proc.poll() is None
    assert p.stop() == 0


def test_refused_credentials_stop_that_bridge_only(portico, rabbit):
    wrong = RABBIT_URL.replace("guest:guest@", "guest:not-the-password@")
    assert wrong != RABBIT_URL
    sink = {"connection": "target", "exchange": "", "routing_key": unique("never")}
    p, line = fatal_and_healthy(portico, rabbit, sink, rabbit_url=wrong)
    print(line)
    assert "refused access" in line and "ACCESS_REFUSED" in line
    assert "not-the-password" not in p.log(), "no secrets in the log"


R10_WRONG = {"protocol": "amqp10", "url": "amqp://guest:not-the-password@127.0.0.1:5672", "flavor": "rabbitmq"}


def source_refused(portico, rabbit, broken_source, connections):
    """Runs a bridge whose source's credentials the broker refuses beside a healthy one:
    the broken bridge stops (it does not keep reconnecting), /readyz names it and says what
    to fix, the other one runs on. Returns (portico, the /readyz line)."""
    good_src, good_dst, never = (rabbit.queue(unique(n)) for n in ("ok-src", "ok-dst", "never"))
    broken, good = unique("broken"), unique("good")
    bridges = [
        {"name": broken, "source": broken_source,
         "sink": {"connection": "rabbit", "exchange": "", "routing_key": never}, "retry": RETRY},
        {"name": good, "source": {"connection": "rabbit", "queue": good_src},
         "sink": {"connection": "rabbit", "exchange": "", "routing_key": good_dst}},
    ]
    text = config(bridges).replace("connections: {", "connections: {" + connections + ", ", 1)
    p = portico(text, ready=False)
    line = wait_stopped(p, f"{broken} source")
    publish(good_src, 3)
    wait_until(lambda: rabbit.depth(good_dst) == 3, 30, "the healthy bridge delivering")
    assert p.proc.poll() is None
    wait_until(lambda: "Bridge stopped" in p.log(), 10, "the 'Bridge stopped' log line")
    # Stopped for good: it logged the refusal once, and did not try again.
    assert "reconnecting" not in p.http("/readyz")[1]
    assert p.log().count("Lost the source's broker") == 0
    assert rabbit.depth(never) == 0
    assert p.stop() == 0
    assert "not-the-password" not in p.log(), "no secrets in the log"
    return p, line


def test_refused_credentials_on_a_091_source_stop_that_bridge_only(portico, rabbit):
    wrong = RABBIT_URL.replace("guest:guest@", "guest:not-the-password@")
    source = {"connection": "wrong", "queue": rabbit.queue(unique("src"))}
    wrong_conn = json.dumps({"protocol": "amqp091", "url": wrong})
    p, line = source_refused(portico, rabbit, source, f'"wrong": {wrong_conn}')
    print(line)
    assert "refused access" in line and "ACCESS_REFUSED" in line
    assert "check the user" in line


def test_refused_credentials_on_an_amqp10_source_stop_that_bridge_only(portico, rabbit):
    source = {"connection": "wrong", "queue": rabbit.queue(unique("src"))}
    p, line = source_refused(portico, rabbit, source, f'"wrong": {json.dumps(R10_WRONG)}')
    print(line)
    assert "refused access" in line and "check the user" in line


SCRAM = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "portico"}
SCRAM_PASSWORD = "the-right-password"


@pytest.fixture
def scram_tansu(tansu):  # noqa: F811 (the fixture imported above)
    """A Tansu of this test's own that requires SASL SCRAM-SHA-512: the user and a topic are
    made while it runs without authentication, then it restarts with `--authentication` on
    the same sqlite storage. The `tansu` fixture kills it at teardown."""
    kafka = tansu().start()
    subprocess.run(
        [TANSU_BIN, "user", "create", "--broker", f"tcp://{kafka.brokers}", "--mechanism", "scram512",
         SCRAM["sasl.username"], SCRAM_PASSWORD],
        check=True, capture_output=True, timeout=30,
    )
    kafka.topic = create_topic(unique("scram"), brokers=kafka.brokers)
    kafka.stop()
    kafka.authentication = True
    kafka.client = {**SCRAM, "sasl.password": SCRAM_PASSWORD}
    return kafka.start()


def test_refused_kafka_credentials_stop_that_bridge_only(portico, rabbit, scram_tansu):
    """A Kafka sink and a Kafka source with a wrong password stop their bridges, /readyz
    names them and says what to fix; the bridges with the right password carry messages
    through the same broker and topic."""
    kafka = scram_tansu
    topic, group = kafka.topic, unique("g")
    out_src, in_dst, never = (rabbit.queue(unique(n)) for n in ("out-src", "in-dst", "never"))
    broken_src = rabbit.queue(unique("broken-src"))
    good_out, good_in, bad_sink, bad_source = (unique(n) for n in ("out", "in", "bad-sink", "bad-source"))
    right = {"protocol": "kafka", "brokers": kafka.brokers, "options": {**SCRAM, "sasl.password": SCRAM_PASSWORD}}
    wrong = {"protocol": "kafka", "brokers": kafka.brokers, "options": {**SCRAM, "sasl.password": "not-the-password"}}
    bridges = [
        {"name": bad_sink, "source": {"connection": "rabbit", "queue": broken_src},
         "sink": {"connection": "wrong", "topic": topic}, "retry": RETRY},
        {"name": bad_source, "source": {"connection": "wrong", "topics": [topic], "group": unique("g")},
         "sink": {"connection": "rabbit", "exchange": "", "routing_key": never}},
        {"name": good_out, "source": {"connection": "rabbit", "queue": out_src},
         "sink": {"connection": "right", "topic": topic, "key": "{message_id}"}},
        {"name": good_in, "source": {"connection": "right", "topics": [topic], "group": group, "start": "earliest"},
         "sink": {"connection": "rabbit", "exchange": "", "routing_key": in_dst}},
    ]
    publish(broken_src, 5, prefix="never")
    extra = f'"right": {json.dumps(right)}, "wrong": {json.dumps(wrong)}'
    p = portico(config(bridges).replace("connections: {", "connections: {" + extra + ", ", 1), ready=False)

    for part in (f"{bad_sink} sink", f"{bad_source} source"):
        line = wait_stopped(p, part)
        print(line)
        assert "refused access" in line and "authentication" in line.lower(), line
        assert "sasl.password" in line, "says what to fix"

    publish(out_src, 5, prefix="sasl")
    got = rabbit.get(in_dst, 5, timeout=60)
    assert sorted(props.message_id for _, props, _ in got) == [f"sasl-{n}" for n in range(5)]
    assert sorted(body for _, _, body in got) == [f"sasl-{n}".encode() for n in range(5)]
    assert p.proc.poll() is None
    # The refused sink acked nothing; the refused source delivered nothing.
    wait_until(lambda: rabbit.depth(broken_src) == 5, 30, f"5 messages back on {broken_src}")
    assert rabbit.depth(never) == 0 and rabbit.depth(in_dst) == 0
    assert metric(p, "portico_messages_dead_lettered_total") == 0
    assert p.stop() == 0
    assert "not-the-password" not in p.log() and SCRAM_PASSWORD not in p.log(), "no secrets in the log"


def rabbitmqctl(*args):
    subprocess.run([RABBITMQCTL, "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def read_only_user():
    """A RabbitMQ user of this test's own on the shared broker: it may configure and read
    everything and write nothing. Deleted afterwards. Returns (name, password)."""
    name, password = unique("portico-ro"), uuid.uuid4().hex
    rabbitmqctl("add_user", name, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", name, ".*", "^$", ".*")
        yield name, password
    finally:
        rabbitmqctl("delete_user", name)


def test_refused_write_access_stops_that_bridge_only(portico, rabbit, read_only_user):
    """The user may connect (configure and read allowed), but may not write to the target
    exchange: fatal, not a per-message dead letter, and nothing is lost: every message is
    back in the source."""
    user, password = read_only_user
    exchange = unique("no-write")
    rabbit.ch.exchange_declare(exchange, "fanout", durable=False, auto_delete=False)
    try:
        url = RABBIT_URL.replace("guest:guest@", f"{user}:{password}@")
        assert url != RABBIT_URL
        sink = {"connection": "target", "exchange": exchange, "routing_key": "k"}
        p, line = fatal_and_healthy(portico, rabbit, sink, rabbit_url=url)
    finally:
        rabbit.ch.exchange_delete(exchange)
    print(line)
    assert "refused access" in line and "ACCESS_REFUSED" in line
    assert f"access to exchange '{exchange}' in vhost '/' refused for user '{user}'" in line
    assert "check the user and its permissions" in line
    assert "(access refused)" in line, "the outcome class's reason"
    assert password not in p.log(), "no secrets in the log"


def test_a_missing_kafka_topic_stops_that_bridge_only(portico, rabbit):
    """Not declared, not auto-created: a configuration fault, not an outage (the broker
    answers), and not the message's fault (the topic is the same for every message)."""
    topic = unique("missing")
    sink = {"connection": "kafka", "topic": topic}
    p, line = fatal_and_healthy(portico, rabbit, sink)
    print(line)
    assert f'topic "{topic}" does not exist' in line and "declare.topics" in line


def test_a_missing_topic_named_by_the_message_is_dead_lettered(portico, rabbit):
    """The same fault, when the message picks the topic, is that message's: dead-lettered,
    and the bridge goes on."""
    src, dlq = rabbit.queue(unique("src")), rabbit.queue(unique("dlq"))
    good = create_topic(unique("t"))
    name = unique("b")
    bridges = [{
        "name": name,
        "source": {"connection": "rabbit", "queue": src},
        "sink": {"connection": "kafka", "topic": "{header.topic}"},
        "dead_letter": {"connection": "rabbit", "exchange": "", "routing_key": dlq},
        "retry": RETRY,
    }]
    p = portico(config(bridges))
    rabbit.publish(src, b"lost", headers={"topic": unique("missing")})
    rabbit.publish(src, b"fine", headers={"topic": good})
    [(_, props, body, _)] = typed_get(rabbit, dlq, 1)
    assert body == b"lost"
    h = props.headers
    assert (h["portico.dlq.reason"], h["portico.dlq.class"]) == ("no such destination", "dead-letter")
    assert "does not exist" in h["portico.dlq.broker-error"]
    wait_until(lambda: metric(p, "portico_messages_delivered_total") == 1, 30, "the good one delivered")
    assert p.http("/readyz")[0] == 200


def test_case3_rejected_downstream_three_times_then_max_retries(portico, rabbit):
    """Case 3. The target queue's consumer rejects; the target's dead-letter exchange routes
    the message back to the source queue; the gateway delivers it again. It counts in its
    own header (RabbitMQ's x-death count is not trusted) and after retry.max_attempts (3)
    the message goes to the dead letter with reason max-retries."""
    source = rabbit.queue(unique("c3-src"))
    target = rabbit.queue(unique("c3-dst"), {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": source})
    dlq = rabbit.queue(unique("c3-dlq"))
    name = unique("c3")
    bridges = [{
        "name": name,
        "source": {"connection": "rabbit", "queue": source},
        "sink": {"connection": "rabbit", "exchange": "", "routing_key": target},
        "dead_letter": {"connection": "rabbit", "exchange": "", "routing_key": dlq},
        "retry": {**RETRY, "max_attempts": 3},
    }]
    p = portico(config(bridges))
    rabbit.publish(source, b"poison", message_id="c3-1", headers={"tenant": "t1"})

    seen = []
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        ch = conn.channel()

        def reject_one():
            method, props, body = ch.basic_get(target, auto_ack=False)
            if method is None:
                return False
            seen.append((props.headers.get("portico.attempts"), props.headers.get("portico.attempts.bridge"), body))
            ch.basic_reject(method.delivery_tag, requeue=False)
            return True

        for _ in range(3):
            wait_until(reject_one, 30, f"delivery {len(seen) + 1} on {target}")
    finally:
        conn.close()
    assert seen == [(1, name, b"poison"), (2, name, b"poison"), (3, name, b"poison")]

    [(_, props, body, _)] = typed_get(rabbit, dlq, 1)
    assert body == b"poison" and props.message_id == "c3-1"
    h = props.headers
    assert h["portico.dlq.reason"] == "max-retries"
    assert h["portico.dlq.class"] == "retry"
    assert h["portico.dlq.attempts"] == 3
    assert h["tenant"] == "t1"
    # RabbitMQ counted too, in its own way; the gateway did not use it.
    assert [d["reason"] for d in h["x-death"]] == ["rejected"]
    wait_until(lambda: metric(p, "portico_messages_dead_lettered_total") == 1, 10, "1 dead-lettered")
    # Never a fourth delivery, never a loop: everything is settled and every queue is empty.
    assert metric(p, "portico_messages_delivered_total") == 3
    assert (rabbit.depth(source), rabbit.depth(target), rabbit.depth(dlq)) == (0, 0, 0)


def test_a_log_written_to_a_file_is_plain_text(portico, rabbit):
    """stderr is a file here, not a terminal: no colour escapes in what log shippers read."""
    src, dst = rabbit.queue(unique("log-src")), rabbit.queue(unique("log-dst"))
    bridges = [{"name": unique("log"), "source": {"connection": "rabbit", "queue": src},
                "sink": {"connection": "rabbit", "exchange": "", "routing_key": dst}}]
    p = portico(config(bridges))
    publish(src, 1)
    wait_until(lambda: rabbit.depth(dst) == 1, 30, "the message crossing")
    assert p.stop() == 0
    log = p.log()
    assert "Connected AMQP 0-9-1 sink" in log
    assert "\x1b[" not in log, log[:500]


def test_a_source_that_cannot_connect_names_its_broker_once(portico, rabbit):
    """Nothing listens on the source's port: /readyz says so, with the (redacted) URL once."""
    port = free_port()
    url = RABBIT_URL.replace("127.0.0.1:5672", f"127.0.0.1:{port}")
    assert url != RABBIT_URL
    dst, name = rabbit.queue(unique("nc-dst")), unique("no-connect")
    bridges = [{"name": name, "source": {"connection": "target", "queue": "q"},
                "sink": {"connection": "rabbit", "exchange": "", "routing_key": dst}}]
    p = portico(config(bridges, rabbit_url=url), ready=False)

    def waiting():
        status, body = p.http("/readyz")
        lines = [line for line in body.splitlines() if line.startswith(f"{name} source: waiting")]
        return status == 503 and lines and "cannot connect" in lines[0] and lines[0]

    line = wait_until(waiting, 30, f"{name} source waiting to connect")
    print(line)
    assert line.count(f"127.0.0.1:{port}") == 1, line
    assert "guest:guest" not in line
    assert p.stop() == 0
