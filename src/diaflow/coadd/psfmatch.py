"""PSF matching of warped exposures to one common PSF, with honest variance propagation.

Coadding images of different seeing mixes PSFs; a template for image subtraction wants one
known PSF. Each input is convolved with a kernel ``K`` that takes its PSF ``P`` to the common
``T``: ``P * K = T``. Kernels come from the PSF models by a regularised Fourier division,
``K^ = T^ conj(P^) / (|P^|^2 + lambda max|P^|^2)``, cut to a stamp and normalised to unit sum so
fluxes are kept. PSFs vary over the detector, so kernels are computed on a grid of positions and
the convolved images are blended bilinearly between grid nodes (the "convolve then interpolate"
form of a spatially varying kernel, as in Alard 2000).

The common PSF is the broadest input PSF, circularised and broadened by a Gaussian until its
FWHM is ``target_fwhm_factor`` times the largest input FWHM (measured along the major axis):
then every kernel smooths, none has to sharpen.

Variance: for independent pixels the convolved variance is ``K^2 * V``. A warped image is already
correlated (``rho``, from :func:`~diaflow.coadd.warp.warp_noise_correlation`), and then the
per-pixel variance is ``G * V`` with ``G = K (rho * K)``, larger than ``K^2 * V`` because the
interpolation averaged part of the noise into neighbouring pixels. The variance plane is smooth on
the scale of the differences between kernels, so it is convolved once, with the central node's
``G`` normalised, and scaled by the bilinear blend of every node's ``sum(G)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy import fft, ndimage, signal

from ..errors import ConfigError, TemplateError
from ..image import Exposure, MaskPlane, PixelPsf, PsfModel, mask_bits

__all__ = [
    "PsfMatchConfig",
    "common_psf",
    "match_psf",
    "matching_kernel",
    "psf_shape",
]

logger = logging.getLogger(__name__)

_NO_DATA = mask_bits(MaskPlane.NO_DATA)


@dataclass(frozen=True, kw_only=True)
class PsfMatchConfig:
    """How warped inputs are convolved to a common PSF."""

    target_fwhm_factor: float = 1.1
    """Common PSF FWHM over the largest input FWHM (major axis); > 1 so no kernel sharpens."""
    kernel_size_px: int = 31
    """Side of the matching kernel stamps, pixels (odd)."""
    psf_size_px: int = 41
    """Side of the common PSF stamp, pixels (odd)."""
    kernel_grid: int = 3
    """Kernels are computed on ``kernel_grid x kernel_grid`` positions and blended bilinearly."""
    regularization: float = 1.0e-5
    """Wiener term ``lambda`` relative to ``max |P^|^2``: damps frequencies the PSF lacks."""
    bad_mask_planes: tuple[str, ...] = ("NO_DATA", "BAD", "SAT", "CR", "STREAK")
    """Pixels with these bits do not enter the convolution (their value is set to zero)."""
    mask_kernel_fraction: float = 0.005
    """A convolved pixel inherits a mask bit if pixels with it carry more than this fraction of
    the kernel's absolute weight."""

    def __post_init__(self) -> None:
        checks = (
            (
                self.target_fwhm_factor >= 1.0,
                "target_fwhm_factor must be >= 1",
                self.target_fwhm_factor,
            ),
            (
                self.kernel_size_px >= 3 and self.kernel_size_px % 2 == 1,
                "kernel_size_px must be odd and >= 3",
                self.kernel_size_px,
            ),
            (
                self.psf_size_px >= 3 and self.psf_size_px % 2 == 1,
                "psf_size_px must be odd and >= 3",
                self.psf_size_px,
            ),
            (self.kernel_grid >= 1, "kernel_grid must be >= 1", self.kernel_grid),
            (self.regularization > 0, "regularization must be > 0", self.regularization),
            (
                0 < self.mask_kernel_fraction < 1,
                "mask_kernel_fraction must be in (0, 1)",
                self.mask_kernel_fraction,
            ),
        )
        for ok, message, value in checks:
            if not ok:
                raise ConfigError(f"PsfMatchConfig: {message}, got {value!r}")
        for name in self.bad_mask_planes:
            if name not in MaskPlane.__members__:
                raise ConfigError(
                    f"PsfMatchConfig: unknown mask plane {name!r} in bad_mask_planes; "
                    f"known: {', '.join(MaskPlane.__members__)}"
                )


def _embed(stamp: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    """``stamp`` centred in a ``size x size`` array (cropped or zero-padded), odd sizes."""
    out = np.zeros((size, size))
    h, s = stamp.shape[0] // 2, size // 2
    r = min(h, s)
    out[s - r : s + r + 1, s - r : s + r + 1] = stamp[h - r : h + r + 1, h - r : h + r + 1]
    return out


def psf_shape(stamp: NDArray[np.float64]) -> tuple[float, float, float]:
    """FWHM (pixels) of a PSF stamp: (equivalent-circle, major axis, minor axis).

    Measured on the region above half the peak, on a 4x upsampled stamp: its area gives the
    circle's FWHM; its second moments give the axes of the half-maximum ellipse. Unlike
    second moments of the light, this ignores the wings of a Moffat profile.
    """
    fine = ndimage.zoom(np.asarray(stamp, dtype=np.float64), 4, order=3)
    above = fine >= fine.max() / 2
    area = above.sum() / 16.0
    yy, xx = np.nonzero(above)
    cov = np.cov(np.vstack([xx, yy]) / 4.0) if len(xx) > 2 else np.eye(2) * 0.25
    evals = np.clip(np.linalg.eigvalsh(np.atleast_2d(cov) + np.eye(2) / 192.0), 0, None)
    # A uniform ellipse of semi-axis s has variance s^2 / 4 along it; 1/192 px^2 adds back the
    # variance a 1/4-pixel sampling removes.
    return (
        float(2 * np.sqrt(area / np.pi)),
        float(4 * np.sqrt(evals[1])),
        float(4 * np.sqrt(evals[0])),
    )


def matching_kernel(
    psf: NDArray[np.float64],
    target: NDArray[np.float64],
    *,
    size: int = 31,
    regularization: float = 1.0e-5,
) -> NDArray[np.float64]:
    """Kernel ``K`` (``size x size``, unit sum) with ``psf * K ~= target``.

    Both stamps are centred on their central pixel. The division is done on a grid twice the
    larger stamp, so the kernel does not wrap around.
    """
    n = int(fft.next_fast_len(2 * max(psf.shape[0], target.shape[0], size) + 1))
    n += 1 - n % 2
    p_hat = fft.fft2(fft.ifftshift(_embed(psf / psf.sum(), n)))
    t_hat = fft.fft2(fft.ifftshift(_embed(target / target.sum(), n)))
    power = np.abs(p_hat) ** 2
    k_hat = t_hat * np.conj(p_hat) / (power + regularization * power.max())
    kernel = _embed(fft.fftshift(np.real(fft.ifft2(k_hat))), size)
    return kernel / kernel.sum()


def _circularise(stamp: NDArray[np.float64], n_angles: int = 12) -> NDArray[np.float64]:
    """Average of the stamp rotated about its centre by ``n_angles`` angles over 180 degrees."""
    out = np.zeros_like(stamp)
    for angle in np.arange(n_angles) * 180.0 / n_angles:
        out += ndimage.rotate(stamp, angle, reshape=False, order=3, mode="constant")
    return out / out.sum()


def _gaussian(sigma: float, size: int) -> NDArray[np.float64]:
    h = size // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    g = np.exp(-0.5 * (xx**2 + yy**2) / max(sigma, 1e-3) ** 2)
    return g / g.sum()


def _probe_positions(shape: tuple[int, int], n: int) -> list[tuple[float, float]]:
    """An ``n x n`` grid of (x, y) positions spanning the grid, where input PSFs are examined."""
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    return [(float(x), float(y)) for x, y in zip(gx.ravel(), gy.ravel(), strict=True)]


def common_psf(
    psfs: Sequence[PsfModel],
    shape: tuple[int, int],
    *,
    config: PsfMatchConfig | None = None,
) -> tuple[PixelPsf, float]:
    """The common PSF of a set of inputs on one grid, and the largest input FWHM (pixels).

    The broadest input PSF (largest major-axis FWHM over a grid of positions) is circularised
    and convolved with the Gaussian that brings its FWHM to ``target_fwhm_factor`` times that
    largest FWHM.

    Returns
    -------
    psf
        A :class:`~diaflow.image.PixelPsf` of order 0 (the same everywhere) on ``shape``.
    worst_fwhm_px
        The largest major-axis FWHM found among the inputs.
    """
    config = config or PsfMatchConfig()
    if not psfs:
        raise TemplateError("no_inputs", "common PSF: no input PSFs given")
    worst, worst_stamp = -1.0, None
    for psf in psfs:
        for x, y in _probe_positions(shape, config.kernel_grid):
            stamp = np.asarray(psf.kernel(x, y), dtype=np.float64)
            major = psf_shape(stamp)[1]
            if major > worst:
                worst, worst_stamp = major, stamp
    assert worst_stamp is not None
    size = config.psf_size_px
    base = _circularise(_embed(worst_stamp, size))
    goal = config.target_fwhm_factor * worst

    def fwhm_with(sigma: float) -> float:
        return psf_shape(signal.fftconvolve(base, _gaussian(sigma, size), mode="same"))[0]

    lo, hi = 0.0, max(goal, 1.0)
    if fwhm_with(lo) < goal:
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if fwhm_with(mid) < goal else (lo, mid)
    stamp = signal.fftconvolve(base, _gaussian(0.5 * (lo + hi), size), mode="same")
    stamp = np.clip(stamp, 0.0, None)
    stamp /= stamp.sum()
    return PixelPsf(stamp[None, :, :], 0, (int(shape[0]), int(shape[1]))), worst


def _node_positions(valid: NDArray[np.bool_], n: int) -> tuple[NDArray[np.float64], ...]:
    """Kernel-grid node coordinates spanning the valid data's bounding box."""
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    return (
        np.linspace(cols[0], cols[-1], n) if n > 1 else np.array([(cols[0] + cols[-1]) / 2]),
        np.linspace(rows[0], rows[-1], n) if n > 1 else np.array([(rows[0] + rows[-1]) / 2]),
    )


def _tent_weights(coord: NDArray[np.float64], nodes: NDArray[np.float64]) -> NDArray[np.float64]:
    """Bilinear (tent) weights of each node at each coordinate, clamped at the ends."""
    if len(nodes) == 1:
        return np.ones((1, len(coord)))
    eye = np.eye(len(nodes))
    return np.array([np.interp(coord, nodes, eye[j]) for j in range(len(nodes))])


class _Convolver:
    """FFT convolution of one image with several kernels, sharing the image's transform."""

    def __init__(self, image: NDArray[np.float32], kernel_size: int) -> None:
        self.shape = image.shape
        self.half = kernel_size // 2
        ny, nx = image.shape
        self.fshape = (
            fft.next_fast_len(ny + 2 * self.half, real=True),
            fft.next_fast_len(nx + 2 * self.half, real=True),
        )
        self.image_hat = fft.rfft2(image.astype(np.float32), self.fshape)

    def __call__(self, kernel: NDArray[np.float64]) -> NDArray[np.float32]:
        # Kernel centred on index (0, 0) with negative offsets wrapped: a "same" convolution.
        k = np.zeros(self.fshape, dtype=np.float32)
        h = self.half
        k[: h + 1, : h + 1] = kernel[h:, h:]
        k[: h + 1, -h:] = kernel[h:, :h]
        k[-h:, : h + 1] = kernel[:h, h:]
        k[-h:, -h:] = kernel[:h, :h]
        out = fft.irfft2(self.image_hat * fft.rfft2(k), self.fshape)
        return out[: self.shape[0], : self.shape[1]]


def _variance_kernel(
    kernel: NDArray[np.float64], rho: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """``G = K (rho * K)``: the kernel that carries a correlated variance plane."""
    if rho is None:
        return kernel**2
    return kernel * signal.fftconvolve(kernel, rho, mode="same")


def match_psf(
    exposure: Exposure,
    target_psf: PsfModel,
    *,
    config: PsfMatchConfig | None = None,
    noise_correlation: NDArray[np.float64] | None = None,
) -> Exposure:
    """Convolve an exposure so that its PSF becomes ``target_psf``.

    Parameters
    ----------
    exposure
        Usually a warped exposure (:func:`~diaflow.coadd.warp_exposure`); it must carry a PSF.
    target_psf
        The common PSF; it should be broader than the exposure's PSF everywhere.
    config
        Matching settings; defaults to :class:`PsfMatchConfig()`.
    noise_correlation
        Correlation of the exposure's noise between neighbouring pixels, ``rho[c + dy, c + dx]``
        with ``rho[c, c] = 1`` (:func:`~diaflow.coadd.warp_noise_correlation`); ``None`` for
        independent pixels.

    Returns
    -------
    Exposure
        Image and variance convolved (float32), mask bits spread over the kernel footprint,
        NaN and ``NO_DATA`` where the input had no data near, ``psf=target_psf``.

    Raises
    ------
    TemplateError
        If the exposure has no PSF or no valid pixel.
    """
    config = config or PsfMatchConfig()
    if exposure.psf is None:
        raise TemplateError(
            "no_psf", f"{exposure.label}: exposure has no PSF model; calibrate it first"
        )
    t0 = time.perf_counter()
    bad_bits = mask_bits(*config.bad_mask_planes)
    bad = ((exposure.mask & bad_bits) != 0) | ~np.isfinite(exposure.image)
    bad |= ~np.isfinite(exposure.variance)
    if bad.all():
        raise TemplateError(
            "no_valid_pixels", f"{exposure.label}: every pixel is masked or NaN; nothing to match"
        )
    image = np.where(bad, np.float32(0), exposure.image).astype(np.float32)
    variance = np.where(bad, np.float32(0), exposure.variance).astype(np.float32)
    size = config.kernel_size_px
    target = np.asarray(target_psf.kernel(0.0, 0.0), dtype=np.float64)
    node_x, node_y = _node_positions(~bad, config.kernel_grid)
    ny, nx = exposure.shape
    wx = _tent_weights(np.arange(nx, dtype=np.float64), node_x)
    wy = _tent_weights(np.arange(ny, dtype=np.float64), node_y)
    conv_image = _Convolver(image, size)
    conv_var = _Convolver(variance, size)
    out_image = np.zeros((ny, nx), dtype=np.float32)
    var_scale = np.zeros((ny, nx), dtype=np.float32)
    abs_kernel = np.zeros((size, size))
    centre_kernel = None
    for j, y in enumerate(node_y):
        for i, x in enumerate(node_x):
            psf = np.asarray(exposure.psf.kernel(float(x), float(y)), dtype=np.float64)
            kernel = matching_kernel(psf, target, size=size, regularization=config.regularization)
            blend = (wy[j][:, None] * wx[i][None, :]).astype(np.float32)
            out_image += blend * conv_image(kernel)
            var_kernel = _variance_kernel(kernel, noise_correlation)
            var_scale += blend * np.float32(var_kernel.sum())
            if j == len(node_y) // 2 and i == len(node_x) // 2:
                centre_kernel = var_kernel
            abs_kernel += np.abs(kernel)
    # The variance plane is smooth on the kernel's scale (sky, and stars wider than the kernel
    # differences), so one convolution with the central variance kernel, rescaled to each node's
    # sum, stands in for one convolution per node.
    assert centre_kernel is not None
    out_var = conv_var(centre_kernel / centre_kernel.sum()) * var_scale
    abs_kernel /= abs_kernel.sum()
    out_mask = _spread_mask(exposure.mask, bad, abs_kernel, config.mask_kernel_fraction)
    no_data = (out_mask & _NO_DATA) != 0
    out_image[no_data] = np.nan
    out_var[no_data] = np.nan
    logger.debug(
        "psfmatch %s nodes=%d %.2fs",
        exposure.label,
        len(node_x) * len(node_y),
        time.perf_counter() - t0,
    )
    return replace(exposure, image=out_image, variance=out_var, mask=out_mask, psf=target_psf)


def _spread_mask(
    mask: NDArray[np.int32],
    bad: NDArray[np.bool_],
    abs_kernel: NDArray[np.float64],
    fraction: float,
) -> NDArray[np.int32]:
    """Each mask bit spread to pixels where its pixels carry > ``fraction`` of the kernel."""
    present = int(np.bitwise_or.reduce(mask, axis=None)) if mask.size else 0
    out = np.zeros_like(mask)
    conv = _Convolver(np.zeros(mask.shape, np.float32), abs_kernel.shape[0])
    planes = [(1 << b, (mask & (1 << b)) != 0) for b in range(31) if present >> b & 1]
    # Pixels that are bad without a bit (NaN values) count as NO_DATA.
    nan_only = bad & (mask == 0)
    if nan_only.any():
        planes.append((_NO_DATA, nan_only | ((mask & _NO_DATA) != 0)))
    for bit, where in planes:
        conv.image_hat = fft.rfft2(where.astype(np.float32), conv.fshape)
        out[conv(abs_kernel) > fraction] |= bit
    return out
