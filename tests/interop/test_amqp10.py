"""AMQP 1.0 interop: portico against RabbitMQ's AMQP 1.0 plugin (3.x addresses, `rabbitmq`
flavor) and against `amqp10_peer.Peer`, a proton broker of the test's own that records every
transfer exactly as it came off the wire and settles with the outcome the test asks for
(accept, reject, release, modify) under the link max-message-size the test sets. The peer
stands in for ActiveMQ / Artemis (JMS flavors), for user ids RabbitMQ would refuse, and
wherever the exact sections on the wire matter.

Messages are built with python-qpid-proton; where proton cannot express a message (no header
section, several data sections, timestamps of 0), the sections are encoded one by one with
`amqp10_peer.encode` and sent as raw bytes. On the 0-9-1 side `typed_get` records the
field-table tag of every header, since pika alone decodes `I` and `l` both as int.
"""

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from unittest import mock

import pika

import wire091
import pika.data
import proton._handlers
import pytest
from proton import (
    Delivery,
    Message,
    Terminus,
    byte,
    float32,
    int32,
    short,
    symbol,
    timestamp,
    ubyte,
    uint,
    ulong,
    ushort,
)
from proton.reactor import LinkOption
from proton.utils import BlockingConnection

from amqp10_peer import (
    Peer,
    Wire,
    amqp_sequence_section,
    amqp_value_section,
    data_section,
    described,
    encode,
)
from conftest import (
    BIN,
    KAFKA_BROKERS,
    RABBIT_URL,
    consume,
    create_topic,
    produce,
    unique,
    wait_until,
)

RABBIT10_URL = "amqp://127.0.0.1:5672"
R10 = {"protocol": "amqp10", "url": "amqp://guest:guest@127.0.0.1:5672", "flavor": "rabbitmq"}
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
RETRY = {"initial_backoff": "50ms", "max_backoff": "500ms", "multiplier": 2.0}

HEADER_FIELDS = ["durable", "priority", "ttl", "first-acquirer", "delivery-count"]
PROPERTY_FIELDS = [
    "message-id", "user-id", "to", "subject", "reply-to", "correlation-id", "content-type",
    "content-encoding", "absolute-expiry-time", "creation-time", "group-id", "group-sequence",
    "reply-to-group-id",
]

# ----------------------------------------------------------------------------- config


def render(bridges, **connections):
    """Config text (JSON flow style is valid YAML): the 0-9-1 and Kafka connections plus
    the AMQP 1.0 ones given by name."""
    conns = {
        "rabbit": {"protocol": "amqp091", "url": RABBIT_URL},
        "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS},
        **connections,
    }
    return f"connections: {json.dumps(conns)}\nbridges: {json.dumps(bridges)}\n"


def bridge(name, source, sink, dead_letter=None):
    out = {"name": name, "source": source, "sink": sink, "retry": RETRY}
    if dead_letter is not None:
        out["dead_letter"] = dead_letter
    return out


def peer_conn(peer, flavor, **extra):
    return {"protocol": "amqp10", "url": peer.url, "flavor": flavor, **extra}


def rabbit_sink(routing_key, exchange=""):
    return {"connection": "rabbit", "exchange": exchange, "routing_key": routing_key}


def metric(p, name):
    return p.metrics().get(name, 0)


def wait_settled(p, count, timeout=30):
    """Waits until `count` messages were delivered or dead-lettered and none is in flight."""

    def done():
        m = p.metrics()
        settled = (
            m.get("portico_messages_delivered_total", 0)
            + m.get("portico_messages_dead_lettered_total", 0)
            + m.get("portico_messages_rejected_total", 0)
        )
        return settled >= count and m.get("portico_messages_in_flight", 0) == 0

    wait_until(done, timeout, f"{count} settled messages\n{p.log()[-3000:]}")


# ----------------------------------------------------------------------------- raw messages


def section_list(code, fields, names):
    """A header or properties section from a dict of field name -> value (absent = null)."""
    values = [fields.get(n) for n in names]
    while values and values[-1] is None:
        values.pop()
    return described(code, values)


def raw_message(header=None, delivery_annotations=None, annotations=None, properties=None,
                application_properties=None, body=()):
    """An encoded message with exactly the sections given (None = section absent)."""
    parts = []
    if header is not None:
        parts.append(section_list(0x70, header, HEADER_FIELDS))
    if delivery_annotations is not None:
        parts.append(described(0x71, delivery_annotations))
    if annotations is not None:
        parts.append(described(0x72, annotations))
    if properties is not None:
        parts.append(section_list(0x73, properties, PROPERTY_FIELDS))
    if application_properties is not None:
        parts.append(described(0x74, application_properties))
    parts.extend(body)
    return b"".join(parts)


# A field left out (or null) of the header section means its default (AMQP 1.0, 3.2.1).
HEADER_DEFAULTS = {
    "durable": False, "priority": ubyte(4), "first-acquirer": False, "delivery-count": uint(0),
}


def fields(transfer, section):
    """A header or properties section as it arrived: field name -> value. Header fields that
    are absent read as their defaults; absent properties are None."""
    names = HEADER_FIELDS if section == "header" else PROPERTY_FIELDS
    values = transfer.section(section)
    assert values is not None, f"no {section} section in {transfer.section_names}"
    values = list(values) + [None] * (len(names) - len(values))
    out = dict(zip(names, values))
    if section == "header":
        out = {k: HEADER_DEFAULTS.get(k) if v is None else v for k, v in out.items()}
    return out


def typed(value):
    """(python type name, value): proton decodes every AMQP type to its own class."""
    return (type(value).__name__, value)


# ----------------------------------------------------------------------------- RabbitMQ 1.0


class DurableTerminus(LinkOption):
    """RabbitMQ 3.x declares `/queue/NAME` with the terminus durability: durable queues."""

    def apply(self, link):
        (link.target if link.is_sender else link.source).durability = Terminus.CONFIGURATION


def _recv_keeping_wire(delivery):
    """proton's recv_msg, also keeping the message as it came off the wire."""
    raw = delivery.link.recv(delivery.pending)
    delivery.link.advance()
    wire = Wire(raw)
    wire.message.wire = wire
    return wire.message


class Rabbit10:
    """A proton client of RabbitMQ's AMQP 1.0 plugin."""

    def __init__(self):
        self.conn = BlockingConnection(
            RABBIT10_URL, user="guest", password="guest", allowed_mechs="PLAIN", timeout=20
        )
        self.senders = {}

    def sender(self, address, durable):
        if address not in self.senders:
            options = DurableTerminus() if durable else None
            self.senders[address] = self.conn.create_sender(address, options=options)
        return self.senders[address]

    def send(self, queue, message, address=None):
        """Sends a proton Message or raw encoded bytes to `/queue/<queue>` (or `address`)."""
        sender = self.sender(address or f"/queue/{queue}", durable=address is None)
        if isinstance(message, Message):
            return sender.send(message)
        link = sender.link
        delivery = link.delivery(str(uuid.uuid4()))
        link.stream(bytes(message))
        link.advance()
        self.conn.wait(lambda: delivery.settled or delivery.remote_state, msg="raw send", timeout=20)
        assert delivery.remote_state == Delivery.ACCEPTED, delivery.remote_state
        delivery.settle()
        return delivery

    def receive(self, queue, count, timeout=20):
        """Takes (accepts) `count` messages from `/queue/<queue>`: [Wire], each with the exact
        sections RabbitMQ sent and the decoded `.message`."""
        got = []
        # proton decodes while it waits (for the attach too): keep the wire bytes throughout
        with mock.patch.object(proton._handlers, "recv_msg", _recv_keeping_wire):
            receiver = self.conn.create_receiver(
                f"/queue/{queue}", credit=count, options=DurableTerminus()
            )
            try:
                for _ in range(count):
                    got.append(receiver.receive(timeout=timeout).wire)
                    receiver.accept()
            finally:
                # RabbitMQ 3.10 answers a closing detach without `closed`, so proton's
                # blocking close would wait forever: detach without waiting.
                receiver.link.close()
        return got

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


@pytest.fixture
def amqp10():
    client = Rabbit10()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def cleanup(rabbit):
    """Deletes the queues and exchanges a test made (names in `made`), after portico stopped."""
    made = {"queues": [], "exchanges": []}
    rabbit.made = made
    yield
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        ch = conn.channel()
        for q in rabbit.declared + made["queues"]:
            ch.queue_delete(q)
        for x in made["exchanges"]:
            ch.exchange_delete(x)
    finally:
        conn.close()


@pytest.fixture
def peer():
    p = Peer().start()
    yield p
    p.stop()


# ----------------------------------------------------------------------------- 0-9-1 typed


def typed_get(rabbit, queue, count, timeout=30):
    """[(properties, body, {header: tag})]: pika's properties plus each header's wire tag."""
    got = wire091.typed_get(rabbit, queue, count, timeout)
    top = lambda t: t if isinstance(t, str) else t[0]  # noqa: E731
    return [(props, body, {k: top(t) for k, t in tags.items()}) for _, props, body, tags in got]


def by_id(messages):
    return {m[0].message_id: m for m in messages}


# ============================================================================= 1.0 → 0-9-1


def test_properties_and_application_properties_reach_091(portico, rabbit, amqp10):
    # docs/mapping.md: A2R-08, A2R-09
    """Case 1: message-id, subject, content-type and typed application properties."""
    src, dst = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-dst"))
    p = portico(render([bridge("b", {"connection": "r10", "queue": src}, rabbit_sink(dst))], r10=R10))
    message = Message(
        id="m-1",
        subject="orders.created",
        content_type="application/json",
        properties={"tenant": "t1", "attempt": int32(3), "vip": True},
    )
    amqp10.send(src, encode(message, [data_section(b"\x7b\x7d")]))

    [(props, body, tags)] = typed_get(rabbit, dst, 1)
    assert body == b"{}"
    assert props.message_id == "m-1"
    assert props.content_type == "application/json"
    assert props.headers["tenant"] == "t1" and tags["tenant"] == "S"
    assert props.headers["attempt"] == 3 and tags["attempt"] == "I"
    assert props.headers["vip"] is True and tags["vip"] == "t"
    assert props.headers["amqp.subject"] == "orders.created"
    assert "amqp.body" not in props.headers  # a data body is plain bytes
    wait_settled(p, 1)
    assert metric(p, "portico_messages_delivered_total") == 1
    assert rabbit.depth(src) == 0


def test_creation_time_priority_numbers_and_foreign_user_id(portico, rabbit, peer):
    # docs/mapping.md: A2R-05, A2R-06, A2R-09
    """Case 2: creation-time ms, priority, long/double properties, user-id other than the
    0-9-1 connection's user (RabbitMQ would refuse it, so the peer is the source)."""
    dst = rabbit.queue(unique("a10-dst"))
    p = portico(render(
        [bridge("b", {"connection": "peer", "queue": "in"}, rabbit_sink(dst))],
        peer=peer_conn(peer, "activemq"),
    ))
    peer.put("queue://in", raw_message(
        header={"durable": True, "priority": ubyte(7)},
        properties={"message-id": "m-2", "user-id": b"svc", "creation-time": timestamp(1700000000123)},
        application_properties={"delta": -5, "ratio": 0.25},
        body=[data_section(b"x")],
    ))

    [(props, body, tags)] = typed_get(rabbit, dst, 1)
    assert body == b"x"
    assert props.timestamp == 1700000000
    assert props.headers["amqp.creation-time-ms"] == 1700000000123
    assert tags["amqp.creation-time-ms"] == "l"
    assert props.priority == 7
    assert props.delivery_mode == 2
    assert props.headers["delta"] == -5 and tags["delta"] == "l"
    assert props.headers["ratio"] == 0.25 and tags["ratio"] == "d"
    assert props.user_id is None
    assert props.headers["amqp.user-id"] == "svc"
    [outcome] = peer.wait_outcomes("queue://in", 1)
    assert outcome.state == "accepted"
    assert peer.depth("queue://in") == 0


def test_091_timestamp_becomes_creation_time_ms(portico, rabbit, peer):
    # docs/mapping.md: R2A-06
    """Case 2, reverse: 0-9-1 timestamp seconds → 1.0 creation-time milliseconds."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "peer", "queue": "out"})],
        peer=peer_conn(peer, "activemq"),
    ))
    rabbit.publish(src, b"t", timestamp=1700000000, message_id="ts")
    [t] = peer.wait_received("queue://out", 1)
    props = fields(t, "properties")
    assert typed(props["creation-time"]) == ("timestamp", 1700000000000)
    assert props["message-id"] == "ts"
    ann = t.section("message-annotations")
    assert ann[symbol("x-opt-amqp-exchange")] == ""
    assert ann[symbol("x-opt-amqp-routing-key")] == src


def test_091_type_becomes_jms_subject(portico, rabbit, peer):
    # docs/mapping.md: R2A-09
    """JMS flavors: the 0-9-1 `type` is JMSType, i.e. the 1.0 subject, when no subject."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "peer", "queue": "typ"})],
        peer=peer_conn(peer, "activemq"),
    ))
    rabbit.publish(src, b"t", type="OrderCreated")
    [t] = peer.wait_received("queue://typ", 1)
    assert fields(t, "properties")["subject"] == "OrderCreated"
    assert typed(t.section("message-annotations")[symbol("x-opt-jms-msg-type")]) == ("byte", 3)


@pytest.mark.parametrize(
    "flavor,node,name,address,durability",
    [
        ("rabbitmq", "queue", "a b", "/queue/a b", Terminus.CONFIGURATION),
        ("rabbitmq", "topic", "k.1", "/topic/k.1", Terminus.NONDURABLE),
        ("rabbitmq4", "queue", "a b", "/queues/a%20b", Terminus.NONDURABLE),
        ("rabbitmq4", "topic", "k.1", "/exchanges/amq.topic/k.1", Terminus.NONDURABLE),
        ("generic", "address", "any/thing", "any/thing", Terminus.NONDURABLE),
    ],
)
def test_non_jms_flavor_addresses(portico, rabbit, peer, flavor, node, name, address, durability):
    """Sink addresses per flavor as the peer sees the attach; no JMS annotations."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "peer", node: name})],
        peer=peer_conn(peer, flavor),
    ))
    rabbit.publish(src, b"x", message_id="f")
    [t] = peer.wait_received(address, 1)
    [attach] = [a for a in peer.attached(address) if a.role == "sender"]
    assert attach.durability == durability
    assert attach.capabilities is None
    ann = t.section("message-annotations") or {}
    assert symbol("x-opt-jms-msg-type") not in ann and symbol("x-opt-jms-dest") not in ann
    assert fields(t, "properties")["to"] == address


def test_routing_key_from_subject_with_default_and_too_long(portico, rabbit, amqp10):
    """Case 4: subject → routing key of a topic exchange; default when absent; a subject of
    300 bytes cannot be a routing key and goes to the dead letter."""
    src, dst, dlq = (rabbit.queue(unique(n)) for n in ("a10-src", "a10-inv", "a10-dlq"))
    exchange = unique("a10-topic")
    rabbit.ch.exchange_declare(exchange, "topic", durable=False)
    rabbit.made["exchanges"].append(exchange)
    rabbit.ch.queue_bind(dst, exchange, "invoice.*")
    sink = {
        "connection": "rabbit",
        "exchange": exchange,
        "routing_key": {"template": "{subject}", "default": "invoice.none"},
    }
    p = portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, sink, dead_letter=rabbit_sink(dlq))], r10=R10
    ))
    amqp10.send(src, Message(id="paid", subject="invoice.paid", body="1"))
    amqp10.send(src, Message(id="none", body="2"))
    amqp10.send(src, Message(id="long", subject="invoice." + "x" * 292, body="3"))

    routed = {props.message_id for props, _, _ in typed_get(rabbit, dst, 2)}
    assert routed == {"paid", "none"}
    [(props, body, _)] = typed_get(rabbit, dlq, 1)
    assert props.message_id == "long"
    assert props.headers["portico.dlq.reason"] == "routing key too long"
    assert props.headers["portico.dlq.stage"] == "translate"
    wait_settled(p, 3)
    assert rabbit.depth(src) == 0


def test_routing_keys_used(portico, rabbit, amqp10):
    """Case 4 (keys): the routing key a 0-9-1 consumer sees is the subject, or the default."""
    src, dst = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-dst"))
    exchange = unique("a10-topic")
    rabbit.ch.exchange_declare(exchange, "topic", durable=False)
    rabbit.made["exchanges"].append(exchange)
    rabbit.ch.queue_bind(dst, exchange, "invoice.*")
    sink = {
        "connection": "rabbit",
        "exchange": exchange,
        "routing_key": {"template": "{subject}", "default": "invoice.none"},
    }
    portico(render([bridge("b", {"connection": "r10", "queue": src}, sink)], r10=R10))
    amqp10.send(src, Message(id="paid", subject="invoice.paid", body="1"))
    amqp10.send(src, Message(id="none", body="2"))
    got = {}

    def two():
        method, props, _ = rabbit.ch.basic_get(dst, auto_ack=True)
        if method:
            got[props.message_id] = (method.exchange, method.routing_key)
        return len(got) == 2

    wait_until(two, 20, "two routed messages")
    assert got == {"paid": (exchange, "invoice.paid"), "none": (exchange, "invoice.none")}


def round_trip_through_091(portico, rabbit):
    """RabbitMQ 1.0 queue `src` → 0-9-1 (a copy kept on queue `check`) → RabbitMQ 1.0 queue
    `back`: returns (src, check, back) with portico running both bridges."""
    src, check, mid = (rabbit.queue(unique(n)) for n in ("a10-src", "a10-check", "a10-mid"))
    back = rabbit.queue(unique("a10-back"))
    fanout = unique("a10-fan")
    rabbit.ch.exchange_declare(fanout, "fanout", durable=False)
    rabbit.made["exchanges"].append(fanout)
    rabbit.ch.queue_bind(check, fanout, "")
    rabbit.ch.queue_bind(mid, fanout, "")
    portico(render(
        [
            bridge("out", {"connection": "r10", "queue": src}, rabbit_sink("", exchange=fanout)),
            bridge("back", {"connection": "rabbit", "queue": mid}, {"connection": "r10", "queue": back}),
        ],
        r10=R10,
    ))
    return src, check, back


def test_typed_ids_round_trip_through_091(portico, rabbit, amqp10):
    # docs/mapping.md: A2R-04, R2A-05
    """Case 5: ulong / binary ids become Qpid JMS id text on 0-9-1 and are restored when the
    message comes back to AMQP 1.0 (RabbitMQ 1.0 → 0-9-1 → RabbitMQ 1.0)."""
    src, check, back = round_trip_through_091(portico, rabbit)
    amqp10.send(src, Message(id=ulong(12345), correlation_id=b"\xca\xfe\xba\xbe", body="id"))

    [(props, _, _)] = typed_get(rabbit, check, 1)
    assert props.message_id == "ID:AMQP_ULONG:12345"
    assert props.correlation_id == "ID:AMQP_BINARY:CAFEBABE"
    [w] = amqp10.receive(back, 1)
    props = fields(w, "properties")
    assert typed(props["message-id"]) == ("ulong", 12345)
    assert typed(props["correlation-id"]) == ("bytes", b"\xca\xfe\xba\xbe")


def test_jms_illegal_property_types_to_jms_peer_and_back(portico, rabbit, amqp10, peer):
    # docs/mapping.md: R2A-10, R2A-12
    """Case 6: binary, uuid, timestamp and ulong cannot be JMS properties: at an
    ActiveMQ-style peer each is a non-empty string with its type in x-opt-portico-types;
    the next hop (a non-JMS broker) gets the typed values back. Delivered once."""
    src, back = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-back"))
    q = unique("q6")
    p = portico(render(
        [
            bridge("to-jms", {"connection": "r10", "queue": src}, {"connection": "peer", "queue": q}),
            bridge("from-jms", {"connection": "peer", "queue": q}, {"connection": "r10", "queue": back}),
        ],
        r10=R10,
        peer=peer_conn(peer, "activemq"),
    ))
    sent = {
        "sig": b"\x01\xff\x00",
        "k": "v",
        "u": uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100"),
        "at": timestamp(1700000000123),
        "big": ulong(2**63 + 5),
    }
    amqp10.send(src, Message(id="sig", properties=sent, body="b"))

    [w] = amqp10.receive(back, 1)
    wait_settled(p, 2)
    [t] = peer.received(f"queue://{q}")  # delivered once
    app = t.section("application-properties")
    assert app["k"] == "v"
    at_peer = {name: typed(app[name]) for name in ("sig", "u", "at", "big")}
    types = json.loads(t.section("message-annotations")[symbol("x-opt-portico-types")])
    back_app = w.section("application-properties")
    # all at once, so that one report shows every property that went wrong
    assert (
        {name: (kind, value != "") for name, (kind, value) in at_peer.items()},
        types,
        {k: typed(v) for k, v in back_app.items()},
    ) == (
        {name: ("str", True) for name in at_peer},
        {"sig": "base64", "u": "uuid", "at": "timestamp", "big": "u64"},
        {k: typed(v) for k, v in sent.items()},
    ), at_peer
    assert symbol("x-opt-portico-types") not in (w.section("message-annotations") or {})


@pytest.mark.parametrize("source", ["peer", "rabbitmq"])
def test_durability_from_amqp10(portico, rabbit, amqp10, peer, source):
    # docs/mapping.md: A2R-03
    """Case 7: no header section → delivery_mode 1; header durable → 2; durable false → 1."""
    dst = rabbit.queue(unique("a10-dst"))
    messages = {
        "no-header": raw_message(properties={"message-id": "no-header"}, body=[data_section(b"1")]),
        "durable": raw_message(
            header={"durable": True}, properties={"message-id": "durable"}, body=[data_section(b"2")]
        ),
        "transient": raw_message(
            header={"durable": False}, properties={"message-id": "transient"}, body=[data_section(b"3")]
        ),
    }
    if source == "peer":
        conns = {"src": peer_conn(peer, "activemq")}
        for raw in messages.values():
            peer.put("queue://d7", raw)
        src_def = {"connection": "src", "queue": "d7"}
    else:
        src = rabbit.queue(unique("a10-src"))
        conns = {"src": R10}
        for raw in messages.values():
            amqp10.send(src, raw)
        src_def = {"connection": "src", "queue": src}
    portico(render([bridge("b", src_def, rabbit_sink(dst))], **conns))

    got = by_id(typed_get(rabbit, dst, 3))
    assert {k: got[k][0].delivery_mode for k in got} == {"no-header": 1, "durable": 2, "transient": 1}


def test_durability_to_amqp10(portico, rabbit, peer):
    # docs/mapping.md: R2A-02
    """Case 7, reverse: delivery_mode unset → durable false, 2 → true; a header is always
    sent (checked on the wire)."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "peer", "queue": "d"})],
        peer=peer_conn(peer, "activemq"),
    ))
    rabbit.publish(src, b"1", message_id="unset")
    rabbit.publish(src, b"2", message_id="persistent", delivery_mode=2)
    got = {t.message.id: t for t in peer.wait_received("queue://d", 2)}
    for t in got.values():
        assert t.has("header"), t.section_names
    assert fields(got["unset"], "header")["durable"] is False
    assert fields(got["persistent"], "header")["durable"] is True


def test_priority_clamped_for_jms_and_defaulted(portico, rabbit, amqp10, peer):
    # docs/mapping.md: R2A-03
    """Case 8: priority 200 → 9 at an ActiveMQ-style peer; no priority → 4."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, {"connection": "peer", "queue": "p"})],
        r10=R10,
        peer=peer_conn(peer, "activemq"),
    ))
    amqp10.send(src, raw_message(
        header={"durable": True, "priority": ubyte(200)}, properties={"message-id": "high"},
        body=[data_section(b"h")],
    ))
    amqp10.send(src, raw_message(properties={"message-id": "absent"}, body=[data_section(b"a")]))
    got = {t.message.id: t for t in peer.wait_received("queue://p", 2)}
    assert typed(fields(got["high"], "header")["priority"]) == ("ubyte", 9)
    assert typed(fields(got["absent"], "header")["priority"]) == ("ubyte", 4)


def test_091_priority_reaches_amqp10(portico, rabbit, peer):
    """Case 8, reverse: 0-9-1 priority 9 → 1.0 priority 9."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "peer", "queue": "p"})],
        peer=peer_conn(peer, "activemq"),
    ))
    rabbit.publish(src, b"x", priority=9)
    [t] = peer.wait_received("queue://p", 1)
    assert typed(fields(t, "header")["priority"]) == ("ubyte", 9)


def test_ttl_both_ways(portico, rabbit, amqp10, peer):
    # docs/mapping.md: R2A-04, A2R-03
    """Case 9: 1.0 ttl 5000 → expiration "5000"; expiration "60000" → 1.0 ttl 60000."""
    src, dst, src2 = (rabbit.queue(unique(n)) for n in ("a10-src", "a10-dst", "a10-src2"))
    portico(render(
        [
            bridge("in", {"connection": "r10", "queue": src}, rabbit_sink(dst)),
            bridge("out", {"connection": "rabbit", "queue": src2}, {"connection": "peer", "queue": "ttl"}),
        ],
        r10=R10,
        peer=peer_conn(peer, "activemq"),
    ))
    amqp10.send(src, raw_message(header={"durable": True, "ttl": uint(5000)}, body=[data_section(b"t")]))
    rabbit.publish(src2, b"u", expiration="60000")

    [(props, _, _)] = typed_get(rabbit, dst, 1)
    assert props.expiration == "5000"
    [t] = peer.wait_received("queue://ttl", 1)
    assert typed(fields(t, "header")["ttl"]) == ("uint", 60000)


def test_zero_expiry_and_creation_time_mean_unset(portico, rabbit, amqp10, peer):
    """Case 10: absolute-expiry-time 0 / creation-time 0 → no expiration, no timestamp;
    0-9-1 without them → no absolute-expiry-time, no creation-time on the 1.0 side."""
    src, dst, src2 = (rabbit.queue(unique(n)) for n in ("a10-src", "a10-dst", "a10-src2"))
    portico(render(
        [
            bridge("in", {"connection": "r10", "queue": src}, rabbit_sink(dst)),
            bridge("out", {"connection": "rabbit", "queue": src2}, {"connection": "peer", "queue": "z"}),
        ],
        r10=R10,
        peer=peer_conn(peer, "activemq"),
    ))
    amqp10.send(src, raw_message(
        header={"durable": True},
        properties={
            "message-id": "zero",
            "absolute-expiry-time": timestamp(0),
            "creation-time": timestamp(0),
        },
        body=[data_section(b"z")],
    ))
    rabbit.publish(src2, b"plain", message_id="plain")

    [(props, _, _)] = typed_get(rabbit, dst, 1)
    assert props.message_id == "zero"
    assert props.expiration is None
    assert props.timestamp is None
    headers = props.headers or {}
    assert "amqp.absolute-expiry-ms" not in headers
    assert "amqp.creation-time-ms" not in headers
    [t] = peer.wait_received("queue://z", 1)
    f = fields(t, "properties")
    assert f["absolute-expiry-time"] is None
    assert f["creation-time"] is None
    assert fields(t, "header")["ttl"] is None


JSON_TEXT = b'{"Text":"as","Seq":1,"Max":7000}'


def test_body_sections_to_091_and_kafka(portico, rabbit, amqp10):
    # docs/mapping.md: A2R-01, A2R-02, A2K-01
    """Case 12: amqp-value string → its UTF-8 bytes (kind text); amqp-value binary → the
    bytes. The same on Kafka."""
    assert len(JSON_TEXT) == 32
    src, dst, src_k = (rabbit.queue(unique(n)) for n in ("a10-src", "a10-dst", "a10-srck"))
    topic = create_topic(unique("a10-body"))
    portico(render(
        [
            bridge("rabbit", {"connection": "r10", "queue": src}, rabbit_sink(dst)),
            bridge("kafka", {"connection": "r10", "queue": src_k}, {"connection": "kafka", "topic": topic}),
        ],
        r10=R10,
    ))
    bodies = {
        "text": [amqp_value_section(JSON_TEXT.decode())],
        "binary": [amqp_value_section(b"\xde\xad")],
    }
    for queue in (src, src_k):
        for mid, body in bodies.items():
            amqp10.send(queue, raw_message(header={"durable": True}, properties={"message-id": mid}, body=body))

    got = by_id(typed_get(rabbit, dst, 2))
    assert got["text"][1] == JSON_TEXT
    assert got["text"][0].headers["amqp.body"] == "text"
    assert got["binary"][1] == b"\xde\xad"
    assert "amqp.body" not in (got["binary"][0].headers or {})
    records = consume(topic, 2)
    values = {dict(r.headers())["amqp.message-id"]: r.value() for r in records}
    assert values == {b"text": JSON_TEXT, b"binary": b"\xde\xad"}
    assert dict(records[0].headers())["amqp.body"] == b"text"


def test_data_sections_are_concatenated_in_order(portico, rabbit, peer):
    """Case 12: two data sections 61, 62 → body 61 62 on 0-9-1 and Kafka. The peer is the
    source: RabbitMQ 3.10's AMQP 1.0 plugin itself delivers data sections in reverse order."""
    dst = rabbit.queue(unique("a10-dst"))
    topic = create_topic(unique("a10-data"))
    two = raw_message(header={"durable": True}, properties={"message-id": "data2"},
                      body=[data_section(b"a"), data_section(b"b")])
    peer.put("queue://d2", two)
    peer.put("queue://d2k", two)
    portico(render(
        [
            bridge("rabbit", {"connection": "peer", "queue": "d2"}, rabbit_sink(dst)),
            bridge("kafka", {"connection": "peer", "queue": "d2k"}, {"connection": "kafka", "topic": topic}),
        ],
        peer=peer_conn(peer, "activemq"),
    ))
    [(props, body, _)] = typed_get(rabbit, dst, 1)
    assert body == b"ab"
    [record] = consume(topic, 1)
    assert record.value() == b"ab"


def test_amqp_sequence_body(portico, rabbit, peer):
    """An amqp-sequence body → JSON text with kind "list" and its shape on 0-9-1; to a 1.0
    sink it is an amqp-value list with the element types restored."""
    dst = rabbit.queue(unique("a10-dst"))
    seq = raw_message(header={"durable": True}, properties={"message-id": "seq"},
                      body=[amqp_sequence_section([int32(1), "a", True])])
    peer.put("seq-a", seq)
    peer.put("seq-b", seq)
    portico(render(
        [
            bridge("rabbit", {"connection": "peer", "address": "seq-a"}, rabbit_sink(dst)),
            bridge("amqp10", {"connection": "peer", "address": "seq-b"}, {"connection": "peer", "address": "seq-out"}),
        ],
        peer=peer_conn(peer, "generic"),
    ))
    [(props, body, _)] = typed_get(rabbit, dst, 1)
    assert json.loads(body) == [1, "a", True]
    assert props.headers["amqp.body"] == "list"
    assert json.loads(props.headers["amqp.body-types"]) == ["i32", "string", "bool"]
    [t] = peer.wait_received("seq-out", 1)
    [(kind, value)] = t.body_sections
    assert kind == "amqp-value"
    assert [typed(v) for v in value] == [("int32", 1), ("str", "a"), ("bool", True)]


def test_091_body_is_one_data_section(portico, rabbit, peer):
    # docs/mapping.md: R2A-01
    """Case 12, reverse: 0-9-1 bytes → exactly one data section; empty → one empty data
    section (never amqp-value null)."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "peer", "queue": "body"})],
        peer=peer_conn(peer, "activemq"),
    ))
    rabbit.publish(src, JSON_TEXT, message_id="json")
    rabbit.publish(src, b"", message_id="empty")
    got = {t.message.id: t for t in peer.wait_received("queue://body", 2)}
    assert got["json"].body_sections == [("data", JSON_TEXT)]
    assert got["empty"].body_sections == [("data", b"")]


def test_kafka_headers_are_readable_text_and_types_come_back(portico, rabbit, amqp10):
    # docs/mapping.md: A2K-03, A2K-04, K2A-02, K2A-03
    """Case 17: application properties and annotations → readable Kafka headers plus
    portico.types; Kafka → 1.0 restores int, bool and long."""
    src = rabbit.queue(unique("a10-src"))
    back = rabbit.queue(unique("a10-back"))
    topic = create_topic(unique("a10-k17"))
    portico(render(
        [
            bridge("to-kafka", {"connection": "r10", "queue": src}, {"connection": "kafka", "topic": topic}),
            bridge(
                "from-kafka",
                {"connection": "kafka", "topics": [topic], "group": unique("g"), "start": "earliest"},
                {"connection": "r10", "queue": back},
            ),
        ],
        r10=R10,
    ))
    amqp10.send(src, Message(
        id="k17",
        properties={"deviceId": "dev-1", "temp": int32(21), "ok": True},
        annotations={symbol("x-opt-seq"): 42},
        body="reading",
    ))

    [record] = consume(topic, 1)
    headers = dict(record.headers())
    assert headers["deviceId"] == b"dev-1"
    assert headers["temp"] == b"21"
    assert headers["ok"] == b"true"
    assert headers["x-opt-seq"] == b"42"
    assert json.loads(headers["portico.types"]) == {"temp": "i32", "ok": "bool", "x-opt-seq": "i64"}
    assert record.value() == b"reading"

    [w] = amqp10.receive(back, 1)
    app = w.section("application-properties")
    ann = w.section("message-annotations")
    assert typed(app["temp"]) == ("int32", 21)
    assert typed(app["ok"]) == ("bool", True)
    assert typed(app["deviceId"]) == ("str", "dev-1")
    assert typed(ann[symbol("x-opt-seq")]) == ("int", 42)  # proton decodes AMQP long as int
    assert "portico.types" not in app
    assert w.body_sections == [("amqp-value", "reading")]  # text kind carried by amqp.body
    assert ann[symbol("x-opt-kafka-topic")] == topic
    assert typed(ann[symbol("x-opt-kafka-partition")]) == ("int32", 0)
    assert typed(ann[symbol("x-opt-kafka-offset")]) == ("int", 0)


@pytest.mark.parametrize(
    "flavor,node,name,address,capability,dest",
    [
        ("activemq", "queue", "q.in", "queue://q.in", None, 0),
        ("activemq", "topic", "t.in", "topic://t.in", None, 1),
        ("artemis", "queue", "q.in", "q.in", "queue", 0),
        ("artemis", "topic", "t.in", "t.in", "topic", 1),
    ],
)
def test_jms_annotations_and_addresses(portico, rabbit, amqp10, peer, flavor, node, name, address, capability, dest):
    # docs/mapping.md: R2A-13
    """Case 19: JMS flavors: address spelling, target capability, x-opt-jms-dest and
    x-opt-jms-msg-type as AMQP bytes, text body as amqp-value string."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, {"connection": "peer", node: name})],
        r10=R10,
        peer=peer_conn(peer, flavor),
    ))
    amqp10.send(src, Message(id="j", reply_to="t.replies", body="hi"))
    [t] = peer.wait_received(address, 1)
    ann = t.section("message-annotations")
    assert typed(ann[symbol("x-opt-jms-dest")]) == ("byte", dest)
    assert typed(ann[symbol("x-opt-jms-msg-type")]) == ("byte", 5)
    assert t.body_sections == [("amqp-value", "hi")]
    assert fields(t, "properties")["reply-to"] == "t.replies"
    [attach] = [a for a in peer.attached(address) if a.role == "sender"]
    assert attach.capabilities == ([symbol(capability)] if capability else None)


def test_reply_to_and_to_kept(portico, rabbit, amqp10):
    # docs/mapping.md: A2R-08, A2K-02
    """Case 20: to / reply-to / correlation-id → 0-9-1 properties and headers, and Kafka."""
    src, dst, src_k = (rabbit.queue(unique(n)) for n in ("a10-src", "a10-dst", "a10-srck"))
    topic = create_topic(unique("a10-k20"))
    portico(render(
        [
            bridge("rabbit", {"connection": "r10", "queue": src}, rabbit_sink(dst)),
            bridge("kafka", {"connection": "r10", "queue": src_k}, {"connection": "kafka", "topic": topic}),
        ],
        r10=R10,
    ))
    for queue in (src, src_k):
        amqp10.send(queue, Message(address="requests.q", reply_to="replies.q", correlation_id="c-1", body="r"))

    [(props, _, _)] = typed_get(rabbit, dst, 1)
    assert props.reply_to == "replies.q"
    assert props.correlation_id == "c-1"
    assert props.headers["amqp.to"] == "requests.q"
    [record] = consume(topic, 1)
    headers = dict(record.headers())
    assert headers["amqp.reply-to"] == b"replies.q"
    assert headers["amqp.to"] == b"requests.q"
    assert headers["amqp.correlation-id"] == b"c-1"


def test_large_message_with_small_frames(portico, rabbit, amqp10):
    """Case 25: max_frame_size 4096, a 100000-byte body crosses intact."""
    src, dst = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-dst"))
    portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, rabbit_sink(dst))],
        r10={**R10, "max_frame_size": 4096},
    ))
    payload = os.urandom(100000)
    amqp10.send(src, raw_message(header={"durable": True}, body=[data_section(payload)]))
    [(_, body, _)] = typed_get(rabbit, dst, 1)
    assert len(body) == len(payload)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_large_message_with_small_frames_to_peer(portico, rabbit, peer):
    """Case 25 at the peer: the connection announces max-frame-size 4096 (and SASL
    ANONYMOUS without a user); a 100000-byte body arrives as one intact data section."""
    src = rabbit.queue(unique("a10-src"))
    portico(render(
        [bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "peer", "queue": "big"})],
        peer=peer_conn(peer, "activemq", max_frame_size=4096),
    ))
    payload = os.urandom(100000)
    rabbit.publish(src, payload)
    [t] = peer.wait_received("queue://big", 1)
    assert t.body_sections == [("data", payload)]
    assert {(c["max_frame_size"], c["mechanism"]) for c in peer.connections} == {(4096, "ANONYMOUS")}


# ----------------------------------------------------------------------------- case 26

FULL_PROPERTIES = {
    "message-id": "mid-26",
    "user-id": b"svc",
    "to": "orders.in",
    "subject": "orders.created",
    "reply-to": "orders.replies",
    "correlation-id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "content-type": symbol("application/json"),
    "content-encoding": symbol("utf-8"),
    "absolute-expiry-time": timestamp(4102444800000),
    "creation-time": timestamp(1700000000123),
    "group-id": "g-1",
    "group-sequence": uint(7),
    "reply-to-group-id": "rg-1",
}
FULL_APP = {
    "s": "text",
    "b": True,
    "i8": byte(-8),
    "i16": short(-16),
    "i32": int32(-32),
    "i64": -64,
    "u8": ubyte(8),
    "u16": ushort(16),
    "u32": uint(32),
    "u64": ulong(64),
    "f32": float32(1.5),
    "f64": 2.25,
    "ts": timestamp(1700000000000),
    "id": uuid.UUID("87654321-4321-8765-4321-876543218765"),
    "raw": b"\x00\x01",
}
FULL_ANNOTATIONS = {symbol("x-opt-tenant"): "t1", symbol("x-opt-n"): 7}
FULL_BODY = {"k": "v", "n": int32(5), "ok": True}


def full_message():
    return raw_message(
        header={
            "durable": True, "priority": ubyte(6), "ttl": uint(60000),
            "first-acquirer": False, "delivery-count": uint(0),
        },
        delivery_annotations={symbol("x-opt-hop"): "only-this-hop"},
        annotations=FULL_ANNOTATIONS,
        properties=FULL_PROPERTIES,
        application_properties=FULL_APP,
        body=[amqp_value_section(FULL_BODY)],
    )


def test_every_section_crosses_amqp10_to_amqp10(portico, peer):
    # docs/mapping.md: A2A-01
    """Case 26: header, annotations, all properties, typed application properties and an
    amqp-value map arrive equal; delivery-annotations (hop-by-hop) do not."""
    peer.put("in26", full_message())
    portico(render(
        [bridge("b", {"connection": "peer", "address": "in26"}, {"connection": "peer", "address": "out26"})],
        peer=peer_conn(peer, "generic"),
    ))
    [t] = peer.wait_received("out26", 1)
    assert not t.has("delivery-annotations"), t.section_names
    header = fields(t, "header")
    assert header["durable"] is True
    assert typed(header["priority"]) == ("ubyte", 6)
    assert typed(header["ttl"]) == ("uint", 60000)
    props = fields(t, "properties")
    assert {k: typed(v) for k, v in props.items()} == {k: typed(v) for k, v in FULL_PROPERTIES.items()}
    assert {k: typed(v) for k, v in t.section("application-properties").items()} == {
        k: typed(v) for k, v in FULL_APP.items()
    }
    assert {k: typed(v) for k, v in t.section("message-annotations").items()} == {
        k: typed(v) for k, v in FULL_ANNOTATIONS.items()
    }
    [(kind, body)] = t.body_sections
    assert kind == "amqp-value"
    assert {k: typed(v) for k, v in body.items()} == {k: typed(v) for k, v in FULL_BODY.items()}


def test_every_section_accounted_for_on_091(portico, rabbit, peer):
    # docs/mapping.md: A2R-10, A2R-11
    """Case 26, 0-9-1 side: each field has its place (property or amqp.* header)."""
    dst = rabbit.queue(unique("a10-dst"))
    peer.put("in26b", full_message())
    portico(render(
        [bridge("b", {"connection": "peer", "address": "in26b"}, rabbit_sink(dst))],
        peer=peer_conn(peer, "generic"),
    ))
    [(props, body, tags)] = typed_get(rabbit, dst, 1)
    h = props.headers
    assert props.delivery_mode == 2
    assert props.priority == 6
    assert props.expiration == "60000"
    assert props.message_id == "mid-26"
    assert props.user_id is None and h["amqp.user-id"] == "svc"
    assert h["amqp.to"] == "orders.in"
    assert h["amqp.subject"] == "orders.created"
    assert props.reply_to == "orders.replies"
    assert props.correlation_id == "ID:AMQP_UUID:12345678-1234-5678-1234-567812345678"
    assert props.content_type == "application/json"
    assert props.content_encoding == "utf-8"
    assert h["amqp.absolute-expiry-ms"] == 4102444800000 and tags["amqp.absolute-expiry-ms"] == "l"
    assert props.timestamp == 1700000000
    assert h["amqp.creation-time-ms"] == 1700000000123
    assert h["amqp.group-id"] == "g-1"
    assert h["amqp.group-sequence"] == 7
    assert h["amqp.reply-to-group-id"] == "rg-1"
    assert h["x-opt-tenant"] == "t1" and h["x-opt-n"] == 7 and tags["x-opt-n"] == "l"
    assert "x-opt-hop" not in h
    expected = {
        "s": ("text", "S"), "b": (True, "t"), "i8": (-8, "b"), "i16": (-16, "s"),
        "i32": (-32, "I"), "i64": (-64, "l"), "u8": (8, "s"), "u16": (16, "I"),
        "u32": (32, "l"), "u64": (64, "l"), "f32": (1.5, "f"), "f64": (2.25, "d"),
        "ts": (1700000000, "T"), "id": ("87654321-4321-8765-4321-876543218765", "S"),
        "raw": (b"\x00\x01", "x"),
    }
    got = {k: (h[k], tags[k]) for k in expected}
    got["ts"] = (int(h["ts"].timestamp()) if hasattr(h["ts"], "timestamp") else h["ts"], tags["ts"])
    assert got == expected
    assert h["amqp.body"] == "map"
    assert json.loads(h["amqp.body-types"]) == {"k": "string", "n": "i32", "ok": "bool"}
    assert json.loads(body) == {"k": "v", "n": 5, "ok": True}


# ============================================================================= outcomes


def test_rejected_by_peer_goes_to_dead_letter(portico, rabbit, amqp10, peer):
    src, dlq = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-dlq"))
    peer.set_disposition("rej", ("reject", "amqp:precondition-failed", "no such order"))
    p = portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, {"connection": "peer", "address": "rej"},
                dead_letter=rabbit_sink(dlq))],
        r10=R10,
        peer=peer_conn(peer, "generic"),
    ))
    amqp10.send(src, Message(id="r", body="x"))
    [(props, body, _)] = typed_get(rabbit, dlq, 1)
    assert props.message_id == "r"
    assert props.headers["portico.dlq.reason"] == "refused"
    assert props.headers["portico.dlq.stage"] == "deliver"
    assert "no such order" in props.headers["portico.dlq.error"]
    assert props.headers["portico.dlq.class"] == "dead-letter"
    assert "no such order" in props.headers["portico.dlq.broker-error"]
    wait_settled(p, 1)
    assert len(peer.received("rej")) == 1  # no retry of a rejected message
    assert metric(p, "portico_delivery_retries_total") == 0
    assert rabbit.depth(src) == 0


def test_released_and_modified_are_retried_then_delivered_once(portico, rabbit, amqp10, peer):
    src = rabbit.queue(unique("a10-src"))
    peer.set_disposition("rel", "release", ("modify", False), "release", "accept")
    p = portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, {"connection": "peer", "address": "rel"})],
        r10=R10,
        peer=peer_conn(peer, "generic"),
    ))
    amqp10.send(src, Message(id="rel", body="x"))
    wait_settled(p, 1)
    assert [t.disposition for t in peer.received("rel")] == ["release", "modify", "release", "accept"]
    assert [m.id for m in peer.stored("rel")] == ["rel"]
    assert metric(p, "portico_delivery_retries_total") == 3
    assert metric(p, "portico_messages_delivered_total") == 1
    assert rabbit.depth(src) == 0


def test_source_accepted_only_after_sink_accepted(portico, peer):
    """An AMQP 1.0 source delivery is settled `accepted` only once the sink's outcome was
    `accepted`: here the sink releases twice first (peer → peer, one event order)."""
    peer.put("hold-in", Message(id="h", body="x"))
    peer.set_disposition("hold-out", "release", "release", "accept")
    portico(render(
        [bridge("b", {"connection": "peer", "address": "hold-in"}, {"connection": "peer", "address": "hold-out"})],
        peer=peer_conn(peer, "generic"),
    ))
    [outcome] = peer.wait_outcomes("hold-in", 1)
    transfers = peer.received("hold-out")
    assert [t.disposition for t in transfers] == ["release", "release", "accept"]
    assert outcome.state == "accepted"
    assert outcome.seq > transfers[-1].seq


def test_modified_undeliverable_here_goes_to_dead_letter(portico, rabbit, amqp10, peer):
    src, dlq = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-dlq"))
    peer.set_disposition("undeliverable", ("modify", True))
    p = portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, {"connection": "peer", "address": "undeliverable"},
                dead_letter=rabbit_sink(dlq))],
        r10=R10,
        peer=peer_conn(peer, "generic"),
    ))
    amqp10.send(src, Message(id="u", body="x"))
    [(props, _, _)] = typed_get(rabbit, dlq, 1)
    assert props.message_id == "u"
    assert props.headers["portico.dlq.reason"] == "refused"
    wait_settled(p, 1)
    assert len(peer.received("undeliverable")) == 1
    assert metric(p, "portico_delivery_retries_total") == 0


def test_message_above_max_message_size_goes_to_dead_letter(portico, rabbit, amqp10, peer):
    src, dlq = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-dlq"))
    peer.set_max_message_size("small", 1024)
    p = portico(render(
        [bridge("b", {"connection": "r10", "queue": src}, {"connection": "peer", "address": "small"},
                dead_letter=rabbit_sink(dlq))],
        r10=R10,
        peer=peer_conn(peer, "generic"),
    ))
    amqp10.send(src, raw_message(header={"durable": True}, properties={"message-id": "big"},
                                 body=[data_section(b"z" * 5000)]))
    [(props, body, _)] = typed_get(rabbit, dlq, 1)
    assert props.message_id == "big"
    assert body == b"z" * 5000
    assert props.headers["portico.dlq.reason"] == "too large"
    wait_settled(p, 1)
    assert peer.received("small") == []
    assert metric(p, "portico_delivery_retries_total") == 0


def test_untranslatable_without_dead_letter_is_rejected_at_peer_source(portico, rabbit, peer):
    """No dead_letter: a message whose routing key cannot be rendered is `rejected` at the
    AMQP 1.0 source with an error description, and the next message still flows."""
    dst = rabbit.queue(unique("a10-dst"))
    peer.put("src-t", Message(id="no-subject", body="x"))
    peer.put("src-t", Message(id="ok", subject=dst, body="y"))
    p = portico(render(
        [bridge("b", {"connection": "peer", "address": "src-t"}, rabbit_sink("{subject}"))],
        peer=peer_conn(peer, "generic"),
    ))
    outcomes = {o.message.id: o for o in peer.wait_outcomes("src-t", 2)}
    assert outcomes["no-subject"].state == "rejected"
    assert outcomes["no-subject"].condition is not None
    assert outcomes["no-subject"].condition.description == "template value missing"
    assert outcomes["ok"].state == "accepted"
    [(props, _, _)] = typed_get(rabbit, dst, 1)
    assert props.message_id == "ok"
    assert metric(p, "portico_messages_rejected_total") == 1
    assert peer.depth("src-t") == 0


def test_untranslatable_without_dead_letter_reaches_rabbitmq_dlx(portico, rabbit, amqp10):
    """RabbitMQ 3.10 turns the `rejected` outcome into a dead-lettering of the queue (its
    x-dead-letter-exchange), reason "rejected". The queue is addressed as /amq/queue/NAME
    since /queue/NAME would redeclare it without its arguments."""
    dlq = rabbit.queue(unique("a10-dlx"))
    src = rabbit.queue(unique("a10-src"), arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
    })
    p = portico(render(
        [bridge("b", {"connection": "r10", "address": f"/amq/queue/{src}"}, rabbit_sink("{subject}"))],
        r10=R10,
    ))
    amqp10.send(None, Message(id="no-subject", body="x"), address=f"/amq/queue/{src}")
    [(props, body, _)] = typed_get(rabbit, dlq, 1)
    assert props.headers["x-first-death-reason"] == "rejected"
    assert props.headers["x-first-death-queue"] == src
    wait_settled(p, 1)
    assert metric(p, "portico_messages_rejected_total") == 1
    assert rabbit.depth(src) == 0


# ============================================================================= durable subscriptions


def test_durable_subscription_attach_at_peer(portico, rabbit, peer):
    """The source of a durable subscription attaches with the subscription as link name, a
    stable container id, terminus durability unsettled-state and expiry never, and
    attaches the same way after a restart."""
    dst = rabbit.queue(unique("a10-dst"))
    config = render(
        [bridge("b", {"connection": "peer", "topic": "news", "subscription": "sub-1"}, rabbit_sink(dst))],
        peer=peer_conn(peer, "activemq", container_id="client-26"),
    )
    p = portico(config)
    p.stop()
    portico(config)
    wait_until(lambda: len(peer.attached("topic://news")) >= 2, 20, "two attaches")
    attaches = peer.attached("topic://news")[:2]
    for a in attaches:
        assert (a.name, a.container, a.durability, a.expiry_policy) == (
            "sub-1", "client-26", Terminus.DELIVERIES, Terminus.EXPIRE_NEVER,
        )


def topic_queues(key):
    """{queue: messages} for the queues bound to amq.topic with `key` (rabbitmqctl)."""
    def run(*args):
        out = subprocess.run([RABBITMQCTL, "-q", *args], capture_output=True, text=True, timeout=60)
        return [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]

    bound = {row[1] for row in run("list_bindings", "source_name", "destination_name", "routing_key")
             if row[0] == "amq.topic" and row[2] == key}
    return {row[0]: int(row[1]) for row in run("list_queues", "name", "messages") if row[0] in bound}


def test_durable_subscription_on_rabbitmq_3_is_refused_by_check(tmp_path):
    """RabbitMQ 3.x makes a new queue for every durable attach and never resumes one by link
    name, so a subscription there would lose what arrives while portico is away: the
    configuration is refused up front instead."""
    config = render(
        [bridge("b", {"connection": "r10", "topic": "news", "subscription": "sub"}, rabbit_sink("q"))],
        r10=R10,
    )
    path = tmp_path / "bridges.yaml"
    path.write_text(config)
    out = subprocess.run([BIN, "check", "--config", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "bridges[0].source.subscription: RabbitMQ 3.x cannot resume a durable AMQP 1.0" in out.stderr


def test_jms_map_message_crosses_091_as_json_and_comes_back_typed(portico, rabbit, amqp10):
    # docs/mapping.md: A2R-02
    """A JMS MapMessage (amqp-value map, x-opt-jms-msg-type 2) reaches 0-9-1 as JSON text with
    its kind and types beside it, and an AMQP 1.0 consumer behind a second hop gets the typed
    map back (RabbitMQ 1.0 → 0-9-1 → RabbitMQ 1.0)."""
    src, check, back = round_trip_through_091(portico, rabbit)
    body = {"qty": int32(3), "sku": "A-1", "price": 19.5, "tags": [short(1), short(2)]}
    amqp10.send(src, Message(body=body, annotations={symbol("x-opt-jms-msg-type"): byte(2)}))

    [(props, got_body, _)] = typed_get(rabbit, check, 1)
    assert json.loads(got_body) == {"qty": 3, "sku": "A-1", "price": 19.5, "tags": [1, 2]}
    assert props.headers["amqp.body"] == "map"
    assert json.loads(props.headers["amqp.body-types"]) == {
        "qty": "i32", "sku": "string", "price": "f64", "tags": ["i16", "i16"],
    }

    [w] = amqp10.receive(back, 1)
    got = w.message.body
    assert {k: typed(v) for k, v in got.items() if k != "tags"} == {
        "qty": ("int32", 3), "sku": ("str", "A-1"), "price": ("float", 19.5),
    }
    assert [typed(v) for v in got["tags"]] == [("short", 1), ("short", 2)]


def kafka_source(topic):
    return {"connection": "kafka", "topics": [topic], "group": unique("g"), "start": "earliest"}


def test_strict_bridge_dead_letters_what_amqp10_cannot_hold(portico, rabbit):
    # docs/mapping.md: K2A-01
    """A Kafka tombstone (a null value) has no AMQP 1.0 form: a strict bridge sends it to the
    dead letter with reason `lossy conversion`, naming the field, and delivers the rest."""
    topic = create_topic(unique("t"))
    dst, dlq = rabbit.queue(unique("a10-dst")), rabbit.queue(unique("dlq"))
    produce(topic, [{"value": None, "key": b"k1"}, {"value": b"kept"}])
    strict = bridge("strict", kafka_source(topic), {"connection": "r10", "queue": dst}, rabbit_sink(dlq))
    strict["strict"] = True
    p = portico(render([strict], r10=R10))

    [(props, body, _)] = typed_get(rabbit, dlq, 1)
    assert body == b""
    assert props.headers["portico.dlq.reason"] == "lossy conversion"
    assert "origin.tombstone" in props.headers["portico.dlq.error"]
    assert props.headers["kafka-tombstone"] is True
    [(_, kept, _)] = typed_get(rabbit, dst, 1)
    assert kept == b"kept"
    wait_until(lambda: metric(p, "portico_translation_lossy_total") == 1, 10, "the lossy count")
    wait_until(lambda: metric(p, "portico_messages_dead_lettered_total") == 1, 10, "the dead letter")


def test_lenient_bridge_sends_what_amqp10_cannot_hold_and_counts_it(portico, rabbit):
    # docs/mapping.md: K2A-01
    """Without strict mode the tombstone arrives as an empty message, counted by field."""
    topic = create_topic(unique("t"))
    dst = rabbit.queue(unique("a10-dst"))
    produce(topic, [{"value": None, "key": b"k1"}])
    p = portico(render([bridge("lenient", kafka_source(topic), {"connection": "r10", "queue": dst})], r10=R10))

    [(_, body, _)] = typed_get(rabbit, dst, 1)
    assert body == b""
    series = 'portico_translation_lossy_total{bridge="lenient",field="origin.tombstone"} 1'
    wait_until(lambda: series in p.http("/metrics")[1], 10, series)
    assert "A value does not reach the sink as it was" in p.log()


def test_non_utf8_long_string_from_091_reaches_amqp10_as_binary(portico, rabbit, amqp10):
    # docs/mapping.md: R2A-14
    """Case 11 toward AMQP 1.0: a 0-9-1 `S` header holding bytes that are not UTF-8 becomes
    a binary application property, byte for byte; the UTF-8 one a string."""
    from test_mapping import publish_raw, raw_longstr

    src, dst = rabbit.queue(unique("a10-src")), rabbit.queue(unique("a10-dst"))
    portico(render([bridge("b", {"connection": "rabbit", "queue": src}, {"connection": "r10", "queue": dst})], r10=R10))
    blob = bytes.fromhex("00 53 74 C1 07 02 A1 01 6B A1 01 76")
    publish_raw(rabbit, "", src, b"case-11", headers={"blob": raw_longstr(blob), "ok": "ok"})

    [w] = amqp10.receive(dst, 1)
    app = w.section("application-properties")
    assert bytes(app["blob"]) == blob and type(app["blob"]).__name__ != "str"
    assert typed(app["ok"]) == ("str", "ok")
    assert w.body_sections == [("data", b"case-11")]

