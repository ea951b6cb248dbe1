import io

import fastavro
import numpy as np
import pandas as pd
import pytest

from diaflow.alerts import load_schema
from diaflow.alerts.columnar import Column, FieldSpec, column_lists, record_fields, to_columns
from diaflow.alerts.encode import MAX_LAYOUTS, encode_records, varint
from diaflow.errors import BadInputError

SCHEMA = load_schema()


def _fastavro_rows(frame: pd.DataFrame, record: str) -> list[bytes]:
    fields = record_fields(SCHEMA.record(record))
    cols = to_columns(frame, fields, record=record)
    names = [f.name for f in fields]
    parsed = fastavro.parse_schema(SCHEMA.record(record))
    out = []
    for row in zip(*column_lists(cols), strict=True):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, dict(zip(names, row, strict=True)))
        out.append(buf.getvalue())
    return out


def _encode(frame: pd.DataFrame, record: str) -> list[bytes]:
    fields = record_fields(SCHEMA.record(record))
    enc = encode_records(to_columns(frame, fields, record=record), fields)
    assert enc.offsets[-1] == enc.buffer.size
    return [enc.row(i) for i in range(len(frame))]


def _random_frame(
    record: str, n: int, rng: np.random.Generator, null_fraction: float
) -> pd.DataFrame:
    data = {}
    for f in record_fields(SCHEMA.record(record)):
        if f.kind in ("float", "double"):
            a = rng.normal(0, 1e3, n).astype(np.float32 if f.kind == "float" else np.float64)
            a[rng.random(n) < 0.05] = np.inf
            if f.nullable:
                a[rng.random(n) < null_fraction] = np.nan
        elif f.kind == "long":
            a = rng.integers(-(2**62), 2**62, n) >> rng.integers(0, 63, n)
            a[:3] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0]
        elif f.kind == "int":
            a = rng.integers(-(2**31), 2**31, n) >> rng.integers(0, 32, n)
            a[:2] = [-(2**31), 2**31 - 1]
        elif f.kind == "boolean":
            a = rng.random(n) < 0.5
        else:
            a = np.array(rng.choice(["r", "", "ünïcødé ✓", "x" * 70], n), dtype=object)
            if f.nullable:
                a[rng.random(n) < null_fraction] = None
        data[f.name] = a
    return pd.DataFrame(data)


@pytest.mark.parametrize("record", ["diaSource", "diaForcedSource", "diaObject", "ssSource"])
@pytest.mark.parametrize("null_fraction", [0.0, 0.3, 1.0])
def test_same_bytes_as_fastavro(record: str, null_fraction: float) -> None:
    rng = np.random.default_rng(len(record) + int(10 * null_fraction))
    frame = _random_frame(record, 300, rng, null_fraction)
    assert _encode(frame, record) == _fastavro_rows(frame, record)


def test_uncorrelated_nulls_need_many_segments_but_stay_exact() -> None:
    # 60 nullable fields, each null at random: 2**60 layouts, bounded by MAX_LAYOUTS per segment.
    rng = np.random.default_rng(3)
    frame = _random_frame("diaObject", 2000, rng, 0.5)
    assert _encode(frame, "diaObject") == _fastavro_rows(frame, "diaObject")
    assert MAX_LAYOUTS <= 256


def test_varint_matches_avro_zigzag() -> None:
    cases = [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (64, b"\x80\x01"), (-65, b"\x81\x01")]
    cases.append((2**63 - 1, b"\xfe" + b"\xff" * 8 + b"\x01"))
    for value, expected in cases:
        assert varint(value) == expected


def test_nan_is_null_where_nullable_and_kept_where_not() -> None:
    fields = (FieldSpec("a", "float", True), FieldSpec("b", "float", False))
    cols = to_columns(pd.DataFrame({"a": [np.nan, 1.0], "b": [np.nan, 2.0]}), fields, record="r")
    lists = column_lists(cols)
    assert lists[0] == [None, 1.0]
    assert np.isnan(lists[1][0])
    assert lists[1][1] == 2.0
    enc = encode_records(cols, fields)
    assert enc.row(0) == b"\x00" + np.float32(np.nan).tobytes()
    assert enc.row(1) == b"\x02" + np.float32(1).tobytes() + np.float32(2).tobytes()


def test_missing_columns_are_null_or_default() -> None:
    fields = (
        FieldSpec("a", "long", True),
        FieldSpec("b", "int", False),
        FieldSpec("c", "string", False, default="dflt"),
        FieldSpec("d", "double", False),
    )
    lists = column_lists(to_columns(pd.DataFrame(index=range(2)), fields, record="r"))
    assert lists[0] == [None, None]
    assert lists[1] == [0, 0]
    assert lists[2] == ["dflt", "dflt"]
    assert all(np.isnan(lists[3]))


def test_nullable_integer_columns_and_exact_64_bit_ids() -> None:
    fields = (FieldSpec("id", "long", True),)
    big = 2**62 + 1
    frame = pd.DataFrame({"id": pd.array([big, None, 5], dtype="Int64")})
    assert column_lists(to_columns(frame, fields, record="r"))[0] == [big, None, 5]
    objects = pd.DataFrame({"id": np.array([big, None, 5], dtype=object)})
    assert column_lists(to_columns(objects, fields, record="r"))[0] == [big, None, 5]


@pytest.mark.parametrize(
    ("spec", "values", "match"),
    [
        (FieldSpec("n", "int", False), [1, None], r"r\.n: null in a non-nullable int"),
        (FieldSpec("n", "int", False), [2**31], r"r\.n: value outside the 32-bit int range"),
        (FieldSpec("n", "long", True), [1.5, 2.0], r"r\.n: non-integer value"),
        (FieldSpec("n", "long", True), [float(2**60), 1.0], r"r\.n: integer stored as float"),
        (FieldSpec("n", "long", True), ["a", "b"], r"r\.n: expected integers"),
        (FieldSpec("s", "string", True), ["a", 3], r"r\.s: expected strings .*row 1 = 3"),
        (FieldSpec("s", "string", False), ["a", None], r"r\.s: null in a non-nullable string"),
        (FieldSpec("f", "float", True), ["x", "y"], r"r\.f: expected numbers"),
        (FieldSpec("b", "boolean", True), [True, 3], r"r\.b: expected booleans"),
    ],
)
def test_values_that_do_not_fit_name_the_field(
    spec: FieldSpec, values: list[object], match: str
) -> None:
    frame = pd.DataFrame({spec.name: pd.Series(values)})
    with pytest.raises(BadInputError, match=match) as info:
        to_columns(frame, (spec,), record="r")
    assert info.value.reason == "alert_invalid"


def test_rows_selects_and_orders() -> None:
    fields = (FieldSpec("a", "long", False), FieldSpec("s", "string", True))
    frame = pd.DataFrame({"a": [10, 20, 30], "s": ["x", None, "z"]})
    cols = to_columns(frame, fields, record="r", rows=np.array([2, 0, 1]))
    assert column_lists(cols) == [[30, 10, 20], ["z", "x", None]]


def test_empty_frame_encodes_to_nothing() -> None:
    fields = record_fields(SCHEMA.record("diaForcedSource"))
    enc = encode_records(to_columns(pd.DataFrame(), fields, record="r"), fields)
    assert enc.buffer.size == 0
    assert enc.offsets.tolist() == [0]


def test_equal_length_varints_with_a_null_mask() -> None:
    fields = (FieldSpec("id", "long", True), FieldSpec("n", "int", False))
    values = np.array([2**62 + 5, 2**62 + 9, 2**61], dtype=np.int64)
    for null in (np.zeros(3, bool), np.array([False, True, False])):
        cols = [Column(values, null), Column(np.array([300, 301, 302]), None)]
        enc = encode_records(cols, fields)
        for i in range(3):
            expected = (b"\x00" if null[i] else b"\x02" + varint(int(values[i]))) + varint(300 + i)
            assert enc.row(i) == expected
