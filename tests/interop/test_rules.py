"""Per-bridge mapping rules and `portico explain --live`, on the real brokers: pika on the
RabbitMQ side, confluent-kafka on the Kafka side."""

import json
import subprocess

from confluent_kafka import Consumer, TopicPartition, TIMESTAMP_CREATE_TIME

from conftest import BIN, KAFKA_BROKERS, RABBIT_URL, consume, create_topic, produce, unique


def render_config(bridges):
    connections = {
        "rabbit": {"protocol": "amqp091", "url": RABBIT_URL},
        "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS},
    }
    return f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\n"


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def test_rules_move_rename_drop_set_and_choose_the_kafka_key_partition_and_timestamp(
    portico, rabbit
):
    queue = rabbit.queue(unique("rules-in"))
    topic = create_topic(unique("rules-out"), partitions=3)
    bridge = {
        "name": "rules",
        "source": {"connection": "rabbit", "queue": queue},
        "sink": {
            "connection": "kafka",
            "topic": topic,
            "key": "{header.corr}",
            "partition": "{header.shard}",
            "timestamp": "header.event-time",
        },
        "move": {"correlation_id": "header.corr"},
        "rename": {"headers": {"customerId": "customer-id"}},
        "drop": {"headers": ["debug-*"], "properties": ["app_id"]},
        "set": {"headers": {"origin": "rabbit:{routing_key}"}},
    }
    portico(render_config([bridge]))
    rabbit.publish(
        queue,
        b"{}",
        correlation_id="c-9",
        app_id="shop",
        timestamp=1_700_000_000,
        headers={
            "customerId": "cust-1",
            "debug-trace": "x",
            "debug-span": "y",
            "shard": 2,
            "event-time": 1_600_000_000_123,
        },
    )
    (record,) = consume(topic, 1)
    headers = dict(record.headers())
    assert record.key() == b"c-9"
    assert record.partition() == 2
    assert record.timestamp() == (TIMESTAMP_CREATE_TIME, 1_600_000_000_123)
    assert headers["corr"] == b"c-9"
    assert headers["customer-id"] == b"cust-1"
    assert headers["origin"] == f"rabbit:{queue}".encode()
    for gone in ("customerId", "debug-trace", "debug-span", "amqp.app-id", "amqp.correlation-id"):
        assert gone not in headers, gone
    # The record timestamp came from the header; the creation time still travels.
    assert headers["amqp.creation-time-ms"] == b"1700000000000"


def test_rules_read_latin1_bytes_as_text_and_a_header_as_the_correlation_id(portico, rabbit):
    topic = create_topic(unique("rules-src"))
    queue = rabbit.queue(unique("rules-dst"))
    bridge = {
        "name": "latin",
        "source": {"connection": "kafka", "topics": [topic], "group": unique("g")},
        "sink": {"connection": "rabbit", "exchange": "", "routing_key": queue},
        "move": {"header.order-id": "correlation_id"},
        "set": {"priority": "{header.prio}"},
        "body": {"to": "text", "charset": "iso-8859-1"},
    }
    portico(render_config([bridge]))
    produce(
        topic,
        [
            {
                "value": "café".encode("latin-1"),
                "headers": [
                    ("order-id", b"o-7"),
                    ("prio", b"5"),
                    ("content-type", b"text/plain; charset=ISO-8859-1"),
                ],
            }
        ],
    )
    ((_, props, body),) = rabbit.get(queue, 1)
    assert body == "café".encode("utf-8")
    assert props.correlation_id == "o-7"
    assert props.priority == 5
    assert props.content_type == "text/plain; charset=utf-8"
    assert text(props.headers["amqp.body"]) == "text"
    assert "order-id" not in props.headers


def explain_live(config_path, bridge, count, fmt="text"):
    done = subprocess.run(
        [BIN, "explain", "--live", "--count", str(count), "--bridge", bridge]
        + ["--config", str(config_path), "--format", fmt],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_explain_live_leaves_0_9_1_messages_in_the_queue_marked_redelivered(tmp_path, rabbit):
    queue = rabbit.queue(unique("explain-live"))
    bridge = {
        "name": "peek",
        "source": {"connection": "rabbit", "queue": queue},
        "sink": {"connection": "kafka", "topic": "explained", "key": "{header.customer-id}"},
        "rename": {"headers": {"customerId": "customer-id"}},
    }
    config = tmp_path / "bridges.yaml"
    config.write_text(render_config([bridge]))
    for n in (1, 2):
        rabbit.publish(queue, f"order {n}".encode(), headers={"customerId": f"c-{n}"})

    out = explain_live(config, "peek", 2)

    assert f"Message  amqp091:queue/{queue} message 1" in out
    assert f"Message  amqp091:queue/{queue} message 2" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["key", "bytes", '"c-1"'] in lines
    assert ["key", "bytes", '"c-2"'] in lines
    assert ["headers.customer-id", "renamed", "headers.customerId", "→", "headers.customer-id"] == next(
        l[:5] for l in lines if l[:1] == ["headers.customer-id"] and "renamed" in l
    )
    # Both are still there, in order, now flagged redelivered.
    got = rabbit.get(queue, 2)
    assert [body for _, _, body in got] == [b"order 1", b"order 2"]
    assert all(method.redelivered for method, _, _ in got)


def test_explain_live_reads_kafka_without_committing(tmp_path):
    topic = create_topic(unique("explain-live"))
    group = unique("explain-group")
    bridge = {
        "name": "peek",
        "source": {"connection": "kafka", "topics": [topic], "group": group},
        "sink": {"connection": "rabbit", "exchange": "", "routing_key": "explained"},
    }
    config = tmp_path / "bridges.yaml"
    config.write_text(render_config([bridge]))
    produce(topic, [{"value": b"first", "key": b"k1"}, {"value": b"second", "key": b"k2"}])

    explained = json.loads(explain_live(config, "peek", 2, fmt="json"))

    assert [e["outcome"]["result"] for e in explained] == ["delivered", "delivered"]
    offsets = [
        next(r["value"] for r in e["read"] if r["field"] == "origin.offset") for e in explained
    ]
    assert offsets == ["0", "1"]
    keys = [next(r["value"] for r in e["sent"] if r["field"] == "headers.kafka-key") for e in explained]
    assert keys == ['"k1"', '"k2"']
    # Nothing was committed for the bridge's group: it still starts at the first record.
    consumer = Consumer({"bootstrap.servers": KAFKA_BROKERS, "group.id": group})
    try:
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    assert committed.offset < 0, committed
    assert [m.value() for m in consume(topic, 2)] == [b"first", b"second"]


def test_explain_live_releases_amqp10_messages_back_to_the_queue(tmp_path, rabbit):
    queue = rabbit.queue(unique("explain-live10"))
    r10 = {"protocol": "amqp10", "url": "amqp://guest:guest@127.0.0.1:5672", "flavor": "rabbitmq"}
    connections = {"r10": r10, "rabbit": {"protocol": "amqp091", "url": RABBIT_URL}}
    bridge = {
        "name": "peek",
        "source": {"connection": "r10", "queue": queue},
        "sink": {"connection": "rabbit", "exchange": "", "routing_key": "explained"},
    }
    config = tmp_path / "bridges.yaml"
    config.write_text(f"connections: {json.dumps(connections)}\nbridges: {json.dumps([bridge])}\n")
    for n in (1, 2):
        rabbit.publish(queue, f"quote {n}".encode(), headers={"n": n})

    explained = json.loads(explain_live(config, "peek", 2, fmt="json"))

    bodies = [next(r["value"] for r in e["sent"] if r["field"] == "body") for e in explained]
    assert bodies == ['7 bytes: "quote 1"', '7 bytes: "quote 2"']
    # Released, not consumed: both are still in the queue, in order.
    got = rabbit.get(queue, 2)
    assert [body for _, _, body in got] == [b"quote 1", b"quote 2"]
