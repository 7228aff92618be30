"""Dead letters: a message that cannot be delivered goes, unchanged and with headers saying
why, to the bridge's dead_letter sink; without one, to the source broker's own mechanism (a
RabbitMQ queue's dead-letter exchange) or, for a Kafka source, the bridge stops on it.

`typed_get` records the wire tag of each 0-9-1 header value (pika alone decodes `I` and `l`
both as int), by hooking pika's table decoder while a message is read."""

import datetime
import json
import time

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from wire091 import typed_get
from conftest import KAFKA_BROKERS, RABBIT_URL, consume, create_topic, produce, unique, wait_until

UTC = datetime.timezone.utc

# ----------------------------------------------------------------------------- helpers


def render_config(bridges):
    """The config text (JSON flow style is valid YAML) for bridges between the two brokers."""
    connections = {
        "rabbit": {"protocol": "amqp091", "url": RABBIT_URL},
        "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS},
    }
    return f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\n"


def bridge(name, source, sink, dead_letter=None):
    out = {"name": name, "source": source, "sink": sink}
    if dead_letter is not None:
        out["dead_letter"] = dead_letter
    return out


def rabbit_source(queue):
    return {"connection": "rabbit", "queue": queue}


def kafka_source(topic, group):
    return {"connection": "kafka", "topics": [topic], "group": group, "start": "earliest"}


def rabbit_sink(routing_key, exchange=""):
    return {"connection": "rabbit", "exchange": exchange, "routing_key": routing_key}


def kafka_sink(topic, key=None):
    sink = {"connection": "kafka", "topic": topic}
    if key is not None:
        sink["key"] = key
    return sink


def stays_empty(rabbit, queue, seconds):
    """True if `queue` stays empty for `seconds` (a deadline-bounded poll)."""
    try:
        wait_until(lambda: rabbit.depth(queue) > 0, seconds, f"a message on {queue}")
    except AssertionError:
        return True
    return False


def bodies_within(rabbit, queue, seconds):
    """Every body that arrives on `queue` until `seconds` pass (a deadline-bounded poll)."""
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        method, _, body = rabbit.ch.basic_get(queue, auto_ack=True)
        if method:
            got.append(body)
        else:
            time.sleep(0.05)
    return got


def committed_offset(group, topic, partition=0):
    admin = AdminClient({"bootstrap.servers": KAFKA_BROKERS})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition)])
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=15)
    [tp] = result.topic_partitions
    return tp.offset


DEAD_LETTERED = "portico_messages_dead_lettered_total"


def now_ms():
    return int(time.time() * 1000)


def metric(p, name):
    return p.metrics().get(name, 0)


def dlq_headers(headers):
    return {k: v for k, v in headers.items() if k.startswith("portico.dlq.")}


# ----------------------------------------------------------------------------- dead_letter sink


def test_missing_template_value_dead_letters_to_kafka_then_acks(portico, rabbit):
    queue = rabbit.queue(unique("q"))
    topic = create_topic(unique("t"))
    dlq = create_topic(unique("dlq"))
    name = unique("orders")
    before = now_ms()
    rabbit.publish(
        queue,
        b"\x00poison\xff",
        headers={"tenant": "t1", "n": 5},
        message_id="m-1",
        content_type="text/plain",
        timestamp=1_700_000_000,
    )
    p = portico(
        render_config(
            [
                bridge(
                    name,
                    rabbit_source(queue),
                    kafka_sink(topic, "{header.customer_id}"),
                    kafka_sink(dlq),
                )
            ]
        )
    )

    [letter] = consume(dlq, 1, extra=1.0)
    after = now_ms()
    assert letter.value() == b"\x00poison\xff"
    assert letter.key() is None
    assert letter.timestamp()[1] == 1_700_000_000_000
    headers = letter.headers()
    names = [k for k, _ in headers]
    assert names == [
        "content-type",
        "amqp.message-id",
        "amqp.durable",
        "amqp.creation-time-ms",
        "amqp.exchange",
        "amqp.routing-key",
        "n",
        "tenant",
        "portico.dlq.reason",
        "portico.dlq.class",
        "portico.dlq.stage",
        "portico.dlq.bridge",
        "portico.dlq.source",
        "portico.dlq.error",
        "portico.dlq.attempts",
        "portico.dlq.first-failure",
        "portico.dlq.last-failure",
        "portico.dlq.time",
        "portico.types",
    ]
    h = dict(headers)
    assert h["content-type"] == b"text/plain"
    assert h["amqp.message-id"] == b"m-1"
    assert h["amqp.routing-key"] == queue.encode()
    assert (h["n"], h["tenant"]) == (b"5", b"t1")
    assert h["portico.dlq.reason"] == b"template value missing"
    assert h["portico.dlq.stage"] == b"translate"
    assert h["portico.dlq.bridge"] == name.encode()
    assert h["portico.dlq.source"] == f"amqp091:queue/{queue}".encode()
    assert b"header.customer_id" in h["portico.dlq.error"]
    assert h["portico.dlq.attempts"] == b"1"
    # Whole seconds, the same on every protocol (a 0-9-1 timestamp holds seconds).
    assert before // 1000 * 1000 <= int(h["portico.dlq.time"]) <= after
    assert int(h["portico.dlq.time"]) % 1000 == 0
    assert h["portico.dlq.class"] == b"dead-letter"
    first, last = int(h["portico.dlq.first-failure"]), int(h["portico.dlq.last-failure"])
    assert before // 1000 * 1000 <= first == last <= int(h["portico.dlq.time"])
    assert "portico.dlq.broker-error" not in h, "a translation failure has no broker answer"
    assert json.loads(h["portico.types"]) == {
        "n": "i32",
        "portico.dlq.attempts": "i64",
        "portico.dlq.first-failure": "timestamp",
        "portico.dlq.last-failure": "timestamp",
        "portico.dlq.time": "timestamp",
    }

    # The bridge goes on: the next good message is delivered, nothing else reached the sink.
    rabbit.publish(queue, b"good", headers={"customer_id": "c-1"})
    [record] = consume(topic, 1, extra=1.0)
    assert (record.value(), record.key()) == (b"good", b"c-1")
    wait_until(lambda: metric(p, "portico_messages_delivered_total") == 1, 10, "1 delivered")
    assert metric(p, "portico_messages_dead_lettered_total") == 1
    assert metric(p, "portico_messages_rejected_total") == 0
    assert metric(p, "portico_messages_received_total") == 2
    # Acked, not merely unacked: after portico is gone nothing returns to the queue.
    assert p.stop() == 0
    assert rabbit.depth(queue) == 0


def test_unroutable_publish_is_dead_lettered_and_its_offset_committed(portico, rabbit):
    topic = create_topic(unique("t"))
    dead_end = unique("ex")
    rabbit.ch.exchange_declare(dead_end, "direct", durable=False)
    dlq = rabbit.queue(unique("dlq"))
    name = unique("events")
    group = unique("g")
    config = render_config(
        [
            bridge(
                name,
                kafka_source(topic, group),
                rabbit_sink("{key}", exchange=dead_end),
                rabbit_sink(dlq),
            )
        ]
    )
    produce(
        topic,
        [
            {
                "key": b"nowhere",
                "value": b"v0",
                "timestamp": 1_700_000_000_000,
                "headers": [("h", b"1")],
            }
        ],
    )
    before = now_ms()
    p = portico(config)

    [(method, props, body, types)] = typed_get(rabbit, dlq, 1)
    after = now_ms()
    assert (method.exchange, method.routing_key) == ("", dlq)
    assert body == b"v0"
    assert props.delivery_mode == 2
    assert props.timestamp == 1_700_000_000
    h = props.headers
    assert {k: v for k, v in h.items() if not k.startswith("portico.dlq.")} == {
        "h": "1",
        "kafka-topic": topic,
        "kafka-partition": 0,
        "kafka-offset": 0,
        "kafka-key": "nowhere",
    }
    dl = dlq_headers(h)
    assert sorted(dl) == sorted(
        f"portico.dlq.{n}"
        for n in (
            "reason", "class", "stage", "bridge", "source", "error", "attempts",
            "first-failure", "last-failure", "time", "broker-error",
        )
    )
    assert dl["portico.dlq.class"] == "dead-letter"
    assert dl["portico.dlq.broker-error"] == "312 NO_ROUTE"
    assert types["portico.dlq.first-failure"] == "T" and types["portico.dlq.last-failure"] == "T"
    assert dl["portico.dlq.reason"] == "unroutable"
    assert dl["portico.dlq.stage"] == "deliver"
    assert dl["portico.dlq.bridge"] == name
    assert dl["portico.dlq.source"] == f"kafka:{topic}/0@0"
    assert "312" in dl["portico.dlq.error"] and "NO_ROUTE" in dl["portico.dlq.error"]
    assert dl["portico.dlq.attempts"] == 1
    assert types["portico.dlq.attempts"] == "l"
    assert types["portico.dlq.time"] == "T"
    assert types["portico.dlq.reason"] == "S"
    stamp = dl["portico.dlq.time"]
    assert isinstance(stamp, datetime.datetime)
    assert before // 1000 <= stamp.timestamp() <= after // 1000 + 1
    wait_until(lambda: metric(p, DEAD_LETTERED) == 1, 10, "1 dead-lettered")
    assert p.stop() == 0
    # The committed offset is the next record to read: one past the dead-lettered one.
    assert committed_offset(group, topic) == 1

    # Same group again: the dead-lettered record was committed and is not read a second time.
    p2 = portico(config)
    produce(topic, [{"key": b"nowhere-1", "value": b"v1", "timestamp": 1_700_000_001_000}])
    [(_, props, body, _)] = typed_get(rabbit, dlq, 1)
    assert body == b"v1"
    assert props.headers["kafka-offset"] == 1
    assert props.headers["portico.dlq.source"] == f"kafka:{topic}/0@1"
    assert stays_empty(rabbit, dlq, 3)
    assert metric(p2, "portico_messages_received_total") == 1
    assert metric(p2, "portico_messages_dead_lettered_total") == 1


def test_a_routing_key_over_255_bytes_is_dead_lettered(portico, rabbit):
    topic = create_topic(unique("t"))
    target = rabbit.queue(unique("q"))
    dlq = rabbit.queue(unique("dlq"))
    name = unique("long")
    produce(
        topic,
        [
            {"value": b"too-long", "headers": [("rk", b"k" * 300)], "timestamp": 1_700_000_000_000},
            {"value": b"fits", "headers": [("rk", target.encode())]},
        ],
    )
    p = portico(
        render_config(
            [
                bridge(
                    name,
                    kafka_source(topic, unique("g")),
                    rabbit_sink("{header.rk}"),
                    rabbit_sink(dlq),
                )
            ]
        )
    )

    [(_, props, body, types)] = typed_get(rabbit, dlq, 1)
    assert body == b"too-long"
    h = props.headers
    assert h["rk"] == "k" * 300 and types["rk"] == "S"
    assert h["portico.dlq.reason"] == "routing key too long"
    assert h["portico.dlq.stage"] == "translate"
    assert h["portico.dlq.source"] == f"kafka:{topic}/0@0"
    assert h["portico.dlq.bridge"] == name
    assert "300" in h["portico.dlq.error"]
    assert h["portico.dlq.attempts"] == 1
    [(_, props, body, _)] = typed_get(rabbit, target, 1)
    assert body == b"fits"
    assert props.headers["kafka-offset"] == 1
    wait_until(lambda: metric(p, "portico_messages_delivered_total") == 1, 10, "1 delivered")
    assert metric(p, "portico_messages_dead_lettered_total") == 1
    assert rabbit.depth(dlq) == 0


def test_an_invalid_topic_is_dead_lettered(portico, rabbit):
    queue = rabbit.queue(unique("q"))
    prefix = unique("t")
    good = create_topic(f"{prefix}.ok")
    dlq = create_topic(unique("dlq"))
    ex = unique("ex")
    rabbit.ch.exchange_declare(ex, "topic", durable=False)
    rabbit.ch.queue_bind(queue, ex, "#")
    rabbit.publish("a/b", b"slash", exchange=ex)
    rabbit.publish("ok", b"fine", exchange=ex)
    p = portico(
        render_config(
            [
                bridge(
                    unique("b"),
                    rabbit_source(queue),
                    kafka_sink(prefix + ".{routing_key}"),
                    kafka_sink(dlq),
                )
            ]
        )
    )
    [letter] = consume(dlq, 1, extra=1.0)
    h = dict(letter.headers())
    assert letter.value() == b"slash"
    assert h["portico.dlq.reason"] == b"invalid topic"
    assert h["portico.dlq.stage"] == b"translate"
    assert h["amqp.routing-key"] == b"a/b"
    [record] = consume(good, 1, extra=1.0)
    assert record.value() == b"fine"
    wait_until(lambda: metric(p, DEAD_LETTERED) == 1, 10, "1 dead-lettered")
    assert metric(p, "portico_messages_delivered_total") == 1


def test_dead_letter_sink_on_the_other_protocol(portico, rabbit):
    """A RabbitMQ → Kafka bridge whose dead letters go to a RabbitMQ queue, untouched."""
    queue = rabbit.queue(unique("q"))
    topic = create_topic(unique("t"))
    dlq = rabbit.queue(unique("dlq"))
    name = unique("x-proto")
    props = dict(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        priority=4,
        correlation_id="corr-7",
        reply_to="replies",
        expiration="60000",
        message_id="msg-7",
        timestamp=1_700_000_000,
        type="order.created",
        user_id="guest",
        app_id="shop",
        cluster_id="cluster-a",
    )
    headers = {"tenant": "t1", "n": 5, "big": 2**40, "ids": [1, 2], "flag": True, "none": None}
    before = now_ms()
    rabbit.publish(queue, b'{"order":1}', headers=headers, **props)
    sink = kafka_sink(topic, "{header.customer_id}")
    p = portico(render_config([bridge(name, rabbit_source(queue), sink, rabbit_sink(dlq))]))

    [(method, got, body, types)] = typed_get(rabbit, dlq, 1)
    after = now_ms()
    assert method.routing_key == dlq
    assert body == b'{"order":1}'
    for field, value in props.items():
        assert getattr(got, field) == value, field
    h = got.headers
    assert {k: v for k, v in h.items() if not k.startswith("portico.dlq.")} == headers
    assert {k: types[k] for k in headers} == {
        "tenant": "S",
        "n": "I",
        "big": "l",
        "ids": ("A", ["I", "I"]),
        "flag": "t",
        "none": "V",
    }
    dl = dlq_headers(h)
    assert dl["portico.dlq.reason"] == "template value missing"
    assert dl["portico.dlq.stage"] == "translate"
    assert dl["portico.dlq.bridge"] == name
    assert dl["portico.dlq.source"] == f"amqp091:queue/{queue}"
    assert "header.customer_id" in dl["portico.dlq.error"]
    assert dl["portico.dlq.attempts"] == 1 and types["portico.dlq.attempts"] == "l"
    assert types["portico.dlq.time"] == "T"
    assert before // 1000 <= dl["portico.dlq.time"].timestamp() <= after // 1000 + 1
    wait_until(lambda: metric(p, DEAD_LETTERED) == 1, 10, "1 dead-lettered")
    assert consume(topic, 0, timeout=0, extra=3.0) == []
    assert p.stop() == 0
    assert rabbit.depth(queue) == 0


# ----------------------------------------------------------------------------- without dead_letter


def test_without_dead_letter_a_rabbitmq_source_rejects_to_the_queue_dlx(portico, rabbit):
    broker_dlq = rabbit.queue(unique("brokerdlq"))
    queue = rabbit.queue(
        unique("q"), {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": broker_dlq}
    )
    topic = create_topic(unique("t"))
    rabbit.publish(queue, b"poison", headers={"tenant": "t1"}, message_id="m-9")
    sink = kafka_sink(topic, "{header.customer_id}")
    p = portico(render_config([bridge(unique("b"), rabbit_source(queue), sink)]))

    [(_, props, body, _)] = typed_get(rabbit, broker_dlq, 1)
    assert body == b"poison"
    assert props.message_id == "m-9"
    assert props.headers["tenant"] == "t1"
    [death] = props.headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("rejected", queue, 1)
    wait_until(lambda: metric(p, "portico_messages_rejected_total") == 1, 10, "1 rejected")
    assert metric(p, "portico_messages_dead_lettered_total") == 0
    assert metric(p, "portico_messages_delivered_total") == 0
    assert rabbit.depth(queue) == 0
    assert consume(topic, 0, timeout=0, extra=3.0) == []


def _three_records(topic, target):
    produce(
        topic,
        [
            {"value": b"first", "headers": [("dest", target.encode())]},
            {"value": b"poison", "headers": [("other", b"x")]},
            {"value": b"third", "headers": [("dest", target.encode())]},
        ],
    )


def _wait_stopped(p, name, topic):
    def stopped():
        status, text = p.http("/readyz")
        return status == 503 and f"{name} source: stopped" in text and (status, text)

    _, text = wait_until(stopped, 30, "the bridge to stop")
    assert f"{topic}/0@1" in text
    wait_until(lambda: "Bridge stopped" in p.log(), 10, "the 'Bridge stopped' log line")


def test_without_dead_letter_a_kafka_source_stops_at_the_failed_record(portico, rabbit):
    topic = create_topic(unique("t"))
    target = rabbit.queue(unique("q"))
    name = unique("stops")
    _three_records(topic, target)
    bridges = [bridge(name, kafka_source(topic, unique("g")), rabbit_sink("{header.dest}"))]
    p = portico(render_config(bridges), ready=False)

    _wait_stopped(p, name, topic)
    assert p.proc.poll() is None  # the process stays up, reporting the stopped bridge
    # The record before the failed one is delivered, none after it.
    assert bodies_within(rabbit, target, 3) == [b"first"]
    assert metric(p, "portico_messages_delivered_total") == 1


def test_after_a_stop_a_restart_with_dead_letter_resumes_at_the_failed_record(portico, rabbit):
    topic = create_topic(unique("t"))
    target = rabbit.queue(unique("q"))
    dlq = rabbit.queue(unique("dlq"))
    group = unique("g")
    name = unique("resumes")
    _three_records(topic, target)
    source, sink = kafka_source(topic, group), rabbit_sink("{header.dest}")
    p = portico(render_config([bridge(name, source, sink)]), ready=False)
    _wait_stopped(p, name, topic)
    wait_until(lambda: rabbit.depth(target) >= 1, 10, "the first record")
    assert p.stop() == 0
    # Committed: everything before the failed record, nothing from it on.
    assert committed_offset(group, topic) == 1

    # With a dead_letter, the same group resumes at the failed record: nothing was skipped.
    portico(render_config([bridge(name, source, sink, rabbit_sink(dlq))]))
    [(_, props, body, _)] = typed_get(rabbit, dlq, 1)
    assert body == b"poison"
    assert props.headers["portico.dlq.source"] == f"kafka:{topic}/0@1"
    assert props.headers["portico.dlq.reason"] == "template value missing"
    assert props.headers["other"] == "x"
    wait_until(lambda: rabbit.depth(target) >= 2, 30, "the third record")
    bodies = bodies_within(rabbit, target, 2)
    assert bodies[0] == b"first" and bodies.count(b"first") == 1
    assert b"third" in bodies[1:]
