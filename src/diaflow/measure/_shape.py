"""Adaptive second moments and circular-aperture photometry on cut-outs."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ._stamps import Cutout

__all__ = ["adaptive_moments", "aperture_flux"]


def adaptive_moments(
    data: NDArray[np.float64],
    valid: NDArray[np.float64],
    x: float,
    y: float,
    *,
    start: float = 4.0,
    max_iterations: int = 30,
    tolerance: float = 1e-3,
) -> tuple[float, float, float, float, float, bool]:
    """Second moments with an elliptical Gaussian weight matched to the source (Bernstein &
    Jarvis 2002).

    The weight's covariance is iterated to twice the weighted covariance, which is the fixed
    point where both equal the covariance of a Gaussian source. The centre moves to the
    weighted centroid at each step.

    Parameters
    ----------
    data
        Cut-out, positive source (flip the sign of a negative one first).
    valid
        Nonzero on pixels that may be used.
    x, y
        Starting centre in the cut-out frame, pixels.
    start
        Starting weight variance, pixels squared.

    Returns
    -------
    ixx, iyy, ixy, x, y, ok
        Moments (pixels squared), the weighted centre, and whether the iteration converged to
        a positive-definite result.
    """
    ny, nx = data.shape
    use = np.where(valid != 0, data, 0.0)
    mxx, myy, mxy = start, start, 0.0
    for _ in range(max_iterations):
        det = mxx * myy - mxy**2
        if not det > 0 or not np.isfinite(det):
            return np.nan, np.nan, np.nan, x, y, False
        # Only pixels within 5 sigma of the weight matter (exp(-12.5) ~ 4e-6).
        h = 5.0 * math.sqrt(max(mxx, myy)) + 1.0
        ya, yb = max(int(y - h), 0), min(int(y + h) + 2, ny)
        xa, xb = max(int(x - h), 0), min(int(x + h) + 2, nx)
        sub = use[ya:yb, xa:xb]
        dx = np.arange(xa, xb, dtype=np.float64)[None, :] - x
        dy = np.arange(ya, yb, dtype=np.float64)[:, None] - y
        q = (myy * dx * dx - 2 * mxy * dx * dy + mxx * dy * dy) / det
        w = np.exp(-0.5 * np.minimum(q, 50.0)) * sub
        s = float(w.sum())
        if not s > 0:
            return np.nan, np.nan, np.nan, x, y, False
        sx, sy = float((w * dx).sum()) / s, float((w * dy).sum()) / s
        if abs(sx) > 1.0 or abs(sy) > 1.0:
            sx = sy = 0.0  # keep the centre; a noisy step this large is not trusted
        dx, dy = dx - sx, dy - sy
        qxx = 2 * float((w * dx * dx).sum()) / s
        qyy = 2 * float((w * dy * dy).sum()) / s
        qxy = 2 * float((w * dx * dy).sum()) / s
        change = abs(qxx - mxx) + abs(qyy - myy) + abs(qxy - mxy)
        # Both updates contract by about 1/2 per step near the solution (exactly for a
        # Gaussian source); doubling each step (Aitken extrapolation) converges in a few.
        exx, eyy, exy = 2 * qxx - mxx, 2 * qyy - myy, 2 * qxy - mxy
        if exx > 0 and eyy > 0 and exx * eyy - exy**2 > 0.25 * (qxx * qyy - qxy**2):
            qxx, qyy, qxy, sx, sy = exx, eyy, exy, 2 * sx, 2 * sy
        mxx, myy, mxy, x, y = qxx, qyy, qxy, x + sx, y + sy
        if not (mxx > 0 and myy > 0) or mxx > (ny * nx):
            return np.nan, np.nan, np.nan, x, y, False
        if change < tolerance * (mxx + myy):
            return mxx, myy, mxy, x, y, bool(mxx * myy - mxy**2 > 0)
    return mxx, myy, mxy, x, y, False


def aperture_flux(
    cut: Cutout, x: float, y: float, radius: float
) -> tuple[float, float, bool, bool]:
    """Flux and error in a circle of ``radius`` about (x, y) (cut-out frame), pixel edges
    approximated by a linear ramp one pixel wide.

    Returns
    -------
    flux, error, flag, truncated
        ``flag``: some pixel in the aperture had zero weight (masked, off image) and was left
        out; ``truncated``: the aperture runs off the image.
    """
    ny, nx = cut.data.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot(xx - x, yy - y)
    frac = np.clip(radius + 0.5 - r, 0.0, 1.0)
    ok = cut.weight > 0
    inside = frac > 0
    flux = float((frac * cut.data)[ok].sum())
    var = float((frac[ok] ** 2 / cut.weight[ok]).sum())
    truncated = bool((inside & ~cut.inside).any())
    flag = bool((inside & ~ok).any())
    return flux, float(np.sqrt(var)), flag, truncated
