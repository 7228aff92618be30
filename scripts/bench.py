"""End-to-end throughput of portico on local brokers.

For each direction: preload N persistent messages of SIZE bytes into the source, start
portico, and time from start until the sink confirmed all N (portico's own delivered
counter), then report msg/s, peak RSS and CPU seconds of the portico process.

    scripts/bench [--count N] [--size BYTES] [--direction DIRECTION ...]

Directions: amqp091-kafka, kafka-amqp091, amqp091-amqp091, amqp10-amqp091, amqp10-kafka.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pika
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
BIN = os.environ.get("PORTICO_BIN", str(REPO / "target" / "release" / "portico"))
RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2f"
KAFKA = "127.0.0.1:9092"


def preload_rabbit(queue, count, body):
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, headers={"n": 0, "kind": "bench"})
    for i in range(count):
        props.message_id = f"m-{i}"
        ch.basic_publish("", queue, body, props)
    conn.close()


def preload_kafka(topic, count, body):
    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 5, "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, value=body, key=f"k-{i % 64}", headers=[("n", str(i).encode())])
        if i % 10000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def create_topic(name):
    admin = AdminClient({"bootstrap.servers": KAFKA})
    for f in admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
        f.result(15)


def metric(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return 0.0
    return 0.0


def proc_stats(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM"))
    stat = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    return hwm / 1024, cpu


def run(direction, count, size):
    run_id = uuid.uuid4().hex[:8]
    body = os.urandom(size)
    src, dst = f"bench-src-{run_id}", f"bench-dst-{run_id}"
    rabbit = f"rabbit: {{ protocol: amqp091, url: '{RABBIT}', declare: {{ queues: [{{ name: {src} }}, {{ name: {dst} }}] }} }}"
    kafka = f"kafka: {{ protocol: kafka, brokers: '{KAFKA}' }}"
    kafka += "\n  r10: { protocol: amqp10, url: 'amqp://guest:guest@127.0.0.1:5672', flavor: rabbitmq }"
    if direction == "amqp091-kafka":
        create_topic(dst)
        preload_rabbit(src, count, body)
        bridge = f"source: {{ connection: rabbit, queue: {src}, prefetch: 1000 }}\n    sink: {{ connection: kafka, topic: {dst} }}"
    elif direction == "kafka-amqp091":
        create_topic(src)
        preload_kafka(src, count, body)
        bridge = f"source: {{ connection: kafka, topics: [{src}], group: g-{run_id} }}\n    sink: {{ connection: rabbit, exchange: '', routing_key: {dst} }}"
    elif direction.startswith("amqp10-"):
        # Loaded through 0-9-1 for speed; portico reads them over AMQP 1.0 (/queue/NAME).
        preload_rabbit(src, count, body)
        if direction == "amqp10-kafka":
            create_topic(dst)
            sink = f"{{ connection: kafka, topic: {dst} }}"
        else:
            sink = f"{{ connection: rabbit, exchange: '', routing_key: {dst} }}"
        bridge = f"source: {{ connection: r10, queue: {src}, credit: 1000 }}\n    sink: {sink}"
    else:
        preload_rabbit(src, count, body)
        bridge = f"source: {{ connection: rabbit, queue: {src}, prefetch: 1000 }}\n    sink: {{ connection: rabbit, exchange: '', routing_key: {dst} }}"
    port = 19000 + int(run_id[:3], 16) % 1000
    config = (
        f"telemetry: {{ listen: 127.0.0.1:{port} }}\nconnections:\n  {rabbit}\n  {kafka}\n"
        f"bridges:\n  - name: bench\n    {bridge}\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    start = time.monotonic()
    log = open(os.environ.get("PORTICO_BENCH_LOG", os.devnull), "w")
    proc = subprocess.Popen([BIN, "run", "--config", f.name], stderr=log)
    name = "portico_messages_delivered_total"
    deadline = start + 600
    first = None
    while metric(port, name) < count:
        if first is None and metric(port, name) > 0:
            first = time.monotonic()
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            sys.exit(f"{direction}: only {metric(port, name):.0f} of {count} delivered")
        time.sleep(0.05)
    elapsed = time.monotonic() - (first or start)
    rss, cpu = proc_stats(proc.pid)
    proc.terminate()
    proc.wait(30)
    print(f"{direction:16} {count:>7} x {size} B  {count / elapsed:>9.0f} msg/s  "
          f"peak RSS {rss:6.1f} MiB  CPU {cpu:6.2f} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--direction", action="append")
    args = parser.parse_args()
    default = ["amqp091-kafka", "kafka-amqp091", "amqp091-amqp091", "amqp10-amqp091", "amqp10-kafka"]
    for direction in args.direction or default:
        run(direction, args.count, args.size)


if __name__ == "__main__":
    main()
