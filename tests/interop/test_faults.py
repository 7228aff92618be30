"""Fault tolerance: crashes, signals, lost connections, full queues and brokers that come and
go. Each test reconciles what was sent against what arrived: sent = delivered + dead-lettered
(+ still in the source), nothing lost, duplicates counted and bounded by the in-flight window.
The helpers and fixtures are in faults.py."""

import subprocess
import time

import pytest

from conftest import KAFKA_BROKERS, RABBIT_URL, create_topic, free_port, produce, unique, wait_until
from faults import (  # noqa: F401 (fixtures: delete_queues is autouse)
    RABBITMQCTL,
    SCALE,
    amqp_ids,
    body_of,
    committed_offset,
    delete_queues,
    drain,
    kafka_to_rabbit,
    metric,
    portico_connection_pid,
    publish_numbered,
    queue_total,
    queue_totals,
    rabbit_to_kafka,
    rabbit_to_rabbit,
    read_topic,
    reconcile,
    slow_link,
    tansu,
)


def test_sigkill_mid_stream_rabbit_to_kafka(portico, rabbit):
    """SIGKILL loses nothing: what was not acked returns to the queue; at most the unacked
    window (prefetch) reaches Kafka twice."""
    queue, topic, bridge = unique("fk-q"), unique("fk-t"), unique("fk")
    rabbit.queue(queue)
    # About 30 000 msg/s: the kill must land with most messages left, whatever the test's
    # reaction time (a metric poll every 50 ms).
    total, prefetch = int(20000 * SCALE), 256
    kill_at = min(total * 3 // 10, 1500)
    publish_numbered(queue, range(total))
    wait_until(lambda: rabbit.depth(queue) == total, 30, f"{total} messages on {queue}")
    config = rabbit_to_kafka(bridge, queue, topic, prefetch=prefetch, max_in_flight=prefetch)

    first = portico(config)
    wait_until(lambda: metric(first, "portico_messages_delivered_total") >= kill_at, 60, f"{kill_at} delivered")
    first.kill()
    left = queue_total(queue)
    print(f"killed after ~{kill_at} delivered; {left} messages left in {queue} (ready + unacked)")
    assert 0 < left < total, "the kill did not land mid-stream"

    second = portico(config)
    wait_until(lambda: queue_total(queue) == 0, 120, f"{queue} empty")
    records = read_topic(topic)
    duplicates = reconcile(
        amqp_ids(records), [f"m-{n}" for n in range(total)], prefetch,
        "SIGKILL portico", "0-9-1 -> Kafka",
    )
    print(f"DUPLICATES rabbit→kafka after SIGKILL: {duplicates}")
    m = second.metrics()
    assert m.get("portico_messages_dead_lettered_total", 0) == 0
    assert m.get("portico_messages_rejected_total", 0) == 0
    assert m.get("portico_messages_delivered_total", 0) == left, "second run delivers exactly what was left"


def test_sigkill_mid_stream_kafka_to_rabbit(portico, rabbit, tansu):
    """SIGKILL loses nothing: the restart resumes at the group's committed offset, which
    trails the confirmed records by at most the in-flight window."""
    kafka = tansu().start()  # sqlite: the restart resumes at a committed offset
    topic, group, queue, bridge = unique("fk-t"), unique("fk-g"), unique("fk-q"), unique("fk")
    total, window = int(5000 * SCALE), 256
    kill_at = total * 3 // 10
    create_topic(topic, brokers=kafka.brokers)
    produce(topic, [{"key": f"k-{n}".encode(), "value": body_of(n, 1024)} for n in range(total)], brokers=kafka.brokers)
    rabbit.queue(queue)
    config = kafka_to_rabbit(bridge, topic, group, queue, brokers=kafka.brokers, max_in_flight=window)

    first = portico(config)
    started = time.monotonic()
    wait_until(lambda: metric(first, "portico_messages_delivered_total") >= kill_at, 60, f"{kill_at} delivered")
    delivered = metric(first, "portico_messages_delivered_total")
    rate = delivered / (time.monotonic() - started)
    first.kill()
    resumed_at = committed_offset(topic, group, kafka.brokers)
    print(f"killed after {delivered:.0f} delivered at {rate:.0f}/s; committed offset {resumed_at}")
    # A Kafka source commits the confirmed offsets every 100 ms: a crash replays the
    # in-flight window plus what was confirmed since the last commit (with a margin for the
    # commit's own round trip).
    bound = window + int(rate * 0.5)

    second = portico(config)
    # Offsets are committed only for records the sink confirmed: once the group's offset
    # reaches the end, every record is in the target queue.
    wait_until(lambda: committed_offset(topic, group, kafka.brokers) >= total, 120, f"group {group} committed {total}")
    got = drain(queue)
    offsets = [p.headers["kafka-offset"] for p, _ in got]
    for props, body in got:
        assert body == body_of(props.headers["kafka-offset"], 1024), "body does not match its offset"
    duplicates = reconcile(offsets, range(total), bound, "SIGKILL portico", "Kafka -> 0-9-1")
    print(f"DUPLICATES kafka→rabbit after SIGKILL: {duplicates}")
    assert metric(second, "portico_messages_dead_lettered_total") == 0
    # The committed offset is the next record to read: one past the last, not two.
    assert committed_offset(topic, group, kafka.brokers) == total


def test_kafka_source_resumes_at_first_unread_record(portico, rabbit, tansu):
    """A clean stop commits the next offset to read; a restart must start exactly there."""
    kafka = tansu().start()
    topic, group, queue, bridge = unique("fk-t"), unique("fk-g"), unique("fk-q"), unique("fk")
    create_topic(topic, brokers=kafka.brokers)
    rabbit.queue(queue)
    config = kafka_to_rabbit(bridge, topic, group, queue, brokers=kafka.brokers)
    produce(topic, [{"value": body_of(n, 64)} for n in range(100)], brokers=kafka.brokers)
    first = portico(config)
    wait_until(lambda: rabbit.depth(queue) == 100, 30, f"100 messages on {queue}")
    assert first.stop(timeout=15) == 0
    committed = committed_offset(topic, group, kafka.brokers)
    print(f"committed after a clean stop with offsets 0..99 delivered: {committed}")

    produce(topic, [{"value": body_of(n, 64)} for n in range(100, 200)], brokers=kafka.brokers)
    portico(config)
    wait_until(lambda: committed_offset(topic, group, kafka.brokers) >= 200, 60, f"group {group} at the end")
    got = drain(queue)
    reconcile(
        [p.headers["kafka-offset"] for p, _ in got], range(200), 0,
        "portico restart, clean", "Kafka -> 0-9-1",
    )
    assert committed == 100, f"after consuming offsets 0..99 the group committed {committed}, not 100"


def test_kafka_lost_then_portico_killed(portico, rabbit, tansu):
    """Case 21: Kafka goes away mid-stream, then portico is killed while holding messages for
    it; with both back, Kafka holds every message."""
    queue, topic, bridge = unique("fk-q"), unique("fk-t"), unique("fk")
    total, window = 100, 5
    kafka = tansu().start()
    rabbit.queue(queue)
    publish_numbered(queue, range(total), size=256)
    wait_until(lambda: rabbit.depth(queue) == total, 30, f"{total} messages on {queue}")
    config = rabbit_to_kafka(bridge, queue, topic, brokers=kafka.brokers, prefetch=window, max_in_flight=window)

    first = portico(config)
    wait_until(lambda: metric(first, "portico_messages_delivered_total") >= 30, 60, "30 delivered")
    kafka.kill()
    delivered = metric(first, "portico_messages_delivered_total")
    print(f"Kafka killed after {delivered} delivered")
    assert delivered < total, "Kafka was killed after everything was delivered"
    # portico holds messages for the missing Kafka without settling them.
    wait_until(lambda: metric(first, "portico_messages_in_flight") > 0, 30, "messages waiting for Kafka")
    delivered = metric(first, "portico_messages_delivered_total")
    first.kill()
    assert queue_total(queue) == total - delivered, "only confirmed messages were acked"

    kafka.start()
    second = portico(config, timeout=60)
    wait_until(lambda: queue_total(queue) == 0, 90, f"{queue} empty")
    records = read_topic(topic, brokers=kafka.brokers)
    duplicates = reconcile(
        amqp_ids(records), [f"m-{n}" for n in range(total)], window,
        "Kafka lost, then portico killed (case 21)", "0-9-1 -> Kafka",
    )
    print(f"DUPLICATES case 21: {duplicates}")
    assert metric(second, "portico_messages_dead_lettered_total") == 0


def test_full_target_queue_keeps_refused_messages_in_source(portico, rabbit):
    """Case 22/23: the target refuses what exceeds x-max-length (reject-publish); the refused
    messages stay unacknowledged in the source and flow once the target has room."""
    source, target, bridge = unique("fk-src"), unique("fk-full"), unique("fk")
    total, room = 1000, 100
    rabbit.queue(source)
    publish_numbered(source, range(total), size=64)
    wait_until(lambda: rabbit.depth(source) == total, 30, f"{total} messages on {source}")
    declare = f"""    declare:
      queues:
        - {{ name: {target}, arguments: {{ x-max-length: {room}, x-overflow: reject-publish }} }}"""
    p = portico(rabbit_to_rabbit(bridge, source, target, declare=declare))
    rabbit.declared.append(target)

    wait_until(lambda: rabbit.depth(target) == room, 60, f"{room} messages on {target}")
    wait_until(lambda: queue_total(source) <= total - room, 30, f"{total - room} left in {source}")
    wait_until(lambda: metric(p, "portico_delivery_retries_total") > 0, 30, "delivery retries")
    for _ in range(4):
        totals = queue_totals()
        assert totals[target] == room, f"target holds {totals[target]}, not {room}"
        assert totals[source] + totals[target] == total, f"messages lost or doubled: {totals[source]} + {totals[target]}"
    m = p.metrics()
    assert m["portico_messages_delivered_total"] == room
    assert m.get("portico_messages_dead_lettered_total", 0) == 0
    assert m.get("portico_messages_rejected_total", 0) == 0
    print(f"retries while the target was full: {m['portico_delivery_retries_total']:.0f}")

    got = []

    def all_settled():
        got.extend(drain(target))
        m = p.metrics()
        return (
            m["portico_messages_in_flight"] == 0
            and m["portico_messages_delivered_total"] >= total
            and rabbit.depth(source) == 0
        )

    wait_until(all_settled, 90, f"every message of {source} settled")
    assert queue_total(source) == 0
    got.extend(drain(target))
    reconcile(
        [props.message_id for props, _ in got], [f"m-{n}" for n in range(total)], 0,
        "target full, reject-publish (case 22/23)", "0-9-1 -> 0-9-1",
    )
    assert metric(p, "portico_messages_delivered_total") == total


def test_retried_publishes_keep_their_own_confirms(portico, rabbit):
    """Retries of refused publishes run beside the in-order stream on one sink channel; each
    confirm must settle the source message that was actually published. A confirm credited
    to the wrong message acks a refused one at the source (lost) and re-sends an accepted
    one (duplicate)."""
    source, target, bridge = unique("fk-src"), unique("fk-small"), unique("fk")
    total, room = 3000, 50
    rabbit.queue(source)
    rabbit.queue(target, {"x-max-length": room, "x-overflow": "reject-publish"})
    publish_numbered(source, range(total), size=64)
    wait_until(lambda: rabbit.depth(source) == total, 30, f"{total} messages on {source}")
    p = portico(rabbit_to_rabbit(bridge, source, target))
    got = []

    def all_settled():
        got.extend(drain(target))
        m = p.metrics()
        return (
            m["portico_messages_in_flight"] == 0
            and m["portico_messages_delivered_total"] >= total
            and rabbit.depth(source) == 0
        )

    wait_until(all_settled, 120, f"every message of {source} settled")
    assert queue_total(source) == 0
    got.extend(drain(target))
    print(f"retries: {metric(p, 'portico_delivery_retries_total'):.0f}")
    reconcile(
        [props.message_id for props, _ in got], [f"m-{n}" for n in range(total)], 0,
        "refused publishes retried", "0-9-1 -> 0-9-1",
    )


def test_source_connection_closed_mid_flow(portico, rabbit, slow_link, monkeypatch):
    """Case 24: the broker closes the source connection while a full window of deliveries is
    unsettled. Their acks come due after the reconnect and must not reach the new channel
    (its delivery tags name other messages): every message arrives, and the duplicates are
    whole redeliveries of that window."""
    monkeypatch.setenv("PORTICO_LOG", "info,portico=debug")
    source, target, bridge = unique("fk-src"), unique("fk-dst"), unique("fk")
    total, prefetch = 2000, 100
    rabbit.queue(source)
    rabbit.queue(target)
    publish_numbered(source, range(total), size=512)
    wait_until(lambda: rabbit.depth(source) == total, 30, f"{total} messages on {source}")
    # The sink reaches RabbitMQ through a link that delays confirms by 250 ms: the flow lasts
    # a few seconds and the source always holds a full window of unacked deliveries.
    link = slow_link(5672, 0.25)
    config = rabbit_to_rabbit(bridge, source, target, prefetch, prefetch, sink_url=link.amqp_url())
    p = portico(config)
    name = f"portico {bridge} source"
    pid = wait_until(lambda: portico_connection_pid(name), 30, f"connection {name!r}")

    def window_unsettled():
        m = p.metrics()
        in_flight = m.get("portico_messages_in_flight", 0)
        return m.get("portico_messages_delivered_total", 0) >= 400 and in_flight > 0 and in_flight

    # The window is sampled just before the close, not after: once the connection is gone
    # the window drains (its confirms arrive) and the source reconnects a backoff step later,
    # so a sample taken after the close may fall between the two and read 0.
    in_flight = wait_until(window_unsettled, 60, "400 delivered and a window in flight")
    subprocess.run([RABBITMQCTL, "-q", "close_connection", pid, "test"], check=True, timeout=60)
    closed_at = metric(p, "portico_messages_delivered_total")
    print(f"closed the source connection after {closed_at:.0f} delivered, {in_flight:.0f} in flight")
    # Confirms come 250 ms late, so the window stays full for as long as messages flow: with
    # messages left after the close, it was unsettled when the close landed.
    assert closed_at < total, "the close did not land mid-flow"
    wait_until(lambda: (q := portico_connection_pid(name)) and q != pid, 60, "a new source connection")

    def all_settled():
        m = p.metrics()
        return m["portico_messages_in_flight"] == 0 and rabbit.depth(source) == 0

    wait_until(all_settled, 60, f"every message of {source} settled")
    assert queue_total(source) == 0
    got = drain(target)

    ids = [props.message_id for props, _ in got]
    for props, body in got:
        assert body == body_of(int(props.message_id[2:]), 512), f"{props.message_id}: body differs"
    duplicates = reconcile(
        ids, [f"m-{n}" for n in range(total)], prefetch,
        "source connection closed (case 24)", "0-9-1 -> 0-9-1",
    )
    print(f"DUPLICATES case 24: {duplicates}")
    log = p.log()
    assert "PRECONDITION_FAILED" not in log
    assert "unknown delivery tag" not in log.lower()
    assert metric(p, "portico_messages_dead_lettered_total") == 0


@pytest.mark.parametrize("link", ["direct", "slow-confirms"])
def test_sigterm_under_load_drains_without_duplicates(portico, rabbit, tansu, slow_link, link):
    """SIGTERM stops intake, waits for the confirms of what is in flight and acks it: the
    source then holds exactly what Kafka does not. With `slow-confirms` Kafka (a Tansu of
    this test) answers through a link that delays its replies by 200 ms, so the signal
    always lands while a full window waits for confirms."""
    queue, topic, bridge = unique("fk-q"), unique("fk-t"), unique("fk")
    # Direct, portico moves about 30 000 msg/s: 3 000 messages can all be through before the
    # test has read the metric and sent the signal. 19 000 left after the first 1 000 take it
    # over half a second, several times what the test needs to react.
    total = int((3000 if link == "slow-confirms" else 20000) * SCALE)
    brokers = KAFKA_BROKERS
    if link == "slow-confirms":
        kafka_port = free_port()
        slow = slow_link(kafka_port, 0.2)
        brokers = tansu(port=kafka_port, advertised_port=slow.port).start().brokers
    rabbit.queue(queue)
    publish_numbered(queue, range(total))
    wait_until(lambda: rabbit.depth(queue) == total, 30, f"{total} messages on {queue}")
    config = rabbit_to_kafka(bridge, queue, topic, brokers=brokers)

    first = portico(config)
    stop_at = min(total // 3, 1000)
    wait_until(lambda: metric(first, "portico_messages_delivered_total") >= stop_at, 60, f"{stop_at} delivered")
    started = time.monotonic()
    code = first.stop(timeout=15)
    print(f"SIGTERM: exit code {code} after {time.monotonic() - started:.1f}s")
    assert code == 0, first.log()[-3000:]
    left = queue_total(queue)
    assert 0 < left < total, "SIGTERM did not land mid-stream"
    records = read_topic(topic, brokers=brokers)
    print(f"after SIGTERM: {len(records)} in Kafka, {left} in {queue}")
    assert len(records) + left == total, f"{len(records)} in Kafka + {left} in the queue != {total}"

    portico(config)
    wait_until(lambda: queue_total(queue) == 0, 60, f"{queue} empty")
    records = read_topic(topic, brokers=brokers)
    duplicates = reconcile(
        amqp_ids(records), [f"m-{n}" for n in range(total)], 0,
        f"SIGTERM under load ({link})", "0-9-1 -> Kafka",
    )
    print(f"DUPLICATES SIGTERM {link}: {duplicates}")


def test_sigterm_with_silent_brokers_still_exits(portico, rabbit, slow_link):
    """Every connection of two bridges (0-9-1 -> 1.0 and 1.0 -> 0-9-1, through RabbitMQ) goes
    through a link that stops forwarding the broker's bytes while keeping the sockets open.
    On SIGTERM no close can be answered: portico still exits, within the shutdown timeout
    plus a bounded wait for the closes, and says which connections it gave up on."""
    q091, q10, t10, t091 = (rabbit.queue(unique(n)) for n in ("sil-a", "sil-b", "sil-c", "sil-d"))
    links = [slow_link(5672, 0) for _ in range(4)]
    a, b, c, d = (f"127.0.0.1:{link.port}" for link in links)
    url = lambda host: RABBIT_URL.replace("127.0.0.1:5672", host)  # noqa: E731
    config = f"""
connections:
  a: {{ protocol: amqp091, url: "{url(a)}" }}
  b: {{ protocol: amqp10, url: "amqp://guest:guest@{b}", flavor: rabbitmq }}
  c: {{ protocol: amqp10, url: "amqp://guest:guest@{c}", flavor: rabbitmq }}
  d: {{ protocol: amqp091, url: "{url(d)}" }}
bridges:
  - name: {unique("sil-out")}
    source: {{ connection: a, queue: {q091} }}
    sink: {{ connection: b, queue: {t10} }}
  - name: {unique("sil-in")}
    source: {{ connection: c, queue: {q10} }}
    sink: {{ connection: d, exchange: "", routing_key: {t091} }}
shutdown_timeout: 2s
"""
    p = portico(config)
    for n in range(3):
        rabbit.publish(q091, f"out-{n}".encode(), message_id=f"o-{n}")
        rabbit.publish(q10, f"in-{n}".encode(), message_id=f"i-{n}")
    assert sorted(body for _, _, body in rabbit.get(t10, 3)) == [b"out-0", b"out-1", b"out-2"]
    assert sorted(body for _, _, body in rabbit.get(t091, 3)) == [b"in-0", b"in-1", b"in-2"]
    wait_until(lambda: rabbit.depth(q091) == 0 and rabbit.depth(q10) == 0, 30, "sources acked")
    for link in links:
        link.silence()
    started = time.monotonic()
    code = p.stop(timeout=20)
    took = time.monotonic() - started
    print(f"SIGTERM with silent brokers: exit code {code} after {took:.1f}s")
    assert code == 0, p.log()[-3000:]
    assert took < 12, f"took {took:.1f}s: 2 s to settle, at most 5 s for the closes"
    assert "did not close in time" in p.log(), p.log()[-3000:]


def test_kafka_down_at_startup(portico, rabbit, tansu):
    """Kafka absent at startup: /readyz says what is waiting, RabbitMQ keeps the messages, and
    portico declares the topic and delivers everything once Kafka appears."""
    queue, topic, bridge = unique("fk-q"), unique("fk-t"), unique("fk")
    total = 50
    kafka = tansu()  # a free port with nothing listening yet
    rabbit.queue(queue)
    p = portico(rabbit_to_kafka(bridge, queue, topic, brokers=kafka.brokers), ready=False)

    def not_ready():
        status, body = p.http("/readyz")
        return status == 503 and "waiting" in body and body

    body = wait_until(not_ready, 30, "/readyz 503")
    print(f"/readyz while Kafka is down:\n{body}")
    waiting = [line for line in body.splitlines() if ": waiting" in line]
    assert any("kafka" in line or f"{bridge} sink" in line for line in waiting), body

    publish_numbered(queue, range(total), size=128)
    wait_until(lambda: rabbit.depth(queue) == total, 30, f"{total} messages on {queue}")
    assert p.http("/readyz")[0] == 503
    assert queue_total(queue) == total
    assert metric(p, "portico_messages_received_total") == 0

    kafka.start()
    p.wait_ready(timeout=60)
    wait_until(lambda: queue_total(queue) == 0, 60, f"{queue} empty")
    records = read_topic(topic, brokers=kafka.brokers)
    reconcile(
        amqp_ids(records), [f"m-{n}" for n in range(total)], 0,
        "Kafka down at start", "0-9-1 -> Kafka",
    )
    assert metric(p, "portico_messages_delivered_total") == total


HELD_TOTAL, HELD_WINDOW = 50, 8


def full_window_behind_held_confirms(portico, rabbit, slow_link, name, shutdown_timeout="10s"):
    """A 0-9-1 → 0-9-1 bridge with `confirm_window: 8` whose sink reaches RabbitMQ through a
    link holding back the broker's replies; 50 messages in the source. Returns (portico,
    source, target, link) once eight are published and the ninth waits for room."""
    source, target = rabbit.queue(unique(f"{name}-src")), rabbit.queue(unique(f"{name}-dst"))
    link = slow_link(5672, 0)
    config = rabbit_to_rabbit(unique(name), source, target, prefetch=100, max_in_flight=100,
                              sink_url=link.amqp_url(),
                              sink_extra=f", confirm_window: {HELD_WINDOW}")
    p = portico(config.replace("shutdown_timeout: 10s", f"shutdown_timeout: {shutdown_timeout}"))
    link.hold()
    publish_numbered(source, range(HELD_TOTAL), size=64)

    def window_full():
        in_flight = metric(p, "portico_messages_in_flight")
        return in_flight == HELD_WINDOW + 1 and rabbit.depth(target) == HELD_WINDOW

    wait_until(window_full, 30, f"{HELD_WINDOW} published, one more waiting")
    return p, source, target, link


def test_confirm_window_bounds_publishes_awaiting_confirms(portico, rabbit, slow_link):
    """`confirm_window: 8` on the sink: with the broker's confirms held back, portico publishes
    eight messages and waits, though prefetch and max_in_flight (100) would let it take all
    50 from the source. Once the confirms flow again every message crosses, once, in order."""
    p, source, target, link = full_window_behind_held_confirms(portico, rabbit, slow_link, "cw")
    total, window = HELD_TOTAL, HELD_WINDOW
    # Observed for a second: the window stays full and nothing more is published.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert rabbit.depth(target) == window
        assert metric(p, "portico_messages_in_flight") == window + 1
        assert metric(p, "portico_messages_delivered_total") == 0
        time.sleep(0.05)  # pacing the observation, not waiting for anything
    link.release()
    wait_until(lambda: rabbit.depth(target) == total, 30, f"all {total} on {target}")
    wait_until(lambda: metric(p, "portico_messages_delivered_total") == total, 30, "all settled")
    assert [props.message_id for props, _ in drain(target)] == [f"m-{n}" for n in range(total)]
    assert queue_total(source) == 0
    assert p.stop() == 0


def test_sigterm_with_a_full_confirm_window_gives_everything_back(portico, rabbit, slow_link):
    """SIGTERM while the broker holds back every confirm: the eight publishes awaiting theirs
    are waited for until the shutdown timeout, the message waiting for room goes back without
    holding the exit (it would add the 5 s drain deadline), and portico exits. Nothing was confirmed, so nothing was acked: all 50 are in the source
    again; the target holds the eight that were published (they will come again: at most the
    window is duplicated)."""
    p, source, target, _ = full_window_behind_held_confirms(
        portico, rabbit, slow_link, "cwt", shutdown_timeout="2s"
    )
    total, window = HELD_TOTAL, HELD_WINDOW
    started = time.monotonic()
    assert p.stop(timeout=30) == 0
    took = time.monotonic() - started
    print(f"exited {took:.1f} s after SIGTERM")
    # The shutdown timeout (2 s) for the confirms, then at most the close deadline (5 s) for
    # connections whose broker does not answer.
    assert took < 2 + 5 + 3, took
    wait_until(lambda: queue_total(source) == total, 30, f"all {total} back on {source}")
    assert rabbit.depth(target) == window


def test_sink_connection_closed_with_a_full_confirm_window(portico, rabbit, slow_link):
    """The broker closes the sink's connection while the confirm window (8) is full: the
    publishes awaiting confirms fail with it and give their room back, so the new connection
    gets a whole window again. Every message arrives; duplicates stay within the window."""
    source, target, bridge = unique("cwc-src"), unique("cwc-dst"), unique("cwc")
    total, window = int(1000 * SCALE), 8
    rabbit.queue(source)
    rabbit.queue(target)
    publish_numbered(source, range(total), size=256)
    wait_until(lambda: rabbit.depth(source) == total, 30, f"{total} messages on {source}")
    link = slow_link(5672, 0.05)  # confirms come 50 ms late: the window is always full
    config = rabbit_to_rabbit(bridge, source, target, prefetch=100, max_in_flight=100,
                              sink_url=link.amqp_url(), sink_extra=f", confirm_window: {window}")
    p = portico(config)
    name = f"portico {bridge} sink"
    pid = wait_until(lambda: portico_connection_pid(name), 30, f"connection {name!r}")
    wait_until(lambda: metric(p, "portico_messages_delivered_total") >= 100, 60, "100 delivered")
    subprocess.run([RABBITMQCTL, "-q", "close_connection", pid, "test"], check=True, timeout=60)
    closed_at = metric(p, "portico_messages_delivered_total")
    assert closed_at < total, "the close did not land mid-flow"
    wait_until(lambda: (q := portico_connection_pid(name)) and q != pid, 60, "a new sink connection")

    def all_settled():
        m = p.metrics()
        return m["portico_messages_in_flight"] == 0 and queue_total(source) == 0

    wait_until(all_settled, 120, f"every message of {source} settled")
    ids = [props.message_id for props, _ in drain(target)]
    duplicates = reconcile(ids, [f"m-{n}" for n in range(total)], window, "sink connection closed")
    print(f"closed after {closed_at:.0f} delivered; {duplicates} duplicates")
    assert metric(p, "portico_messages_dead_lettered_total") == 0
    assert p.stop() == 0
