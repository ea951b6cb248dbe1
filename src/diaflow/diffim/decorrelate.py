"""Noise decorrelation of an Alard–Lupton difference image (the "afterburner").

Convolving one image with the matching kernel ``K`` correlates the noise of the difference
``Z = Y - K * X``: with white noise of variance ``s_y`` and ``s_x`` in the two inputs, the noise
power spectrum of ``Z`` is ``s_y + s_x |K(f)|^2``. Filtering ``Z`` with

    phi(f) = sqrt((s_y + s_x kappa^2) / (s_y + s_x |K(f)|^2)),   kappa = K(0) (the kernel sum),

makes it white again with the variance ``s_y + s_x kappa^2`` that the difference of two
unconvolved images would have (Kaiser 2004; Reiss & Lupton 2016, as in the Rubin pipelines). The
filter is computed once, from the kernel at the detector centre and the images' median variances,
and applied as a compact real-space kernel, so the difference image's PSF (``phi * PSF``) and its
variance plane are computed with exactly the filter that was applied.

A resampled template is not white: interpolation (twice: onto the patch, then onto the science
grid) spreads each pixel's noise over its neighbours, so its power spectrum is ``s C(f)`` with
``C`` the Fourier transform of its pixel correlation ``rho`` (:func:`noise_correlation`, measured
on the template's blank sky). The filter then uses ``s_y C_y(f) + s_x |K(f)|^2 C_x(f)``, and the
variance of a filtered pixel is no longer ``sum(phi^2) s_y``: :func:`variance_factors` gives the
factors that the propagated variance planes are multiplied by.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.typing import NDArray
from scipy import ndimage, signal

__all__ = ["decorrelation_kernel", "noise_correlation", "source_mask", "variance_factors"]


def source_mask(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    *,
    sigma: float = 2.0,
    box_px: int = 5,
    grow_px: int = 4,
) -> NDArray[np.bool_]:
    """Pixels on or near sources: the image over its noise, averaged over ``box_px`` square,
    above ``sigma`` times that average's own scatter, grown by ``grow_px``."""
    z = np.asarray(image, dtype=np.float64) / np.sqrt(np.maximum(variance, 1e-30))
    z = np.where(np.isfinite(z), z, 0.0)
    z -= np.median(z[::4, ::4])
    smooth = ndimage.uniform_filter(z, box_px)
    level = 1.4826 * np.median(np.abs(smooth[::4, ::4]))
    return ndimage.binary_dilation(np.abs(smooth) > sigma * level, iterations=grow_px)


def noise_correlation(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    usable: NDArray[np.bool_],
    *,
    max_lag: int = 3,
    sources: NDArray[np.bool_] | None = None,
    source_sigma: float = 4.0,
    max_side: int = 1024,
) -> tuple[NDArray[np.float64], float]:
    """Correlation of an image's noise between pixels ``(dy, dx)`` apart, from its blank sky.

    Pixels are normalised by the variance plane; unusable pixels, ``sources`` and the image's
    own sources (where it exceeds ``source_sigma`` of its noise smoothed over 9 x 9 pixels,
    grown by a few pixels) are left out; the correlation is the masked autocorrelation (two
    FFTs), normalised to 1 at zero lag. At most a central ``max_side`` square is used: a million
    pixels pin every lag to better than 0.001.

    A mask drawn from the image's own noise biases the result (it cuts out the places where
    neighbouring pixels happen to agree), so faint sources are best given as ``sources`` from an
    independent image of the same sky, such as the science exposure; the image's own threshold
    is kept high and on a scale much larger than the lags.

    Returns
    -------
    rho
        ``(2 max_lag + 1)``-square array, ``rho[max_lag + dy, max_lag + dx]``, symmetric; the
        delta function (white noise) when too few blank pixels remain.
    variance_scale
        Blank-sky variance over what the variance plane says (robust: the squared normalised
        median absolute deviation); 1 when too few blank pixels remain. Resampling an already
        correlated image makes its plane too low, as the plane assumes independent pixels.
    """
    ny, nx = image.shape
    y0, x0 = max(0, (ny - max_side) // 2), max(0, (nx - max_side) // 2)
    sl = np.s_[y0 : y0 + max_side, x0 : x0 + max_side]
    img = np.asarray(image[sl], dtype=np.float64)
    var = np.asarray(variance[sl], dtype=np.float64)
    good = usable[sl] & np.isfinite(img) & (var > 0)
    white = np.zeros((2 * max_lag + 1, 2 * max_lag + 1))
    white[max_lag, max_lag] = 1.0
    if good.sum() < 10_000:
        return white, 1.0
    z = np.where(good, img / np.sqrt(np.where(good, var, 1.0)), 0.0)
    z[good] -= np.median(z[good])
    smooth = ndimage.uniform_filter(z, 9) / np.maximum(ndimage.uniform_filter(good * 1.0, 9), 0.02)
    level = 1.4826 * np.median(np.abs(smooth[good]))
    own = ndimage.binary_dilation(np.abs(smooth) > source_sigma * level, iterations=4)
    good &= ~own
    if sources is not None:
        good &= ~sources[sl]
    if good.sum() < 10_000:
        return white, 1.0
    blank = z[good]
    scale = float((1.4826 * np.median(np.abs(blank - np.median(blank)))) ** 2)
    z = np.where(good, z - blank.mean(), 0.0)
    shape = [scipy.fft.next_fast_len(n + max_lag, real=True) for n in z.shape]
    zf = scipy.fft.rfft2(z, s=shape)
    gf = scipy.fft.rfft2(good.astype(np.float64), s=shape)
    num = scipy.fft.irfft2(zf * np.conj(zf), s=shape)
    den = scipy.fft.irfft2(gf * np.conj(gf), s=shape)
    lags = np.arange(-max_lag, max_lag + 1)
    cov = num[np.ix_(lags % shape[0], lags % shape[1])]
    pairs = den[np.ix_(lags % shape[0], lags % shape[1])]
    cov = cov / np.maximum(pairs, 1.0)
    rho = cov / cov[max_lag, max_lag]
    return 0.5 * (rho + rho[::-1, ::-1]), scale


def _spectrum(stamp: NDArray[np.float64], grid: int) -> NDArray[np.complex128]:
    """rfft2 of an odd, centred stamp placed with its centre at the origin of a grid."""
    m = stamp.shape[0]
    padded = np.zeros((grid, grid))
    padded[:m, :m] = stamp
    padded = np.roll(padded, (-(m // 2), -(m // 2)), axis=(0, 1))
    return scipy.fft.rfft2(padded)


def decorrelation_kernel(
    kernel: NDArray[np.float64],
    *,
    var_target: float,
    var_convolved: float,
    half_width_px: int,
    corr_target: NDArray[np.float64] | None = None,
    corr_convolved: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """The decorrelation filter as a ``(2 half_width + 1)``-square real-space kernel.

    Parameters
    ----------
    kernel
        Matching kernel (odd square image, centred) at the place the filter is computed for.
    var_target
        Typical (sky) variance of the image that is not convolved, counts^2.
    var_convolved
        Typical variance of the image that the kernel convolves, in its own counts^2.
    half_width_px
        Half-width of the returned kernel; the filter is cropped there and renormalised.
    corr_target, corr_convolved
        Noise correlation of each image (:func:`noise_correlation`); ``None`` for white noise.

    Returns
    -------
    numpy.ndarray
        The filter, summing to 1 and symmetric about its central pixel.
    """
    if var_target <= 0 or var_convolved < 0:
        raise ValueError(
            f"variances must be positive, got target {var_target!r}, convolved {var_convolved!r}"
        )
    m = kernel.shape[0]
    grid = scipy.fft.next_fast_len(4 * max(m, 2 * half_width_px + 1), real=True)
    grid += grid % 2
    spectrum = np.abs(_spectrum(kernel, grid)) ** 2
    c_y, c_x = (
        1.0 if c is None else np.clip(_spectrum(c, grid).real, 1e-3, None)
        for c in (corr_target, corr_convolved)
    )
    kappa2 = float(kernel.sum()) ** 2
    phi_hat = np.sqrt(
        (var_target + var_convolved * kappa2) / (var_target * c_y + var_convolved * spectrum * c_x)
    )
    phi = np.fft.fftshift(scipy.fft.irfft2(phi_hat, s=(grid, grid)))
    c = grid // 2
    out = phi[c - half_width_px : c + half_width_px + 1, c - half_width_px : c + half_width_px + 1]
    return out / out.sum()


def _correlated_power(filt: NDArray[np.float64], corr: NDArray[np.float64] | None) -> float:
    """``sum_ab f_a f_b rho(a - b)`` relative to ``sum f^2``: the variance of noise with
    correlation ``rho`` after filtering with ``f``, over what independent pixels would give."""
    if corr is None:
        return 1.0
    spread = signal.fftconvolve(filt, corr, mode="same")
    return float((filt * spread).sum() / (filt**2).sum())


def variance_factors(
    phi: NDArray[np.float64] | None,
    kernel: NDArray[np.float64],
    *,
    corr_target: NDArray[np.float64] | None,
    corr_convolved: NDArray[np.float64] | None,
) -> tuple[float, float]:
    """Factors on the target's and the convolved image's propagated variance for correlated
    inputs: ``phi`` acts on the target, ``phi * K`` on the convolved image."""
    if phi is None:
        phi = np.ones((1, 1))
    return (
        _correlated_power(phi, corr_target),
        _correlated_power(signal.fftconvolve(phi, kernel), corr_convolved),
    )
