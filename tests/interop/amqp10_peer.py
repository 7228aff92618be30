"""A small AMQP 1.0 broker for interop tests, built on python-qpid-proton.

It listens on 127.0.0.1, accepts SASL ANONYMOUS (or no SASL), and keeps one queue per
address in memory:

* a transfer arriving on a sender's link to address A is recorded exactly as it came off the
  wire (raw bytes, the list of sections with their descriptors, the decoded proton Message
  with its Python types) and then settled with A's configured disposition: `accept` (the
  message is stored in A's queue), `reject` (with an error condition), `release` or
  `modify`. A disposition list is consumed one entry per transfer; its last entry sticks.
* a receiver attached to address A is served from A's queue as its credit allows; the
  outcome it sends back is recorded: `accepted` removes the message, `released`/`modified`
  put it back at the head of the queue, `rejected` drops it (kept in `dead`).
* a receiving link's max-message-size can be set per address before the sender attaches.

Messages can be preloaded with `put(address, message)`, where message is a proton Message
or already-encoded bytes (see `encode` for bodies proton cannot build, such as several data
sections).

In a test, `Peer().start()` runs the broker on a thread; every method of `Peer` may be
called from the test's thread. `python amqp10_peer.py --port N [--record FILE]` runs it
standalone and appends one JSON line per received transfer to FILE.
"""

import argparse
import collections
import json
import socket
import sys
import threading
import time
import uuid

from proton import (
    Array,
    Condition,
    Data,
    Delivery,
    Endpoint,
    Message,
    ulong,
)
from proton.handlers import FlowController
from proton.reactor import ApplicationEvent, Container, EventInjector
from proton._events import Handler

# Section descriptors (AMQP 1.0 part 3.2).
SECTIONS = {
    0x70: "header",
    0x71: "delivery-annotations",
    0x72: "message-annotations",
    0x73: "properties",
    0x74: "application-properties",
    0x75: "data",
    0x76: "amqp-sequence",
    0x77: "amqp-value",
    0x78: "footer",
}
BODY_SECTIONS = ("data", "amqp-sequence", "amqp-value")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- encoding


def plain(value):
    """Binary values as bytes (proton hands out memoryviews), inside containers too."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def split_sections(raw):
    """The sections of an encoded message: [(name, descriptor, encoded bytes, value)]."""
    out = []
    pos = 0
    while pos < len(raw):
        d = Data()
        used = d.decode(raw[pos:])
        d.rewind()
        d.next()
        d.enter()
        d.next()
        code = int(d.get_object())
        d.next()
        value = plain(d.get_object())
        out.append((SECTIONS.get(code, hex(code)), code, raw[pos : pos + used], value))
        pos += used
    return out


def described(code, value):
    """One section: the descriptor `code` (a ulong) around `value`."""
    d = Data()
    d.put_described()
    d.enter()
    d.put_ulong(code)
    d.put_object(value)
    d.exit()
    return d.encode()


def data_section(payload):
    return described(0x75, bytes(payload))


def amqp_value_section(value):
    return described(0x77, value)


def amqp_sequence_section(items):
    return described(0x76, list(items))


def encode(message=None, body_sections=()):
    """`message` (a proton Message whose body is left out) followed by raw body sections."""
    head = b""
    if message is not None:
        if body_sections:
            message.body = None
        head = message.encode()
    return head + b"".join(body_sections)


# ----------------------------------------------------------------------------- records


_SEQ = iter(range(1, 1 << 62))


class Wire:
    """One encoded message: its raw bytes, its sections (name, descriptor, encoded bytes,
    decoded value with proton's Python types) and the proton Message decoded from it."""

    def __init__(self, raw):
        self.seq = next(_SEQ)  # order of events in the peer (one thread handles them all)
        self.raw = bytes(raw)
        self.sections = split_sections(self.raw)
        self.message = Message()
        self.message.decode(self.raw)

    @property
    def section_names(self):
        return [s[0] for s in self.sections]

    @property
    def body_kind(self):
        kinds = [s[0] for s in self.sections if s[0] in BODY_SECTIONS]
        return kinds[0] if kinds else None

    @property
    def body_sections(self):
        return [(s[0], s[3]) for s in self.sections if s[0] in BODY_SECTIONS]

    def section(self, name):
        for s in self.sections:
            if s[0] == name:
                return s[3]
        return None

    def has(self, name):
        return name in self.section_names


class Transfer(Wire):
    """One message as it arrived from a sender."""

    def __init__(self, address, link_name, raw, settled):
        super().__init__(raw)
        self.address = address
        self.link_name = link_name
        self.settled_on_arrival = settled
        self.disposition = None
        self.arrived = time.time()

    def to_json(self):
        m = self.message
        return {
            "address": self.address,
            "link": self.link_name,
            "sections": self.section_names,
            "body_kind": self.body_kind,
            "disposition": self.disposition,
            "raw_hex": self.raw.hex(),
            "durable": m.durable,
            "priority": m.priority,
            "subject": m.subject,
            "id": repr(m.id),
            "properties": {k: repr(v) for k, v in (m.properties or {}).items()},
            "annotations": {str(k): repr(v) for k, v in (m.annotations or {}).items()},
        }


class Attach:
    """One link a client attached."""

    def __init__(self, link):
        self.name = link.name
        self.role = "sender" if link.is_receiver else "receiver"  # the client's side
        terminus = link.remote_target if link.is_receiver else link.remote_source
        self.address = terminus.address
        self.durability = terminus.durability
        self.expiry_policy = terminus.expiry_policy
        caps = terminus.capabilities
        caps.rewind()
        value = caps.get_object() if caps.next() else None
        if isinstance(value, Array):
            value = list(value.elements)
        elif value is not None:
            value = [value]
        self.capabilities = value  # a list of symbols, or None
        self.container = link.connection.remote_container


class Outcome(Wire):
    """The outcome a receiving client gave for a message the peer sent."""

    def __init__(self, address, raw, state, condition):
        super().__init__(raw)
        self.address = address
        self.state = state
        self.condition = condition


STATE_NAMES = {
    Delivery.ACCEPTED: "accepted",
    Delivery.REJECTED: "rejected",
    Delivery.RELEASED: "released",
    Delivery.MODIFIED: "modified",
}


# ----------------------------------------------------------------------------- broker


class _Handler(Handler):
    def __init__(self, peer):
        self.peer = peer
        self.handlers = [FlowController(100)]
        self.senders = collections.defaultdict(list)  # address -> [Sender]
        self.in_flight = {}  # delivery -> (address, raw)
        self.tags = 0

    # --- endpoints
    def on_connection_bound(self, event):
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")

    def on_connection_remote_open(self, event):
        conn, transport = event.connection, event.transport
        with self.peer.lock:
            self.peer.connections.append({
                "container": conn.remote_container,
                "max_frame_size": transport.remote_max_frame_size,
                "idle_timeout": transport.remote_idle_timeout,
                "mechanism": transport.sasl().mech,
            })
        if conn.state & Endpoint.LOCAL_UNINIT:
            conn.open()

    def on_session_remote_open(self, event):
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_link_remote_open(self, event):
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        attach = Attach(link)
        with self.peer.lock:
            self.peer.attaches.append(attach)
            if link.is_receiver:
                size = self.peer.max_sizes.get(attach.address)
                if size:
                    link.max_message_size = size
        link.open()
        if link.is_sender:
            self.senders[attach.address].append(link)
            self._pump(link)

    def on_link_remote_close(self, event):
        link = event.link
        self._forget(link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def on_link_remote_detach(self, event):
        self.on_link_remote_close(event)

    def on_session_remote_close(self, event):
        for link in list(self._links_of(event.session)):
            self._forget(link)
        if not event.session.state & Endpoint.LOCAL_CLOSED:
            event.session.close()

    def on_connection_remote_close(self, event):
        if not event.connection.state & Endpoint.LOCAL_CLOSED:
            event.connection.close()

    def on_transport_closed(self, event):
        conn = event.connection
        if conn is not None:
            for link in [l for links in self.senders.values() for l in links]:
                if link.connection == conn:
                    self._forget(link)

    def _links_of(self, ssn):
        return [l for links in self.senders.values() for l in links if l.session == ssn]

    def _forget(self, link):
        """A sender link went away: its unsettled messages return to their queue head."""
        if not link.is_sender:
            return
        for links in self.senders.values():
            if link in links:
                links.remove(link)
        back = [(d, v) for d, v in self.in_flight.items() if d.link == link]
        with self.peer.lock:
            for delivery, (address, raw) in reversed(back):
                self.peer.queues[address].appendleft(raw)
                del self.in_flight[delivery]

    # --- serving receivers
    def on_link_flow(self, event):
        if event.link.is_sender:
            self._pump(event.link)

    def on_pump(self, _event):
        for links in list(self.senders.values()):
            for link in list(links):
                self._pump(link)

    def on_stop(self, _event):
        self.peer._acceptor.close()
        self.peer._container.stop()

    def _pump(self, link):
        address = link.source.address
        while link.credit > 0 and link.state & Endpoint.LOCAL_ACTIVE:
            with self.peer.lock:
                queue = self.peer.queues[address]
                if not queue:
                    break
                raw = queue.popleft()
            self.tags += 1
            delivery = link.delivery(str(self.tags))
            link.stream(raw)
            link.advance()
            self.in_flight[delivery] = (address, raw)

    # --- deliveries
    def on_delivery(self, event):
        delivery = event.delivery
        link = delivery.link
        if link.is_receiver:
            self._received(delivery, link)
        else:
            self._outcome(delivery)

    def _received(self, delivery, link):
        if not delivery.readable or delivery.partial:
            return
        raw = link.recv(delivery.pending)
        link.advance()
        address = link.target.address or link.remote_target.address
        transfer = Transfer(address, link.name, raw, delivery.settled)
        with self.peer.lock:
            policy = self.peer.next_disposition(address)
        transfer.disposition = policy[0]
        if policy[0] == "accept":
            with self.peer.lock:
                self.peer.queues[address].append(raw)
            delivery.update(Delivery.ACCEPTED)
        elif policy[0] == "reject":
            delivery.local.condition = Condition(policy[1], policy[2])
            delivery.update(Delivery.REJECTED)
        elif policy[0] == "release":
            delivery.update(Delivery.RELEASED)
        elif policy[0] == "modify":
            delivery.local.failed = True
            delivery.local.undeliverable = bool(policy[1]) if len(policy) > 1 else False
            delivery.update(Delivery.MODIFIED)
        elif policy[0] == "ignore":
            pass  # never settled: the sender waits for an outcome forever
        delivery.settle() if policy[0] != "ignore" else None
        with self.peer.lock:
            self.peer.transfers.append(transfer)
            self.peer.changed.notify_all()
        if self.peer.record_file:
            with open(self.peer.record_file, "a") as f:
                f.write(json.dumps(transfer.to_json()) + "\n")
        if policy[0] == "accept":
            self.on_pump(None)

    def _outcome(self, delivery):
        if not delivery.updated or delivery not in self.in_flight:
            return
        address, raw = self.in_flight.pop(delivery)
        state = delivery.remote_state
        condition = delivery.remote.condition
        with self.peer.lock:
            self.peer.outcomes.append(Outcome(address, raw, STATE_NAMES.get(state, state), condition))
            if state in (Delivery.RELEASED, Delivery.MODIFIED):
                self.peer.queues[address].appendleft(raw)
            elif state == Delivery.REJECTED:
                self.peer.dead[address].append(raw)
            self.peer.changed.notify_all()
        delivery.settle()
        if state in (Delivery.RELEASED, Delivery.MODIFIED):
            self._pump(delivery.link)


class Peer:
    """The broker and its records; thread-safe for the test's thread."""

    def __init__(self, port=None, record_file=None):
        self.port = port or free_port()
        self.url = f"amqp://127.0.0.1:{self.port}"
        self.record_file = record_file
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.queues = collections.defaultdict(collections.deque)
        self.dead = collections.defaultdict(list)
        self.transfers = []
        self.outcomes = []
        self.attaches = []
        self.connections = []  # what each client announced in its open frame
        self.dispositions = {}
        self.max_sizes = {}
        self._handler = _Handler(self)
        self._injector = EventInjector()
        self._container = Container(self._handler)
        self._container.container_id = f"peer-{uuid.uuid4().hex[:6]}"
        self._container.selectable(self._injector)
        self._thread = None
        self.error = None

    # --- lifecycle
    def start(self):
        self._acceptor = self._container.listen(f"127.0.0.1:{self.port}")
        self._thread = threading.Thread(target=self._run, name="amqp10-peer", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"peer did not listen on {self.port}")

    def _run(self):
        try:
            self._container.run()
        except BaseException as e:  # surfaced by the wait_* methods
            self.error = e
            with self.lock:
                self.changed.notify_all()
            raise

    def stop(self):
        if self._thread and self._thread.is_alive():
            self._injector.trigger(ApplicationEvent("stop"))
            self._thread.join(10)

    # --- configuration
    def set_disposition(self, address, *policies):
        """Outcomes for the next transfers to `address`, one per transfer, the last one
        repeating: "accept", ("reject", condition, description), "release",
        ("modify", undeliverable_here), "ignore"."""
        norm = [(p,) if isinstance(p, str) else tuple(p) for p in policies]
        with self.lock:
            self.dispositions[address] = collections.deque(norm)

    def next_disposition(self, address):
        queue = self.dispositions.get(address)
        if not queue:
            return ("accept",)
        return queue.popleft() if len(queue) > 1 else queue[0]

    def set_max_message_size(self, address, size):
        """Advertised on receiving links attached to `address` from now on."""
        with self.lock:
            self.max_sizes[address] = size

    def put(self, address, message):
        """Queues a message (proton Message or encoded bytes) for receivers of `address`."""
        raw = message if isinstance(message, (bytes, bytearray)) else message.encode()
        with self.lock:
            self.queues[address].append(bytes(raw))
        self._injector.trigger(ApplicationEvent("pump"))

    # --- records
    def received(self, address=None):
        with self.lock:
            return [t for t in self.transfers if address is None or t.address == address]

    def wait_received(self, address, count, timeout=20):
        """The first `count` transfers that arrived on `address`, waiting for them."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                got = [t for t in self.transfers if t.address == address]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if self.error is not None:
                    raise AssertionError(f"the peer failed: {self.error!r}")
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {count} transfers to {address!r} "
                        f"(got {len(got)}; addresses seen: {sorted({t.address for t in self.transfers})})"
                    )
                self.changed.wait(left)

    def wait_outcomes(self, address, count, timeout=20):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                got = [o for o in self.outcomes if o.address == address]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if self.error is not None:
                    raise AssertionError(f"the peer failed: {self.error!r}")
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {count} outcomes on {address!r} (got {len(got)})"
                    )
                self.changed.wait(left)

    def depth(self, address):
        with self.lock:
            return len(self.queues[address])

    def stored(self, address):
        """The messages accepted into `address` and not yet consumed, decoded."""
        with self.lock:
            raws = list(self.queues[address])
        out = []
        for raw in raws:
            m = Message()
            m.decode(raw)
            out.append(m)
        return out

    def attached(self, address=None):
        with self.lock:
            return [a for a in self.attaches if address is None or a.address == address]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=5673)
    parser.add_argument("--record", help="append one JSON line per received transfer here")
    args = parser.parse_args(argv)
    peer = Peer(args.port, args.record).start()
    print(f"listening on {peer.url}", flush=True)
    try:
        peer._thread.join()
    except KeyboardInterrupt:
        peer.stop()


if __name__ == "__main__":
    sys.exit(main())
