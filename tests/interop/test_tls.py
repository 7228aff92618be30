"""`amqps://` for both AMQP protocols: portico reaches a RabbitMQ node of the test's own over
TLS, with 0-9-1 and with AMQP 1.0 on the same TLS port, and trusts the node's certificate
through the system OpenSSL's default verify paths, which honour SSL_CERT_FILE. The CA and the
server certificate (for `localhost`) are made for the test with the `openssl` CLI. Without
that CA, the TLS handshake fails and portico says why.

`amqps://` means TLS from the first byte for AMQP 1.0 too (RabbitMQ resets a connection that
opens with the AMQP TLS protocol header instead)."""

import json
import subprocess

import pika
import pytest

from conftest import RabbitNode, free_port, unique, wait_until
from faults import body_of, drain, publish_numbered

COUNT = 5
RETRY = {"initial_backoff": "50ms", "max_backoff": "500ms", "multiplier": 2.0}


def openssl(*args, cwd):
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def make_certificates(directory):
    """A CA and a server certificate for DNS:localhost it signed: (ca, cert, key) paths."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=portico test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost",
        cwd=directory,
    )
    (directory / "server.ext").write_text(
        "subjectAltName = DNS:localhost\n"
        "basicConstraints = CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
        cwd=directory,
    )
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@pytest.fixture
def tls_node(tmp_path):
    """A RabbitMQ node of the test's own with a plain listener (node.port) and a TLS one
    (node.tls_port, no client certificate asked) serving 0-9-1 and AMQP 1.0; node.ca is the
    file of the CA that signed its certificate."""
    ca, cert, key = make_certificates(tmp_path)
    node = RabbitNode()
    try:
        node.tls_port = free_port()
        node_ca, node_cert, node_key = node.add_files(ca, cert, key)
        node.add_config(
            f"listeners.ssl.default = 127.0.0.1:{node.tls_port}\n"
            f"ssl_options.cacertfile = {node_ca}\n"
            f"ssl_options.certfile = {node_cert}\n"
            f"ssl_options.keyfile = {node_key}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )
        node.ca = ca
        node.start()
        listeners = node.cli("rabbitmq-diagnostics", "listeners")
        assert f"port: {node.tls_port}" in listeners and "amqp/ssl" in listeners, listeners
        yield node
    finally:
        node.shutdown()


def render(tls_port, bridges):
    connections = {
        "r091": {
            "protocol": "amqp091",
            "url": f"amqps://guest:guest@localhost:{tls_port}/%2f",
        },
        "r10": {
            "protocol": "amqp10",
            "url": f"amqps://guest:guest@localhost:{tls_port}",
            "flavor": "rabbitmq",
        },
    }
    return f"connections: {json.dumps(connections)}\nbridges: {json.dumps(bridges)}\n"


def bridges(a, b, c, d):
    return [
        {
            "name": "tls-091",
            "source": {"connection": "r091", "queue": a},
            "sink": {"connection": "r091", "exchange": "", "routing_key": b},
            "retry": RETRY,
        },
        {
            "name": "tls-10",
            "source": {"connection": "r10", "queue": c},
            "sink": {"connection": "r10", "queue": d},
            "retry": RETRY,
        },
    ]


def declare(url, *names):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for name in names:
            ch.queue_declare(name, durable=True)
    finally:
        conn.close()


def test_amqps_for_091_and_amqp10(portico, tls_node, monkeypatch):
    """Both bridges cross over TLS: every message arrives once, with its body and id."""
    node = tls_node
    a, b, c, d = (unique(q) for q in ("tls-a", "tls-b", "tls-c", "tls-d"))
    declare(node.url, a, b, c, d)
    publish_numbered(a, range(COUNT), size=64, url=node.url)
    publish_numbered(c, range(COUNT, 2 * COUNT), size=64, url=node.url)

    monkeypatch.setenv("SSL_CERT_FILE", str(node.ca))
    p = portico(render(node.tls_port, bridges(a, b, c, d)))

    got = {b: [], d: []}

    def arrived():
        for queue, messages in got.items():
            messages.extend(drain(queue, url=node.url))
        return all(len(messages) >= COUNT for messages in got.values())

    wait_until(arrived, 30, f"{COUNT} messages on {b} and {d}\n{p.log()[-3000:]}")
    for queue, numbers in ((b, range(COUNT)), (d, range(COUNT, 2 * COUNT))):
        ids = sorted(props.message_id for props, _ in got[queue])
        assert ids == sorted(f"m-{n}" for n in numbers), queue
        for props, body in got[queue]:
            assert body == body_of(int(props.message_id.removeprefix("m-")), 64), props
    totals = node.queue_totals()
    assert totals[a] == totals[c] == 0, totals
    # The node's 0-9-1 connections now are portico's, over TLS. (Its AMQP 1.0 ones, served
    # on the TLS port only, are checked by the test below: they fail without the CA.)
    out = node.cli("rabbitmqctl", "list_connections", "protocol", "ssl", "--no-table-headers")
    rows = {tuple(line.split("\t")) for line in out.splitlines() if line.strip()}
    assert rows == {("{0,9,1}", "true")}, out


def test_amqps_without_the_ca_is_refused(portico, tls_node, monkeypatch):
    """Without SSL_CERT_FILE naming the test's CA, the node's certificate is not trusted:
    neither protocol connects and the log names the certificate problem."""
    node = tls_node
    a, b, c, d = (unique(q) for q in ("tls-a", "tls-b", "tls-c", "tls-d"))
    declare(node.url, a, c)
    publish_numbered(a, range(COUNT), size=64, url=node.url)
    publish_numbered(c, range(COUNT), size=64, url=node.url)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    p = portico(render(node.tls_port, bridges(a, b, c, d)), ready=False)

    def refused():
        status, text = p.http("/readyz")
        sinks = [line for line in text.splitlines() if " sink: waiting: " in line]
        return status == 503 and len(sinks) == 2 and all(
            "certificate verify failed" in line and "self-signed certificate in certificate chain"
            in line for line in sinks
        )
    # Said the way OpenSSL says it, not as a dump of the client library's error values.
    readable = lambda: all("Custom {" not in line for line in p.http("/readyz")[1].splitlines())  # noqa: E731

    wait_until(refused, 20, f"both sinks refused over TLS\n{p.http('/readyz')[1]}")
    assert readable(), p.http("/readyz")[1]
    log = p.log().splitlines()
    for bridge in ("tls-091", "tls-10"):
        assert any(
            f"bridge={bridge} " in line and "certificate verify failed" in line for line in log
        ), f"{bridge}: no certificate error logged\n" + "\n".join(log[-20:])
    # Nothing was taken from the sources.
    totals = node.queue_totals()
    assert totals[a] == totals[c] == COUNT, totals
