"""Alard–Lupton subtraction of simulated pairs, checked against the simulation's truth.

Tolerances follow from the noise: a perfect subtraction leaves ``difference / sqrt(variance)``
unit-normal on blank sky, chi^2 per pixel of 1 about static sources, and PSF-flux pulls of
transients and static stars that are unit-normal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.stats import mad_std
from diffim_sim import EDGE_PX, SHAPE, DiffimPair, blank_pixels, make_pair, psf_flux, stamp_chi2
from scipy.signal import fftconvolve

from diaflow.diffim import KernelConfig, SubtractConfig, Subtraction, subtract
from diaflow.diffim.psf import stamp_fwhm_px
from diaflow.image import MaskPlane, mask_bits

# Science sharper than the template (science convolved), and the usual way round.
DIRECTIONS = {"science": (0.7, 1.1), "template": (1.1, 0.7)}


@pytest.fixture(scope="module", params=sorted(DIRECTIONS))
def case(request: pytest.FixtureRequest) -> tuple[DiffimPair, Subtraction]:
    pair = make_pair(*DIRECTIONS[request.param])
    result = subtract(pair.science, pair.template)
    assert result.convolved == request.param
    return pair, result


def _inside(truth: pd.DataFrame, margin: float = EDGE_PX) -> pd.Series:
    return truth["x"].between(margin, SHAPE - margin) & truth["y"].between(margin, SHAPE - margin)


def _static(truth: pd.DataFrame, radius_px: float = 15.0) -> pd.Series:
    """Sources with no changed source within ``radius_px``."""
    moved = truth.loc[truth["changed"], ["x", "y"]].to_numpy()
    xy = truth[["x", "y"]].to_numpy()
    dist = np.hypot(*(xy[:, None, :] - moved[None, :, :]).transpose(2, 0, 1))
    return pd.Series((dist > radius_px).all(axis=1), index=truth.index)


def test_diffim_blank_sky_noise_matches_variance(case: tuple[DiffimPair, Subtraction]) -> None:
    pair, result = case
    diff = result.difference
    blank = blank_pixels(diff, pair.truth)
    assert blank.sum() > 100_000
    z = diff.image[blank] / np.sqrt(diff.variance[blank])
    assert 0.95 < float(np.std(z)) < 1.05
    assert abs(float(np.mean(z))) < 0.02
    assert 0.95 < result.quality.noise_ratio < 1.05


def test_diffim_decorrelated_noise_is_white(case: tuple[DiffimPair, Subtraction]) -> None:
    pair, result = case
    diff = result.difference
    blank = blank_pixels(diff, pair.truth)
    z = np.where(blank, diff.image / np.sqrt(diff.variance), 0.0)
    both_x = blank[:, 1:] & blank[:, :-1]
    both_y = blank[1:] & blank[:-1]
    corr_x = float((z[:, 1:] * z[:, :-1])[both_x].mean())
    corr_y = float((z[1:] * z[:-1])[both_y].mean())
    assert abs(corr_x) < 0.02
    assert abs(corr_y) < 0.02


def test_diffim_without_decorrelation_noise_is_correlated_but_variance_right() -> None:
    pair = make_pair(*DIRECTIONS["science"])
    result = subtract(pair.science, pair.template, config=SubtractConfig(decorrelate=False))
    diff = result.difference
    blank = blank_pixels(diff, pair.truth)
    z = np.where(blank, diff.image / np.sqrt(diff.variance), 0.0)
    both = blank[:, 1:] & blank[:, :-1]
    assert float((z[:, 1:] * z[:, :-1])[both].mean()) > 0.04
    assert 0.95 < float(np.std(z[blank])) < 1.05


def test_diffim_static_stars_leave_noise_only(case: tuple[DiffimPair, Subtraction]) -> None:
    pair, result = case
    truth = pair.truth
    stars = truth[
        (truth["kind"] == "star")
        & ~truth["changed"]
        & _static(truth)
        & _inside(truth)
        & (truth["science_counts"] > 1e4)
    ]
    chi2 = np.array(
        [c for c in (stamp_chi2(result.difference, x, y) for x, y in stars[["x", "y"]].values) if c]
    )
    assert len(chi2) >= 20
    assert 0.85 < float(np.median(chi2)) < 1.15
    assert float(np.max(chi2)) < 2.0
    fits = [psf_flux(result.difference, x, y) for x, y in stars[["x", "y"]].values]
    pulls = np.array([f / e for f, e in (p for p in fits if p is not None)])
    assert abs(float(np.median(pulls))) < 0.5
    assert float(mad_std(pulls)) < 1.5


def test_diffim_static_galaxies_leave_noise_only(case: tuple[DiffimPair, Subtraction]) -> None:
    pair, result = case
    truth = pair.truth
    galaxies = truth[
        (truth["kind"] == "galaxy")
        & _static(truth, 25.0)
        & _inside(truth)
        & (truth["science_counts"] > 5e3)
    ]
    chi2 = np.array(
        [
            c
            for c in (stamp_chi2(result.difference, x, y) for x, y in galaxies[["x", "y"]].values)
            if c
        ]
    )
    assert len(chi2) >= 10
    assert float(np.median(chi2)) < 1.2
    assert float(np.max(chi2)) < 2.0


def test_diffim_changed_sources_have_their_flux(case: tuple[DiffimPair, Subtraction]) -> None:
    """Transients (hostless and on galaxies) and variable stars: PSF flux = true change."""
    pair, result = case
    changed = pair.truth[pair.truth["changed"] & _inside(pair.truth)]
    fits = [(r.delta_counts, psf_flux(result.difference, r.x, r.y)) for r in changed.itertuples()]
    pulls = np.array([(f - d) / e for d, p in fits if p is not None for f, e in [p]])
    assert len(pulls) >= 18
    assert float(np.max(np.abs(pulls))) < 4.5
    assert abs(float(np.mean(pulls))) < 0.6
    assert 0.6 < float(np.std(pulls)) < 1.5


def test_diffim_kernel_matches_the_true_psfs(case: tuple[DiffimPair, Subtraction]) -> None:
    """K * PSF_narrow = kappa PSF_broad: closely at the centre, well enough at the corners."""
    pair, result = case
    narrow, broad = (
        (pair.template, pair.science)
        if result.convolved == "template"
        else (pair.science, pair.template)
    )
    solution = result.solution
    assert solution is not None

    def mismatch(x: float, y: float) -> float:
        kernel = solution.kernel(x, y)
        matched = fftconvolve(narrow.psf.kernel(x, y), kernel, mode="same")  # type: ignore[union-attr]
        target = kernel.sum() * broad.psf.kernel(x, y)  # type: ignore[union-attr]
        return float(np.linalg.norm(matched - target) / np.linalg.norm(target))

    assert mismatch(511.5, 511.5) < 0.03
    assert max(mismatch(x, y) for x in (100, 920) for y in (100, 920)) < 0.1
    # The kernel has the width that turns the narrow PSF into the broad one.
    fwhm_n = narrow.psf.fwhm_px(511.5, 511.5)  # type: ignore[union-attr]
    fwhm_b = broad.psf.fwhm_px(511.5, 511.5)  # type: ignore[union-attr]
    matched = fftconvolve(narrow.psf.kernel(511.5, 511.5), solution.kernel(511.5, 511.5))  # type: ignore[union-attr]
    assert stamp_fwhm_px(matched / matched.sum()) == pytest.approx(fwhm_b, rel=0.03)
    assert fwhm_b > 1.4 * fwhm_n


def test_diffim_photometric_scale_and_background(case: tuple[DiffimPair, Subtraction]) -> None:
    """The flux ratio is the template's scale; the background its offset (3 template counts).

    The background is fitted on the kernel stamps, where the simulator draws the deep
    template's stars out to larger radii than the science image's: that leaves a few tenths
    of a count, far below the 50-count pixel noise.
    """
    pair, result = case
    assert result.quality.flux_ratio == pytest.approx(pair.template_scale, rel=0.01)
    assert result.quality.background_offset == pytest.approx(3.0 / pair.template_scale, abs=0.5)
    kernel_sum = float(result.solution.kernel_sum(511.5, 511.5))  # type: ignore[union-attr]
    expected = pair.template_scale if result.convolved == "science" else 1 / pair.template_scale
    assert kernel_sum == pytest.approx(expected, rel=0.01)


def test_diffim_difference_psf_fits_transients(case: tuple[DiffimPair, Subtraction]) -> None:
    """Bright hostless transients look like the difference PSF, to the noise."""
    pair, result = case
    psf = result.difference.psf
    assert psf is not None
    stamp = psf.kernel(300.0, 700.0)
    assert stamp.shape[0] % 2 == 1
    assert stamp.sum() == pytest.approx(1.0)
    diff = result.difference
    truth = pair.truth
    transients = truth[truth["kind"] == "transient"]
    others = truth.loc[(truth["kind"] != "transient") & (truth["science_counts"] > 300), ["x", "y"]]
    dist = np.hypot(
        *(transients[["x", "y"]].to_numpy()[:, None] - others.to_numpy()[None]).transpose(2, 0, 1)
    )
    hostless = transients[dist.min(axis=1) > 10]
    chi2 = []
    for r in hostless.itertuples():
        fit = psf_flux(diff, r.x, r.y)
        if fit is None or r.delta_counts < 1.5e4:
            continue
        model = fit[0] * psf.image(r.x, r.y)
        half = 6
        c = model.shape[0] // 2
        ix, iy = round(r.x), round(r.y)
        win = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        resid = diff.image[win] - model[c - half : c + half + 1, c - half : c + half + 1]
        chi2.append(float(np.mean(resid**2 / diff.variance[win])))
    assert len(chi2) >= 5
    assert float(np.median(chi2)) < 1.25


def test_diffim_mask_planes(case: tuple[DiffimPair, Subtraction]) -> None:
    pair, result = case
    mask = result.difference.mask
    edge = mask_bits(MaskPlane.EDGE)
    assert (mask[0] & edge).all()
    assert (mask[:, -1] & edge).all()
    assert not (mask[SHAPE // 2, 100:-100] & edge).any()
    assert not (mask & mask_bits(MaskPlane.DETECTED, MaskPlane.DETECTED_NEGATIVE)).any()
    assert (result.difference.image[mask & edge != 0] == 0).all()
    # Bad columns of either input are in the difference's mask, grown around the template's.
    bad = mask_bits(MaskPlane.BAD)
    cols = np.flatnonzero((pair.template.mask & bad).any(axis=0))
    assert len(cols) > 0
    assert ((mask[:, cols] & bad) != 0)[100:-100].all()
    grown = result.solution.basis.half_width_px if result.convolved == "template" else 1  # type: ignore[union-attr]
    c = int(cols[0])
    if grown < c < SHAPE - grown - 1:
        assert ((mask[100:-100, c - grown] & bad) != 0).all()


def test_diffim_spatially_varying_psf_is_followed() -> None:
    """A PSF 30 % wider at the detector corners than at its centre: the corners subtract too."""
    pair = make_pair(0.7, 1.1, psf_variation=0.3, seed=9)
    assert pair.science.psf.fwhm_px(0, 0) > 1.25 * pair.science.psf.fwhm_px(511.5, 511.5)  # type: ignore[union-attr]
    truth = pair.truth
    stars = truth[
        (truth["kind"] == "star")
        & _static(truth)
        & _inside(truth)
        & (truth["science_counts"] > 1.5e5)
    ]
    corner = np.hypot(stars["x"] - 511.5, stars["y"] - 511.5) > 380

    def corner_chi2(order: int) -> float:
        cfg = SubtractConfig(kernel=KernelConfig(spatial_order=order))
        diff = subtract(pair.science, pair.template, config=cfg).difference
        values = [stamp_chi2(diff, x, y) for x, y in stars.loc[corner, ["x", "y"]].values]
        values = [v for v in values if v is not None]
        assert len(values) >= 5
        return float(np.mean(values))

    assert corner_chi2(2) < 1.3
    assert corner_chi2(0) > 1.4
