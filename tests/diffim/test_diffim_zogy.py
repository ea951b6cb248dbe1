"""ZOGY (Zackay, Ofek & Gal-Yam 2016) against truth."""

from __future__ import annotations

import numpy as np
import pytest
from diffim_sim import blank_pixels, gaussian_pair, make_pair, psf_flux, stamp_chi2
from scipy.signal import fftconvolve

from diaflow.diffim import SubtractConfig, subtract
from diaflow.diffim.zogy import zogy_kernels
from diaflow.image import GaussianPsf

ZOGY = SubtractConfig(method="zogy")


def test_diffim_zogy_kernels_cancel_static_sources() -> None:
    p_n, p_r = GaussianPsf(2.0).kernel(0, 0), GaussianPsf(1.4).kernel(0, 0)
    k_n, k_r = zogy_kernels(p_n, p_r, var_new=100.0, var_ref=30.0, flux_ratio=1.3, half_width_px=12)
    assert k_n.sum() == pytest.approx(1.0)
    assert k_r.sum() == pytest.approx(1 / 1.3)
    static = fftconvolve(p_n, k_n) - 1.3 * fftconvolve(p_r, k_r)
    assert np.abs(static).max() < 1e-4 * fftconvolve(p_n, k_n).max()


@pytest.mark.parametrize("sigmas", [(2.2, 1.4), (1.4, 2.2)])
def test_diffim_zogy_gaussian_pair(sigmas: tuple[float, float]) -> None:
    science, template, transients = gaussian_pair(*sigmas, n_transients=12, seed=8)
    result = subtract(science, template, config=ZOGY)
    assert result.method == "zogy"
    assert result.convolved == "both"
    assert result.solution is None
    assert 0.95 < result.quality.noise_ratio < 1.05
    assert result.quality.flux_ratio == pytest.approx(1.0, abs=0.01)
    pulls = []
    for t in transients.itertuples():
        fit = psf_flux(result.difference, t.x, t.y)
        assert fit is not None
        pulls.append((fit[0] - t.counts) / fit[1])
    assert float(np.max(np.abs(pulls))) < 4.5
    assert abs(float(np.mean(pulls))) < 0.8


def test_diffim_zogy_simulated_pair() -> None:
    """Template sharper than the science image; the PSFs vary little over this detector."""
    pair = make_pair(1.1, 0.7)
    result = subtract(pair.science, pair.template, config=ZOGY)
    diff = result.difference
    blank = blank_pixels(diff, pair.truth)
    z = diff.image[blank] / np.sqrt(diff.variance[blank])
    assert 0.95 < float(np.std(z)) < 1.05
    assert abs(float(np.mean(z))) < 0.03
    assert result.quality.flux_ratio == pytest.approx(pair.template_scale, rel=0.01)
    assert result.quality.background_offset == pytest.approx(3.0 / pair.template_scale, abs=0.5)
    truth = pair.truth
    transients = truth[truth["kind"] == "transient"]
    fits = [(t.delta_counts, psf_flux(diff, t.x, t.y)) for t in transients.itertuples()]
    pulls = np.array([(p[0] - d) / p[1] for d, p in fits if p is not None])
    assert len(pulls) >= 15
    assert float(np.max(np.abs(pulls))) < 4.5
    assert abs(float(np.mean(pulls))) < 0.6
    stars = truth[
        (truth["kind"] == "star")
        & ~truth["changed"]
        & (truth["science_counts"] > 1e4)
        & truth["x"].between(60, 964)
        & truth["y"].between(60, 964)
    ]
    chi2 = [stamp_chi2(diff, x, y) for x, y in stars[["x", "y"]].values]
    assert float(np.median([c for c in chi2 if c is not None])) < 1.15
