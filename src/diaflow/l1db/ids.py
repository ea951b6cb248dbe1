"""64-bit ids that say where they came from: (generation, visit, detector, index).

Layout, most significant first (bit 63 stays 0, so every id is a positive int64)::

    generation  5 bits   0..31     the Level 1 database generation that made the row
    visit      36 bits             the visit whose processing made the row, compacted (below)
    detector    8 bits   0..255
    index      14 bits   0..16383  the row's number within that visit-detector

DiaSource ids use this layout directly; a DiaObject takes the id of its first DiaSource (as Rubin
does); DiaForcedSource ids use the visit-detector whose processing measured them (precovery rows
included), numbered after that visit's DiaSources. Ids are therefore unique across nights and
generations without any central counter, and decoding one needs no database.

Visit ids below 2**35 are stored as they are. Rubin-style ids ``dayobs * 100000 + seq`` (dayobs
a YYYYMMDD date) are compacted to ``2**35 | days_since_1970 << 19 | seq`` and expanded back on
decoding, so both kinds round-trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import BadInputError

__all__ = ["IdParts", "compact_visit", "expand_visit", "make_ids", "pack_id", "unpack_id"]

GENERATION_BITS, VISIT_BITS, DETECTOR_BITS, INDEX_BITS = 5, 36, 8, 14
_INDEX_SHIFT = 0
_DETECTOR_SHIFT = INDEX_BITS
_VISIT_SHIFT = _DETECTOR_SHIFT + DETECTOR_BITS
_GENERATION_SHIFT = _VISIT_SHIFT + VISIT_BITS
_RUBIN_FLAG = 2**35
_SEQ_BITS = 19
_EPOCH = np.datetime64("1970-01-01", "D")
MAX_GENERATION = 2**GENERATION_BITS - 1
MAX_VISIT = 2**VISIT_BITS - 1
MAX_DETECTOR = 2**DETECTOR_BITS - 1
MAX_INDEX = 2**INDEX_BITS - 1


@dataclass(frozen=True)
class IdParts:
    """What an id decodes to."""

    generation: int
    visit: int
    detector: int
    index: int


def compact_visit(visit: int) -> int:
    """The 36-bit form of a visit id (see the module docstring)."""
    if 0 <= visit < _RUBIN_FLAG:
        return visit
    dayobs, seq = divmod(visit, 100_000)
    try:
        day = np.datetime64(f"{dayobs // 10000:04d}-{dayobs // 100 % 100:02d}-{dayobs % 100:02d}")
        days = int((day - _EPOCH).astype(int))
    except ValueError:
        days = -1
    if not 0 <= days < 2**16 or dayobs < 19700101:
        raise BadInputError(
            "ids_overflow",
            f"visit {visit} is neither below 2**35 nor a Rubin-style dayobs*100000+seq id",
        )
    return _RUBIN_FLAG | days << _SEQ_BITS | seq


def expand_visit(compact: ArrayLike) -> NDArray[np.int64]:
    """Inverse of :func:`compact_visit`, element-wise."""
    c = np.asarray(compact, dtype=np.int64)
    rubin = c >= _RUBIN_FLAG
    day = _EPOCH + ((c >> _SEQ_BITS) & 0xFFFF).astype("timedelta64[D]")
    year = day.astype("datetime64[Y]").astype(np.int64) + 1970
    month = day.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dom = (day - day.astype("datetime64[M]")).astype(np.int64) + 1
    dayobs = year * 10000 + month * 100 + dom
    return np.where(rubin, dayobs * 100_000 + (c & (2**_SEQ_BITS - 1)), c)


def _check(generation: int, visit: int, detector: int, first: int, n: int) -> None:
    if not 0 <= generation <= MAX_GENERATION:
        raise BadInputError(
            "ids_overflow", f"generation {generation} is outside 0..{MAX_GENERATION}"
        )
    if not 0 <= detector <= MAX_DETECTOR:
        raise BadInputError("ids_overflow", f"detector {detector} is outside 0..{MAX_DETECTOR}")
    if first < 0 or first + n - 1 > MAX_INDEX:
        raise BadInputError(
            "ids_overflow",
            f"visit {visit}/{detector}: rows {first}..{first + n - 1} exceed {MAX_INDEX + 1} per "
            "visit-detector",
        )


def pack_id(generation: int, visit: int, detector: int, index: int) -> int:
    """One id from its parts."""
    _check(generation, visit, detector, index, 1)
    return (
        (generation << _GENERATION_SHIFT)
        | (compact_visit(visit) << _VISIT_SHIFT)
        | (detector << _DETECTOR_SHIFT)
        | (index << _INDEX_SHIFT)
    )


def make_ids(
    generation: int, visit: int, detector: int, n: int, *, first: int = 0
) -> NDArray[np.int64]:
    """``n`` consecutive ids of one visit-detector, from index ``first``."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    base = pack_id(generation, visit, detector, first)
    _check(generation, visit, detector, first, n)
    return base + np.arange(n, dtype=np.int64)


def unpack_id(ids: ArrayLike) -> IdParts:
    """Parts of one id, or arrays of parts for an array of ids."""
    a = np.asarray(ids, dtype=np.int64)
    parts = (
        (a >> _GENERATION_SHIFT) & MAX_GENERATION,
        expand_visit((a >> _VISIT_SHIFT) & MAX_VISIT),
        (a >> _DETECTOR_SHIFT) & MAX_DETECTOR,
        a & MAX_INDEX,
    )
    if a.ndim == 0:
        return IdParts(*(int(p) for p in parts))
    return IdParts(*parts)  # type: ignore[arg-type]
