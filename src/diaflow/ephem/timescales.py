"""Time scales: MJD TAI (the survey's clock) to TT, TDB and UT1-approximations, via ERFA."""

from __future__ import annotations

import warnings

import erfa
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MJD_JD_OFFSET", "mjd_tai_to_tdb_jd", "mjd_tai_to_utc_jd", "tai_minus_utc_s"]

MJD_JD_OFFSET = 2400000.5
TT_MINUS_TAI_S = 32.184


def tai_minus_utc_s(mjd_tai: ArrayLike) -> NDArray[np.float64]:
    """TAI - UTC in seconds (leap seconds from ERFA's table)."""
    mjd = np.atleast_1d(np.asarray(mjd_tai, dtype=float))
    out = np.empty_like(mjd)
    # Since 1972 TAI-UTC changes only at UTC midnights: look each UTC day up once.
    modern = mjd >= 41317.0
    if modern.any():
        days, inverse = np.unique(np.floor(mjd[modern] - 37.0 / 86400.0), return_inverse=True)
        per_day = np.array([_dat(d + 0.5) for d in days])
        first = per_day[inverse]
        # Within TAI-UTC seconds after a UTC midnight the UTC date is still the previous day.
        redo = np.flatnonzero(np.floor(mjd[modern] - first / 86400.0) != days[inverse])
        first[redo] = [_dat_tai(m) for m in mjd[modern][redo]]
        out[modern] = first
    out[~modern] = [_dat_tai(m) for m in mjd[~modern]]
    return out


def _dat(mjd_utc: float) -> float:
    year, month, day, frac = erfa.jd2cal(MJD_JD_OFFSET, mjd_utc)
    with warnings.catch_warnings():
        # Past the leap-second table ERFA warns "dubious year" and keeps the last value, which
        # is the best prediction there is.
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        return float(erfa.dat(year, month, day, frac))


def _dat_tai(mjd_tai: float) -> float:
    """TAI-UTC at one TAI time: erfa.dat wants a UTC date, so look up twice."""
    guess = 37.0
    for _ in range(2):
        guess = _dat(mjd_tai - guess / 86400.0)
    return guess


def mjd_tai_to_utc_jd(mjd_tai: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-part Julian date in UTC (used as UT1; |UT1-UTC| < 0.9 s is ignored)."""
    mjd = np.atleast_1d(np.asarray(mjd_tai, dtype=float))
    return np.full_like(mjd, MJD_JD_OFFSET), mjd - tai_minus_utc_s(mjd) / 86400.0


def mjd_tai_to_tdb_jd(mjd_tai: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-part Julian date in TDB, as JPL ephemerides expect.

    TDB - TT is taken from ERFA's ``dtdb`` (Fairhead & Bretagnon series) at the geocentre; it
    never exceeds 1.7 ms.
    """
    mjd = np.atleast_1d(np.asarray(mjd_tai, dtype=float))
    tt = mjd + TT_MINUS_TAI_S / 86400.0
    dtdb = erfa.dtdb(MJD_JD_OFFSET, tt, 0.0, 0.0, 0.0, 0.0)
    return np.full_like(mjd, MJD_JD_OFFSET), tt + dtdb / 86400.0
