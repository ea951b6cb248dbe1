"""Two-body (Keplerian) orbits: elements to states, propagation and astrometric positions.

Orbits are heliocentric osculating elements in the J2000 ecliptic frame, angles in degrees, time
in MJD TDB for the epoch. Positions handed out are ICRF equatorial. Astrometric RA/Dec include
light-time (iterated) but not aberration, matching a reference catalog's astrometric frame and
the MPC's and JPL Horizons' "astrometric" positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .bodies import C_AU_PER_DAY, GM_SUN_AU3_D2

__all__ = [
    "OBLIQUITY_J2000_DEG",
    "KeplerianOrbits",
    "astrometric_radec",
    "ecliptic_to_equatorial",
    "hg_magnitude",
    "solve_kepler",
]

OBLIQUITY_J2000_DEG = 84381.448 / 3600.0
"""IAU 1976 obliquity of the ecliptic at J2000, the ecliptic frame MPC elements use."""


def ecliptic_to_equatorial(xyz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotate (..., 3) vectors from the J2000 ecliptic to the ICRF equator."""
    eps = np.deg2rad(OBLIQUITY_J2000_DEG)
    c, s = np.cos(eps), np.sin(eps)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.stack([x, c * y - s * z, s * y + c * z], axis=-1)


def solve_kepler(mean_anomaly: NDArray[np.float64], e: NDArray[np.float64]) -> NDArray[np.float64]:
    """Eccentric anomaly E from M = E - e sin E (elliptic, radians), by Newton's method."""
    m = np.mod(mean_anomaly, 2 * np.pi)
    big = np.where(e > 0.8, np.pi, m)
    ecc = np.where(e > 0.8, big, m + e * np.sin(m))
    for _ in range(50):
        f = ecc - e * np.sin(ecc) - m
        step = f / (1.0 - e * np.cos(ecc))
        ecc = ecc - step
        if np.all(np.abs(step) < 1e-14):
            break
    return ecc


@dataclass(frozen=True)
class KeplerianOrbits:
    """Heliocentric elliptic orbits, one per row (arrays of equal length)."""

    a_au: NDArray[np.float64]
    e: NDArray[np.float64]
    inc_deg: NDArray[np.float64]
    node_deg: NDArray[np.float64]
    argperi_deg: NDArray[np.float64]
    mean_anomaly_deg: NDArray[np.float64]
    epoch_mjd_tdb: float

    def __len__(self) -> int:
        return int(self.a_au.size)

    def take(self, idx: ArrayLike) -> KeplerianOrbits:
        """Subset of the orbits."""
        return KeplerianOrbits(
            self.a_au[idx],
            self.e[idx],
            self.inc_deg[idx],
            self.node_deg[idx],
            self.argperi_deg[idx],
            self.mean_anomaly_deg[idx],
            self.epoch_mjd_tdb,
        )

    def state(
        self, mjd_tdb: float | NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Heliocentric ICRF position (au) and velocity (au/day), shape (n, 3), at ``mjd_tdb``.

        ``mjd_tdb`` is a scalar or one time per orbit.
        """
        a, e = self.a_au, self.e
        n = np.sqrt(GM_SUN_AU3_D2 / a**3)
        m = np.deg2rad(self.mean_anomaly_deg) + n * (np.asarray(mjd_tdb) - self.epoch_mjd_tdb)
        ecc = solve_kepler(m, e)
        cos_e, sin_e = np.cos(ecc), np.sin(ecc)
        b = a * np.sqrt(1 - e**2)
        # Perifocal frame.
        xp, yp = a * (cos_e - e), b * sin_e
        edot = n / (1 - e * cos_e)
        vxp, vyp = -a * sin_e * edot, b * cos_e * edot
        i, om, w = (np.deg2rad(v) for v in (self.inc_deg, self.node_deg, self.argperi_deg))
        co, so, ci, si, cw, sw = np.cos(om), np.sin(om), np.cos(i), np.sin(i), np.cos(w), np.sin(w)
        p = np.stack([co * cw - so * sw * ci, so * cw + co * sw * ci, sw * si], axis=-1)
        q = np.stack([-co * sw - so * cw * ci, -so * sw + co * cw * ci, cw * si], axis=-1)
        pos = xp[:, None] * p + yp[:, None] * q
        vel = vxp[:, None] * p + vyp[:, None] * q
        return ecliptic_to_equatorial(pos), ecliptic_to_equatorial(vel)


def astrometric_radec(
    orbits: KeplerianOrbits,
    mjd_tdb: float,
    observer_helio_au: NDArray[np.float64],
    *,
    sun_velocity_au_d: NDArray[np.float64] | None = None,
    iterations: int = 3,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Astrometric RA, Dec (degrees), topocentric distance and heliocentric distance (au).

    Light-time is solved by iteration: the object is placed where it was when the light that
    reaches the observer at ``mjd_tdb`` left it. The Sun's barycentric velocity (DE440 at
    ``mjd_tdb`` when not given) carries the heliocentric frame during that time (up to 20 km).
    """
    if sun_velocity_au_d is None:
        from .bodies import sun_barycentric

        sun_velocity_au_d = sun_barycentric([mjd_tdb - 32.184 / 86400.0])[1][0]
    t_emit = np.full(len(orbits), float(mjd_tdb))
    for _ in range(iterations):
        pos, _ = orbits.state(t_emit)
        rel = pos - observer_helio_au - np.outer(mjd_tdb - t_emit, sun_velocity_au_d)
        delta = np.linalg.norm(rel, axis=1)
        t_emit = mjd_tdb - delta / C_AU_PER_DAY
    ra = np.rad2deg(np.arctan2(rel[:, 1], rel[:, 0])) % 360.0
    dec = np.rad2deg(np.arcsin(rel[:, 2] / delta))
    return ra, dec, delta, np.linalg.norm(pos, axis=1)


def hg_magnitude(
    h: NDArray[np.float64],
    g: NDArray[np.float64],
    r_au: NDArray[np.float64],
    delta_au: NDArray[np.float64],
    phase_deg: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Apparent V magnitude in the IAU H, G system (Bowell et al. 1989)."""
    tan_half = np.tan(np.deg2rad(phase_deg) / 2.0)
    phi1 = np.exp(-3.33 * tan_half**0.63)
    phi2 = np.exp(-1.87 * tan_half**1.22)
    return h + 5 * np.log10(r_au * delta_au) - 2.5 * np.log10((1 - g) * phi1 + g * phi2)
