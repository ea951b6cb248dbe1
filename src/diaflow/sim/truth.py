"""Where a simulated survey's sky is not blank, on any pixel grid: for false-detection counts.

A detection on a difference image is false when nothing real is there: no static source, no
transient, no asteroid, no artifact of the science visit, and no satellite trail of the visits a
template was built from (a trail the template kept is an error of the template, but it is not
blank sky). :func:`occupied_sky` lists those places as circles on a given WCS; bright stars
reach as far as their light exceeds the sky noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .config import SurveyConfig
from .survey import true_wcs

__all__ = ["blank_map", "occupied_sky"]


def _halo_radius(
    mag: NDArray[np.float64], zero_point: float, fwhm_px: float, beta: float, noise: float
) -> NDArray[np.float64]:
    """Radius (px) out to which a Moffat star of AB magnitude ``mag`` exceeds ``noise`` counts
    per pixel."""
    alpha = fwhm_px / (2 * math.sqrt(2 ** (1 / beta) - 1))
    peak = (beta - 1) / (math.pi * alpha**2)
    flux = np.nan_to_num(10 ** (-0.4 * (mag - zero_point)))
    ratio = np.clip(flux * peak / noise, 1.0, None)
    return np.asarray(alpha * np.sqrt(ratio ** (1 / beta) - 1))


def _segment(x0: float, y0: float, x1: float, y1: float, step: float) -> tuple[NDArray, NDArray]:
    t = np.linspace(0.0, 1.0, max(2, int(math.hypot(x1 - x0, y1 - y0) / step) + 1))
    return x0 + t * (x1 - x0), y0 + t * (y1 - y0)


def occupied_sky(
    out_dir: str | Path,
    config: SurveyConfig,
    visit: int,
    wcs: object,
    *,
    template_visits: Iterable[int] = (),
    zero_point: float | None = None,
    fwhm_px: float = 5.0,
    noise_per_px: float | None = None,
    radius_px: float = 10.0,
) -> NDArray[np.float64]:
    """(n, 3) x, y and radius (px, on ``wcs``) of every place that is not blank sky.

    Static sources and transients get ``radius_px`` (galaxies four half-light radii; stars, with
    ``zero_point``, ``noise_per_px`` (counts) and ``fwhm_px`` given, the radius where their light
    falls below the noise); asteroids of ``visit`` ``radius_px`` plus their trail; artifacts of
    ``visit`` and satellite trails of ``template_visits`` (through each visit's true WCS) are
    sampled along their length with ``radius_px`` plus their width.
    """
    out = Path(out_dir)
    truth = out / "truth"
    visits = pd.read_parquet(out / "visits.parquet")
    parts = []
    for name in ("static", "transients"):
        tab = pd.read_parquet(truth / f"{name}.parquet")
        x, y = wcs.all_world2pix(tab["ra_deg"], tab["dec_deg"], 0)  # type: ignore[attr-defined]
        radius = np.full(len(tab), radius_px)
        if "half_light_arcsec" in tab:
            hl = np.nan_to_num(tab["half_light_arcsec"].to_numpy())
            radius = np.maximum(radius, 4 * hl / config.camera.pixel_scale_arcsec)
        if "mag_r" in tab and zero_point is not None and noise_per_px is not None:
            band = str(visits.loc[visits["visit"] == visit, "band"].iloc[0])
            mags = tab[f"mag_{band}"].to_numpy(dtype=np.float64)
            halo = _halo_radius(mags, zero_point, fwhm_px, config.render.psf_beta, noise_per_px)
            radius = np.maximum(radius, halo)
        parts.append(np.c_[x, y, radius])
    ss = pd.read_parquet(truth / "ss_positions.parquet")
    ss = ss[ss["visit"] == visit]
    parts.append(np.c_[ss["x"], ss["y"], radius_px + ss["trail_length_px"]])
    art = pd.read_parquet(truth / "artifacts.parquet")
    for a in art[art["visit"] == visit].itertuples():
        x, y = _segment(a.x0, a.y0, a.x1, a.y1, 1.0)
        parts.append(np.c_[x, y, np.full(len(x), radius_px + np.nan_to_num(a.width_px))])
    earlier = {int(v) for v in template_visits}
    sats = art[(art["kind"] == "satellite") & art["visit"].isin(earlier)]
    for a in sats.itertuples():
        row = visits[visits["visit"] == a.visit].iloc[0]
        x, y = _segment(a.x0, a.y0, a.x1, a.y1, 1.0)
        ra, dec = true_wcs(row, config).all_pix2world(x, y, 0)  # type: ignore[attr-defined]
        tx, ty = wcs.all_world2pix(ra, dec, 0)  # type: ignore[attr-defined]
        parts.append(np.c_[tx, ty, np.full(len(tx), radius_px + np.nan_to_num(a.width_px))])
    return np.vstack(parts)


def blank_map(
    shape: tuple[int, int], occupied: NDArray[np.float64], step: int = 4
) -> NDArray[np.bool_]:
    """Every ``step``-th pixel (each axis): true where no occupied circle reaches."""
    yy, xx = np.mgrid[0 : shape[0] : step, 0 : shape[1] : step]
    ok = np.ones(xx.shape, dtype=bool)
    x, y, r = occupied[:, 0], occupied[:, 1], occupied[:, 2]
    near = (x > -r - step) & (x < shape[1] + r + step) & (y > -r - step) & (y < shape[0] + r + step)
    for cx, cy, cr in occupied[near]:
        lo_y, hi_y = max(0, int((cy - cr) // step)), min(xx.shape[0], int((cy + cr) // step) + 2)
        lo_x, hi_x = max(0, int((cx - cr) // step)), min(xx.shape[1], int((cx + cr) // step) + 2)
        if lo_y >= hi_y or lo_x >= hi_x:
            continue
        sub = np.hypot(xx[lo_y:hi_y, lo_x:hi_x] - cx, yy[lo_y:hi_y, lo_x:hi_x] - cy) < cr
        ok[lo_y:hi_y, lo_x:hi_x] &= ~sub
    return ok
