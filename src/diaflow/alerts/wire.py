"""Assemble wire-format alert packets from encoded records and cutouts, without fastavro.

An Avro record is its fields' encodings end to end, so a packet is the wire header followed by,
for each top-level field of the alert schema in order: the ``diaSourceId`` varint; the
``diaSource`` record; each nullable field's union index then its value (a record, an array as one
block ``count, items, 0``, or ``bytes`` as ``length, data``), or the null branch's index alone.
The records come from :func:`~diaflow.alerts.encode.encode_records`, one call per field for a
whole chunk of alerts, and each packet is one ``bytes.join`` of views into those buffers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from .columnar import Column, FieldSpec, record_fields
from .cutouts import Cutouts
from .encode import Encoded, encode_records, varint
from .schema import AlertSchema

__all__ = ["TopField", "alert_fields", "emit_packets"]

_ID_SPEC = (FieldSpec("diaSourceId", "long", False),)


@dataclass(frozen=True)
class TopField:
    """A field of the alert record and the bytes of its union branches."""

    name: str
    nullable: bool
    null: bytes
    """Bytes written for a null value (the null branch's index); empty if not nullable."""
    value: bytes
    """Bytes written before a value (the other branch's index); empty if not nullable."""
    record: str | None
    """Short name of the record it holds (directly or as array items), if any."""


def _record_name(t: Any) -> str | None:
    if isinstance(t, dict) and t.get("type") == "array":
        return _record_name(t["items"])
    if isinstance(t, dict) and t.get("type") == "record":
        return str(t["name"]).rsplit(".", 1)[-1]
    if isinstance(t, str) and "." in t:
        return t.rsplit(".", 1)[-1]
    return None


def alert_fields(schema: AlertSchema) -> list[TopField]:
    """The top-level fields of the schema's alert record, in order."""
    out = []
    for f in schema.record("alert")["fields"]:
        t = f["type"]
        if isinstance(t, list):
            if len(t) != 2 or "null" not in t:
                raise ConfigError(f"alert.{f['name']}: unions other than [null, T] not supported")
            k = t.index("null")
            out.append(TopField(f["name"], True, varint(k), varint(1 - k), _record_name(t[1 - k])))
        else:
            out.append(TopField(f["name"], False, b"", b"", _record_name(t)))
    return out


def _views(encoded: Encoded) -> list[memoryview]:
    mv = memoryview(encoded.buffer)
    o = encoded.offsets.tolist()
    return [mv[a:b] for a, b in itertools.pairwise(o)]


def _records(f: TopField, encoded: Encoded, counts: NDArray[np.int64]) -> list[tuple[Any, ...]]:
    bodies = iter(_views(encoded))
    out: list[tuple[Any, ...]] = []
    for k in counts.tolist():
        if k:
            out.append((f.value, next(bodies)))
        elif f.nullable:
            out.append((f.null,))
        else:
            raise ConfigError(f"alert field {f.name} is required but an alert has no row for it")
    return out


def _arrays(f: TopField, encoded: Encoded, counts: NDArray[np.int64]) -> list[tuple[Any, ...]]:
    mv = memoryview(encoded.buffer)
    bounds = encoded.offsets[np.concatenate([[0], np.cumsum(counts)])].tolist()
    out: list[tuple[Any, ...]] = []
    for a, b, k in zip(bounds[:-1], bounds[1:], counts.tolist(), strict=True):
        if k:
            out.append((f.value, varint(k), mv[a:b], b"\x00"))
        else:  # no prior row: null, as Rubin sends (or an empty array where null is not allowed)
            out.append((f.null,) if f.nullable else (b"\x00",))
    return out


def emit_packets(
    header: bytes,
    fields: Sequence[TopField],
    ids: NDArray[np.int64],
    columns: Mapping[str, list[Column]],
    counts: Mapping[str, NDArray[np.int64]],
    cutouts: Mapping[str, Cutouts],
    schema: AlertSchema,
) -> list[bytes]:
    """The wire-format packets of a chunk of alerts.

    Parameters
    ----------
    header
        The 5-byte wire header.
    fields
        :func:`alert_fields` of ``schema``.
    ids
        ``diaSourceId`` of each alert, shape (n,).
    columns, counts
        Per alert field holding records (``diaSource``, ``diaObject``, ``ssSource``,
        ``prvDiaSources``, ``prvDiaForcedSources``): the checked columns of its rows, alert by
        alert, and how many rows each alert owns (0 or 1 for a record, any for an array).
    cutouts
        Per cutout field (``cutoutScience``, ...), one FITS file per alert.
    """
    n = ids.size
    packets: list[list[Any]] = [[header] for _ in range(n)]
    for f in fields:
        pieces: Sequence[tuple[Any, ...]]
        if f.name == "diaSourceId":
            pieces = [(v,) for v in _views(encode_records([Column(ids, None)], _ID_SPEC))]
        elif f.name in columns:
            if f.record is None:
                raise ConfigError(f"alert field {f.name} holds no record in {schema.version}")
            encoded = encode_records(columns[f.name], record_fields(schema.record(f.record)))
            is_array = f.name.startswith("prv")
            pieces = (_arrays if is_array else _records)(f, encoded, counts[f.name])
        elif f.name in cutouts:
            prefix = f.value + varint(cutouts[f.name].files.shape[1])
            pieces = [(prefix, v) for v in cutouts[f.name].views()]
        elif f.nullable:
            pieces = [(f.null,)] * n
        else:
            raise ConfigError(f"alert schema {schema.version}: nothing fills field {f.name!r}")
        for packet, piece in zip(packets, pieces, strict=True):
            packet.extend(piece)
    return [b"".join(p) for p in packets]
