"""Association and summaries on small constructed cases: each rule and edge case on its own."""

from __future__ import annotations

import itertools
import logging
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml

from diaflow.associate import (
    DIA_OBJECT_COLUMNS,
    SS_SOURCE_COLUMNS,
    AssociationConfig,
    assign_one_to_one,
    associate_visit,
    match_ss_objects,
    match_to_objects,
    passes_quality_cuts,
    summarize,
)
from diaflow.associate._sky import from_tangent, pairs_within, tangent_offsets
from diaflow.errors import BadInputError, ConfigError
from diaflow.measure.schema import DIA_SOURCE_COLUMNS, new_columns, to_frame

APDB_TYPES = {"long": "int64", "short": "int16", "int": "int32", "float": "float32"}
APDB_TYPES |= {"double": "float64", "boolean": "bool", "char": "object"}


def _apdb(table: str) -> dict[str, str]:
    text = resources.files("lsst.sdm.schemas").joinpath("apdb.yaml").read_text()
    (found,) = [t for t in yaml.safe_load(text)["tables"] if t["name"] == table]
    return {c["name"]: APDB_TYPES[c["datatype"]] for c in found["columns"]}


def sources_at(
    dx: list[float],
    dy: list[float],
    *,
    err: float | list[float] = 0.05,
    ra0: float = 10.0,
    dec0: float = -20.0,
    t: float = 60000.0,
    first_id: int = 1000,
    band: str = "r",
    **columns: object,
) -> pd.DataFrame:
    """DiaSources at tangent offsets (arcsec) from (ra0, dec0), real and unflagged by default."""
    n = len(dx)
    cols = new_columns(DIA_SOURCE_COLUMNS, n)
    ra, dec = from_tangent(np.array(dx, float), np.array(dy, float), ra0, dec0)
    e = np.broadcast_to(np.asarray(err, float), (n,)) / 3600.0
    cols |= {"ra": ra, "dec": dec, "raErr": e, "decErr": e, "ra_dec_Cov": np.zeros(n)}
    cols["diaSourceId"] = first_id + np.arange(n)
    cols["band"][:] = band
    cols["midpointMjdTai"][:] = t
    cols |= {"snr": np.full(n, 20.0), "reliability": np.full(n, 0.9)}
    cols |= {"psfFlux": np.full(n, 1000.0), "psfFluxErr": np.full(n, 50.0)}
    for k, v in columns.items():
        cols[k] = np.broadcast_to(np.asarray(v), (n,)).copy()
    return to_frame(cols, DIA_SOURCE_COLUMNS)


def objects_at(
    dx: list[float], dy: list[float], *, err: float = 0.02, ra0: float = 10.0, dec0: float = -20.0
) -> pd.DataFrame:
    n = len(dx)
    cols = new_columns(DIA_OBJECT_COLUMNS, n)
    ra, dec = from_tangent(np.array(dx, float), np.array(dy, float), ra0, dec0)
    cols |= {"diaObjectId": np.arange(1, n + 1), "ra": ra, "dec": dec}
    cols |= {"raErr": np.full(n, err / 3600), "decErr": np.full(n, err / 3600)}
    cols |= {"ra_dec_Cov": np.zeros(n), "validityStartMjdTai": np.full(n, 59990.0)}
    cols |= {"nDiaSources": np.full(n, 5), "firstDiaSourceMjdTai": np.full(n, 59950.0)}
    cols["lastDiaSourceMjdTai"] = np.full(n, 59990.0)
    return to_frame(cols, DIA_OBJECT_COLUMNS)


def history_for(objects: pd.DataFrame, t: float = 59990.0) -> pd.DataFrame:
    """One earlier DiaSource at each object's position."""
    h = sources_at([0.0] * len(objects), [0.0] * len(objects), t=t, first_id=1)
    h["ra"], h["dec"] = objects["ra"].to_numpy(), objects["dec"].to_numpy()
    return h.assign(diaObjectId=objects["diaObjectId"].to_numpy())


def run(src: pd.DataFrame, objs: pd.DataFrame, **kw: object) -> object:
    return associate_visit(
        src,
        objs,
        history_sources=history_for(objs),
        history_forced=None,
        midpoint_mjd=60000.0,
        **kw,
    )


def ids(series: pd.Series) -> list[int]:
    return series.astype("Int64").fillna(-1).tolist()


# ---- schema and configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "table"), [(DIA_OBJECT_COLUMNS, "DiaObject"), (SS_SOURCE_COLUMNS, "SSSource")]
)
def test_columns_are_every_apdb_column(ours: dict[str, str], table: str) -> None:
    assert list(ours.items()) == list(_apdb(table).items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius_arcsec": 0.0}, "radius_arcsec must be finite and > 0, got 0.0"),
        ({"max_chi2": float("nan")}, "max_chi2 must be finite and > 0"),
        ({"systematic_error_arcsec": -0.1}, "systematic_error_arcsec must be finite and >= 0"),
        ({"ss_max_radius_arcsec": 0.5}, r"must be >= ss_radius_arcsec \(1.0\)"),
        ({"min_reliability": 1.5}, r"min_reliability must be in \[0, 1\] or None, got 1.5"),
        ({"reject_flags": "pixelFlags_bad"}, "tuple of column names"),
    ],
)
def test_config_rejects_impossible_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AssociationConfig(**kwargs)  # type: ignore[arg-type]


# ---- the assignment ----------------------------------------------------------------------------


def _brute_force(left: np.ndarray, right: np.ndarray, cost: np.ndarray, unmatched: float) -> float:
    best = np.inf
    for pick in itertools.product([False, True], repeat=len(left)):
        m = np.array(pick, bool)
        if len(set(left[m])) < m.sum() or len(set(right[m])) < m.sum():
            continue
        best = min(best, cost[m].sum() + unmatched * (len(set(left)) - m.sum()))
    return best


def test_assignment_is_the_exact_optimum() -> None:
    rng = np.random.default_rng(3)
    for _ in range(150):
        n, m = rng.integers(1, 5, 2)
        edges = [(a, b) for a in range(n) for b in range(m) if rng.random() < 0.6]
        if not edges:
            continue
        left, right = np.array(edges).T
        cost = rng.uniform(0, 20, len(edges))
        chosen = assign_one_to_one(left, right, cost, unmatched_cost=10.0)
        assert len(set(left[chosen])) == chosen.sum() == len(set(right[chosen]))
        got = cost[chosen].sum() + 10.0 * (len(set(left)) - chosen.sum())
        assert got == pytest.approx(_brute_force(left, right, cost, 10.0), abs=1e-9)
    assert assign_one_to_one([], [], [], unmatched_cost=1.0).shape == (0,)


def _greedy_nearest(src: pd.DataFrame, objs: pd.DataFrame, radius: float) -> dict[int, int]:
    """Closest pairs first, each source and object used once: the method that must lose."""
    i, j = pairs_within(src["ra"], src["dec"], objs["ra"], objs["dec"], radius)
    dx, dy = tangent_offsets(src["ra"].to_numpy()[i], src["dec"].to_numpy()[i],
                             objs["ra"].to_numpy()[j], objs["dec"].to_numpy()[j])  # fmt: skip
    taken_s: set[int] = set()
    taken_o: set[int] = set()
    out = {}
    for k in np.argsort(np.hypot(dx, dy)):
        if i[k] not in taken_s and j[k] not in taken_o:
            taken_s.add(i[k])
            taken_o.add(j[k])
            out[int(src["diaSourceId"].iloc[i[k]])] = int(objs["diaObjectId"].iloc[j[k]])
    return out


def test_global_matching_where_greedy_nearest_fails() -> None:
    # Objects 1 (at 0″) and 2 (0.6″ east). Source A (0.2″ east) is nearest to object 1, but
    # source B (0.5″ west) can only be object 1's: the right answer gives A to object 2.
    objs = objects_at([0.0, 0.6], [0.0, 0.0], err=0.1)
    src = sources_at([0.2, -0.5], [0.0, 0.0], err=0.15, first_id=1000)  # A=1000, B=1001
    truth = {1000: 2, 1001: 1}
    assert _greedy_nearest(src, objs, 1.0) != truth  # greedy takes A->1 and orphans B
    res = run(src, objs)
    got = dict(zip(src["diaSourceId"], ids(res.dia_sources["diaObjectId"]), strict=True))
    assert got == truth
    assert len(res.new_object_ids) == 0
    np.testing.assert_array_equal(res.dia_objects["diaObjectId"], [1, 2])


def test_chi2_gate_uses_both_errors() -> None:
    objs = objects_at([0.0, 30.0], [0.0, 0.0], err=0.01)
    # 0.6″ off: impossible for a bright source (chi² ~ 130), fine for a faint one (chi² ~ 2.8).
    bright = sources_at([0.6], [0.0], err=0.01)
    faint = sources_at([30.6], [0.0], err=0.25, first_id=2000)
    res = run(pd.concat([bright, faint], ignore_index=True), objs)
    assert ids(res.dia_sources["diaObjectId"]) == [1000, 2]
    np.testing.assert_array_equal(res.new_object_ids, [1000])


def test_radius_is_a_hard_limit() -> None:
    objs = objects_at([0.0], [0.0], err=2.0)
    res = run(sources_at([1.05], [0.0], err=2.0), objs)
    assert ids(res.dia_sources["diaObjectId"]) == [1000]


@pytest.mark.parametrize(("ra0", "dec0"), [(359.99995, 0.0), (0.0, 89.99995), (180.0, -89.9999)])
def test_matching_across_ra_zero_and_the_poles(ra0: float, dec0: float) -> None:
    objs = objects_at([0.0], [0.0], ra0=ra0, dec0=dec0)
    src = sources_at([0.3], [-0.2], ra0=ra0, dec0=dec0, err=0.1)
    m = match_to_objects(src, objs)
    assert m.left.tolist() == [0]
    assert m.separation_arcsec[0] == pytest.approx(np.hypot(0.3, 0.2), rel=1e-6)


# ---- associate_visit: new objects, cuts, edge cases ----------------------------------------------


def test_no_objects_yet_every_good_source_starts_one() -> None:
    src = sources_at([0.0, 5.0, 10.0], [0.0, 0.0, 0.0], reliability=[0.9, 0.1, 0.9])
    res = run(src, objects_at([], []))
    np.testing.assert_array_equal(res.new_object_ids, [1000, 1002])
    np.testing.assert_array_equal(res.unassociated_ids, [1001])
    assert res.n_unassociated == 1
    assert ids(res.dia_sources["diaObjectId"]) == [1000, -1, 1002]
    assert res.dia_sources["diaObjectId"].dtype == "Int64"
    new = res.dia_objects.set_index("diaObjectId")
    assert new.loc[1000, "nDiaSources"] == 1
    assert new.loc[1000, "r_psfFluxNdata"] == 1
    assert new.loc[1000, "g_psfFluxNdata"] == 0
    assert np.isnan(new.loc[1000, "g_psfFluxMean"])


def test_no_sources_gives_empty_tables() -> None:
    res = run(sources_at([], []), objects_at([0.0], [0.0]))
    assert len(res.dia_sources) == len(res.dia_objects) == len(res.ss_sources) == 0
    assert list(res.dia_objects.columns) == list(DIA_OBJECT_COLUMNS)
    assert list(res.ss_sources.columns) == list(SS_SOURCE_COLUMNS)


def test_source_without_position_stays_unassociated(caplog: pytest.LogCaptureFixture) -> None:
    src = sources_at([0.0, 0.1], [0.0, 0.0])
    src.loc[1, "ra"] = np.nan
    with caplog.at_level(logging.WARNING):
        res = run(src, objects_at([0.0], [0.0]))
    assert "1 DiaSource(s) without a finite position" in caplog.text
    assert ids(res.dia_sources["diaObjectId"]) == [1, -1]
    np.testing.assert_array_equal(res.unassociated_ids, [1001])


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("snr", 4.9),
        ("reliability", 0.49),
        ("reliability", np.nan),
        ("pixelFlags_saturatedCenter", True),
        ("pixelFlags_nodataCenter", True),
        ("pixelFlags_edge", True),
        ("pixelFlags_bad", True),
    ],
)
def test_quality_cuts_stop_new_objects(column: str, value: object) -> None:
    src = sources_at([0.0, 0.0], [0.0, 10.0])
    src.loc[1, column] = value
    assert passes_quality_cuts(src).tolist() == [True, False]


def test_cut_options_and_allowed_sources() -> None:
    src = sources_at([0.0, 5.0], [0.0, 0.0], reliability=np.nan, isDipole=True, isNegative=True)
    assert not passes_quality_cuts(src).any()
    assert passes_quality_cuts(src, config=AssociationConfig(min_reliability=None)).all()
    # Failing the cuts only stops *new* objects: a flagged source still joins its object.
    flagged = sources_at([0.05], [0.0], pixelFlags_saturatedCenter=True, reliability=0.0)
    assert ids(run(flagged, objects_at([0.0], [0.0])).dia_sources["diaObjectId"]) == [1]


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        (
            lambda s, o: (s.drop(columns="raErr"), o),
            "associate_columns",
            r"lack column\(s\) \['raErr'\]",
        ),
        (
            lambda s, o: (pd.concat([s, s]), o),
            "associate_duplicate_sources",
            "appear more than once",
        ),
        (lambda s, o: (s, pd.concat([o, o])), "associate_duplicate_objects", "latest version"),
        (lambda s, o: (s, o.drop(columns="decErr")), "associate_columns", "DiaObjects lack"),
    ],
)
def test_bad_input_is_refused_with_a_reason(change, reason: str, message: str) -> None:  # type: ignore[no-untyped-def]
    src, objs = change(sources_at([0.0], [0.0]), objects_at([0.0], [0.0]))
    with pytest.raises(BadInputError, match=message) as info:
        run(src, objs)
    assert info.value.reason == reason


def test_non_finite_midpoint_is_refused() -> None:
    with pytest.raises(BadInputError, match="midpoint_mjd must be finite"):
        associate_visit(
            sources_at([0.0], [0.0]),
            objects_at([], []),
            history_sources=sources_at([], []),
            history_forced=None,
            midpoint_mjd=float("nan"),
        )


def test_forced_sources_of_the_visit_enter_the_summary() -> None:
    objs = objects_at([0.0], [0.0])
    forced = pd.DataFrame(
        {"diaForcedSourceId": [7, 8], "diaObjectId": [1, 1], "band": ["r", "r"],
         "psfFlux": [100.0, 300.0], "psfFluxErr": [10.0, 10.0]}
    )  # fmt: skip
    res = run(sources_at([0.0], [0.0]), objs, forced_sources=forced)
    row = res.dia_objects.iloc[0]
    assert row["r_fpFluxMean"] == pytest.approx(200.0)
    assert row["r_fpFluxMeanErr"] == pytest.approx(10.0 / np.sqrt(2))
    assert np.isnan(row["g_fpFluxMean"])


# ---- SSObjects ---------------------------------------------------------------------------------


def predictions(dx: list[float], dy: list[float], **columns: object) -> pd.DataFrame:
    ra, dec = from_tangent(np.array(dx, float), np.array(dy, float), 10.0, -20.0)
    return pd.DataFrame({"ssObjectId": 500 + np.arange(len(dx)), "ra": ra, "dec": dec, **columns})


def test_ss_source_offsets_along_and_across_the_motion() -> None:
    src = sources_at([0.3], [0.4])
    pred = predictions([0.0], [0.0], ephRateRa=[0.5], ephRateDec=[0.0], designation=["2026 AB"])
    m, rows = match_ss_objects(src, pred)
    row = rows.iloc[0]
    assert m.left.tolist() == [0]
    assert row["ephOffsetRa"] == pytest.approx(0.3, abs=1e-9)
    assert row["ephOffsetDec"] == pytest.approx(0.4, abs=1e-9)
    assert row["ephOffset"] == pytest.approx(0.5, rel=1e-6)
    assert row["ephOffsetAlongTrack"] == pytest.approx(0.3, abs=1e-6)  # moving east
    assert row["ephOffsetCrossTrack"] == pytest.approx(0.4, abs=1e-6)  # north = left of motion
    assert row["ephRate"] == pytest.approx(0.5)
    assert row["designation"] == "2026 AB"
    assert row["diaDistanceRank"] == 1
    assert np.isnan(row["helio_x"])


def test_ss_attribution_comes_first_and_is_one_to_one() -> None:
    # Two sources inside one prediction's gate, on top of a DiaObject: the nearer one becomes the
    # SSSource (no DiaObject), the other joins the DiaObject.
    src = sources_at([0.5, 0.1], [0.0, 0.0], err=0.1)
    pred = predictions([0.15], [0.0])
    res = run(src, objects_at([0.45], [0.0], err=0.1), ss_predictions=pred)
    assert ids(res.dia_sources["ssObjectId"]) == [-1, 500]
    assert ids(res.dia_sources["diaObjectId"]) == [1, -1]
    assert res.ss_sources["diaSourceId"].tolist() == [1001]
    assert res.ss_sources["diaDistanceRank"].tolist() == [1]


def test_ss_attribution_maximises_the_number_attributed() -> None:
    # Source A lies between two predictions; B is only within the second's gate.
    src = sources_at([0.5, 1.4], [0.0, 0.0])
    m, rows = match_ss_objects(src, predictions([0.0, 0.6], [0.0, 0.0]))
    assert dict(zip(m.left.tolist(), m.right.tolist(), strict=True)) == {0: 0, 1: 1}
    assert sorted(rows["diaSourceId"]) == [1000, 1001]


@pytest.mark.parametrize(
    ("columns", "attributed"),
    [
        ({}, False),  # exact prediction: 1″ gate
        ({"uncertainty_arcsec": [1.0]}, True),  # 5σ = 5″ gate
        ({"raErr": [1.0 / 3600], "decErr": [0.2 / 3600]}, True),  # APDB-style, degrees
        ({"uncertainty_arcsec": [30.0]}, False),  # capped at 10″, source at 12″
    ],
)
def test_ss_gate_follows_the_prediction_uncertainty(
    columns: dict[str, list[float]], attributed: bool
) -> None:
    dx = 12.0 if columns.get("uncertainty_arcsec") == [30.0] else 3.0
    m, rows = match_ss_objects(sources_at([dx], [0.0]), predictions([0.0], [0.0], **columns))
    assert (len(rows) == 1) is attributed
    assert len(m.left) == len(rows)


def test_ss_predictions_are_checked() -> None:
    with pytest.raises(BadInputError, match=r"lack column\(s\) \['ssObjectId'\]"):
        match_ss_objects(
            sources_at([0.0], [0.0]), predictions([0.0], [0.0]).drop(columns="ssObjectId")
        )
    twice = pd.concat([predictions([0.0], [0.0])] * 2)
    with pytest.raises(BadInputError, match=r"repeat ssObjectId\(s\) \[500\]"):
        match_ss_objects(sources_at([0.0], [0.0]), twice)


# ---- summaries ---------------------------------------------------------------------------------


def _light_curve() -> pd.DataFrame:
    t = [60000.0, 60001.0, 60003.0, 60003.0, 60010.0]
    s = sources_at([0.0] * 5, [0.0] * 5, t=0.0, first_id=1)
    s["midpointMjdTai"] = t
    s["psfFlux"] = np.array([100.0, 300.0, 200.0, 900.0, np.nan], np.float32)
    s["psfFluxErr"] = np.float32(10.0)
    s["band"] = ["g", "g", "g", "r", "g"]
    return s.assign(diaObjectId=7)


def test_summary_per_band_values() -> None:
    row = summarize([7], _light_curve(), None, 60010.0).iloc[0]
    assert row["g_psfFluxNdata"] == 3  # the NaN flux is not a data point
    assert row["g_psfFluxMean"] == pytest.approx(200.0)
    assert row["g_psfFluxSigma"] == pytest.approx(100.0)
    assert row["g_psfFluxMaxSlope"] == pytest.approx(200.0)  # (300-100)/1 day
    assert (row["g_psfFluxMin"], row["g_psfFluxMax"]) == (100.0, 300.0)
    assert row["r_psfFluxNdata"] == 1
    assert np.isnan(row["r_psfFluxSigma"])
    assert np.isnan(row["r_psfFluxMaxSlope"])
    assert row["u_psfFluxNdata"] == 0
    assert np.isnan(row["u_psfFluxMean"])
    assert row["nDiaSources"] == 5  # every DiaSource counts, flux or not
    assert (row["firstDiaSourceMjdTai"], row["lastDiaSourceMjdTai"]) == (60000.0, 60010.0)
    assert row["validityStartMjdTai"] == 60010.0
    assert np.isnan(row["validityEndMjdTai"])


def test_summary_counts_what_the_previous_version_knew() -> None:
    lc = _light_curve()
    first = summarize([7], lc.iloc[:2], None, 60001.0)
    assert first["nDiaSources"].iloc[0] == 2
    # The history window has lost the first two sources; the previous version remembers them.
    later = summarize([7], lc.iloc[2:], None, 60010.0, first)
    assert later["nDiaSources"].iloc[0] == 5
    assert later["firstDiaSourceMjdTai"].iloc[0] == 60000.0
    # Summarising again in the same visit (after forced photometry) counts nothing twice.
    again = summarize([7], lc.iloc[2:], None, 60010.0, later)
    assert again["nDiaSources"].iloc[0] == 5


def test_summary_of_object_without_sources_in_window() -> None:
    prev = summarize([7], _light_curve(), None, 60010.0)
    forced = pd.DataFrame(
        {"diaObjectId": [7], "band": ["g"], "psfFlux": [5.0], "psfFluxErr": [1.0]}
    )
    row = summarize([7], _light_curve().iloc[:0], forced, 60020.0, prev).iloc[0]
    assert row["g_psfFluxMean"] == pytest.approx(200.0)
    assert row["nDiaSources"] == 5
    assert row["g_fpFluxMean"] == pytest.approx(5.0)
    assert row["validityStartMjdTai"] == 60020.0
    with pytest.raises(BadInputError, match=r"DiaObject\(s\) \[7\] have no DiaSource"):
        summarize([7], _light_curve().iloc[:0], forced, 60020.0)


def test_summary_position_weights_by_covariance() -> None:
    s = sources_at([0.0, 1.0], [0.0, 0.0], err=[0.1, 0.2], t=0.0).assign(diaObjectId=3)
    row = summarize([3], s, None, 1.0).iloc[0]
    dx, dy = tangent_offsets(row["ra"], row["dec"], 10.0, -20.0)
    assert float(dx) == pytest.approx(0.2, abs=1e-9)  # weights 4:1
    assert float(dy) == pytest.approx(0.0, abs=1e-9)
    assert row["raErr"] * 3600 == pytest.approx(1 / np.sqrt(100 + 25), rel=1e-6)
    assert row["ra_dec_Cov"] == 0.0
