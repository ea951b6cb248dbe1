"""Where each target pixel falls on a source exposure, from two WCSs, fast.

``astropy``'s ``all_world2pix`` iterates the SIP inverse pixel by pixel and takes seconds on a
2048^2 grid. The mapping between two detector-sized WCSs is smooth, so it is evaluated exactly on
a coarse grid of target pixels and interpolated with cubic splines (not-a-knot, exact for cubic
polynomials). Interpolating along y and then x is a product of small matrices, ``A_y C A_x^T``,
so any block of target pixels costs two matrix products; the spline's derivatives give the
Jacobian ``d(x_src, y_src) / d(x_tgt, y_tgt)`` in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from numpy.typing import NDArray
from scipy.interpolate import CubicSpline

__all__ = ["PixelMap", "pixel_map"]


def _spline_matrices(
    nodes: NDArray[np.float64], at: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Matrices (len(at), len(nodes)) giving spline values and first derivatives at ``at``."""
    spline = CubicSpline(nodes, np.eye(len(nodes)), axis=0, bc_type="not-a-knot")
    return spline(at), spline(at, 1)


def _nodes(n: int, step: int) -> NDArray[np.float64]:
    k = max(4, int(np.ceil((n - 1) / step)) + 1)
    return np.linspace(0.0, n - 1.0, k) if n > 1 else np.linspace(-1.5, 1.5, 4)


@dataclass(frozen=True)
class PixelMap:
    """Source pixel coordinates (0-based) of the pixels of a target grid."""

    shape: tuple[int, int]
    """(ny, nx) of the target grid."""
    node_x: NDArray[np.float64]
    node_y: NDArray[np.float64]
    src_x: NDArray[np.float64]
    """(len(node_y), len(node_x)) source x at the nodes."""
    src_y: NDArray[np.float64]
    node_det: NDArray[np.float64]
    """|det J| at the nodes."""
    ax_t: NDArray[np.float64]
    """(len(node_x), nx) spline weights along x for every target column (C-contiguous)."""
    ay: NDArray[np.float64]
    """(ny, len(node_y)) spline weights along y for every target row."""

    def band(
        self, rows: slice
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Source x, y and |det J| of a band of target rows (all columns).

        Three large matrix products per band (many small ones are slow where BLAS threads
        compete for cores). ``det J`` varies slowly, so it is computed at the nodes and
        spline-interpolated like the coordinates.
        """
        ay, ax_t = self.ay[rows], self.ax_t
        return ay @ self.src_x @ ax_t, ay @ self.src_y @ ax_t, ay @ self.node_det @ ax_t

    def at(
        self, x: NDArray[np.float64], y: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Source (x, y) and the Jacobian (n, 2, 2) ``[[dxs/dx, dxs/dy], [dys/dx, dys/dy]]``."""
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        ax, dax = _spline_matrices(self.node_x, x)
        ay, day = _spline_matrices(self.node_y, y)
        out = []
        for c in (self.src_x, self.src_y):
            out.append(
                (
                    np.einsum("ni,ij,nj->n", ay, c, ax),
                    np.einsum("ni,ij,nj->n", ay, c, dax),
                    np.einsum("ni,ij,nj->n", day, c, ax),
                )
            )
        (xs, xs_x, xs_y), (ys, ys_x, ys_y) = out
        jac = np.stack([np.stack([xs_x, xs_y], -1), np.stack([ys_x, ys_y], -1)], -2)
        return xs, ys, jac


def _fill_affine(
    gx: NDArray[np.float64],
    gy: NDArray[np.float64],
    src_x: NDArray[np.float64],
    src_y: NDArray[np.float64],
    bad: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Replace the ``bad`` nodes by an affine fit to the good ones (far off the source if none)."""
    good = ~bad
    if good.sum() < 3:
        return np.full_like(src_x, -1.0e6), np.full_like(src_y, -1.0e6)
    design = np.column_stack([np.ones(good.sum()), gx[good], gy[good]])
    cx, *_ = np.linalg.lstsq(design, src_x[good], rcond=None)
    cy, *_ = np.linalg.lstsq(design, src_y[good], rcond=None)
    fill = np.column_stack([np.ones(bad.sum()), gx[bad], gy[bad]])
    src_x, src_y = src_x.copy(), src_y.copy()
    src_x[bad], src_y[bad] = fill @ cx, fill @ cy
    return src_x, src_y


def pixel_map(
    src_wcs: WCS, target_wcs: WCS, target_shape: tuple[int, int], *, step_px: int = 64
) -> PixelMap:
    """Map the pixels of a ``target_shape`` grid on ``target_wcs`` to ``src_wcs`` pixels.

    The WCSs are evaluated exactly every ``step_px`` target pixels (at least four nodes per axis);
    everything between is cubic-spline interpolation.
    """
    ny, nx = target_shape
    node_x, node_y = _nodes(nx, step_px), _nodes(ny, step_px)
    gx, gy = np.meshgrid(node_x, node_y)
    ra, dec = target_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    sx, sy = src_wcs.all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=50, quiet=True)
    src_x = np.asarray(sx, dtype=np.float64).reshape(gx.shape)
    src_y = np.asarray(sy, dtype=np.float64).reshape(gx.shape)
    bad = ~(np.isfinite(src_x) & np.isfinite(src_y))
    if bad.any():
        # Far from the source the WCS may not invert; an affine fit to the other nodes keeps the
        # spline (global: one NaN node would spoil every pixel) well defined there.
        src_x, src_y = _fill_affine(gx, gy, src_x, src_y, bad)
    _, dax_n = _spline_matrices(node_x, node_x)
    _, day_n = _spline_matrices(node_y, node_y)
    det = (src_x @ dax_n.T) * (day_n @ src_y) - (day_n @ src_x) * (src_y @ dax_n.T)
    ax, _ = _spline_matrices(node_x, np.arange(nx, dtype=np.float64))
    ay, _ = _spline_matrices(node_y, np.arange(ny, dtype=np.float64))
    return PixelMap(
        (int(ny), int(nx)),
        node_x,
        node_y,
        src_x,
        src_y,
        np.abs(det),
        np.ascontiguousarray(ax.T),
        ay,
    )
