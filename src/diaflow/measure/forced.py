"""Forced PSF photometry at fixed sky positions (DiaForcedSource)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ..errors import BadInputError
from ..image import Exposure, mask_bits
from ._source import forced_flux
from .config import MeasureConfig
from .detect import _require_psf
from .measure import default_ids, now_mjd_tai
from .schema import DIA_FORCED_SOURCE_COLUMNS, new_columns, to_frame

__all__ = ["forced_photometry"]

logger = logging.getLogger(__name__)


def forced_photometry(
    exposure: Exposure,
    ra: ArrayLike,
    dec: ArrayLike,
    *,
    ids: ArrayLike,
    science: Exposure | None = None,
    config: MeasureConfig | None = None,
    make_ids: Callable[[int], NDArray[np.int64]] | None = None,
    time_processed_mjd_tai: float | None = None,
) -> pd.DataFrame:
    """PSF fluxes at fixed sky positions on a difference (or any calibrated) image.

    The flux is the weighted linear least-squares amplitude of the exposure's PSF centred on
    the position (no recentring), over the pixels within ``config.psf_fit_radius_fwhm`` PSF
    FWHM; the error is ``1 / sqrt(sum(P^2 / V))``. Run on a science image, ``psfFlux`` is its
    total flux.

    Parameters
    ----------
    exposure
        The image to measure (counts) with variance, mask, PSF, WCS and zero point.
    ra, dec
        ICRS positions, degrees, 1-D of equal length.
    ids
        ``diaObjectId`` of each position.
    science
        When given (on the same pixel grid), ``scienceFlux`` is the forced flux on it too.
    config
        Fit radius and ignored mask planes (:class:`MeasureConfig`).
    make_ids
        Makes ``diaForcedSourceId`` values given a count; default
        :func:`~diaflow.measure.default_ids` of the visit and detector.
    time_processed_mjd_tai
        ``timeProcessedMjdTai``; default: now.

    Returns
    -------
    pandas.DataFrame
        One row per position on the image, with the columns of
        :data:`~diaflow.measure.schema.DIA_FORCED_SOURCE_COLUMNS`, fluxes in nJy. Positions
        whose pixel falls off the image are dropped (one WARNING with the count); zero rows
        with the full schema when none is left.

    Raises
    ------
    BadInputError
        ``bad_positions`` for positions that are not 1-D, differ in length or are not finite;
        ``no_psf`` / ``no_wcs`` when the exposure lacks them.
    """
    cfg = config or MeasureConfig()
    t0 = time.perf_counter()
    ra_a = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec_a = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    id_a = np.atleast_1d(np.asarray(ids, dtype=np.int64))
    if ra_a.ndim != 1 or ra_a.shape != dec_a.shape or id_a.shape != ra_a.shape:
        raise BadInputError(
            "bad_positions",
            f"{exposure.label}: ra, dec and ids must be 1-D of one length, got shapes "
            f"{ra_a.shape}, {dec_a.shape}, {id_a.shape}",
        )
    if not (np.isfinite(ra_a).all() and np.isfinite(dec_a).all()):
        bad = int((~(np.isfinite(ra_a) & np.isfinite(dec_a))).sum())
        raise BadInputError(
            "bad_positions",
            f"{exposure.label}: {bad} of {ra_a.size} positions are not finite; drop them first",
        )
    _require_psf(exposure)
    if exposure.wcs is None:
        raise BadInputError("no_wcs", f"{exposure.label}: forced photometry needs a WCS")
    if science is not None and science.shape != exposure.shape:
        raise BadInputError(
            "shape_mismatch",
            f"{exposure.label}: science shape {science.shape} differs from {exposure.shape}",
        )
    ny, nx = exposure.shape
    if ra_a.size:
        x, y = exposure.wcs.all_world2pix(ra_a, dec_a, 0)
    else:
        x = y = np.zeros(0)
    on = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    if not on.all():
        logger.warning(
            "forced %s: %d of %d positions fall off the image and are dropped (first ids %s)",
            exposure.label,
            int((~on).sum()),
            on.size,
            id_a[~on][:5].tolist(),
        )
    x, y, ra_a, dec_a, id_a = x[on], y[on], ra_a[on], dec_a[on], id_a[on]
    n = int(on.sum())
    cols = new_columns(DIA_FORCED_SOURCE_COLUMNS, n)
    info = exposure.info
    cols["diaObjectId"][:] = id_a
    cols["diaForcedSourceId"][:] = (
        make_ids(n) if make_ids is not None else default_ids(info.visit, info.detector, n)
    )
    cols["visit"][:] = info.visit
    cols["detector"][:] = info.detector
    cols["band"][:] = info.band
    cols["midpointMjdTai"][:] = info.mjd_tai
    cols["timeProcessedMjdTai"][:] = (
        now_mjd_tai() if time_processed_mjd_tai is None else time_processed_mjd_tai
    )
    cols["ra"][:], cols["dec"][:] = ra_a, dec_a
    bits = mask_bits(*cfg.fit_ignore_planes)
    fwhm = float(exposure.psf.fwhm_px((nx - 1) / 2, (ny - 1) / 2))  # type: ignore[union-attr]
    radius = max(cfg.psf_fit_radius_fwhm * fwhm, 3.0)
    for i in range(n):
        f, e, _, _ = forced_flux(exposure, exposure, float(x[i]), float(y[i]), radius, bits)
        cols["psfFlux"][i], cols["psfFluxErr"][i] = f, e
        if science is not None:
            src = science if science.psf is not None else exposure
            f, e, _, _ = forced_flux(science, src, float(x[i]), float(y[i]), radius, bits)
            cols["scienceFlux"][i], cols["scienceFluxErr"][i] = f, e
    logger.info("forced %s: %d positions %.2fs", exposure.label, n, time.perf_counter() - t0)
    return to_frame(cols, DIA_FORCED_SOURCE_COLUMNS)
