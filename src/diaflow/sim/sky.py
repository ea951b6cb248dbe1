"""The static and variable sky: stars, galaxies, periodic and stochastic variables, transients.

Everything is drawn once per survey from the seed, inside circles about the fields, and returned
as truth tables (pandas DataFrames, written to Parquet by :mod:`diaflow.sim.survey`).

``static`` columns: ``id``, ``kind`` (star | galaxy), ``ra_deg``, ``dec_deg`` (ICRS at epoch
J2016.0 for stars), ``pm_ra_mas_yr`` (includes cos dec), ``pm_dec_mas_yr``, ``mag_<band>`` (mean
AB), galaxy shape ``sersic_n``, ``half_light_arcsec``, ``g1``, ``g2`` (reduced shear giving the
ellipticity), ``redshift``, and variability ``var_type`` (none | rrlyrae | eclipsing | agn),
``period_d``, ``t0_mjd``, ``amplitude_mag``, ``depth2_frac``, ``width_phase``, ``tau_d``,
``sf_inf_mag``.

``transients`` columns: ``id``, ``type`` (snia | fast), ``ra_deg``, ``dec_deg``, ``host_id`` (-1
when hostless), ``redshift``, ``t_peak_mjd``, ``peak_mag_<band>``, ``rise_d``, ``fall_d`` (observer
frame, r band).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import BANDS, SkyConfig

__all__ = [
    "ID_TRANSIENT_BASE",
    "J2016_MJD",
    "draw_static_sky",
    "draw_transients",
    "power_law_mags",
    "random_in_circles",
]

J2016_MJD = 57388.5
"""Reference epoch of stellar positions (Gaia DR3), MJD."""
ID_TRANSIENT_BASE = 1_000_000_000
"""Transient ids start here; static sources count from 1."""

_SN_PEAK_COLOR = {"u": 0.6, "g": 0.05, "r": 0.0, "i": 0.3, "z": 0.35, "y": 0.4}
_FAST_PEAK_COLOR = {"u": -0.4, "g": -0.2, "r": 0.0, "i": 0.15, "z": 0.25, "y": 0.3}


def random_in_circles(
    rng: np.random.Generator, centres: list[tuple[float, float]], radius_deg: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform on the sphere within ``radius_deg`` of any centre.

    Overlapping caps are counted once, so the density is uniform over their union.
    """
    ras: list[np.ndarray] = [np.zeros(0)]
    decs: list[np.ndarray] = [np.zeros(0)]
    have = 0
    while have < n and centres:
        m = n - have
        pick = rng.integers(len(centres), size=m)  # equal-area caps: each equally likely
        ra, dec = np.empty(m), np.empty(m)
        keep = np.ones(m, bool)
        for k, c in enumerate(centres):
            idx = np.flatnonzero(pick == k)
            ra[idx], dec[idx] = _uniform_cap(rng, c, radius_deg, idx.size)
            # A point of cap k counts only if no earlier cap holds it: no double density.
            for other in centres[:k]:
                keep[idx] &= _sep_deg(ra[idx], dec[idx], *other) > radius_deg
        ras.append(ra[keep])
        decs.append(dec[keep])
        have += int(keep.sum())
    return np.concatenate(ras)[:n], np.concatenate(decs)[:n]


def _uniform_cap(
    rng: np.random.Generator, centre: tuple[float, float], radius_deg: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    cos_r = np.cos(np.deg2rad(radius_deg))
    z = rng.uniform(cos_r, 1.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - z**2)
    v = np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)  # about the +z pole
    ra0, dec0 = np.deg2rad(centre[0]), np.deg2rad(centre[1])
    # Rotate the pole to the centre.
    ry = np.array([[np.sin(dec0), 0, np.cos(dec0)], [0, 1, 0], [-np.cos(dec0), 0, np.sin(dec0)]])
    rz = np.array([[np.cos(ra0), -np.sin(ra0), 0], [np.sin(ra0), np.cos(ra0), 0], [0, 0, 1]])
    w = v @ (rz @ ry).T
    return np.rad2deg(np.arctan2(w[:, 1], w[:, 0])) % 360, np.rad2deg(
        np.arcsin(np.clip(w[:, 2], -1, 1))
    )


def _sep_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    ra, dec, ra0r, dec0r = np.deg2rad(ra), np.deg2rad(dec), np.deg2rad(ra0), np.deg2rad(dec0)
    c = np.sin(dec) * np.sin(dec0r) + np.cos(dec) * np.cos(dec0r) * np.cos(ra - ra0r)
    return np.rad2deg(np.arccos(np.clip(c, -1, 1)))


def power_law_mags(
    rng: np.random.Generator, n: int, lo: float, hi: float, slope: float
) -> np.ndarray:
    """Magnitudes with ``log10 dN/dm = slope * m + const`` between ``lo`` and ``hi``."""
    u = rng.uniform(0, 1, n)
    k = slope * np.log(10)
    return np.log(np.exp(k * lo) + u * (np.exp(k * hi) - np.exp(k * lo))) / k


def _area_deg2(centres: list[tuple[float, float]], radius_deg: float) -> float:
    """Area of the union of caps, by Monte Carlo on a fixed grid (deterministic)."""
    cap = 2 * np.pi * (1 - np.cos(np.deg2rad(radius_deg))) * (180 / np.pi) ** 2
    if len(centres) == 1:
        return float(cap)
    rng = np.random.default_rng(0)
    total = 0.0
    for k, c in enumerate(centres):
        ra, dec = _uniform_cap(rng, c, radius_deg, 20000)
        keep = np.ones(ra.size, bool)
        for other in centres[:k]:
            keep &= _sep_deg(ra, dec, *other) > radius_deg
        total += cap * keep.mean()
    return float(total)


def draw_static_sky(
    cfg: SkyConfig, centres: list[tuple[float, float]], radius_deg: float, rng: np.random.Generator
) -> pd.DataFrame:
    """Stars (some variable) and galaxies (some with AGN) within ``radius_deg`` of the centres."""
    area_arcmin2 = _area_deg2(centres, radius_deg) * 3600.0
    n_star = rng.poisson(cfg.star_density_per_arcmin2 * area_arcmin2)
    n_gal = rng.poisson(cfg.galaxy_density_per_arcmin2 * area_arcmin2)

    # Stars: r magnitudes from a power law; colours along a main-sequence-like locus.
    ra, dec = random_in_circles(rng, centres, radius_deg, n_star)
    r = power_law_mags(rng, n_star, *cfg.star_mag_range, cfg.star_count_slope)
    gr = np.clip(rng.normal(0.9, 0.35, n_star), 0.1, 1.6)
    stars = pd.DataFrame({"kind": "star", "ra_deg": ra, "dec_deg": dec})
    stars["pm_ra_mas_yr"] = rng.normal(0, 4.0, n_star) * np.where(
        rng.uniform(size=n_star) < 0.02, 10, 1
    )
    stars["pm_dec_mas_yr"] = rng.normal(-2.0, 4.0, n_star)
    colors = {
        "u": 1.1 + 1.2 * gr,
        "g": gr,
        "r": 0 * gr,
        "i": -0.42 * gr,
        "z": -0.6 * gr,
        "y": -0.68 * gr,
    }
    for b in BANDS:
        stars[f"mag_{b}"] = r + colors[b] + (0 if b in "gr" else rng.normal(0, 0.03, n_star))

    # Galaxies: Sersic profiles, sizes shrinking with magnitude, blue discs and red spheroids.
    ra, dec = random_in_circles(rng, centres, radius_deg, n_gal)
    r = power_law_mags(rng, n_gal, *cfg.galaxy_mag_range, 0.33)
    red = rng.uniform(size=n_gal) < 0.3
    gals = pd.DataFrame(
        {"kind": "galaxy", "ra_deg": ra, "dec_deg": dec, "pm_ra_mas_yr": 0.0, "pm_dec_mas_yr": 0.0}
    )
    gcol = np.where(red, 1.0, 0.45) + rng.normal(0, 0.1, n_gal)
    gal_colors = {
        "u": 2.2 * gcol,
        "g": gcol,
        "r": 0 * gcol,
        "i": -0.35 * gcol - 0.05,
        "z": -0.5 * gcol - 0.1,
        "y": -0.6 * gcol - 0.12,
    }
    for b in BANDS:
        gals[f"mag_{b}"] = r + gal_colors[b]
    # Indices on a 0.5 grid: GalSim caches each index's profile tables, so few distinct values
    # keep rendering fast.
    gals["sersic_n"] = (
        np.round(2 * np.where(red, rng.uniform(2.5, 4.0, n_gal), rng.uniform(0.7, 1.5, n_gal))) / 2
    )
    gals["half_light_arcsec"] = np.clip(
        1.2 * 10 ** (-0.12 * (r - 20)) * rng.lognormal(0, 0.3, n_gal), 0.25, 4.0
    )
    e = np.clip(rng.rayleigh(0.2, n_gal), 0, 0.7)
    beta = rng.uniform(0, np.pi, n_gal)
    gals["g1"] = e * np.cos(2 * beta) / 2  # |g| = e / 2 roughly, keeps axis ratios sane
    gals["g2"] = e * np.sin(2 * beta) / 2
    gals["redshift"] = np.clip(0.1 + 0.12 * (r - 18) + rng.normal(0, 0.1, n_gal), 0.02, 2.0)

    sky = pd.concat([stars, gals], ignore_index=True)
    sky.insert(0, "id", np.arange(1, len(sky) + 1, dtype=np.int64))
    for col, fill in (
        ("sersic_n", 0.0),
        ("half_light_arcsec", 0.0),
        ("g1", 0.0),
        ("g2", 0.0),
        ("redshift", 0.0),
    ):
        sky[col] = sky[col].fillna(fill) if col in sky else fill
    _add_variability(sky, cfg, rng)
    return sky


def _add_variability(sky: pd.DataFrame, cfg: SkyConfig, rng: np.random.Generator) -> None:
    n = len(sky)
    var_type = np.full(n, "none", dtype=object)
    star = (sky["kind"] == "star").to_numpy()
    gal = ~star
    u = rng.uniform(size=n)
    var_type[star & (u < cfg.rr_lyrae_fraction)] = "rrlyrae"
    var_type[
        star & (u >= cfg.rr_lyrae_fraction) & (u < cfg.rr_lyrae_fraction + cfg.eclipsing_fraction)
    ] = "eclipsing"
    var_type[gal & (u < cfg.agn_fraction)] = "agn"
    sky["var_type"] = var_type
    period = np.where(
        var_type == "rrlyrae",
        rng.uniform(0.45, 0.75, n),
        np.where(var_type == "eclipsing", 10 ** rng.uniform(-0.5, 0.8, n), 0.0),
    )
    sky["period_d"] = period
    sky["t0_mjd"] = np.where(period > 0, 60000.0 + rng.uniform(0, 1, n) * period, 0.0)
    sky["amplitude_mag"] = np.select(
        [var_type == "rrlyrae", var_type == "eclipsing"],
        [rng.uniform(0.5, 1.1, n), rng.uniform(0.15, 0.8, n)],
        0.0,
    )
    sky["depth2_frac"] = np.where(var_type == "eclipsing", rng.uniform(0.1, 0.8, n), 0.0)
    sky["width_phase"] = np.where(var_type == "eclipsing", rng.uniform(0.04, 0.1, n), 0.0)
    sky["tau_d"] = np.where(var_type == "agn", 10 ** rng.uniform(1.7, 2.6, n), 0.0)
    sky["sf_inf_mag"] = np.where(var_type == "agn", rng.uniform(0.15, 0.35, n), 0.0)


def draw_transients(
    cfg: SkyConfig,
    static: pd.DataFrame,
    centres: list[tuple[float, float]],
    radius_deg: float,
    t_range_mjd: tuple[float, float],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """SN Ia-like and fast transients peaking between 30 days before and the end of the survey.

    SN Ia-like: peak M = -19.3 +/- 0.15, redshift 0.05-0.5, rise 17 d and fall 30 d rest-frame
    (stretched by 1 + z). Fast: peak M -16 to -18.5, z 0.01-0.15, rise about 1 d, fall 2-5 d.
    Hosted transients sit on a galaxy, offset along its light profile; hosts lend their redshift.
    """
    from astropy.cosmology import Planck18

    t0, t1 = t_range_mjd[0] - 30.0, t_range_mjd[1]
    area = _area_deg2(centres, radius_deg)
    n = rng.poisson(cfg.transients_per_deg2_per_day * area * (t1 - t0))
    fast = rng.uniform(size=n) < cfg.fast_transient_fraction
    hostless = rng.uniform(size=n) < cfg.hostless_fraction
    gals = static[static["kind"] == "galaxy"]
    tr = pd.DataFrame(
        {
            "id": ID_TRANSIENT_BASE + np.arange(n, dtype=np.int64),
            "type": np.where(fast, "fast", "snia"),
        }
    )
    ra, dec = random_in_circles(rng, centres, radius_deg, n)
    host = np.full(n, -1, dtype=np.int64)
    z = np.where(fast, rng.uniform(0.01, 0.15, n), rng.uniform(0.05, 0.5, n))
    if len(gals):
        pick = rng.integers(0, len(gals), n)
        has_host = ~hostless
        g = gals.iloc[pick]
        host = np.where(has_host, g["id"].to_numpy(), -1)
        # Offset ~ exponential in the host's half-light radius, random direction.
        off = rng.exponential(0.6, n) * g["half_light_arcsec"].to_numpy() / 3600.0
        ang = rng.uniform(0, 2 * np.pi, n)
        cosd = np.cos(np.deg2rad(g["dec_deg"].to_numpy()))
        ra = np.where(has_host, g["ra_deg"].to_numpy() + off * np.sin(ang) / cosd, ra)
        dec = np.where(has_host, g["dec_deg"].to_numpy() + off * np.cos(ang), dec)
        z = np.where(has_host & ~fast, np.clip(g["redshift"].to_numpy(), 0.03, 0.8), z)
    tr["ra_deg"], tr["dec_deg"], tr["host_id"], tr["redshift"] = ra % 360, dec, host, z
    tr["t_peak_mjd"] = rng.uniform(t0, t1, n)
    mu = Planck18.distmod(z).value if n else np.zeros(0)
    abs_peak = np.where(fast, rng.uniform(-18.5, -16.0, n), rng.normal(-19.3, 0.15, n))
    for b in BANDS:
        color = np.where(fast, _FAST_PEAK_COLOR[b], _SN_PEAK_COLOR[b])
        tr[f"peak_mag_{b}"] = abs_peak + mu + color - 2.5 * np.log10(1 + z)
    stretch = 1 + z
    tr["rise_d"] = np.where(fast, rng.uniform(0.5, 1.5, n), rng.normal(17, 1.5, n)) * stretch
    tr["fall_d"] = np.where(fast, rng.uniform(2.0, 5.0, n), rng.normal(30, 4, n)) * stretch
    return tr
