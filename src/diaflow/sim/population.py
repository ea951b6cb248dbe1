"""Solar-system populations: main-belt asteroids and near-Earth objects near the survey fields.

Orbital elements are drawn from simple fits to the known populations (main belt: a 2.1-3.3 au
avoiding the 3:1 and 5:2 Kirkwood gaps, e Rayleigh 0.1, i Rayleigh 7 deg; NEOs: q < 1.3 au,
e 0.1-0.75, i Rayleigh 12 deg), H from a power law (log10 N(<H) rising 0.3 per mag).
Only objects that appear within ``radius_deg`` of a field at the survey's mid-time are kept. To
make that cheap, the population's symmetry about the ecliptic pole is used: each drawn orbit is
turned about the pole (its node shifted) so that its heliocentric longitude falls uniformly inside
a window that contains every longitude from which it could appear in the region, accepted with
probability window/360 deg, then by the exact geocentric test. Since the node is uniform and
independent of the other elements, the kept sample is the population conditioned on the region.

Columns of the returned table: ``ss_id``, ``population`` (mba | neo), ``a_au``, ``e``,
``inc_deg``, ``node_deg``, ``argperi_deg``, ``mean_anomaly_deg``, ``epoch_mjd_tdb``, ``h_mag``,
``g_slope``, ``taxonomy`` (S | C).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..ephem import KeplerianOrbits, observer_heliocentric
from ..ephem.twobody import OBLIQUITY_J2000_DEG
from .sky import power_law_mags

__all__ = ["ID_SSO_BASE", "SSO_COLORS", "draw_population", "orbits_of"]

logger = logging.getLogger(__name__)

ID_SSO_BASE = 2_000_000_000
SSO_COLORS = {
    # AB colour relative to V, per taxonomic class (solar colours reddened for S types).
    "S": {"u": 1.45, "g": 0.35, "r": -0.21, "i": -0.31, "z": -0.30, "y": -0.30},
    "C": {"u": 1.10, "g": 0.25, "r": -0.17, "i": -0.27, "z": -0.30, "y": -0.31},
}


def _ecl(ra_deg: float, dec_deg: float) -> np.ndarray:
    ra, dec = np.deg2rad(ra_deg), np.deg2rad(dec_deg)
    v = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    eps = np.deg2rad(OBLIQUITY_J2000_DEG)
    c, s = np.cos(eps), np.sin(eps)
    return np.array([v[0], c * v[1] + s * v[2], -s * v[1] + c * v[2]])


def _draw_elements(kind: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if kind == "mba":
        a = rng.uniform(2.1, 3.3, 3 * n)
        a = a[(np.abs(a - 2.50) > 0.02) & (np.abs(a - 2.82) > 0.02)][:n]
        while a.size < n:
            a = np.concatenate([a, rng.uniform(2.1, 3.3, n - a.size)])
        e = np.clip(rng.rayleigh(0.1, n), 0.0, 0.35)
        inc = np.clip(rng.rayleigh(7.0, n), 0.0, 35.0)
    else:
        a = rng.uniform(0.9, 2.9, n)
        qmax = np.minimum(1.3, a * 0.9)
        qmin = np.maximum(0.5, a * 0.25)
        q = rng.uniform(qmin, np.maximum(qmin, qmax))
        e = np.clip(1 - q / a, 0.02, 0.85)
        inc = np.clip(rng.rayleigh(12.0, n), 0.0, 60.0)
    return {"a": a, "e": e, "inc": inc, "node": rng.uniform(0, 360, n), "argperi": rng.uniform(0, 360, n)}


def _longitude_window(earth_ecl: np.ndarray, d_ecl: np.ndarray, r: np.ndarray, radius_deg: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and half-width (deg) of the heliocentric longitudes seen near direction ``d``."""
    lams = []
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        rr = r[0] + frac * (r[1] - r[0])
        ed = d_ecl @ earth_ecl
        disc = ed**2 - earth_ecl @ earth_ecl + rr**2
        delta = np.where(disc > 0, -ed + np.sqrt(np.clip(disc, 0, None)), np.nan)
        p = earth_ecl[None, :] + delta[:, None] * d_ecl
        lam = np.rad2deg(np.arctan2(p[:, 1], p[:, 0]))
        lams.append(np.where(delta > 0, lam, np.nan))
    lams_arr = np.array(lams)
    valid = np.isfinite(lams_arr).any(axis=0)
    first = np.where(np.isfinite(lams_arr[0]), lams_arr[0], np.nanmax(
        np.where(np.isfinite(lams_arr), lams_arr, -np.inf), axis=0))
    dev0 = (lams_arr - first + 180) % 360 - 180  # unwrap about one valid longitude
    ok = np.isfinite(dev0)
    mean_dev = np.where(ok, dev0, 0.0).sum(axis=0) / np.maximum(ok.sum(axis=0), 1)
    ref = np.where(valid, first + mean_dev, 0.0)
    dev = np.abs((lams_arr - ref + 180) % 360 - 180)
    half = np.nanmax(np.where(np.isfinite(dev), dev, 0), axis=0) + 3 * radius_deg + 2.0
    return ref, np.minimum(half, 180.0), valid


def draw_population(
    kind: str,
    density_per_deg2: float,
    h_range: tuple[float, float],
    centres: list[tuple[float, float]],
    radius_deg: float,
    mjd_tai: float,
    rng: np.random.Generator,
    *,
    max_draws: int = 20_000_000,
) -> pd.DataFrame:
    """Objects of one population within ``radius_deg`` of the centres at ``mjd_tai``.

    The epoch of the osculating elements is ``mjd_tai`` (as TDB), the middle of the survey.
    """
    from .sky import _area_deg2

    target = int(rng.poisson(density_per_deg2 * _area_deg2(centres, radius_deg)))
    if target == 0:
        return _empty()
    epoch_tdb = float(mjd_tai + 32.184 / 86400.0)
    earth = observer_heliocentric(None, [mjd_tai])[0]
    eps = np.deg2rad(OBLIQUITY_J2000_DEG)
    c, s = np.cos(eps), np.sin(eps)
    earth_ecl = np.array([earth[0], c * earth[1] + s * earth[2], -s * earth[1] + c * earth[2]])
    kept: list[pd.DataFrame] = []
    n_kept = drawn = 0
    cos_r = np.cos(np.deg2rad(radius_deg))
    to_ecl = np.array([[1, 0, 0], [0, c, s], [0, -s, c]])  # equatorial -> ecliptic
    while n_kept < target and drawn < max_draws:
        batch = 200_000
        drawn += batch
        el = _draw_elements(kind, batch, rng)
        k = rng.integers(len(centres), size=batch)
        d_ecl = np.array([_ecl(*centres[j]) for j in range(len(centres))])[k]
        r_lo, r_hi = el["a"] * (1 - el["e"]), el["a"] * (1 + el["e"])
        ref, half, valid = _longitude_window(earth_ecl, d_ecl, (r_lo, r_hi), radius_deg)
        m = rng.uniform(0, 360, batch)
        pos, _ = KeplerianOrbits(el["a"], el["e"], el["inc"], el["node"], el["argperi"], m,
                                 epoch_tdb).state(epoch_tdb)
        ecl = pos @ to_ecl.T
        lam_now = np.arctan2(ecl[:, 1], ecl[:, 0])
        shift = np.deg2rad(ref + rng.uniform(-1, 1, batch) * half) - lam_now
        el["node"] = (el["node"] + np.rad2deg(shift)) % 360.0
        # Turning the node turns the heliocentric position about the ecliptic pole by the same angle.
        cs, sn = np.cos(shift), np.sin(shift)
        ecl = np.stack([cs * ecl[:, 0] - sn * ecl[:, 1], sn * ecl[:, 0] + cs * ecl[:, 1], ecl[:, 2]], axis=1)
        pos = ecl @ to_ecl
        rel = pos - earth[None, :]
        rel /= np.linalg.norm(rel, axis=1)[:, None]
        inside = np.zeros(batch, bool)
        for ra0, dec0 in centres:
            ra, dec = np.deg2rad(ra0), np.deg2rad(dec0)
            u = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
            inside |= rel @ u > cos_r
        inside &= valid
        accept = inside & (rng.uniform(size=batch) < half / 180.0)
        if accept.any():
            df = pd.DataFrame({
                "a_au": el["a"][accept], "e": el["e"][accept], "inc_deg": el["inc"][accept],
                "node_deg": el["node"][accept], "argperi_deg": el["argperi"][accept],
                "mean_anomaly_deg": m[accept],
            })
            kept.append(df)
            n_kept += len(df)
    if n_kept < target:
        logger.warning("population %s: kept %d of %d wanted after %d draws", kind, n_kept, target, drawn)
    pop = pd.concat(kept, ignore_index=True).iloc[:target].copy()
    n = len(pop)
    pop.insert(0, "population", kind)
    pop["epoch_mjd_tdb"] = epoch_tdb
    pop["h_mag"] = power_law_mags(rng, n, *h_range, 0.3)
    taxonomy = np.where(rng.uniform(size=n) < (0.6 if kind == "mba" else 0.7), "S", "C")
    pop["g_slope"] = np.where(taxonomy == "S", 0.25, 0.12)
    pop["taxonomy"] = taxonomy
    return pop


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
        ("population", object), ("a_au", float), ("e", float), ("inc_deg", float),
        ("node_deg", float), ("argperi_deg", float), ("mean_anomaly_deg", float),
        ("epoch_mjd_tdb", float), ("h_mag", float), ("g_slope", float), ("taxonomy", object))})


def orbits_of(pop: pd.DataFrame) -> KeplerianOrbits:
    """The Keplerian orbits of a population table (one common epoch)."""
    epoch = float(pop["epoch_mjd_tdb"].iloc[0]) if len(pop) else 0.0
    return KeplerianOrbits(
        pop["a_au"].to_numpy(float), pop["e"].to_numpy(float), pop["inc_deg"].to_numpy(float),
        pop["node_deg"].to_numpy(float), pop["argperi_deg"].to_numpy(float),
        pop["mean_anomaly_deg"].to_numpy(float), epoch,
    )
