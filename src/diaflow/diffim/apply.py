"""Applying a fitted kernel to whole images: the difference, its decorrelation and its variance.

With ``K(x, y) = sum_p P_p(x, y) K_p`` (monomials ``P_p`` of the position), the convolution of
the whole image is ``sum_p P_p (K_p * X)``: one inverse FFT per spatial term, whatever the number
of basis functions (the efficient form of Alard 2000). The decorrelation filter ``phi`` is folded
into every Fourier product: it is symmetric and a few pixels wide, so it commutes with the slowly
varying ``P_p`` far below the noise.

The variance follows exactly for independent input pixels: ``phi^2 * var_Y + (phi * K)^2 *
var_X``. The kernel's variation over the detector enters as the smooth factor
``sum (phi * K(x, y))^2 / sum (phi * K_centre)^2`` on ``var_X``, which is a polynomial in the
position and is evaluated exactly. When ``phi^2`` is all but a delta function (its central pixel
holding over 99 % of its weight, as for any template deeper than the science image), its
convolution with ``var_Y`` is replaced by the multiplication with its sum, saving two FFTs.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal
from numpy.typing import NDArray

from .fourier import fft_shape, inverse_rfft2, kernel_spectra, poly_map, power_sum_map
from .solution import KernelSolution, scaled_position

__all__ = ["apply_kernel"]

_IMAGE_RANK_TOLERANCE = 1e-6
"""Singular values of an image kernel below this fraction of its largest are dropped."""
_VARIANCE_RANK_TOLERANCE = 1e-5
"""The same for the kernels that propagate variance (which needs less precision)."""
_DELTA_WEIGHT = 0.99
"""``phi^2`` counts as a delta function when its central pixel holds this fraction of its sum."""


def apply_kernel(
    *,
    target: NDArray[np.float32],
    target_var: NDArray[np.float32],
    convolved: NDArray[np.float32],
    convolved_var: NDArray[np.float32],
    solution: KernelSolution,
    phi: NDArray[np.float64] | None,
    workers: int = 1,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``Z = phi * (Y - K(x, y) * X) - b(x, y)`` over the whole image, and its variance.

    Parameters
    ----------
    target, target_var
        ``Y`` and its variance (bad pixels already replaced).
    convolved, convolved_var
        ``X`` and its variance.
    solution
        The kernel ``K`` and background ``b``.
    phi
        Decorrelation filter (odd square, same size as the kernel), or ``None``.
    workers
        Threads for ``scipy.fft``.

    Returns
    -------
    image, variance
        float32 planes of the image's shape. The ``h`` pixels along each edge (kernel
        half-width, plus the filter's) are polluted by the circular convolution.
    """
    shape = (int(target.shape[0]), int(target.shape[1]))
    grid = fft_shape(shape)
    comps = solution.component_images()
    m = comps.shape[1]
    filtered = phi is not None
    if phi is None:
        phi = np.zeros((m, m))
        phi[m // 2, m // 2] = 1.0
    # spectra[off + p] is K_p's; with a filter, spectra[0] is the filter's.
    off = 1 if filtered else 0
    kernels = np.concatenate([phi[None], comps]) if filtered else comps
    spectra = kernel_spectra(kernels, grid, _IMAGE_RANK_TOLERANCE)
    x_hat = scipy.fft.rfft2(convolved, s=grid, workers=workers)
    y_hat = scipy.fft.rfft2(target, s=grid, workers=workers)
    if filtered:
        np.multiply(x_hat, spectra[0], out=x_hat)
        np.multiply(y_hat, spectra[0], out=y_hat)
        y_hat -= np.multiply(spectra[1], x_hat, out=spectra[0])
    else:
        y_hat -= spectra[0] * x_hat
    # Inverse FFTs: along y for every term; the monomial's y-power is applied there (rows),
    # terms sharing an x-power are summed, and each sum needs one inverse along x.
    ny, nx = shape
    u, v = scaled_position(np.arange(nx), np.arange(ny), shape)
    v_pow = v[:, None].astype(np.float32)
    exps = [
        (i, j)
        for i in range(solution.spatial_order + 1)
        for j in range(solution.spatial_order + 1 - i)
    ]
    sums: dict[int, NDArray[np.complexfloating]] = {}
    for p, (i, j) in enumerate(exps):
        if p == 0:
            spec = y_hat
        else:
            spec = spectra[off + p]
            np.multiply(spec, x_hat, out=spec)
        half = scipy.fft.ifft(spec, axis=0, workers=workers, overwrite_x=True)[:ny]
        if j:
            half *= v_pow**j
        if i not in sums:
            sums[i] = half if p == 0 else -half
        else:
            sums[i] -= half
    del x_hat, y_hat, spectra
    image = np.zeros(shape, dtype=np.float32)
    for i, total in sums.items():
        part = scipy.fft.irfft(total, n=grid[1], axis=1, workers=workers, overwrite_x=True)
        part = part[:, :nx]
        if i:
            part *= (u.astype(np.float32) ** i)[None, :]
        image += part
    del sums
    if solution.background_order >= 0:
        image -= poly_map(solution.background_coeffs, solution.background_order, shape)

    centre = solution.kernel((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    phi_k = scipy.signal.fftconvolve(phi, centre)
    factor = _kernel_power_factor(solution, phi, shape)
    factor *= convolved_var
    phi2 = phi**2
    c = m // 2
    if phi2[c, c] >= _DELTA_WEIGHT * phi2.sum():
        sq_hat = kernel_spectra((phi_k**2)[None], grid, _VARIANCE_RANK_TOLERANCE)[0]
        v_hat = scipy.fft.rfft2(factor, s=grid, workers=workers)
        np.multiply(v_hat, sq_hat, out=v_hat)
        variance = inverse_rfft2(v_hat, grid, shape, workers)
        variance += np.float32(phi2.sum()) * target_var
    else:
        pad = (phi_k.shape[0] - m) // 2
        squares = np.stack([np.pad(phi2, pad), phi_k**2])
        sq_hat = kernel_spectra(squares, grid, _VARIANCE_RANK_TOLERANCE)
        v_hat = scipy.fft.rfft2(factor, s=grid, workers=workers)
        np.multiply(v_hat, sq_hat[1], out=v_hat)
        y_part = scipy.fft.rfft2(target_var, s=grid, workers=workers)
        np.multiply(y_part, sq_hat[0], out=y_part)
        v_hat += y_part
        del y_part
        variance = inverse_rfft2(v_hat, grid, shape, workers)
    return image, variance


def _kernel_power_factor(
    solution: KernelSolution, phi: NDArray[np.float64], shape: tuple[int, int]
) -> NDArray[np.float32]:
    """Map of ``sum (phi * K(x, y))^2`` relative to its value at the detector centre.

    With ``K = sum_p P_p K_p`` this is the polynomial ``sum_pq P_p P_q G_pq`` of the Gram matrix
    ``G_pq = <phi * K_p, phi * K_q>``, evaluated exactly on every pixel.
    """
    order = solution.spatial_order
    if order == 0:
        return np.ones(shape, dtype=np.float32)
    filtered = np.array(
        [scipy.signal.fftconvolve(phi, c).ravel() for c in solution.component_images()]
    )
    gram = filtered @ filtered.T
    exps = [(i, j) for i in range(order + 1) for j in range(order + 1 - i)]
    table = np.zeros((2 * order + 1, 2 * order + 1))
    for p, (ip, jp) in enumerate(exps):
        for q, (iq, jq) in enumerate(exps):
            table[jp + jq, ip + iq] += gram[p, q]
    u, v = scaled_position((shape[1] - 1) / 2, (shape[0] - 1) / 2, shape)
    powers = (v ** np.arange(table.shape[0]))[:, None] * (u ** np.arange(table.shape[1]))[None]
    return power_sum_map(table / float(np.sum(table * powers)), shape)
