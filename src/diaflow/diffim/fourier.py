"""Fast whole-image operations for subtraction: FFT sizes, kernel spectra, position maps.

Images are transformed with ``scipy.fft.rfft2`` at a 5-smooth size no smaller than the image (the
convolution is circular: the ``h`` pixels along each edge see the opposite edge and are masked by
the caller). A small kernel's spectrum on that large grid is not computed by padding it and
running a full FFT: the kernel is factored by its singular values, ``K = sum_r s_r u_r v_r^T``,
and its transform is the product of two thin matrices of 1-D Fourier factors, which is several
times cheaper than an FFT of the grid.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.typing import NDArray

__all__ = [
    "fft_shape",
    "inverse_rfft2",
    "kernel_spectra",
    "poly_map",
    "power_sum_map",
]


def fft_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The 5-smooth FFT size at least as large as ``shape`` on each axis."""
    return (
        int(scipy.fft.next_fast_len(shape[0], real=True)),
        int(scipy.fft.next_fast_len(shape[1], real=True)),
    )


def kernel_spectra(
    kernels: NDArray[np.float64],
    grid: tuple[int, int],
    rank_tolerance: float = 1e-7,
    dtype: type = np.complex64,
) -> NDArray[np.complexfloating]:
    """``rfft2`` spectra of centred odd-square kernels on a large grid.

    Parameters
    ----------
    kernels
        (n, m, m) kernels, each centred on its central pixel (offset 0 there).
    grid
        (N1, N2) FFT size of the images they will multiply.
    rank_tolerance
        Singular values below this fraction of a kernel's largest are dropped.
    dtype
        Complex dtype of the result.

    Returns
    -------
    numpy.ndarray
        (n, N1, N2 // 2 + 1) spectra, equal to ``rfft2`` of each kernel padded to ``grid`` with
        its centre rolled to pixel (0, 0).
    """
    n, m, _ = kernels.shape
    h = m // 2
    n1, n2 = grid
    offs = np.arange(-h, h + 1)
    e_y = np.exp(-2j * np.pi * np.outer(np.arange(n1), offs) / n1).astype(dtype)
    e_x = np.exp(-2j * np.pi * np.outer(np.arange(n2 // 2 + 1), offs) / n2).astype(dtype)
    out = np.empty((n, n1, n2 // 2 + 1), dtype=dtype)
    for k in range(n):
        u, s, vt = np.linalg.svd(kernels[k])
        rank = max(1, int(np.sum(s > rank_tolerance * max(s[0], 1e-300))))
        left = e_y @ (u[:, :rank] * s[:rank]).astype(dtype)  # (N1, r)
        right = vt[:rank].astype(dtype) @ e_x.T  # (r, N2h)
        np.matmul(left, right, out=out[k])
    return out


def poly_map(
    coeffs: NDArray[np.float64], order: int, shape: tuple[int, int], dtype: type = np.float32
) -> NDArray[np.floating]:
    """Evaluate ``sum_k coeffs[k] x^i_k y^j_k`` on every pixel, exactly and in one product.

    The terms are those of :func:`~diaflow.image.poly_terms` (``i + j <= order``) with positions
    scaled to [-1, 1]; the sum is the separable product ``V C U^T`` of the powers of ``y``, a
    small coefficient matrix and the powers of ``x``.
    """
    table = np.zeros((order + 1, order + 1))
    k = 0
    for i in range(order + 1):
        for j in range(order + 1 - i):
            table[j, i] = coeffs[k]
            k += 1
    return power_sum_map(table, shape, dtype)


def power_sum_map(
    table: NDArray[np.float64], shape: tuple[int, int], dtype: type = np.float32
) -> NDArray[np.floating]:
    """``sum_{j, i} table[j, i] y^j x^i`` on every pixel (positions scaled to [-1, 1])."""
    ny, nx = shape
    u = 2.0 * np.arange(nx) / max(nx - 1, 1) - 1.0
    v = 2.0 * np.arange(ny) / max(ny - 1, 1) - 1.0
    powers_u = u[:, None] ** np.arange(table.shape[1])
    powers_v = v[:, None] ** np.arange(table.shape[0])
    right = (table @ powers_u.T).astype(dtype)
    return powers_v.astype(dtype) @ right


def inverse_rfft2(
    spectrum: NDArray[np.complexfloating],
    grid: tuple[int, int],
    shape: tuple[int, int],
    workers: int,
) -> NDArray[np.floating]:
    """``irfft2`` of a half spectrum (overwritten), cropped to ``shape``.

    Done as a complex inverse FFT along the first axis followed by a real one along the last,
    which pocketfft runs about twice as fast as its two-dimensional ``irfft2``.
    """
    half = scipy.fft.ifft(spectrum, axis=0, workers=workers, overwrite_x=True)
    out = scipy.fft.irfft(half[: shape[0]], n=grid[1], axis=1, workers=workers, overwrite_x=True)
    return out[:, : shape[1]]
