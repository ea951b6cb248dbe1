"""Measurement of DiaSources on a difference image: positions, fluxes, shapes, models, flags.

For each detection: a PSF fit for centroid and flux (Gauss-Newton on flux and position, inverse
variance weights), a circular-aperture flux, adaptive second moments, a dipole fit when a
positive and a negative lobe sit together, a trailed-source fit when the moments show an
elongated source, forced PSF fluxes on the science and template images, and pixel flags from
the mask. Pixel results become sky positions through the WCS and nJy through the zero point.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import BadInputError
from ..image import Exposure, mask_bits
from ._sky import local_jacobian, pixel_to_sky, position_angle_deg, sky_covariance
from ._source import EXTRA_COLUMNS, forced_flux, measure_one
from .config import DiaSourceConfig, MeasureConfig
from .detect import Detections, _require_psf, detect
from .schema import DIA_SOURCE_COLUMNS, new_columns, to_frame

__all__ = ["default_ids", "detect_and_measure", "measure_dia_sources", "now_mjd_tai"]

logger = logging.getLogger(__name__)

IdMaker = Callable[[int], NDArray[np.int64]]
"""Given a count n, returns n unique int64 ids."""

_NJY_COLUMNS = (
    "psfFlux", "psfFluxErr", "apFlux", "apFluxErr", "trailFlux", "trailFluxErr",
    "dipoleMeanFlux", "dipoleMeanFluxErr", "dipoleFluxDiff", "dipoleFluxDiffErr",
)  # fmt: skip


def now_mjd_tai() -> float:
    """The current time as MJD (TAI), from the system clock (TAI - UTC = 37 s since 2017)."""
    return time.time() / 86400.0 + 40587.0 + 37.0 / 86400.0


def default_ids(visit: int, detector: int, n: int) -> NDArray[np.int64]:
    """Ids ``visit << 22 | detector << 14 | index``: unique within one processing of a visit.

    Rubin-style visit ids (``dayobs * 100000 + sequence``, below 2**41) fit; the L1 database
    replaces these with its own generation-aware ids through ``make_ids``.

    Raises
    ------
    BadInputError
        ``ids_overflow`` when the visit, the detector or the count does not fit the packing.
    """
    if not (0 <= visit < 2**41 and 0 <= detector < 2**8 and 0 <= n <= 2**14):
        raise BadInputError(
            "ids_overflow",
            f"visit {visit}/{detector} with {n} sources does not fit the default id packing "
            "(visit < 2**41, detector < 256, at most 16384 sources); pass make_ids",
        )
    return (np.int64(visit) << 22) | (np.int64(detector) << 14) | np.arange(n, dtype=np.int64)


def _check_exposures(difference: Exposure, **others: Exposure | None) -> None:
    _require_psf(difference)
    if difference.wcs is None:
        raise BadInputError(
            "no_wcs",
            f"{difference.label}: the difference image has no WCS; ra/dec cannot be computed "
            "(attach the calibrated WCS)",
        )
    for name, exp in others.items():
        if exp is not None and exp.shape != difference.shape:
            raise BadInputError(
                "shape_mismatch",
                f"{difference.label}: {name} shape {exp.shape} differs from the difference "
                f"image {difference.shape}; warp it onto the difference image's grid first",
            )


def _visit_columns(cols: dict[str, np.ndarray], exp: Exposure, ids: NDArray[np.int64]) -> None:
    cols["diaSourceId"][:] = ids
    cols["visit"][:] = exp.info.visit
    cols["detector"][:] = exp.info.detector
    cols["band"][:] = exp.info.band
    cols["midpointMjdTai"][:] = exp.info.mjd_tai
    cols["exposureTime"][:] = exp.info.exptime_s


def _sky_columns(cols: dict[str, np.ndarray], extra: dict[str, np.ndarray], exp: Exposure) -> None:
    """ra/dec, their errors, trail and dipole sky quantities, from pixel results."""
    wcs = exp.wcs
    x, y = cols["x"].astype(np.float64), cols["y"].astype(np.float64)
    cols["ra"], cols["dec"] = pixel_to_sky(wcs, x, y)  # type: ignore[arg-type]
    jac = local_jacobian(wcs, x, y)  # type: ignore[arg-type]
    scale_arcsec = 3600.0 * np.sqrt(np.abs(np.linalg.det(jac)))
    cols["raErr"], cols["decErr"], cols["ra_dec_Cov"] = sky_covariance(
        jac, cols["xErr"], cols["yErr"], extra["xy_cov"]
    )
    for name in ("ixx", "iyy", "ixy", "ixxPSF", "iyyPSF", "ixyPSF"):
        cols[name] = cols[name] * scale_arcsec**2
    # Dipoles: separation and bearing from the negative to the positive lobe.
    sep, ang = extra["dipole_sep_px"], extra["dipole_angle"]
    cols["dipoleLength"] = sep * scale_arcsec
    cols["dipoleAngle"] = np.where(
        np.isfinite(ang), position_angle_deg(jac, np.cos(ang), np.sin(ang)), np.nan
    )
    # Trails: centroid, length and bearing (a line: modulo 180 degrees).
    tx, ty = extra["trail_x"], extra["trail_y"]
    has = np.isfinite(tx)
    if has.any():
        tra, tdec = pixel_to_sky(wcs, tx[has], ty[has])  # type: ignore[arg-type]
        tjac = local_jacobian(wcs, tx[has], ty[has])  # type: ignore[arg-type]
        cols["trailRa"][has], cols["trailDec"][has] = tra, tdec
        err = sky_covariance(
            tjac, extra["trail_x_err"][has], extra["trail_y_err"][has], np.zeros(has.sum())
        )
        cols["trailRaErr"][has], cols["trailDecErr"][has] = err[0], err[1]
        tscale = 3600.0 * np.sqrt(np.abs(np.linalg.det(tjac)))
        cols["trailLength"][has] = extra["trail_length_px"][has] * tscale
        cols["trailLengthErr"][has] = cols["trailLengthErr"][has] * tscale
        ta = extra["trail_angle"][has]
        cols["trailAngle"][has] = position_angle_deg(tjac, np.cos(ta), np.sin(ta)) % 180.0
        cols["trailAngleErr"][has] = np.rad2deg(cols["trailAngleErr"][has])


def measure_dia_sources(
    difference: Exposure,
    detections: Detections,
    *,
    science: Exposure | None = None,
    template: Exposure | None = None,
    config: MeasureConfig | None = None,
    make_ids: IdMaker | None = None,
    time_processed_mjd_tai: float | None = None,
) -> pd.DataFrame:
    """Measure every detection of a difference image; one DiaSource row each.

    Parameters
    ----------
    difference
        The difference image (counts) with its variance, mask, PSF, WCS and zero point.
    detections
        What :func:`~diaflow.measure.detect` found on it.
    science, template
        The science image and the (warped, PSF-matched) template on the difference image's
        pixel grid; when given, ``scienceFlux`` and ``templateFlux`` are forced PSF fluxes on
        them at each source (with their own PSF, or the difference's when they have none).
    config
        Measurement settings (:class:`MeasureConfig`); defaults when None.
    make_ids
        Makes ``diaSourceId`` values (given the count); default :func:`default_ids`.
    time_processed_mjd_tai
        ``timeProcessedMjdTai`` of every row; default: now.

    Returns
    -------
    pandas.DataFrame
        One row per detection with the columns of
        :data:`~diaflow.measure.schema.DIA_SOURCE_COLUMNS` (APDB names; fluxes nJy, angles
        degrees, lengths arcsec, moments arcsec^2 along the pixel axes); zero rows with the
        same columns when there is nothing to measure. Columns of a model that was not fitted
        are NaN (``trail*`` unless the source is elongated, ``dipole*`` unless it has both
        lobes, ``scienceFlux``/``templateFlux`` without those images).

    Raises
    ------
    BadInputError
        ``no_psf`` / ``no_wcs`` when the difference image lacks them; ``shape_mismatch`` when
        the science or template image, or the detections, are not on its grid;
        ``ids_overflow`` / ``bad_ids`` when ids cannot be made.
    """
    cfg = config or MeasureConfig()
    _check_exposures(difference, science=science, template=template)
    if detections.significance.shape != difference.shape:
        raise BadInputError(
            "shape_mismatch",
            f"{difference.label}: detections were made on a {detections.significance.shape} "
            f"image, not this {difference.shape} one; run detect on this difference image",
        )
    t0 = time.perf_counter()
    n = len(detections)
    cols = new_columns(DIA_SOURCE_COLUMNS, n)
    extra = {name: np.full(n, np.nan) for name in EXTRA_COLUMNS}
    ids = (
        make_ids(n)
        if make_ids is not None
        else default_ids(difference.info.visit, difference.info.detector, n)
    )
    if len(ids) != n:
        raise BadInputError(
            "bad_ids", f"{difference.label}: make_ids({n}) returned {len(ids)} ids; expected {n}"
        )
    _visit_columns(cols, difference, np.asarray(ids, dtype=np.int64))
    cols["timeProcessedMjdTai"][:] = (
        now_mjd_tai() if time_processed_mjd_tai is None else time_processed_mjd_tai
    )
    bits = mask_bits(*cfg.fit_ignore_planes)
    radius = max(cfg.psf_fit_radius_fwhm * detections.psf_fwhm_px, 3.0)
    psf_cache: dict[tuple[int, int], NDArray[np.float64]] = {}
    for i, det in enumerate(detections.peaks.itertuples(index=False)):
        measure_one(
            i, det, difference, detections, cfg, cols, extra, psf_cache,  # type: ignore[arg-type]
            science, template,
        )  # fmt: skip
        x, y = float(cols["x"][i]), float(cols["y"][i])
        if science is not None:
            src = science if science.psf is not None else difference
            f, e, edge, bad = forced_flux(science, src, x, y, radius, bits)
            cols["scienceFlux"][i], cols["scienceFluxErr"][i] = f, e
            cols["forced_PsfFlux_flag_edge"][i] = edge
            cols["forced_PsfFlux_flag_noGoodPixels"][i] = bad
            cols["forced_PsfFlux_flag"][i] = bad or not math.isfinite(f)
        if template is not None:
            src = template if template.psf is not None else difference
            f, e, _, _ = forced_flux(template, src, x, y, radius, bits)
            cols["templateFlux"][i], cols["templateFluxErr"][i] = f, e
    to_njy = float(difference.counts_to_njy(1.0))
    for name in _NJY_COLUMNS:
        cols[name] = cols[name] * to_njy
    if n:
        _sky_columns(cols, extra, difference)
    table = to_frame(cols, DIA_SOURCE_COLUMNS)
    if cfg.reliability and n:
        from .reliability import MODEL_VERSION, reliability

        table["reliability"] = reliability(table).astype(np.float32)
        table["reliabilityVersion"] = MODEL_VERSION
    logger.info(
        "measure %s: %d DiaSources (%d negative, %d dipoles, %d trailed) %.2fs",
        difference.label,
        n,
        int(table["isNegative"].sum()),
        int(table["isDipole"].sum()),
        int(table["trailLength"].notna().sum()),
        time.perf_counter() - t0,
    )
    return table


def detect_and_measure(
    difference: Exposure,
    *,
    science: Exposure | None = None,
    template: Exposure | None = None,
    config: DiaSourceConfig | None = None,
    make_ids: IdMaker | None = None,
    time_processed_mjd_tai: float | None = None,
) -> tuple[pd.DataFrame, Detections]:
    """Detect and measure DiaSources on a difference image in one call.

    Returns the DiaSource table (see :func:`measure_dia_sources`) and the
    :class:`~diaflow.measure.Detections` (footprints, significance image and the mask with
    DETECTED / DETECTED_NEGATIVE set, to store with the difference image).
    """
    cfg = config or DiaSourceConfig()
    detections = detect(difference, config=cfg.detect)
    table = measure_dia_sources(
        difference,
        detections,
        science=science,
        template=template,
        config=cfg.measure,
        make_ids=make_ids,
        time_processed_mjd_tai=time_processed_mjd_tai,
    )
    return table, detections
