"""PSF photometry: weighted least-squares fit of flux (and optionally position) of one source."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._stamps import FourierPsf, cutout

__all__ = ["PsfFit", "fit_psf"]


@dataclass(frozen=True)
class PsfFit:
    """Result of :func:`fit_psf`; positions in the image frame, fluxes in counts."""

    x: float
    y: float
    x_err: float
    y_err: float
    xy_cov: float
    flux: float
    flux_err: float
    chi2: float
    lnl: float
    ndata: int
    centroid_ok: bool
    """The position fit converged within the allowed shift (always False without it)."""
    edge: bool
    """The fit region runs off the image."""
    no_good_pixels: bool
    """Too few usable pixels to fit anything (flux is NaN)."""


def fit_psf(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    mask: NDArray[np.integer],
    kernel: NDArray[np.float64],
    x: float,
    y: float,
    *,
    radius_px: float,
    ignore_bits: int,
    fit_position: bool = True,
    max_shift_px: float = 2.0,
    max_iterations: int = 10,
) -> PsfFit:
    """Fit a scaled PSF to the pixels within ``radius_px`` of a source.

    The flux is the linear weighted least-squares amplitude of the PSF (weights: inverse
    variance) over the pixels within ``radius_px`` of the starting position, its error
    ``1 / sqrt(sum(P^2 / V))``. With ``fit_position`` the centre is found by
    Gauss-Newton iterations on (flux, x, y) from (x, y); errors of the position come from the
    inverse Fisher matrix at the solution. A fit that leaves ``max_shift_px`` or does not
    converge keeps the starting position.
    """
    shift = max_shift_px if fit_position else 0.0
    half = math.ceil(radius_px + shift) + 1
    ix, iy = round(x), round(y)
    size = 2 * half + 1
    cut = cutout(image, variance, mask, ix - half, iy - half, size, size, ignore_bits)
    fp = FourierPsf(kernel, (size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    lx0, ly0 = x - cut.x0, y - cut.y0
    lx, ly = lx0, ly0
    r2max = radius_px**2

    # The fit region stays centred on the start: a region that followed the fit would make the
    # chi2 surface jump as pixels enter and leave it, and Gauss-Newton would not settle.
    inside_region = ((xx - lx0) ** 2 + (yy - ly0) ** 2) <= r2max
    w = np.where(inside_region, cut.weight, 0.0)
    ok = False
    if fit_position:
        for _ in range(max_iterations):
            p, px, py = fp.point_with_gradient(lx, ly)
            a = float((w * p * p).sum())
            if not a > 0:
                break
            flux = float((w * p * cut.data).sum()) / a
            jac = np.stack([p, flux * px, flux * py]).reshape(3, -1)
            res = (cut.data - flux * p).ravel()
            wf = w.ravel()
            fisher = (jac * wf) @ jac.T
            try:
                cov = np.linalg.inv(fisher)
            except np.linalg.LinAlgError:
                break
            step = cov @ ((jac * wf) @ res)
            # Converged when the step is small next to the position error (the remaining error
            # is then a few per cent of it) or below 2e-3 px.
            tol = max(2e-3, 0.1 * math.sqrt(max(cov[1, 1] + cov[2, 2], 0.0)))
            dxy = step[1:]
            norm = float(np.hypot(*dxy))
            if not np.isfinite(norm):
                break
            if norm > 1.0:
                dxy = dxy / norm
            lx, ly = lx + float(dxy[0]), ly + float(dxy[1])
            if math.hypot(lx - lx0, ly - ly0) > shift:
                break
            if norm < tol:
                ok = True
                break
        if not ok:
            lx, ly = lx0, ly0

    p, px, py = fp.point_with_gradient(lx, ly)
    edge = bool((inside_region & ~cut.inside).any())
    ndata = int((w > 0).sum())
    a = float((w * p * p).sum())
    nan = float("nan")
    if ndata < 3 or not a > 0:
        return PsfFit(x, y, nan, nan, nan, nan, nan, nan, nan, ndata, False, edge, True)
    flux = float((w * p * cut.data).sum()) / a
    resid = cut.data - flux * p
    chi2 = float((w * resid * resid).sum())
    lnl = -0.5 * chi2 - 0.5 * float(np.log(2 * np.pi / w[w > 0]).sum())
    x_err = y_err = xy_cov = nan
    if ok:
        jac = np.stack([p, flux * px, flux * py]).reshape(3, -1)
        fisher = (jac * w.ravel()) @ jac.T
        try:
            cov = np.linalg.inv(fisher)
            x_err, y_err, xy_cov = (
                math.sqrt(max(cov[1, 1], 0.0)),
                math.sqrt(max(cov[2, 2], 0.0)),
                float(cov[1, 2]),
            )
        except np.linalg.LinAlgError:
            ok = False
    return PsfFit(
        lx + cut.x0,
        ly + cut.y0,
        x_err,
        y_err,
        xy_cov,
        flux,
        1.0 / math.sqrt(a),
        chi2,
        lnl,
        ndata,
        ok,
        edge,
        False,
    )
