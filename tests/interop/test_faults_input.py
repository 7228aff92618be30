"""Malformed and extreme input, counted: a 16 MiB body, empty bodies, invalid UTF-8 where the
message declares text, and headers of odd types. Each test sends numbered messages and
reconciles sent = delivered + dead-lettered, nothing lost, nothing duplicated."""

import datetime
import decimal
import hashlib
import json
import os

from conftest import KAFKA_BROKERS, RABBIT_URL, create_topic, produce, unique, wait_until
from faults import SCALE, delete_queues, drain, fault_row, metric  # noqa: F401 (autouse fixture)

MIB = 1024 * 1024


def config(bridges):
    connections = {
        "rabbit": {"protocol": "amqp091", "url": RABBIT_URL},
        "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS},
    }
    return f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\nshutdown_timeout: 10s\n"


def through_kafka(name, source, topic, target, dlq):
    """Two bridges: 0-9-1 `source` → Kafka `topic` → 0-9-1 `target`; both dead-letter to `dlq`."""
    dead_letter = {"connection": "rabbit", "exchange": "", "routing_key": dlq}
    return [
        {"name": f"{name}-out", "source": {"connection": "rabbit", "queue": source},
         "sink": {"connection": "kafka", "topic": topic}, "dead_letter": dead_letter},
        {"name": f"{name}-in",
         "source": {"connection": "kafka", "topics": [topic], "group": unique("g"), "start": "earliest"},
         "sink": {"connection": "rabbit", "exchange": "", "routing_key": target}, "dead_letter": dead_letter},
    ]


def collect(rabbit, queue, count, timeout=60):
    got = []

    def enough():
        got.extend(drain(queue))
        return len(got) >= count

    wait_until(enough, timeout, f"{count} messages on {queue} (got {len(got)})")
    return got


def settled(p, received):
    wait_until(
        lambda: metric(p, "portico_messages_received_total") >= received
        and metric(p, "portico_messages_in_flight") == 0,
        60, f"{received} received and settled",
    )


def test_a_16_mib_body(portico, rabbit):
    """Crosses 0-9-1 → 0-9-1 byte for byte; toward Kafka (1 MB records by default) it is
    dead-lettered as too large, the messages around it delivered."""
    src_r, dst_r = rabbit.queue(unique("big-src")), rabbit.queue(unique("big-dst"))
    src_k, dlq = rabbit.queue(unique("big-srck")), rabbit.queue(unique("big-dlq"))
    topic = create_topic(unique("big-t"))
    big = os.urandom(16 * MIB)
    bodies = {0: b"m-0 small", 1: big, 2: b"m-2 small"}
    bridges = [
        {"name": unique("big-r"), "source": {"connection": "rabbit", "queue": src_r},
         "sink": {"connection": "rabbit", "exchange": "", "routing_key": dst_r}},
        {"name": unique("big-k"), "source": {"connection": "rabbit", "queue": src_k},
         "sink": {"connection": "kafka", "topic": topic},
         "dead_letter": {"connection": "rabbit", "exchange": "", "routing_key": dlq}},
    ]
    p = portico(config(bridges))
    for queue in (src_r, src_k):
        for n, body in bodies.items():
            rabbit.publish(queue, body, message_id=f"m-{n}")

    got = collect(rabbit, dst_r, 3)
    by_id = {props.message_id: body for props, body in got}
    assert hashlib.sha256(by_id["m-1"]).digest() == hashlib.sha256(big).digest()
    assert by_id["m-0"] == bodies[0] and by_id["m-2"] == bodies[2]
    fault_row("16 MiB body", "0-9-1 -> 0-9-1", 3, [props.message_id for props, _ in got])

    [(props, body)] = collect(rabbit, dlq, 1)
    assert props.message_id == "m-1" and body == big
    assert props.headers["portico.dlq.reason"] == "too large"
    settled(p, 6)
    m = p.metrics()
    delivered_k = m["portico_messages_delivered_total"] - 3
    assert delivered_k == 2 and m["portico_messages_dead_lettered_total"] == 1
    fault_row("16 MiB body", "0-9-1 -> Kafka", 3, ["m-0", "m-2"], dead_lettered=1)


def test_empty_bodies_and_invalid_utf8_declared_as_text(portico, rabbit):
    """Through Kafka and back: empty bodies stay empty (never null, never a tombstone), and
    bytes that are not UTF-8 in a message that says it is text arrive unchanged."""
    source, target, dlq = (rabbit.queue(unique(n)) for n in ("in-src", "in-dst", "in-dlq"))
    topic = create_topic(unique("in-t"))
    p = portico(config(through_kafka(unique("in"), source, topic, target, dlq)))
    total = max(6, int(30 * SCALE))
    sent = {}
    for n in range(total):
        if n % 3 == 0:
            body, props = b"", {}
        elif n % 3 == 1:
            body, props = b"caf\xe9 \xff\xfe" + str(n).encode(), {"content_type": "text/plain; charset=utf-8"}
        else:
            body, props = f"plain {n}".encode(), {"content_type": "text/plain"}
        sent[f"m-{n}"] = (body, props)
        rabbit.publish(source, body, message_id=f"m-{n}", **props)
    # A Kafka record that declares a text body (as AMQP 1.0 text crosses Kafka) but is not UTF-8.
    produce(topic, [{"value": b"\xc3\x28 broken", "headers": [("amqp.body", b"text"), ("amqp.message-id", b"k-0")]}])
    sent["k-0"] = (b"\xc3\x28 broken", {})

    got = collect(rabbit, target, len(sent))
    for props, body in got:
        want, want_props = sent[props.message_id]
        assert body == want, f"{props.message_id}: {body!r} != {want!r}"
        if "content_type" in want_props:
            assert props.content_type == want_props["content_type"]
        assert "kafka-tombstone" not in (props.headers or {})
    ids = [props.message_id for props, _ in got]
    assert sorted(ids) == sorted(sent), "each exactly once"
    assert rabbit.depth(dlq) == 0
    fault_row("empty body + invalid UTF-8 as text", "0-9-1 -> Kafka -> 0-9-1", len(sent), ids)


ODD = {
    "i8": -5,
    "big": 2**40,
    "neg": -(2**31),
    "price": decimal.Decimal("19.90"),
    "when": datetime.datetime(2026, 12, 4, 18, 0, 0, tzinfo=datetime.timezone.utc),
    "raw": b"\x00\xff\x00",
    "nothing": None,
    "yes": True,
    "list": [1, "two", [3]],
    "table": {"uri": "amqp://upstream-1", "n": 2, "inner": {"ok": False}},
    "empty": "",
}


def test_headers_of_odd_types_round_trip_through_kafka(portico, rabbit):
    source, target, dlq = (rabbit.queue(unique(n)) for n in ("hd-src", "hd-dst", "hd-dlq"))
    topic = create_topic(unique("hd-t"))
    p = portico(config(through_kafka(unique("hd"), source, topic, target, dlq)))
    total = max(3, int(20 * SCALE))
    for n in range(total):
        rabbit.publish(source, f"m-{n}".encode(), message_id=f"m-{n}", headers={**ODD, "n": n})
    got = collect(rabbit, target, total)
    for props, body in got:
        h = props.headers
        assert body == props.message_id.encode()
        for name, value in ODD.items():
            assert h[name] == value, f"{name}: {h[name]!r} != {value!r}"
    ids = [props.message_id for props, _ in got]
    assert sorted(ids) == sorted(f"m-{n}" for n in range(total))
    assert rabbit.depth(dlq) == 0
    fault_row("odd header types", "0-9-1 -> Kafka -> 0-9-1", total, ids)
