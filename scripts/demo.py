#!/usr/bin/env python3
"""Round trip through a running portico with the shipped bridges.yaml.

RabbitMQ exchange `orders` -> portico -> Kafka topics orders.created / orders.cancelled
Kafka topic `events`       -> portico -> RabbitMQ exchange `events` -> queue events.received

Every message carries a per-run token in its JSON body, so records left over from
earlier runs are recognised and skipped.
"""

import json
import os
import re
import sys
import time
import uuid
from datetime import datetime, timezone

import pika
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    Producer,
)

RABBIT_URL = os.environ.get("RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
KAFKA_BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
DEADLINE_S = float(os.environ.get("PORTICO_DEMO_DEADLINE", "30"))
RUN = uuid.uuid4().hex[:12]

ORDERS = [
    ("created", {"order": 1001, "total": "19.90"}),
    ("created", {"order": 1002, "total": "5.00"}),
    ("cancelled", {"order": 1003, "total": "42.00"}),
]
EVENTS = [
    ("user.signup", {"event": "signup", "user": "u-1"}),
    ("user.login", {"event": "login", "user": "u-1"}),
    ("user.signup", {"event": "signup", "user": "u-2"}),
]


class DemoFailed(Exception):
    pass


def heading(text):
    print()
    print(text)
    print("=" * len(text))


def field(name, value, indent=2):
    print(f"{' ' * indent}{name:<16} {value}")


def text(value):
    if value is None:
        return "(none)"
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + value.hex()
    return str(value)


def run_token(body):
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return None
    return doc.get("run") if isinstance(doc, dict) else None


def fmt_ts(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------ RabbitMQ -> Kafka


def publish_orders():
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        now = int(time.time())
        for routing_key, doc in ORDERS:
            body = json.dumps({**doc, "run": RUN}).encode()
            props = pika.BasicProperties(
                message_id=f"order-{doc['order']}",
                content_type="application/json",
                delivery_mode=2,
                timestamp=now,
                headers={"customer_id": "c-42", "attempt": 1, "vip": True},
            )
            try:
                ch.basic_publish("orders", routing_key, body, props, mandatory=True)
            except pika.exceptions.UnroutableError as exc:
                raise DemoFailed(f"RabbitMQ could not route to exchange 'orders' ({routing_key}): {exc}")
            print(f"  published  orders/{routing_key:<10} {body.decode()}")
    finally:
        conn.close()


def consume_orders():
    consumer = Consumer(
        {
            "bootstrap.servers": KAFKA_BROKERS,
            "group.id": f"portico-demo-{RUN}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    wanted = len(ORDERS)
    got, skipped = [], 0
    try:
        consumer.subscribe(["orders.created", "orders.cancelled"])
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                raise DemoFailed(f"Kafka consumer error: {msg.error()}")
            if run_token(msg.value()) != RUN:
                skipped += 1
                continue
            got.append(msg)
    finally:
        consumer.close()

    order_of = {doc["order"]: i for i, (_, doc) in enumerate(ORDERS)}
    got.sort(key=lambda m: order_of.get(json.loads(m.value()).get("order"), len(ORDERS)))
    for msg in got:
        ts_type, ts = msg.timestamp()
        print()
        field("topic", f"{msg.topic()} [partition {msg.partition()}, offset {msg.offset()}]")
        field("key", text(msg.key()))
        kind = {TIMESTAMP_CREATE_TIME: "create time", TIMESTAMP_LOG_APPEND_TIME: "log append time"}
        field("timestamp", f"{ts} ({fmt_ts(ts)}, {kind[ts_type]})" if ts_type in kind else "(none)")
        for name, value in msg.headers() or []:
            field("header", f"{name}={text(value)}")
        field("body", text(msg.value()))
    if skipped:
        print(f"\n  (skipped {skipped} record(s) from earlier runs)")
    if len(got) < wanted:
        raise DemoFailed(
            f"only {len(got)} of {wanted} orders arrived in Kafka within {DEADLINE_S:.0f}s "
            "(topics orders.created / orders.cancelled)"
        )
    keys = {text(m.key()) for m in got}
    if keys != {"c-42"}:
        raise DemoFailed(f"expected Kafka key c-42 (from header customer_id), got {sorted(keys)}")


# ------------------------------------------------------------------ Kafka -> RabbitMQ


def produce_events():
    producer = Producer({"bootstrap.servers": KAFKA_BROKERS, "acks": "all"})
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(f"{msg.key()}: {err}")

    for i, (key, doc) in enumerate(EVENTS, start=1):
        body = json.dumps({**doc, "run": RUN})
        producer.produce(
            "events",
            key=key,
            value=body,
            headers=[("source", b"web"), ("trace", f"t-{i}".encode())],
            on_delivery=report,
        )
        print(f"  produced   events key={key:<12} {body}")
    remaining = producer.flush(DEADLINE_S)
    if remaining or errors:
        raise DemoFailed(f"Kafka produce to 'events' failed: {errors or f'{remaining} undelivered'}")


def consume_events():
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    wanted = len(EVENTS)
    got, skipped = [], 0
    try:
        ch = conn.channel()
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < wanted and time.monotonic() < deadline:
            method, props, body = ch.basic_get("events.received", auto_ack=False)
            if method is None:
                conn.sleep(0.2)
                continue
            ch.basic_ack(method.delivery_tag)
            if run_token(body) != RUN:
                skipped += 1
                continue
            got.append((method, props, body))
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise DemoFailed(f"RabbitMQ queue events.received: {exc}")
    finally:
        if conn.is_open:
            conn.close()

    for method, props, body in got:
        print()
        field("routing key", f"{method.routing_key} (exchange {method.exchange or '(default)'})")
        for name in ("content_type", "content_encoding", "message_id", "correlation_id",
                     "timestamp", "delivery_mode", "type", "app_id", "expiration", "priority",
                     "reply_to", "user_id"):
            value = getattr(props, name)
            if value is not None:
                field(name, value)
        for name, value in (props.headers or {}).items():
            field("header", f"{name}={text(value)} ({type(value).__name__})")
        field("body", text(body))
    if skipped:
        print(f"\n  (skipped {skipped} message(s) from earlier runs)")
    if len(got) < wanted:
        raise DemoFailed(
            f"only {len(got)} of {wanted} events arrived in RabbitMQ queue events.received "
            f"within {DEADLINE_S:.0f}s"
        )


def main():
    print(f"portico demo (run {RUN})")
    print(f"  RabbitMQ  {re.sub(r':[^:@/]*@', ':***@', RABBIT_URL)}")
    print(f"  Kafka     {KAFKA_BROKERS}")
    try:
        heading("RabbitMQ -> Kafka")
        publish_orders()
        consume_orders()
        heading("Kafka -> RabbitMQ")
        produce_events()
        consume_events()
    except DemoFailed as exc:
        print(f"\nDemo FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"Demo OK: {len(ORDERS)} messages each way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
