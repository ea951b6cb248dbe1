"""Cut-outs and PSF models placed at sub-pixel positions, the building blocks of every fit.

A :class:`FourierPsf` holds the Fourier transform of one PSF kernel on a grid a little larger
than the cut-out it models, so that a point source, its position derivatives, or a point source
smeared along a line segment (a trailed source) anywhere in the cut-out is one inverse FFT:
a shift is a phase ramp and a uniform segment of length L multiplies the transform by
``sinc(L k_parallel)``. Band-limited interpolation is exact for a well-sampled PSF (FWHM >= 2 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

__all__ = ["Cutout", "FourierPsf", "cutout", "psf_moments"]

_TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class Cutout:
    """A rectangle of an exposure's planes, padded with zero weight outside the image."""

    x0: int
    """Image column of the cut-out's first column."""
    y0: int
    """Image row of the cut-out's first row."""
    data: NDArray[np.float64]
    weight: NDArray[np.float64]
    """Inverse variance; zero on ignored, non-finite and off-image pixels."""
    mask: NDArray[np.int32]
    inside: NDArray[np.bool_]
    """True on pixels that lie on the image."""


def cutout(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    mask: NDArray[np.integer],
    x0: int,
    y0: int,
    ny: int,
    nx: int,
    ignore_bits: int,
) -> Cutout:
    """The (ny, nx) cut-out whose first pixel is image pixel (x0, y0), off-image pixels padded."""
    height, width = image.shape
    data = np.zeros((ny, nx))
    var = np.zeros((ny, nx))
    msk = np.zeros((ny, nx), dtype=np.int32)
    inside = np.zeros((ny, nx), dtype=bool)
    ya, yb = max(y0, 0), min(y0 + ny, height)
    xa, xb = max(x0, 0), min(x0 + nx, width)
    if ya < yb and xa < xb:
        sl = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        data[sl] = image[ya:yb, xa:xb]
        var[sl] = variance[ya:yb, xa:xb]
        msk[sl] = mask[ya:yb, xa:xb]
        inside[sl] = True
    good = inside & np.isfinite(data) & np.isfinite(var) & (var > 0) & ((msk & ignore_bits) == 0)
    weight = np.zeros((ny, nx))
    weight[good] = 1.0 / var[good]
    data[~good] = 0.0
    return Cutout(x0, y0, data, weight, msk, inside)


class FourierPsf:
    """One PSF kernel, ready to be drawn at any sub-pixel position of an (ny, nx) cut-out.

    Parameters
    ----------
    kernel
        Odd-sized PSF stamp centred on its central pixel, summing to 1.
    shape
        (ny, nx) of the cut-outs to draw; positions are in the cut-out's pixel frame.
    """

    def __init__(self, kernel: NDArray[np.float64], shape: tuple[int, int]) -> None:
        ky, kx = kernel.shape
        ny, nx = shape
        self.shape = (int(ny), int(nx))
        gy = sfft.next_fast_len(ny + ky, real=True)
        gx = sfft.next_fast_len(nx + kx, real=True)
        grid = np.zeros((gy, gx))
        grid[:ky, :kx] = kernel / kernel.sum()
        grid = np.roll(grid, (-(ky // 2), -(kx // 2)), axis=(0, 1))
        self.grid_shape = (gy, gx)
        self.khat = sfft.rfft2(grid, workers=1)
        self.u = sfft.rfftfreq(gx)[None, :]
        self.v = sfft.fftfreq(gy)[:, None]

    def _phase(self, x: float, y: float) -> NDArray[np.complex128]:
        return np.exp(-1j * _TWO_PI * self.v * y) * np.exp(-1j * _TWO_PI * self.u * x)

    def _back(self, spec: NDArray[np.complex128]) -> NDArray[np.float64]:
        ny, nx = self.shape
        return sfft.irfft2(spec, s=self.grid_shape, workers=1)[:ny, :nx]

    def point(self, x: float, y: float) -> NDArray[np.float64]:
        """Unit-flux point source at (x, y)."""
        return self._back(self.khat * self._phase(x, y))

    def point_with_gradient(
        self, x: float, y: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Unit-flux point source at (x, y) and its derivatives with respect to x and y."""
        spec = self.khat * self._phase(x, y)
        stack = np.stack([spec, -1j * _TWO_PI * self.u * spec, -1j * _TWO_PI * self.v * spec])
        ny, nx = self.shape
        out = sfft.irfft2(stack, s=self.grid_shape, axes=(1, 2), workers=1)[:, :ny, :nx]
        return out[0], out[1], out[2]

    def segment_with_gradient(
        self, x: float, y: float, length: float, theta: float
    ) -> NDArray[np.float64]:
        """Trailed source (see :meth:`segment`) and its derivatives with respect to x, y,
        length and theta, stacked (5, ny, nx)."""
        cos, sin = np.cos(theta), np.sin(theta)
        k_par = self.u * cos + self.v * sin
        z = length * k_par
        base = self.khat * self._phase(x, y)
        sinc = np.sinc(z)
        with np.errstate(divide="ignore", invalid="ignore"):
            dsinc = np.where(z == 0, 0.0, (np.cos(np.pi * z) - sinc) / z)
        spec = base * sinc
        stack = np.stack(
            [
                spec,
                -1j * _TWO_PI * self.u * spec,
                -1j * _TWO_PI * self.v * spec,
                base * dsinc * k_par,
                base * dsinc * length * (-self.u * sin + self.v * cos),
            ]
        )
        ny, nx = self.shape
        return sfft.irfft2(stack, s=self.grid_shape, axes=(1, 2), workers=1)[:, :ny, :nx]

    def segment(self, x: float, y: float, length: float, theta: float) -> NDArray[np.float64]:
        """Unit-flux point source trailed uniformly along a segment centred on (x, y).

        ``theta`` is the segment's angle from the +x axis towards +y, radians. This is the
        model of Veres et al. (2012) with the PSF in place of their Gaussian.
        """
        k_par = self.u * np.cos(theta) + self.v * np.sin(theta)
        return self._back(self.khat * self._phase(x, y) * np.sinc(length * k_par))


def psf_moments(kernel: NDArray[np.float64], *, max_iterations: int = 30) -> NDArray[np.float64]:
    """Adaptive second moments (ixx, iyy, ixy) of a PSF kernel, pixels squared."""
    from ._shape import adaptive_moments

    h = kernel.shape[0] // 2
    res = adaptive_moments(kernel, np.ones_like(kernel), h, h, max_iterations=max_iterations)
    return np.array(res[:3])
