"""Ephemerides shared by the simulator and MOPS.

Time scales, DE440 bodies, observatory positions, two-body orbits.
"""

from .bodies import (
    AU_KM,
    C_AU_PER_DAY,
    GM_SUN_AU3_D2,
    Site,
    earth_barycentric,
    observer_heliocentric,
    site_geocentric,
    sun_barycentric,
)
from .timescales import mjd_tai_to_tdb_jd, mjd_tai_to_utc_jd
from .twobody import (
    KeplerianOrbits,
    astrometric_radec,
    ecliptic_to_equatorial,
    hg_magnitude,
    solve_kepler,
)

__all__ = [
    "AU_KM",
    "C_AU_PER_DAY",
    "GM_SUN_AU3_D2",
    "KeplerianOrbits",
    "Site",
    "astrometric_radec",
    "earth_barycentric",
    "ecliptic_to_equatorial",
    "hg_magnitude",
    "mjd_tai_to_tdb_jd",
    "mjd_tai_to_utc_jd",
    "observer_heliocentric",
    "site_geocentric",
    "solve_kepler",
    "sun_barycentric",
]
