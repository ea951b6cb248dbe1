"""Table columns as checked, typed arrays for the flat records of the alert schema.

:func:`to_columns` is the validation step of alert building: every column a record's fields
name is converted to the Avro type of its field (int64, float32, float64, bool or str) and
checked as fastavro's validator would (no null in a non-nullable field, ints in range, strings
that are strings), with an error naming the field and the first bad row. NaN becomes null where
the field is nullable and stays NaN where it is not. The resulting :class:`Column` arrays feed
both the dicts of :func:`column_lists` and the encoder of :mod:`.encode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import BadInputError, ConfigError

__all__ = ["Column", "FieldSpec", "column_lists", "record_fields", "slice_columns", "to_columns"]

_KINDS = ("long", "int", "float", "double", "boolean", "string")
_NO_DEFAULT = object()
_INT32 = (-(2**31), 2**31 - 1)
_FLOAT_EXACT_INT = 2**53


@dataclass(frozen=True)
class FieldSpec:
    """One field of a flat Avro record."""

    name: str
    kind: str
    """Avro primitive: long, int, float, double, boolean or string."""
    nullable: bool
    """A two-branch union with ``"null"``."""
    null_branch: int = 0
    """Index of the ``"null"`` branch in the union (0 for ``["null", T]``)."""
    default: Any = _NO_DEFAULT
    """The schema's default, if it declares one."""


@dataclass(frozen=True)
class Column:
    """A field's values for every row, converted and checked."""

    values: NDArray[Any]
    """int64, float32, float64, bool or object (str) by kind; arbitrary where null."""
    null: NDArray[np.bool_] | None
    """True where the value is null; None when no row is."""


def _base_kind(t: Any, where: str) -> str:
    if isinstance(t, dict) and "logicalType" in t:
        t = t["type"]  # e.g. timestamp-micros: the bytes are those of the base type
    if isinstance(t, str) and t in _KINDS:
        return t
    raise ConfigError(f"{where}: type {t!r} is not a primitive the columnar encoder writes")


def record_fields(record: dict[str, Any]) -> tuple[FieldSpec, ...]:
    """The fields of a flat record schema (primitives and ``["null", primitive]`` unions)."""
    out = []
    for f in record["fields"]:
        where = f"{record['name']}.{f['name']}"
        t = f["type"]
        default = f.get("default", _NO_DEFAULT)
        if isinstance(t, list):
            if len(t) != 2 or "null" not in t:
                raise ConfigError(f"{where}: only unions of null and one type are supported")
            null_branch = t.index("null")
            kind = _base_kind(t[1 - null_branch], where)
            out.append(FieldSpec(f["name"], kind, True, null_branch, default))
        else:
            out.append(FieldSpec(f["name"], _base_kind(t, where), False, 0, default))
    return tuple(out)


# ---- conversion and validation ---------------------------------------------------------------


def _invalid(where: str, message: str) -> BadInputError:
    return BadInputError("alert_invalid", f"alert field {where}: {message}")


def _first_bad(series: pd.Series, bad: NDArray[np.bool_]) -> str:
    i = int(np.flatnonzero(bad)[0])
    return f"{int(bad.sum())} rows, first at row {i} = {series.iloc[i]!r}"


def _null_or_none(
    spec: FieldSpec, na: NDArray[np.bool_], series: pd.Series, where: str
) -> NDArray[np.bool_] | None:
    """The null mask (None if no null), or an error if the field cannot be null."""
    if not na.any():
        return None
    if not spec.nullable:
        bad = _first_bad(series, na)
        raise _invalid(where, f"null in a non-nullable {spec.kind} field ({bad})")
    return na


def _float_column(series: pd.Series, spec: FieldSpec, where: str) -> Column:
    dtype = np.float32 if spec.kind == "float" else np.float64
    if series.dtype == dtype:
        arr = series.to_numpy()
    else:
        try:
            arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise _invalid(where, f"expected numbers, got dtype {series.dtype} ({exc})") from None
    na = np.isnan(arr)
    # NaN is a value Avro floats can carry: it becomes null only where the field is nullable.
    null = na if spec.nullable and na.any() else None
    return Column(arr.astype(dtype, copy=False), null)


def _int_column(series: pd.Series, spec: FieldSpec, where: str) -> Column:
    kind = series.dtype.kind if isinstance(series.dtype, np.dtype) else "?"  # "?": extension
    null = None
    if kind in "iub":
        arr = series.to_numpy()
        if kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise _invalid(where, "value beyond the int64 range")
        values = arr.astype(np.int64)
    elif kind == "f":
        as_float = series.to_numpy()
        na = np.isnan(as_float)
        null = _null_or_none(spec, na, series, where)
        as_float = np.where(na, 0.0, as_float)
        bad = (as_float != np.floor(as_float)) | ~np.isfinite(as_float)
        if bad.any():
            raise _invalid(where, f"non-integer value ({_first_bad(series, bad)})")
        big = np.abs(as_float) >= _FLOAT_EXACT_INT
        if big.any():
            raise _invalid(
                where,
                "integer stored as float beyond 2**53 loses digits "
                f"({_first_bad(series, big)}); keep 64-bit ids in an int64 or Int64 column",
            )
        values = as_float.astype(np.int64)
    else:  # pandas nullable integers, or objects: exact for Python ints, refuses 1.5 or "a"
        try:
            series = series.astype("Int64")
        except (TypeError, ValueError) as exc:
            raise _invalid(where, f"expected integers, got dtype {series.dtype} ({exc})") from None
        na = series.isna().to_numpy()
        null = _null_or_none(spec, na, series, where)
        values = series.to_numpy(dtype=np.int64, na_value=0)
    if spec.kind == "int" and values.size:
        bad = (values < _INT32[0]) | (values > _INT32[1])
        if bad.any():
            raise _invalid(where, f"value outside the 32-bit int range ({_first_bad(series, bad)})")
    return Column(values, null)


def _bool_column(series: pd.Series, spec: FieldSpec, where: str) -> Column:
    if series.dtype == bool:
        return Column(series.to_numpy(), None)
    na = series.isna().to_numpy()
    null = _null_or_none(spec, na, series, where)
    present = series[~na]
    if series.dtype != "boolean" and not present.isin([True, False]).all():
        bad = ~na & ~series.isin([True, False]).to_numpy()
        raise _invalid(where, f"expected booleans ({_first_bad(series, bad)})")
    values = series.astype(object).where(~na, False).to_numpy(dtype=bool)
    return Column(values, null)


def _string_column(series: pd.Series, spec: FieldSpec, where: str) -> Column:
    values = series.to_numpy(dtype=object)
    na = pd.isna(values)
    null = _null_or_none(spec, na, series, where)
    inferred = pd.api.types.infer_dtype(values[~na], skipna=False)
    if inferred not in ("string", "empty"):
        bad = np.array([not (n or isinstance(v, str)) for v, n in zip(values, na, strict=True)])
        raise _invalid(where, f"expected strings ({_first_bad(series, bad)})")
    return Column(values, null)


_CONVERT: dict[str, Callable[[pd.Series, FieldSpec, str], Column]] = {
    "float": _float_column,
    "double": _float_column,
    "long": _int_column,
    "int": _int_column,
    "boolean": _bool_column,
    "string": _string_column,
}
_ZERO: dict[str, Any] = {
    "float": np.nan,
    "double": np.nan,
    "long": 0,
    "int": 0,
    "boolean": False,
    "string": "",
}
_DTYPE = {
    "float": np.float32,
    "double": np.float64,
    "long": np.int64,
    "int": np.int64,
    "boolean": bool,
    "string": object,
}


def _missing_column(spec: FieldSpec, n: int) -> Column:
    if spec.nullable and (spec.default is None or spec.default is _NO_DEFAULT):
        return Column(np.zeros(n, dtype=_DTYPE[spec.kind]), np.ones(n, dtype=bool))
    value = spec.default if spec.default is not _NO_DEFAULT else _ZERO[spec.kind]
    return Column(np.full(n, value, dtype=_DTYPE[spec.kind]), None)


def _rows_of(series: pd.Series, rows: NDArray[np.intp] | None) -> pd.Series:
    if rows is None:
        return series
    if isinstance(series.dtype, np.dtype):  # numpy's take: several times faster than pandas'
        return pd.Series(series.to_numpy()[rows], copy=False)
    return series.take(rows).reset_index(drop=True)


def to_columns(
    frame: pd.DataFrame,
    fields: Sequence[FieldSpec],
    *,
    record: str,
    rows: NDArray[np.intp] | None = None,
) -> list[Column]:
    """Convert and check the columns of ``frame`` for the fields of a record, in field order.

    Columns are matched by name; extra columns are ignored. A field the frame lacks is null
    where the schema allows it, else its schema default, else NaN / 0 / False / "". With
    ``rows`` (positions), only those rows are taken, in that order.

    Raises
    ------
    BadInputError
        ``alert_invalid``: a value that does not fit its field (type, null in a non-nullable
        field, int out of range), with the field and the first offending row named.
    """
    n = len(frame) if rows is None else rows.size
    out = []
    for spec in fields:
        if spec.name in frame.columns:
            series = _rows_of(frame[spec.name], rows)
            out.append(_CONVERT[spec.kind](series, spec, f"{record}.{spec.name}"))
        else:
            out.append(_missing_column(spec, n))
    return out


def slice_columns(columns: Sequence[Column], start: int, stop: int) -> list[Column]:
    """Rows ``start:stop`` of every column (views, no copy)."""
    return [
        Column(c.values[start:stop], None if c.null is None else c.null[start:stop])
        for c in columns
    ]


def column_lists(columns: Sequence[Column]) -> list[list[Any]]:
    """Each column as a Python list with None where null (to build fastavro-ready dicts)."""
    out = []
    for col in columns:
        values = col.values.tolist()
        if col.null is not None:
            for i in np.flatnonzero(col.null).tolist():
                values[i] = None
        out.append(values)
    return out
