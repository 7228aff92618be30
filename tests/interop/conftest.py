"""Fixtures for the interop tests: the portico binary, RabbitMQ through pika, Kafka through
confluent-kafka. Every test names its own queues and topics, so tests never share state."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
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
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"portico did not exit within {timeout} s of SIGTERM:\n"
                                 f"{self.log()[-6000:]}") from None

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


# ----------------------------------------------------------------------------- own RabbitMQ node

RABBIT_SCRIPTS = Path(os.environ.get("RABBITMQ_SCRIPTS", "/usr/lib/rabbitmq/bin"))


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class RabbitNode:
    """A RabbitMQ node of the tests' own, for the faults that stop a broker: its own node name,
    AMQP and distribution ports, data, logs, config and plugins (AMQP 1.0 only, no
    management) in a temporary directory. The shared node on 5672 is never touched.

    Run as root, the node and its CLI run as the `rabbitmq` user (as the packaged scripts
    do), so they share that user's Erlang cookie; otherwise as the current user."""

    def __init__(self):
        self.name = f"portico-fault-{os.getpid()}-{uuid.uuid4().hex[:6]}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"
        self.dir = Path(tempfile.mkdtemp(prefix="portico-rabbit-"))
        (self.dir / "enabled_plugins").write_text("[rabbitmq_amqp1_0].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (self.dir / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        self.as_user = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "rabbitmq", "--"]
        self._own(self.dir, *self.dir.iterdir())

    def _own(self, *paths):
        """Run as root, hands `paths` to the `rabbitmq` user the node runs as."""
        if self.as_user:
            user = pwd.getpwnam("rabbitmq")
            for path in paths:
                os.chown(path, user.pw_uid, user.pw_gid)

    def add_files(self, *files):
        """Before `start`: copies `files` (TLS keys and certificates, say) into the node's
        directory, readable by the node; returns the copies' paths."""
        copies = [Path(shutil.copy(f, self.dir / Path(f).name)) for f in files]
        self._own(*copies)
        return copies

    def add_config(self, conf):
        """Before `start`: appends `conf` (rabbitmq.conf lines) to the node's config."""
        with open(self.dir / "rabbitmq.conf", "a") as out:
            out.write(conf)

    def env(self):
        d = self.dir
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def run(self, tool, *args, timeout=60):
        """Runs a RabbitMQ CLI tool against this node."""
        return subprocess.run(
            [*self.as_user, str(RABBIT_SCRIPTS / tool), "-q", "-n", self.name, *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.dir,
        )

    def cli(self, tool, *args, timeout=60):
        """Runs a RabbitMQ CLI tool that must succeed; returns its output."""
        done = self.run(tool, *args, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def alive(self):
        return self.run("rabbitmq-diagnostics", "ping", timeout=30).returncode == 0

    def start(self, timeout=90):
        """Boots the node (data kept from an earlier run) and waits until it takes clients."""
        subprocess.run(
            [*self.as_user, str(RABBIT_SCRIPTS / "rabbitmq-server"), "-detached"],
            env=self.env(), cwd=self.dir, check=True, timeout=60,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        up = lambda: port_open(self.port)  # noqa: E731
        wait_until(up, timeout, f"RabbitMQ node {self.name} listening\n{self.log()}")
        # The AMQP listener opens before the plugins (AMQP 1.0) have started.
        self.cli("rabbitmqctl", "await_startup", "--timeout", str(timeout), timeout=timeout + 10)
        return self

    def stop(self, timeout=60):
        """A clean stop of the whole node (not only the app): clients see it go away."""
        self.cli("rabbitmqctl", "stop", timeout=timeout)
        wait_until(lambda: not port_open(self.port), timeout, f"{self.name} stopped")

    def restart(self, timeout=90):
        self.stop(timeout)
        return self.start(timeout)

    def shutdown(self):
        if self.alive():
            self.run("rabbitmqctl", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def queue_totals(self):
        """{queue: ready + unacknowledged} as this node counts them."""
        out = self.cli("rabbitmqctl", "list_queues", "name", "messages", "--no-table-headers")
        return {
            name: int(count)
            for name, _, count in (line.partition("\t") for line in out.splitlines())
            if count.strip().isdigit()
        }

    def log(self):
        path = self.dir / "log" / f"{self.name}.log"
        return path.read_text()[-3000:] if path.exists() else ""


@pytest.fixture(scope="module")
def rabbit_node():
    """A RabbitMQ node of this module's own, not yet started; stopped and deleted at the end.
    Tests may stop and start it; each leaves it as it likes, the next one starts it again."""
    node = RabbitNode()
    yield node
    node.shutdown()


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
