"""Fixtures for the interop tests: the portico binary, RabbitMQ through pika, Kafka through
confluent-kafka. Every test names its own queues and topics, so tests never share state."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pika
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("PORTICO_BIN", str(REPO / "target" / "release" / "portico"))
RABBIT_URL = os.environ.get("RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
KAFKA_BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate, timeout, what):
    """Polls `predicate` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Portico:
    """One portico process running a config written for the test."""

    def __init__(self, workdir, config):
        self.port = free_port()
        self.config = workdir / f"bridges-{self.port}.yaml"
        self.config.write_text(f"telemetry: {{ listen: 127.0.0.1:{self.port} }}\n" + config)
        self.log_path = workdir / f"portico-{self.port}.log"
        self.proc = None

    def start(self, ready=True, timeout=30):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [BIN, "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PORTICO_LOG": os.environ.get("PORTICO_LOG", "info")},
        )
        if ready:
            self.wait_ready(timeout)
        return self

    def http(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def wait_ready(self, timeout=30):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"portico exited with {self.proc.returncode}:\n{self.log()}")
            return self.http("/readyz")[0] == 200

        wait_until(ready, timeout, f"portico /readyz\n{self.log()[-3000:]}")

    def metrics(self):
        """Counter values by name for this process, summed over label sets."""
        out = {}
        for line in self.http("/metrics")[1].splitlines():
            if line.startswith("#") or not line:
                continue
            name, value = line.rsplit(" ", 1)
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0) + float(value)
        return out

    def stop(self, timeout=30):
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def portico(tmp_path):
    """Factory: portico(config_text) → a started Portico; all are stopped after the test."""
    started = []

    def make(config, ready=True, timeout=30):
        p = Portico(tmp_path, config)
        started.append(p)
        return p.start(ready=ready, timeout=timeout)

    yield make
    for p in started:
        if p.proc and p.proc.poll() is None:
            p.kill()


# ----------------------------------------------------------------------------- RabbitMQ


@pytest.fixture
def rabbit():
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    yield Rabbit(ch)
    try:
        conn.close()
    except Exception:
        pass


class Rabbit:
    def __init__(self, channel):
        self.ch = channel
        self.declared = []

    def queue(self, name, arguments=None):
        self.ch.queue_declare(name, durable=True, arguments=arguments)
        self.declared.append(name)
        return name

    def publish(self, routing_key, body, exchange="", **props):
        self.ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(**props), mandatory=True)

    def get(self, queue, count, timeout=20):
        """Takes `count` messages from `queue` (acking them): [(method, properties, body)]."""
        got = []

        def enough():
            method, props, body = self.ch.basic_get(queue, auto_ack=True)
            if method:
                got.append((method, props, body))
            return len(got) >= count

        wait_until(enough, timeout, f"{count} messages on {queue} (got {len(got)})")
        return got

    def depth(self, queue):
        return self.ch.queue_declare(queue, passive=True).method.message_count


# ----------------------------------------------------------------------------- Kafka


def create_topic(name, partitions=1, brokers=KAFKA_BROKERS):
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in futures.values():
        f.result(timeout=15)
    return name


def produce(topic, records, brokers=KAFKA_BROKERS):
    """records: dicts with value, key, headers (list of (name, bytes|None)), timestamp."""
    # One record per batch: Tansu answers a fetch from an offset inside a multi-record batch
    # with nothing, so a consumer group resuming mid-batch would stall there. Real Kafka
    # returns the batch; tests must not depend on that difference.
    producer = Producer(
        {"bootstrap.servers": brokers, "enable.idempotence": True, "batch.num.messages": 1}
    )
    errors = []
    for r in records:
        producer.produce(
            topic,
            value=r.get("value"),
            key=r.get("key"),
            headers=r.get("headers"),
            timestamp=r.get("timestamp", 0),
            on_delivery=lambda err, _msg: err and errors.append(err),
        )
    assert producer.flush(30) == 0, "records not delivered to Kafka"
    assert not errors, errors


def consume(topic, count, timeout=30, brokers=KAFKA_BROKERS, extra=0.0):
    """Reads `count` records from the start of `topic` with a throwaway group. With `extra`,
    keeps reading that many more seconds to catch records beyond `count`."""
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": unique("check"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
        end = time.monotonic() + extra
        while time.monotonic() < end:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                got.append(m)
    finally:
        consumer.close()
    assert len(got) >= count, f"expected {count} records on {topic}, got {len(got)}"
    return got
