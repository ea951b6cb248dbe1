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
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.typing import NDArray

__all__ = ["decorrelation_kernel"]


def decorrelation_kernel(
    kernel: NDArray[np.float64],
    *,
    var_target: float,
    var_convolved: float,
    half_width_px: int,
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
    h = m // 2
    grid = scipy.fft.next_fast_len(4 * max(m, 2 * half_width_px + 1), real=True)
    grid += grid % 2
    padded = np.zeros((grid, grid))
    padded[:m, :m] = kernel
    padded = np.roll(padded, (-h, -h), axis=(0, 1))
    spectrum = np.abs(scipy.fft.rfft2(padded)) ** 2
    kappa2 = float(kernel.sum()) ** 2
    phi_hat = np.sqrt(
        (var_target + var_convolved * kappa2) / (var_target + var_convolved * spectrum)
    )
    phi = np.fft.fftshift(scipy.fft.irfft2(phi_hat, s=(grid, grid)))
    c = grid // 2
    out = phi[c - half_width_px : c + half_width_px + 1, c - half_width_px : c + half_width_px + 1]
    return out / out.sum()
