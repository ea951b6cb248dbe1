"""Fitting the spatially varying Alard–Lupton matching kernel and differential background.

The model of the target image ``Y`` near each kernel star is ``K(x, y) * X + b(x, y)``: the
kernel ``K = sum_k sum_p a_kp P_p(x, y) B_k`` (basis functions ``B_k`` times monomials ``P_p`` of
the detector position) convolved with the other image ``X``, plus a polynomial background ``b``
(Alard & Lupton 1998; Alard 2000). It is linear in ``a`` and ``b``, so it is solved by weighted
linear least squares. As in the Rubin pipelines, each stamp is first reduced to its normal
equations with a kernel constant over the stamp; the global solution then sums those with the
spatial terms evaluated at the stamp centre, which costs nothing per pixel. Stamps are rejected in
rounds: first those whose own best kernel sum is an outlier (variable stars), then those whose
chi^2 under the global solution is (blends, cosmic rays, defects).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.signal
from numpy.typing import NDArray

from ..errors import SubtractionError
from ..image.psf import poly_terms
from .basis import KernelBasis
from .config import KernelConfig, StampConfig
from .solution import KernelSolution, n_poly_terms, scaled_position

__all__ = ["KernelFitStats", "fit_kernel"]

logger = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class KernelFitStats:
    """How well the kernel fit went."""

    n_candidates: int
    """Stamps offered to the fit."""
    n_used: int
    """Stamps left after clipping."""
    chi2_per_pixel: NDArray[np.float64]
    """Chi^2 per pixel of each used stamp under the final solution."""
    used: NDArray[np.bool_]
    """Which offered stamps were used."""


def _cut(
    image: NDArray[np.floating], xs: NDArray[np.intp], ys: NDArray[np.intp], half: int
) -> NDArray[np.floating]:
    """(n, 2 half + 1, 2 half + 1) square cut-outs centred on (xs, ys)."""
    offs = np.arange(-half, half + 1)
    return image[(ys[:, None] + offs)[:, :, None], (xs[:, None] + offs)[:, None, :]]


def _robust_sigma(values: NDArray[np.float64]) -> tuple[float, float]:
    med = float(np.median(values))
    return med, _MAD_TO_SIGMA * float(np.median(np.abs(values - med)))


def fit_kernel(
    *,
    target: NDArray[np.floating],
    target_var: NDArray[np.floating],
    convolved: NDArray[np.floating],
    convolved_var: NDArray[np.floating],
    xs: NDArray[np.intp],
    ys: NDArray[np.intp],
    basis: KernelBasis,
    kernel_config: KernelConfig,
    stamp_config: StampConfig,
    label: str = "",
) -> tuple[KernelSolution, KernelFitStats]:
    """Fit ``target ~ K(x, y) * convolved + b(x, y)`` on stamps centred at (xs, ys).

    Parameters
    ----------
    target, target_var
        Image that is matched to, and its variance.
    convolved, convolved_var
        Image that the kernel convolves (the narrower PSF), and its variance.
    xs, ys
        Stamp centres (integer pixels); each stamp's fitting window is ``2h + 1`` square and the
        convolved image must be valid ``h`` pixels further out.
    basis
        Kernel basis.
    kernel_config, stamp_config
        Spatial orders and clipping.
    label
        Exposure label for messages.

    Returns
    -------
    KernelSolution, KernelFitStats

    Raises
    ------
    SubtractionError
        ``too_few_stamps`` when fewer than ``stamp_config.min_stamps`` survive clipping;
        ``singular_fit`` when the normal equations cannot be solved.
    """
    h = basis.half_width_px
    n_stamps = len(xs)
    shape = (int(target.shape[0]), int(target.shape[1]))
    _check_count(n_stamps, stamp_config.min_stamps, label, "offered")
    y_cut = _cut(target, xs, ys, h).reshape(n_stamps, -1).astype(np.float64)
    vy_cut = _cut(target_var, xs, ys, h).reshape(n_stamps, -1).astype(np.float64)
    x_cut = _cut(convolved, xs, ys, 2 * h)
    vx_cut = _cut(convolved_var, xs, ys, 2 * h).astype(np.float64)
    # Weights: the variance of target - K * convolved is var_t + K^2 * var_c; before the fit, K
    # is taken as a Gaussian of the basis' middle width (the expected matching kernel) scaled by
    # the rough flux ratio (stamp sums above their median level).
    inner = x_cut[:, h:-h, h:-h].reshape(n_stamps, -1).astype(np.float64)
    ratio = float(
        np.median(
            (y_cut.sum(1) - y_cut.shape[1] * np.median(y_cut, 1))
            / np.maximum(inner.sum(1) - inner.shape[1] * np.median(inner, 1), 1e-30)
        )
    )
    offs = np.arange(-h, h + 1)
    gauss = np.exp(-0.5 * (offs / basis.sigmas_px[len(basis.sigmas_px) // 2]) ** 2)
    guess = np.outer(gauss, gauss) * ratio / gauss.sum() ** 2
    weights = 1.0 / np.maximum(vy_cut + _convolved_variance(vx_cut, guess), 1e-30)
    raw = basis.convolve_cutouts(x_cut.astype(np.float32), raw=True)
    design = raw.reshape(n_stamps, raw.shape[1], -1).astype(np.float64)
    n_bg = n_poly_terms(kernel_config.background_order)
    if n_bg:
        design = np.concatenate([design, np.ones((n_stamps, 1, design.shape[2]))], axis=1)
    n_b = basis.n_basis
    # Final-basis transform, extended by the background column.
    tr = scipy.linalg.block_diag(basis.transform, np.eye(1 if n_bg else 0))
    normal, rhs = _normal_equations(design, weights, y_cut, tr)

    used = np.ones(n_stamps, dtype=bool)
    # Each stamp on its own: reject outlying kernel sums (variable stars).
    try:
        own = np.linalg.solve(normal, rhs[..., None])[..., 0]
        sums = own[:, 0]
        med, sig = _robust_sigma(sums)
        sig = max(sig, 1e-4 * abs(med))
        used &= np.abs(sums - med) <= stamp_config.clip_sigma * sig
    except np.linalg.LinAlgError:
        logger.debug("%s: per-stamp fits singular; skipping the kernel-sum clip", label)
    _check_count(int(used.sum()), stamp_config.min_stamps, label, "left after kernel-sum clip")

    u, v = scaled_position(xs.astype(np.float64), ys.astype(np.float64), shape)
    spatial = poly_terms(u, v, kernel_config.spatial_order).T  # (n, n_sp)
    back = poly_terms(u, v, max(kernel_config.background_order, 0)).T[:, :n_bg]
    n_sp = spatial.shape[1]
    free = np.ones((n_b, n_sp), dtype=bool)
    if not kernel_config.vary_normalisation:
        free[0, 1:] = False
    free_idx = np.flatnonzero(np.concatenate([free.ravel(), np.ones(n_bg, dtype=bool)]))

    # Noise cost of kernel power: a kernel component dK adds var_c * sum(dK^2) to every pixel's
    # variance, i.e. sum(var_c * weight) to a stamp's chi^2 scale; directions the stars barely
    # constrain are damped by that much (a ridge on the detector-averaged kernel power).
    vx_inner = vx_cut[:, h:-h, h:-h].reshape(n_stamps, -1)
    cost = kernel_config.power_penalty * np.sum(vx_inner * weights, axis=1)

    chi2 = np.zeros(n_stamps)
    npix = y_cut.shape[1]
    for it in range(stamp_config.clip_iterations + 1):
        theta = _solve_global(
            normal,
            rhs,
            spatial,
            back,
            used,
            n_b,
            free_idx,
            cost,
            kernel_config.spatial_order,
            label,
        )
        local = _local_coefficients(theta, spatial, back, n_b)  # (n, n_b + n_bg)
        model = np.einsum("nk,nkp->np", local @ tr, design, optimize=True)
        chi2 = np.sum((y_cut - model) ** 2 * weights, axis=1) / npix
        if it == stamp_config.clip_iterations:
            break
        med, sig = _robust_sigma(chi2[used])
        bad = used & (chi2 > med + stamp_config.clip_sigma * max(sig, 1e-3 * med))
        if not bad.any():
            break
        used &= ~bad
        _check_count(int(used.sum()), stamp_config.min_stamps, label, "left after chi^2 clip")

    # Report chi^2 with the variance of the fitted kernel itself (at the detector centre, which
    # differs little from the kernel at each stamp for this purpose).
    centre = np.tensordot(
        poly_terms(np.array(0.0), np.array(0.0), kernel_config.spatial_order)
        @ theta[: n_b * n_sp].reshape(n_b, n_sp).T,
        basis.images(),
        axes=1,
    )
    var = vy_cut + _convolved_variance(vx_cut, centre)
    chi2 = np.sum((y_cut - model) ** 2 / np.maximum(var, 1e-30), axis=1) / npix
    coeffs = theta[: n_b * n_sp].reshape(n_b, n_sp)
    solution = KernelSolution(
        basis=basis,
        coeffs=coeffs,
        background_coeffs=theta[n_b * n_sp :],
        spatial_order=kernel_config.spatial_order,
        background_order=kernel_config.background_order,
        shape=shape,
    )
    stats = KernelFitStats(
        n_candidates=n_stamps, n_used=int(used.sum()), chi2_per_pixel=chi2[used], used=used
    )
    return solution, stats


def _convolved_variance(
    var_cut: NDArray[np.float64], kernel: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``K^2 * var`` over each stamp's fitting window, flattened: (n, (2h + 1)^2).

    ``K^2`` is applied as a sum of separable terms (its singular value decomposition, to 0.1 %
    of its largest singular value), each two small matrix products per stamp.
    """
    n, side, _ = var_cut.shape
    m = kernel.shape[0]
    out_side = side - m + 1
    u, s, vt = np.linalg.svd(kernel**2)
    rank = max(1, int(np.sum(s > 1e-3 * s[0])))
    # Toeplitz matrix of a 1-D kernel f for a valid convolution: T[i, j] = f(i + m - 1 - j).
    offs = np.arange(out_side)[:, None] + m - 1 - np.arange(side)[None, :]
    inside = (offs >= 0) & (offs < m)
    out = np.zeros((n, out_side, out_side))
    for r in range(rank):
        t_y = np.where(inside, (u[:, r] * s[r])[np.clip(offs, 0, m - 1)], 0.0)
        t_x = np.where(inside, vt[r][np.clip(offs, 0, m - 1)], 0.0)
        out += t_y @ var_cut @ t_x.T
    return out.reshape(n, -1)


def _normal_equations(
    design: NDArray[np.float64],
    weights: NDArray[np.float64],
    y_cut: NDArray[np.float64],
    tr: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-stamp normal matrices and right-hand sides in the final basis."""
    wd = design * weights[:, None, :]
    normal = tr @ np.matmul(wd, design.transpose(0, 2, 1)) @ tr.T
    rhs = np.einsum("kl,nlp,np->nk", tr, wd, y_cut, optimize=True)
    return normal, rhs


def _penalty_pattern(n_b: int, spatial_order: int) -> NDArray[np.float64]:
    """Diagonal weights turning coefficients into the kernel power averaged over the detector.

    The zero-sum basis functions are orthonormal, so the kernel power ``sum K^2`` from them is
    the sum of their squared coefficients; a monomial's mean square over [-1, 1]^2 is
    ``1 / ((2i + 1)(2j + 1))``. The unit-sum function (index 0) carries the flux scale and is not
    penalised.
    """
    mean_sq = np.array(
        [
            1.0 / ((2 * i + 1) * (2 * j + 1))
            for i in range(spatial_order + 1)
            for j in range(spatial_order + 1 - i)
        ]
    )
    mean_sq[0] = 0.0
    pattern = np.tile(mean_sq, (n_b, 1))
    pattern[0] = 0.0
    return pattern.ravel()


def _check_count(n: int, minimum: int, label: str, stage: str) -> None:
    if n < minimum:
        raise SubtractionError(
            "too_few_stamps",
            f"{label}: {n} kernel stamps {stage}, need at least {minimum} (too few bright, "
            "unsaturated, isolated stars in both images; lower stamps.min_snr or "
            "stamps.min_stamps, or check the masks)",
            n_stamps=n,
            min_stamps=minimum,
        )


def _solve_global(
    normal: NDArray[np.float64],
    rhs: NDArray[np.float64],
    spatial: NDArray[np.float64],
    back: NDArray[np.float64],
    used: NDArray[np.bool_],
    n_b: int,
    free_idx: NDArray[np.intp],
    noise_cost: NDArray[np.float64],
    spatial_order: int,
    label: str,
) -> NDArray[np.float64]:
    """Sum the stamps' normal equations with their spatial terms and solve for all parameters."""
    m, r, p, q = normal[used], rhs[used], spatial[used], back[used]
    n_sp, n_bg = p.shape[1], q.shape[1]
    n_a = n_b * n_sp
    big = np.zeros((n_a + n_bg, n_a + n_bg))
    big[:n_a, :n_a] = np.einsum("skl,sp,sq->kplq", m[:, :n_b, :n_b], p, p, optimize=True).reshape(
        n_a, n_a
    )
    vec = np.zeros(n_a + n_bg)
    vec[:n_a] = np.einsum("sk,sp->kp", r[:, :n_b], p).ravel()
    if n_bg:
        cross = np.einsum("sk,sp,sq->kpq", m[:, :n_b, n_b], p, q).reshape(n_a, n_bg)
        big[:n_a, n_a:] = cross
        big[n_a:, :n_a] = cross.T
        big[n_a:, n_a:] = np.einsum("s,sp,sq->pq", m[:, n_b, n_b], q, q)
        vec[n_a:] = np.einsum("s,sq->q", r[:, n_b], q)
    big[np.diag_indices(n_a)] += float(noise_cost[used].sum()) * _penalty_pattern(
        n_b, spatial_order
    )
    sub = big[np.ix_(free_idx, free_idx)]
    scale = np.sqrt(np.maximum(np.diag(sub), 1e-300))
    scaled = sub / np.outer(scale, scale)
    try:
        factor = scipy.linalg.cho_factor(scaled)
        sol = scipy.linalg.cho_solve(factor, vec[free_idx] / scale)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError) as exc:
        raise SubtractionError(
            "singular_fit",
            f"{label}: kernel normal equations are singular with {int(used.sum())} stamps "
            f"({exc}); lower kernel.spatial_order or use more stamps",
            n_stamps=int(used.sum()),
        ) from exc
    theta = np.zeros(n_a + n_bg)
    theta[free_idx] = sol / scale
    return theta


def _local_coefficients(
    theta: NDArray[np.float64], spatial: NDArray[np.float64], back: NDArray[np.float64], n_b: int
) -> NDArray[np.float64]:
    """Per-stamp basis (and background) coefficients from the global parameters."""
    n_sp = spatial.shape[1]
    a = theta[: n_b * n_sp].reshape(n_b, n_sp)
    local = spatial @ a.T  # (n, n_b)
    if back.shape[1]:
        local = np.concatenate([local, (back @ theta[n_b * n_sp :])[:, None]], axis=1)
    return local
