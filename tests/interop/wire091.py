"""AMQP 0-9-1 field tables as they were on the wire: pika decodes `I` and `l` both as an
int, so `typed_get` hooks pika's table decoder while a message is read and records the tag
letter of every header value."""

import struct
from unittest import mock

import pika.data

from conftest import wait_until

_decode_value = pika.data.decode_value


class Tagged:
    """A decoded field-table value with the tag letter it had on the wire."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value

    def __repr__(self):
        return f"{self.tag}:{self.value!r}"


def _decode_tagged(encoded, offset):
    tag = encoded[offset : offset + 1].decode("latin-1")
    if tag in ("f", "d"):  # pika 1.4 truncates floats and doubles to integers
        fmt, size = (">f", 4) if tag == "f" else (">d", 8)
        return Tagged(tag, struct.unpack_from(fmt, encoded, offset + 1)[0]), offset + 1 + size
    value, offset = _decode_value(encoded, offset)
    return Tagged(tag, value), offset


def plain(value):
    """The value as pika alone would have decoded it."""
    if isinstance(value, Tagged):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def tags(value):
    """The wire types: a tag letter, or (tag, [...]) / (tag, {...}) for arrays and tables."""
    inner = value.value
    if isinstance(inner, list):
        return (value.tag, [tags(v) for v in inner])
    if isinstance(inner, dict):
        return (value.tag, {k: tags(v) for k, v in inner.items()})
    return value.tag


def typed_get(rabbit, queue, count, timeout=30):
    """Like `rabbit.get`, but returns (method, properties, body, header tags): the properties
    carry pika's usual header values, the tags the wire type of each header."""
    got = []

    def enough():
        with mock.patch.object(pika.data, "decode_value", _decode_tagged):
            method, props, body = rabbit.ch.basic_get(queue, auto_ack=True)
        if method:
            raw = props.headers or {}
            props.headers = plain(raw) if props.headers is not None else None
            got.append((method, props, body, {k: tags(v) for k, v in raw.items()}))
        return len(got) >= count

    wait_until(enough, timeout, f"{count} messages on {queue} (got {len(got)})")
    return got
