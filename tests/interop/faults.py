"""What the fault suite (test_faults*.py) shares: brokers of a test's own (Tansu with
sqlite storage, a TCP link that delays replies), bridge configs, numbered messages and their
reconciliation, and the one table row each scenario prints.

Tests that stop Kafka, resume a Kafka consumer group or slow Kafka down run their own Tansu
broker (sqlite storage in the test's tmp dir) on a free port; the shared broker on 9092 is
never disturbed. Two defects of Tansu's memory:// engine (the one on 9092) shape the helpers:
ListOffsets answers a stale high watermark, so `read_topic` appends a sentinel record to find
the end, and a fetch starting inside a record batch returns nothing, so consumer groups that
resume at a committed offset use the sqlite engine."""

import os
import queue as queue_module
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pika
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import KAFKA_BROKERS, RABBIT_URL, free_port, unique, wait_until

TANSU_BIN = os.environ.get("TANSU_BIN") or shutil.which("tansu") or str(Path.home() / ".cargo/bin/tansu")
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
RETRY = "{ initial_backoff: 50ms, max_backoff: 1s, multiplier: 2.0 }"
# Scales the message counts of the long scenarios (1 in CI; 2 makes the SIGKILL runs 10 000).
SCALE = float(os.environ.get("PORTICO_FAULT_SCALE", "1"))


# ----------------------------------------------------------------------------- Tansu


class Tansu:
    """A Tansu broker of this test only, on a free port, keeping its data in sqlite so that a
    restart (even after SIGKILL) finds the topics and records again."""

    def __init__(self, workdir, port=None, advertised_port=None):
        self.port = port or free_port()
        # Clients are told to connect to the advertised port (a SlowLink in front, say).
        self.advertised_port = advertised_port or self.port
        self.brokers = f"127.0.0.1:{self.advertised_port}"
        self.dir = workdir / f"tansu-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        # With `authentication`, clients must log in (SASL SCRAM); `client` then holds the
        # properties the readiness check logs in with.
        self.authentication = False
        self.client = {}

    def start(self, timeout=30):
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.dir / "tansu.log", "a")
        self.proc = subprocess.Popen(
            [
                TANSU_BIN, "broker",
                "--listener-url", url,
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine", "sqlite://tansu.db",
                *(["--authentication"] if self.authentication else []),
            ],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30):
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}", "log_level": 0, **self.client})

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"tansu exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return bool(admin.list_topics(timeout=1).brokers)
            except KafkaException:
                return False

        wait_until(answers, timeout, f"tansu metadata on {self.brokers}")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout=15):
        """A clean stop (SIGTERM); the port is free again when it returns."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"tansu ignored SIGTERM for {timeout}s:\n{self.log()[-2000:]}")

    def log(self):
        path = self.dir / "tansu.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def tansu(tmp_path):
    """Factory: tansu(port=None, advertised_port=None) → a Tansu, not yet started; all are
    killed after the test."""
    made = []

    def make(port=None, advertised_port=None):
        t = Tansu(tmp_path, port, advertised_port)
        made.append(t)
        return t

    yield make
    for t in made:
        t.kill()


# ----------------------------------------------------------------------------- latency


class SlowLink:
    """A TCP relay on 127.0.0.1 that forwards to `target` and delays what the target sends
    back by `delay` seconds (order kept). Behind it, a broker confirms slowly, so the
    in-flight window stays full without any failure or retry."""

    def __init__(self, target_port, delay):
        self.target_port, self.delay = target_port, delay
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = threading.Event()
        self.silent = threading.Event()
        self.flowing = threading.Event()  # cleared by hold()
        self.flowing.set()
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def amqp_url(self):
        """The shared broker's AMQP URL, through this link."""
        url = RABBIT_URL.replace("127.0.0.1:5672", f"127.0.0.1:{self.port}")
        assert url != RABBIT_URL, "RABBIT_URL must name 127.0.0.1:5672"
        return url

    def hold(self):
        """From now on the target's bytes wait in the link (none lost) until `release()`:
        a broker that has stopped confirming for a while."""
        self.flowing.clear()

    def release(self):
        self.flowing.set()

    def silence(self):
        """From now on the target's bytes are dropped, its sockets kept open: a peer that
        stops answering without closing (a hung broker, a half-dead network path)."""
        self.silent.set()

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, 0), daemon=True).start()
            back = (upstream, client, self.delay, True)  # the broker's bytes: delayed, holdable
            threading.Thread(target=self._pump, args=back, daemon=True).start()

    def _pump(self, src, dst, delay, holdable=False):
        chunks = queue_module.Queue()

        def write():
            while True:
                due, data = chunks.get()
                if data is None:
                    break
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the injected latency
                if holdable:
                    self.flowing.wait()
                try:
                    dst.sendall(data)
                except OSError:
                    break
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if data and self.silent.is_set():
                continue
            chunks.put((time.monotonic() + delay, data or None))
            if not data:
                return

    def close(self):
        self.closed.set()
        self.server.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def slow_link():
    """Factory: slow_link(target_port, delay) → a SlowLink; all are closed after the test."""
    made = []

    def make(target_port, delay):
        link = SlowLink(target_port, delay)
        made.append(link)
        return link

    yield make
    for link in made:
        link.close()


# ----------------------------------------------------------------------------- configs


def rabbit_to_kafka(bridge, queue, topic, brokers=KAFKA_BROKERS, prefetch=256, max_in_flight=256):
    return f"""
connections:
  rabbit:
    protocol: amqp091
    url: "{RABBIT_URL}"
  kafka:
    protocol: kafka
    brokers: "{brokers}"
    options: {{}}
    declare:
      topics: [{{ name: {topic}, partitions: 1 }}]
bridges:
  - name: {bridge}
    source: {{ connection: rabbit, queue: {queue}, prefetch: {prefetch} }}
    sink: {{ connection: kafka, topic: {topic}, key: "{{message_id}}" }}
    max_in_flight: {max_in_flight}
    retry: {RETRY}
shutdown_timeout: 10s
"""


def kafka_to_rabbit(bridge, topic, group, queue, brokers=KAFKA_BROKERS, max_in_flight=256):
    return f"""
connections:
  rabbit:
    protocol: amqp091
    url: "{RABBIT_URL}"
  kafka:
    protocol: kafka
    brokers: "{brokers}"
    options: {{ session.timeout.ms: "6000" }}
bridges:
  - name: {bridge}
    source: {{ connection: kafka, topics: [{topic}], group: {group}, start: earliest }}
    sink: {{ connection: rabbit, exchange: "", routing_key: {queue} }}
    max_in_flight: {max_in_flight}
    retry: {RETRY}
shutdown_timeout: 10s
"""


def rabbit_to_rabbit(bridge, source, target, prefetch=256, max_in_flight=256, declare="",
                     sink_url=RABBIT_URL, sink_extra=""):
    """A 0-9-1 → 0-9-1 bridge; the sink's connection may take another way to the broker
    (`sink_url`, a SlowLink's say) and more settings (`sink_extra`, ", confirm_window: 8")."""
    return f"""
connections:
  rabbit: {{ protocol: amqp091, url: "{RABBIT_URL}" }}
  target:
    protocol: amqp091
    url: "{sink_url}"
{declare}
bridges:
  - name: {bridge}
    source: {{ connection: rabbit, queue: {source}, prefetch: {prefetch} }}
    sink: {{ connection: target, exchange: "", routing_key: {target}{sink_extra} }}
    max_in_flight: {max_in_flight}
    retry: {RETRY}
shutdown_timeout: 10s
"""


# ----------------------------------------------------------------------------- RabbitMQ


def body_of(n, size):
    head = f"m-{n}|".encode()
    return head + b"x" * max(0, size - len(head))


def publish_numbered(queue, numbers, size=1024, url=RABBIT_URL):
    """Publishes persistent messages with message_id m-<n> and a body naming the same n, on a
    connection of its own without confirms (fast); callers check the queue depth after."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for n in numbers:
            ch.basic_publish(
                "",
                queue,
                body_of(n, size),
                pika.BasicProperties(message_id=f"m-{n}", delivery_mode=2),
            )
        # A synchronous round trip on the same channel: every publish above was handled.
        ch.queue_declare(queue, passive=True)
    finally:
        conn.close()


def queue_totals():
    """{queue: ready + unacknowledged} for every queue, as the broker counts them."""
    out = subprocess.run(
        [RABBITMQCTL, "-q", "list_queues", "name", "messages", "--no-table-headers"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    totals = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip().isdigit():
            totals[parts[0]] = int(parts[1])
    return totals


def queue_total(queue):
    return queue_totals().get(queue)


def drain(queue, url=RABBIT_URL):
    """Takes every message now in `queue` (acking): [(properties, body)]."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    got = []
    try:
        ch = conn.channel()
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((props, body))
    finally:
        conn.close()


def portico_connection_pid(name):
    """The broker's pid of the connection whose client named it `name`, or None."""
    out = subprocess.run(
        [RABBITMQCTL, "-q", "list_connections", "pid", "client_properties", "--no-table-headers"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    for line in out.splitlines():
        pid, _, props = line.partition("\t")
        if f'{{"connection_name","{name}"}}' in props:
            return pid.strip()
    return None


# ----------------------------------------------------------------------------- Kafka


def read_topic(topic, brokers=KAFKA_BROKERS, timeout=60):
    """Every record of partition 0 of `topic` written so far. Tansu's ListOffsets answers a
    stale high watermark (the base offset of the last batch), so the end is marked instead:
    a sentinel record is appended and everything before it is returned."""
    marker = unique("end").encode()
    producer = Producer({"bootstrap.servers": brokers, "log_level": 0})
    producer.produce(topic, value=b"", partition=0, headers=[("fk-sentinel", marker)])
    assert producer.flush(15) == 0, f"sentinel not written to {topic}"
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": unique("check"),
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"read {len(got)} records of {topic}, no sentinel"
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            if header(m, "fk-sentinel") is not None:
                if header(m, "fk-sentinel") == marker:
                    return got
                continue  # an earlier read's sentinel
            got.append(m)
    finally:
        consumer.close()


def committed_offset(topic, group, brokers):
    """The offset `group` committed for partition 0 of `topic` (without joining the group)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "log_level": 0})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()


def header(msg, name):
    for key, value in msg.headers() or []:
        if key == name:
            return value
    return None


def amqp_ids(records):
    return [header(m, "amqp.message-id").decode() for m in records]


# ----------------------------------------------------------------------------- helpers


def metric(p, name):
    return p.metrics().get(name, 0)


def fault_row(scenario, direction, sent, ids, dead_lettered=0, left=0):
    """Prints the scenario's line of the fault table: what was sent, delivered (distinct),
    dead-lettered, duplicated and lost (neither delivered, dead-lettered nor `left` in the
    source). Printed before the assertions, so a failing run still shows its numbers."""
    distinct = len(set(ids))
    lost = sent - distinct - int(dead_lettered) - left
    print(
        f"FAULT-ROW | {scenario} | {direction} | {sent} | {distinct} | {int(dead_lettered)} "
        f"| {len(ids) - distinct} | {lost}"
    )


def reconcile(ids, expected, window, what, direction=None, dead_lettered=0):
    """Every expected id present, nothing foreign, duplicates within `window`; returns the
    duplicate count. With `direction`, prints the table row first (`what` is the scenario)."""
    if direction:
        fault_row(what, direction, len(expected), ids, dead_lettered)
    counts = Counter(ids)
    missing = set(expected) - set(counts)
    foreign = set(counts) - set(expected)
    duplicates = len(ids) - len(counts)
    print(f"{what}: {len(ids)} received, {len(counts)} distinct, {duplicates} duplicates")
    assert not missing, f"{what}: {len(missing)} lost, e.g. {sorted(missing)[:5]}"
    assert not foreign, f"{what}: unexpected ids {sorted(foreign)[:5]}"
    assert duplicates <= window, f"{what}: {duplicates} duplicates exceed the window of {window}"
    return duplicates


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def delete_queues(rabbit):
    """Deletes the queues a test declared once its portico processes are gone."""
    yield
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        ch = conn.channel()
        for name in rabbit.declared:
            ch.queue_delete(name)
    finally:
        conn.close()
