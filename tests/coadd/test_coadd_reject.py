"""Outlier rejection on a synthetic stack: satellite trails are masked along their whole line."""

from __future__ import annotations

import numpy as np

from diaflow.coadd import RejectConfig, find_outliers


def _gaussian(size: int, sigma: float) -> np.ndarray:
    h = size // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return g / g.sum()


def _stack(seed: int = 3):
    """Eight 300^2 inputs of unit noise with a variable bright star at (150, 150) and a trail
    across the whole of input 2, through the star."""
    rng = np.random.default_rng(seed)
    n, side, sigma = 8, 300, 2.0
    psf = _gaussian(25, sigma)
    yy, xx = np.mgrid[0:side, 0:side]
    star = np.exp(-((xx - 150) ** 2 + (yy - 150) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    images = rng.normal(size=(n, side, side)).astype(np.float32)
    # A variable star: its brightness differs in every input, so its pixels recur as outliers.
    for i, flux in enumerate(rng.uniform(20_000, 30_000, n)):
        images[i] += np.float32(flux) * star.astype(np.float32)
    # A trail 3 sigma per pixel at its centre line, y = 0.6 x + 60 (through the star).
    d = np.abs(0.6 * xx - yy + 60) / np.hypot(0.6, 1.0)
    trail = 3.0 * np.exp(-(d**2) / (2 * sigma**2))
    images[2] += trail.astype(np.float32)
    variances = np.ones_like(images)
    valid = np.ones(images.shape, dtype=bool)
    return images, variances, valid, psf, d


def test_a_trail_is_masked_along_its_whole_line_also_across_a_star() -> None:
    images, variances, valid, psf, d = _stack()
    on_line = d < 1.0
    near_star = on_line & (np.hypot(*np.mgrid[-150:150, -150:150]) < 8)
    assert near_star.sum() > 5
    rejected = find_outliers(images, variances, valid, psf, 2.3548 * 2.0).rejected
    assert rejected[2][on_line].all()
    assert not rejected[[0, 1, 3, 4, 5, 6, 7]][:, on_line & ~near_star].any()
    # Without the streak step the trail's mask stops at the star, which recurs.
    plain = find_outliers(
        images, variances, valid, psf, 2.3548 * 2.0, config=RejectConfig(streak_min_length_fwhm=0)
    ).rejected
    assert not plain[2][near_star].all()
    assert plain[2][on_line].mean() > 0.8
