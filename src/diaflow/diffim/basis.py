"""The Alard–Lupton kernel basis: Gaussians of a few widths times polynomials of the offset.

Alard & Lupton (1998) write the matching kernel as a linear combination of functions
``exp(-(u^2 + v^2) / (2 sigma_n^2)) u^i v^j`` with ``i + j <= d_n``. Every raw function is a
product of a function of ``u`` and a function of ``v``, so convolving an image cut-out with the
whole basis costs one set of 1-D convolutions per axis; the final basis is a fixed linear
transform of the raw one:

* the first function (narrowest Gaussian, ``i = j = 0``) is scaled to sum 1 and carries the
  photometric scale (the kernel sum);
* every other function has that one's multiple removed so that it sums to 0, and the zero-sum
  functions are orthonormalised (pivoted QR, dropping numerically dependent ones), which keeps the
  least-squares problem well conditioned (as Alard 2000 and the Rubin pipelines do).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

__all__ = ["KernelBasis", "alard_lupton_basis", "basis_sigmas_px"]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

_RANK_TOLERANCE = 1e-7


@dataclass(frozen=True)
class KernelBasis:
    """An Alard–Lupton kernel basis on a ``(2 h + 1)``-pixel square grid."""

    half_width_px: int
    """``h``: the kernel spans offsets ``-h .. h`` on each axis."""
    sigmas_px: tuple[float, ...]
    """Gaussian widths, narrowest first."""
    degrees: tuple[int, ...]
    """Polynomial degree of each Gaussian."""
    factors: NDArray[np.float64]
    """(n_factors, 2h + 1) 1-D factors ``g_n(u) (u / sigma_n)^i``."""
    terms: NDArray[np.intp]
    """(n_raw, 2) indices into ``factors`` of the raw functions' (x, y) factors."""
    transform: NDArray[np.float64]
    """(n_basis, n_raw) matrix from raw functions to the final basis."""

    @property
    def size(self) -> int:
        """Kernel side, pixels."""
        return 2 * self.half_width_px + 1

    @property
    def n_basis(self) -> int:
        """Number of basis functions (after dropping dependent ones)."""
        return int(self.transform.shape[0])

    def raw_images(self) -> NDArray[np.float64]:
        """(n_raw, size, size) raw functions, indexed ``[k, v + h, u + h]``."""
        fx = self.factors[self.terms[:, 0]]
        fy = self.factors[self.terms[:, 1]]
        return fy[:, :, None] * fx[:, None, :]

    @cached_property
    def _images(self) -> NDArray[np.float64]:
        return np.tensordot(self.transform, self.raw_images(), axes=1)

    def images(self) -> NDArray[np.float64]:
        """(n_basis, size, size) final basis functions; the first sums to 1, the others to 0."""
        return self._images.copy()

    def convolve_cutouts(
        self, cutouts: NDArray[np.floating], *, raw: bool = False
    ) -> NDArray[np.floating]:
        """Convolve square cut-outs with every basis function, keeping the fully covered part.

        Parameters
        ----------
        cutouts
            (n, L, L) image cut-outs (float32 or float64; the result has the same dtype).
        raw
            Return the convolutions with the raw separable functions instead of the final basis
            (apply ``transform`` later, e.g. to normal equations, to save time).

        Returns
        -------
        numpy.ndarray
            (n, n_basis or n_raw, L - 2h, L - 2h): ``(B_k * cutout)`` where the kernel lies
            wholly inside the cut-out.
        """
        n, side, _ = cutouts.shape
        h = self.half_width_px
        out = side - 2 * h
        if out < 1:
            raise ValueError(f"cut-outs of side {side} are too small for kernel half-width {h}")
        dtype = cutouts.dtype
        # Toeplitz matrices of the 1-D factors: T[f, i, j] = factor_f(i + h - j).
        offs = np.arange(out)[:, None] + h - np.arange(side)[None, :]
        inside = np.abs(offs) <= h
        toeplitz = np.where(inside[None], self.factors[:, np.clip(offs + h, 0, 2 * h)], 0.0)
        toeplitz = toeplitz.astype(dtype)
        n_f = len(self.factors)
        # Along x for every factor, one matrix product: (n * L, L) @ (L, F * out).
        along_x = cutouts.reshape(n * side, side) @ toeplitz.transpose(2, 0, 1).reshape(side, -1)
        # -> (L, n, F, out) so that each y-factor is one matrix product over the rest.
        along_x = along_x.reshape(n, side, n_f, out).transpose(1, 0, 2, 3)
        result = np.empty((n, len(self.terms), out, out), dtype=dtype)
        fx, fy = self.terms[:, 0], self.terms[:, 1]
        for f in np.unique(fy):
            ks = np.flatnonzero(fy == f)
            block = np.ascontiguousarray(along_x[:, :, fx[ks], :]).reshape(side, -1)
            prod = (toeplitz[f] @ block).reshape(out, n, len(ks), out)
            result[:, ks] = prod.transpose(1, 2, 0, 3)
        if raw:
            return result
        return np.einsum("bk,nkij->nbij", self.transform.astype(dtype), result, optimize=True)


def basis_sigmas_px(
    fwhm_narrow_px: float, fwhm_broad_px: float, n_gauss: int, ratio: float, min_sigma_px: float
) -> tuple[float, ...]:
    """Gaussian widths scaled to the matching kernel's expected width.

    A Gaussian PSF of sigma ``s1`` is matched to one of ``s2`` by a Gaussian of
    ``sqrt(s2^2 - s1^2)``; the basis spans that width geometrically, by ``ratio`` per step,
    with the middle Gaussian at the expected width and none narrower than ``min_sigma_px``.
    """
    s1, s2 = fwhm_narrow_px / FWHM_PER_SIGMA, fwhm_broad_px / FWHM_PER_SIGMA
    s_match = float(np.sqrt(max(s2**2 - s1**2, 0.0)))
    first = max(min_sigma_px, s_match / ratio ** ((n_gauss - 1) / 2))
    return tuple(float(first * ratio**i) for i in range(n_gauss))


def alard_lupton_basis(
    sigmas_px: tuple[float, ...], degrees: tuple[int, ...], half_width_px: int
) -> KernelBasis:
    """Build the basis: Gaussians ``sigmas_px`` times polynomials of degree ``degrees``.

    Parameters
    ----------
    sigmas_px
        Gaussian widths in pixels, narrowest first.
    degrees
        Polynomial degree for each Gaussian (e.g. ``(6, 4, 2)``).
    half_width_px
        Kernel half-width ``h``; the kernel is ``2 h + 1`` pixels square.

    Returns
    -------
    KernelBasis
        The basis; ``images()[0]`` sums to 1, the others to 0 and are orthonormal.
    """
    if len(sigmas_px) != len(degrees):
        raise ValueError(f"{len(sigmas_px)} sigmas for {len(degrees)} degrees")
    h = int(half_width_px)
    u = np.arange(-h, h + 1, dtype=np.float64)
    factors: list[NDArray[np.float64]] = []
    terms: list[tuple[int, int]] = []
    for sigma, degree in zip(sigmas_px, degrees, strict=True):
        base = len(factors)
        g = np.exp(-0.5 * (u / sigma) ** 2)
        factors.extend(g * (u / sigma) ** i for i in range(degree + 1))
        terms.extend((base + i, base + j) for i in range(degree + 1) for j in range(degree + 1 - i))
    basis = KernelBasis(
        half_width_px=h,
        sigmas_px=tuple(float(s) for s in sigmas_px),
        degrees=tuple(int(d) for d in degrees),
        factors=np.array(factors),
        terms=np.array(terms, dtype=np.intp),
        transform=np.eye(len(terms)),
    )
    raw = basis.raw_images().reshape(len(terms), -1)
    sums = raw.sum(axis=1)
    n_raw = len(terms)
    # First function: unit sum. Others: remove their sum with the first, then orthonormalise.
    step = np.eye(n_raw)
    step[0] /= sums[0]
    step[1:] -= np.outer(sums[1:] / sums[0], np.eye(n_raw)[0])
    zero_sum = step[1:] @ raw  # (n_raw - 1, npix)
    if len(zero_sum):
        r, piv = scipy.linalg.qr(zero_sum.T, mode="r", pivoting=True)
        diag = np.abs(np.diag(r))
        keep = int(np.sum(diag > _RANK_TOLERANCE * diag[0]))
        # q[:, :keep] = zero_sum.T[:, piv] @ inv(r[:keep, :keep]) restricted to the kept columns.
        r_inv = scipy.linalg.solve_triangular(r[:keep, :keep], np.eye(keep))
        rest = r_inv.T @ step[1:][piv[:keep]]
        transform = np.vstack([step[:1], rest])
    else:
        transform = step
    return KernelBasis(
        half_width_px=h,
        sigmas_px=basis.sigmas_px,
        degrees=basis.degrees,
        factors=basis.factors,
        terms=basis.terms,
        transform=transform,
    )
