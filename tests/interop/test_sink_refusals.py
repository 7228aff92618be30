"""Issue 5, scenarios 4 and 5, in the directions the other suites leave out: a sink that
refuses one message (an AMQP 1.0 `rejected`, a message above the peer's max-message-size,
an unroutable 0-9-1 publish, a template value the message lacks) while the messages around
it go through.

Every refusal case sends three numbered messages, the middle one failing, and reconciles: two
delivered, one dead-lettered with the whole envelope (reason, class, stage, bridge, source
coordinates, attempts, failure times), none lost, and nothing left in the source (acked,
accepted, or its offset committed). The dead letters go to a RabbitMQ queue read over 0-9-1.

A 0-9-1 target queue at x-max-length with reject-publish (scenario 4) is retried, not
dead-lettered, from Kafka and AMQP 1.0 sources too: the messages wait in the source until
there is room, and all arrive once.

Already covered elsewhere: 1.0 → 1.0 `rejected` and oversize (test_amqp10.py), Kafka → 0-9-1
unroutable and 0-9-1 → Kafka, Kafka → 0-9-1 missing template (test_dead_letter.py), 0-9-1 →
Kafka oversize (test_faults_input.py), 0-9-1 → 0-9-1 full queue (test_faults.py), a missing
Kafka topic (test_outcomes.py). An oversize 0-9-1 publish needs a message above the
broker's max_message_size (128 MiB on RabbitMQ 3.x): not sent here."""

import json

import pytest

from proton import Message

from amqp10_peer import Peer, data_section, encode
from conftest import KAFKA_BROKERS, RABBIT_URL, create_topic, produce, unique, wait_until
from test_amqp10 import Rabbit10
from test_dead_letter import committed_offset
from wire091 import typed_get

R10 = {"protocol": "amqp10", "url": "amqp://guest:guest@127.0.0.1:5672", "flavor": "rabbitmq"}
RETRY = {"initial_backoff": "20ms", "max_backoff": "200ms", "multiplier": 2.0, "max_attempts": 3}
BAD = 1  # the middle one of three


@pytest.fixture
def peer():
    p = Peer().start()
    yield p
    p.stop()


class Source:
    """One source of three messages; `bad` says how message 1 is made to fail."""

    def __init__(self, kind, rabbit):
        self.kind, self.rabbit = kind, rabbit
        if kind == "kafka":
            self.topic, self.group = create_topic(unique("ref-t")), unique("ref-g")
            self.config = {"connection": "kafka", "topics": [self.topic], "group": self.group,
                           "start": "earliest"}
            self.coordinates = f"kafka:{self.topic}/0@{BAD}"
        else:
            self.queue = rabbit.queue(unique("ref-src"))
            connection = "rabbit" if kind == "amqp091" else "r10"
            self.config = {"connection": connection, "queue": self.queue}
            prefix = "amqp091:queue/" if kind == "amqp091" else "amqp10:"
            self.coordinates = f"{prefix}{self.queue}"

    def send(self, messages):
        """messages: [(body, headers)], numbered m-0, m-1, ..."""
        if self.kind == "kafka":
            produce(self.topic, [{"value": body, "key": f"m-{n}".encode(),
                                  "headers": [(k, v.encode()) for k, v in headers.items()]}
                                 for n, (body, headers) in enumerate(messages)])
            return
        if self.kind == "amqp091":
            for n, (body, headers) in enumerate(messages):
                self.rabbit.publish(self.queue, body, message_id=f"m-{n}", headers=headers)
            return
        # RabbitMQ 3.x hands 0-9-1 headers to an AMQP 1.0 receiver as annotations, not as
        # application properties: send over 1.0.
        client = Rabbit10()
        try:
            for n, (body, headers) in enumerate(messages):
                message = Message(id=f"m-{n}", properties=headers)
                client.send(self.queue, encode(message, [data_section(body)]))
        finally:
            client.close()

    def settled(self):
        """Nothing of the three is left for the bridge to read again."""
        return self.settled_all(3)()

    def settled_all(self, count):
        """A check: nothing of `count` messages is left for the bridge to read again."""
        if self.kind == "kafka":
            return lambda: committed_offset(self.group, self.topic) == count
        return lambda: self.rabbit.depth(self.queue) == 0


def run_case(portico, rabbit, source, sink, messages, connections=None):
    """Runs one bridge; returns (portico, bridge name, the one dead letter)."""
    dlq = rabbit.queue(unique("ref-dlq"))
    name = unique("ref")
    conns = {"rabbit": {"protocol": "amqp091", "url": RABBIT_URL},
             "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS}, "r10": R10,
             **(connections or {})}
    bridge = {"name": name, "source": source.config, "sink": sink, "retry": RETRY,
              "dead_letter": {"connection": "rabbit", "exchange": "", "routing_key": dlq}}
    p = portico(f"connections: {json.dumps(conns)}\nbridges: {json.dumps([bridge])}\n")
    source.send(messages)
    [(_, props, body, tags)] = typed_get(rabbit, dlq, 1)

    def done():
        m = p.metrics()
        return (m.get("portico_messages_delivered_total", 0) == 2
                and m.get("portico_messages_dead_lettered_total", 0) == 1
                and m.get("portico_messages_in_flight", 0) == 0)

    wait_until(done, 30, f"2 delivered and 1 dead-lettered\n{p.log()[-2000:]}")
    m = p.metrics()
    assert m.get("portico_messages_rejected_total", 0) == 0
    assert m.get("portico_delivery_retries_total", 0) == 0, "a permanent failure is not retried"
    assert p.stop() == 0
    wait_until(source.settled, 15, "the source settled: 2 delivered + 1 dead-lettered, 0 left")
    assert body == messages[BAD][0], "the original body, untouched"
    h = props.headers
    assert h["portico.dlq.bridge"] == name
    assert h["portico.dlq.source"] == source.coordinates
    assert h["portico.dlq.attempts"] == 1 and tags["portico.dlq.attempts"] == "l"
    for t in ("portico.dlq.time", "portico.dlq.first-failure", "portico.dlq.last-failure"):
        assert tags[t] == "T", t
    assert h["portico.dlq.first-failure"] == h["portico.dlq.last-failure"]
    assert h["portico.dlq.class"] == "dead-letter"
    for k, v in messages[BAD][1].items():
        assert h[k] == v, "the original headers, untouched"
    return p, name, props


def three(bad_body=b"m-1", bad_headers=None, good_headers=None):
    good = good_headers or {}
    return [(b"m-0", dict(good)), (bad_body, bad_headers if bad_headers is not None else dict(good)),
            (b"m-2", dict(good))]


# ----------------------------------------------------------------------------- 1.0 rejected


@pytest.mark.parametrize("kind", ["amqp091", "kafka"])
def test_rejected_by_an_amqp10_sink(portico, rabbit, peer, kind):
    source = Source(kind, rabbit)
    address = unique("rej")
    peer.set_disposition(address, "accept", ("reject", "amqp:precondition-failed", "order closed"),
                         "accept")
    peer_conn = {"protocol": "amqp10", "url": peer.url, "flavor": "generic"}
    _, _, props = run_case(portico, rabbit, source, {"connection": "peer", "address": address},
                           three(good_headers={"tenant": "t1"}), {"peer": peer_conn})
    h = props.headers
    assert (h["portico.dlq.reason"], h["portico.dlq.stage"]) == ("refused", "deliver")
    assert "order closed" in h["portico.dlq.error"] and "order closed" in h["portico.dlq.broker-error"]
    transfers = peer.received(address)
    assert [t.disposition for t in transfers] == ["accept", "reject", "accept"], "no retry"
    assert len(peer.stored(address)) == 2


@pytest.mark.parametrize("kind", ["amqp091", "kafka"])
def test_above_the_amqp10_peers_max_message_size(portico, rabbit, peer, kind):
    source = Source(kind, rabbit)
    address = unique("small")
    peer.set_max_message_size(address, 1024)
    peer_conn = {"protocol": "amqp10", "url": peer.url, "flavor": "generic"}
    _, _, props = run_case(portico, rabbit, source, {"connection": "peer", "address": address},
                           three(bad_body=b"z" * 5000), {"peer": peer_conn})
    h = props.headers
    assert (h["portico.dlq.reason"], h["portico.dlq.stage"]) == ("too large", "deliver")
    assert "1024" in h["portico.dlq.error"]
    assert len(peer.stored(address)) == 2 and len(peer.received(address)) == 2, "never sent"


# ----------------------------------------------------------------------------- 0-9-1 unroutable


def test_unroutable_from_an_amqp10_source(portico, rabbit):
    source = Source("amqp10", rabbit)
    target = rabbit.queue(unique("ref-dst"))
    exchange = unique("ref-ex")
    rabbit.ch.exchange_declare(exchange, "direct", durable=False, auto_delete=False)
    rabbit.ch.queue_bind(target, exchange, "good")
    try:
        sink = {"connection": "rabbit", "exchange": exchange, "routing_key": "{header.key}"}
        _, _, props = run_case(portico, rabbit, source, sink,
                               three(bad_headers={"key": "nowhere"}, good_headers={"key": "good"}))
    finally:
        rabbit.ch.exchange_delete(exchange)
    h = props.headers
    assert (h["portico.dlq.reason"], h["portico.dlq.stage"]) == ("unroutable", "deliver")
    assert h["portico.dlq.broker-error"] == "312 NO_ROUTE"
    assert props.message_id == "m-1"
    assert sorted(body for _, _, body in rabbit.get(target, 2)) == [b"m-0", b"m-2"]


# ----------------------------------------------------------------------------- missing template


@pytest.mark.parametrize("kind", ["amqp091", "kafka", "amqp10"])
def test_missing_template_value_toward_amqp10(portico, rabbit, peer, kind):
    source = Source(kind, rabbit)
    address = unique("by-dest")
    peer_conn = {"protocol": "amqp10", "url": peer.url, "flavor": "generic"}
    sink = {"connection": "peer", "address": address + ".{header.dest}"}
    _, _, props = run_case(portico, rabbit, source, sink,
                           three(bad_headers={"other": "x"}, good_headers={"dest": "a"}),
                           {"peer": peer_conn})
    h = props.headers
    assert (h["portico.dlq.reason"], h["portico.dlq.stage"]) == ("template value missing", "translate")
    assert "header.dest" in h["portico.dlq.error"]
    assert "portico.dlq.broker-error" not in h, "no broker was asked"
    assert len(peer.stored(address + ".a")) == 2


def test_missing_template_value_from_an_amqp10_source(portico, rabbit):
    source = Source("amqp10", rabbit)
    target = rabbit.queue(unique("ref-dst"))
    sink = {"connection": "rabbit", "exchange": "", "routing_key": "{header.dest}"}
    _, _, props = run_case(portico, rabbit, source, sink,
                           three(bad_headers={"other": "x"}, good_headers={"dest": target}))
    h = props.headers
    assert (h["portico.dlq.reason"], h["portico.dlq.stage"]) == ("template value missing", "translate")
    assert props.message_id == "m-1"
    assert sorted(body for _, _, body in rabbit.get(target, 2)) == [b"m-0", b"m-2"]


# ----------------------------------------------------------------------------- 0-9-1 queue full


@pytest.mark.parametrize("kind", ["kafka", "amqp10"])
def test_a_full_target_queue_keeps_the_rest_in_the_source(portico, rabbit, kind):
    """Scenario 4 from Kafka and AMQP 1.0 sources (0-9-1 → 0-9-1 is in test_faults.py): the
    target refuses what exceeds x-max-length (reject-publish); the refused messages are
    retried, never dead-lettered, stay in the source, and all arrive once there is room."""
    total, room = 20, 5
    source = Source(kind, rabbit)
    target = rabbit.queue(unique("ref-full"), {"x-max-length": room, "x-overflow": "reject-publish"})
    dlq = rabbit.queue(unique("ref-dlq"))
    name = unique("ref-full")
    conns = {"rabbit": {"protocol": "amqp091", "url": RABBIT_URL},
             "kafka": {"protocol": "kafka", "brokers": KAFKA_BROKERS}, "r10": R10}
    retry = {k: v for k, v in RETRY.items() if k != "max_attempts"}
    bridge = {"name": name, "source": source.config, "retry": retry,
              "sink": {"connection": "rabbit", "exchange": "", "routing_key": target},
              "dead_letter": {"connection": "rabbit", "exchange": "", "routing_key": dlq}}
    p = portico(f"connections: {json.dumps(conns)}\nbridges: {json.dumps([bridge])}\n")
    source.send([(f"m-{n}".encode(), {}) for n in range(total)])

    wait_until(lambda: rabbit.depth(target) == room, 30, f"{room} on the full target")
    wait_until(lambda: p.metrics().get("portico_delivery_retries_total", 0) > 0, 30, "retries")
    m = p.metrics()
    assert m.get("portico_messages_delivered_total", 0) == room
    assert m.get("portico_messages_dead_lettered_total", 0) == 0
    assert m.get("portico_messages_rejected_total", 0) == 0

    got = []

    def all_arrived():
        method, _, body = rabbit.ch.basic_get(target, auto_ack=True)
        if method:
            got.append(body)
        return len(set(got)) == total

    wait_until(all_arrived, 60, f"all {total} on {target} as room frees up")
    assert sorted(set(got)) == sorted(f"m-{n}".encode() for n in range(total))
    assert len(got) == total, f"duplicates: {len(got) - total}"
    wait_until(lambda: p.metrics().get("portico_messages_in_flight", 1) == 0, 30, "nothing in flight")
    assert p.metrics().get("portico_messages_delivered_total", 0) == total
    assert rabbit.depth(dlq) == 0
    assert p.stop() == 0
    wait_until(source.settled_all(total), 15, "the source settled")


def test_each_returned_message_is_matched_to_its_own_publish(portico, rabbit):
    """A basic.return names no delivery tag, and RabbitMQ may ack an unroutable publish with a
    `multiple` ack that covers its neighbours: lapin then hands the returned message to any of
    them. Every third of 300 messages is unroutable: exactly those are dead-lettered, exactly
    the others arrive, each once."""
    queue = rabbit.queue(unique("ret-src"))
    target, dlq = rabbit.queue(unique("ret-dst")), rabbit.queue(unique("ret-dlq"))
    exchange = unique("ret-ex")
    rabbit.ch.exchange_declare(exchange, "direct", durable=False, auto_delete=False)
    rabbit.ch.queue_bind(target, exchange, "good")
    total = 300
    unroutable = {f"m-{n}" for n in range(total) if n % 3 == 1}
    try:
        bridge = {"name": unique("ret"), "source": {"connection": "rabbit", "queue": queue},
                  "sink": {"connection": "rabbit", "exchange": exchange,
                           "routing_key": "{header.key}"},
                  "dead_letter": {"connection": "rabbit", "exchange": "", "routing_key": dlq}}
        conns = {"rabbit": {"protocol": "amqp091", "url": RABBIT_URL}}
        p = portico(f"connections: {json.dumps(conns)}\nbridges: {json.dumps([bridge])}\n")
        for n in range(total):
            key = "nowhere" if f"m-{n}" in unroutable else "good"
            rabbit.publish(queue, f"m-{n}".encode(), message_id=f"m-{n}", headers={"key": key})
        wait_until(lambda: rabbit.depth(target) + rabbit.depth(dlq) >= total, 30,
                   f"all {total} delivered or dead-lettered\n{p.log()[-2000:]}")
        delivered = [props.message_id for _, props, _ in rabbit.get(target, rabbit.depth(target))]
        dead = [props.message_id for _, props, _, _ in typed_get(rabbit, dlq, rabbit.depth(dlq))]
    finally:
        rabbit.ch.exchange_delete(exchange)
    assert sorted(dead) == sorted(unroutable), "exactly the unroutable ones are dead-lettered"
    assert sorted(delivered) == sorted(f"m-{n}" for n in range(total) if f"m-{n}" not in unroutable)
    assert p.stop() == 0
    assert rabbit.depth(queue) == 0
