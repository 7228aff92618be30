"""Settling an AMQP 0-9-1 source in runs: confirmed deliveries are acked with `multiple`, so
a reject between them must reach the broker before an ack whose range covers its tag."""

import pika

from conftest import RABBIT_URL, unique, wait_until


def test_rejects_between_accepted_messages_reach_the_dead_letter_exchange(portico, rabbit):
    broker_dlq = rabbit.queue(unique("acks-dlq"))
    source = rabbit.queue(
        unique("acks-src"), {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": broker_dlq}
    )
    target = rabbit.queue(unique("acks-dst"))
    total = 300
    poison = {n for n in range(total) if n % 7 == 3}
    for n in range(total):
        headers = {} if n in poison else {"dest": target}
        rabbit.publish(source, f"body-{n}".encode(), message_id=f"m-{n}", headers=headers,
                       delivery_mode=2)
    bridge = unique("acks")
    p = portico(f"""
connections:
  rabbit: {{ protocol: amqp091, url: "{RABBIT_URL}" }}
bridges:
  - name: {bridge}
    source: {{ connection: rabbit, queue: {source}, prefetch: 50 }}
    sink: {{ connection: rabbit, exchange: "", routing_key: "{{header.dest}}" }}
""")

    def settled():
        m = p.metrics()
        done = m.get("portico_messages_delivered_total", 0) + m.get("portico_messages_rejected_total", 0)
        return done == total and rabbit.depth(source) == 0 and rabbit.depth(broker_dlq) == len(poison)

    wait_until(settled, 60, "every message delivered or rejected")
    m = p.metrics()
    assert m["portico_messages_rejected_total"] == len(poison)
    assert m["portico_messages_delivered_total"] == total - len(poison)
    dead = [props.message_id for _, props, _ in rabbit.get(broker_dlq, len(poison))]
    assert sorted(dead) == sorted(f"m-{n}" for n in poison)
    delivered = [props.message_id for _, props, _ in rabbit.get(target, total - len(poison))]
    assert delivered == [f"m-{n}" for n in range(total) if n not in poison], "order kept"
    # Nothing is left unacked: after portico stops, nothing comes back to the source.
    assert p.stop() == 0
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        assert conn.channel().queue_declare(source, passive=True).method.message_count == 0
    finally:
        conn.close()
