"""Cheap checks of a science/template pair before any subtraction work, and the cleaned planes.

Pixels that cannot be trusted (mask planes listed in ``StampConfig.bad_mask_planes``, non-finite
values, non-positive variance) are replaced by the image's median and variance (so FFTs stay
finite and defects do not ring across the image); the caller masks what they touch. Invalid
values that their mask does not flag get the ``NO_DATA`` plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..errors import SubtractionError
from ..image.exposure import Exposure
from ..image.masks import MaskPlane, mask_bits
from .config import SubtractConfig

__all__ = ["PreparedPair", "Side", "prepare_pair"]

_ALIGN_TOLERANCE_PX = 1.0
"""Largest disagreement of the two WCSs at the detector corners for an aligned pair."""
_SAMPLE_STEP = 8
"""Every this-many-th pixel (each axis) is used for medians."""


@dataclass(frozen=True)
class Side:
    """One input of a pair, validated and cleaned."""

    exposure: Exposure
    image: NDArray[np.float32]
    """The image with untrusted pixels replaced by its median."""
    variance: NDArray[np.float32]
    """The variance with invalid values replaced by its median."""
    bad: NDArray[np.bool_]
    """Untrusted pixels (bad mask planes or invalid values)."""
    mask: NDArray[np.int32]
    """The mask, with ``NO_DATA`` added where a value or variance is invalid."""
    fwhm_px: float
    """PSF FWHM at the detector centre."""
    sky_var: float
    """Median variance of the good pixels."""


@dataclass(frozen=True)
class PreparedPair:
    """A validated science/template pair with cleaned float32 planes."""

    science: Side
    template: Side


def _clean(exposure: Exposure, bad_bits: int) -> Side:
    image = np.asarray(exposure.image, dtype=np.float32)
    var = np.asarray(exposure.variance, dtype=np.float32)
    # NaN fails both comparisons, so this also catches non-finite variances.
    invalid = ~((var > 0) & (var < np.inf))
    invalid |= ~np.isfinite(image)
    mask = exposure.mask
    if invalid.any():
        mask = mask | np.where(invalid, np.int32(mask_bits(MaskPlane.NO_DATA)), np.int32(0))
    bad = (mask & bad_bits) != 0
    bad |= invalid
    step = _SAMPLE_STEP
    good_sample = ~bad[::step, ::step]
    if not good_sample.any():
        good_sample = ~bad
        step = 1
        if not good_sample.any():
            raise SubtractionError(
                "no_good_pixels",
                f"{exposure.label}: every pixel is masked or invalid; nothing to subtract",
                n_pixels=int(bad.size),
            )
    fill = float(np.median(image[::step, ::step][good_sample]))
    fill_var = float(np.median(var[::step, ::step][good_sample]))
    # Values under bad planes go (they may be huge); variances only where invalid, since a
    # valid one is finite and positive and its pixel is masked in the difference anyway.
    if bad.any():
        image = image.copy()
        np.copyto(image, np.float32(fill), where=bad)
    if invalid.any():
        var = var.copy()
        np.copyto(var, np.float32(fill_var), where=invalid)
    ny, nx = exposure.shape
    fwhm = float(exposure.psf.fwhm_px((nx - 1) / 2.0, (ny - 1) / 2.0))  # type: ignore[union-attr]
    return Side(exposure, image, var, bad, mask, fwhm, fill_var)


def _check_aligned(science: Exposure, template: Exposure) -> None:
    if science.wcs is None or template.wcs is None:
        return
    ny, nx = science.shape
    xs = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, (nx - 1) / 2])
    ys = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, (ny - 1) / 2])
    ra, dec = science.wcs.all_pix2world(xs, ys, 0)
    xt, yt = template.wcs.all_world2pix(ra, dec, 0)
    offset = float(np.max(np.hypot(xt - xs, yt - ys)))
    if not offset <= _ALIGN_TOLERANCE_PX:
        raise SubtractionError(
            "not_aligned",
            f"{science.label}: the template's WCS differs from the science WCS by up to "
            f"{offset:.2f} px (tolerance {_ALIGN_TOLERANCE_PX} px); warp the template onto the "
            "science pixel grid first",
            offset_px=offset,
        )


def prepare_pair(science: Exposure, template: Exposure, config: SubtractConfig) -> PreparedPair:
    """Validate a pair and clean its planes.

    Raises
    ------
    SubtractionError
        ``shape_mismatch``, ``not_aligned``, ``no_psf`` or ``no_good_pixels``.
    """
    if science.shape != template.shape:
        raise SubtractionError(
            "shape_mismatch",
            f"{science.label}: science shape {science.shape} differs from template shape "
            f"{template.shape}; warp the template onto the science pixel grid first",
            science_shape=science.shape,
            template_shape=template.shape,
        )
    _check_aligned(science, template)
    for name, exp in (("science", science), ("template", template)):
        if exp.psf is None:
            raise SubtractionError(
                "no_psf",
                f"{science.label}: the {name} exposure has no PSF model; calibrate it first "
                "(subtraction sizes the kernel from both PSFs)",
            )
    bad_bits = mask_bits(*config.stamps.bad_mask_planes)
    return PreparedPair(science=_clean(science, bad_bits), template=_clean(template, bad_bits))
