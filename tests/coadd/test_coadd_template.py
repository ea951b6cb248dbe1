"""Templates against simulation truth: outliers gone, stars kept, noise, PSF, I/O and errors."""

from __future__ import annotations

import dataclasses

import coadd_truth as ct
import numpy as np
import pandas as pd
import pytest
import sep
from astropy.stats import mad_std
from scipy import ndimage
from scipy.optimize import least_squares

from diaflow.coadd import (
    Template,
    TemplateConfig,
    build_template,
    coadd_matched,
    make_patch,
    read_template,
    select_visits,
    write_template,
)
from diaflow.errors import TemplateError
from diaflow.image import mask_bits
from simdata import SimulatedSurvey


@pytest.fixture(scope="module", params=[False, True], ids=["direct", "psf_matched"])
def template(pipeline_survey: SimulatedSurvey, request: pytest.FixtureRequest) -> Template:
    config = TemplateConfig(psf_matched=request.param)
    return coadd_matched(ct.matched(pipeline_survey), config=config, keep_rejected=True)


def _averaged(matched, template):  # type: ignore[no-untyped-def]
    """The inputs that the template averaged: PSF-matched, or only warped."""
    return matched.exposures if template.exposure.psf is matched.psf else matched.warped


@pytest.fixture(scope="module")
def static(pipeline_survey: SimulatedSurvey, template: Template) -> pd.DataFrame:
    weights = np.array([i.weight for i in template.inputs])
    return ct.static_truth(pipeline_survey, template.exposure.wcs, list(template.visits), weights)


@pytest.fixture(scope="module")
def outliers(pipeline_survey: SimulatedSurvey, template: Template) -> pd.DataFrame:
    out = ct.outliers_truth(pipeline_survey, template.exposure.wcs, list(template.visits))
    ny, nx = template.exposure.shape
    margin = 12
    inside = (out["x"] > margin) & (out["x"] < nx - 1 - margin)
    inside &= (out["y"] > margin) & (out["y"] < ny - 1 - margin)
    out = out[inside].reset_index(drop=True)
    # Where at most one input lacks data in the aperture (edges of visits, bad columns): the
    # coadd mixes little partial coverage there.
    bad = mask_bits("NO_DATA", "BAD", "SAT")
    n_data = sum(
        (np.isfinite(e.image) & ((e.mask & bad) == 0)).astype(int)
        for e in ct.matched(pipeline_survey).exposures
    )
    covered = ndimage.minimum_filter(n_data, size=15) >= len(template.inputs) - 1
    iy, ix = np.round(out["y"]).astype(int), np.round(out["x"]).astype(int)
    return out[covered[iy, ix]].reset_index(drop=True)


def _aperture(image: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    flux, _, _ = sep.sum_circle(
        np.ascontiguousarray(np.nan_to_num(image), dtype=np.float64),
        np.asarray(x, float),
        np.asarray(y, float),
        radius,
    )
    return np.asarray(flux)


def _blank_positions(template: Template, masked: np.ndarray, n: int = 3000) -> tuple:
    ny, nx = template.exposure.shape
    rng = np.random.default_rng(0)
    x, y = rng.uniform(20, nx - 21, n), rng.uniform(20, ny - 21, n)
    iy, ix = y.astype(int), x.astype(int)
    full = template.n_inputs[iy, ix] >= len(template.inputs) - 2
    keep = ~masked[iy, ix] & full
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def blank_mask(template: Template, static: pd.DataFrame, outliers: pd.DataFrame) -> np.ndarray:
    fwhm = template.exposure.psf.fwhm_px(0, 0)
    return ct.source_mask(static, template.exposure.shape, fwhm, outliers)


def _leftover(template, matched, outliers, blank_mask, radius, noise_of=None):
    """Template aperture flux at each outlier minus what the template should hold there, in
    units of the template's aperture noise (measured at blank positions).

    What it should hold is the weighted mean (template weights) of the inputs that have no
    outlier of their own near that position: the static sky.
    """
    x, y = outliers["x"].to_numpy(), outliers["y"].to_numpy()
    scales = np.array([i.flux_scale for i in template.inputs])
    weights = np.array([i.weight for i in template.inputs])
    per_input = np.array(
        [
            _aperture(e.image * s, x, y, radius)
            for e, s in zip(_averaged(matched, template), scales, strict=True)
        ]
    )
    clean = np.array(
        [
            _aperture((~np.isfinite(e.image)).astype(float), x, y, radius) == 0
            for e in _averaged(matched, template)
        ]
    )
    visits = list(template.visits)
    near = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :]) < radius + 3 * radius
    for k in range(len(outliers)):
        for v in outliers["visit"][near[k]]:
            clean[visits.index(v), k] = False
    w = weights[:, None] * clean
    expected = (w * per_input).sum(axis=0) / w.sum(axis=0)
    got = _aperture(template.exposure.image, x, y, radius)
    bx, by = _blank_positions(template, blank_mask)
    noisy = (noise_of or template).exposure.image
    sigma = float(np.std(_aperture(noisy, bx, by, radius)))
    return (got - expected) / sigma, clean.sum(axis=0)


def test_single_epoch_outliers_leave_nothing_in_the_template(
    pipeline_survey: SimulatedSurvey,
    template: Template,
    outliers: pd.DataFrame,
    static: pd.DataFrame,
    blank_mask: np.ndarray,
) -> None:
    matched = ct.matched(pipeline_survey)
    counts = outliers["kind"].value_counts()
    for kind, least in (("cosmic_ray", 10), ("injected", 150), ("satellite", 10), ("asteroid", 1)):
        assert counts.get(kind, 0) >= least, kind
    radius = matched.fwhm_px
    snr, n_clean = _leftover(template, matched, outliers, blank_mask, radius)
    assert np.all(n_clean >= 3)
    within = np.abs(snr) <= 3
    # Next to a variable star the sky is not static: the template rightly keeps the star's light
    # of the outlier's own epoch outside the outlier's mask, which the expectation (the other
    # epochs) lacks. Those few places are held to a looser standard.
    var = static[(static["var_type"] != "none") & (static["flux_njy"] > 500)]
    d = np.hypot(
        outliers["x"].to_numpy()[:, None] - var["x"].to_numpy()[None, :],
        outliers["y"].to_numpy()[:, None] - var["y"].to_numpy()[None, :],
    )
    near_variable = (d < radius + 3 * radius).any(axis=1)
    assert within[~near_variable].mean() >= 0.99, outliers.assign(snr=snr)[~within]
    assert within[near_variable].mean() >= 0.8
    # The test has teeth: a plain weighted mean of the same inputs keeps most of them.
    scales = np.array([i.flux_scale for i in template.inputs])
    weights = np.array([i.weight for i in template.inputs])
    stack = np.stack(
        [
            np.nan_to_num(e.image * s)
            for e, s in zip(_averaged(matched, template), scales, strict=True)
        ]
    )
    have = np.stack([np.isfinite(e.image) for e in _averaged(matched, template)])
    w = weights[:, None, None] * have
    plain = dataclasses.replace(
        template,
        exposure=dataclasses.replace(
            template.exposure, image=(stack * w).sum(0) / np.maximum(w.sum(0), 1e-12)
        ),
    )
    naive, _ = _leftover(plain, matched, outliers, blank_mask, radius, noise_of=template)
    assert (np.abs(naive) > 3).mean() > 0.3


def test_template_noise_matches_its_variance_plane(
    template: Template, blank_mask: np.ndarray
) -> None:
    e = template.exposure
    ok = ~blank_mask & np.isfinite(e.image) & (template.n_inputs >= len(template.inputs) - 2)
    assert ok.mean() > 0.1
    pull = e.image[ok] / np.sqrt(e.variance[ok])
    assert 0.95 < np.std(pull) < 1.05
    assert abs(np.mean(pull)) < 0.05


def _blank_sigma(image, ok):
    return float(np.std(image[ok]))


def test_template_noise_follows_the_number_of_visits(
    pipeline_survey: SimulatedSurvey, template: Template, blank_mask: np.ndarray
) -> None:
    matched = ct.matched(pipeline_survey)
    ok = ~blank_mask & (template.n_inputs == len(template.inputs))
    few = dataclasses.replace(
        matched,
        exposures=matched.exposures[:3],
        input_fwhm_px=matched.input_fwhm_px[:3],
        warped=matched.warped[:3],
    )
    config = TemplateConfig(psf_matched=template.exposure.psf is matched.psf)
    result = {}
    for name, m, t in (("few", few, coadd_matched(few, config=config)), ("all", matched, template)):
        ok_t = ok & np.isfinite(t.exposure.image)
        scales = np.array([i.flux_scale for i in t.inputs])
        weights = np.array([i.weight for i in t.inputs])
        sig = np.array(
            [_blank_sigma(e.image * s, ok_t) for e, s in zip(_averaged(m, t), scales, strict=True)]
        )
        # Independent inputs, weights w: sigma = sqrt(sum w^2 sigma_i^2) / sum w; for N inputs
        # of equal depth, sigma_1 / sqrt(N).
        predicted = np.sqrt(np.sum(weights**2 * sig**2)) / weights.sum()
        measured = _blank_sigma(t.exposure.image, ok_t)
        assert measured == pytest.approx(predicted, rel=0.1), name
        result[name] = (measured, np.sqrt(np.mean(sig**2)), len(t.inputs))
    # Equal-depth equivalent: the noise ratio follows sqrt(N) to the input depths' spread.
    (m3, s3, n3), (m10, s10, n10) = result["few"], result["all"]
    assert (m3 / s3) / (m10 / s10) == pytest.approx(np.sqrt(n10 / n3), rel=0.15)


def _clean_stars(static, template, outliers, radius, min_flux, var_types=("none",)):
    """Stars away from outliers, masks and image edges, with the light that their neighbours
    put in an aperture of ``radius`` (``blend``, nJy); stars whose neighbours add more than 2 %
    of their own flux are left out."""
    e = template.exposure
    ny, nx = e.shape
    fwhm = e.psf.fwhm_px(0, 0)
    stars = static[(static["kind"] == "star") & static["var_type"].isin(var_types)]
    stars = stars[
        (stars["x"] > 30)
        & (stars["x"] < nx - 31)
        & (stars["y"] > 30)
        & (stars["y"] < ny - 31)
        & (stars["flux_njy"] > min_flux)
    ]
    keep, blend = [], []
    for idx, s in stars.iterrows():
        if (np.hypot(outliers["x"] - s["x"], outliers["y"] - s["y"]) < radius + 2 * fwhm).any():
            continue
        iy, ix = round(s["y"]), round(s["x"])
        cut = (slice(iy - 15, iy + 16), slice(ix - 15, ix + 16))
        if (template.n_inputs[cut] < len(template.inputs) - 3).any() or (e.mask[cut] != 0).any():
            continue
        light = ct.blended_light(static, s["x"], s["y"], radius, fwhm)
        if light > 0.02 * s["flux_njy"]:
            continue
        keep.append(idx)
        blend.append(light)
    return stars.loc[keep].assign(blend=blend)


def test_static_stars_keep_their_fluxes(
    template: Template, static: pd.DataFrame, outliers: pd.DataFrame, blank_mask: np.ndarray
) -> None:
    e = template.exposure
    cx, cy = (e.shape[1] - 1) / 2, (e.shape[0] - 1) / 2
    radius = e.psf.fwhm_px(cx, cy)
    # Noise: blank apertures (the template's noise is correlated) scaled by the variance plane,
    # which also holds each star's own photon noise.
    bx, by = _blank_positions(template, blank_mask)
    blank = _aperture(e.image, bx, by, radius)
    corr = np.var(blank) / np.median(_aperture(e.variance, bx, by, radius))
    stars = _clean_stars(static, template, outliers, radius, 5 * np.std(blank))
    assert len(stars) >= 15
    # The PSF model says how much of a star's light falls in the aperture.
    stamp = e.psf.kernel(cx, cy)
    h = stamp.shape[0] // 2
    x, y = stars["x"].to_numpy(), stars["y"].to_numpy()
    # The PSF at each star (a direct coadd's changes where the inputs covering it change).
    apcorr = np.array(
        [
            _aperture(e.psf.kernel(sx, sy), np.array([h]), np.array([h]), radius)[0]
            for sx, sy in zip(x, y, strict=True)
        ]
    )
    got = _aperture(e.image, x, y, radius) - stars["blend"].to_numpy()
    expected = stars["flux_njy"].to_numpy() * apcorr
    # Noise, plus 0.5 % for the PSF model and the neighbours' light.
    sigma = np.sqrt(corr * _aperture(e.variance, x, y, radius) + (0.005 * expected) ** 2)
    pull = (got - expected) / sigma
    # The PSF models (of the calibrated inputs) give the aperture fraction to a few 0.1 %, which
    # is 0.3-0.4 sigma for the sharper, less noisy apertures of a direct coadd.
    assert abs(np.median(pull)) < 0.4
    assert 0.5 < mad_std(pull) < 1.4
    bright = expected > 100 * np.std(blank)
    assert bright.sum() >= 5
    assert abs(np.median(got[bright] / expected[bright] - 1)) < 0.005


def _fit_moffat(cut):
    h = cut.shape[0] // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]

    def model(p):
        amp, x0, y0, fwhm, beta = p
        alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
        return amp * (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** -beta

    p0 = [cut.max(), 0.0, 0.0, 5.0, 3.0]
    fit = least_squares(
        lambda p: (model(p) - cut).ravel(), p0, bounds=([0, -2, -2, 1, 1.2], [np.inf, 2, 2, 30, 20])
    )
    return fit.x[3]


def test_template_psf_matches_the_common_psf(
    template: Template, static: pd.DataFrame, outliers: pd.DataFrame
) -> None:
    e = template.exposure
    cx, cy = (e.shape[1] - 1) / 2, (e.shape[0] - 1) / 2
    fwhm = e.psf.fwhm_px(cx, cy)
    # Every source of a template has its PSF, variable or not: the fake variables count too.
    stars = _clean_stars(static, template, outliers, 15.0, 5000.0, ("none", "fake"))
    stars = stars[stars["blend"] < 0.005 * stars["flux_njy"]]
    assert len(stars) >= 8
    want = _fit_moffat(e.psf.kernel(cx, cy)[5:-5, 5:-5])
    assert want == pytest.approx(fwhm, rel=0.03)
    ratios = []
    for _, s in stars.iterrows():
        ix, iy = round(s["x"]), round(s["y"])
        cut = np.nan_to_num(e.image[iy - 15 : iy + 16, ix - 15 : ix + 16]).astype(np.float64)
        ratios.append(_fit_moffat(cut) / want)
    assert np.median(ratios) == pytest.approx(1.0, abs=0.03)
    assert np.max(np.abs(np.array(ratios) - 1)) < 0.06


def test_variable_stars_are_kept(
    pipeline_survey: SimulatedSurvey, template: Template, static: pd.DataFrame
) -> None:
    """Variable stars stay in the template, at the mean flux of the inputs kept at each pixel.

    An input is dropped at a variable star only where the star is transient (a state seen in
    few inputs) or where another outlier crosses it, so most inputs remain; the expected image
    is the true flux of each input averaged with the template's weights over the inputs used at
    each pixel, times the template PSF.
    """
    e = template.exposure
    ny, nx = e.shape
    fwhm = e.psf.fwhm_px(0, 0)
    radius = 2.0 * fwhm
    var = static[(static["var_type"] != "none") & (static["kind"] == "star")]
    var = var[(var["x"] > 30) & (var["x"] < nx - 31) & (var["y"] > 30) & (var["y"] < ny - 31)]
    others = static.set_index("id")
    blend = np.array(
        [
            ct.blended_light(others.drop(i).reset_index(), sx, sy, radius, fwhm) / f
            for i, sx, sy, f in zip(var["id"], var["x"], var["y"], var["flux_njy"], strict=True)
        ]
    )
    var = var[blend < 0.02]
    assert len(var) >= 20
    matched = ct.matched(pipeline_survey)
    bad = mask_bits("NO_DATA", "BAD", "SAT")
    has_data = np.stack(
        [np.isfinite(x.image) & ((x.mask & bad) == 0) for x in _averaged(matched, template)]
    )
    used = has_data & ~template.rejected
    weights = np.array([i.weight for i in template.inputs])
    fluxes = ct.epoch_fluxes(pipeline_survey, var, list(template.visits))  # (n_inputs, n_stars)
    kept, frac = [], []
    for k, (_, s) in enumerate(var.iterrows()):
        ix, iy = round(s["x"]), round(s["y"])
        stamp = e.psf.image(s["x"], s["y"])
        h = stamp.shape[0] // 2
        cut = (slice(iy - h, iy + h + 1), slice(ix - h, ix + h + 1))
        w = weights[:, None, None] * used[(slice(None), *cut)]
        mean_flux = (w * fluxes[:, k, None, None]).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-12)
        want = _aperture(stamp * mean_flux, [h + s["x"] - ix], [h + s["y"] - iy], radius)[0]
        got = _aperture(e.image, [s["x"]], [s["y"]], radius)[0]
        frac.append(got / want - 1)
        kept.append(used[:, iy, ix].sum() / max(has_data[:, iy, ix].sum(), 1))
    frac = np.array(frac)
    assert np.min(kept) >= 0.6
    assert np.median(kept) == 1.0
    assert abs(np.median(frac)) < 0.01
    # A direct coadd's star is the mixture of the PSFs of the inputs kept there, which differs
    # a little from the PSF model's mixture of all the inputs where some were rejected; and a
    # satellite's band (masked along its whole line) can cut through part of a star.
    assert np.mean(np.abs(frac) < 0.03) >= (0.8 if template.exposure.psf is matched.psf else 0.75)


def test_template_round_trips_through_fits(template: Template, tmp_path) -> None:
    path = write_template(template, tmp_path / "template.fits")
    with pytest.raises(FileExistsError):
        write_template(template, path)
    back = read_template(path)
    assert back.version == template.version
    assert back.name == template.name
    assert back.inputs == template.inputs
    assert back.visits == template.visits
    np.testing.assert_array_equal(back.n_inputs, template.n_inputs)
    np.testing.assert_array_equal(back.exposure.image, template.exposure.image)
    np.testing.assert_array_equal(back.exposure.variance, template.exposure.variance)
    np.testing.assert_array_equal(back.exposure.mask, template.exposure.mask)
    np.testing.assert_allclose(back.exposure.psf.kernel(0, 0), template.exposure.psf.kernel(0, 0))
    assert back.exposure.zero_point == pytest.approx(31.4)
    xy = np.array([[0.0, 0.0], [949.0, 0.0], [300.5, 700.25]])
    np.testing.assert_allclose(
        back.exposure.wcs.all_pix2world(xy, 0),
        template.exposure.wcs.all_pix2world(xy, 0),
        rtol=0,
        atol=1e-10,
    )


def test_template_is_in_njy_with_inputs_and_version(template: Template) -> None:
    e = template.exposure
    assert e.zero_point == pytest.approx(31.4)
    assert len(template.inputs) == ct.TEMPLATE_VISITS
    assert sum(i.weight for i in template.inputs) == pytest.approx(1.0)
    assert all(0 <= i.rejected_fraction < 0.05 for i in template.inputs)
    assert template.version.startswith("diaflow-")
    no_data = (e.mask & mask_bits("NO_DATA")) != 0
    np.testing.assert_array_equal(no_data, template.n_inputs == 0)
    assert np.isnan(e.image[no_data]).all()
    assert np.isfinite(e.image[~no_data]).all()
    assert (template.n_inputs == len(template.inputs)).mean() > 0.6


def test_build_template_selects_the_best_past_seeing(pipeline_survey: SimulatedSurvey) -> None:
    visits = pipeline_survey.visits
    exps = ct.calexps(pipeline_survey)
    patch = make_patch(
        ra_deg=float(visits["true_ra_deg"].mean()) + 0.01,
        dec_deg=float(visits["true_dec_deg"].mean()),
        size_arcsec=40.0,
        pixel_scale_arcsec=0.2,
        name="small",
    )
    cutoff = float(visits["mjd_tai"].iloc[12])
    config = TemplateConfig(min_visits=3, max_visits=3)
    tmpl = build_template(
        exps,
        target_wcs=patch.wcs,
        target_shape=patch.shape,
        config=config,
        before_mjd=cutoff,
        name=patch.name,
    )
    past = visits[visits["mjd_tai"] < cutoff]
    best = past.sort_values("seeing_fwhm_arcsec")["visit"].iloc[:3]
    assert set(tmpl.visits) == set(best)
    assert tmpl.name == "small"
    assert tmpl.exposure.shape == patch.shape
    again = build_template(
        exps, target_wcs=patch.wcs, target_shape=patch.shape, config=config, before_mjd=cutoff
    )
    assert again.version == tmpl.version
    np.testing.assert_array_equal(again.exposure.image, tmpl.exposure.image)


def test_template_errors_are_clear(pipeline_survey: SimulatedSurvey) -> None:
    visits = pipeline_survey.visits
    exps = ct.calexps(pipeline_survey)
    patch = ct.truth_patch(pipeline_survey)
    with pytest.raises(TemplateError, match="need min_visits=3") as err:
        build_template(
            exps,
            target_wcs=patch.wcs,
            target_shape=patch.shape,
            before_mjd=float(visits["mjd_tai"].iloc[2]),
        )
    assert err.value.reason == "too_few_visits"
    assert err.value.details["n_usable"] == 2
    far = make_patch(
        ra_deg=float(visits["true_ra_deg"].mean()) + 1.0,
        dec_deg=float(visits["true_dec_deg"].mean()),
        size_arcsec=60.0,
        pixel_scale_arcsec=0.2,
    )
    with pytest.raises(TemplateError, match="covers") as err:
        build_template(exps, target_wcs=far.wcs, target_shape=far.shape)
    assert err.value.reason == "no_overlap"
    with pytest.raises(TemplateError, match="no exposures") as err:
        build_template([], target_wcs=patch.wcs, target_shape=patch.shape)
    assert err.value.reason == "no_inputs"
    other = dataclasses.replace(exps[0], info=dataclasses.replace(exps[0].info, band="i"))
    with pytest.raises(TemplateError, match="pass band=") as err:
        select_visits([*exps[:4], other], target_wcs=patch.wcs, target_shape=patch.shape)
    assert err.value.reason == "mixed_bands"
    with pytest.raises(TemplateError, match="need min_visits") as err:
        select_visits([*exps[:4], other], target_wcs=patch.wcs, target_shape=patch.shape, band="i")
    matched = ct.matched(pipeline_survey)
    two = dataclasses.replace(
        matched, exposures=matched.exposures[:2], input_fwhm_px=matched.input_fwhm_px[:2]
    )
    with pytest.raises(TemplateError, match="2 inputs, need min_visits=3"):
        coadd_matched(two)
