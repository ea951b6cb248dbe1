"""Calibration of the simulated pipeline survey against its truth (all twenty visits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.stats import mad_std
from calib_support import CalibratedVisit, calibrated_visits, cosmic_ray_pixels

from diaflow.calib import CalibConfig, calibrate
from diaflow.image import mask_bits, read_exposure, write_exposure
from diaflow.sim import true_wcs
from simdata import SimulatedSurvey


@pytest.fixture(scope="module")
def visits(pipeline_survey: SimulatedSurvey) -> tuple[CalibratedVisit, ...]:
    return calibrated_visits(pipeline_survey)


def test_calib_zero_point_matches_truth_within_its_error(
    visits: tuple[CalibratedVisit, ...],
) -> None:
    diffs, errs = [], []
    for v in visits:
        q = v.result.quality
        assert v.result.exposure.zero_point == q.zero_point
        diffs.append(q.zero_point - v.row["zero_point_true"])
        errs.append(q.zero_point_err)
        assert q.zero_point_n_stars >= 5
    diff, err = np.array(diffs), np.array(errs)
    assert np.all(np.abs(diff) < 0.01), diff
    assert np.all(np.abs(diff) < 3 * err), diff / err
    # The errors describe the scatter (they are, if anything, conservative), and the zero
    # points are unbiased to well within one error. The twenty visits share their calibration
    # stars, so the catalog's own noise is common to all of them: compare the mean with err.
    assert np.sqrt(np.mean((diff / err) ** 2)) < 1.3
    assert abs(np.mean(diff)) < np.median(err)


def test_calib_fitted_wcs_matches_the_true_wcs(
    visits: tuple[CalibratedVisit, ...], pipeline_survey: SimulatedSurvey
) -> None:
    for v in visits:
        wcs = v.result.exposure.wcs
        truth = true_wcs(v.row, pipeline_survey.config)
        ny, nx = v.raw.shape
        yy, xx = np.mgrid[0:ny:32, 0:nx:32]
        ra, dec = wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
        rt, dt = truth.all_pix2world(xx.ravel(), yy.ravel(), 0)
        sep_mas = np.hypot((ra - rt) * np.cos(np.deg2rad(dt)), dec - dt) * 3.6e6
        assert np.sqrt(np.mean(sep_mas**2)) < 20.0, v.row["visit"]
        # The header WCS was off by arcseconds: the fit did the work.
        rh, dh = v.raw.wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
        assert np.median(np.hypot((rh - rt) * np.cos(np.deg2rad(dt)), dh - dt)) * 3.6e6 > 200
        q = v.result.quality
        assert q.astrometry_n_matches >= 5
        assert 0 < q.astrometry_rms_mas < 30
        assert wcs.sip is not None  # the distortion was kept


def _flux_bias(model: np.ndarray, truth: np.ndarray) -> float:
    """PSF flux of a true point source measured with ``model``, over its true flux."""
    h = (model.shape[0] - truth.shape[0]) // 2
    if h > 0:
        model = model[h:-h, h:-h]
    elif h < 0:
        truth = truth[-h:h, -h:h]
    return float((truth * model).sum() / (model**2).sum())


def test_calib_psf_model_matches_the_true_psf(visits: tuple[CalibratedVisit, ...]) -> None:
    ratios, biases = [], []
    for v in visits:
        psf = v.result.exposure.psf
        ny, nx = v.raw.shape
        # Where the stars are (the model is not asked to extrapolate into the corners).
        for x, y in [
            (nx / 2, ny / 2),
            (0.2 * nx, 0.25 * ny),
            (0.8 * nx, 0.3 * ny),
            (0.5 * nx, 0.8 * ny),
        ]:
            ratios.append(psf.fwhm_px(x, y) / v.truth_psf.fwhm_px(x, y))
            biases.append(_flux_bias(psf.kernel(x, y), v.truth_psf.kernel(x, y)))
        q = v.result.quality
        assert q.psf_n_stars >= 8
        assert q.psf_fwhm_px == pytest.approx(v.truth_psf.fwhm_px(nx / 2, ny / 2), rel=0.03)
        assert q.psf_residual_frac < 0.15
        assert q.psf_chi2 < 1.5
    ratios_a, biases_a = np.array(ratios), np.array(biases)
    assert np.all(np.abs(ratios_a - 1) < 0.03), ratios_a
    assert abs(np.median(ratios_a) - 1) < 0.015
    # The model's shape gives unbiased PSF fluxes: the truth's stamp is cut at 31 pixels, which
    # loses ~0.3 % of its light, so a perfect model scores ~1.003.
    assert np.all(np.abs(biases_a - 1.003) < 0.02), biases_a
    assert abs(np.median(biases_a) - 1.003) < 0.004


def test_calib_background_matches_the_true_sky(visits: tuple[CalibratedVisit, ...]) -> None:
    for v in visits:
        noise = np.sqrt(v.row["sky_e_per_px"] + 81.0)
        diff = v.result.background - v.sky
        # Mean level to 2 % of the pixel noise, and the shape (gradient) to 5 %.
        assert abs(np.mean(diff)) < 0.02 * noise, v.row["visit"]
        assert np.std(diff) < 0.05 * noise, v.row["visit"]
        q = v.result.quality
        assert q.background_level == pytest.approx(v.row["sky_e_per_px"], abs=0.02 * noise)
        assert q.background_rms == pytest.approx(noise, rel=0.05)
        # The calibrated image is sky-subtracted: blank pixels scatter about zero.
        img = v.result.exposure.image
        blank = np.abs(img) < 5 * noise
        assert abs(np.median(img[blank])) < 0.05 * noise


def test_calib_cosmic_rays_masked_and_interpolated(visits: tuple[CalibratedVisit, ...]) -> None:
    found = total = 0
    for v in visits:
        mask = v.result.exposure.mask
        cr = (mask & mask_bits("CR")) != 0
        assert np.all((mask[cr] & mask_bits("INTRP")) != 0)
        near = cr.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= np.roll(np.roll(cr, dy, axis=0), dx, axis=1)
        for track in cosmic_ray_pixels(v.artifacts, v.raw.shape):
            total += 1
            found += near[track[:, 0], track[:, 1]].mean() >= 0.9
        # Interpolation removed the charge: no flagged pixel stands far above the noise.
        img, var = v.result.exposure.image, v.result.exposure.variance
        assert np.all(img[cr] < 10 * np.sqrt(var[cr]) + 0.2 * np.abs(img).max())
        assert v.result.quality.n_cosmic_rays >= 1
    assert total >= 40
    assert found >= 0.95 * total, (found, total)


def test_calib_bright_star_cores_are_not_flagged(visits: tuple[CalibratedVisit, ...]) -> None:
    n_cores = n_flagged = 0
    for v in visits:
        ny, nx = v.raw.shape
        full_well = v.raw.info.saturation_e
        s = v.static
        # Bright, unsaturated stars (peak below half the full well) on the detector.
        peak = s["counts"] * 0.04
        bright = s[
            (s["kind"] == "star")
            & (s["counts"] > 2e4)
            & (peak < 0.5 * full_well)
            & s["x"].between(3, nx - 4)
            & s["y"].between(3, ny - 4)
        ]
        cr = (v.result.exposure.mask & mask_bits("CR")) != 0
        for x, y in zip(bright["x"], bright["y"], strict=True):
            ix, iy = round(x), round(y)
            n_cores += 1
            n_flagged += bool(cr[iy - 2 : iy + 3, ix - 2 : ix + 3].any())
    assert n_cores >= 200
    assert n_flagged < 0.01 * n_cores, (n_flagged, n_cores)


def test_calib_bad_columns_and_saturation_keep_their_bits(
    visits: tuple[CalibratedVisit, ...],
) -> None:
    for v in visits[:4]:
        raw, cal = v.raw.mask, v.result.exposure.mask
        for bit in ("BAD", "SAT"):
            assert np.array_equal((raw & mask_bits(bit)) != 0, (cal & mask_bits(bit)) != 0)
        bad = (raw & mask_bits("BAD")) != 0
        # Bad columns are interpolated over (INTRP), so their values look like their neighbours.
        assert np.all((cal[bad] & mask_bits("INTRP")) != 0)
        noise = np.sqrt(v.row["sky_e_per_px"])
        img = v.result.exposure.image
        assert np.median(np.abs(img[bad])) < 3 * noise
        assert np.all(np.isfinite(v.result.exposure.variance))
        assert np.all(v.result.exposure.variance > 0)
        # Saturated pixels are not cosmic rays.
        sat = (cal & mask_bits("SAT")) != 0
        assert not np.any((cal[sat] & mask_bits("CR")) != 0)


def test_calib_stars_table_and_header_round_trip(
    visits: tuple[CalibratedVisit, ...], tmp_path: Path
) -> None:
    v = visits[0]
    stars = v.result.stars
    for col in (
        "x",
        "y",
        "ra",
        "dec",
        "psf_used",
        "astrometry_used",
        "photometry_used",
        "ref_index",
    ):
        assert col in stars
    used = stars[stars["photometry_used"]]
    assert (used["ref_index"] >= 0).all()
    assert used["psf_flux"].notna().all()
    assert stars["psf_used"].sum() == v.result.quality.psf_n_stars
    # The calibrated exposure writes and reads back with its PSF, zero point and WCS.
    path = write_exposure(v.result.exposure, tmp_path / "calexp.fits")
    back = read_exposure(path)
    assert back.zero_point == pytest.approx(v.result.quality.zero_point)
    assert back.psf is not None
    np.testing.assert_allclose(back.psf.kernel(100, 200), v.result.exposure.psf.kernel(100, 200))
    assert back.wcs.wcs.crval == pytest.approx(v.result.exposure.wcs.wcs.crval)
    assert "ASTRMS" in back.extra


def test_calib_input_exposure_is_not_modified(pipeline_survey: SimulatedSurvey) -> None:
    import pandas as pd

    row = pipeline_survey.visits.iloc[3]
    raw = read_exposure(pipeline_survey.out_dir / row["path"])
    before = (raw.image.copy(), raw.mask.copy(), raw.variance.copy(), raw.wcs.wcs.crval.copy())
    refcat = pd.read_parquet(pipeline_survey.out_dir / "refcat.parquet")
    result = calibrate(raw, refcat, config=CalibConfig())
    assert np.array_equal(raw.image, before[0])
    assert np.array_equal(raw.mask, before[1])
    assert np.array_equal(raw.variance, before[2])
    assert np.array_equal(raw.wcs.wcs.crval, before[3])
    assert raw.zero_point is None
    assert raw.psf is None
    assert result.exposure.info == raw.info
    # Noise of blank calibrated pixels agrees with the variance plane.
    img, var = result.exposure.image, result.exposure.variance
    blank = (result.exposure.mask == 0) & (np.abs(img) < 4 * np.sqrt(var))
    assert 0.9 < mad_std(img[blank] / np.sqrt(var[blank])) < 1.1
