"""`portico dlq replay` against real dead-letter destinations (a RabbitMQ queue read over AMQP
0-9-1 and over AMQP 1.0, a Kafka topic):
filters, --dry-run, removal only after the re-drive was confirmed, and a re-failure dead-lettered
again with its attempts counted on."""

import json
import subprocess

import pika
from confluent_kafka import Consumer, TopicPartition

from conftest import BIN, KAFKA_BROKERS, RABBIT_URL, consume, create_topic, produce, unique, wait_until
from wire091 import plain, typed_get


R10 = {"protocol": "amqp10", "url": "amqp://guest:guest@127.0.0.1:5672", "flavor": "rabbitmq"}


def config(bridges, declare=None):
    rabbit = {"protocol": "amqp091", "url": RABBIT_URL}
    if declare:
        rabbit["declare"] = declare
    connections = {"rabbit": rabbit, "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS}, "r10": R10}
    return f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\n"


def replay(path, *args):
    out = subprocess.run(
        [BIN, "dlq", "replay", "--config", str(path), *args],
        capture_output=True, text=True, timeout=120,
    )
    print(out.stdout, out.stderr)
    return out


def metric(p, name):
    return p.metrics().get(name, 0)


def bind(exchange, queue, key):
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        conn.channel().queue_bind(queue, exchange, key)
    finally:
        conn.close()


def unroutable_bridge(name, source, exchange, dead_letter):
    return {
        "name": name,
        "source": source,
        "sink": {"connection": "rabbit", "exchange": exchange, "routing_key": "orders"},
        "dead_letter": dead_letter,
        "retry": {"max_attempts": 5},
    }


def test_replay_from_a_rabbitmq_dead_letter_queue(portico, rabbit, tmp_path):
    src, dlq, target = (rabbit.queue(unique(n)) for n in ("rp-src", "rp-dlq", "rp-dst"))
    exchange, name = unique("rp-ex"), unique("rp")
    declare = {"exchanges": [{"name": exchange, "type": "direct", "durable": False}]}
    text = config([unroutable_bridge(name, {"connection": "rabbit", "queue": src}, exchange,
                                     {"connection": "rabbit", "exchange": "", "routing_key": dlq})], declare)
    p = portico(text)
    for n in range(4):
        rabbit.publish(src, f"order-{n}".encode(), message_id=f"m-{n}", headers={"n": n})
    wait_until(lambda: rabbit.depth(dlq) == 4, 30, "4 dead letters (unroutable)")
    assert p.stop() == 0
    path = p.config

    # --dry-run lists them and changes nothing; a filter that matches nothing replays nothing.
    out = replay(path, "--bridge", name, "--dry-run")
    assert out.returncode == 0
    assert out.stdout.count("reason=unroutable") == 4 and "message_id=m-3" in out.stdout
    assert "4 read, 4 matched, 0 replayed" in out.stdout
    out = replay(path, "--bridge", name, "--reason", "too large")
    assert "4 read, 0 matched, 0 replayed" in out.stdout
    out = replay(path, "--bridge", name, "--until", "1h")
    assert "0 matched" in out.stdout, "all were written less than an hour ago"
    wait_until(lambda: rabbit.depth(dlq) == 4, 10, "the dead letters still there")

    # Still unroutable: each fails again and is dead-lettered again, attempts counted on,
    # and the replay does not pick up its own new dead letters.
    out = replay(path, "--bridge", name, "--since", "1h")
    assert out.returncode == 0
    assert "4 read, 4 matched, 0 replayed, 4 dead-lettered again" in out.stdout
    again = typed_get(rabbit, dlq, 4)
    assert [plain(props.headers["portico.dlq.attempts"]) for _, props, _, _ in again] == [2, 2, 2, 2]
    assert rabbit.depth(dlq) == 0
    for _, props, body, _ in again:  # back where they were, for the real replay
        rabbit.publish(dlq, body, **{k: getattr(props, k) for k in ("message_id", "headers")})

    # Fixed: bound now. Every message arrives once, without the envelope, and the dead-letter
    # queue is empty only because each was confirmed.
    bind(exchange, target, "orders")
    out = replay(path, "--bridge", name)
    assert out.returncode == 0
    assert "4 read, 4 matched, 4 replayed, 0 dead-lettered again, 0 failed" in out.stdout
    got = rabbit.get(target, 4)
    assert sorted(props.message_id for _, props, _ in got) == [f"m-{n}" for n in range(4)]
    for _, props, body in got:
        n = int(props.message_id[2:])
        assert body == f"order-{n}".encode()
        assert props.headers["n"] == n
        assert not [h for h in props.headers if h.startswith("portico.dlq.")]
        assert props.headers["portico.attempts"] == 2, "the count goes on"
    assert rabbit.depth(dlq) == 0


def test_replay_from_an_amqp10_dead_letter_address(portico, rabbit, tmp_path):
    """The dead letters sit in a RabbitMQ queue written and read over AMQP 1.0 (/queue/NAME).
    One of another bridge shares the queue: it is never selected and stays."""
    src, other_src, dlq, target = (rabbit.queue(unique(n)) for n in ("rp10-src", "rp10-o", "rp10-dlq", "rp10-dst"))
    exchange, name, other = unique("rp10-ex"), unique("rp10"), unique("rp10-other")
    declare = {"exchanges": [{"name": exchange, "type": "direct", "durable": False}]}
    dead_letter = {"connection": "r10", "queue": dlq}
    text = config([unroutable_bridge(name, {"connection": "rabbit", "queue": src}, exchange, dead_letter),
                   unroutable_bridge(other, {"connection": "rabbit", "queue": other_src}, exchange, dead_letter)],
                  declare)
    p = portico(text)
    rabbit.publish(other_src, b"not-mine", message_id="o-1")
    wait_until(lambda: rabbit.depth(dlq) == 1, 30, "the other bridge's dead letter")
    for n in range(4):
        rabbit.publish(src, f"order-{n}".encode(), message_id=f"m-{n}", headers={"n": n})
    wait_until(lambda: rabbit.depth(dlq) == 5, 30, "5 dead letters (unroutable)")
    assert p.stop() == 0
    path = p.config

    # --dry-run lists them and changes nothing; a filter that matches nothing replays nothing.
    out = replay(path, "--bridge", name, "--dry-run", "--idle", "1s")
    assert out.returncode == 0
    assert out.stdout.count("reason=unroutable") == 4 and "message_id=m-3" in out.stdout
    assert out.stdout.count("attempts=1") == 4 and "o-1" not in out.stdout
    assert "5 read, 4 matched, 0 replayed" in out.stdout
    wait_until(lambda: rabbit.depth(dlq) == 5, 10, "the dead letters still there after --dry-run")
    out = replay(path, "--bridge", name, "--reason", "too large", "--idle", "1s")
    assert "5 read, 0 matched, 0 replayed" in out.stdout
    out = replay(path, "--bridge", name, "--until", "1h", "--idle", "1s")
    assert "0 matched" in out.stdout, "all were written less than an hour ago"
    wait_until(lambda: rabbit.depth(dlq) == 5, 10, "the dead letters still there")

    # Still unroutable: each fails again and is dead-lettered again, attempts counted on; the
    # replay stops at its own new dead letters instead of taking them again.
    out = replay(path, "--bridge", name, "--since", "1h", "--idle", "1s")
    assert out.returncode == 0
    assert "5 read, 4 matched, 0 replayed, 4 dead-lettered again, 0 failed" in out.stdout
    wait_until(lambda: rabbit.depth(dlq) == 5, 10, "4 new dead letters and the other one")
    out = replay(path, "--bridge", name, "--dry-run", "--idle", "1s")
    assert out.stdout.count("attempts=2") == 4 and "attempts=1" not in out.stdout

    # Fixed: bound now. Every message arrives once, without the envelope, with its own fields;
    # each left the dead-letter queue only because its re-drive was confirmed.
    bind(exchange, target, "orders")
    out = replay(path, "--bridge", name, "--idle", "1s")
    assert out.returncode == 0
    assert "5 read, 4 matched, 4 replayed, 0 dead-lettered again, 0 failed" in out.stdout
    got = rabbit.get(target, 4)
    assert sorted(props.message_id for _, props, _ in got) == [f"m-{n}" for n in range(4)]
    for _, props, body in got:
        n = int(props.message_id[2:])
        assert body == f"order-{n}".encode()
        assert props.headers["n"] == n
        assert not [h for h in props.headers if h.startswith("portico.dlq.")]
        assert props.headers["portico.attempts"] == 2, "the count goes on"
    # Only the other bridge's dead letter is left, untouched.
    wait_until(lambda: rabbit.depth(dlq) == 1, 10, "the other bridge's dead letter left")
    out = replay(path, "--bridge", other, "--dry-run", "--idle", "1s")
    assert "1 read, 1 matched, 0 replayed" in out.stdout
    assert f"{other}\tamqp091:queue/{other_src}\treason=unroutable\tattempts=1\t" in out.stdout
    assert out.stdout.rstrip().splitlines()[0].endswith("message_id=o-1")
    [(_, props, body)] = rabbit.get(dlq, 1)
    assert (body, props.message_id) == (b"not-mine", "o-1")
    assert rabbit.depth(target) == 0, "nothing more arrived"


def test_replay_from_a_kafka_dead_letter_topic(portico, rabbit, tmp_path):
    topic, dlq = create_topic(unique("rp-t")), create_topic(unique("rp-dlq"))
    target = rabbit.queue(unique("rp-dst"))
    exchange, name, group = unique("rp-ex"), unique("rp"), unique("rp-g")
    declare = {"exchanges": [{"name": exchange, "type": "direct", "durable": False}]}
    source = {"connection": "kafka", "topics": [topic], "group": unique("g"), "start": "earliest"}
    text = config([unroutable_bridge(name, source, exchange, {"connection": "kafka", "topic": dlq})], declare)
    produce(topic, [{"value": f"event-{n}".encode(), "key": f"k-{n}".encode(), "headers": [("n", str(n).encode())]} for n in range(3)])
    p = portico(text)
    letters = consume(dlq, 3)
    assert [dict(m.headers())["portico.dlq.reason"] for m in letters] == [b"unroutable"] * 3
    assert p.stop() == 0

    out = replay(p.config, "--bridge", name, "--group", group, "--dry-run", "--idle", "2s")
    assert "3 read, 3 matched, 0 replayed" in out.stdout
    assert committed(dlq, group) < 0, "a dry run commits nothing"

    bind(exchange, target, "orders")
    out = replay(p.config, "--bridge", name, "--group", group, "--idle", "2s")
    assert out.returncode == 0
    assert "3 read, 3 matched, 3 replayed" in out.stdout
    got = rabbit.get(target, 3)
    assert sorted(body for _, _, body in got) == [b"event-0", b"event-1", b"event-2"]
    for _, props, _ in got:
        assert not [h for h in props.headers if h.startswith("portico.dlq.")]
        assert props.headers["kafka-topic"] == dlq, "the coordinates are those of the dead letter"
    # Removed = the replay group's offset moved past each, after its confirm.
    assert committed(dlq, group) == 3
    out = replay(p.config, "--bridge", name, "--group", group, "--idle", "2s")
    assert "0 read" in out.stdout


def committed(topic, group):
    consumer = Consumer({"bootstrap.servers": KAFKA_BROKERS, "group.id": group, "log_level": 0})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()
