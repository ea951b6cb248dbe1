"""Detection of positive and negative sources on a difference image with a matched filter.

The difference image is correlated with its PSF and divided by the noise of that correlation,
``nu = (I * P) / sqrt(V * P^2)`` (``*`` is correlation, V the variance plane): for a point
source this is the maximum-likelihood flux over its error, and in pure noise it is N(0, 1) at
every pixel, so a threshold at +/-5 sigma has a known false-detection rate (the Euler
characteristic of a Gaussian random field; Adler 1981). Connected pixels beyond the threshold
form footprints; separate peaks inside a footprint become separate sources when the
significance dips enough between them; nearby positive and negative peaks are paired as dipole
candidates.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.fft as sfft
from numpy.typing import NDArray

from ..errors import BadInputError
from ..image import Exposure, mask_bits
from ._peaks import footprint_peaks, pair_dipoles, suppress_close
from .config import DetectConfig

__all__ = ["Detections", "detect", "matched_filter_significance"]

logger = logging.getLogger(__name__)

_PEAK_COLUMNS = {
    "x": "int64",
    "y": "int64",
    "significance": "float64",
    "is_negative": "bool",
    "footprint": "int32",
    "n_peaks": "int32",
    "bbox_x0": "int64",
    "bbox_y0": "int64",
    "bbox_x1": "int64",
    "bbox_y1": "int64",
    "partner_x": "float64",
    "partner_y": "float64",
    "partner_significance": "float64",
    "partner_footprint": "int32",
}


@dataclass(frozen=True)
class Detections:
    """What :func:`detect` found: one row of ``peaks`` per future DiaSource."""

    peaks: pd.DataFrame
    """One row per source: ``x``, ``y`` (peak pixel of the significance image), ``significance``
    (signed, sigma), ``is_negative``, ``footprint`` (label in ``footprints``: > 0 positive,
    < 0 negative), ``n_peaks`` (sources sharing that footprint), ``bbox_x0/y0/x1/y1`` (inclusive
    bounding box of the grown footprint(s), pixels), and for dipole candidates ``partner_x``,
    ``partner_y``, ``partner_significance``, ``partner_footprint`` (the opposite-sign peak;
    NaN/0 when there is none; footprint 0 for a partner below threshold)."""
    footprints: NDArray[np.int32]
    """Grown footprint labels over the image (0: none; where a positive and a negative footprint
    overlap, the positive label)."""
    significance: NDArray[np.float32]
    """Matched-filter significance image, sigma."""
    mask: NDArray[np.int32]
    """The input mask with DETECTED and DETECTED_NEGATIVE set on the grown footprints."""
    psf_fwhm_px: float
    """PSF FWHM at the image centre, pixels (sets pair and growth radii)."""
    n_positive: int
    """Positive footprints kept."""
    n_negative: int
    """Negative footprints kept."""

    def __len__(self) -> int:
        return len(self.peaks)


def _usable(exposure: Exposure, ignore_bits: int) -> NDArray[np.bool_]:
    """Pixels usable for detection and fitting; raises if there are none."""
    image, var = exposure.image, exposure.variance
    finite = np.isfinite(image) & np.isfinite(var)
    unmasked = (exposure.mask & ignore_bits) == 0
    good = unmasked & finite & (var > 0)
    n_odd = int((unmasked & ~good).sum())
    if n_odd:
        logger.warning(
            "%s: %d unmasked pixels have a non-finite value or non-positive variance; ignored",
            exposure.label,
            n_odd,
        )
    if not good.any():
        raise BadInputError(
            "no_usable_pixels",
            f"{exposure.label}: no pixel is usable for detection (all masked {ignore_bits:#x}, "
            "non-finite or with non-positive variance); check the mask and variance planes",
        )
    return good


def _require_psf(exposure: Exposure) -> None:
    if exposure.psf is None:
        raise BadInputError(
            "no_psf",
            f"{exposure.label}: the difference image has no PSF model; detection and "
            "measurement need one (set Exposure.psf from calibration or subtraction)",
        )


def matched_filter_significance(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    kernel: NDArray[np.float64],
) -> NDArray[np.float32]:
    """Significance of a point source at every pixel: ``(I * P) / sqrt(V * P^2)``.

    Parameters
    ----------
    image, variance
        Planes of the difference image, with unusable pixels already set to zero in both.
    kernel
        PSF stamp, odd size, centred (normalisation does not matter).

    Returns
    -------
    numpy.ndarray
        float32 image of significances (0 where no usable pixel is within the PSF).
    """
    ny, nx = image.shape
    ky, kx = kernel.shape
    sy = sfft.next_fast_len(ny + ky - 1, real=True)
    sx = sfft.next_fast_len(nx + kx - 1, real=True)
    flipped = kernel[::-1, ::-1].astype(np.float32)

    def correlate(plane: NDArray[np.floating], k: NDArray[np.float32]) -> NDArray[np.float32]:
        spec = sfft.rfft2(plane.astype(np.float32, copy=False), s=(sy, sx), workers=1)
        # The kernel's transform: rows first (only ky of them are nonzero), then columns.
        spec *= sfft.fft(sfft.rfft(k, n=sx, axis=1, workers=1), n=sy, axis=0, workers=1)
        full = sfft.irfft2(spec, s=(sy, sx), workers=1)
        return full[ky // 2 : ky // 2 + ny, kx // 2 : kx // 2 + nx]

    num = correlate(image, flipped)
    den = correlate(variance, flipped * flipped)
    sample = variance[::7, ::7]
    used = sample[sample > 0]
    floor = 0.01 * float(np.median(used)) * float((kernel**2).sum()) if used.size else 0.0
    sig = np.zeros((ny, nx), dtype=np.float32)
    ok = den > floor
    sig[ok] = num[ok] / np.sqrt(den[ok])
    return sig


def detect(difference: Exposure, *, config: DetectConfig | None = None) -> Detections:
    """Find positive and negative sources on a difference image.

    Parameters
    ----------
    difference
        Difference image with its variance plane and PSF model (``difference.psf``); pixel
        units are counts. It is not modified.
    config
        Detection settings (:class:`DetectConfig`); defaults when None.

    Returns
    -------
    Detections
        The peaks (zero rows when nothing is found), the footprint labels, the significance
        image and a copy of the mask with DETECTED / DETECTED_NEGATIVE set.

    Raises
    ------
    BadInputError
        ``no_psf`` when the exposure has no PSF model; ``no_usable_pixels`` when every pixel
        is masked or lacks a valid value or variance.

    Notes
    -----
    The filter uses the PSF at the image centre. Pixels in ``config.ignore_planes`` (and those
    with a non-finite value or non-positive variance) get zero weight, so the significance stays
    N(0, 1) next to masked columns and at the image edges.
    """
    cfg = config or DetectConfig()
    _require_psf(exposure=difference)
    t0 = time.perf_counter()
    ny, nx = difference.shape
    good = _usable(difference, mask_bits(*cfg.ignore_planes))
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    kernel = np.asarray(difference.psf.kernel(cx, cy), dtype=np.float64)  # type: ignore[union-attr]
    fwhm = float(difference.psf.fwhm_px(cx, cy))  # type: ignore[union-attr]
    image = np.where(good, difference.image, 0.0).astype(np.float32)
    var = np.where(good, difference.variance, 0.0).astype(np.float32)
    sig = matched_filter_significance(image, var, kernel)

    grow = math.ceil(cfg.footprint_grow_psf_sigma * fwhm / 2.3548)
    labels = np.zeros((ny, nx), dtype=np.int32)
    grown_pos = np.zeros((ny, nx), dtype=bool)
    grown_neg = np.zeros((ny, nx), dtype=bool)
    min_sep = cfg.deblend_min_separation_fwhm * fwhm
    rows = footprint_peaks(sig, +1, cfg, grow, min_sep, labels, grown_pos)
    n_pos = len({r["footprint"] for r in rows})
    rows_neg = footprint_peaks(sig, -1, cfg, grow, min_sep, labels, grown_neg)
    n_neg = len({r["footprint"] for r in rows_neg})
    rows, rows_neg = suppress_close(rows, min_sep), suppress_close(rows_neg, min_sep)
    rows = pair_dipoles(
        rows + rows_neg, sig, cfg.dipole_pair_radius_fwhm * fwhm, cfg.dipole_partner_sigma
    )
    mask = difference.mask.copy()
    mask[grown_pos] |= np.int32(mask_bits("DETECTED"))
    mask[grown_neg] |= np.int32(mask_bits("DETECTED_NEGATIVE"))

    defaults = {"partner_x": np.nan, "partner_y": np.nan, "partner_significance": np.nan}
    table = pd.DataFrame(
        {
            name: np.array([r.get(name, defaults.get(name, 0)) for r in rows], dtype=dtype)
            for name, dtype in _PEAK_COLUMNS.items()
        }
    )
    table = table.sort_values(["y", "x"], kind="stable").reset_index(drop=True)
    logger.info(
        "detect %s: %d sources (%d positive, %d negative footprints, %d dipole candidates) "
        "at %.1f sigma %.2fs",
        difference.label,
        len(table),
        n_pos,
        n_neg,
        int(table["partner_x"].notna().sum()),
        cfg.threshold_sigma,
        time.perf_counter() - t0,
    )
    return Detections(table, labels, sig, mask, fwhm, n_pos, n_neg)
