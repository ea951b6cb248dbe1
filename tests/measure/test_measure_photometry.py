"""PSF and aperture photometry, centroids, sky positions, forced photometry, against truth."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.stats import mad_std
from measure_support import MeasuredField
from measure_support import point_field as _point_field
from measure_support import varying_psf as _varying_psf

from diaflow.errors import BadInputError
from diaflow.image import GaussianPsf, PixelPsf
from diaflow.measure import (
    DIA_FORCED_SOURCE_COLUMNS,
    detect,
    forced_photometry,
    measure_dia_sources,
)
from diaflow.measure.fakes import add_point, blank_exposure, flux_for_snr


@pytest.fixture
def point_field() -> MeasuredField:
    return _point_field()


@pytest.fixture
def varying_psf() -> PixelPsf:
    return _varying_psf()


def test_measure_psf_fluxes_unbiased_with_honest_errors(point_field: MeasuredField) -> None:
    truth, got = point_field.matched()
    true_njy = truth["flux_njy"].to_numpy()
    frac = (got["psfFlux"].to_numpy() - true_njy) / np.abs(true_njy)
    pull = (got["psfFlux"].to_numpy() - true_njy) / got["psfFluxErr"].to_numpy()
    assert abs(np.median(frac)) < 0.02
    assert abs(np.median(pull)) < 0.15
    assert 0.9 < float(np.std(pull)) < 1.1
    assert 0.9 < float(mad_std(pull)) < 1.1
    # The detection S/N is the PSF flux over its error.
    ratio = got["snr"] / (got["psfFlux"].abs() / got["psfFluxErr"])
    assert abs(float(np.median(ratio)) - 1.0) < 0.05


def test_measure_centroids_consistent_with_their_errors(point_field: MeasuredField) -> None:
    truth, got = point_field.matched()
    assert not got["centroid_flag"].any()
    for axis in ("x", "y"):
        pull = (got[axis].to_numpy() - truth[axis].to_numpy()) / got[f"{axis}Err"].to_numpy()
        assert abs(float(np.median(pull))) < 0.15
        assert 0.9 < float(np.std(pull)) < 1.15


def test_measure_sky_positions_and_errors_follow_the_wcs(point_field: MeasuredField) -> None:
    truth, got = point_field.matched()
    wcs = point_field.exposure.wcs
    ra, dec = wcs.all_pix2world(truth["x"], truth["y"], 0)  # type: ignore[union-attr]
    cosd = np.cos(np.deg2rad(dec))
    pull_ra = (got["ra"] - ra) * cosd / got["raErr"]
    pull_dec = (got["dec"] - dec) / got["decErr"]
    assert 0.9 < float(np.std(pull_ra)) < 1.15
    assert 0.9 < float(np.std(pull_dec)) < 1.15
    # Position errors in arcsec are the pixel errors times the 0.2 arcsec pixel.
    err_arcsec = 3600 * np.hypot(got["raErr"], got["decErr"])
    err_px = np.hypot(got["xErr"], got["yErr"])
    assert np.allclose(err_arcsec / err_px, 0.2, rtol=1e-3)
    assert np.isfinite(got["ra_dec_Cov"]).all()


def test_measure_aperture_flux_moments_and_fit_quality(point_field: MeasuredField) -> None:
    truth, got = point_field.matched()
    psf = point_field.exposure.psf
    kernel = psf.kernel(1024, 1024)  # type: ignore[union-attr]
    h = kernel.shape[0] // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    enclosed = float(kernel[np.hypot(xx, yy) <= 12.0].sum())
    expected = truth["flux_njy"].to_numpy() * enclosed
    pull = (got["apFlux"].to_numpy() - expected) / got["apFluxErr"].to_numpy()
    assert abs(float(np.median(pull))) < 0.2
    assert 0.85 < float(mad_std(pull)) < 1.15
    assert not got["apFlux_flag"].any()
    # Point sources have the PSF's moments, and the PSF fits them (chi2 per pixel ~ 1).
    bright = got["snr"] > 30
    size = (got["ixx"] + got["iyy"]) / (got["ixxPSF"] + got["iyyPSF"])
    assert abs(float(np.median(size[bright])) - 1.0) < 0.05
    assert 0.9 < float(np.median(got["psfChi2"] / got["psfNdata"])) < 1.1
    assert not got["shape_flag"][bright].any()
    assert (got["trailLength"].isna().mean()) > 0.97
    assert got["isDipole"].mean() < 0.01


def test_measure_science_and_template_fluxes() -> None:
    psf = GaussianPsf(1.8, size=25)
    rng = np.random.default_rng(21)
    shape = (384, 384)
    sci = blank_exposure(shape, psf=psf, noise_sigma=6.0)
    tmpl = blank_exposure(shape, psf=psf, noise_sigma=3.0)
    diff = blank_exposure(shape, psf=psf, noise_sigma=1.0)
    s_img, t_img = np.zeros(shape), np.zeros(shape)
    xy = [
        (40 + 60 * (k % 6) + rng.uniform(), 40 + 60 * (k // 6) + rng.uniform()) for k in range(30)
    ]
    host = np.array([flux_for_snr(psf, 0, 0, rng.uniform(20, 200), 6.0) for _ in xy])
    change = np.array([flux_for_snr(psf, 0, 0, 30.0, 6.0) for _ in xy])
    for (x, y), h, c in zip(xy, host, change, strict=True):
        add_point(t_img, psf, x, y, h)
        add_point(s_img, psf, x, y, h + c)
    s_var, t_var = 36.0 + s_img, 9.0 + t_img
    sci.image = (s_img + rng.standard_normal(shape) * np.sqrt(s_var)).astype(np.float32)
    tmpl.image = (t_img + rng.standard_normal(shape) * np.sqrt(t_var)).astype(np.float32)
    sci.variance, tmpl.variance = s_var.astype(np.float32), t_var.astype(np.float32)
    diff.image = sci.image - tmpl.image
    diff.variance = (s_var + t_var).astype(np.float32)
    table = measure_dia_sources(diff, detect(diff), science=sci, template=tmpl)
    assert len(table) == len(xy)
    txy = np.array(xy)
    dist = np.hypot(
        table["x"].to_numpy()[:, None] - txy[:, 0], table["y"].to_numpy()[:, None] - txy[:, 1]
    )
    order = np.argmin(dist, axis=1)
    to_njy = float(diff.counts_to_njy(1.0))
    # Forced at the DiaSource centroid, which is off the true position by its error (0.1-0.4
    # px here): fluxes are low by a second-order amount, about 1% at 0.4 px.
    for col, true in (("scienceFlux", host + change), ("templateFlux", host)):
        frac = table[col] / (true[order] * to_njy) - 1
        assert abs(float(np.median(frac))) < 0.015
        assert float(np.percentile(np.abs(frac), 90)) < 0.05
        assert (table[f"{col}Err"] > 0).all()
    assert not table["forced_PsfFlux_flag"].any()


def test_measure_forced_photometry_pulls_are_unit_normal(point_field: MeasuredField) -> None:
    exp = point_field.exposure
    truth = point_field.truth
    rng = np.random.default_rng(22)
    # Truth positions, and empty sky far from every source.
    ex, ey = rng.uniform(30, 2018, 4000), rng.uniform(30, 2018, 4000)
    far = np.hypot(ex[:, None] - truth["x"].to_numpy(), ey[:, None] - truth["y"].to_numpy())
    ex, ey = ex[far.min(axis=1) > 25][:300], ey[far.min(axis=1) > 25][:300]
    x = np.concatenate([truth["x"], ex])
    y = np.concatenate([truth["y"], ey])
    flux = np.concatenate([truth["flux_njy"], np.zeros(ex.size)])
    ra, dec = exp.wcs.all_pix2world(x, y, 0)  # type: ignore[union-attr]
    ids = np.arange(x.size) + 1000
    got = forced_photometry(exp, ra, dec, ids=ids, time_processed_mjd_tai=61000.5)
    assert list(got.columns) == list(DIA_FORCED_SOURCE_COLUMNS)
    assert np.array_equal(got["diaObjectId"], ids)
    assert got["diaForcedSourceId"].is_unique
    pull = (got["psfFlux"] - flux) / got["psfFluxErr"]
    assert abs(float(np.median(pull))) < 0.1
    assert 0.9 < float(np.std(pull)) < 1.1
    empty = pull[-ex.size :]
    assert abs(float(empty.mean())) < 0.2
    assert 0.85 < float(empty.std()) < 1.15
    assert got["scienceFlux"].isna().all()
    # On a "science" image: the same image passed as science gives the same fluxes.
    both = forced_photometry(exp, ra[:5], dec[:5], ids=ids[:5], science=exp)
    assert np.allclose(both["scienceFlux"], both["psfFlux"])


def test_measure_forced_photometry_edge_cases(caplog: pytest.LogCaptureFixture) -> None:
    psf = GaussianPsf(1.8, size=25)
    exp = blank_exposure((128, 128), psf=psf, noise_sigma=2.0)
    ra, dec = exp.wcs.all_pix2world([10.0, 64.0, 500.0], [10.0, 64.0, 64.0], 0)  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING):
        got = forced_photometry(exp, ra, dec, ids=[1, 2, 3])
    assert list(got["diaObjectId"]) == [1, 2]
    assert "1 of 3 positions fall off the image" in caplog.text
    empty = forced_photometry(exp, [], [], ids=[])
    assert len(empty) == 0
    assert list(empty.columns) == list(DIA_FORCED_SOURCE_COLUMNS)
    with pytest.raises(BadInputError, match="1 of 2 positions are not finite"):
        forced_photometry(exp, [ra[0], np.nan], [dec[0], dec[1]], ids=[1, 2])
    with pytest.raises(BadInputError, match="must be 1-D of one length"):
        forced_photometry(exp, ra, dec[:2], ids=[1, 2, 3])
