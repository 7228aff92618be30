"""Brokers that restart while portico is moving messages (issue 5, scenarios 2, 3 and 6).

Every broker that is stopped here is the test module's own: a RabbitMQ node (`rabbit_node`,
own node name, ports and data) or a Tansu (`tansu`, sqlite storage that survives a restart).
The shared brokers stay up and carry the other side of each bridge. The side that is not
restarted goes through a `SlowLink` that delays the broker's replies, which paces the flow
(about a window per delay) so that the restart always lands mid-stream, whatever the
machine's speed.

Each test sends numbered messages and reconciles: sent = delivered + dead-lettered + still in
the source, nothing lost, duplicates bounded by the in-flight window; it prints one
`FAULT-ROW` line for the table of issue 5."""

import json

import pika
import pytest

from conftest import RABBIT_URL, create_topic, produce, unique, wait_until
from faults import (  # noqa: F401 (fixtures: delete_queues is autouse)
    SCALE,
    amqp_ids,
    body_of,
    committed_offset,
    delete_queues,
    drain,
    metric,
    publish_numbered,
    queue_total,
    read_topic,
    reconcile,
    slow_link,
    tansu,
)

WINDOW = 64
# With WINDOW messages per DELAY the flow runs at about 600 messages a second.
DELAY = 0.1
RETRY = {"initial_backoff": "50ms", "max_backoff": "1s", "multiplier": 2.0}
# What a source may hold unsettled, and so what a lost connection may deliver twice. A 0-9-1
# prefetch caps the unacked deliveries. AMQP 1.0 credit caps only what the broker sends
# ahead: portico grants a new window as soon as the last one is received, so deliveries
# queued for the bridge (64, plus one about to be queued), in flight to the sink
# (max_in_flight) and accepted with their disposition not yet written (at most as many) are
# unsettled too.
UNSETTLED = {"amqp091": WINDOW, "amqp10": WINDOW + 64 + 1 + 2 * WINDOW}


def scaled(count):
    return max(200, int(count * SCALE))


def bridge_spec(name, source, sink):
    return {
        "name": name, "source": source, "sink": sink, "max_in_flight": WINDOW, "retry": RETRY,
    }


def render(connections, bridges):
    """Config text in JSON flow style (valid YAML)."""
    return (
        f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\n"
        "shutdown_timeout: 10s\n"
    )


def config(bridge, connections, source, sink):
    return render(connections, [bridge_spec(bridge, source, sink)])


def paced_rabbit(slow_link):
    """A 0-9-1 connection to the shared RabbitMQ through a link that delays its replies."""
    return {"protocol": "amqp091", "url": slow_link(5672, DELAY).amqp_url()}


def node_connections(node):
    """The node's connections: 0-9-1 (`own`) and AMQP 1.0 (`own10`)."""
    return {
        "own": {"protocol": "amqp091", "url": node.url},
        "own10": {
            "protocol": "amqp10",
            "url": node.url.removesuffix("/%2f"),
            "flavor": "rabbitmq",
        },
    }


def started(node):
    """The module's node, running (a test before may have left it stopped)."""
    return node if node.alive() else node.start()


def declare_queues(url, *names):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for name in names:
            conn.channel().queue_declare(name, durable=True)
    finally:
        conn.close()


def delete_queues_at(url, *names):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for name in names:
            conn.channel().queue_delete(name)
    finally:
        conn.close()


def counters(p, name):
    """{bridge: value} of one of portico's metrics."""
    out = {}
    for line in p.http("/metrics")[1].splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            bridge = labels.split('bridge="', 1)[1].split('"', 1)[0]
            out[bridge] = out.get(bridge, 0) + float(value)
    return out


def delivered(p, bridge):
    return counters(p, "portico_messages_delivered_total").get(bridge, 0)


def to_queue(connection, queue):
    """A 0-9-1 sink publishing to `queue` through the default exchange."""
    return {"connection": connection, "exchange": "", "routing_key": queue}


def ids_in(queue, url=RABBIT_URL):
    """The message ids of everything now in `queue` (taken)."""
    return [props.message_id for props, _ in drain(queue, url)]


def settled(p, sources_left, total, timeout=120):
    """Waits until every source is empty and each bridge delivered everything it took."""

    def done():
        in_flight = counters(p, "portico_messages_in_flight")
        return all(
            delivered(p, bridge) >= total and in_flight.get(bridge, 0) == 0 and left() == 0
            for bridge, left in sources_left.items()
        )

    wait_until(done, timeout, f"every message settled\n{p.log()[-3000:]}")


def interrupted(p, bridges, total, what):
    """Asserts the fault landed mid-stream: each bridge had delivered some messages, not all."""
    for bridge in bridges:
        count = delivered(p, bridge)
        print(f"{what}: {bridge} had delivered {count:.0f} of {total}")
        assert 0 < count < total, f"{what} did not land mid-stream for {bridge}"


def finish(p, bridge, scenario, direction, total, ids, window):
    """Reconciles what reached the target of `bridge` and prints the table row."""
    dead = counters(p, "portico_messages_dead_lettered_total").get(bridge, 0)
    reconcile(ids, [f"m-{n}" for n in range(total)], window, scenario, direction, dead)
    assert dead == 0 and counters(p, "portico_messages_rejected_total").get(bridge, 0) == 0


# ----------------------------------------------------------------------------- RabbitMQ


def test_rabbitmq_restart_mid_stream(portico, rabbit, rabbit_node, slow_link):
    """The node stops and starts again while three bridges move messages through it: two
    read from it (0-9-1 and AMQP 1.0), one publishes to it. A source's unsettled deliveries
    go back to the queue and are taken again: at most what the source holds arrives twice.
    A sink's publishes whose confirm was lost are retried: at most the in-flight window
    arrives twice. (One restart for all three keeps the suite short.)"""
    node = started(rabbit_node)
    total = scaled(3000)
    src091, src10, dst = unique("rr-src091"), unique("rr-src10"), unique("rr-dst")
    to091, to10, back = (rabbit.queue(unique(q)) for q in ("rr-to091", "rr-to10", "rr-back"))
    declare_queues(node.url, src091, src10, dst)
    for queue in (src091, src10):
        publish_numbered(queue, range(total), size=256, url=node.url)
    publish_numbered(back, range(total), size=256)
    totals = node.queue_totals()
    assert totals[src091] == totals[src10] == total and rabbit.depth(back) == total
    b091, b10, bsink = unique("rr-091"), unique("rr-10"), unique("rr-sink")
    bridges = [
        bridge_spec(b091, {"connection": "own", "queue": src091, "prefetch": WINDOW},
                    to_queue("shared", to091)),
        bridge_spec(b10, {"connection": "own10", "queue": src10, "credit": WINDOW},
                    to_queue("shared", to10)),
        bridge_spec(bsink, {"connection": "shared", "queue": back, "prefetch": WINDOW},
                    to_queue("own", dst)),
    ]
    # The shared broker's replies come late on every bridge: each runs at about one window
    # per DELAY, so the restart finds all three mid-stream.
    connections = {**node_connections(node), "shared": paced_rabbit(slow_link)}
    p = portico(render(connections, bridges))

    tenth = total // 10
    names = [spec["name"] for spec in bridges]
    wait_until(lambda: all(delivered(p, b) >= tenth for b in names), 60, f"{tenth} each")
    node.stop()
    interrupted(p, names, total, "RabbitMQ stop")
    node.start()
    left = {
        b091: lambda: node.queue_totals().get(src091),
        b10: lambda: node.queue_totals().get(src10),
        bsink: lambda: queue_total(back),
    }
    settled(p, left, total)
    assert "Lost the source's broker" in p.log()
    assert counters(p, "portico_delivery_retries_total").get(bsink, 0) > 0, "no publish was retried"

    source_side, sink_side = "RabbitMQ restart, source side", "RabbitMQ restart, sink side"
    window = UNSETTLED["amqp091"]
    finish(p, b091, source_side, "0-9-1 -> 0-9-1", total, ids_in(to091), window)
    window = UNSETTLED["amqp10"]
    finish(p, b10, source_side, "1.0 -> 0-9-1", total, ids_in(to10), window)
    finish(p, bsink, sink_side, "0-9-1 -> 0-9-1", total, ids_in(dst, node.url), WINDOW)
    delete_queues_at(node.url, src091, src10, dst)


def test_rabbitmq_down_when_portico_starts(portico, rabbit, rabbit_node):
    """Scenario 6: the node is down when portico starts, with one bridge reading from it and
    one publishing to it (their messages wait in the shared broker). /readyz says what is
    waiting and nothing is taken; once the node is up portico declares the queues and every
    message crosses, once."""
    if rabbit_node.alive():
        rabbit_node.stop()
    node, total = rabbit_node, scaled(500)
    src, dst = unique("rd-src"), unique("rd-dst")
    waiting, arrived = (rabbit.queue(unique(q)) for q in ("rd-waiting", "rd-arrived"))
    publish_numbered(waiting, range(total), size=128)
    declare = {"queues": [{"name": src}, {"name": dst}]}
    connections = {
        "own": {"protocol": "amqp091", "url": node.url, "declare": declare},
        "shared": {"protocol": "amqp091", "url": RABBIT_URL},
    }
    to_node, from_node = unique("rd-sink"), unique("rd-source")
    bridges = [
        bridge_spec(to_node, {"connection": "shared", "queue": waiting, "prefetch": WINDOW},
                    to_queue("own", dst)),
        bridge_spec(from_node, {"connection": "own", "queue": src, "prefetch": WINDOW},
                    to_queue("shared", arrived)),
    ]
    p = portico(render(connections, bridges), ready=False)

    def not_ready():
        status, body = p.http("/readyz")
        return status == 503 and "connection own topology: waiting" in body and body

    body = wait_until(not_ready, 30, "/readyz 503 naming the node's connection")
    print(f"/readyz while the node is down:\n{body}")
    assert metric(p, "portico_messages_received_total") == 0
    assert queue_total(waiting) == total

    node.start()
    p.wait_ready(timeout=60)
    publish_numbered(src, range(total), size=128, url=node.url)
    left = {to_node: lambda: queue_total(waiting), from_node: lambda: node.queue_totals().get(src)}
    settled(p, left, total)
    scenario = "RabbitMQ down at start"
    finish(p, to_node, f"{scenario}, sink side", "0-9-1 -> 0-9-1", total, ids_in(dst, node.url), 0)
    finish(p, from_node, f"{scenario}, source side", "0-9-1 -> 0-9-1", total, ids_in(arrived), 0)
    delete_queues_at(node.url, src, dst)


# ----------------------------------------------------------------------------- Kafka (Tansu)


def test_kafka_restart_sink_side(portico, rabbit, tansu, slow_link):
    """The Kafka broker (sqlite storage) is killed mid-stream and started again: records it
    had not confirmed are produced again once it is back; duplicates at most the in-flight
    window."""
    kafka = tansu().start()
    source, topic, bridge = unique("kr-src"), unique("kr-t"), unique("kr")
    total = scaled(3000)
    create_topic(topic, brokers=kafka.brokers)
    rabbit.queue(source)
    publish_numbered(source, range(total), size=256)
    wait_until(lambda: rabbit.depth(source) == total, 30, f"{total} on {source}")
    connections = {
        "shared": paced_rabbit(slow_link),
        "kafka": {"protocol": "kafka", "brokers": kafka.brokers},
    }
    source_spec = {"connection": "shared", "queue": source, "prefetch": WINDOW}
    sink = {"connection": "kafka", "topic": topic}
    p = portico(config(bridge, connections, source_spec, sink))

    wait_until(lambda: delivered(p, bridge) >= total // 10, 60, f"{total // 10} delivered")
    # Killed, not stopped: Tansu 0.6 stops its storage before its listener on SIGTERM, so
    # produce requests then fail with "unknown broker error", and after the restart the
    # first idempotent batch of the same producer panics its sqlite storage (lite.rs:503,
    # "more or less than one row"); every produce fails from then on. A confluent-kafka
    # producer alone does the same. After SIGKILL the committed data is all there.
    kafka.kill()
    interrupted(p, [bridge], total, "Kafka kill (sink)")
    kafka.start()
    settled(p, {bridge: lambda: queue_total(source)}, total)

    ids = amqp_ids(read_topic(topic, brokers=kafka.brokers))
    finish(p, bridge, "Kafka restart, sink side", "0-9-1 -> Kafka", total, ids, WINDOW)


def test_kafka_restart_source_side(portico, rabbit, tansu, slow_link):
    """The Kafka broker restarts mid-stream: the consumer group's committed offset survives,
    portico resumes from its position and the group ends committed at the end."""
    kafka = tansu().start()
    topic, group, target, bridge = (unique(n) for n in ("kr-t", "kr-g", "kr-dst", "kr"))
    total = scaled(3000)
    create_topic(topic, brokers=kafka.brokers)
    produce(topic, [{"value": body_of(n, 256)} for n in range(total)], brokers=kafka.brokers)
    rabbit.queue(target)
    connections = {
        "shared": paced_rabbit(slow_link),
        "kafka": {
            "protocol": "kafka",
            "brokers": kafka.brokers,
            "options": {"session.timeout.ms": "6000"},
        },
    }
    source_spec = {"connection": "kafka", "topics": [topic], "group": group, "start": "earliest"}
    p = portico(config(bridge, connections, source_spec, to_queue("shared", target)))

    wait_until(lambda: rabbit.depth(target) >= total // 10, 60, f"{total // 10} on {target}")
    before = committed_offset(topic, group, kafka.brokers)
    kafka.stop()
    interrupted(p, [bridge], total, "Kafka stop (source)")
    kafka.start()
    after = committed_offset(topic, group, kafka.brokers)
    print(f"committed offset before the stop {before}, after the restart {after}")
    assert after >= before > 0, "the committed offset did not survive the restart"
    at_end = lambda: committed_offset(topic, group, kafka.brokers) >= total  # noqa: E731
    wait_until(at_end, 120, f"group {group} committed {total}")
    settled(p, {bridge: lambda: 0}, total)

    got = drain(target)
    for props, body in got:
        assert body == body_of(props.headers["kafka-offset"], 256), "body does not match its offset"
    ids = [f"m-{props.headers['kafka-offset']}" for props, _ in got]
    # If the group had to join again, it resumed at the committed offset, which trails the
    # confirmed records by the window plus what was confirmed since the last commit (every
    # 100 ms; half a second of the paced rate allows for the commit's own round trip).
    bound = WINDOW + int(WINDOW / DELAY * 0.5)
    finish(p, bridge, "Kafka restart, source side", "Kafka -> 0-9-1", total, ids, bound)
    assert committed_offset(topic, group, kafka.brokers) == total
