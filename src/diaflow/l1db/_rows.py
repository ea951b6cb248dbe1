"""DataFrames to database rows and back, with the NULL conventions of ``l1db.schema``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .schema import TableSpec, frame_of


def to_columns(
    df: pd.DataFrame, names: Sequence[str], *, nan_as_none: bool, bool_as_int: bool = False
) -> list[list[Any]]:
    """Python values column by column (a coerced frame). NA always becomes None; NaN too when
    ``nan_as_none`` (PostgreSQL keeps NaN as a value, SQLite turns it into NULL itself).
    ``bool_as_int`` gives 0/1 for flags: Python's sqlite3 binds exact ints several times
    faster than bools, which go through its adapter lookup."""
    out: list[list[Any]] = []
    for name in names:
        s = df[name]
        if isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            out.append(s.to_numpy(dtype=object, na_value=None).tolist())
            continue
        arr = s.to_numpy()
        if arr.dtype == bool and bool_as_int:
            arr = arr.view(np.uint8)
        elif arr.dtype.kind == "f" and nan_as_none:
            bad = np.isnan(arr)
            if bad.any():
                obj = arr.astype(object)
                obj[bad] = None
                out.append(obj.tolist())
                continue
        out.append(arr.tolist())
    return out


def to_rows(
    df: pd.DataFrame,
    names: Sequence[str],
    *,
    nan_as_none: bool,
    bool_as_int: bool = False,
) -> list[tuple[Any, ...]]:
    """Rows as tuples (see :func:`to_columns`)."""
    cols = to_columns(df, names, nan_as_none=nan_as_none, bool_as_int=bool_as_int)
    return list(zip(*cols, strict=True))


def to_frame(rows: Sequence[Sequence[Any]], spec: TableSpec) -> pd.DataFrame:
    """A DataFrame at the table's dtypes from fetched rows in ``spec.names`` order."""
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if n else [() for _ in spec.columns]
    data: dict[str, Any] = {}
    for col, values in zip(spec.columns, cols, strict=True):
        dtype = col.dtype
        if dtype[0] == "I":  # pandas nullable integer
            data[col.name] = pd.array(list(values), dtype=dtype)
        elif dtype == "object":
            arr = np.empty(n, dtype=object)
            arr[:] = [bytes(v) if isinstance(v, memoryview) else v for v in values]
            data[col.name] = arr
        else:
            data[col.name] = np.array(values, dtype=dtype)
    return frame_of(data, spec)
