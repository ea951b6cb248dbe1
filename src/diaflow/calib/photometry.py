"""Photometric zero point from reference-catalog fluxes.

Each calibration star gives ``zp_i = 31.4 + 2.5 log10(counts_i / flux_i)`` (``flux_i`` in nJy, so
``m_AB = zp - 2.5 log10(counts)``). The zero point is their inverse-variance weighted mean with
iterative clipping at ``clip_sigma`` robust sigmas; its error is that of the weighted mean,
inflated by the square root of the reduced chi-square when the stars scatter more than their
errors say (catalog systematics, variability, blends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..errors import CalibrationError
from ..image import AB_NJY_ZEROPOINT
from .config import PhotometryConfig

__all__ = ["ZeroPointFit", "fit_zero_point"]

_MAG_PER_LN = 2.5 / math.log(10.0)


@dataclass(frozen=True)
class ZeroPointFit:
    """A measured zero point."""

    zero_point: float
    """AB magnitude of one count."""
    error: float
    """Standard error of ``zero_point``, mag."""
    n_stars: int
    """Stars that entered the final mean."""
    rms_mag: float
    """RMS scatter of the used stars' individual zero points, mag."""
    chi2: float
    """Reduced chi-square of the used stars about the mean."""
    used: NDArray[np.bool_]
    """Which input stars were used."""
    per_star: NDArray[np.float64]
    """Each input star's zero point, mag (NaN where it could not be computed)."""


def fit_zero_point(
    counts: NDArray[np.float64],
    counts_err: NDArray[np.float64],
    ref_flux_njy: NDArray[np.float64],
    ref_flux_err_njy: NDArray[np.float64],
    *,
    config: PhotometryConfig | None = None,
) -> ZeroPointFit:
    """Measure the zero point from matched stars' instrumental and catalog fluxes.

    Parameters
    ----------
    counts, counts_err
        Instrumental fluxes (total, e.g. PSF fluxes) and their errors, counts.
    ref_flux_njy, ref_flux_err_njy
        Catalog fluxes in the visit's band and their errors, nJy.
    config
        Clipping, minimum number of stars and minimum S/N.

    Returns
    -------
    ZeroPointFit

    Raises
    ------
    CalibrationError
        ``too_few_calibration_stars`` when fewer than ``config.min_stars`` stars are usable.
    """
    config = config or PhotometryConfig()
    c, ce, f, fe = (
        np.asarray(a, dtype=np.float64)
        for a in (counts, counts_err, ref_flux_njy, ref_flux_err_njy)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.hypot(ce / c, fe / f)
        zp = AB_NJY_ZEROPOINT + 2.5 * np.log10(c / f)
    err = _MAG_PER_LN * rel
    ok = np.isfinite(zp) & np.isfinite(err) & (c > 0) & (f > 0) & (err > 0)
    ok &= 1.0 / np.where(ok, rel, np.inf) >= config.min_snr
    if ok.sum() < config.min_stars:
        raise CalibrationError(
            "too_few_calibration_stars",
            f"photometry: {int(ok.sum())} usable calibration stars (of {c.size} matched); need "
            f"at least {config.min_stars} with S/N >= {config.min_snr}",
            n_stars=int(ok.sum()),
            n_matched=int(c.size),
        )
    used = ok.copy()
    mean = float("nan")
    for _ in range(10):
        w = 1.0 / err[used] ** 2
        mean = float(np.sum(w * zp[used]) / np.sum(w))
        pull = (zp - mean) / err
        # Robust spread of the pulls: a catalog with under-stated errors still clips sensibly.
        spread = max(1.4826 * float(np.median(np.abs(pull[used]))), 1.0)
        new = ok & (np.abs(pull) <= config.clip_sigma * spread)
        if new.sum() < config.min_stars or (new == used).all():
            break
        used = new
    w = 1.0 / err[used] ** 2
    mean = float(np.sum(w * zp[used]) / np.sum(w))
    n = int(used.sum())
    chi2 = float(np.sum(w * (zp[used] - mean) ** 2) / max(n - 1, 1))
    error = math.sqrt(1.0 / float(np.sum(w))) * math.sqrt(max(chi2, 1.0))
    rms = float(np.sqrt(np.mean((zp[used] - mean) ** 2)))
    return ZeroPointFit(
        zero_point=mean,
        error=error,
        n_stars=n,
        rms_mag=rms,
        chi2=chi2,
        used=used,
        per_star=np.where(np.isfinite(zp), zp, np.nan),
    )
