"""End-to-end benchmark of portico on the local brokers, side by side with its comparisons.

For each direction, in one run:

- **throughput**: preload N persistent messages of SIZE bytes into the source, start portico,
  and time from the first to the last message the sink confirmed (portico's delivered
  counter: a confirmed message is held by the target); peak RSS and CPU seconds of portico;
- **latency**: a fresh portico on fresh queues, messages sent at a fixed RATE with the send
  time in the body, p50/p99 of the time until they are read from the target; and the time
  from start to `/readyz` answering 200;
- **RabbitMQ Shovel** (0-9-1 → 0-9-1 and 1.0 → 0-9-1): a dynamic shovel, `ack-mode:
  on-confirm`, prefetch 1000, on the same kind of queues with the same preload, timed from
  the first to the last message in the target queue. The 1.0 shovel of RabbitMQ 3.x drops
  every property, the delivery mode included, so it is told to publish persistent messages
  (`dest-publish-properties`), as portico's sink does; RabbitMQ's CPU per message is read over
  each timed span, the shovel's own work included;
- **broker ceilings**: the client libraries portico uses (lapin, fe2o3-amqp, rdkafka), alone,
  producing into and consuming from each broker (`examples/bench_client.rs`); a direction's
  ceiling is the slower of consuming its source and producing into its target. An AMQP 1.0
  source's ceiling is fe2o3-amqp consuming the queue (loaded through 0-9-1) over RabbitMQ's
  AMQP 1.0 plugin with credit 1000, as portico's source does.

Then, once per run, memory: RSS with three idle bridges, and peak RSS with 10 000 messages in
flight. Every figure is repeated REPEAT times and the median printed; ratios are taken
within one repetition, so that noise from other work on the machine cancels out.

    scripts/bench [--count N] [--size BYTES] [--rate MSG_PER_S] [--repeat K]
                  [--direction DIRECTION ...] [--no-memory]
    scripts/bench --soak SECONDS [--size BYTES]

`--soak` runs only a 0-9-1 -> 0-9-1 bridge for SECONDS at full rate, its source fed by a
publisher as fast as the broker takes it, and prints portico's RSS every tenth of the run:
RSS that keeps rising after the first samples is a leak.

Directions: amqp091-amqp091, amqp091-kafka, kafka-amqp091, amqp10-amqp091, amqp10-kafka.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pika
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
BIN = os.environ.get("PORTICO_BIN", str(REPO / "target" / "release" / "portico"))
CLIENT = os.environ.get(
    "PORTICO_BENCH_CLIENT", str(REPO / "target" / "release" / "examples" / "bench_client")
)
RABBIT = os.environ.get("RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
KAFKA = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
DIRECTIONS = ["amqp091-amqp091", "amqp091-kafka", "kafka-amqp091", "amqp10-amqp091", "amqp10-kafka"]
SHOVELLED = {"amqp091-amqp091", "amqp10-amqp091"}
DEADLINE = 600


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client(*args):
    """Runs the bench client and returns its JSON answer."""
    out = subprocess.run([CLIENT, *map(str, args)], capture_output=True, text=True, timeout=DEADLINE)
    if out.returncode != 0:
        sys.exit(f"bench_client {' '.join(map(str, args))} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def kind(protocol):
    return "kafka" if protocol == "kafka" else "amqp"


def create_topic(name):
    admin = AdminClient({"bootstrap.servers": KAFKA})
    for f in admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
        f.result(15)


def delete_topics(names):
    if names:
        admin = AdminClient({"bootstrap.servers": KAFKA})
        for f in admin.delete_topics(list(names)).values():
            try:
                f.result(15)
            except Exception:  # noqa: BLE001 - leftovers are only untidy
                pass


class Rabbit:
    """One pika connection for declaring, counting and deleting queues."""

    def __init__(self):
        self.conn = pika.BlockingConnection(pika.URLParameters(RABBIT))
        self.ch = self.conn.channel()
        self.declared = []

    def declare(self, name):
        self.ch.queue_declare(name, durable=True)
        self.declared.append(name)

    def count(self, name):
        return self.ch.queue_declare(name, passive=True).method.message_count

    def cleanup(self):
        for name in self.declared:
            self.ch.queue_delete(name)
        self.declared.clear()


# `--confirm-window`: set on every AMQP 0-9-1 sink (None: portico's default).
CONFIRM_WINDOW = None


def endpoint(protocol, name, role):
    """The YAML of a source or sink on queue/topic `name`."""
    if protocol == "amqp091" and role == "source":
        return f"{{ connection: rabbit, queue: {name}, prefetch: 1000 }}"
    if protocol == "amqp10":
        return f"{{ connection: r10, queue: {name}, credit: 1000 }}"
    if protocol == "kafka" and role == "source":
        return f"{{ connection: kafka, topics: [{name}], group: {unique('g')}, start: earliest }}"
    if protocol == "kafka":
        return f"{{ connection: kafka, topic: {name} }}"
    window = f", confirm_window: {CONFIRM_WINDOW}" if CONFIRM_WINDOW else ""
    return f"{{ connection: rabbit, exchange: '', routing_key: {name}{window} }}"


def config(port, bridges):
    """A portico configuration: `bridges` is a list of (name, source yaml, sink yaml, extra)."""
    lines = [
        f"telemetry: {{ listen: 127.0.0.1:{port} }}",
        "connections:",
        f"  rabbit: {{ protocol: amqp091, url: '{RABBIT}' }}",
        f"  kafka: {{ protocol: kafka, brokers: '{KAFKA}' }}",
        "  r10: { protocol: amqp10, url: 'amqp://guest:guest@127.0.0.1:5672', flavor: rabbitmq }",
        "bridges:",
    ]
    for name, source, sink, extra in bridges:
        lines += [f"  - name: {name}", f"    source: {source}", f"    sink: {sink}"]
        lines += [f"    {e}" for e in extra]
    return "\n".join(lines) + "\n"


class Portico:
    def __init__(self, bridges):
        self.port = 19000 + int(uuid.uuid4().hex[:4], 16) % 1000
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(config(self.port, bridges))
        self.path = f.name
        log = open(os.environ.get("PORTICO_BENCH_LOG", os.devnull), "a")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([BIN, "run", "--config", f.name], stdout=log, stderr=log)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return None, ""

    def metric(self, name):
        _, text = self.get("/metrics")
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name))

    def delivered(self):
        return self.metric("portico_messages_delivered_total")

    def wait_ready(self):
        """Seconds from start until /readyz answers 200."""
        while self.get("/readyz")[0] != 200:
            self.check_alive()
            if time.monotonic() - self.started > 60:
                self.stop()
                sys.exit("portico did not become ready within 60 s")
            time.sleep(0.002)
        return time.monotonic() - self.started

    def check_alive(self):
        if self.proc.poll() is not None:
            sys.exit(f"portico exited with {self.proc.returncode} (set PORTICO_BENCH_LOG)")

    def stats(self):
        """Peak RSS (MiB), current RSS (MiB) and CPU seconds so far."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        field = lambda key: next(int(l.split()[1]) for l in status if l.startswith(key)) / 1024
        return field("VmHWM"), field("VmRSS"), cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.path)


def cpu_seconds(pid):
    """CPU seconds (user + system) process `pid` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def rabbitmq_pid():
    """The Erlang VM running RabbitMQ (`-s rabbit`), not a CLI tool's; None if not found."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "beam.smp":
                if b"\0-s\0rabbit\0" in (proc / "cmdline").read_bytes():
                    return int(proc.name)
        except OSError:
            continue
    return None


def broker_cpu():
    """CPU seconds RabbitMQ has used so far, or NaN."""
    pid = rabbitmq_pid()
    try:
        return cpu_seconds(pid) if pid else float("nan")
    except OSError:
        return float("nan")


def timed(count, progress, alive=lambda: None):
    """Rate from the first progress seen to `count`, polling `progress` every 20 ms, and
    RabbitMQ's CPU per message (µs) over the same span."""
    deadline = time.monotonic() + DEADLINE
    first, base, broker = None, 0, float("nan")
    while (done := progress()) < count:
        if first is None and done > 0:
            first, base, broker = time.monotonic(), done, broker_cpu()
        alive()
        if time.monotonic() > deadline:
            sys.exit(f"only {done:.0f} of {count} arrived within {DEADLINE} s")
        time.sleep(0.02)
    if first is None:  # everything arrived between two polls
        return float("nan"), float("nan")
    moved = count - base
    return moved / (time.monotonic() - first), (broker_cpu() - broker) / moved * 1e6


def preload(protocol, name, count, size):
    """Loads the source; AMQP 1.0 sources are loaded through 0-9-1 (the same queue)."""
    return client("produce", kind(protocol), name, count, size)["rate"]


def throughput(direction, count, size, rabbit, topics):
    src_proto, dst_proto = direction.split("-")
    src, dst = unique("bench-src"), unique("bench-dst")
    for proto, name in ((src_proto, src), (dst_proto, dst)):
        if proto == "kafka":
            create_topic(name)
            topics.append(name)
        else:
            rabbit.declare(name)
    preload(src_proto, src, count, size)
    portico = Portico([("bench", endpoint(src_proto, src, "source"), endpoint(dst_proto, dst, "sink"), [])])
    rate, broker_us = timed(count, portico.delivered, portico.check_alive)
    peak, _, cpu = portico.stats()
    portico.stop()
    return {"rate": rate, "rss": peak, "cpu": cpu, "cpu_us": cpu / count * 1e6,
            "broker_us": broker_us}


def latency(direction, count, rate, size, rabbit, topics):
    src_proto, dst_proto = direction.split("-")
    src, dst = unique("lat-src"), unique("lat-dst")
    for proto, name in ((src_proto, src), (dst_proto, dst)):
        if proto == "kafka":
            create_topic(name)
            topics.append(name)
        else:
            rabbit.declare(name)
    portico = Portico([("lat", endpoint(src_proto, src, "source"), endpoint(dst_proto, dst, "sink"), [])])
    ready = portico.wait_ready()
    answer = client("latency", kind(src_proto), src, kind(dst_proto), dst, count, rate, size)
    portico.stop()
    return {"p50": answer["p50_ms"], "p99": answer["p99_ms"], "ready_ms": ready * 1000}


def shovel(direction, count, size, rabbit):
    """A dynamic shovel on fresh queues with the same preload; msg/s into the target."""
    src, dst = unique("shovel-src"), unique("shovel-dst")
    rabbit.declare(src)
    rabbit.declare(dst)
    preload("amqp091", src, count, size)
    uri = RABBIT.rsplit("/", 1)[0]  # the shovel's URIs name no vhost for the default one
    definition = {
        "ack-mode": "on-confirm",
        "src-prefetch-count": 1000,
        "dest-protocol": "amqp091",
        "dest-uri": uri,
        "dest-queue": dst,
        "src-delete-after": "never",
    }
    if direction.startswith("amqp10"):
        # Left to itself, the 1.0 shovel of RabbitMQ 3.x writes transient messages (it drops
        # the delivery mode with every other property): made persistent, as portico keeps it.
        definition |= {"src-protocol": "amqp10", "src-uri": uri, "src-address": f"/queue/{src}",
                       "dest-publish-properties": {"delivery_mode": 2}}
    else:
        definition |= {"src-protocol": "amqp091", "src-uri": uri, "src-queue": src}
    name = unique("portico-bench")
    subprocess.run(["rabbitmqctl", "-q", "set_parameter", "shovel", name, json.dumps(definition)],
                   check=True, capture_output=True)
    try:
        rate, broker_us = timed(count, lambda: rabbit.count(dst))
        return {"shovel": rate, "shovel_broker_us": broker_us}
    finally:
        subprocess.run(["rabbitmqctl", "-q", "clear_parameter", "shovel", name], capture_output=True)


def ceilings(count, size, rabbit, topics, kafka, amqp10):
    """The client libraries alone: produce into and consume from each broker. With `amqp10`,
    also consume a queue over AMQP 1.0, loaded through 0-9-1 as the throughput runs load it."""
    queue = unique("ceiling")
    rabbit.declare(queue)
    rates = {
        "amqp_produce": client("produce", "amqp", queue, count, size)["rate"],
        "amqp_consume": client("consume", "amqp", queue, count)["rate"],
    }
    if amqp10:
        queue = unique("ceiling")
        rabbit.declare(queue)
        preload("amqp10", queue, count, size)
        rates["amqp10_consume"] = client("consume", "amqp10", queue, count)["rate"]
    if kafka:
        topic = unique("ceiling")
        create_topic(topic)
        topics.append(topic)
        rates["kafka_produce"] = client("produce", "kafka", topic, count, size)["rate"]
        rates["kafka_consume"] = client("consume", "kafka", topic, count)["rate"]
    return rates


def ceiling_of(direction, c):
    src_proto, dst_proto = direction.split("-")
    consume = {"kafka": c.get("kafka_consume"), "amqp10": c.get("amqp10_consume")}.get(
        src_proto, c["amqp_consume"])
    produce = c["kafka_produce"] if dst_proto == "kafka" else c["amqp_produce"]
    return min(consume, produce)


def memory(rabbit, topics):
    """RSS with three idle bridges, and peak RSS with 10 000 messages of 1 KiB in flight."""
    names = [unique("idle") for _ in range(4)]
    for n in names[:3]:
        rabbit.declare(n)
    create_topic(names[3])
    topics.append(names[3])
    idle = Portico([
        ("a", endpoint("amqp091", names[0], "source"), endpoint("kafka", names[3], "sink"), []),
        ("b", endpoint("kafka", names[3], "source"), endpoint("amqp091", names[1], "sink"), []),
        ("c", endpoint("amqp10", names[2], "source"), endpoint("amqp091", names[1], "sink"), []),
    ])
    idle.wait_ready()
    time.sleep(2)  # settle into idle: what is measured is the steady state, not a condition
    _, idle_rss, _ = idle.stats()
    idle.stop()

    src, dst = unique("inflight-src"), unique("inflight-dst")
    rabbit.declare(src)
    rabbit.declare(dst)
    count = 30000
    preload("amqp091", src, count, 1024)
    source = f"{{ connection: rabbit, queue: {src}, prefetch: 10000 }}"
    busy = Portico([("f", source, endpoint("amqp091", dst, "sink"), ["max_in_flight: 10000"])])
    timed(count, busy.delivered, busy.check_alive)
    peak, _, _ = busy.stats()
    busy.stop()
    return {"idle_rss": idle_rss, "inflight_peak_rss": peak}


class Feeder(threading.Thread):
    """Keeps `queue` supplied in chunks of `chunk` messages, never more than two chunks deep,
    so that the broker's backlog (and memory) stays bounded whatever portico's rate."""

    def __init__(self, queue, size, chunk=20000):
        super().__init__(daemon=True)
        self.queue, self.size, self.chunk = queue, size, chunk
        self.stopping = threading.Event()
        self.proc = None

    def run(self):
        rabbit = Rabbit()
        try:
            while not self.stopping.is_set():
                if rabbit.count(self.queue) > self.chunk:
                    self.stopping.wait(0.2)
                    continue
                self.proc = subprocess.Popen([CLIENT, "produce", "amqp", self.queue, str(self.chunk),
                                              str(self.size)], stdout=subprocess.DEVNULL)
                self.proc.wait()
        finally:
            rabbit.conn.close()

    def stop(self):
        self.stopping.set()
        if self.proc:
            self.proc.kill()
        self.join(30)


def soak(seconds, size, rabbit):
    """RSS of a 0-9-1 -> 0-9-1 bridge moving messages at full rate for `seconds`."""
    src, dst = unique("soak-src"), unique("soak-dst")
    rabbit.declare(src)
    rabbit.declare(dst)
    portico = Portico([("soak", endpoint("amqp091", src, "source"), endpoint("amqp091", dst, "sink"), [])])
    portico.wait_ready()
    feeder = Feeder(src, size)
    feeder.start()
    samples, started = [], time.monotonic()
    try:
        for tick in range(1, 11):
            while time.monotonic() - started < seconds * tick / 10:
                portico.check_alive()
                time.sleep(0.5)
            peak, rss, cpu = portico.stats()
            delivered = portico.delivered()
            # The target is emptied as it fills, so the broker's memory stays flat too.
            rabbit.ch.queue_purge(dst)
            samples.append((time.monotonic() - started, rss, peak, delivered, cpu))
            print(f"soak {samples[-1][0]:5.0f} s: RSS {rss:6.1f} MiB, peak {peak:6.1f} MiB, "
                  f"{delivered:9.0f} delivered, {delivered / samples[-1][0]:6.0f} msg/s, "
                  f"CPU {cpu:6.1f} s", file=sys.stderr, flush=True)
    finally:
        feeder.stop()
        portico.stop()
    return samples


def median(values):
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=500, help="latency send rate, msg/s")
    parser.add_argument("--latency-count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--direction", action="append", choices=DIRECTIONS)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the two memory figures")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="RSS over a long run only")
    parser.add_argument("--confirm-window", type=int, help="confirm_window of AMQP 0-9-1 sinks")
    args = parser.parse_args()
    global CONFIRM_WINDOW
    CONFIRM_WINDOW = args.confirm_window
    directions = args.direction or DIRECTIONS
    if args.soak:
        rabbit = Rabbit()
        try:
            samples = soak(args.soak, args.size, rabbit)
        finally:
            rabbit.cleanup()
        settled = [rss for _, rss, _, _, _ in samples[2:]]
        print(f"\nsoak {args.soak:.0f} s: {samples[-1][3]:.0f} delivered; RSS after the first fifth "
              f"{min(settled):.1f}-{max(settled):.1f} MiB, at the end {samples[-1][1]:.1f} MiB")
        return

    if args.memory_only:
        directions = []
    rows = {d: [] for d in directions}
    mem, ceils = [], []
    for rep in range(args.repeat):
        rabbit, topics = Rabbit(), []
        try:
            if directions:
                ceiling = ceilings(args.count, args.size, rabbit, topics,
                                   any("kafka" in d for d in directions),
                                   any(d.startswith("amqp10") for d in directions))
                ceils.append(ceiling)
                rounded = {k: round(v) for k, v in ceiling.items()}
                print(f"run {rep + 1}: ceilings: {json.dumps(rounded)}", file=sys.stderr,
                      flush=True)
                rabbit.cleanup()
            for d in directions:
                row = throughput(d, args.count, args.size, rabbit, topics)
                row["ceiling"] = ceiling_of(d, ceiling)
                row |= shovel(d, args.count, args.size, rabbit) if d in SHOVELLED else {"shovel": None}
                rabbit.cleanup()
                row |= latency(d, args.latency_count, args.rate, args.size, rabbit, topics)
                rabbit.cleanup()
                rows[d].append(row)
                print(f"run {rep + 1}: {d}: " + json.dumps({k: round(v, 2) if v else v for k, v in row.items()}),
                      file=sys.stderr, flush=True)
            if not args.no_memory:
                mem.append(memory(rabbit, topics))
                print(f"run {rep + 1}: memory: {mem[-1]}", file=sys.stderr, flush=True)
        finally:
            rabbit.cleanup()
            delete_topics(topics)

    if directions:
        table(directions, rows, args)
        print("ceilings (msg/s): " + ", ".join(
            f"{k} {median([c[k] for c in ceils]):.0f}" for k in ceils[0]))
    if mem:
        print(f"memory: idle with three bridges {median([x['idle_rss'] for x in mem]):.1f} MiB RSS; "
              f"10 000 in flight {median([x['inflight_peak_rss'] for x in mem]):.1f} MiB peak RSS")


def table(directions, rows, args):
    print(f"\n{args.count} x {args.size} B persistent, median of {args.repeat}; "
          f"latency at {args.rate:.0f} msg/s; ratios taken within each run\n")
    header = (f"{'direction':16} {'msg/s':>8} {'vs shovel':>9} {'vs ceiling':>10} {'ceiling':>8} "
              f"{'RSS MiB':>7} {'CPU s':>6} {'CPU us/msg':>10} {'broker us/msg':>13} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'ready ms':>8}")
    print(header)
    for d in directions:
        rs = rows[d]
        m = lambda key: median([r[key] for r in rs])
        vs_shovel = median([r["rate"] / r["shovel"] for r in rs]) if d in SHOVELLED else None
        vs_ceiling = median([r["rate"] / r["ceiling"] for r in rs])
        shovel_txt = f"{vs_shovel:9.2f}" if vs_shovel else f"{'-':>9}"
        print(f"{d:16} {m('rate'):8.0f} {shovel_txt} {vs_ceiling:10.2f} {m('ceiling'):8.0f} "
              f"{m('rss'):7.1f} {m('cpu'):6.2f} {m('cpu_us'):10.1f} {m('broker_us'):13.1f} "
              f"{m('p50'):7.2f} {m('p99'):7.2f} "
              f"{m('ready_ms'):8.0f}")
    for d in directions:
        if d in SHOVELLED:
            print(f"shovel {d}: {median([r['shovel'] for r in rows[d]]):.0f} msg/s, "
                  f"broker (shovel included) "
                  f"{median([r['shovel_broker_us'] for r in rows[d]]):.1f} us/msg")



if __name__ == "__main__":
    main()
