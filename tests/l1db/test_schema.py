"""Tables come from apdb.yaml; coercion to a table's columns and dtypes."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml

from diaflow.errors import BadInputError
from diaflow.l1db import coerce, empty, table_spec
from diaflow.l1db.schema import DIA_SOURCE_NAMES
from diaflow.measure.schema import DIA_FORCED_SOURCE_COLUMNS, DIA_SOURCE_COLUMNS


def _apdb() -> dict[str, dict[str, dict]]:
    text = resources.files("lsst.sdm.schemas").joinpath("apdb.yaml").read_text()
    return {t["name"]: {c["name"]: c for c in t["columns"]} for t in yaml.safe_load(text)["tables"]}


APDB = _apdb()


@pytest.mark.parametrize("table", ["DiaObject", "DiaForcedSource", "SSObject", "SSSource"])
def test_tables_hold_every_apdb_column_in_order(table: str) -> None:
    assert table_spec(table).names == list(APDB[table])


def test_dia_object_last_holds_full_dia_object_rows() -> None:
    assert table_spec("DiaObjectLast").columns == table_spec("DiaObject").columns
    assert table_spec("DiaObjectLast").primary_key == ("diaObjectId",)
    assert table_spec("DiaObject").primary_key == ("diaObjectId", "validityStartMjdTai")


def test_dia_source_columns_are_the_measured_ones_plus_association() -> None:
    names = table_spec("DiaSource").names
    assert set(names) == {*DIA_SOURCE_COLUMNS, "diaObjectId", "ssObjectId", "timeWithdrawnMjdTai"}
    assert names == DIA_SOURCE_NAMES
    missing = [n for n in names if n not in APDB["DiaSource"]]
    assert missing == []


@pytest.mark.parametrize(
    ("table", "measured"),
    [("DiaSource", DIA_SOURCE_COLUMNS), ("DiaForcedSource", DIA_FORCED_SOURCE_COLUMNS)],
)
def test_dtypes_agree_with_the_measurement_stage(table: str, measured: dict[str, str]) -> None:
    dtypes = table_spec(table).dtypes
    assert {k: dtypes[k] for k in measured} == measured


def test_types_units_and_nullability_follow_apdb() -> None:
    spec = table_spec("DiaSource")
    assert spec.column("psfFlux").unit == "nJy"
    assert spec.column("ra").unit == "deg"
    assert spec.column("ra").dtype == "float64"
    assert spec.column("psfFlux").dtype == "float32"
    assert spec.column("diaObjectId").dtype == "Int64"  # nullable: NA, never 0
    assert spec.column("ssObjectId").dtype == "Int64"
    assert spec.column("diaSourceId").dtype == "int64"
    assert spec.column("detector").dtype == "int16"
    for c in spec.columns:
        assert c.nullable == APDB["DiaSource"][c.name].get("nullable", True)


def test_coerce_fills_missing_columns_with_null() -> None:
    df = pd.DataFrame(
        {
            "diaForcedSourceId": [1, 2],
            "diaObjectId": [3, 4],
            "ra": [1.0, 2.0],
            "dec": [0.0, 1.0],
            "visit": [5, 5],
            "detector": [1, 1],
            "midpointMjdTai": [60000.0, 60000.0],
            "timeProcessedMjdTai": [1.0, 1.0],
        }
    )
    got = coerce(df, "DiaForcedSource")
    assert list(got.dtypes.astype(str)) == list(table_spec("DiaForcedSource").dtypes.values())
    assert got["psfFlux"].isna().all()
    assert got["band"].tolist() == [None, None]


def test_coerce_fills_missing_counts_with_zero_and_nullable_ids_with_na() -> None:
    df = pd.DataFrame(
        {"diaObjectId": [1], "validityStartMjdTai": [60000.0], "ra": [1.0], "dec": [2.0]}
    )
    got = coerce(df, "DiaObject")
    assert got["nDiaSources"].tolist() == [0]
    assert got["g_psfFluxNdata"].dtype == "int32"
    required = {
        "diaSourceId": [1, 2],
        "visit": [3, 3],
        "detector": [0, 0],
        "ra": [1.0, 1.0],
        "dec": [0.0, 0.0],
        "x": [1.0, 2.0],
        "y": [1.0, 2.0],
        "midpointMjdTai": [6e4, 6e4],
        "timeProcessedMjdTai": [6e4, 6e4],
    }
    src = coerce(pd.DataFrame({**required, "diaObjectId": [5.0, np.nan]}), "DiaSource")
    assert src["diaObjectId"].dtype == "Int64"
    assert src["diaObjectId"].tolist() == [5, pd.NA]
    assert src["ssObjectId"].isna().all()


@pytest.mark.parametrize(
    ("frame", "reason", "match"),
    [
        (
            pd.DataFrame({"diaObjectId": [1], "ra": [1.0], "dec": [2.0], "bogus": [1]}),
            "unknown_columns",
            "bogus",
        ),
        (pd.DataFrame({"diaObjectId": [1], "ra": [1.0]}), "missing_columns", "validityStartMjdTai"),
        (
            pd.DataFrame(
                {"diaObjectId": [1], "validityStartMjdTai": [1.0], "ra": [np.nan], "dec": [2.0]}
            ),
            "null_in_required",
            r"\['ra'\]",
        ),
        (
            pd.DataFrame(
                {"diaObjectId": [np.nan], "validityStartMjdTai": [1.0], "ra": [1.0], "dec": [2.0]}
            ),
            "bad_column",
            "diaObjectId",
        ),
    ],
    ids=["unknown", "missing", "null", "nan-in-id"],
)
def test_coerce_refuses_what_cannot_be_stored(frame: pd.DataFrame, reason: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        coerce(frame, "DiaObject")
    assert info.value.reason == reason


def test_coerce_drops_extra_columns_only_when_asked() -> None:
    df = pd.DataFrame(
        {
            "diaObjectId": [1],
            "validityStartMjdTai": [1.0],
            "ra": [1.0],
            "dec": [2.0],
            "scratch": ["x"],
        }
    )
    assert "scratch" not in coerce(df, "DiaObject", drop_extra=True).columns


def test_nullable_ids_round_trip_through_coerce() -> None:
    df = empty("DiaSource")
    assert len(df) == 0
    assert df["diaObjectId"].dtype == "Int64"
    src = pd.DataFrame({c: empty("DiaSource")[c] for c in empty("DiaSource").columns})
    assert coerce(src, "DiaSource").equals(df)


def test_strings_stay_object_and_booleans_never_take_nan_as_true() -> None:
    df = pd.DataFrame(
        {
            "diaForcedSourceId": [1, 2],
            "diaObjectId": [3, 4],
            "ra": [1.0, 2.0],
            "dec": [0.0, 1.0],
            "visit": [5, 5],
            "detector": [1, 1],
            "midpointMjdTai": [60000.0, 60000.0],
            "timeProcessedMjdTai": [1.0, 1.0],
            "band": pd.array(["r", None], dtype="str"),
        }
    )
    got = coerce(df, "DiaForcedSource")
    assert got["band"].dtype == object
    assert got["band"].tolist() == ["r", None]
    flags = coerce(
        pd.DataFrame(
            {"ssObjectId": [1, 2], "u_slope_fit_failed": [np.nan, 1.0], "arc": [1.0, 1.0]}
        ),
        "SSObject",
    )
    assert flags["u_slope_fit_failed"].tolist() == [False, True]


def test_unknown_table_lists_the_tables() -> None:
    with pytest.raises(BadInputError, match="DiaForcedSource"):
        table_spec("DiaSauce")
