"""Confluent wire format for alert packets: magic byte, schema id, schemaless Avro body.

A packet is ``0x00`` + the schema id as a 4-byte big-endian integer (``major * 100 + minor``)
+ the record encoded by Avro's binary encoding without a container (fastavro
``schemaless_writer``). This is what Rubin's alert stream carries on Kafka and what brokers
decode with the schema registry. Avro's binary encoding is canonical for a given record and
schema, so serialize -> deserialize -> serialize gives back the same bytes.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Any

import fastavro
from fastavro.validation import validate as _fastavro_validate

from ..errors import BadInputError
from .schema import AlertSchema, load_schema, schema_for_id

__all__ = ["WIRE_MAGIC", "deserialize", "serialize", "split_wire", "validate", "wire_header"]

WIRE_MAGIC = 0
"""First byte of a Confluent wire-format message."""

_HEADER = struct.Struct(">bI")


def wire_header(schema_id: int) -> bytes:
    """The 5-byte prefix of a packet: magic byte and big-endian schema id."""
    return _HEADER.pack(WIRE_MAGIC, schema_id)


def split_wire(payload: bytes | memoryview) -> tuple[int, memoryview]:
    """(schema id, Avro body) of a wire-format packet.

    Raises
    ------
    BadInputError
        ``alert_wire_format`` if the packet is shorter than 5 bytes or its magic byte is not 0.
    """
    view = memoryview(payload)
    if len(view) < _HEADER.size or view[0] != WIRE_MAGIC:
        first = bytes(view[:1]).hex() or "nothing"
        raise BadInputError(
            "alert_wire_format",
            f"not a Confluent wire-format packet: {len(view)} bytes starting with {first} "
            "(expected magic byte 00 and a 4-byte schema id)",
        )
    _, schema_id = _HEADER.unpack(view[: _HEADER.size])
    return int(schema_id), view[_HEADER.size :]


def _locate(value: Any, schema: Any, named: dict[str, Any], path: str) -> str | None:
    """The dotted path of the deepest field where ``value`` does not fit ``schema``."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, dict) and schema.get("type") == "record":
        named.setdefault(schema["name"], schema)
        if not isinstance(value, Mapping):
            return path or "<record>"
        for f in schema["fields"]:
            where = f"{path}.{f['name']}" if path else f["name"]
            if f["name"] not in value and "default" in f:
                continue
            deeper = _locate(value.get(f["name"]), f["type"], named, where)
            if deeper is not None:
                return deeper
        return None
    if isinstance(schema, list):  # union: fine if any branch fits
        fits = [b for b in schema if _locate(value, b, dict(named), path) is None]
        if fits:
            return None
        if value is not None:
            branch = next((b for b in schema if b != "null"), None)
            if branch is not None:
                return _locate(value, branch, named, path)
        return path
    if isinstance(schema, dict) and schema.get("type") == "array":
        if not isinstance(value, list):
            return path
        for i, item in enumerate(value):
            deeper = _locate(item, schema["items"], named, f"{path}[{i}]")
            if deeper is not None:
                return deeper
        return None
    try:
        ok = _fastavro_validate(value, schema, raise_errors=False)
    except Exception:  # fastavro raises on values it cannot even inspect
        ok = False
    return None if ok else path


def validate(alert: Mapping[str, Any], *, schema: AlertSchema | None = None) -> None:
    """Check an alert dict against the schema with fastavro's validator.

    Raises
    ------
    BadInputError
        ``alert_invalid``, naming the first field that does not fit, e.g.
        ``diaSource.psfNdata`` or ``prvDiaSources[3].band``, and the value found there.
    """
    schema = schema or load_schema()
    if fastavro.validate(alert, schema.parsed, raise_errors=False):
        return
    path = _locate(alert, schema.definition, {}, "") or "<alert>"
    value: Any = alert
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            value = value[int(part[1:-1])] if isinstance(value, list) else None
        elif isinstance(value, Mapping):
            value = value.get(part)
    raise BadInputError(
        "alert_invalid",
        f"alert {alert.get('diaSourceId')!r} does not fit schema {schema.version}: field {path} "
        f"= {value!r:.80} has the wrong type or is missing",
        field=path,
    )


def serialize(alert: Mapping[str, Any], *, schema: AlertSchema | None = None) -> bytes:
    """Encode one alert dict as a Confluent wire-format packet (fastavro).

    Raises
    ------
    BadInputError
        ``alert_invalid`` (from :func:`validate`) if the dict does not fit the schema.
    """
    schema = schema or load_schema()
    buf = io.BytesIO()
    buf.write(wire_header(schema.schema_id))
    try:
        fastavro.schemaless_writer(buf, schema.parsed, alert)
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
        validate(alert, schema=schema)  # raises with the field's name
        raise
    return buf.getvalue()


def deserialize(
    payload: bytes | memoryview, *, schema: AlertSchema | None = None
) -> dict[str, Any]:
    """Decode a wire-format packet into an alert dict.

    The schema is the one its header names, unless ``schema`` is given (then the ids must match).

    Raises
    ------
    BadInputError
        ``alert_wire_format`` for a bad header, an id that differs from ``schema``'s, or a body
        that does not decode with the schema.
    """
    schema_id, body = split_wire(payload)
    if schema is None:
        schema = schema_for_id(schema_id)
    elif schema.schema_id != schema_id:
        raise BadInputError(
            "alert_wire_format",
            f"packet has schema id {schema_id}, expected {schema.schema_id} ({schema.version})",
        )
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, schema.parsed, None)
    except (EOFError, ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise BadInputError(
            "alert_wire_format",
            f"packet body does not decode with schema {schema.version}: {exc!r}",
        ) from exc
    if stream.tell() != len(body):
        raise BadInputError(
            "alert_wire_format",
            f"packet body has {len(body) - stream.tell()} bytes after the record "
            f"(schema {schema.version}); wrong schema id?",
        )
    return record  # type: ignore[return-value]
