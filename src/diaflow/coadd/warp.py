"""Warp an exposure onto another WCS: image, variance, mask and PSF, flux-conserving.

Each target pixel is the Lanczos-3 interpolation of the source image at the position its centre
maps to, times the pixel-area ratio ``|det J|`` (``J = d(x_src, y_src) / d(x_tgt, y_tgt)``), so
counts per pixel become counts per *target* pixel and every source's flux is kept. The variance is
interpolated with the squared weights (times ``det J^2``): exact for the independent pixels of an
unwarped exposure. Mask bits are OR-ed over every tap with a non-zero weight, so a bad or
saturated pixel flags all target pixels its value reached. Target pixels whose taps leave the
source, or touch ``NO_DATA``, are ``NO_DATA`` with NaN image and variance.

Speed: the WCS mapping is evaluated on a coarse grid and spline-interpolated (``_pixelmap``);
target pixels are processed in tiles, each gathering its ``6 x 6`` taps as six contiguous row
windows from a small source cut-out that stays in cache, with weights looked up in a table of
sub-pixel phases (``_lanczos``).

Interpolation correlates the noise of neighbouring target pixels. :func:`warp_noise_correlation`
gives that correlation, which PSF matching needs to propagate the variance of the warped image
through a convolution correctly.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
from astropy.wcs import WCS
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import BadInputError, ConfigError
from ..image import Exposure, MaskPlane, PixelPsf, PsfModel, mask_bits
from ._lanczos import lanczos_weights, phase_tables
from ._pixelmap import PixelMap, pixel_map

__all__ = ["WarpConfig", "warp_exposure", "warp_noise_correlation", "warp_psf"]

logger = logging.getLogger(__name__)

_NO_DATA = mask_bits(MaskPlane.NO_DATA)


@dataclass(frozen=True, kw_only=True)
class WarpConfig:
    """How exposures are resampled onto another pixel grid."""

    lanczos_order: int = 3
    """Order ``a`` of the Lanczos kernel: ``2a`` taps per axis (3 is the usual choice)."""
    n_phases: int = 128
    """Sub-pixel phases tabulated per axis; positions are rounded to ``1 / n_phases`` pixel."""
    map_step_px: int = 64
    """Spacing of the coarse grid on which the WCS mapping is evaluated exactly, target pixels."""
    tile_px: int = 128
    """Side of the blocks of target pixels processed at once (memory and cache use)."""
    psf_grid: int = 5
    """The warped PSF is sampled on ``psf_grid x psf_grid`` target positions..."""
    psf_order: int = 2
    """...and fitted with polynomials of this order in the target position."""

    def __post_init__(self) -> None:
        checks = (
            (2 <= self.lanczos_order <= 6, "lanczos_order must be 2..6", self.lanczos_order),
            (8 <= self.n_phases <= 1024, "n_phases must be 8..1024", self.n_phases),
            (self.map_step_px >= 4, "map_step_px must be >= 4", self.map_step_px),
            (self.tile_px >= 8, "tile_px must be >= 8", self.tile_px),
            (self.psf_grid >= 1, "psf_grid must be >= 1", self.psf_grid),
            (
                0 <= self.psf_order < self.psf_grid or self.psf_order == 0,
                "psf_order must be < psf_grid",
                self.psf_order,
            ),
        )
        for ok, message, value in checks:
            if not ok:
                raise ConfigError(f"WarpConfig: {message}, got {value!r}")


def _check(exposure: Exposure, target_wcs: WCS, target_shape: tuple[int, int]) -> None:
    if exposure.wcs is None:
        raise BadInputError(
            "no_wcs", f"{exposure.label}: exposure has no WCS; calibrate it (astrometry) first"
        )
    if not isinstance(target_wcs, WCS) or not target_wcs.has_celestial:
        raise BadInputError(
            "bad_target_wcs",
            f"target WCS must be a celestial astropy WCS, got {type(target_wcs).__name__}",
        )
    if len(target_shape) != 2 or min(target_shape) < 1:
        raise BadInputError("bad_shape", f"target_shape must be (ny, nx) >= 1, got {target_shape}")


def _or_dilate(mask: NDArray[np.int32], lo: int, hi: int, axis: int) -> NDArray[np.int32]:
    """OR of ``mask`` shifted by ``-lo..hi`` pixels along ``axis`` (out[j] = OR mask[j+k])."""
    out = mask.copy()
    n = mask.shape[axis]
    for k in range(-lo, hi + 1):
        if k == 0 or abs(k) >= n:
            continue
        dst = [slice(None)] * 2
        src = [slice(None)] * 2
        dst[axis], src[axis] = (
            (slice(0, n - k), slice(k, n)) if k > 0 else (slice(-k, n), slice(0, n + k))
        )
        out[tuple(dst)] |= mask[tuple(src)]
    return out


class _MaskFootprints:
    """The source mask OR-ed over full or single-tap footprints, built on first use."""

    def __init__(self, mask: NDArray[np.int32], order: int) -> None:
        self.mask, self.order = mask, order
        self._cache: dict[tuple[bool, bool], NDArray[np.int32]] = {(False, False): mask}

    def get(self, full_x: bool, full_y: bool) -> NDArray[np.int32]:
        key = (full_x, full_y)
        if key not in self._cache:
            m = self.get(full_x, False) if full_y else self.mask
            if full_y:
                m = _or_dilate(m, self.order - 1, self.order, axis=0)
            elif full_x:
                m = _or_dilate(m, self.order - 1, self.order, axis=1)
            self._cache[key] = m
        return self._cache[key]


def _split_phase(coord: NDArray[np.float64], n_phases: int) -> tuple[NDArray[np.intp], ...]:
    """Integer base and phase index (0..n_phases-1) of finite coordinates.

    A phase that rounds to 1 carries over to the next pixel with phase 0.
    """
    scaled = np.rint(coord * n_phases).astype(np.intp)
    return scaled // n_phases, scaled % n_phases


def _resample_tile(
    planes: tuple[NDArray[np.float32], NDArray[np.float32]],
    ix: NDArray[np.intp],
    iy: NDArray[np.intp],
    qx: NDArray[np.intp],
    qy: NDArray[np.intp],
    order: int,
    n_phases: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Interpolate image and variance at padded-source bases (ix, iy) with phases (qx, qy)."""
    taps = 2 * order
    _, w2, _ = phase_tables(order, n_phases)
    x0, y0 = int(ix.min()) - order + 1, int(iy.min()) - order + 1
    x1, y1 = int(ix.max()) + order + 1, int(iy.max()) + order + 1
    nwin = x1 - x0 - taps + 1
    base = (iy - order + 1 - y0) * nwin + (ix - order + 1 - x0)
    rows = base[:, None] + np.arange(taps) * nwin
    weights = w2.take(qy * (n_phases + 1) + qx, axis=0)
    out = []
    windows = np.empty((y1 - y0, nwin, taps), dtype=np.float32)
    for plane in planes:
        sub = plane[y0:y1, x0:x1]
        for k in range(taps):
            windows[:, :, k] = sub[:, k : k + nwin]
        values = windows.reshape(-1, taps).take(rows, axis=0).reshape(len(base), -1)
        out.append(np.einsum("mk,mk->m", values, weights))
        weights *= weights  # the variance plane takes the squared weights
    return out[0], out[1]


def warp_exposure(
    exposure: Exposure,
    target_wcs: WCS,
    target_shape: tuple[int, int],
    *,
    config: WarpConfig | None = None,
) -> Exposure:
    """Resample an exposure onto ``target_wcs``, conserving flux.

    Parameters
    ----------
    exposure
        Exposure with a WCS; its PSF, if any, is warped too (:func:`warp_psf`).
    target_wcs
        Celestial WCS of the target grid (0-based pixels, as every diaflow WCS).
    target_shape
        (ny, nx) of the target grid.
    config
        Interpolation settings; defaults to :class:`WarpConfig()`.

    Returns
    -------
    Exposure
        On the target grid: image in counts per target pixel (float32), variance (float32), mask
        (int32) with ``NO_DATA`` (and NaN image and variance) where the source has no data, the
        same ``info``, ``zero_point`` and ``extra``, ``wcs=target_wcs`` and the warped PSF.

    Raises
    ------
    BadInputError
        If the exposure has no WCS, the target WCS is not celestial or the shape is invalid.

    Notes
    -----
    A target pixel is valid when every tap with a non-zero weight lies on the source: pure
    integer shifts copy pixels exactly, up to the edge; otherwise the outer ``order - 1`` source
    pixels are lost.
    """
    config = config or WarpConfig()
    _check(exposure, target_wcs, target_shape)
    t0 = time.perf_counter()
    ny, nx = (int(target_shape[0]), int(target_shape[1]))
    a, q_n = config.lanczos_order, config.n_phases
    src_ny, src_nx = exposure.shape
    pmap = pixel_map(exposure.wcs, target_wcs, (ny, nx), step_px=config.map_step_px)

    # Pad so that every gathered tap is inside the arrays (weights of pad pixels are zero).
    pad = a + 1
    image = np.pad(np.nan_to_num(exposure.image.astype(np.float32), nan=0.0), pad)
    variance = np.pad(np.nan_to_num(exposure.variance.astype(np.float32), nan=0.0), pad)
    footprints = _MaskFootprints(np.pad(exposure.mask.astype(np.int32), pad), a)

    out_image = np.full((ny, nx), np.nan, dtype=np.float32)
    out_var = np.full((ny, nx), np.nan, dtype=np.float32)
    out_mask = np.full((ny, nx), _NO_DATA, dtype=np.int32)
    step = config.tile_px
    band_rows = max(step, (1 << 20) // max(nx, 1) // step * step)  # ~1 Mpixel per band
    for b0 in range(0, ny, band_rows):
        band_x, band_y, band_det = pmap.band(slice(b0, min(b0 + band_rows, ny)))
        finite = np.isfinite(band_x) & np.isfinite(band_y)
        if not finite.all():  # outside the projection: send far off the source
            band_x[~finite] = band_y[~finite] = -1.0e6
        for r0, c0 in itertools.product(
            range(b0, min(b0 + band_rows, ny), step), range(0, nx, step)
        ):
            rows = slice(r0, min(r0 + step, ny))
            cols = slice(c0, min(c0 + step, nx))
            brow = slice(r0 - b0, rows.stop - b0)
            ix, qx = _split_phase(band_x[brow, cols], q_n)
            iy, qy = _split_phase(band_y[brow, cols], q_n)
            full_x, full_y = qx != 0, qy != 0
            every_full = bool(full_x.all() and full_y.all())
            if every_full:
                valid = (ix >= a - 1) & (ix <= src_nx - 1 - a) & (iy >= a - 1)
                valid &= iy <= src_ny - 1 - a
            else:
                valid = (ix - (a - 1) * full_x >= 0) & (ix + a * full_x <= src_nx - 1)
                valid &= (iy - (a - 1) * full_y >= 0) & (iy + a * full_y <= src_ny - 1)
            every_valid = bool(valid.all())
            if not every_valid and not valid.any():
                continue
            pick = slice(None) if every_valid else valid
            ixv, iyv = ix[pick].ravel() + pad, iy[pick].ravel() + pad
            qxv, qyv = qx[pick].ravel(), qy[pick].ravel()
            val, var = _resample_tile((image, variance), ixv, iyv, qxv, qyv, a, q_n)
            if every_full:
                m = footprints.get(True, True)[iyv, ixv]
            else:
                fxv, fyv = full_x[pick].ravel(), full_y[pick].ravel()
                m = np.empty(len(ixv), dtype=np.int32)
                for kx, ky in itertools.product((False, True), (False, True)):
                    sel = (fxv == kx) & (fyv == ky)
                    if sel.any():
                        m[sel] = footprints.get(kx, ky)[iyv[sel], ixv[sel]]
            d = band_det[brow, cols][pick].ravel()
            val *= d
            var *= d * d
            if every_valid:
                shape = (rows.stop - rows.start, cols.stop - cols.start)
                out_image[rows, cols] = val.reshape(shape)
                out_var[rows, cols] = var.reshape(shape)
                out_mask[rows, cols] = m.reshape(shape)
            else:
                out_image[rows, cols][valid] = val
                out_var[rows, cols][valid] = var
                out_mask[rows, cols][valid] = m
    no_data = (out_mask & _NO_DATA) != 0
    out_image[no_data] = np.nan
    out_var[no_data] = np.nan
    psf = None
    if exposure.psf is not None:
        psf = warp_psf(exposure.psf, pmap, exposure.shape, config=config)
    logger.debug(
        "warp %s -> %dx%d valid=%.3f %.2fs",
        exposure.label,
        ny,
        nx,
        1.0 - no_data.mean(),
        time.perf_counter() - t0,
    )
    return replace(
        exposure,
        image=out_image,
        variance=out_var,
        mask=out_mask,
        wcs=target_wcs.deepcopy(),
        psf=psf,
        extra=dict(exposure.extra),
    )


def _resample_stamp(stamp: NDArray[np.float64], jac: NDArray[np.float64]) -> NDArray[np.float64]:
    """``stamp`` seen through the local linear map ``jac`` (target offset -> source offset)."""
    c = (stamp.shape[0] - 1) / 2.0
    m_rc = np.array([[jac[1, 1], jac[1, 0]], [jac[0, 1], jac[0, 0]]])  # (row, col) order
    out = ndimage.affine_transform(
        stamp, m_rc, offset=c - m_rc @ np.array([c, c]), order=3, mode="constant", cval=0.0
    )
    total = out.sum()
    return out / total if total > 0 else out


def warp_psf(
    psf: PsfModel,
    pmap: PixelMap,
    src_shape: tuple[int, int],
    *,
    config: WarpConfig | None = None,
) -> PixelPsf:
    """The PSF of a warped exposure, as a :class:`~diaflow.image.PixelPsf` on the target grid.

    At each of ``psf_grid^2`` target positions the source PSF (at the matching source position,
    clamped to the detector) is resampled through the local Jacobian of the mapping; the stamps
    are then fitted with polynomials of the target position. Interpolation blurs the image
    slightly more than this (a Lanczos-3 kernel is nearly ideal for well-sampled PSFs).
    """
    config = config or WarpConfig()
    src_ny, src_nx = src_shape

    def stamp(x: float, y: float) -> NDArray[np.float64]:
        xs, ys, jac = pmap.at(np.array([x]), np.array([y]))
        sx = float(np.clip(xs[0], 0, src_nx - 1)) if np.isfinite(xs[0]) else (src_nx - 1) / 2
        sy = float(np.clip(ys[0], 0, src_ny - 1)) if np.isfinite(ys[0]) else (src_ny - 1) / 2
        return _resample_stamp(np.asarray(psf.kernel(sx, sy), dtype=np.float64), jac[0])

    return PixelPsf.from_function(stamp, pmap.shape, order=config.psf_order, grid=config.psf_grid)


def warp_noise_correlation(
    exposure: Exposure,
    target_wcs: WCS,
    target_shape: tuple[int, int],
    *,
    config: WarpConfig | None = None,
    max_lag: int = 3,
    n_samples: int = 400,
) -> NDArray[np.float64]:
    """Correlation of the warped noise between target pixels ``(dy, dx)`` apart.

    For independent source pixels, ``Cov(t, t + d) = sum_s w_t(s) w_{t+d}(s) var(s)``. Averaged
    over target pixels (their sub-pixel phases differ) and divided by the mean of ``sum_s
    w_t(s)^2`` (what the variance plane holds), this is the factor by which the covariance at
    lag ``d`` exceeds the variance plane. The weights are separable, so each overlap is a product
    of two 1-D sums.

    Returns
    -------
    rho
        ``(2 max_lag + 1, 2 max_lag + 1)`` array, ``rho[max_lag + dy, max_lag + dx]``, with
        ``rho`` = 1 at zero lag.
    """
    config = config or WarpConfig()
    _check(exposure, target_wcs, target_shape)
    a = config.lanczos_order
    ny, nx = target_shape
    pmap = pixel_map(exposure.wcs, target_wcs, (ny, nx), step_px=config.map_step_px)
    rng = np.random.default_rng(0)  # fixed sample positions: the result is deterministic
    margin = max_lag + 1
    ty = rng.uniform(margin, max(ny - 1 - margin, margin + 1), n_samples)
    tx = rng.uniform(margin, max(nx - 1 - margin, margin + 1), n_samples)
    ty, tx = np.round(ty), np.round(tx)
    lags = np.arange(-max_lag, max_lag + 1)
    dy, dx = np.meshgrid(lags, lags, indexing="ij")
    xs, ys, _ = pmap.at((tx[:, None] + dx.ravel()).ravel(), (ty[:, None] + dy.ravel()).ravel())
    xs = xs.reshape(n_samples, -1)
    ys = ys.reshape(n_samples, -1)
    centre = dx.size // 2

    def overlap(c: NDArray[np.float64]) -> NDArray[np.float64]:
        """1-D sum over source pixels of w_centre * w_lag, (n_samples, n_lags)."""
        base = np.floor(c)
        w = lanczos_weights(c - base, a)  # (n, L, 2a)
        shift = (base - base[:, centre : centre + 1]).astype(int)  # (n, L)
        out = np.zeros(c.shape)
        wc = w[:, centre, :]
        for s in range(-2 * a + 1, 2 * a):
            lo, hi = max(0, s), min(2 * a, 2 * a + s)
            if lo >= hi:
                continue
            # tap k of the lag pixel is source pixel base_l + k = base_c + s + k ...
            dot = np.einsum("nk,nlk->nl", wc[:, lo:hi], w[:, :, lo - s : hi - s])
            out += np.where(shift == s, dot, 0.0)
        return out

    prod = overlap(xs) * overlap(ys)
    rho = prod.mean(axis=0) / prod[:, centre].mean()
    return rho.reshape(dx.shape)
