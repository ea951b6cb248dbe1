"""Declination zones: a spatial index that any B-tree can serve (Gray, Szalay et al. 2006).

The sky is cut into strips of constant height ``h`` in declination, ``zone = floor((dec + 90)
/ h)``. With an index on ``(zone, ra)`` a cone becomes one short range scan per strip it
crosses; the RA half-width of each scan is the cone's widest extent inside that strip, so the
scanned area exceeds the cone only by the strips' corners. Rows found are then filtered exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .api import Region

ZONE_HEIGHT_DEG = 1.0 / 60.0
"""Strip height: 1 arcmin, so a detector-sized cone (0.1-0.2 deg) spans 10-25 short scans."""

_MARGIN_DEG = 1e-7
"""Slack added around the cone so rounding never loses a row the exact filter would keep."""


def zone_of(dec: ArrayLike, height_deg: float = ZONE_HEIGHT_DEG) -> NDArray[np.int64]:
    """Zone number of each declination (degrees)."""
    n_zones = int(np.ceil(180.0 / height_deg))
    z = np.floor((np.asarray(dec, dtype=np.float64) + 90.0) / height_deg)
    return np.clip(z, 0, n_zones - 1).astype(np.int64)


def _half_width(dec_deg: NDArray[np.float64], region: Region) -> NDArray[np.float64]:
    """RA half-width (degrees) of the cone along each declination inside its dec range."""
    d0, r = np.deg2rad(region.dec), np.deg2rad(region.radius)
    d = np.deg2rad(dec_deg)
    denom = np.cos(d0) * np.cos(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_dra = (np.cos(r) - np.sin(d0) * np.sin(d)) / denom
    cos_dra = np.where(denom <= 1e-12, -1.0, cos_dra)  # at a pole every RA is inside
    return np.rad2deg(np.arccos(np.clip(cos_dra, -1.0, 1.0)))


def zone_ranges(
    region: Region, height_deg: float = ZONE_HEIGHT_DEG
) -> list[tuple[int, float, float]]:
    """``(zone, ra_min, ra_max)`` scans (degrees, within [0, 360]) that cover the cone.

    A range that crosses RA 0/360 is split in two; a strip where the cone reaches all the way
    round (around a pole) is scanned over every RA.
    """
    lo = max(region.dec - region.radius - _MARGIN_DEG, -90.0)
    hi = min(region.dec + region.radius + _MARGIN_DEG, 90.0)
    zones = np.arange(zone_of(lo, height_deg), zone_of(hi, height_deg) + 1)
    a = np.maximum(zones * height_deg - 90.0, lo)
    b = np.minimum((zones + 1) * height_deg - 90.0, hi)
    # The half-width is largest at sin(dec*) = sin(dec0)/cos(r), else at the strip's edge.
    s = np.sin(np.deg2rad(region.dec)) / np.cos(np.deg2rad(region.radius))
    peak = np.rad2deg(np.arcsin(np.clip(s, -1.0, 1.0)))
    inner = np.clip(peak, a, b)
    width = np.maximum.reduce([_half_width(a, region), _half_width(b, region)])
    width = np.maximum(width, _half_width(inner, region))
    max_abs_dec = np.maximum(np.abs(a), np.abs(b))
    cos_edge = np.cos(np.deg2rad(max_abs_dec))
    with np.errstate(divide="ignore"):
        width = width + np.where(cos_edge > 1e-9, _MARGIN_DEG / cos_edge, 360.0)
    ra0 = region.ra % 360.0
    out: list[tuple[int, float, float]] = []
    for z, w in zip(zones.tolist(), width.tolist(), strict=True):
        if w >= 180.0:
            out.append((z, 0.0, 360.0))
            continue
        r_lo, r_hi = ra0 - w, ra0 + w
        if r_lo < 0.0:
            out += [(z, r_lo + 360.0, 360.0), (z, 0.0, r_hi)]
        elif r_hi > 360.0:
            out += [(z, r_lo, 360.0), (z, 0.0, r_hi - 360.0)]
        else:
            out.append((z, r_lo, r_hi))
    return out
