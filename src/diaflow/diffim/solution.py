"""A fitted Alard–Lupton kernel: basis coefficients that vary polynomially over the detector.

Positions enter every polynomial scaled to [-1, 1] over the detector (:func:`scaled_position`),
with the monomials of :func:`~diaflow.image.poly_terms`, the convention of the PSF models.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from ..image.psf import poly_terms
from .basis import KernelBasis

__all__ = ["KernelSolution", "n_poly_terms", "scaled_position"]


def n_poly_terms(order: int) -> int:
    """Number of monomials ``x^i y^j`` with ``i + j <= order`` (0 for a negative order)."""
    return (order + 1) * (order + 2) // 2 if order >= 0 else 0


def scaled_position(
    x: NDArray[np.float64] | float, y: NDArray[np.float64] | float, shape: tuple[int, int]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Detector position mapped to [-1, 1] on each axis (the polynomials' variable)."""
    ny, nx = shape
    return (
        2.0 * np.asarray(x, dtype=np.float64) / max(nx - 1, 1) - 1.0,
        2.0 * np.asarray(y, dtype=np.float64) / max(ny - 1, 1) - 1.0,
    )


@dataclass(frozen=True)
class KernelSolution:
    """A fitted matching kernel and differential background, evaluable anywhere on the detector.

    The kernel at (x, y) is ``sum_p P_p(x, y) component_images()[p]``, with ``P_p`` the
    monomials of :func:`~diaflow.image.poly_terms` in the position scaled to [-1, 1] over
    ``shape``. It maps the convolved image onto the other one: ``target ~ K * convolved + b``.
    """

    basis: KernelBasis
    coeffs: NDArray[np.float64]
    """(n_basis, n_spatial) coefficient of each basis function and monomial."""
    background_coeffs: NDArray[np.float64]
    """(n_background,) coefficients of the background monomials (empty: no background)."""
    spatial_order: int
    background_order: int
    shape: tuple[int, int]
    """(ny, nx) of the detector the positions are scaled over."""

    @cached_property
    def _components(self) -> NDArray[np.float64]:
        return np.tensordot(self.coeffs.T, self.basis.images(), axes=1)

    def component_images(self) -> NDArray[np.float64]:
        """(n_spatial, size, size): the kernel's coefficient image of each monomial."""
        return self._components.copy()

    def kernel(self, x: float, y: float) -> NDArray[np.float64]:
        """The kernel image at (x, y), ``(2h + 1)`` square, centred; it sums to ``kernel_sum``."""
        u, v = scaled_position(x, y, self.shape)
        terms = poly_terms(u, v, self.spatial_order)
        return np.tensordot(terms, self._components, axes=1)

    def kernel_sum(
        self, x: NDArray[np.float64] | float, y: NDArray[np.float64] | float
    ) -> NDArray[np.float64]:
        """Photometric scale (flux in target / flux in convolved image) at (x, y)."""
        u, v = scaled_position(x, y, self.shape)
        return np.tensordot(self.coeffs[0], poly_terms(u, v, self.spatial_order), axes=1)

    def background(
        self, x: NDArray[np.float64] | float, y: NDArray[np.float64] | float
    ) -> NDArray[np.float64]:
        """Differential background at (x, y), target image units."""
        u, v = scaled_position(x, y, self.shape)
        if self.background_order < 0:
            return np.zeros_like(u)
        return np.tensordot(self.background_coeffs, poly_terms(u, v, self.background_order), axes=1)
