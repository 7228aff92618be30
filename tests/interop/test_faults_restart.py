"""Brokers restarted under a running bridge, each direction. The restarted broker is always
one of this test's own: a RabbitMQ node on free ports in the test's tmp dir, or a Tansu with
sqlite storage; the shared brokers are never disturbed. Each test sends numbered messages and
reconciles: sent = delivered (+ still in the source), nothing lost, duplicates bounded by the
in-flight window. PORTICO_FAULT_SCALE multiplies the counts for a long run."""

import os
import signal
import subprocess
import time

import pika
import pytest

from conftest import RABBIT_URL, create_topic, free_port, produce, unique, wait_until
from test_faults import (
    Tansu,
    amqp_ids,
    body_of,
    committed_offset,
    delete_queues,  # noqa: F401 (autouse: deletes the queues a test declared)
    drain,
    kafka_to_rabbit,
    metric,
    publish_numbered,
    queue_total,
    rabbit_to_kafka,
    read_topic,
    reconcile,
    tansu,  # noqa: F401 (fixture)
)

SCALE = float(os.environ.get("PORTICO_FAULT_SCALE", "1"))
RABBIT_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RETRY = "{ initial_backoff: 50ms, max_backoff: 1s, multiplier: 2.0 }"


def scaled(n):
    return max(1, int(n * SCALE))


def report(scenario, direction, sent, delivered_ids, dead_lettered=0, left=0):
    """The one line per scenario that the reconciliation table is built from."""
    distinct = len(set(delivered_ids))
    print(
        f"FAULT {scenario} | {direction} | sent={sent} delivered={distinct} "
        f"dead_lettered={dead_lettered} left={left} duplicated={len(delivered_ids) - distinct} "
        f"lost={sent - distinct - dead_lettered - left}"
    )


class RabbitNode:
    """A RabbitMQ node of this test only: its own node name, ports, data and logs under the
    test's tmp dir. `restart()` stops it cleanly (durable queues and persistent messages
    survive) and starts it again."""

    def __init__(self, workdir):
        self.port, self.dist = free_port(), free_port()
        self.dir = workdir / f"rabbit-{self.port}"
        self.dir.mkdir(parents=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"
        self.proc = None

    def start(self, timeout=90):
        env = {
            **os.environ,
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": f"portico-test-{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "ERL_CRASH_DUMP": str(self.dir / "erl_crash.dump"),
        }
        log = open(self.dir / "server.log", "a")
        # A session of its own: stopping it signals this node's processes and nothing else.
        self.proc = subprocess.Popen(
            [RABBIT_SERVER], env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"rabbitmq-server exited:\n{(self.dir / 'server.log').read_text()[-3000:]}")
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return True
            except pika.exceptions.AMQPError:
                return False

        wait_until(answers, timeout, f"RabbitMQ node on {self.port}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def restart(self):
        self.stop()
        return self.start()

    def channel(self):
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        return conn, conn.channel()

    def declare(self, queue):
        conn, ch = self.channel()
        try:
            ch.queue_declare(queue, durable=True)
        finally:
            conn.close()

    def depth(self, queue):
        conn, ch = self.channel()
        try:
            return ch.queue_declare(queue, passive=True).method.message_count
        finally:
            conn.close()

    def publish(self, queue, numbers, size):
        conn, ch = self.channel()
        try:
            ch.confirm_delivery()
            for n in numbers:
                props = pika.BasicProperties(message_id=f"m-{n}", delivery_mode=2)
                ch.basic_publish("", queue, body_of(n, size), props)
        finally:
            conn.close()

    def drain(self, queue):
        conn, ch = self.channel()
        got = []
        try:
            while True:
                method, props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    return got
                got.append((props, body))
        finally:
            conn.close()


@pytest.fixture
def rabbit_node(tmp_path):
    """Factory: rabbit_node() → a started RabbitNode; all are stopped after the test."""
    made = []

    def make():
        node = RabbitNode(tmp_path)
        made.append(node)
        return node.start()

    yield make
    for node in made:
        node.stop()


def two_rabbits(bridge, source_url, source, target_url, target, window):
    return f"""
connections:
  src: {{ protocol: amqp091, url: "{source_url}" }}
  dst: {{ protocol: amqp091, url: "{target_url}" }}
bridges:
  - name: {bridge}
    source: {{ connection: src, queue: {source}, prefetch: {window} }}
    sink: {{ connection: dst, exchange: "", routing_key: {target} }}
    max_in_flight: {window}
    retry: {RETRY}
shutdown_timeout: 10s
"""


def settled(p, depth):
    def check():
        m = p.metrics()
        return m.get("portico_messages_in_flight", 1) == 0 and depth() == 0

    return check


def test_rabbitmq_restart_on_the_source_side(portico, rabbit, rabbit_node):
    node = rabbit_node()
    source, target, bridge = unique("rs-src"), rabbit.queue(unique("rs-dst")), unique("rs")
    total, window = scaled(3000), 100
    node.declare(source)
    node.publish(source, range(total), size=256)
    p = portico(two_rabbits(bridge, node.url, source, RABBIT_URL, target, window))
    wait_until(lambda: metric(p, "portico_messages_delivered_total") >= total // 3, 60, "a third delivered")
    node.restart()
    restarted_at = metric(p, "portico_messages_delivered_total")
    print(f"source node restarted after {restarted_at:.0f} delivered")
    assert restarted_at < total, "the restart did not land mid-stream"
    wait_until(settled(p, lambda: node.depth(source)), 120, f"{source} empty and settled")
    got = drain(target)
    ids = [props.message_id for props, _ in got]
    reconcile(ids, [f"m-{n}" for n in range(total)], window, "rabbitmq restart, source side")
    report("RabbitMQ restart", "0-9-1 source (own node) -> 0-9-1", total, ids)


def test_rabbitmq_restart_on_the_sink_side(portico, rabbit, rabbit_node):
    node = rabbit_node()
    source, target, bridge = rabbit.queue(unique("rk-src")), unique("rk-dst"), unique("rk")
    total, window = scaled(3000), 100
    node.declare(target)
    publish_numbered(source, range(total), size=256)
    wait_until(lambda: rabbit.depth(source) == total, 30, f"{total} on {source}")
    p = portico(two_rabbits(bridge, RABBIT_URL, source, node.url, target, window))
    wait_until(lambda: metric(p, "portico_messages_delivered_total") >= total // 3, 60, "a third delivered")
    node.restart()
    restarted_at = metric(p, "portico_messages_delivered_total")
    print(f"sink node restarted after {restarted_at:.0f} delivered")
    assert restarted_at < total, "the restart did not land mid-stream"
    wait_until(settled(p, lambda: queue_total(source)), 120, f"{source} empty and settled")
    got = node.drain(target)
    ids = [props.message_id for props, _ in got]
    for props, body in got:
        assert body == body_of(int(props.message_id[2:]), 256)
    reconcile(ids, [f"m-{n}" for n in range(total)], window, "rabbitmq restart, sink side")
    assert metric(p, "portico_delivery_retries_total") > 0, "the restart was felt by the sink"
    report("RabbitMQ restart", "0-9-1 -> 0-9-1 sink (own node)", total, ids)


def test_kafka_restart_on_the_sink_side(portico, rabbit, tansu):
    kafka = tansu().start()
    queue, topic, bridge = rabbit.queue(unique("ks-q")), unique("ks-t"), unique("ks")
    total, window = scaled(2000), 100
    publish_numbered(queue, range(total), size=256)
    wait_until(lambda: rabbit.depth(queue) == total, 30, f"{total} on {queue}")
    p = portico(rabbit_to_kafka(bridge, queue, topic, brokers=kafka.brokers, prefetch=window, max_in_flight=window))
    wait_until(lambda: metric(p, "portico_messages_delivered_total") >= total // 3, 60, "a third delivered")
    kafka.kill()
    kafka.start()
    restarted_at = metric(p, "portico_messages_delivered_total")
    print(f"Kafka restarted after {restarted_at:.0f} delivered")
    assert restarted_at < total, "the restart did not land mid-stream"
    wait_until(settled(p, lambda: queue_total(queue)), 120, f"{queue} empty and settled")
    ids = amqp_ids(read_topic(topic, brokers=kafka.brokers))
    reconcile(ids, [f"m-{n}" for n in range(total)], window, "kafka restart, sink side")
    report("Kafka restart", "0-9-1 -> Kafka sink (own Tansu)", total, ids)


def test_kafka_restart_on_the_source_side(portico, rabbit, tansu):
    kafka = tansu().start()
    topic, group, queue, bridge = unique("kr-t"), unique("kr-g"), rabbit.queue(unique("kr-q")), unique("kr")
    total, window = scaled(2000), 100
    create_topic(topic, brokers=kafka.brokers)
    produce(topic, [{"value": body_of(n, 256)} for n in range(total)], brokers=kafka.brokers)
    p = portico(kafka_to_rabbit(bridge, topic, group, queue, brokers=kafka.brokers, max_in_flight=window))
    started = time.monotonic()
    wait_until(lambda: metric(p, "portico_messages_delivered_total") >= total // 3, 60, "a third delivered")
    rate = metric(p, "portico_messages_delivered_total") / (time.monotonic() - started)
    kafka.kill()
    kafka.start()
    restarted_at = metric(p, "portico_messages_delivered_total")
    print(f"Kafka restarted after {restarted_at:.0f} delivered at {rate:.0f}/s")
    assert restarted_at < total, "the restart did not land mid-stream"
    wait_until(lambda: committed_offset(topic, group, kafka.brokers) >= total, 120, f"group {group} at the end")
    got = drain(queue)
    offsets = [props.headers["kafka-offset"] for props, _ in got]
    for props, body in got:
        assert body == body_of(props.headers["kafka-offset"], 256)
    # As after a crash: the in-flight window plus what was confirmed since the last commit.
    reconcile(offsets, range(total), window + int(rate * 0.5), "kafka restart, source side")
    report("Kafka restart", "Kafka source (own Tansu) -> 0-9-1", total, offsets)
