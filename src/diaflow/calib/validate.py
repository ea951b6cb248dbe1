"""Cheap checks before calibration, and the reference stars that fall on an exposure.

:func:`validate_inputs` runs before any expensive step: it needs a WCS and the catalog columns of
the visit's band, masks non-finite pixels as BAD (and gives them a harmless value), and refuses an
exposure whose usable area is too small. :func:`footprint_refcat` picks the reference stars near
the detector and moves them to the visit's epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import CalibrationError
from ..image import Exposure, mask_bits
from .astrometry import refcat_at_epoch
from .config import CalibConfig

__all__ = ["CheckedInputs", "footprint_refcat", "validate_inputs"]


@dataclass(frozen=True)
class CheckedInputs:
    """Copies of the planes, with non-finite pixels masked BAD and set to 0 (variance: median)."""

    image: NDArray[np.float32]
    variance: NDArray[np.float32]
    mask: NDArray[np.int32]
    n_nonfinite: int
    """Pixels whose image or variance was NaN, infinite or (variance) not positive."""
    n_unusable: int
    """Pixels masked BAD, SAT or NO_DATA after that."""


def validate_inputs(
    exposure: Exposure, refcat: pd.DataFrame, *, config: CalibConfig
) -> CheckedInputs:
    """Check what calibration needs and return cleaned copies of the planes.

    Raises
    ------
    CalibrationError
        ``no_wcs`` (no header WCS), ``refcat_missing_columns`` (no positions or no fluxes in the
        visit's band), ``too_many_bad_pixels`` (more than ``config.max_bad_fraction`` unusable).
    """
    label = exposure.label
    if exposure.wcs is None or not exposure.wcs.has_celestial:
        raise CalibrationError(
            "no_wcs", f"{label}: no celestial WCS in the header; calibration needs a first guess"
        )
    band = exposure.info.band
    needed = ["ra", "dec", f"{band}_flux", f"{band}_fluxErr"]
    missing = [c for c in needed if c not in refcat.columns]
    if missing:
        raise CalibrationError(
            "refcat_missing_columns",
            f"{label}: reference catalog lacks {missing} (band {band!r}); "
            f"it has {sorted(refcat.columns)[:12]}",
            missing=missing,
        )
    image = np.array(exposure.image, dtype=np.float32, copy=True)
    variance = np.array(exposure.variance, dtype=np.float32, copy=True)
    mask = np.array(exposure.mask, dtype=np.int32, copy=True)
    nonfinite = ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0)
    n_nonfinite = int(nonfinite.sum())
    if n_nonfinite:
        mask[nonfinite] |= mask_bits("BAD")
        image[nonfinite] = 0.0
        good_var = variance[~nonfinite]
        variance[nonfinite] = float(np.median(good_var)) if good_var.size else 1.0
    unusable = (mask & mask_bits("BAD", "SAT", "NO_DATA")) != 0
    n_unusable = int(unusable.sum())
    frac = n_unusable / unusable.size
    if frac > config.max_bad_fraction or n_unusable == unusable.size:
        raise CalibrationError(
            "too_many_bad_pixels",
            f"{label}: {n_unusable} of {unusable.size} pixels ({frac:.1%}) are unusable "
            f"({n_nonfinite} non-finite, the rest masked BAD/SAT/NO_DATA); at most "
            f"{config.max_bad_fraction:.0%} allowed",
            n_unusable=n_unusable,
            n_nonfinite=n_nonfinite,
            fraction=frac,
        )
    return CheckedInputs(image, variance, mask, n_nonfinite, n_unusable)


def footprint_refcat(
    exposure: Exposure, refcat: pd.DataFrame, *, margin_arcsec: float
) -> pd.DataFrame:
    """Reference stars within ``margin_arcsec`` of the detector (per its header WCS).

    Returns the matching rows with ``ra``/``dec`` moved to the visit's epoch, the original row
    number in ``ref_index``, brightest (in the visit's band) first.

    Raises
    ------
    CalibrationError
        ``no_refcat_overlap`` when no reference star is near the detector.
    """
    wcs = exposure.wcs
    assert wcs is not None
    ny, nx = exposure.shape
    centre = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0]
    corners = wcs.all_pix2world([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], 0)
    ra0, dec0 = math.radians(centre[0]), math.radians(centre[1])

    def sep_deg(ra: NDArray, dec: NDArray) -> NDArray:
        a, d = np.deg2rad(ra), np.deg2rad(dec)
        c = np.sin(d) * math.sin(dec0) + np.cos(d) * math.cos(dec0) * np.cos(a - ra0)
        return np.rad2deg(np.arccos(np.clip(c, -1.0, 1.0)))

    radius = float(sep_deg(corners[:, 0], corners[:, 1]).max()) + margin_arcsec / 3600
    ra, dec = refcat_at_epoch(refcat, exposure.info.mjd_tai)
    near = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec) & (sep_deg(ra, dec) < radius))
    out = pd.DataFrame()
    if near.size:
        xy = wcs.all_world2pix(np.column_stack([ra[near], dec[near]]), 0)
        m = margin_arcsec / (math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600)
        on = (xy[:, 0] > -m) & (xy[:, 0] < nx - 1 + m) & (xy[:, 1] > -m) & (xy[:, 1] < ny - 1 + m)
        near = near[on]
        out = (
            refcat.iloc[near]
            .reset_index(drop=True)
            .assign(ra=ra[near], dec=dec[near], ref_index=near)
        )
    if len(out) == 0:
        raise CalibrationError(
            "no_refcat_overlap",
            f"{exposure.label}: no reference star within {margin_arcsec:.0f} arcsec of the "
            f"detector (centre RA {centre[0]:.4f}, Dec {centre[1]:.4f} deg; catalog of "
            f"{len(refcat)} stars); wrong catalog or wrong WCS?",
            ra_deg=float(centre[0]),
            dec_deg=float(centre[1]),
            n_refcat=len(refcat),
        )
    flux = out[f"{exposure.info.band}_flux"].to_numpy(dtype=np.float64)
    return out.iloc[np.argsort(-np.nan_to_num(flux, nan=-np.inf))].reset_index(drop=True)
