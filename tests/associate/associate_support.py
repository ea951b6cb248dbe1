"""A simulated survey at the catalog level, run through association visit after visit.

Truth: variable point sources (isolated ones, and crowded pairs 2-3″ apart) in a 0.25° cone that
straddles RA = 0, asteroids crossing it at 0.2-1°/day (two thirds with predicted positions), and
noise detections. Each visit detects a variable when its measured difference flux reaches 5σ;
positions scatter with the stated errors (10 mas at high S/N, 0.1″ at S/N 5, correlated). Every
visit's association output is fed back as the next visit's DiaObjects and history, as the
nightly runner does.

Not a conftest.py (the root conftest is imported by name elsewhere); builders are cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from diaflow.associate import BANDS, DIA_OBJECT_COLUMNS, AssociationResult, associate_visit
from diaflow.associate._sky import from_tangent, tangent_offsets
from diaflow.l1db.ids import make_ids
from diaflow.measure.schema import DIA_SOURCE_COLUMNS, new_columns, to_frame

RA0, DEC0, FIELD_DEG = 0.02, -30.0, 0.25
NOISE_NJY = 200.0
KIND_VARIABLE, KIND_ASTEROID, KIND_NOISE = "variable", "asteroid", "noise"


@dataclass(frozen=True)
class Run:
    """Truth, every visit's output, and the final latest DiaObjects."""

    truth: pd.DataFrame
    """One row per true variable: truth_id, ra, dec, pair (pair number or -1), isolated."""
    sources: pd.DataFrame
    """All associated DiaSources with truth_id and truth_kind (asteroid truth_id is its
    ssObjectId, noise -1)."""
    forced: pd.DataFrame
    """All DiaForcedSources."""
    objects: pd.DataFrame
    """Latest version of every DiaObject."""
    versions: pd.DataFrame
    """Every DiaObject version written."""
    ss_sources: pd.DataFrame
    predicted: pd.DataFrame
    """Per asteroid detection: ssObjectId, predicted (bool), pred_sigma_arcsec."""
    results: list[AssociationResult]
    midpoints: np.ndarray


def _cone_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    r = FIELD_DEG * 3600.0 * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return from_tangent(r * np.cos(phi), r * np.sin(phi), RA0, DEC0)


def _truth(rng: np.random.Generator, n_single: int, n_pairs: int) -> pd.DataFrame:
    ra1, dec1 = _cone_points(rng, n_single + n_pairs)
    sep = rng.uniform(2.0, 3.0, n_pairs)
    ang = rng.uniform(0, 2 * np.pi, n_pairs)
    ra2, dec2 = from_tangent(sep * np.cos(ang), sep * np.sin(ang), ra1[n_single:], dec1[n_single:])
    ra, dec = np.r_[ra1, ra2], np.r_[dec1, dec2]
    pair = np.r_[np.full(n_single, -1), np.arange(n_pairs), np.arange(n_pairs)]
    n = len(ra)
    truth = pd.DataFrame(
        {
            "truth_id": np.arange(n),
            "ra": ra,
            "dec": dec,
            "pair": pair,
            "amp_snr": np.exp(rng.uniform(np.log(3.0), np.log(300.0), n)),
            "period": rng.uniform(2.0, 60.0, n),
            "phase": rng.uniform(0, 2 * np.pi, n),
        }
    )
    # Isolated: no other variable within 5″ (pairs and chance neighbours are not).
    from scipy.spatial import cKDTree

    from diaflow.associate._sky import unit_vectors

    tree = cKDTree(unit_vectors(ra, dec))
    chord = 2 * np.sin(np.deg2rad(5.0 / 3600) / 2)
    counts = np.array([len(x) for x in tree.query_ball_point(unit_vectors(ra, dec), chord)])
    truth["isolated"] = counts == 1
    return truth


def _scatter(
    rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray, snr: np.ndarray
) -> dict[str, np.ndarray]:
    """Measured positions drawn from their stated (correlated) errors."""
    n = len(ra)
    sigma = np.maximum(0.5 / np.abs(snr), 0.01)  # arcsec: 0.1″ at S/N 5, 10 mas bright
    sx = sigma * rng.uniform(0.8, 1.25, n)
    sy = sigma * rng.uniform(0.8, 1.25, n)
    rho = rng.uniform(-0.4, 0.4, n)
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    dx = sx * z1
    dy = sy * (rho * z1 + np.sqrt(1 - rho**2) * z2)
    mra, mdec = from_tangent(dx, dy, ra, dec)
    return {
        "ra": mra,
        "dec": mdec,
        "raErr": sx / 3600,
        "decErr": sy / 3600,
        "ra_dec_Cov": rho * sx * sy / 3600**2,
    }


def _visit_sources(
    rng: np.random.Generator,
    truth: pd.DataFrame,
    asteroids: pd.DataFrame,
    visit: int,
    t: float,
    band: str,
    n_noise: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One visit's DiaSources, with their truth ids and kinds."""
    true_snr = truth["amp_snr"].to_numpy() * np.sin(
        2 * np.pi * t / truth["period"].to_numpy() + truth["phase"].to_numpy()
    )
    meas = true_snr + rng.standard_normal(len(truth))
    det = np.abs(meas) >= 5.0
    v = truth[det]
    snr_v = meas[det]

    a_snr = asteroids["snr"].to_numpy()
    n_ast = len(asteroids)
    noise_ra, noise_dec = _cone_points(rng, n_noise)
    snr_n = rng.uniform(5.0, 5.6, n_noise) * rng.choice([-1, 1], n_noise)

    ra = np.r_[v["ra"].to_numpy(), asteroids["ra"].to_numpy(), noise_ra]
    dec = np.r_[v["dec"].to_numpy(), asteroids["dec"].to_numpy(), noise_dec]
    snr = np.r_[snr_v, a_snr, snr_n]
    n = len(ra)
    cols = new_columns(DIA_SOURCE_COLUMNS, n)
    cols |= _scatter(rng, ra, dec, snr)
    cols["diaSourceId"] = make_ids(0, visit, 0, n)
    cols["visit"][:] = visit
    cols["band"][:] = band
    cols["midpointMjdTai"][:] = t
    cols["snr"] = np.abs(snr)
    cols["isNegative"] = snr < 0
    cols["psfFlux"] = snr * NOISE_NJY
    cols["psfFluxErr"] = NOISE_NJY * rng.uniform(0.95, 1.05, n)
    cols["scienceFlux"] = 5000.0 + snr * NOISE_NJY + rng.normal(0, 50, n)
    cols["scienceFluxErr"] = rng.uniform(40, 60, n)
    rel = rng.uniform(0.5, 1.0, n)
    bogus_real = rng.random(n) < 0.03
    rel[bogus_real] = rng.uniform(0.0, 0.5, bogus_real.sum())
    nv = len(v) + n_ast
    rel[nv:] = rng.uniform(0.0, 0.6, n_noise)
    cols["reliability"] = rel
    cols["pixelFlags_saturatedCenter"] = rng.random(n) < 0.01
    table = to_frame(cols, DIA_SOURCE_COLUMNS)
    truth_id = np.r_[
        v["truth_id"].to_numpy(), asteroids["ssObjectId"].to_numpy(), -np.ones(n_noise)
    ]
    kind = np.array(
        [KIND_VARIABLE] * len(v) + [KIND_ASTEROID] * n_ast + [KIND_NOISE] * n_noise, dtype=object
    )
    return table, truth_id.astype(np.int64), kind


def _night_asteroids(rng: np.random.Generator, night: int, n: int) -> pd.DataFrame:
    """Asteroids in the field at the night's first visit: position, motion, prediction error."""
    ra, dec = _cone_points(rng, n)
    rate = rng.uniform(0.2, 1.0, n)  # deg/day
    ang = rng.uniform(0, 2 * np.pi, n)
    return pd.DataFrame(
        {
            "ssObjectId": 10_000_000 + night * 1000 + np.arange(n),
            "ra0": ra,
            "dec0": dec,
            "rate_ra": rate * np.cos(ang),  # deg/day on the sky
            "rate_dec": rate * np.sin(ang),
            "snr": np.exp(rng.uniform(np.log(6.0), np.log(60.0), n)),
            "predicted": rng.random(n) < 2 / 3,
            "pred_sigma": rng.uniform(0.1, 1.0, n),  # arcsec
        }
    )


def _asteroids_at(ast: pd.DataFrame, dt: float) -> pd.DataFrame:
    dx = ast["rate_ra"].to_numpy() * dt * 3600
    dy = ast["rate_dec"].to_numpy() * dt * 3600
    ra, dec = from_tangent(dx, dy, ast["ra0"].to_numpy(), ast["dec0"].to_numpy())
    out = ast.assign(ra=ra, dec=dec)
    sx, sy = tangent_offsets(ra, dec, RA0, DEC0)
    return out[np.hypot(sx, sy) < FIELD_DEG * 3600]


def _predictions(rng: np.random.Generator, ast: pd.DataFrame, n_ghost: int) -> pd.DataFrame:
    """Predicted positions of the predicted asteroids, plus some that were not detected."""
    p = ast[ast["predicted"]]
    s = p["pred_sigma"].to_numpy()
    n = len(p)
    ra, dec = from_tangent(
        s * rng.standard_normal(n),
        s * rng.standard_normal(n),
        p["ra"].to_numpy(),
        p["dec"].to_numpy(),
    )
    gra, gdec = _cone_points(rng, n_ghost)
    return pd.DataFrame(
        {
            "ssObjectId": np.r_[
                p["ssObjectId"].to_numpy(), 90_000_000 + rng.integers(0, 10**6, n_ghost)
            ],
            "designation": [f"2026 T{k}" for k in range(n + n_ghost)],
            "ra": np.r_[ra, gra],
            "dec": np.r_[dec, gdec],
            "uncertainty_arcsec": np.r_[s, rng.uniform(0.1, 0.3, n_ghost)],
            "ephRateRa": np.r_[p["rate_ra"].to_numpy(), np.full(n_ghost, 0.3)],
            "ephRateDec": np.r_[p["rate_dec"].to_numpy(), np.zeros(n_ghost)],
            "helioRange": np.full(n + n_ghost, 2.5),
        }
    )


def _forced(
    rng: np.random.Generator, objects: pd.DataFrame, visit: int, t: float, band: str, first: int
) -> pd.DataFrame:
    n = len(objects)
    return pd.DataFrame(
        {
            "diaForcedSourceId": make_ids(0, visit, 0, n, first=first)
            if n
            else np.zeros(0, np.int64),
            "diaObjectId": objects["diaObjectId"].to_numpy(np.int64),
            "visit": np.full(n, visit, np.int64),
            "band": np.full(n, band, object),
            "midpointMjdTai": np.full(n, t),
            "ra": objects["ra"].to_numpy(),
            "dec": objects["dec"].to_numpy(),
            "psfFlux": rng.normal(0, NOISE_NJY, n).astype(np.float32),
            "psfFluxErr": (NOISE_NJY * rng.uniform(0.9, 1.1, n)).astype(np.float32),
        }
    )


@cache
def simulate_run(
    *,
    seed: int = 5,
    n_single: int = 2500,
    n_pairs: int = 200,
    n_nights: int = 12,
    n_noise: int = 30,
    n_asteroids_per_night: int = 15,
) -> Run:
    """Run association over a simulated survey (cached: built once per test process)."""
    rng = np.random.default_rng(seed)
    truth = _truth(rng, n_single, n_pairs)
    objects = pd.DataFrame({c: pd.Series(dtype=t) for c, t in DIA_OBJECT_COLUMNS.items()})
    hist: list[pd.DataFrame] = []
    hist_forced: list[pd.DataFrame] = []
    versions: list[pd.DataFrame] = []
    ss_rows: list[pd.DataFrame] = []
    predicted_rows: list[pd.DataFrame] = []
    results: list[AssociationResult] = []
    midpoints = []
    visit = 0
    for night in range(n_nights):
        ast_night = _night_asteroids(rng, night, n_asteroids_per_night)
        t_night = 61000.0 + 3.0 * night + rng.uniform(0, 0.3)
        for k in range(2):  # two visits 30 min apart
            visit += 1
            t = t_night + 0.021 * k
            band = str(rng.choice(BANDS))
            ast = _asteroids_at(ast_night, 0.021 * k)
            src, truth_id, kind = _visit_sources(rng, truth, ast, visit, t, band, n_noise)
            pred = _predictions(rng, ast, 5)
            forced = _forced(rng, objects, visit, t, band, first=len(src))
            history = pd.concat(hist, ignore_index=True) if hist else src.iloc[:0]
            history_forced = pd.concat(hist_forced, ignore_index=True) if hist_forced else None
            res = associate_visit(
                src,
                objects,
                history_sources=history,
                history_forced=history_forced,
                forced_sources=forced,
                ss_predictions=pred,
                midpoint_mjd=t,
            )
            results.append(res)
            midpoints.append(t)
            out = res.dia_sources.assign(truth_id=truth_id, truth_kind=kind)
            hist.append(out)
            hist_forced.append(forced)
            versions.append(res.dia_objects)
            ss_rows.append(res.ss_sources)
            predicted_rows.append(ast[["ssObjectId", "predicted", "pred_sigma"]])
            objects = pd.concat(
                [
                    objects[~objects["diaObjectId"].isin(res.dia_objects["diaObjectId"])],
                    res.dia_objects,
                ],
                ignore_index=True,
            )
    return Run(
        truth=truth,
        sources=pd.concat(hist, ignore_index=True),
        forced=pd.concat(hist_forced, ignore_index=True),
        objects=objects.sort_values("diaObjectId", ignore_index=True),
        versions=pd.concat(versions, ignore_index=True),
        ss_sources=pd.concat(ss_rows, ignore_index=True),
        predicted=pd.concat(predicted_rows, ignore_index=True).drop_duplicates("ssObjectId"),
        results=results,
        midpoints=np.array(midpoints),
    )


def latency_workload(
    n_objects: int, n_history: int, *, seed: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, float]:
    """Inputs of one visit for timing ``associate_visit`` (not used by the tests).

    ``n_objects`` DiaObjects in the region, each with ``n_history`` earlier DiaSources and as many
    forced sources; the visit detects 80 % of them plus 10 % new sources. Returns (sources,
    objects, history, history_forced, midpoint).
    """
    rng = np.random.default_rng(seed)
    ra, dec = _cone_points(rng, n_objects)
    objs = pd.DataFrame(
        {
            "diaObjectId": np.arange(1, n_objects + 1, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "raErr": np.full(n_objects, 0.02 / 3600),
            "decErr": np.full(n_objects, 0.02 / 3600),
            "ra_dec_Cov": np.zeros(n_objects),
            "nDiaSources": np.full(n_objects, n_history),
            "firstDiaSourceMjdTai": np.full(n_objects, 60000.0),
            "lastDiaSourceMjdTai": np.full(n_objects, 60000.0 + n_history),
        }
    )
    rep = np.repeat(np.arange(n_objects), n_history)
    n_h = len(rep)
    hcols = new_columns(DIA_SOURCE_COLUMNS, n_h)
    hcols |= _scatter(rng, ra[rep], dec[rep], np.full(n_h, 20.0))
    hcols["diaSourceId"] = np.arange(n_h) + 10**9
    hcols["band"] = np.array(BANDS, object)[rng.integers(0, 6, n_h)]
    hcols["midpointMjdTai"] = 60000.0 + np.tile(np.arange(n_history), n_objects)
    hcols["psfFlux"] = rng.normal(1000, 100, n_h)
    hcols["psfFluxErr"] = np.full(n_h, 50.0)
    hist = to_frame(hcols, DIA_SOURCE_COLUMNS).assign(
        diaObjectId=objs["diaObjectId"].to_numpy()[rep]
    )
    forced = pd.DataFrame(
        {
            "diaForcedSourceId": np.arange(n_h) + 2 * 10**9,
            "diaObjectId": hist["diaObjectId"].to_numpy(),
            "band": hist["band"].to_numpy(),
            "psfFlux": rng.normal(0, 100, n_h),
            "psfFluxErr": np.full(n_h, 100.0),
        }
    )
    seen = rng.random(n_objects) < 0.8
    n_new = n_objects // 10
    nra, ndec = _cone_points(rng, n_new)
    sra, sdec = np.r_[ra[seen], nra], np.r_[dec[seen], ndec]
    n = len(sra)
    cols = new_columns(DIA_SOURCE_COLUMNS, n)
    cols |= _scatter(rng, sra, sdec, rng.uniform(5, 100, n))
    cols["diaSourceId"] = make_ids(0, 1, 0, n)
    cols["band"][:] = "r"
    t = 60000.0 + n_history + 1
    cols["midpointMjdTai"][:] = t
    cols |= {"snr": np.full(n, 10.0), "reliability": np.full(n, 0.9)}
    cols |= {"psfFlux": rng.normal(1000, 100, n), "psfFluxErr": np.full(n, 50.0)}
    return to_frame(cols, DIA_SOURCE_COLUMNS), objs, hist, forced, t
