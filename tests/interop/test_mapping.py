"""How portico maps messages between AMQP 0-9-1 and Kafka, checked with independent clients:
pika on the RabbitMQ side, confluent-kafka on the Kafka side.

pika hides some field-table types (an `I` and an `l` both decode to an int, a non-UTF-8 `S`
and an `x` both decode to bytes) and cannot send others (unsigned integers, floats, a decimal
with trailing zeros, a longstr that is not UTF-8). The helpers below therefore hook pika's
table codec: `typed_get` records the tag letter of every header value as it is read off the
wire, and `Raw` values are written with exactly the tag and payload bytes given.
"""

import datetime
import json
import random
import struct
from decimal import Decimal
from unittest import mock

import pika
import pika.data
from pika.compat import long

from wire091 import typed_get
from conftest import KAFKA_BROKERS, RABBIT_URL, consume, create_topic, produce, unique, wait_until

UTC = datetime.timezone.utc

# ----------------------------------------------------------------------------- helpers


def render_config(bridges, declare_topics=()):
    """The config text (JSON flow style is valid YAML) for bridges between the two brokers."""
    kafka = {"protocol": "kafka", "brokers": KAFKA_BROKERS}
    if declare_topics:
        kafka["declare"] = {"topics": [{"name": t, "partitions": 1} for t in declare_topics]}
    connections = {"rabbit": {"protocol": "amqp091", "url": RABBIT_URL}, "kafka": kafka}
    return f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\n"


class Raw:
    """A field-table value written verbatim: one tag byte and its payload."""

    def __init__(self, tag, payload):
        self.tag, self.payload = tag, payload


def raw_longstr(data):
    return Raw(b"S", struct.pack(">I", len(data)) + data)


def raw_decimal(scale, value):
    return Raw(b"D", struct.pack(">Bi", scale, value))


_encode_value = pika.data.encode_value


def _encode_with_raw(pieces, value):
    if isinstance(value, Raw):
        pieces.append(value.tag + value.payload)
        return 1 + len(value.payload)
    return _encode_value(pieces, value)


def publish_raw(rabbit, exchange, routing_key, body, **props):
    """Publishes (mandatory, confirmed) with `Raw` values allowed anywhere in the headers."""
    with mock.patch.object(pika.data, "encode_value", _encode_with_raw):
        rabbit.ch.basic_publish(
            exchange, routing_key, body, pika.BasicProperties(**props), mandatory=True
        )


def no_more(rabbit, queue, seconds):
    """True if nothing arrives on `queue` for `seconds` (a deadline-bounded poll)."""
    try:
        wait_until(lambda: rabbit.depth(queue) > 0, seconds, "a message")
    except AssertionError:
        return True
    return False


def exchange(rabbit, kind="direct"):
    name = unique("ex")
    rabbit.ch.exchange_declare(name, kind, durable=False, auto_delete=False)
    return name


def types_of(headers):
    """The parsed portico.types header, or None when absent."""
    values = [v for k, v in headers if k == "portico.types"]
    assert len(values) <= 1, headers
    return json.loads(values[0]) if values else None


def body_bytes(seed, size=512):
    rnd = random.Random(seed)
    return b"\x00\xff" + bytes(rnd.randrange(256) for _ in range(size)) + b"\xff\x00"


AMQP_PROPS = dict(
    content_type="application/octet-stream",
    content_encoding="identity",
    delivery_mode=2,
    priority=7,
    correlation_id="corr-1",
    reply_to="replies",
    expiration="60000",
    message_id="msg-1",
    timestamp=1700000000,
    type="order.created",
    user_id="guest",
    app_id="shop",
    cluster_id="cluster-a",
)


def property_headers(exchange_name, routing_key):
    """The Kafka headers AMQP_PROPS map to, in their order."""
    return [
        ("content-type", b"application/octet-stream"),
        ("content-encoding", b"identity"),
        ("amqp.message-id", b"msg-1"),
        ("amqp.correlation-id", b"corr-1"),
        ("amqp.reply-to", b"replies"),
        ("amqp.type", b"order.created"),
        ("amqp.user-id", b"guest"),
        ("amqp.app-id", b"shop"),
        ("amqp.cluster-id", b"cluster-a"),
        ("amqp.priority", b"7"),
        ("amqp.durable", b"true"),
        ("amqp.expiration-ms", b"60000"),
        ("amqp.creation-time-ms", b"1700000000000"),
        ("amqp.exchange", exchange_name.encode()),
        ("amqp.routing-key", routing_key.encode()),
    ]


def rabbit_to_kafka(queue, topic, key=None):
    sink = {"connection": "kafka", "topic": topic}
    if key is not None:
        sink["key"] = key
    return {"name": unique("r2k"), "source": {"connection": "rabbit", "queue": queue}, "sink": sink}


def kafka_to_rabbit(topic, routing_key, exchange_name=""):
    return {
        "name": unique("k2r"),
        "source": {
            "connection": "kafka",
            "topics": [topic],
            "group": unique("g"),
            "start": "earliest",
        },
        "sink": {"connection": "rabbit", "exchange": exchange_name, "routing_key": routing_key},
    }


# ----------------------------------------------------------------------------- RabbitMQ → Kafka


def test_every_basic_property_and_header_type_reaches_kafka(portico, rabbit):
    # docs/mapping.md: R2K-01, R2K-02, R2K-03, R2K-04, R2K-05, R2K-06, R2K-10
    ex = exchange(rabbit)
    queue = rabbit.queue(unique("q"))
    rabbit.ch.queue_bind(queue, ex, "order.created")
    topic = create_topic(unique("t"))
    body = body_bytes(1)
    headers = {
        "customer_id": "c-42",  # S
        "small": 21,  # I
        "neg": -5,  # I
        "big": 2**40,  # l
        "flag": True,  # t
        "price": raw_decimal(2, 1990),  # D scale 2 (pika itself would normalise to 19.9)
        "at": datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),  # T 1700000000
        "meta": {"a": 1, "b": "x"},  # F
        "ids": [1, 2],  # A of I
        "raw": b"\x00\xff\x10",  # x
        "nothing": None,  # V
    }
    publish_raw(rabbit, ex, "order.created", body, headers=headers, **AMQP_PROPS)
    p = portico(render_config([rabbit_to_kafka(queue, topic, key="{header.customer_id}")]))

    [record] = consume(topic, 1, extra=1.0)
    assert record.value() == body
    assert record.key() == b"c-42"
    assert record.timestamp()[1] == 1_700_000_000_000
    got = record.headers()
    # Application headers come in RabbitMQ's table order, sorted by name.
    expected = property_headers(ex, "order.created") + [
        ("at", b"1700000000000"),
        ("big", b"1099511627776"),
        ("customer_id", b"c-42"),
        ("flag", b"true"),
        ("ids", b"[1,2]"),
        ("meta", b'{"a":1,"b":"x"}'),
        ("neg", b"-5"),
        ("nothing", None),
        ("price", b"19.90"),
        ("raw", b"\x00\xff\x10"),
        ("small", b"21"),
    ]
    assert [k for k, _ in got] == [k for k, _ in expected] + ["portico.types"]
    assert got[:-1] == expected
    wait_until(lambda: p.metrics().get("portico_messages_delivered_total") == 1, 10, "delivered 1")
    assert rabbit.depth(queue) == 0
    # Only non-string headers are typed; the user id is a string property like the others.
    assert types_of(got) == {
        "at": "timestamp",
        "big": "i64",
        "flag": "bool",
        "ids": ["i32", "i32"],
        "meta": {"a": "i32", "b": "string"},
        "neg": "i32",
        "price": "decimal",
        "raw": "bytes",
        "small": "i32",
    }


def test_numeric_types_pika_cannot_send_reach_kafka_as_text_with_types(portico, rabbit):
    # docs/mapping.md: R2K-10, R2K-11
    queue = rabbit.queue(unique("q"))
    topic = create_topic(unique("t"))
    headers = {
        "i8": Raw(b"b", struct.pack(">b", -5)),
        "u8": Raw(b"B", struct.pack(">B", 200)),
        "i16": Raw(b"s", struct.pack(">h", -300)),
        "u16": Raw(b"u", struct.pack(">H", 60000)),
        "u32": Raw(b"i", struct.pack(">I", 4_000_000_000)),
        "f32": Raw(b"f", struct.pack(">f", 1.5)),
        "f64": Raw(b"d", struct.pack(">d", 2.25)),
        "dneg": raw_decimal(3, -5),
    }
    publish_raw(rabbit, "", queue, b"n", headers=headers)
    portico(render_config([rabbit_to_kafka(queue, topic)]))

    [record] = consume(topic, 1, extra=1.0)
    got = record.headers()
    assert got[:-1] == [
        ("amqp.durable", b"false"),  # no delivery mode: transient (R2K-06)
        ("amqp.exchange", b""),
        ("amqp.routing-key", queue.encode()),
        ("dneg", b"-0.005"),
        ("f32", b"1.5"),
        ("f64", b"2.25"),
        ("i16", b"-300"),
        ("i8", b"-5"),
        ("u16", b"60000"),
        ("u32", b"4000000000"),
        ("u8", b"200"),
    ]
    assert types_of(got) == {
        "dneg": "decimal",
        "f32": "f32",
        "f64": "f64",
        "i16": "i16",
        "i8": "i8",
        "u16": "u16",
        "u32": "u32",
        "u8": "u8",
    }


def test_a_redelivered_message_is_marked(portico, rabbit):
    # docs/mapping.md: R2K-07
    queue = rabbit.queue(unique("q"))
    topic = create_topic(unique("t"))
    rabbit.publish(queue, b"again", delivery_mode=1)
    method, _, _ = wait_until(
        lambda: (got := rabbit.ch.basic_get(queue, auto_ack=False))[0] and got, 10, "the message"
    )
    rabbit.ch.basic_nack(method.delivery_tag, requeue=True)
    portico(render_config([rabbit_to_kafka(queue, topic)]))

    [record] = consume(topic, 1, extra=1.0)
    assert record.value() == b"again"
    assert record.headers() == [
        ("amqp.durable", b"false"),
        ("amqp.exchange", b""),
        ("amqp.routing-key", queue.encode()),
        ("amqp.redelivered", b"true"),
    ]


# ----------------------------------------------------------------------------- Kafka → RabbitMQ


def test_kafka_records_reach_rabbitmq_with_typed_headers(portico, rabbit):
    # docs/mapping.md: K2R-01, K2R-02, K2R-03, K2R-06, K2R-07
    topic = create_topic(unique("t"))
    by_key = rabbit.queue(unique("qkey"))
    fallback = rabbit.queue(unique("qdef"))
    body = body_bytes(2)
    produce(
        topic,
        [
            {
                "key": by_key.encode(),
                "value": body,
                "headers": [("tenant", b"t1"), ("blob", b"\x00\xc1\xff"), ("gone", None)],
                "timestamp": 1_700_000_000_999,
            },
            {"key": by_key.encode(), "value": None, "timestamp": 1_700_000_001_000},
            {"key": b"\xff\xfe", "value": b"binary-key", "timestamp": 1_700_000_002_000},
        ],
    )
    bridge = kafka_to_rabbit(topic, {"template": "{key}", "default": fallback})
    portico(render_config([bridge]))

    first, tomb = typed_get(rabbit, by_key, 2)
    [other] = typed_get(rabbit, fallback, 1)

    method, props, got_body, types = first
    assert method.exchange == "" and method.routing_key == by_key
    assert got_body == body
    assert props.delivery_mode == 2
    assert props.timestamp == 1_700_000_000  # record ms ÷ 1000
    assert (props.content_type, props.message_id, props.user_id, props.priority) == (None,) * 4
    # UTF-8 values are long strings (S), other bytes a byte array (x), null a void (V).
    names = ["kafka-topic", "kafka-partition", "kafka-offset", "kafka-key"]
    names += ["tenant", "blob", "gone"]
    assert {k: types.get(k) for k in names} == {
        "kafka-topic": "S",
        "kafka-partition": "I",
        "kafka-offset": "l",
        "kafka-key": "S",
        "tenant": "S",
        "blob": "x",
        "gone": "V",
    }

    _, tomb_props, tomb_body, tomb_types = tomb
    assert tomb_body == b""
    assert tomb_props.timestamp == 1_700_000_001
    assert tomb_props.delivery_mode == 2
    assert tomb_types["kafka-tombstone"] == "t"

    method, other_props, other_body, other_types = other
    assert method.routing_key == fallback
    assert other_body == b"binary-key"
    assert other_props.headers["kafka-key"] == b"\xff\xfe"
    assert other_types["kafka-key"] == "x"
    assert other_props.headers["kafka-offset"] == 2

    # Exactly these headers: the record's own plus the kafka-* facts, nothing else.
    assert tomb_props.headers == {
        "kafka-topic": topic,
        "kafka-partition": 0,
        "kafka-offset": 1,
        "kafka-key": by_key,
        "kafka-tombstone": True,
    }
    # 0-9-1 timestamps are whole seconds: the exact milliseconds travel beside them.
    assert props.headers == {
        "kafka-topic": topic,
        "kafka-partition": 0,
        "kafka-offset": 0,
        "kafka-key": by_key,
        "amqp.creation-time-ms": 1_700_000_000_999,
        "tenant": "t1",
        "blob": b"\x00\xc1\xff",
        "gone": None,
    }


def test_amqp_headers_from_kafka_become_basic_properties(portico, rabbit):
    # docs/mapping.md: K2R-04, K2R-05
    topic = create_topic(unique("t"))
    queue = rabbit.queue(unique("q"))
    produce(
        topic,
        [
            {
                "value": b"{}",
                "timestamp": 1_700_000_000_000,
                "headers": [
                    ("content-type", b"application/json"),
                    ("content-encoding", b"gzip"),
                    ("amqp.message-id", b"m-9"),
                    ("amqp.correlation-id", b"c-9"),
                    ("amqp.reply-to", b"answers"),
                    ("amqp.type", b"kind"),
                    ("amqp.user-id", b"svc"),
                    ("amqp.app-id", b"app"),
                    ("amqp.priority", b"3"),
                    ("amqp.durable", b"false"),
                    ("amqp.expiration-ms", b"600000"),
                    ("amqp.creation-time-ms", b"1600000000000"),
                    ("amqp.exchange", b"ex0"),
                    ("amqp.routing-key", b"rk0"),
                ],
            },
            {
                "value": b"g",
                "headers": [("amqp.user-id", b"guest")],
                "timestamp": 1_700_000_000_000,
            },
        ],
    )
    portico(render_config([kafka_to_rabbit(topic, queue)]))

    (m1, p1, b1, t1), (m2, p2, b2, t2) = typed_get(rabbit, queue, 2)
    assert b1 == b"{}"
    assert (p1.content_type, p1.content_encoding) == ("application/json", "gzip")
    ids = (p1.message_id, p1.correlation_id, p1.reply_to, p1.type)
    assert ids == ("m-9", "c-9", "answers", "kind")
    assert (p1.app_id, p1.priority, p1.delivery_mode, p1.expiration) == ("app", 3, 1, "600000")
    assert p1.timestamp == 1_600_000_000  # amqp.creation-time-ms wins over the record time
    assert p1.user_id is None  # RabbitMQ refuses a user id other than the connection's
    assert p1.headers == {
        "amqp.user-id": "svc",
        "amqp.exchange": "ex0",
        "amqp.routing-key": "rk0",
        "kafka-topic": topic,
        "kafka-partition": 0,
        "kafka-offset": 0,
    }
    assert t1["amqp.user-id"] == "S"

    assert b2 == b"g"
    assert p2.user_id == "guest"
    assert p2.delivery_mode == 2
    assert p2.timestamp == 1_700_000_000
    assert p2.headers == {"kafka-topic": topic, "kafka-partition": 0, "kafka-offset": 1}


# ----------------------------------------------------------------------------- round trip


def test_round_trip_restores_types_and_properties(portico, rabbit):
    # docs/mapping.md: R2K-12, K2R-07
    origin = rabbit.queue(unique("q-in"))
    final = rabbit.queue(unique("q-out"))
    topic = create_topic(unique("t"))
    headers = {
        "x-received-from": [
            {
                "uri": "amqp://upstream-1",
                "exchange": "ex",
                "redelivered": False,
                "cluster-name": "node-a",
            }
        ],
        "ids": [1, 2],
        "schemaName": "simpleSchemaTest",
        "maybe": None,
        "big": 2**40,
        "n": 7,
    }
    body = body_bytes(3)
    rabbit.publish(origin, body, headers=headers, **AMQP_PROPS)
    portico(render_config([rabbit_to_kafka(origin, topic), kafka_to_rabbit(topic, final)]))

    [(method, props, got_body, types)] = typed_get(rabbit, final, 1)
    assert got_body == body
    for name, value in AMQP_PROPS.items():
        assert getattr(props, name) == value, name
    assert props.headers == {
        **headers,
        "amqp.exchange": "",
        "amqp.routing-key": origin,
        "kafka-topic": topic,
        "kafka-partition": 0,
        "kafka-offset": 0,
    }
    assert isinstance(props.headers["big"], long)
    assert types == {
        "x-received-from": (
            "A",
            [("F", {"uri": "S", "exchange": "S", "redelivered": "t", "cluster-name": "S"})],
        ),
        "ids": ("A", ["I", "I"]),
        "schemaName": "S",
        "maybe": "V",
        "big": "l",
        "n": "I",
        "amqp.exchange": "S",
        "amqp.routing-key": "S",
        "kafka-topic": "S",
        "kafka-partition": "I",
        "kafka-offset": "l",
    }

    # The Kafka hop in between is readable text.
    [record] = consume(topic, 1)
    kafka = dict(record.headers())
    assert record.value() == body
    assert json.loads(kafka["x-received-from"]) == headers["x-received-from"]
    assert kafka["x-received-from"].startswith(b'[{"') and b" " not in kafka["x-received-from"]
    assert kafka["ids"] == b"[1,2]"
    assert kafka["schemaName"] == b"simpleSchemaTest"
    assert kafka["maybe"] is None
    assert kafka["big"] == b"1099511627776"
    assert kafka["n"] == b"7"


def test_unsigned_and_float_types_survive_a_round_trip(portico, rabbit):
    # docs/mapping.md: R2K-11, K2R-08
    origin = rabbit.queue(unique("q-in"))
    final = rabbit.queue(unique("q-out"))
    topic = create_topic(unique("t"))
    headers = {
        "i8": Raw(b"b", struct.pack(">b", -5)),
        "u8": Raw(b"B", struct.pack(">B", 200)),
        "i16": Raw(b"s", struct.pack(">h", -300)),
        "u16": Raw(b"u", struct.pack(">H", 60000)),
        "u32": Raw(b"i", struct.pack(">I", 4_000_000_000)),
        "f64": Raw(b"d", struct.pack(">d", 2.25)),
        "price": raw_decimal(2, 1990),
        "at": datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        "raw": b"\x00\xff",
        "f32": Raw(b"f", struct.pack(">f", 1.5)),
        "dneg": raw_decimal(3, -5),
        "mixed": [
            datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
            b"\x01\xfe",
            raw_decimal(2, 1990),
            None,
            "s",
            True,
            {"inner": [2**40, Raw(b"u", struct.pack(">H", 7))]},
        ],
    }
    publish_raw(rabbit, "", origin, b"rt", headers=headers)
    portico(render_config([rabbit_to_kafka(origin, topic), kafka_to_rabbit(topic, final)]))

    [(_, props, _, types)] = typed_get(rabbit, final, 1)
    h = props.headers
    assert (h["i8"], h["u8"], h["i16"], h["u16"], h["u32"]) == (-5, 200, -300, 60000, 4_000_000_000)
    assert h["price"] == Decimal("19.90")
    assert h["at"] == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert h["raw"] == b"\x00\xff"
    assert h["dneg"] == Decimal("-0.005")
    assert h["mixed"] == [
        datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        b"\x01\xfe",
        Decimal("19.90"),
        None,
        "s",
        True,
        {"inner": [2**40, 7]},
    ]
    # Unsigned integers come back one signed size wider.
    assert {k: types[k] for k in headers} == {
        "i8": "b",
        "u8": "s",
        "i16": "s",
        "u16": "I",
        "u32": "l",
        "f64": "d",
        "price": "D",
        "at": "T",
        "raw": "x",
        "f32": "f",
        "dneg": "D",
        "mixed": ("A", ["T", "x", "D", "V", "S", "t", ("F", {"inner": ("A", ["l", "I"])})]),
    }


# ----------------------------------------------------------------------------- edge cases


def test_a_non_utf8_long_string_reaches_kafka_byte_for_byte(portico, rabbit):
    # docs/mapping.md: R2K-09
    queue = rabbit.queue(unique("q"))
    topic = create_topic(unique("t"))
    blob = bytes.fromhex("00 53 74 C1 07 02 A1 01 6B A1 01 76")
    # pika would send bytes as `x`; this puts a longstr (`S`) holding those bytes on the wire.
    publish_raw(rabbit, "", queue, b"case-11", headers={"blob": raw_longstr(blob), "ok": "ok"})
    portico(render_config([rabbit_to_kafka(queue, topic)]))

    [record] = consume(topic, 1, extra=1.0)
    got = record.headers()
    assert record.value() == b"case-11"
    names = [k for k, _ in got]
    assert names[:5] == ["amqp.durable", "amqp.exchange", "amqp.routing-key", "blob", "ok"]
    assert got[3] == ("blob", blob)
    assert got[4] == ("ok", b"ok")


def test_empty_bodies_stay_empty_and_are_not_tombstones(portico, rabbit):
    # docs/mapping.md: R2K-01, K2R-01
    source = rabbit.queue(unique("q-in"))
    final = rabbit.queue(unique("q-out"))
    to_kafka = create_topic(unique("t-out"))
    from_kafka = create_topic(unique("t-in"))
    rabbit.publish(source, b"")
    produce(from_kafka, [{"key": b"k", "value": b"", "timestamp": 1_700_000_000_000}])
    portico(render_config([rabbit_to_kafka(source, to_kafka), kafka_to_rabbit(from_kafka, final)]))

    [record] = consume(to_kafka, 1, extra=1.0)
    assert record.value() == b""  # not None: an empty body is not a tombstone

    [(_, props, body, _)] = typed_get(rabbit, final, 1)
    assert body == b""
    assert props.headers == {
        "kafka-topic": from_kafka,
        "kafka-partition": 0,
        "kafka-offset": 0,
        "kafka-key": "k",
    }


def test_repeated_kafka_headers_cross_rabbitmq_as_one_array_and_return_apart(portico, rabbit):
    # docs/mapping.md: K2R-09, R2K-10, K2K-01
    """Kafka allows a header name more than once; a field table does not. The values reach
    0-9-1 as one array (typed, in order) and come back to Kafka as separate headers."""
    origin = create_topic(unique("t-in"))
    final = create_topic(unique("t-out"))
    queue = rabbit.queue(unique("q"))
    types = json.dumps({"tag": ["*", "string", "i32", "bool"]}).encode()
    produce(
        origin,
        [
            {
                "value": b"v",
                "headers": [
                    ("tag", b"a"),
                    ("other", b"o"),
                    ("tag", b"7"),
                    ("tag", b"true"),
                    ("portico.types", types),
                ],
            }
        ],
    )
    portico(render_config([kafka_to_rabbit(origin, queue), rabbit_to_kafka(queue, final)]))

    [record] = consume(final, 1)
    headers = record.headers()
    assert [(k, v) for k, v in headers if k in ("tag", "other")] == [
        ("other", b"o"),
        ("tag", b"a"),
        ("tag", b"7"),
        ("tag", b"true"),
    ]
    assert types_of(headers)["tag"] == ["*", "string", "i32", "bool"]


def test_repeated_kafka_headers_as_rabbitmq_sees_them(portico, rabbit):
    # docs/mapping.md: K2R-09
    """What a 0-9-1 consumer reads: one array header, each value with its own type letter."""
    topic = create_topic(unique("t"))
    queue = rabbit.queue(unique("q"))
    types = json.dumps({"tag": ["*", "string", "i32"]}).encode()
    produce(topic, [{"value": b"v", "headers": [("tag", b"a"), ("tag", b"7"), ("portico.types", types)]}])
    portico(render_config([kafka_to_rabbit(topic, queue)]))

    [(_, props, _, tags)] = typed_get(rabbit, queue, 1)
    assert props.headers["tag"] == ["a", 7]
    assert tags["tag"] == ("A", ["S", "I"])
    assert json.loads(props.headers["portico.types"])["tag"] == ["*", "string", "i32"]

