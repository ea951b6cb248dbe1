"""PSF models: what calibration measures and subtraction, detection and photometry use.

Every model answers two questions at a detector position: the PSF as a normalised, odd-sized
pixel stamp centred on a pixel (:meth:`PsfModel.kernel`) or on any sub-pixel position
(:meth:`PsfModel.image`), and its FWHM. :class:`PixelPsf` is the workhorse: pixel stamps whose
values are polynomials in the detector position (the PSFEx idea, Bertin 2011), fitted by
calibration or sampled from any function (e.g. a simulation's true PSF) with
:meth:`PixelPsf.from_function`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["GaussianPsf", "PixelPsf", "PsfModel", "poly_terms"]


@runtime_checkable
class PsfModel(Protocol):
    """A spatially varying PSF on one detector (0-based pixel coordinates)."""

    def kernel(self, x: float, y: float) -> NDArray[np.float64]:
        """PSF stamp at (x, y), odd size, centred on the central pixel, summing to 1."""
        ...

    def fwhm_px(self, x: float, y: float) -> float:
        """Full width at half maximum at (x, y), pixels."""
        ...


def poly_terms(x: NDArray[np.float64], y: NDArray[np.float64], order: int) -> NDArray[np.float64]:
    """Monomials x^i y^j with i + j <= order, shape (n_terms, *x.shape), x and y in [-1, 1]."""
    return np.array([x**i * y**j for i in range(order + 1) for j in range(order + 1 - i)])


def _fwhm_of_stamp(stamp: NDArray[np.float64]) -> float:
    """FWHM from the area above half maximum (exact for a circular profile)."""
    # Upsample so that the area count is not limited by whole pixels.
    fine = ndimage.zoom(stamp, 4, order=3)
    area = (fine >= fine.max() / 2).sum() / 16.0
    return float(2 * np.sqrt(area / np.pi))


def _shift(stamp: NDArray[np.float64], dx: float, dy: float) -> NDArray[np.float64]:
    if abs(dx) < 1e-6 and abs(dy) < 1e-6:
        return stamp
    out = ndimage.shift(stamp, (dy, dx), order=3, mode="constant")
    return out / out.sum()


@dataclass(frozen=True)
class PixelPsf:
    """Pixel-sampled PSF whose stamp values are polynomials of the detector position.

    ``coeffs[k]`` multiplies the k-th monomial of :func:`poly_terms` in the position scaled to
    [-1, 1] over the detector ``shape``.
    """

    coeffs: NDArray[np.float64]
    """(n_terms, size, size) stamp coefficients."""
    order: int
    shape: tuple[int, int]
    """(ny, nx) of the detector the positions are scaled over."""

    def __post_init__(self) -> None:
        n_terms = (self.order + 1) * (self.order + 2) // 2
        if self.coeffs.ndim != 3 or self.coeffs.shape[0] != n_terms:
            raise ValueError(f"coeffs must be ({n_terms}, size, size), got {self.coeffs.shape}")
        if self.coeffs.shape[1] % 2 == 0 or self.coeffs.shape[1] != self.coeffs.shape[2]:
            raise ValueError(f"PSF stamps must be square and odd, got {self.coeffs.shape[1:]}")

    @property
    def size(self) -> int:
        """Side of the stamps, pixels."""
        return int(self.coeffs.shape[1])

    def _scaled(self, x: float, y: float) -> tuple[float, float]:
        ny, nx = self.shape
        return 2 * x / max(nx - 1, 1) - 1, 2 * y / max(ny - 1, 1) - 1

    def kernel(self, x: float, y: float) -> NDArray[np.float64]:
        """Stamp at (x, y), centred on its central pixel, normalised to sum 1."""
        u, v = self._scaled(x, y)
        terms = poly_terms(np.array(u), np.array(v), self.order)
        stamp = np.tensordot(terms, self.coeffs, axes=1)
        return stamp / stamp.sum()

    def image(self, x: float, y: float) -> NDArray[np.float64]:
        """Stamp of a point source at sub-pixel (x, y), on the pixel grid about ``round(x, y)``."""
        k = self.kernel(x, y)
        return _shift(k, x - round(x), y - round(y))

    def fwhm_px(self, x: float, y: float) -> float:
        """FWHM at (x, y), pixels."""
        return _fwhm_of_stamp(self.kernel(x, y))

    @classmethod
    def from_function(
        cls,
        func: Callable[[float, float], NDArray[np.float64]],
        shape: tuple[int, int],
        *,
        order: int = 2,
        grid: int = 5,
    ) -> PixelPsf:
        """Fit polynomial stamps to ``func(x, y)`` (a stamp) sampled on a ``grid`` x ``grid``."""
        ny, nx = shape
        xs, ys = np.meshgrid(np.linspace(0, nx - 1, grid), np.linspace(0, ny - 1, grid))
        stamps = np.array(
            [func(float(x), float(y)) for x, y in zip(xs.ravel(), ys.ravel(), strict=True)]
        )
        stamps /= stamps.sum(axis=(1, 2), keepdims=True)
        u, v = 2 * xs.ravel() / max(nx - 1, 1) - 1, 2 * ys.ravel() / max(ny - 1, 1) - 1
        design = poly_terms(u, v, order).T  # (n_samples, n_terms)
        flat = stamps.reshape(len(stamps), -1)
        coeffs, *_ = np.linalg.lstsq(design, flat, rcond=None)
        size = stamps.shape[1]
        return cls(coeffs.reshape(-1, size, size), order, shape)


@dataclass(frozen=True)
class GaussianPsf:
    """A circular Gaussian PSF, the same everywhere (for tests and quick estimates)."""

    sigma_px: float
    size: int = 25

    def kernel(self, x: float, y: float) -> NDArray[np.float64]:
        """Stamp centred on the central pixel, summing to 1."""
        return self.image(float(round(x)), float(round(y)))

    def image(self, x: float, y: float) -> NDArray[np.float64]:
        """Stamp of a point source at sub-pixel (x, y), on the grid about ``round(x, y)``."""
        h = self.size // 2
        yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
        dx, dy = x - round(x), y - round(y)
        g = np.exp(-0.5 * ((xx - dx) ** 2 + (yy - dy) ** 2) / self.sigma_px**2)
        return g / g.sum()

    def fwhm_px(self, x: float, y: float) -> float:
        """FWHM, pixels."""
        return float(2.3548200450309493 * self.sigma_px)
