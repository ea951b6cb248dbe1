"""Templates: outlier-rejected coadds of the best past visits of one patch and band.

:func:`build_template` strings the stage together:

1. :func:`select_visits` keeps calibrated visits of the band, taken before a cutoff, covering
   enough of the patch, and picks the best seeing (at least ``min_visits``);
2. :func:`match_inputs` warps them onto the patch (:func:`~diaflow.coadd.warp_exposure`) and
   convolves each to the common PSF (:func:`~diaflow.coadd.match_psf`);
3. :func:`coadd_matched` puts them on one photometric scale, masks transient outliers
   (:func:`~diaflow.coadd.find_outliers`, always on the PSF-matched inputs, where a star looks
   the same in every visit) and averages with one inverse-variance weight per input.

What is averaged is chosen by :attr:`TemplateConfig.psf_matched`. The PSF-matched inputs give a
coadd with one known PSF, but matching every input to a PSF broader than the worst of them
smooths the coadd's noise strongly: a science image subtracted from it would be convolved too,
and the correlated template noise then breaks the difference image's noise model. The default
averages the warped inputs themselves, with the rejection masks of their matched versions (the
Rubin pipelines' practice); the template's PSF is then the same weighted mean of the inputs'
PSFs, its noise nearly white, and its seeing close to that of the best visits.

Weights are per input, from its median variance, not per pixel: the variance of a raw exposure is
estimated from its own counts, so per-pixel weights would favour downward noise fluctuations and
bias fluxes low.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS
from numpy.typing import NDArray

from .. import __version__
from ..errors import ConfigError, TemplateError
from ..image import AB_NJY_ZEROPOINT, Exposure, MaskPlane, PixelPsf, PsfModel, VisitInfo, mask_bits
from .psfmatch import PsfMatchConfig, _embed, common_psf, match_psf, psf_shape
from .reject import RejectConfig, find_outliers
from .warp import WarpConfig, warp_exposure, warp_noise_correlation

__all__ = [
    "MatchedInputs",
    "Template",
    "TemplateConfig",
    "TemplateInput",
    "build_template",
    "coadd_matched",
    "match_inputs",
    "select_visits",
]

logger = logging.getLogger(__name__)

_NO_DATA = mask_bits(MaskPlane.NO_DATA)


@dataclass(frozen=True, kw_only=True)
class TemplateConfig:
    """How templates are built."""

    min_visits: int = 3
    """Fewest input visits of a template (outlier rejection needs three)."""
    max_visits: int | None = 12
    """Most input visits, the best seeing first; ``None`` for all."""
    max_fwhm_arcsec: float | None = None
    """Visits with a worse PSF FWHM (at the patch) are not used; ``None`` for no limit."""
    min_overlap_fraction: float = 0.05
    """Fraction of the patch a visit must cover to be used."""
    zero_point: float = AB_NJY_ZEROPOINT
    """AB magnitude of one template unit; the default 31.4 makes the template nJy per pixel."""
    psf_matched: bool = False
    """Coadd the PSF-matched inputs (one PSF everywhere, strongly correlated noise) instead of
    the warped inputs (sharper, nearly white noise, PSF the weighted mean of the inputs')."""
    mask_propagation_fraction: float = 0.5
    """A mask bit of the inputs is set in the template where at least this fraction of the
    inputs with data there have it."""
    warp: WarpConfig = field(default_factory=WarpConfig)
    psf_match: PsfMatchConfig = field(default_factory=PsfMatchConfig)
    reject: RejectConfig = field(default_factory=RejectConfig)

    def __post_init__(self) -> None:
        if self.min_visits < self.reject.min_inputs:
            raise ConfigError(
                f"TemplateConfig: min_visits must be >= reject.min_inputs "
                f"({self.reject.min_inputs}), got {self.min_visits!r}"
            )
        if self.max_visits is not None and self.max_visits < self.min_visits:
            raise ConfigError(
                f"TemplateConfig: max_visits ({self.max_visits!r}) must be >= min_visits "
                f"({self.min_visits!r})"
            )
        if not 0 < self.min_overlap_fraction <= 1:
            raise ConfigError(
                f"TemplateConfig: min_overlap_fraction must be in (0, 1], got "
                f"{self.min_overlap_fraction!r}"
            )
        if not 0 < self.mask_propagation_fraction <= 1:
            raise ConfigError(
                f"TemplateConfig: mask_propagation_fraction must be in (0, 1], got "
                f"{self.mask_propagation_fraction!r}"
            )

    def config_hash(self) -> str:
        """SHA-1 of the configuration (every field, nested), for provenance."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class TemplateInput:
    """One visit that went into a template."""

    visit: int
    detector: int
    mjd_tai: float
    """Mid-exposure time, MJD (TAI)."""
    zero_point: float
    """Calibrated zero point of the visit (AB magnitude of one count)."""
    fwhm_px: float
    """PSF FWHM of the warped visit at the patch centre, template pixels."""
    flux_scale: float
    """Factor that put the visit on the template's photometric scale."""
    weight: float
    """Relative coadd weight (the weights of a template sum to 1)."""
    rejected_fraction: float
    """Fraction of the visit's valid pixels masked as transient outliers."""


@dataclass(frozen=True, kw_only=True)
class Template:
    """A template: the coadd, its inputs and provenance."""

    exposure: Exposure
    """Image (template units: nJy per pixel by default), variance, mask, WCS, common PSF and
    ``zero_point``; NaN and ``NO_DATA`` where no input had data."""
    inputs: tuple[TemplateInput, ...]
    """The visits used, in the order they were coadded."""
    n_inputs: NDArray[np.int16]
    """(ny, nx) number of inputs that entered each pixel."""
    version: str
    """Template version; stored with every product made with it."""
    name: str = ""
    """Patch name, if given."""
    rejected: NDArray[np.bool_] | None = None
    """(n_inputs, ny, nx) pixels of each input masked as transient outliers (the artifact masks
    of the inputs), when asked for with ``keep_rejected``; not stored in FITS."""

    @property
    def visits(self) -> tuple[int, ...]:
        """Visit ids of the inputs."""
        return tuple(i.visit for i in self.inputs)


@dataclass(frozen=True)
class MatchedInputs:
    """Visits warped onto one grid and matched to one PSF, ready to coadd."""

    exposures: tuple[Exposure, ...]
    """Warped, PSF-matched exposures (counts, each its own zero point)."""
    psf: PixelPsf
    """The common PSF."""
    fwhm_px: float
    """FWHM of the common PSF, pixels."""
    input_fwhm_px: tuple[float, ...]
    """PSF FWHM of each warped input at the grid centre, pixels."""
    warped: tuple[Exposure, ...] | None = None
    """The warped inputs before matching (for a coadd that is not PSF-matched)."""


def _source_coverage(exp: Exposure, target_wcs: WCS, target_shape: tuple[int, int]) -> float:
    """Fraction of a target grid (sampled) that falls on the exposure's pixels."""
    ny, nx = target_shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 33), np.linspace(0, ny - 1, 33))
    ra, dec = target_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    sx, sy = exp.wcs.all_world2pix(ra, dec, 0, quiet=True)
    sny, snx = exp.shape
    inside = np.isfinite(sx) & np.isfinite(sy)
    inside &= (sx >= -0.5) & (sx <= snx - 0.5) & (sy >= -0.5) & (sy <= sny - 0.5)
    return float(inside.mean())


def _fwhm_at_patch(exp: Exposure, target_wcs: WCS, target_shape: tuple[int, int]) -> float:
    """PSF FWHM (arcsec) of an exposure at the patch centre (clamped to the detector)."""
    ny, nx = target_shape
    ra, dec = target_wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    sx, sy = exp.wcs.all_world2pix(ra, dec, 0, quiet=True)
    sny, snx = exp.shape
    x = float(np.clip(np.nan_to_num(sx[0], nan=snx / 2), 0, snx - 1))
    y = float(np.clip(np.nan_to_num(sy[0], nan=sny / 2), 0, sny - 1))
    scale_arcsec = float(np.sqrt(abs(np.linalg.det(exp.wcs.pixel_scale_matrix)))) * 3600.0
    return float(exp.psf.fwhm_px(x, y)) * scale_arcsec


def select_visits(
    exposures: Sequence[Exposure],
    *,
    target_wcs: WCS,
    target_shape: tuple[int, int],
    config: TemplateConfig | None = None,
    band: str | None = None,
    before_mjd: float | None = None,
) -> list[int]:
    """Indices of the exposures to build a template from, the best seeing first.

    Exposures without a WCS, PSF or zero point (not calibrated) are dropped with a warning.
    The rest must be in ``band`` (all the same band if ``None``), taken before ``before_mjd``
    and cover ``min_overlap_fraction`` of the patch; of those, up to ``max_visits`` with the
    smallest PSF FWHM at the patch (at most ``max_fwhm_arcsec``) are chosen.

    Raises
    ------
    TemplateError
        ``no_inputs`` for an empty list, ``mixed_bands`` if ``band`` is ``None`` and the bands
        differ, ``no_overlap`` if no usable exposure covers the patch, ``too_few_visits`` if fewer
        than ``min_visits`` qualify.
    """
    config = config or TemplateConfig()
    if len(exposures) == 0:
        raise TemplateError("no_inputs", "template: no exposures given")
    uncalibrated = [e for e in exposures if e.wcs is None or e.psf is None or e.zero_point is None]
    if uncalibrated:
        logger.warning(
            "template: %d uncalibrated exposures dropped (no WCS, PSF or zero point), first: %s",
            len(uncalibrated),
            ", ".join(e.label for e in uncalibrated[:3]),
        )
    bands = sorted({e.info.band for e in exposures})
    if band is None:
        if len(bands) > 1:
            raise TemplateError(
                "mixed_bands",
                f"template: exposures are in bands {bands}; pass band= to choose one",
                bands=bands,
            )
        band = bands[0]
    candidates = [
        i
        for i, e in enumerate(exposures)
        if e.wcs is not None
        and e.psf is not None
        and e.zero_point is not None
        and e.info.band == band
        and (before_mjd is None or e.info.mjd_tai < before_mjd)
    ]
    overlapping = [
        i
        for i in candidates
        if _source_coverage(exposures[i], target_wcs, target_shape) >= config.min_overlap_fraction
    ]
    if candidates and not overlapping:
        raise TemplateError(
            "no_overlap",
            f"template: none of {len(candidates)} {band}-band exposures covers "
            f"{config.min_overlap_fraction:.0%} of the patch; check the patch centre and WCSs",
            n_candidates=len(candidates),
        )
    seeing = {i: _fwhm_at_patch(exposures[i], target_wcs, target_shape) for i in overlapping}
    usable = [
        i
        for i in overlapping
        if config.max_fwhm_arcsec is None or seeing[i] <= config.max_fwhm_arcsec
    ]
    usable.sort(key=lambda i: (seeing[i], exposures[i].info.visit))
    if len(usable) < config.min_visits:
        raise TemplateError(
            "too_few_visits",
            f"template: {len(usable)} usable {band}-band visits (of {len(exposures)} given: "
            f"{len(candidates)} calibrated and before the cutoff, {len(overlapping)} covering the "
            f"patch); need min_visits={config.min_visits}",
            n_usable=len(usable),
            min_visits=config.min_visits,
        )
    return usable[: config.max_visits] if config.max_visits is not None else usable


def match_inputs(
    exposures: Sequence[Exposure],
    *,
    target_wcs: WCS,
    target_shape: tuple[int, int],
    config: TemplateConfig | None = None,
    target_psf: PixelPsf | None = None,
) -> MatchedInputs:
    """Warp every exposure onto the target grid and match it to the common PSF.

    The common PSF is :func:`~diaflow.coadd.common_psf` of the warped inputs unless
    ``target_psf`` is given.
    """
    config = config or TemplateConfig()
    shape = (int(target_shape[0]), int(target_shape[1]))
    warped, rhos = [], []
    for exp in exposures:
        if exp.psf is None:
            raise TemplateError("no_psf", f"{exp.label}: exposure has no PSF model")
        warped.append(warp_exposure(exp, target_wcs, shape, config=config.warp))
        rhos.append(warp_noise_correlation(exp, target_wcs, shape, config=config.warp))
    centre = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    input_fwhm = tuple(psf_shape(w.psf.kernel(*centre))[0] for w in warped)
    if target_psf is None:
        target_psf, _ = common_psf([w.psf for w in warped], shape, config=config.psf_match)
    matched = tuple(
        match_psf(w, target_psf, config=config.psf_match, noise_correlation=rho)
        for w, rho in zip(warped, rhos, strict=True)
    )
    fwhm = psf_shape(np.asarray(target_psf.kernel(*centre)))[0]
    return MatchedInputs(matched, target_psf, fwhm, input_fwhm, tuple(warped))


def _template_info(
    exposures: Sequence[Exposure],
    wcs: WCS,
    shape: tuple[int, int],
    zero_point: float,
    scales: NDArray[np.float64],
) -> VisitInfo:
    ny, nx = shape
    ((ra, dec),) = wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)
    cd = wcs.pixel_scale_matrix
    return VisitInfo(
        visit=-1,
        detector=-1,
        band=exposures[0].info.band,
        mjd_tai=float(np.mean([e.info.mjd_tai for e in exposures])),
        exptime_s=float(sum(e.info.exptime_s for e in exposures)),
        boresight_ra_deg=float(ra),
        boresight_dec_deg=float(dec),
        rotation_deg=float(math.degrees(math.atan2(cd[1, 0], cd[1, 1]))),
        airmass=float(np.mean([e.info.airmass for e in exposures])),
        zero_point_nominal=zero_point,
        gain=1.0,
        read_noise_e=0.0,
        saturation_e=float(
            min(e.info.saturation_e * s for e, s in zip(exposures, scales, strict=True))
        ),
    )


def _version(
    config: TemplateConfig, inputs: Sequence[TemplateInput], wcs: WCS, shape: tuple[int, int]
) -> str:
    text = json.dumps(
        {
            "config": config.config_hash(),
            "visits": sorted((i.visit, i.detector) for i in inputs),
            "wcs": wcs.to_header_string(relax=True),
            "shape": list(shape),
        },
        sort_keys=True,
    )
    return f"diaflow-{__version__}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _mean_psf(
    exposures: Sequence[Exposure],
    weights: NDArray[np.float64],
    valid: NDArray[np.bool_],
    config: WarpConfig,
) -> PixelPsf:
    """PSF of a weighted mean of exposures: the same weighted mean of their PSFs, over the
    inputs with data at each sample position (each is a unit-flux image on one flux scale)."""
    ny, nx = exposures[0].shape
    size = max(int(np.asarray(e.psf.kernel(0.0, 0.0)).shape[0]) for e in exposures)  # type: ignore[union-attr]

    def stamp(x: float, y: float) -> NDArray[np.float64]:
        iy, ix = min(max(round(y), 0), ny - 1), min(max(round(x), 0), nx - 1)
        here = valid[:, iy, ix]
        use = here if here.any() else np.ones(len(exposures), dtype=bool)
        out = np.zeros((size, size))
        for e, w, ok in zip(exposures, weights, use, strict=True):
            if ok and w > 0:
                out += w * _embed(np.asarray(e.psf.kernel(x, y), dtype=np.float64), size)  # type: ignore[union-attr]
        return out / out.sum()

    return PixelPsf.from_function(stamp, (ny, nx), order=config.psf_order, grid=config.psf_grid)


def coadd_matched(
    matched: MatchedInputs,
    *,
    config: TemplateConfig | None = None,
    version: str | None = None,
    name: str = "",
    keep_rejected: bool = False,
) -> Template:
    """Coadd PSF-matched inputs with outlier rejection into a :class:`Template`.

    Each input is scaled to ``config.zero_point``; transient outliers are masked
    (:func:`~diaflow.coadd.find_outliers`); the rest is averaged with one weight per input,
    ``1 / median(variance)``. The variance plane is ``sum w_i^2 V_i / (sum w_i)^2`` over the
    inputs used at each pixel. With ``keep_rejected`` the per-input masks of rejected pixels are
    kept in :attr:`Template.rejected`.

    Raises
    ------
    TemplateError
        ``too_few_visits`` with fewer than ``config.min_visits`` inputs, ``no_zero_point`` if
        an input has no zero point.
    """
    config = config or TemplateConfig()
    exps = matched.exposures
    if len(exps) < config.min_visits:
        raise TemplateError(
            "too_few_visits",
            f"template: {len(exps)} inputs, need min_visits={config.min_visits}",
            n_usable=len(exps),
            min_visits=config.min_visits,
        )
    t0 = time.perf_counter()
    shape = exps[0].shape
    for e in exps:
        if e.zero_point is None:
            raise TemplateError("no_zero_point", f"{e.label}: no calibrated zero point")
        if e.shape != shape:
            raise TemplateError(
                "shape_mismatch",
                f"{e.label}: shape {e.shape} differs from {shape}; warp every input onto the "
                "same grid first",
            )
    scales = np.array([10 ** (0.4 * (config.zero_point - float(e.zero_point))) for e in exps])
    bad_bits = mask_bits(*config.psf_match.bad_mask_planes)
    images = np.stack([e.image * np.float32(s) for e, s in zip(exps, scales, strict=True)])
    variances = np.stack(
        [e.variance * np.float32(s * s) for e, s in zip(exps, scales, strict=True)]
    )
    masks = np.stack([e.mask for e in exps])
    valid = ((masks & bad_bits) == 0) & np.isfinite(images) & np.isfinite(variances)
    valid &= variances > 0
    target_stamp = np.asarray(matched.psf.kernel(0.0, 0.0), dtype=np.float64)
    rejection = find_outliers(
        images, variances, valid, target_stamp, matched.fwhm_px, config=config.reject
    )
    psf: PsfModel = matched.psf
    direct = not config.psf_matched and matched.warped is not None
    if direct:
        exps = matched.warped  # type: ignore[assignment]
        images = np.stack([e.image * np.float32(s) for e, s in zip(exps, scales, strict=True)])
        variances = np.stack(
            [e.variance * np.float32(s * s) for e, s in zip(exps, scales, strict=True)]
        )
        masks = np.stack([e.mask for e in exps])
        # Only pixels that the rejection tested: matching spreads masks over the kernel, so a
        # warped input has data beside its bad columns that its matched version lacks.
        valid &= ((masks & bad_bits) == 0) & np.isfinite(images) & np.isfinite(variances)
        valid &= variances > 0
    used = valid & ~rejection.rejected
    weights = np.array(
        [
            1.0 / float(np.median(v[ok][:: max(1, int(ok.sum()) // 200_000)])) if ok.any() else 0.0
            for v, ok in zip(variances, valid, strict=True)
        ]
    )
    if direct:
        psf = _mean_psf(exps, weights, valid, config.warp)
    w = weights[:, None, None].astype(np.float32)
    wsum = (used * w).sum(axis=0)
    n_inputs = used.sum(axis=0).astype(np.int16)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = (np.where(used, images, 0) * w).sum(axis=0) / wsum
        variance = (np.where(used, variances, 0) * w * w).sum(axis=0) / wsum**2
    has_data = (masks & _NO_DATA) == 0
    n_data = has_data.sum(axis=0)
    mask = np.zeros(shape, dtype=np.int32)
    present = int(np.bitwise_or.reduce(masks, axis=None)) & ~_NO_DATA
    need = np.maximum(config.mask_propagation_fraction * n_data, 1)
    for bit in (b for b in range(31) if present >> b & 1):
        with_bit = ((masks & (1 << bit)) != 0) & has_data
        mask[with_bit.sum(axis=0) >= need] |= 1 << bit
    empty = n_inputs == 0
    mask[empty] |= _NO_DATA
    image[empty] = np.nan
    variance[empty] = np.nan
    total_w = float(weights.sum()) or 1.0
    inputs = tuple(
        TemplateInput(
            visit=e.info.visit,
            detector=e.info.detector,
            mjd_tai=e.info.mjd_tai,
            zero_point=float(e.zero_point),
            fwhm_px=float(f),
            flux_scale=float(s),
            weight=float(wt / total_w),
            rejected_fraction=float(rejection.rejected[k].sum() / max(valid[k].sum(), 1)),
        )
        for k, (e, f, s, wt) in enumerate(
            zip(exps, matched.input_fwhm_px, scales, weights, strict=True)
        )
    )
    wcs = exps[0].wcs
    info = _template_info(exps, wcs, shape, config.zero_point, scales)
    exposure = Exposure(
        image=image.astype(np.float32),
        mask=mask,
        variance=variance.astype(np.float32),
        wcs=wcs.deepcopy(),
        info=info,
        zero_point=config.zero_point,
        psf=psf,
        extra={"ORIGIN": "diaflow.coadd"},
    )
    version = version or _version(config, inputs, wcs, shape)
    logger.info(
        "template %s band=%s visits=%d transient=%d persistent=%d coverage=%.3f %.2fs",
        name or version,
        info.band,
        len(exps),
        int(rejection.n_transient.sum()),
        int(rejection.n_persistent.sum()),
        float((~empty).mean()),
        time.perf_counter() - t0,
    )
    return Template(
        exposure=exposure,
        inputs=inputs,
        n_inputs=n_inputs,
        version=version,
        name=name,
        rejected=rejection.rejected if keep_rejected else None,
    )


def build_template(
    exposures: Sequence[Exposure],
    *,
    target_wcs: WCS,
    target_shape: tuple[int, int],
    config: TemplateConfig | None = None,
    band: str | None = None,
    before_mjd: float | None = None,
    version: str | None = None,
    name: str = "",
) -> Template:
    """Build the template of one sky patch and band from calibrated exposures.

    Parameters
    ----------
    exposures
        Calibrated exposures (WCS, PSF, zero point), background subtracted; cosmic rays need not
        be masked (outlier rejection removes them).
    target_wcs, target_shape
        The patch grid (e.g. :attr:`SkyPatch.wcs`, :attr:`SkyPatch.shape`).
    config
        Selection, warping, matching and rejection settings.
    band
        Band of the template; ``None`` requires all exposures in one band.
    before_mjd
        Only visits taken before this MJD (TAI) are used (a data-release cutoff).
    version
        Version label; by default derived from the software version, the configuration, the
        input visits and the grid, so the same inputs give the same version.
    name
        Patch name, for logs and the FITS header.

    Returns
    -------
    Template

    Raises
    ------
    TemplateError
        See :func:`select_visits`; also ``no_psf`` if a selected exposure has no PSF.
    """
    config = config or TemplateConfig()
    chosen = select_visits(
        exposures,
        target_wcs=target_wcs,
        target_shape=target_shape,
        config=config,
        band=band,
        before_mjd=before_mjd,
    )
    matched = match_inputs(
        [exposures[i] for i in chosen],
        target_wcs=target_wcs,
        target_shape=target_shape,
        config=config,
    )
    return coadd_matched(matched, config=config, version=version, name=name)
