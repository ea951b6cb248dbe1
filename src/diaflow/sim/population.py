"""Solar-system populations: main-belt asteroids and near-Earth objects near the survey fields.

Orbital elements are drawn from simple fits to the known populations (main belt: a 2.1-3.3 au
avoiding the 3:1 and 5:2 Kirkwood gaps, e Rayleigh 0.1, i Rayleigh 7 deg; NEOs: q < 1.3 au,
e 0.1-0.75, i Rayleigh 12 deg), H from a power law (log10 N(<H) rising 0.3 per mag).
Only objects that appear within ``radius_deg`` of a field at the survey's mid-time are kept. To
make that cheap, the node and the argument of perihelion (uniform and independent of everything
else) are not drawn blindly: (a, e, i) triples are chosen from a large pool in proportion to the
chance that blind angles would put them in the region (windows in heliocentric longitude and
latitude that contain every direction from which the orbit could appear there), their angles are
drawn uniformly inside those windows, and the exact geocentric test decides. The kept sample is
the population conditioned on the region, at a small fraction of the cost of blind rejection.
(A pool triple picked twice gets independent angles, so it yields two different orbits.)

Columns of the returned table: ``ss_id``, ``population`` (mba | neo), ``a_au``, ``e``,
``inc_deg``, ``node_deg``, ``argperi_deg``, ``mean_anomaly_deg``, ``epoch_mjd_tdb``, ``h_mag``,
``g_slope``, ``taxonomy`` (S | C).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..ephem import KeplerianOrbits, observer_heliocentric, solve_kepler
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
    return {
        "a": a,
        "e": e,
        "inc": inc,
        "node": rng.uniform(0, 360, n),
        "argperi": rng.uniform(0, 360, n),
    }


def _windows(
    earth_ecl: np.ndarray, d_ecl: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, radius_deg: float
) -> tuple[np.ndarray, ...]:
    """Heliocentric ecliptic longitude and latitude windows (centre, half-width; radians) that
    contain every heliocentric direction from which an orbit with distances in [r_lo, r_hi] can
    appear within ``radius_deg`` of the geocentric direction ``d_ecl``; and whether any can.
    """
    lons, lats, scales = [], [], []
    for frac in np.linspace(0.0, 1.0, 7):
        rr = r_lo + frac * (r_hi - r_lo)
        ed = d_ecl @ earth_ecl
        disc = ed**2 - earth_ecl @ earth_ecl + rr**2
        delta = np.where(disc > 0, -ed + np.sqrt(np.clip(disc, 0, None)), np.nan)
        delta = np.where(delta > 0, delta, np.nan)
        p = earth_ecl[None, :] + delta[:, None] * d_ecl
        lons.append(np.arctan2(p[:, 1], p[:, 0]))
        lats.append(np.arcsin(np.clip(p[:, 2] / rr, -1, 1)))
        scales.append(delta / rr)
    lon, lat, scale = np.array(lons), np.array(lats), np.array(scales)
    ok = np.isfinite(lon)
    valid = ok.any(axis=0)
    lon, lat, scale = np.where(ok, lon, 0.0), np.where(ok, lat, 0.0), np.where(ok, scale, 0.0)
    first = np.where(ok, lon, -np.inf).max(axis=0)
    first = np.where(valid, first, 0.0)
    dlon = (lon - first + np.pi) % (2 * np.pi) - np.pi
    lo_lon = np.where(ok, dlon, np.inf).min(axis=0)
    hi_lon = np.where(ok, dlon, -np.inf).max(axis=0)
    lo_lat = np.where(ok, lat, np.inf).min(axis=0)
    hi_lat = np.where(ok, lat, -np.inf).max(axis=0)
    lo_lon, hi_lon = np.where(valid, lo_lon, 0.0), np.where(valid, hi_lon, 0.0)
    lo_lat, hi_lat = np.where(valid, lo_lat, 0.0), np.where(valid, hi_lat, 0.0)
    # The field's angular radius seen from the object, plus a margin for the sampling in r.
    pad = np.deg2rad(radius_deg) * scale.max(axis=0) + np.deg2rad(0.5)
    lat_c, lat_h = (lo_lat + hi_lat) / 2, (hi_lat - lo_lat) / 2 + pad
    lon_c = first + (lo_lon + hi_lon) / 2
    lon_h = np.minimum(
        (hi_lon - lo_lon) / 2 + pad / np.cos(np.clip(np.abs(lat_c) + lat_h, 0, 1.5)), np.pi
    )
    z = np.zeros_like(lon_c)
    return (
        np.where(valid, lon_c, z),
        np.where(valid, lon_h, z),
        np.where(valid, lat_c, z),
        np.where(valid, lat_h, z),
        valid,
    )


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
    n_picked = 0
    while n_kept < target and drawn < max_draws:
        batch = int(min(max(100_000, 50 * (target - n_kept)), 2_000_000))
        drawn += batch
        el = _draw_elements(kind, batch, rng)
        k = rng.integers(len(centres), size=batch)
        d_ecl = np.array([_ecl(*c) for c in centres])[k]
        lon_c, lon_h, lat_c, lat_h, valid = _windows(
            earth_ecl, d_ecl, el["a"] * (1 - el["e"]), el["a"] * (1 + el["e"]), radius_deg
        )
        # Arguments of latitude u giving a heliocentric latitude inside the window: two arcs.
        sin_i = np.maximum(np.sin(np.deg2rad(el["inc"])), 1e-9)
        s_lo = np.clip(np.sin(lat_c - lat_h) / sin_i, -1, 1)
        s_hi = np.clip(np.sin(lat_c + lat_h) / sin_i, -1, 1)
        arc = np.arcsin(s_hi) - np.arcsin(s_lo)
        # Choose (a, e, i) in proportion to the chance that a uniform node and argument of
        # latitude land in the windows; only the chosen pay for Kepler's equation.
        weight = np.where(valid, (lon_h / np.pi) * (arc / np.pi), 0.0)
        want = (target - n_kept) / max(n_kept / max(n_picked, 1), 0.02) if n_picked else 10 * target
        n_pick = min(int(1.2 * want) + 10, int((weight > 0).sum()), batch // 5)
        n_picked += n_pick
        if n_pick <= 0:
            continue
        # With replacement, so that every triple keeps exactly its weight.
        picked = rng.choice(batch, size=n_pick, replace=True, p=weight / weight.sum())
        el = {key: v[picked] for key, v in el.items()}
        lon_c, lon_h, d_ecl = lon_c[picked], lon_h[picked], d_ecl[picked]
        s_lo, arc = s_lo[picked], arc[picked]
        n = picked.size
        m = rng.uniform(0, 360, n)
        e = el["e"]
        ecc = solve_kepler(np.deg2rad(m), e)
        f = 2 * np.arctan2(np.sqrt(1 + e) * np.sin(ecc / 2), np.sqrt(1 - e) * np.cos(ecc / 2))
        u = np.arcsin(s_lo) + rng.uniform(0, 1, n) * arc
        u = np.where(rng.uniform(size=n) < 0.5, u, np.pi - u)
        el["argperi"] = np.rad2deg(u - f) % 360.0
        # Node: put the heliocentric longitude uniformly inside its window.
        lam = lon_c + rng.uniform(-1, 1, n) * lon_h
        inc = np.deg2rad(el["inc"])
        el["node"] = np.rad2deg(lam - np.arctan2(np.sin(u) * np.cos(inc), np.cos(u))) % 360.0
        orbits = KeplerianOrbits(
            el["a"], el["e"], el["inc"], el["node"], el["argperi"], m, epoch_tdb
        )
        pos, _ = orbits.state(epoch_tdb)
        rel = pos - earth[None, :]
        rel /= np.linalg.norm(rel, axis=1)[:, None]
        inside = np.zeros(n, bool)
        for ra0, dec0 in centres:
            ra, dec = np.deg2rad(ra0), np.deg2rad(dec0)
            vec = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
            inside |= rel @ vec > cos_r
        if inside.any():
            kept.append(
                pd.DataFrame(
                    {
                        "a_au": el["a"][inside],
                        "e": el["e"][inside],
                        "inc_deg": el["inc"][inside],
                        "node_deg": el["node"][inside],
                        "argperi_deg": el["argperi"][inside],
                        "mean_anomaly_deg": m[inside],
                    }
                )
            )
            n_kept += int(inside.sum())
    if n_kept < target:
        logger.warning(
            "population %s: kept %d of %d wanted after %d draws", kind, n_kept, target, drawn
        )
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
    return pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in (
                ("population", object),
                ("a_au", float),
                ("e", float),
                ("inc_deg", float),
                ("node_deg", float),
                ("argperi_deg", float),
                ("mean_anomaly_deg", float),
                ("epoch_mjd_tdb", float),
                ("h_mag", float),
                ("g_slope", float),
                ("taxonomy", object),
            )
        }
    )


def orbits_of(pop: pd.DataFrame) -> KeplerianOrbits:
    """The Keplerian orbits of a population table (one common epoch)."""
    epoch = float(pop["epoch_mjd_tdb"].iloc[0]) if len(pop) else 0.0
    return KeplerianOrbits(
        pop["a_au"].to_numpy(float),
        pop["e"].to_numpy(float),
        pop["inc_deg"].to_numpy(float),
        pop["node_deg"].to_numpy(float),
        pop["argperi_deg"].to_numpy(float),
        pop["mean_anomaly_deg"].to_numpy(float),
        epoch,
    )
