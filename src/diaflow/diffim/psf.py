"""The PSF of a difference image, a :class:`~diaflow.image.PsfModel` for detection and photometry.

A point source that exists only in the science image appears in the difference with the science
PSF when the template was convolved, or with ``K * PSF_science / kappa`` when the science image
was (``kappa`` the kernel sum, so the flux stays in science units); decorrelation then convolves
either with its filter ``phi``. :class:`DifferencePsf` composes these on demand at any position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal
from numpy.typing import NDArray
from scipy import ndimage

from ..image.psf import PsfModel
from .solution import KernelSolution

__all__ = ["DifferencePsf", "stamp_fwhm_px"]


def stamp_fwhm_px(stamp: NDArray[np.float64]) -> float:
    """FWHM of a centred PSF stamp from the area above half its peak (exact for round PSFs)."""
    fine = ndimage.zoom(stamp, 4, order=3)
    area = float((fine >= fine.max() / 2).sum()) / 16.0
    return float(2.0 * np.sqrt(area / np.pi))


def _crop(stamp: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    c, h = stamp.shape[0] // 2, size // 2
    if stamp.shape[0] <= size:
        pad = (size - stamp.shape[0]) // 2
        return np.pad(stamp, pad)
    return stamp[c - h : c + h + 1, c - h : c + h + 1]


@dataclass(frozen=True)
class DifferencePsf:
    """PSF of a difference image: a base PSF convolved with the matching kernel and/or a filter.

    Stamps are odd-sized (``size``), centred and normalised to sum 1.
    """

    base: PsfModel
    """PSF of the science image."""
    size: int
    """Side of the stamps returned, pixels (odd)."""
    solution: KernelSolution | None = None
    """Matching kernel that convolved the science image (``None`` if the template was)."""
    decorrelation: NDArray[np.float64] | None = None
    """Decorrelation filter applied to the difference (``None`` if not decorrelated)."""

    def __post_init__(self) -> None:
        if self.size % 2 == 0 or self.size < 3:
            raise ValueError(f"size must be odd and >= 3, got {self.size!r}")

    def _compose(self, stamp: NDArray[np.float64], x: float, y: float) -> NDArray[np.float64]:
        out = np.asarray(stamp, dtype=np.float64)
        if self.solution is not None:
            out = scipy.signal.fftconvolve(out, self.solution.kernel(x, y), mode="full")
        if self.decorrelation is not None:
            out = scipy.signal.fftconvolve(out, self.decorrelation, mode="full")
        out = _crop(out, self.size)
        return out / out.sum()

    def kernel(self, x: float, y: float) -> NDArray[np.float64]:
        """PSF stamp at (x, y), centred on the central pixel, summing to 1."""
        return self._compose(self.base.kernel(x, y), x, y)

    def image(self, x: float, y: float) -> NDArray[np.float64]:
        """Stamp of a point source at sub-pixel (x, y), on the pixel grid about ``round(x, y)``."""
        base_image = getattr(self.base, "image", None)
        if base_image is not None:
            stamp = base_image(x, y)
        else:
            stamp = ndimage.shift(
                self.base.kernel(x, y), (y - round(y), x - round(x)), order=3, mode="constant"
            )
        return self._compose(stamp, x, y)

    def fwhm_px(self, x: float, y: float) -> float:
        """FWHM at (x, y), pixels."""
        return stamp_fwhm_px(self.kernel(x, y))
