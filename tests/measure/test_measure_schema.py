"""Output columns carry the Rubin APDB names and types."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from diaflow.measure import DIA_FORCED_SOURCE_COLUMNS, DIA_SOURCE_COLUMNS

APDB_TYPES = {
    "long": "int64",
    "short": "int16",
    "int": "int32",
    "float": "float32",
    "double": "float64",
    "boolean": "bool",
    "char": "object",
    "string": "object",
}


def _apdb(table: str) -> dict[str, str]:
    text = resources.files("lsst.sdm.schemas").joinpath("apdb.yaml").read_text()
    schema = yaml.safe_load(text)
    (found,) = [t for t in schema["tables"] if t["name"] == table]
    return {c["name"]: c["datatype"] for c in found["columns"]}


@pytest.mark.parametrize(
    ("table", "columns"),
    [("DiaSource", DIA_SOURCE_COLUMNS), ("DiaForcedSource", DIA_FORCED_SOURCE_COLUMNS)],
)
def test_measure_columns_are_apdb_columns_with_apdb_types(
    table: str, columns: dict[str, str]
) -> None:
    apdb = _apdb(table)
    assert not set(columns) - set(apdb), set(columns) - set(apdb)
    for name, dtype in columns.items():
        assert APDB_TYPES[apdb[name]] == dtype, name


def test_measure_dia_source_has_every_non_nullable_measurement_column() -> None:
    text = resources.files("lsst.sdm.schemas").joinpath("apdb.yaml").read_text()
    (found,) = [t for t in yaml.safe_load(text)["tables"] if t["name"] == "DiaSource"]
    required = {c["name"] for c in found["columns"] if c.get("nullable") is False}
    assert required <= set(DIA_SOURCE_COLUMNS), required - set(DIA_SOURCE_COLUMNS)
