"""Non-linear fits of two source models on difference images: dipoles and trailed sources.

Both fit all parameters (positions, separation, length, angles and fluxes) together with
Levenberg-Marquardt on inverse-variance-weighted residuals, fluxes starting from a linear fit.
Models and their analytic derivatives come from the PSF's Fourier transform
(:class:`~diaflow.measure._stamps.FourierPsf`). Errors are the inverse of the Fisher matrix
(whitened Jacobian) at the solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from ._stamps import Cutout, FourierPsf

__all__ = ["DipoleFit", "TrailFit", "fit_dipole", "fit_trail"]

_NAN = float("nan")


@dataclass(frozen=True)
class DipoleFit:
    """A positive and a negative PSF (fluxes ``flux_pos``, ``flux_neg`` >= 0 for a dipole) a
    distance ``separation`` apart, centred on (x, y), the negative-to-positive direction at
    ``angle`` (radians from +x towards +y). Image frame, counts."""

    x: float
    y: float
    x_err: float
    y_err: float
    xy_cov: float
    separation: float
    angle: float
    flux_pos: float
    flux_neg: float
    mean_flux_err: float
    flux_diff_err: float
    chi2: float
    chi2_single: float
    """Chi2 of the best single PSF on the same pixels."""
    ndata: int
    ok: bool


@dataclass(frozen=True)
class TrailFit:
    """A PSF trailed along a segment of ``length`` centred on (x, y) at ``angle`` (radians from
    +x towards +y, in [0, pi)). Image frame, counts."""

    x: float
    y: float
    x_err: float
    y_err: float
    length: float
    length_err: float
    angle: float
    angle_err: float
    flux: float
    flux_err: float
    chi2: float
    ndata: int
    ok: bool


def _solve(
    models: list[NDArray[np.float64]], cut: Cutout
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted linear least squares of the data on ``models``; (amplitudes, residual*sqrt(w))."""
    use = cut.weight > 0
    sw = np.sqrt(cut.weight[use])
    a = np.stack([m[use] * sw for m in models], axis=1)
    b = cut.data[use] * sw
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return coef, b - a @ coef


Model = Callable[[NDArray[np.float64]], list[tuple[NDArray[np.float64], NDArray[np.float64]]]]
"""Parameters -> per cut-out (model image, derivatives stacked along the first axis)."""


class _Problem:
    """Whitened residuals and Jacobian of a model over the usable pixels of cut-outs, for LM."""

    def __init__(self, cuts: list[Cutout], model: Model) -> None:
        self.use = [c.weight > 0 for c in cuts]
        self.sw = [np.sqrt(c.weight[u]) for c, u in zip(cuts, self.use, strict=True)]
        self.data = np.concatenate(
            [c.data[u] * w for c, u, w in zip(cuts, self.use, self.sw, strict=True)]
        )
        self.model = model
        self._key: bytes | None = None
        self._val: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None

    def _eval(self, p: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        key = p.tobytes()
        if key != self._key:
            parts = self.model(p)
            m = np.concatenate(
                [mi[u] * w for (mi, _), u, w in zip(parts, self.use, self.sw, strict=True)]
            )
            jac = np.concatenate(
                [di[:, u].T * w[:, None] for (_, di), u, w in zip(parts, self.use, self.sw,
                                                                   strict=True)]
            )  # fmt: skip
            self._key = key
            self._val = (self.data - m, -jac)
        assert self._val is not None
        return self._val

    def resid(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._eval(p)[0]

    def jac(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._eval(p)[1]

    def fit(self, p0: NDArray[np.float64]) -> tuple[NDArray[np.float64], float, bool]:
        """Levenberg-Marquardt from ``p0``: (parameters, chi2, converged)."""
        try:
            res = least_squares(
                self.resid, p0, jac=self.jac, method="lm", max_nfev=100, ftol=1e-6, xtol=1e-6
            )
        except (ValueError, np.linalg.LinAlgError):
            return p0, float("inf"), False
        # Running out of evaluations along a nearly degenerate valley (a close dipole without
        # science and template images) still leaves a usable, if uncertain, solution.
        chi2 = float(2 * res.cost)
        return res.x, chi2, bool(res.status >= 0 and np.isfinite(chi2))

    def covariance(self, p: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """Inverse Fisher matrix; nearly degenerate directions get a large, positive variance."""
        jac = self.jac(p)
        fisher = jac.T @ jac
        if not np.all(np.isfinite(fisher)):
            return None
        lam, vec = np.linalg.eigh(fisher)
        if not lam[-1] > 0:
            return None
        lam = np.maximum(lam, lam[-1] * 1e-14)
        return (vec / lam) @ vec.T


def _err(cov: NDArray[np.float64] | None, i: int) -> float:
    return math.sqrt(max(float(cov[i, i]), 0.0)) if cov is not None else _NAN


def fit_dipole(
    cut: Cutout,
    kernel: NDArray[np.float64],
    pos_xy: tuple[float, float],
    neg_xy: tuple[float, float],
    *,
    science: tuple[Cutout, NDArray[np.float64]] | None = None,
    template: tuple[Cutout, NDArray[np.float64]] | None = None,
) -> DipoleFit:
    """Fit a positive and a negative PSF to a cut-out of the difference image.

    Parameters are the centre, separation and angle of the pair and the two lobe fluxes (the
    fluxes start from a linear fit). On the difference image alone a close pair constrains
    only the product of flux and separation well (the dipole moment); as in the Rubin
    pipelines' dipole fit, the science and template cut-outs, when given, add the positive lobe
    (plus a constant) to the science image and the negative lobe (plus a constant) to the
    template, which pins the lobe fluxes and so the separation. The best single PSF on the
    difference pixels is fitted as well, so that the caller can ask whether two lobes explain
    the data better.

    Parameters
    ----------
    cut
        Difference-image cut-out holding both lobes.
    kernel
        PSF stamp at the source.
    pos_xy, neg_xy
        Image positions of the positive and negative peaks of the matched-filter significance.
    science, template
        Cut-outs of the same pixels of the science and template images with their PSF stamps.
    """
    fp = FourierPsf(kernel, cut.data.shape)
    ndata = int((cut.weight > 0).sum())
    if ndata < 8:
        return DipoleFit(*([_NAN] * 13), ndata, False)  # type: ignore[arg-type]
    cx = 0.5 * (pos_xy[0] + neg_xy[0]) - cut.x0
    cy = 0.5 * (pos_xy[1] + neg_xy[1]) - cut.y0
    phi0 = math.atan2(pos_xy[1] - neg_xy[1], pos_xy[0] - neg_xy[0])
    cuts = [cut]
    extra: list[tuple[int, FourierPsf]] = []  # (lobe: 0 positive / 1 negative, its PSF)
    for lobe, pair in ((0, science), (1, template)):
        if pair is not None and (pair[0].weight > 0).sum() >= 8:
            cuts.append(pair[0])
            extra.append((lobe, FourierPsf(pair[1], pair[0].data.shape)))

    def centres(p: NDArray[np.float64]) -> tuple[tuple[float, float], tuple[float, float]]:
        hx, hy = 0.5 * p[2] * math.cos(p[3]), 0.5 * p[2] * math.sin(p[3])
        return (p[0] + hx, p[1] + hy), (p[0] - hx, p[1] - hy)

    def model(p: NDArray[np.float64]) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
        a, b, c, s = p[4], p[5], 0.5 * math.cos(p[3]), 0.5 * math.sin(p[3])
        (xp, yp), (xn, yn) = centres(p)
        pp, gpx, gpy = fp.point_with_gradient(xp, yp)
        pn, gnx, gny = fp.point_with_gradient(xn, yn)
        zero = np.zeros_like(pp)
        nb = len(extra)
        d = np.stack(
            [
                a * gpx - b * gnx,
                a * gpy - b * gny,
                a * (gpx * c + gpy * s) + b * (gnx * c + gny * s),
                p[2] * (a * (-gpx * s + gpy * c) + b * (gnx * s - gny * c)),
                pp,
                -pn,
                *([zero] * nb),
            ]
        )
        out = [(a * pp - b * pn, d)]
        for k, (lobe, fpk) in enumerate(extra):
            sign = 1.0 if lobe == 0 else -1.0
            flux = a if lobe == 0 else b
            m, gx, gy = fpk.point_with_gradient(*(xp, yp) if lobe == 0 else (xn, yn))
            one = np.ones_like(m)
            dk = np.zeros((6 + nb, *m.shape))
            dk[0], dk[1] = flux * gx, flux * gy
            dk[2] = sign * flux * (gx * c + gy * s)
            dk[3] = sign * p[2] * flux * (-gx * s + gy * c)
            dk[4 + lobe] = m
            dk[6 + k] = one
            out.append((flux * m + p[6 + k], dk))
        return out

    q = np.zeros(6 + len(extra))
    q[:4] = cx, cy, 1.0, phi0
    (xp, yp), (xn, yn) = centres(q)
    q[4:6] = _solve([fp.point(xp, yp), -fp.point(xn, yn)], cut)[0]
    prob = _Problem(cuts, model)
    p, chi2, ok = prob.fit(q)
    p = p.copy()
    if p[2] < 0:
        p[2], p[3] = -p[2], p[3] + math.pi
    p[3] = math.remainder(p[3], 2 * math.pi)
    cov = prob.covariance(p)
    if extra:  # chi2 of the difference image alone, comparable with the single PSF's
        chi2 = float(np.sum(_Problem([cut], lambda q: model(q)[:1]).resid(p) ** 2))

    def single(q: NDArray[np.float64]) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
        m, gx, gy = fp.point_with_gradient(q[0], q[1])
        return [(q[2] * m, np.stack([q[2] * gx, q[2] * gy, m]))]

    chi2_single = float("inf")
    for sx, sy in (pos_xy, neg_xy):  # the single PSF may sit on either lobe
        start = np.array([sx - cut.x0, sy - cut.y0, 0.0])
        start[2] = _solve([fp.point(start[0], start[1])], cut)[0][0]
        chi2_single = min(chi2_single, _Problem([cut], single).fit(start)[1])
    ok = bool(ok and cov is not None and np.all(np.isfinite(p)) and np.all(np.diag(cov) > 0))
    mean_err = diff_err = _NAN
    if cov is not None:
        va, vb, cab = cov[4, 4], cov[5, 5], cov[4, 5]
        mean_err = 0.5 * math.sqrt(max(va + vb + 2 * cab, 0.0))
        diff_err = math.sqrt(max(va + vb - 2 * cab, 0.0))
    return DipoleFit(
        float(p[0] + cut.x0),
        float(p[1] + cut.y0),
        _err(cov, 0),
        _err(cov, 1),
        float(cov[0, 1]) if cov is not None else _NAN,
        float(p[2]),
        float(p[3]),
        float(p[4]),
        float(p[5]),
        mean_err,
        diff_err,
        chi2,
        chi2_single,
        ndata,
        ok,
    )


def fit_trail(
    cut: Cutout,
    kernel: NDArray[np.float64],
    xy: tuple[float, float],
    length0: float,
    angle0: float,
) -> TrailFit:
    """Fit a trailed point source (PSF convolved with a uniform segment) to a cut-out.

    The model is that of Veres et al. (2012), with the measured PSF in place of their Gaussian:
    flux times the PSF convolved with a segment of the given length and angle, centred on
    (x, y). Starting values come from the source's second moments.
    """
    fp = FourierPsf(kernel, cut.data.shape)
    ndata = int((cut.weight > 0).sum())
    if ndata < 8:
        return TrailFit(*([_NAN] * 11), ndata, False)  # type: ignore[arg-type]

    def model(p: NDArray[np.float64]) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
        g = fp.segment_with_gradient(p[0], p[1], p[2], p[3])
        return [(p[4] * g[0], np.concatenate([p[4] * g[1:], g[:1]]))]

    p0 = np.array([xy[0] - cut.x0, xy[1] - cut.y0, max(length0, 1.0), angle0, 0.0])
    p0[4] = _solve([fp.segment(*p0[:4])], cut)[0][0]
    prob = _Problem([cut], model)
    p, chi2, ok = prob.fit(p0)
    p = p.copy()
    p[2] = abs(p[2])
    p[3] = p[3] % math.pi
    cov = prob.covariance(p)
    ny, nx = cut.data.shape
    inside = 0 <= p[0] < nx and 0 <= p[1] < ny and p[2] < 2 * max(nx, ny)
    ok = bool(ok and cov is not None and inside and np.all(np.isfinite(p)))
    return TrailFit(
        float(p[0] + cut.x0),
        float(p[1] + cut.y0),
        _err(cov, 0),
        _err(cov, 1),
        float(p[2]),
        _err(cov, 2),
        float(p[3]),
        _err(cov, 3),
        float(p[4]),
        _err(cov, 4),
        chi2,
        ndata,
        ok,
    )
