"""64-bit ids: round trip, uniqueness, and overflow errors that say what to do."""

from __future__ import annotations

import numpy as np
import pytest

from diaflow.errors import BadInputError
from diaflow.l1db import compact_visit, expand_visit, make_ids, pack_id, unpack_id
from diaflow.l1db.ids import MAX_DETECTOR, MAX_GENERATION, MAX_INDEX


@pytest.mark.parametrize(
    ("generation", "visit", "detector", "index"),
    [(0, 0, 0, 0), (31, 2**35 - 1, 255, 16383), (3, 123456, 94, 17), (1, 7, 0, 16383)],
)
def test_pack_unpack_round_trip(generation: int, visit: int, detector: int, index: int) -> None:
    i = pack_id(generation, visit, detector, index)
    assert 0 <= i < 2**63
    parts = unpack_id(i)
    assert (parts.generation, parts.visit, parts.detector, parts.index) == (
        generation,
        visit,
        detector,
        index,
    )


def test_make_ids_are_consecutive_and_decode_as_arrays() -> None:
    ids = make_ids(2, 99, 5, 1000, first=10)
    assert ids.dtype == np.int64
    assert np.all(np.diff(ids) == 1)
    parts = unpack_id(ids)
    assert np.all(parts.generation == 2)
    assert np.all(parts.visit == 99)
    assert np.all(parts.detector == 5)
    assert parts.index.tolist() == list(range(10, 1010))
    assert make_ids(2, 99, 5, 0).size == 0


def test_ids_are_unique_across_generations_visits_and_detectors() -> None:
    ids = np.concatenate(
        [make_ids(g, v, d, 50) for g in (0, 1) for v in (1, 2, 2**35 - 1) for d in (0, 255)]
    )
    assert len(np.unique(ids)) == len(ids)


def test_rubin_visit_ids_round_trip() -> None:
    visit = 2025_06_15 * 100_000 + 1234
    c = compact_visit(visit)
    assert c < 2**36
    assert int(expand_visit(c)) == visit
    assert int(unpack_id(pack_id(1, visit, 3, 4)).visit) == visit


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((MAX_GENERATION + 1, 1, 0, 0), "generation 32"),
        ((-1, 1, 0, 0), "generation -1"),
        ((0, 1, MAX_DETECTOR + 1, 0), "detector 256"),
        ((0, 1, 0, MAX_INDEX + 1), "exceed 16384 per visit-detector"),
        ((0, 99999999 * 100_000, 0, 0), "neither below 2\\*\\*35 nor a Rubin-style"),
    ],
)
def test_overflow_is_refused_with_a_reason(args: tuple[int, int, int, int], match: str) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        pack_id(*args)
    assert info.value.reason == "ids_overflow"


def test_make_ids_refuses_a_visit_with_too_many_rows() -> None:
    with pytest.raises(BadInputError, match=r"rows 16000\.\.16399"):
        make_ids(0, 1, 0, 400, first=16000)
