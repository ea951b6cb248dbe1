"""Tables of the Level 1 database: Rubin APDB columns from ``lsst-sdm-schemas``, plus our own.

Column names, datatypes, nullability and units of the science tables are read from the
``apdb.yaml`` that PyPI ``lsst-sdm-schemas`` ships, so they cannot drift from Rubin's:

============== =====================================================================
DiaObject      every apdb.yaml DiaObject column; one row per *version*
DiaObjectLast  the same columns, the latest version of every live DiaObject
DiaSource      the columns the measurement stage fills (``measure.schema``) plus
               ``diaObjectId``, ``ssObjectId`` and ``timeWithdrawnMjdTai``
DiaForcedSource, SSObject, SSSource   every apdb.yaml column
============== =====================================================================

diaflow adds ``Visit`` (processing state and provenance of each visit-detector), ``Outbox`` (alert
packets of a stored visit not yet archived) and APDB's ``metadata`` key/value table.

Types in pandas: ``long``/``int``/``short`` are int64/int32/int16, ``float`` float32, ``double``
float64, ``boolean`` bool, ``char``/``string``/``text`` object (str or None), ``binary`` bytes.
NULL conventions, identical on both backends:

- float columns: NaN is NULL (written as NULL, read back as NaN);
- *nullable* integer columns (``DiaSource.diaObjectId``, ``DiaSource.ssObjectId``,
  ``SSSource.diaDistanceRank``) use pandas' nullable ``Int64``/``Int16``: ``pd.NA`` is NULL.
  A DiaSource attributed to a solar-system object has ``diaObjectId`` NA, never 0;
- boolean flags are plain bool: a NULL reads back as False (the measurement stage always
  fills them);
- strings: None is NULL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import BadInputError
from ..measure.schema import DIA_SOURCE_COLUMNS

__all__ = [
    "SCHEMA_VERSION",
    "TABLE_NAMES",
    "Column",
    "TableSpec",
    "apdb_version",
    "coerce",
    "empty",
    "frame_of",
    "table_spec",
]

SCHEMA_VERSION = "1"
"""Version of diaflow's table layout, stored in each database's metadata."""

_NUMPY = {
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "float": "float32",
    "double": "float64",
    "boolean": "bool",
    "char": "object",
    "string": "object",
    "text": "object",
    "binary": "object",
}
_NULLABLE_INT = {"long": "Int64", "int": "Int32", "short": "Int16"}


@dataclass(frozen=True, kw_only=True)
class Column:
    """One column: its APDB (felis) datatype and what that means in pandas and SQL."""

    name: str
    datatype: str
    """Felis datatype: long, int, short, float, double, boolean, char, string, text, binary."""
    nullable: bool = True
    unit: str = ""
    """Unit from apdb.yaml (``nJy``, ``deg``, ...), for documentation."""
    description: str = ""

    @property
    def dtype(self) -> str:
        """The pandas dtype of this column (see the module docstring for NULLs)."""
        if self.nullable and self.datatype in _NULLABLE_INT:
            return _NULLABLE_INT[self.datatype]
        return _NUMPY[self.datatype]


@dataclass(frozen=True, kw_only=True)
class TableSpec:
    """A table: ordered columns and primary key."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    spatial: bool = False
    """Has ``ra``/``dec`` and a spatial index (zones on SQLite, q3c on PostgreSQL)."""

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    @property
    def dtypes(self) -> dict[str, str]:
        """Column name to pandas dtype."""
        return {c.name: c.dtype for c in self.columns}

    def column(self, name: str) -> Column:
        """One column by name."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


@functools.cache
def _apdb() -> tuple[str, dict[str, dict[str, Column]]]:
    text = resources.files("lsst.sdm.schemas").joinpath("apdb.yaml").read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(text, Loader=loader)
    tables: dict[str, dict[str, Column]] = {}
    for t in doc["tables"]:
        tables[t["name"]] = {
            c["name"]: Column(
                name=c["name"],
                datatype=c["datatype"],
                nullable=c.get("nullable", True),
                unit=c.get("fits:tunit", c.get("ivoa:unit", "")) or "",
                description=" ".join(str(c.get("description", "")).split()),
            )
            for c in t["columns"]
        }
    return str(doc.get("version", "")), tables


def apdb_version() -> str:
    """Version of the apdb.yaml the tables were read from."""
    return _apdb()[0]


def _from_apdb(table: str, names: list[str] | None = None) -> tuple[Column, ...]:
    cols = _apdb()[1][table]
    if names is None:
        return tuple(cols.values())
    missing = [n for n in names if n not in cols]
    if missing:
        raise KeyError(f"apdb.yaml {table} has no columns {missing}")
    return tuple(cols[n] for n in names)


def _own(*cols: tuple[str, str, bool]) -> tuple[Column, ...]:
    return tuple(Column(name=n, datatype=t, nullable=null) for n, t, null in cols)


DIA_SOURCE_NAMES = [
    "diaSourceId",
    "diaObjectId",
    "ssObjectId",
    *[c for c in DIA_SOURCE_COLUMNS if c != "diaSourceId"],
    "timeWithdrawnMjdTai",
]
"""DiaSource columns stored: the measurement stage's, plus association and withdrawal."""

_ALERT_COLUMNS = (
    ("diaSourceId", "long", False),
    ("visit", "long", False),
    ("detector", "short", False),
    ("payload", "binary", False),
    ("schema_id", "int", False),
    ("software_version", "text", False),
    ("generation", "text", False),
    ("issuedMjdTai", "double", False),
)


@functools.cache
def _specs() -> dict[str, TableSpec]:
    dia_object = _from_apdb("DiaObject")
    specs = [
        TableSpec(
            name="DiaObject",
            columns=dia_object,
            primary_key=("diaObjectId", "validityStartMjdTai"),
        ),
        TableSpec(
            name="DiaObjectLast", columns=dia_object, primary_key=("diaObjectId",), spatial=True
        ),
        TableSpec(
            name="DiaSource",
            columns=_from_apdb("DiaSource", DIA_SOURCE_NAMES),
            primary_key=("diaSourceId",),
            spatial=True,
        ),
        TableSpec(
            name="DiaForcedSource",
            columns=_from_apdb("DiaForcedSource"),
            primary_key=("diaForcedSourceId",),
            spatial=True,
        ),
        TableSpec(name="SSObject", columns=_from_apdb("SSObject"), primary_key=("ssObjectId",)),
        TableSpec(name="SSSource", columns=_from_apdb("SSSource"), primary_key=("diaSourceId",)),
        TableSpec(
            name="Visit",
            columns=_own(
                ("visit", "long", False),
                ("detector", "short", False),
                ("band", "char", False),
                ("midpointMjdTai", "double", False),
                ("state", "text", False),
                ("reason", "text", False),
                ("n_dia_sources", "int", False),
                ("n_new_dia_objects", "int", False),
                ("n_alerts", "int", False),
                ("software_version", "text", True),
                ("config_hash", "text", True),
                ("template_version", "text", True),
                ("source_path", "text", False),
            ),
            primary_key=("visit", "detector"),
        ),
        TableSpec(name="Outbox", columns=_own(*_ALERT_COLUMNS), primary_key=("diaSourceId",)),
        TableSpec(name="Alert", columns=_own(*_ALERT_COLUMNS), primary_key=("diaSourceId",)),
        TableSpec(
            name="metadata",
            columns=_own(("name", "text", False), ("value", "text", False)),
            primary_key=("name",),
        ),
    ]
    return {s.name: s for s in specs}


TABLE_NAMES = (
    "DiaObject",
    "DiaObjectLast",
    "DiaSource",
    "DiaForcedSource",
    "SSObject",
    "SSSource",
    "Visit",
    "Outbox",
    "metadata",
)
"""Tables of one generation (the ``Alert`` table lives in the archive, outside every one)."""


def table_spec(name: str) -> TableSpec:
    """The definition of one table (``Alert`` included)."""
    try:
        return _specs()[name]
    except KeyError:
        raise BadInputError(
            "unknown_table", f"no L1 table {name!r}; tables are {[*TABLE_NAMES, 'Alert']}"
        ) from None


def _null_series(col: Column, n: int) -> pd.Series:
    """A column of NULLs: NaN, NA, None, False for flags; 0 for a non-nullable integer."""
    dtype = col.dtype
    if dtype.startswith("float"):
        return pd.Series(np.full(n, np.nan, dtype=dtype))
    if dtype[0] == "I":  # pandas nullable integer
        return pd.Series(pd.array([pd.NA] * n, dtype=dtype))
    if dtype == "bool" or dtype.startswith("int"):
        return pd.Series(np.zeros(n, dtype=dtype))
    return pd.Series(np.full(n, None, dtype=object), dtype=object)


def _cast(values: pd.Series, col: Column, table: str) -> Any:
    """One column as an array of the column's dtype (numpy, or pandas for nullable ints)."""
    target = col.dtype
    src = values.dtype
    if isinstance(src, np.dtype) and src.kind in "biuf" and target[0] in "fib":
        arr = values.to_numpy()
        if target == "bool":
            return arr if src.kind == "b" else np.nan_to_num(arr, nan=0.0) != 0
        if target[0] == "i" and src.kind == "f" and not np.isfinite(arr).all():
            raise BadInputError(
                "bad_column",
                f"{table}.{col.name}: NaN or inf in a non-nullable {target} column",
            )
        return arr if src == target else arr.astype(target)
    try:
        if col.datatype == "boolean":
            return values.where(values.notna(), False).astype(bool).to_numpy()
        if target == "object":
            return values.astype(object).where(values.notna(), None).to_numpy()
        return values.astype(target).array
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            "bad_column",
            f"{table}.{col.name}: cannot be read as {target} ({exc}); "
            "non-nullable integer columns cannot hold NaN",
        ) from exc


def coerce(df: pd.DataFrame, table: str | TableSpec, *, drop_extra: bool = False) -> pd.DataFrame:
    """A table's columns, in order and at their dtypes, from any DataFrame.

    Missing nullable columns are filled with NULL (NaN, NA, None, False for flags); missing
    non-nullable counts (``int`` columns such as ``nDiaSources``) with 0.

    Raises
    ------
    BadInputError
        ``unknown_columns`` for columns the table does not have (unless ``drop_extra``),
        ``missing_columns`` for absent non-nullable columns, ``null_in_required`` for NULLs
        in a non-nullable column, ``bad_column`` for values that cannot take the dtype.
    """
    spec = table if isinstance(table, TableSpec) else table_spec(table)
    if _is_coerced(df, spec):
        return df
    names = set(spec.names)
    extra = [c for c in df.columns if c not in names]
    if extra and not drop_extra:
        raise BadInputError(
            "unknown_columns",
            f"{spec.name}: columns {extra[:8]} are not in the table; use the APDB names "
            "listed by l1db.schema.table_spec",
        )
    n = len(df)
    missing = [
        c.name
        for c in spec.columns
        if c.name not in df.columns and not c.nullable and c.datatype != "int"
    ]
    if missing:
        raise BadInputError(
            "missing_columns", f"{spec.name}: required columns {missing} are missing"
        )
    out: dict[str, Any] = {}
    for col in spec.columns:
        if col.name in df.columns:
            out[col.name] = _cast(df[col.name], col, spec.name)
        else:
            out[col.name] = _null_series(col, n).array
    _check_required(spec, out)
    return frame_of(out, spec)


def _is_coerced(df: pd.DataFrame, spec: TableSpec) -> bool:
    """Already at the table's columns and dtypes (the fast path for frames made by coerce)."""
    if list(df.columns) != spec.names or not df.index.equals(pd.RangeIndex(len(df))):
        return False
    if [str(t) for t in df.dtypes] != [c.dtype for c in spec.columns]:
        return False
    cols = {c.name: df[c.name].to_numpy() for c in spec.columns if not c.nullable}
    _check_required(spec, cols)
    return not any(
        pd.isna(df[c.name].to_numpy()).any() for c in spec.columns if c.dtype == "object"
    )


def _check_required(spec: TableSpec, columns: dict[str, Any]) -> None:
    nulls = [c.name for c in spec.columns if not c.nullable and pd.isna(columns[c.name]).any()]
    if nulls:
        raise BadInputError(
            "null_in_required",
            f"{spec.name}: NULL/NaN in non-nullable columns {nulls}",
            columns=nulls,
        )


def empty(table: str | TableSpec) -> pd.DataFrame:
    """A zero-row DataFrame of a table, every column at its dtype."""
    spec = table if isinstance(table, TableSpec) else table_spec(table)
    return frame_of({c.name: _null_series(c, 0).array for c in spec.columns}, spec)


def frame_of(arrays: dict[str, Any], spec: TableSpec) -> pd.DataFrame:
    """A DataFrame of equal-length column arrays, keeping ``object`` columns ``object``
    (pandas 3 would otherwise infer its ``str`` dtype for them)."""
    n = len(next(iter(arrays.values()))) if arrays else 0
    index = pd.RangeIndex(n)
    data = {
        c.name: pd.Series(arrays[c.name], dtype=object, index=index)
        if c.dtype == "object"
        else arrays[c.name]
        for c in spec.columns
    }
    return pd.DataFrame(data, index=index)
