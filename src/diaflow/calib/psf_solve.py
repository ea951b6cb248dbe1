"""Kernels of the PSF fit: per-pixel polynomials, the perturbation model, and the wing tail.

Each takes the re-centred, flux-normalised star stamps ``data`` (n, s, s), their weights and the
polynomial terms of the stars' positions (n, K), and returns :class:`~diaflow.image.PixelPsf`
coefficients (K, s, s). See :mod:`diaflow.calib.psf` for the iteration around them.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

__all__ = ["regularize_wings", "solve_perturbation", "solve_pixels"]

_BASIS_SMOOTH_PX = 0.5
"""Gaussian low-pass (pixels) of the mean stamp before its derivatives are taken."""


def regularize_wings(
    coeffs: NDArray[np.float64], fwhm_px: float, start_fwhm: float
) -> NDArray[np.float64]:
    """Replace the model beyond ``start_fwhm`` FWHMs by a circular Moffat tail.

    Far from the core each pixel of the fitted model is mostly noise, light of neighbours and
    faint undetected sources, and background error; summed over the many outer pixels of a
    stamp these lift the wings by a fraction of a percent, which the stamp's normalisation
    takes from the core (and so biases PSF fluxes high). The tail is fitted to the azimuthal
    *medians* of the mean stamp between 1 FWHM and the start radius (medians shrug off
    neighbours), and blended in over half a FWHM; the position-dependent terms fade to zero.
    """
    size = coeffs.shape[1]
    h = size // 2
    r1 = start_fwhm * fwhm_px
    r2 = r1 + 0.5 * fwhm_px
    if start_fwhm <= 0 or r1 >= h - 1:
        return coeffs
    r = np.hypot(*np.mgrid[-h : h + 1, -h : h + 1])
    mean = coeffs[0]
    rad, prof = [], []
    for a in np.arange(max(math.floor(fwhm_px), 1), math.ceil(r1) + 1):
        sel = (r >= a) & (r < a + 1)
        if sel.any():
            rad.append(float(r[sel].mean()))
            prof.append(float(np.median(mean[sel])))
    rad_a, prof_a = np.array(rad), np.array(prof)
    good = prof_a > 0
    if good.sum() < 3:
        return coeffs
    rad_a, log_prof = rad_a[good], np.log(prof_a[good])
    alpha0 = fwhm_px / (2 * math.sqrt(2 ** (1 / 3.5) - 1))

    def resid(p: NDArray[np.float64]) -> NDArray[np.float64]:
        return p[0] - p[2] * np.log1p((rad_a / p[1]) ** 2) - log_prof

    start = np.array([log_prof[0] + 3.5 * math.log1p((rad_a[0] / alpha0) ** 2), alpha0, 3.5])
    try:
        fit = least_squares(
            resid,
            start,
            bounds=([-np.inf, 0.1 * fwhm_px, 1.1], [np.inf, 5 * fwhm_px, 12.0]),
        )
    except ValueError:
        return coeffs
    log_a, alpha, beta = fit.x
    tail = np.exp(log_a - beta * np.log1p((r / alpha) ** 2))
    ramp = np.sin(np.clip((r - r1) / (r2 - r1), 0, 1) * np.pi / 2) ** 2
    out = coeffs * (1 - ramp)
    out[0] += ramp * tail
    return out


def _basis(mean: NDArray[np.float64]) -> NDArray[np.float64]:
    """Flux-conserving changes of a stamp: dilation and the two shears, unit-normalised.

    ``D = x dM/dx + y dM/dy + 2 M``, ``S1 = x dM/dx - y dM/dy``, ``S2 = y dM/dx + x dM/dy``, with
    spectral (FFT) derivatives. The stamp is first tapered to zero over the outer half of its
    radius and lightly low-passed: derivatives times the distance from the centre would
    otherwise amplify the noise of the wings, and a noisy basis underestimates the variation
    (errors in the regressors bias their coefficients towards zero).
    """
    s = mean.shape[0]
    h = s // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1].astype(np.float64)
    r = np.hypot(xx, yy) / h
    taper = np.where(r < 0.5, 1.0, np.cos(np.clip((r - 0.5) / 0.5, 0, 1) * np.pi / 2) ** 2)
    freq = 2j * np.pi * np.fft.fftfreq(s)
    k2 = (freq.imag[None, :] ** 2 + freq.imag[:, None] ** 2) * _BASIS_SMOOTH_PX**2
    spec = np.fft.fft2(mean * taper) * np.exp(-0.5 * k2)
    smooth = np.fft.ifft2(spec).real
    ddx = np.fft.ifft2(spec * freq[None, :]).real
    ddy = np.fft.ifft2(spec * freq[:, None]).real
    basis = np.array([xx * ddx + yy * ddy + 2 * smooth, xx * ddx - yy * ddy, yy * ddx + xx * ddy])
    norm = np.sqrt((basis**2).sum(axis=(1, 2)))
    return basis / np.where(norm > 0, norm, 1.0)[:, None, None]


def solve_perturbation(
    data: NDArray[np.float64], weight: NDArray[np.float64], terms: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Mean stamp plus polynomial amounts of its dilation and shears (few stars needed).

    ``M(u, v) = M0 + sum_k a_k(u, v) B_k`` with ``a_k`` polynomials without a constant term, so
    ``M0`` is the PSF at the detector centre. For a fixed basis the problem is linear in ``M0``
    (one value per pixel) and the polynomial coefficients ``c``; ``M0`` is eliminated exactly
    (it is the weighted mean of ``d - a B`` at each pixel), which leaves a small system for ``c``
    in the position terms centred on their weighted mean at each pixel. The basis is then rebuilt
    from the new ``M0`` and the fit repeated. The result is written as PixelPsf coefficients:
    ``coeffs[0] = M0``, ``coeffs[j] = sum_k c_jk B_k``.
    """
    n, s, _ = data.shape
    w = weight.reshape(n, -1)
    d = data.reshape(n, -1)
    wsum = np.maximum(w.sum(axis=0), 1e-30)
    d_bar = (w * d).sum(axis=0) / wsum
    mean = d_bar
    t = terms[:, 1:]
    n_terms = t.shape[1]
    coeffs = np.zeros((n_terms + 1, s * s))
    if n_terms == 0:
        coeffs[0] = mean
        return coeffs.reshape(-1, s, s)
    t_bar = (w.T @ t) / wsum[:, None]  # (p, J): weighted mean of each term at each pixel
    centred = t[:, None, :] - t_bar[None, :, :]  # (n, p, J)
    resid = d - d_bar
    # Everything that does not depend on the basis: sum over stars at each pixel.
    q = np.einsum("np,npj,npm->pjm", w, centred, centred)  # (p, J, J)
    r = np.einsum("np,npj->pj", w * resid, centred)  # (p, J)
    c = np.zeros((n_terms, 3))
    basis = np.zeros((3, s * s))
    for _ in range(3):
        basis = _basis(mean.reshape(s, s)).reshape(3, -1)
        normal = np.einsum("pjm,kp,lp->jkml", q, basis, basis).reshape(3 * n_terms, 3 * n_terms)
        rhs = np.einsum("pj,kp->jk", r, basis).ravel()
        normal += (
            1e-9 * max(float(np.trace(normal)) / normal.shape[0], 1e-30) * np.eye(normal.shape[0])
        )
        c = np.linalg.solve(normal, rhs).reshape(n_terms, 3)
        mean = d_bar - np.einsum("pj,jk,kp->p", t_bar, c, basis)
    coeffs[0] = mean
    coeffs[1:] = c @ basis
    return coeffs.reshape(-1, s, s)


def solve_pixels(
    data: NDArray[np.float64], weight: NDArray[np.float64], terms: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per-pixel weighted least squares of ``data`` (n, s, s) on ``terms`` (n, K)."""
    n, s, _ = data.shape
    w = weight.reshape(n, -1)
    d = data.reshape(n, -1)
    a = np.einsum("np,nk,nl->pkl", w, terms, terms)
    b = np.einsum("np,nk->pk", w * d, terms)
    k = terms.shape[1]
    # A whisper of ridge keeps pixels that no star covers solvable (they come out near 0).
    scale = np.maximum(np.trace(a, axis1=1, axis2=2) / k, 1e-30)
    a += 1e-9 * scale[:, None, None] * np.eye(k)
    coeffs = np.linalg.solve(a, b[..., None])[..., 0]  # (p, K)
    return coeffs.T.reshape(k, s, s)
