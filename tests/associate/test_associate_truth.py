"""Association of a simulated survey, visit after visit, checked against its truth."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from associate_support import KIND_ASTEROID, KIND_NOISE, KIND_VARIABLE, Run, simulate_run
from astropy.coordinates import SkyCoord

from diaflow.associate import BANDS, DIA_OBJECT_COLUMNS


@pytest.fixture(scope="module")
def run() -> Run:
    return simulate_run()


def _ids(series: pd.Series) -> np.ndarray:
    """Nullable ids as int64 with -1 for NULL."""
    return series.astype("Int64").fillna(-1).to_numpy(np.int64)


def _dominant_object(sources: pd.DataFrame) -> pd.Series:
    """Per truth id, the DiaObject holding most of its DiaSources."""
    s = sources[_ids(sources["diaObjectId"]) >= 0]
    return s.groupby("truth_id")["diaObjectId"].agg(lambda x: x.value_counts().index[0])


def test_isolated_variables_land_on_their_true_object(run: Run) -> None:
    iso = run.truth.loc[run.truth["isolated"], "truth_id"]
    s = run.sources[
        (run.sources["truth_kind"] == KIND_VARIABLE) & run.sources["truth_id"].isin(iso)
    ]
    dom = _dominant_object(s)
    assert not dom.duplicated().any(), "two true sources share their main DiaObject"
    on_own = _ids(s["diaObjectId"]) == _ids(dom.reindex(s["truth_id"]))
    # Unassociated sources (first detection failing the cuts) count as misses.
    assert len(s) > 30_000
    assert on_own.mean() >= 0.99
    # No true source is split over several DiaObjects.
    per_truth = s[_ids(s["diaObjectId"]) >= 0].groupby("truth_id")["diaObjectId"].nunique()
    assert (per_truth == 1).all()


def test_no_object_merges_true_sources_2_arcsec_apart(run: Run) -> None:
    v = run.sources[
        (run.sources["truth_kind"] == KIND_VARIABLE) & (_ids(run.sources["diaObjectId"]) >= 0)
    ]
    per_obj = v.groupby("diaObjectId")["truth_id"].unique()
    multi = per_obj[per_obj.map(len) > 1]
    for truth_ids in multi:
        t = run.truth.set_index("truth_id").loc[truth_ids]
        c = SkyCoord(t["ra"].to_numpy(), t["dec"].to_numpy(), unit="deg")
        sep = c[:, None].separation(c[None, :]).arcsec
        assert sep.max() < 2.0
    # Every crowded pair (2-3″) whose members were both detected stays two DiaObjects.
    dom = _dominant_object(v)
    pairs = run.truth[run.truth["pair"] >= 0].assign(
        obj=lambda t: dom.reindex(t["truth_id"]).to_numpy()
    )
    both = pairs.dropna(subset=["obj"]).groupby("pair")["obj"].agg(["count", "nunique"])
    both = both[both["count"] == 2]
    assert len(both) > 100
    assert (both["nunique"] == 2).all()


def test_one_to_one_in_every_visit(run: Run) -> None:
    for res in run.results:
        obj = _ids(res.dia_sources["diaObjectId"])
        ss = _ids(res.dia_sources["ssObjectId"])
        assert len(np.unique(obj[obj >= 0])) == (obj >= 0).sum()
        assert len(np.unique(ss[ss >= 0])) == (ss >= 0).sum()
        assert not ((obj >= 0) & (ss >= 0)).any()  # SSObject sources get no DiaObject


def test_new_objects_and_unassociated_sources(run: Run) -> None:
    for res, t in zip(run.results, run.midpoints, strict=True):
        src = res.dia_sources
        obj, ss = _ids(src["diaObjectId"]), _ids(src["ssObjectId"])
        ids = src["diaSourceId"].to_numpy()
        np.testing.assert_array_equal(res.unassociated_ids, np.sort(ids[(obj < 0) & (ss < 0)]))
        # A new DiaObject takes the id of the DiaSource that started it.
        np.testing.assert_array_equal(res.new_object_ids, np.sort(ids[obj == ids]))
        # Every DiaObject that received a source, and only those, has a new version.
        np.testing.assert_array_equal(res.dia_objects["diaObjectId"], np.unique(obj[obj >= 0]))
        assert (res.dia_objects["validityStartMjdTai"] == t).all()
        assert res.dia_objects["validityEndMjdTai"].isna().all()
        assert list(res.dia_objects.columns) == list(DIA_OBJECT_COLUMNS)
    noise = run.sources[run.sources["truth_kind"] == KIND_NOISE]
    rejected = noise["reliability"] < 0.5
    # Noise that fails the cuts starts nothing; it joins an object only by chance (rarely).
    assert rejected.sum() > 400
    assert (_ids(noise.loc[rejected, "diaObjectId"]) >= 0).mean() < 0.02


def test_predicted_asteroids_become_ss_sources(run: Run) -> None:
    a = run.sources[run.sources["truth_kind"] == KIND_ASTEROID]
    a = a.merge(run.predicted, left_on="truth_id", right_on="ssObjectId", suffixes=("", "_truth"))
    pred = a[a["predicted"]]
    assert len(pred) > 150
    assert (_ids(pred["ssObjectId"]) == pred["truth_id"].to_numpy()).mean() >= 0.99
    # Unpredicted asteroids start their own DiaObjects and never join a variable's.
    unpred = a[~a["predicted"]]
    variable_objs = run.sources.loc[run.sources["truth_kind"] == KIND_VARIABLE, "diaObjectId"]
    assert not unpred["diaObjectId"].isin(variable_objs.dropna()).any()

    ss = run.ss_sources.merge(a[["diaSourceId", "raErr", "pred_sigma"]], on="diaSourceId")
    attributed = run.sources[_ids(run.sources["ssObjectId"]) >= 0]
    assert set(run.ss_sources["diaSourceId"]) == set(attributed["diaSourceId"])
    # Offsets from the prediction scatter as the prediction and source errors say.
    sigma = np.hypot(ss["pred_sigma"], ss["raErr"] * 3600.0)
    for col in ("ephOffsetRa", "ephOffsetDec"):
        pull = ss[col] / sigma
        assert abs(pull.mean()) < 0.2
        assert 0.85 < pull.std() < 1.15
    np.testing.assert_allclose(
        np.hypot(ss["ephOffsetAlongTrack"], ss["ephOffsetCrossTrack"]), ss["ephOffset"], rtol=1e-4
    )
    assert ss["designation"].notna().all()
    assert (ss["helioRange"] == 2.5).all()
    assert ss["eclLambda"].notna().all()
    assert ss["galLat"].notna().all()


def _gls_positions(groups: list[pd.DataFrame]) -> tuple[SkyCoord, np.ndarray]:
    """Inverse-covariance weighted mean positions and covariances (arcsec²), astropy offsets."""
    src = pd.concat(groups, ignore_index=True)
    first = np.repeat([0, *np.cumsum([len(g) for g in groups])[:-1]], [len(g) for g in groups])
    ra, dec = src["ra"].to_numpy(), src["dec"].to_numpy()
    refs = SkyCoord(ra[first], dec[first], unit="deg")
    dlon, dlat = refs.spherical_offsets_to(SkyCoord(ra, dec, unit="deg"))
    p = np.stack([dlon.arcsec, dlat.arcsec], axis=1)
    sx, sy = src["raErr"].to_numpy(np.float64) * 3600, src["decErr"].to_numpy(np.float64) * 3600
    c = src["ra_dec_Cov"].to_numpy(np.float64) * 3600**2
    w = np.linalg.inv(np.stack([np.stack([sx * sx, c], -1), np.stack([c, sy * sy], -1)], -2))
    means, covs, k = [], [], 0
    for g in groups:
        cov = np.linalg.inv(w[k : k + len(g)].sum(axis=0))
        means.append(cov @ np.einsum("kab,kb->a", w[k : k + len(g)], p[k : k + len(g)]))
        covs.append(cov)
        k += len(g)
    m = np.array(means)
    pos = refs[np.unique(first)].spherical_offsets_by(m[:, 0] * u.arcsec, m[:, 1] * u.arcsec)
    return pos, np.array(covs)


def _weighted(f: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    if len(f) == 0:
        return np.nan, np.nan
    w = 1.0 / e.astype(np.float64) ** 2
    return float(np.sum(w * f) / np.sum(w)), float(1.0 / np.sqrt(np.sum(w)))


def _band_expectations(src: pd.DataFrame, fp: pd.DataFrame, b: str) -> dict[str, float]:
    s = src[src["band"] == b]
    f = s["psfFlux"].to_numpy(np.float64)
    e = s["psfFluxErr"].to_numpy(np.float64)
    t = s["midpointMjdTai"].to_numpy()
    mean, err = _weighted(f, e)
    smean, serr = _weighted(s["scienceFlux"].to_numpy(), s["scienceFluxErr"].to_numpy())
    fpb = fp[fp["band"] == b]
    fmean, ferr = _weighted(fpb["psfFlux"].to_numpy(np.float64), fpb["psfFluxErr"].to_numpy())
    several = len(f) > 1
    return {
        "psfFluxNdata": len(f),
        "psfFluxMean": mean,
        "psfFluxMeanErr": err,
        "psfFluxSigma": np.std(f, ddof=1) if several else np.nan,
        "psfFluxMin": f.min() if len(f) else np.nan,
        "psfFluxMax": f.max() if len(f) else np.nan,
        "psfFluxMaxSlope": np.max(np.abs(np.diff(f) / np.diff(t))) if several else np.nan,
        "psfFluxErrMean": e.mean() if len(e) else np.nan,
        "scienceFluxMean": smean,
        "scienceFluxMeanErr": serr,
        "fpFluxMean": fmean,
        "fpFluxMeanErr": ferr,
    }


def test_summaries_equal_numpy_recomputation(run: Run) -> None:
    rng = np.random.default_rng(0)
    objs = run.objects[run.objects["nDiaSources"] >= 3]
    objs = objs.iloc[rng.choice(len(objs), 150, replace=False)].reset_index(drop=True)
    src_all = run.sources[_ids(run.sources["diaObjectId"]) >= 0]
    by_obj = dict(list(src_all.groupby(_ids(src_all["diaObjectId"]))))
    forced_by_obj = dict(list(run.forced.groupby("diaObjectId")))
    groups = [by_obj[oid].sort_values("midpointMjdTai") for oid in objs["diaObjectId"]]
    pos, cov = _gls_positions(groups)

    got = SkyCoord(objs["ra"].to_numpy(), objs["dec"].to_numpy(), unit="deg")
    assert got.separation(pos).arcsec.max() < 1e-5
    np.testing.assert_allclose(objs["raErr"] * 3600, np.sqrt(cov[:, 0, 0]), rtol=1e-5)
    np.testing.assert_allclose(objs["decErr"] * 3600, np.sqrt(cov[:, 1, 1]), rtol=1e-5)
    np.testing.assert_allclose(objs["ra_dec_Cov"] * 3600**2, cov[:, 0, 1], rtol=1e-5, atol=1e-12)
    np.testing.assert_array_equal(objs["nDiaSources"], [len(g) for g in groups])
    np.testing.assert_array_equal(
        objs["firstDiaSourceMjdTai"], [g["midpointMjdTai"].min() for g in groups]
    )
    np.testing.assert_array_equal(
        objs["lastDiaSourceMjdTai"], [g["midpointMjdTai"].max() for g in groups]
    )
    expected: dict[str, list[float]] = {}
    for oid, src, start in zip(
        objs["diaObjectId"], groups, objs["validityStartMjdTai"], strict=True
    ):
        fp = forced_by_obj.get(oid, run.forced.iloc[:0])
        # The version was written at its last DiaSource: later forced sources are not in it.
        fp = fp[fp["midpointMjdTai"] <= start]
        for b in BANDS:
            for name, value in _band_expectations(src, fp, b).items():
                expected.setdefault(f"{b}_{name}", []).append(value)
    for column, values in expected.items():
        np.testing.assert_allclose(objs[column], values, rtol=2e-6, atol=1e-3, err_msg=column)
    assert np.isfinite(expected["r_fpFluxMean"]).sum() > 20
    assert np.isfinite(expected["g_psfFluxMaxSlope"]).sum() > 10
