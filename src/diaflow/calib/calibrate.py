"""Calibrate one exposure: background, cosmic rays, sources, WCS, PSF and zero point.

:func:`calibrate` strings the steps of this package together on a post-ISR exposure and a
reference catalog and returns a calibrated copy of the exposure with its quality figures. Each
step is also a function over arrays in its own module. The order matters: the background comes
first (everything else works on sky-subtracted pixels); sources are detected once, before cosmic
rays, because their stellar locus gives the PSF width that tells cosmic rays from stars; the WCS is
fitted before the PSF so that reference-catalog stars can be chosen as PSF stars; the zero point
comes last, from PSF fluxes of matched reference stars.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import CalibrationError
from ..image import Exposure, PixelPsf, VisitInfo, mask_bits
from ..timing import Stopwatch
from .astrometry import AstrometryFit, fit_wcs
from .background import estimate_background
from .config import CalibConfig
from .cosmic import find_cosmic_rays, interpolate_masked
from .photometry import ZeroPointFit, fit_zero_point
from .psf import PsfFit, fit_psf, psf_fluxes
from .result import CalibrationQuality, CalibrationResult
from .sources import detect_sources, flag_near_masked
from .validate import footprint_refcat, validate_inputs

__all__ = ["CalibrationQuality", "CalibrationResult", "calibrate"]

logger = logging.getLogger(__name__)

_MOFFAT_FWHM_PER_R50 = 1.67
"""FWHM / half-light radius of a Moffat(beta=3.5) profile (2.0 for a Gaussian): the smaller
ratio keeps the cosmic-ray sharpness test on the safe side."""


def calibrate(
    exposure: Exposure, refcat: pd.DataFrame, *, config: CalibConfig | None = None
) -> CalibrationResult:
    """Calibrate a post-ISR exposure against a reference catalog.

    Parameters
    ----------
    exposure
        Image in counts with the sky still in, mask (SAT and BAD set by ISR), variance, header WCS
        (approximate pointing, right distortion) and visit metadata.
    refcat
        Reference catalog with ``ra``, ``dec`` (deg), ``epoch`` (MJD), ``pm_ra``, ``pm_dec``
        (mas/yr), ``<band>_flux``, ``<band>_fluxErr`` (nJy) and optionally ``ra_err``, ``dec_err``
        (deg) and ``is_variable``.
    config
        Settings of every step.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    CalibrationError
        With ``reason`` one of ``no_wcs``, ``refcat_missing_columns``, ``too_many_bad_pixels``,
        ``no_refcat_overlap``, ``too_few_stars``, ``too_few_matches``, ``astrometry_failed``,
        ``too_few_calibration_stars``. The input exposure is never modified.
    """
    config = config or CalibConfig()
    clock = Stopwatch()
    info = exposure.info
    checked = validate_inputs(exposure, refcat, config=config)
    image, variance, mask = checked.image, checked.variance, checked.mask
    bad = (mask & mask_bits("BAD", "NO_DATA")) != 0
    nodata = (mask & mask_bits("NO_DATA")) != 0
    saturated = (mask & mask_bits("SAT")) != 0
    refs = footprint_refcat(exposure, refcat, margin_arcsec=config.astrometry.max_offset_arcsec)
    clock.lap("validate")

    bkg = estimate_background(image, bad | saturated, config=config.background)
    sub = image - bkg.model
    clock.lap("background")

    # Sources first: the stellar locus gives the PSF width the cosmic-ray test needs.
    sources, seg = detect_sources(sub, variance, bad, saturated=saturated, config=config.sources)
    r50 = float(sources.attrs.get("stellar_r50_px", math.nan)) if len(sources) else math.nan
    crc = config.cosmic_rays
    fwhm_guess = _MOFFAT_FWHM_PER_R50 * r50 if r50 > 0 else 2 * crc.min_fwhm_px
    clock.lap("sources")

    cr = find_cosmic_rays(sub, variance, bad, saturated, fwhm_px=fwhm_guess, config=crc)
    fill = cr | (bad & ~nodata) if crc.interpolate_bad else cr
    sub, variance = interpolate_masked(
        sub, variance, fill, ~(bad | saturated | cr), sigma_px=crc.interp_sigma_px
    )
    mask |= np.where(cr, mask_bits("CR"), 0).astype(np.int32)
    mask |= np.where(fill, mask_bits("INTRP"), 0).astype(np.int32)
    sources = flag_near_masked(sources, bad | cr, radius_px=max(2 * fwhm_guess, 3.0))
    unusable = bad | saturated | cr
    _check_enough_stars(sources, exposure, config)
    clock.lap("cosmic_rays")

    astro = _fit_astrometry(sources, refs, exposure, config)
    matched_ref = np.full(len(sources), -1, dtype=np.int64)
    matched_ref[astro.det_index] = astro.ref_index
    clock.lap("astrometry")

    psf_fit, candidate = _fit_psf(
        sources, matched_ref, sub, variance, unusable, seg, fwhm_guess, info.gain, config
    )
    clock.lap("psf")

    zp_fit, psf_flux, psf_flux_err, phot_rows = _fit_photometry(
        sources, matched_ref, refs, sub, variance, unusable, seg, psf_fit.psf, info, config
    )
    clock.lap("photometry")

    ra, dec = (
        astro.wcs.all_pix2world(sources["x"].to_numpy(), sources["y"].to_numpy(), 0)
        if len(sources)
        else (np.zeros(0), np.zeros(0))
    )
    psf_used = np.zeros(len(sources), bool)
    psf_used[np.flatnonzero(candidate)[psf_fit.used]] = True
    astro_used = np.zeros(len(sources), bool)
    astro_used[astro.det_index] = True
    phot_used = np.zeros(len(sources), bool)
    phot_used[phot_rows[zp_fit.used]] = True
    ref_flux = np.full(len(sources), np.nan)
    has = matched_ref >= 0
    ref_flux[has] = refs[f"{info.band}_flux"].to_numpy(dtype=np.float64)[matched_ref[has]]
    stars = sources.assign(
        ra=ra,
        dec=dec,
        ref_index=np.where(has, refs["ref_index"].to_numpy()[np.maximum(matched_ref, 0)], -1),
        psf_candidate=candidate,
        psf_used=psf_used,
        astrometry_used=astro_used,
        photometry_used=phot_used,
        psf_flux=psf_flux,
        psf_flux_err=psf_flux_err,
        ref_flux=ref_flux,
    )
    calibrated = replace(
        exposure,
        image=sub.astype(np.float32),
        mask=mask,
        variance=variance.astype(np.float32),
        wcs=astro.wcs,
        zero_point=zp_fit.zero_point,
        psf=psf_fit.psf,
        extra={
            **exposure.extra,
            "BGMEAN": (round(bkg.level, 3), "[count] median background subtracted"),
            "ZPERR": (round(zp_fit.error, 5), "[mag] error of ZPCAL"),
            "ASTRMS": (round(astro.rms_mas, 2), "[mas] astrometric fit RMS per axis"),
            "NASTRO": (int(astro.det_index.size), "reference stars in the WCS fit"),
            "PSFFWHM": (round(psf_fit.fwhm_px, 4), "[pixel] PSF model FWHM at the centre"),
        },
    )
    n_cr = int(ndimage.label(cr, structure=np.ones((3, 3)))[1]) if cr.any() else 0
    seconds = clock.done()
    quality = CalibrationQuality(
        background_level=bkg.level,
        background_rms=bkg.rms_level,
        n_bad_pixels=checked.n_unusable,
        n_cosmic_ray_pixels=int(cr.sum()),
        n_cosmic_rays=n_cr,
        n_sources=len(sources),
        psf_fwhm_px=psf_fit.fwhm_px,
        psf_n_stars=int(psf_fit.used.sum()),
        psf_order=psf_fit.psf.order,
        psf_chi2=float(np.nanmedian(psf_fit.chi2[psf_fit.used])),
        psf_residual_frac=psf_fit.residual_frac,
        astrometry_n_matches=int(astro.det_index.size),
        astrometry_rms_mas=astro.rms_mas,
        astrometry_offset_arcsec=astro.offset_arcsec,
        astrometry_rotation_arcsec=astro.rotation_arcsec,
        zero_point=zp_fit.zero_point,
        zero_point_err=zp_fit.error,
        zero_point_n_stars=zp_fit.n_stars,
        zero_point_rms_mag=zp_fit.rms_mag,
        seconds=seconds,
    )
    logger.info(
        "calibrate %s bkg=%.1f cr=%d psf_stars=%d fwhm=%.2fpx astrom=%d/%.1fmas "
        "zp=%.4f+-%.4f (%d stars) %.2fs",
        exposure.label,
        bkg.level,
        n_cr,
        quality.psf_n_stars,
        psf_fit.fwhm_px,
        quality.astrometry_n_matches,
        astro.rms_mas,
        zp_fit.zero_point,
        zp_fit.error,
        zp_fit.n_stars,
        seconds["total"],
    )
    return CalibrationResult(
        exposure=calibrated, background=bkg.model, stars=stars, quality=quality
    )


def _check_enough_stars(sources: pd.DataFrame, exposure: Exposure, config: CalibConfig) -> None:
    """Fail early (before astrometry) when too few clean, star-like sources could make a PSF."""
    n_stars = 0
    if len(sources):
        n_stars = int(
            (
                _clean(sources)
                & sources["star_like"].to_numpy()
                & (sources["snr"].to_numpy() >= config.psf.min_snr)
            ).sum()
        )
    if n_stars < config.psf.min_stars:
        raise CalibrationError(
            "too_few_stars",
            f"{exposure.label}: {n_stars} clean star-like sources with S/N >= "
            f"{config.psf.min_snr:g} (of {len(sources)} detected); need at least "
            f"{config.psf.min_stars} for the PSF (empty field, clouds, or a blank image?)",
            n_stars=n_stars,
            n_sources=len(sources),
        )


def _clean(sources: pd.DataFrame) -> NDArray[np.bool_]:
    """Unsaturated, unmasked, off the edge, and not grossly larger than a star (a star blended
    with a satellite trail or a galaxy has a meaningless centroid and flux)."""
    clean = ~(
        sources["saturated"].to_numpy()
        | sources["near_masked"].to_numpy()
        | sources["edge"].to_numpy()
    )
    locus = float(sources.attrs.get("stellar_r50_px", math.nan))
    if np.isfinite(locus):
        clean &= sources["r50_px"].to_numpy() < 1.5 * locus
    return clean


def _fit_astrometry(
    sources: pd.DataFrame, refs: pd.DataFrame, exposure: Exposure, config: CalibConfig
) -> AstrometryFit:
    """Fit the WCS with the clean sources (brightest first) and the footprint's reference stars."""
    use = np.flatnonzero(_clean(sources))
    ref_err = None
    if "ra_err" in refs and "dec_err" in refs:
        ref_err = np.hypot(refs["ra_err"].to_numpy(), refs["dec_err"].to_numpy()) / np.sqrt(2)
        ref_err = np.nan_to_num(ref_err * 3.6e6)
    assert exposure.wcs is not None
    fit = fit_wcs(
        sources["x"].to_numpy()[use],
        sources["y"].to_numpy()[use],
        exposure.wcs,
        refs["ra"].to_numpy(),
        refs["dec"].to_numpy(),
        pos_err_px=sources["x_err"].to_numpy()[use],
        ref_err_mas=ref_err,
        config=config.astrometry,
    )
    # Indices back into the full source table.
    return replace(fit, det_index=use[fit.det_index])


def _fit_psf(
    sources: pd.DataFrame,
    matched_ref: NDArray[np.int64],
    image: NDArray[np.float32],
    variance: NDArray[np.float32],
    unusable: NDArray[np.bool_],
    seg: NDArray[np.int32],
    fwhm_guess: float,
    gain: float,
    config: CalibConfig,
) -> tuple[PsfFit, NDArray[np.bool_]]:
    """PSF stars: clean, bright, separated and on the stellar locus; catalog stars first.

    A catalog match proves a source is a star, not that it is clean (a star on a galaxy's
    outskirts has a wider profile), so catalog stars must be on the locus too; they come first
    in the list, ahead of unmatched sources (which may be compact galaxies).
    """
    pc = config.psf
    candidate = (
        _clean(sources)
        & (sources["snr"].to_numpy() >= pc.min_snr)
        & sources["star_like"].to_numpy()
        & (sources["nearest_px"].to_numpy() > 2.5 * fwhm_guess)
    )
    known = matched_ref >= 0
    order = np.r_[np.flatnonzero(candidate & known), np.flatnonzero(candidate & ~known)]
    idx = np.sort(order[: pc.max_stars])
    candidate = np.zeros(len(sources), bool)
    candidate[idx] = True
    fit = fit_psf(
        image,
        variance,
        sources["x"].to_numpy()[idx],
        sources["y"].to_numpy()[idx],
        sources["flux"].to_numpy()[idx],
        fwhm_px=fwhm_guess,
        bad=unusable,
        segmentation=seg,
        labels=sources["id"].to_numpy()[idx],
        gain=gain,
        config=pc,
    )
    return fit, candidate


def _fit_photometry(
    sources: pd.DataFrame,
    matched_ref: NDArray[np.int64],
    refs: pd.DataFrame,
    image: NDArray[np.float32],
    variance: NDArray[np.float32],
    unusable: NDArray[np.bool_],
    seg: NDArray[np.int32],
    psf: PixelPsf,
    info: VisitInfo,
    config: CalibConfig,
) -> tuple[ZeroPointFit, NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    """PSF fluxes of the clean matched stars, and the zero point from their catalog fluxes."""
    flux = np.full(len(sources), np.nan)
    flux_err = np.full(len(sources), np.nan)
    rows = np.flatnonzero((matched_ref >= 0) & _clean(sources))
    if "is_variable" in refs and not config.photometry.use_variables:
        variable = refs["is_variable"].to_numpy(dtype=bool)
        rows = rows[~variable[matched_ref[rows]]]
    f, fe = psf_fluxes(
        image,
        variance,
        psf,
        sources["x"].to_numpy()[rows],
        sources["y"].to_numpy()[rows],
        bad=unusable,
        segmentation=seg,
        labels=sources["id"].to_numpy()[rows],
        gain=info.gain,
    )
    flux[rows], flux_err[rows] = f, fe
    ref = refs.iloc[matched_ref[rows]]
    band = info.band
    zp = fit_zero_point(
        f,
        fe,
        ref[f"{band}_flux"].to_numpy(dtype=np.float64),
        ref[f"{band}_fluxErr"].to_numpy(dtype=np.float64),
        config=config.photometry,
    )
    return zp, flux, flux_err, rows
