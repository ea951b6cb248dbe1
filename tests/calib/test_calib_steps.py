"""Each calibration step alone, on synthetic arrays with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.stats import mad_std

from diaflow.calib import (
    AstrometryConfig,
    PhotometryConfig,
    PsfConfig,
    detect_sources,
    estimate_background,
    find_cosmic_rays,
    fit_psf,
    fit_wcs,
    fit_zero_point,
    interpolate_masked,
    psf_fluxes,
    psf_sharpness,
    refcat_at_epoch,
    stellar_locus,
)
from diaflow.errors import CalibrationError
from diaflow.image import make_detector_wcs

BETA = 3.5
SHAPE = (512, 512)


def _moffat(dx: np.ndarray, dy: np.ndarray, fwhm: float, g1: float = 0.0) -> np.ndarray:
    """Unit-flux elliptical Moffat sampled at offsets (dx, dy) from its centre."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / BETA) - 1))
    # A shear g1 stretches x and squeezes y (area preserved).
    u, v = dx / (1 + g1), dy * (1 + g1)
    return (BETA - 1) / (np.pi * alpha**2) * (1 + (u**2 + v**2) / alpha**2) ** -BETA


def _fwhm_at(x: float, y: float, size: int = SHAPE[0]) -> float:
    """A PSF 4 px wide at the centre, 10 % wider at the corners, growing linearly in x too."""
    u, v = (x - size / 2) / (size / 2), (y - size / 2) / (size / 2)
    return 4.0 * (1 + 0.05 * (u**2 + v**2) + 0.02 * u)


def _g1_at(x: float, y: float, size: int = SHAPE[0]) -> float:
    return 0.03 * (x - size / 2) / (size / 2)


def _truth_kernel(x: float, y: float, size: int = SHAPE[0], half: int = 20) -> np.ndarray:
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    k = _moffat(xx, yy, _fwhm_at(x, y, size), _g1_at(x, y, size))
    return k / k.sum()


def _star_field(
    n: int,
    seed: int,
    *,
    size: int = SHAPE[0],
    sky: float = 1000.0,
    flux_range: tuple[float, float] = (3e4, 1e6),
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Stars with the varying PSF on a flat sky: (image - sky, variance, truth table)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    xy = np.zeros((0, 2))
    for _ in range(100 * n):
        p = rng.uniform(30, size - 30, 2)
        if xy.size == 0 or np.hypot(*(xy - p).T).min() > 40:
            xy = np.vstack([xy, p])
            if len(xy) == n:
                break
    assert len(xy) == n, "the field is too small for that many separated stars"
    flux = 10 ** rng.uniform(np.log10(flux_range[0]), np.log10(flux_range[1]), n)
    expected = np.full(shape, sky)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    for (x, y), f in zip(xy, flux, strict=True):
        box = (
            slice(max(round(y) - 30, 0), round(y) + 31),
            slice(max(round(x) - 30, 0), round(x) + 31),
        )
        fwhm, g1 = _fwhm_at(x, y, size), _g1_at(x, y, size)
        expected[box] += f * _moffat(xx[box] - x, yy[box] - y, fwhm, g1)
    image = rng.poisson(expected) + rng.normal(0, 5, shape)
    variance = np.maximum(image, 0) + 25.0
    truth = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "flux": flux})
    return (image - sky).astype(np.float32), variance.astype(np.float32), truth


def _flux_bias(model: np.ndarray, truth: np.ndarray) -> float:
    h = (model.shape[0] - truth.shape[0]) // 2
    if h > 0:
        model = model[h:-h, h:-h]
    elif h < 0:
        truth = truth[-h:h, -h:h]
    return float((truth * model).sum() / (model**2).sum())


# --- background -------------------------------------------------------------------------------


def test_calib_background_recovers_a_gradient_sky_under_sources() -> None:
    rng = np.random.default_rng(2)
    image, _, _ = _star_field(40, seed=2)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    sky = 1000.0 * (1 + 0.02 * (xx / SHAPE[1] - 0.5) - 0.01 * (yy / SHAPE[0] - 0.5))
    data = image + sky.astype(np.float32) + rng.normal(0, 1, SHAPE).astype(np.float32)
    bad = np.zeros(SHAPE, bool)
    bad[:, 100] = True
    data[:, 100] = 5e4  # a hot column, masked
    bkg = estimate_background(data, bad)
    noise = np.sqrt(1000.0)
    assert abs(np.mean(bkg.model - sky)) < 0.03 * noise
    assert np.std(bkg.model - sky) < 0.05 * noise
    assert bkg.rms_level == pytest.approx(noise, rel=0.05)
    assert 0 < bkg.source_fraction < 0.5


def test_calib_background_of_an_all_masked_image_fails() -> None:
    with pytest.raises(CalibrationError, match="all 100 pixels") as excinfo:
        estimate_background(np.zeros((10, 10)), np.ones((10, 10), bool))
    assert excinfo.value.reason == "no_usable_pixels"


# --- cosmic rays ------------------------------------------------------------------------------


def _add_tracks(image: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    tracks = []
    for _ in range(n):
        x0, y0 = rng.uniform(5, SHAPE[1] - 20), rng.uniform(5, SHAPE[0] - 20)
        length, ang = rng.exponential(5.0) + 0.5, rng.uniform(0, np.pi)
        t = np.linspace(0, 1, max(int(4 * length), 1))
        xs = np.round(x0 + t * length * np.cos(ang)).astype(int)
        ys = np.round(y0 + t * length * np.sin(ang)).astype(int)
        charge = rng.lognormal(np.log(2000.0), 0.5) * max(length, 1.0)
        np.add.at(image, (ys, xs), charge / t.size)
        tracks.append(np.unique(np.column_stack([ys, xs]), axis=0))
    return tracks


def test_calib_cosmic_rays_found_and_star_cores_spared() -> None:
    rng = np.random.default_rng(4)
    image, variance, truth = _star_field(60, seed=4, flux_range=(1e4, 2e6))
    tracks = _add_tracks(image, 40, rng)
    bad = np.zeros(SHAPE, bool)
    # A bad column right through a bright star: neither it nor the star is a cosmic ray.
    star = truth.iloc[int(np.argmax(truth["flux"]))]
    col = round(star["x"]) + 1
    bad[:, col] = True
    image[:, col] = 3e4
    variance = np.maximum(image, 0) + 25.0
    cr = find_cosmic_rays(image, variance, bad, fwhm_px=4.0)
    found = sum(cr[t[:, 0], t[:, 1]].mean() >= 0.5 for t in tracks)
    assert found >= 0.95 * len(tracks)
    assert not cr[bad].any()
    for x, y in zip(truth["x"], truth["y"], strict=True):
        ix, iy = round(x), round(y)
        core = cr[iy - 2 : iy + 3, ix - 2 : ix + 3]
        near_track = any(np.abs(t - [iy, ix]).max(axis=1).min() <= 3 for t in tracks)
        assert near_track or not core.any(), (x, y)


def test_calib_cosmic_rays_spare_a_sharp_but_resolved_psf() -> None:
    # A critically sampled PSF (FWHM 2 px) has sharp cores; told so, the test leaves them.
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:200, 0:200].astype(float)
    image = rng.normal(0, 10, (200, 200))
    for x, y in rng.uniform(10, 190, (30, 2)):
        image += 5e4 * _moffat(xx - x, yy - y, 2.0)
    variance = np.maximum(image, 0) + 100.0
    assert not find_cosmic_rays(image, variance, fwhm_px=2.0).any()
    assert psf_sharpness(2.0) > psf_sharpness(4.0) > 0


def test_calib_interpolation_fills_masked_pixels_smoothly() -> None:
    yy, xx = np.mgrid[0:100, 0:100].astype(float)
    smooth = 100 + 0.5 * xx + 200 * np.exp(-((xx - 50) ** 2 + (yy - 40) ** 2) / 200)
    fill = np.zeros((100, 100), bool)
    fill[:, 47] = True
    fill[70:72, 20:23] = True
    image = np.where(fill, 1e6, smooth)
    new, var = interpolate_masked(image, np.full((100, 100), 4.0), fill)
    np.testing.assert_allclose(new[fill], smooth[fill], rtol=0.02)
    np.testing.assert_allclose(var[fill], 4.0)
    assert np.array_equal(new[~fill], image[~fill].astype(np.float32))


# --- sources and PSF --------------------------------------------------------------------------


def test_calib_sources_find_the_stellar_locus() -> None:
    image, variance, truth = _star_field(40, seed=6)
    table, seg = detect_sources(image, variance, np.zeros(SHAPE, bool))
    assert len(table) >= 35
    assert seg.shape == SHAPE
    assert table["star_like"].mean() > 0.8
    # Windowed centroids are unbiased and about as good as their errors say.
    from scipy.spatial import cKDTree

    d, j = cKDTree(truth[["x", "y"]].to_numpy()).query(table[["x", "y"]].to_numpy())
    assert np.all(d < 0.3)
    pull = (table["x"].to_numpy() - truth["x"].to_numpy()[j]) / table["x_err"].to_numpy()
    assert abs(np.median(pull)) < 0.5
    assert mad_std(pull) < 1.5
    assert stellar_locus(np.r_[np.full(20, 2.4), np.full(5, 5.0), [0.3, 0.4]]) == pytest.approx(2.4)
    assert np.isnan(stellar_locus(np.array([0.2, 0.5])))


@pytest.mark.parametrize(
    ("variation", "n_stars", "size"), [("perturbation", 12, 512), ("pixel", 110, 1024)]
)
def test_calib_psf_fit_recovers_a_varying_psf(variation: str, n_stars: int, size: int) -> None:
    image, variance, truth = _star_field(n_stars, seed=7 + n_stars, size=size)
    fit = fit_psf(
        image,
        variance,
        truth["x"].to_numpy(),
        truth["y"].to_numpy(),
        truth["flux"].to_numpy(),
        fwhm_px=4.0,
        config=PsfConfig(variation=variation, pixel_min_stars=100),
    )
    assert fit.psf.order == 2
    assert fit.used.sum() >= n_stars - 2
    places = [(0.5, 0.5), (0.23, 0.25), (0.78, 0.74), (0.74, 0.23)]
    for x, y in [(size * a, size * b) for a, b in places]:
        model, truth_k = fit.psf.kernel(x, y), _truth_kernel(x, y, size)
        assert _flux_bias(model, truth_k) == pytest.approx(1, abs=0.006)
    # Its FWHM follows the truth's variation (the truth stamp measured the same way).
    from diaflow.image import PixelPsf

    truth_psf = PixelPsf.from_function(
        lambda x, y: _truth_kernel(x, y, size), (size, size), order=2
    )
    for x, y in [(size * a, size * b) for a, b in [(0.5, 0.5), (0.16, 0.16), (0.84, 0.84)]]:
        assert fit.psf.fwhm_px(x, y) == pytest.approx(truth_psf.fwhm_px(x, y), rel=0.02)
    assert fit.residual_frac < 0.03
    # PSF fluxes of the stars: unbiased, each within 1 % or 4 sigma (the model's own error, a few
    # tenths of a percent, is not in the photon-noise error, so bright stars' pulls exceed 1).
    flux, err = psf_fluxes(image, variance, fit.psf, truth["x"], truth["y"])
    frac = flux / truth["flux"] - 1
    assert abs(np.median(frac)) < 0.003
    assert np.all(np.abs(frac) < np.maximum(0.01, 4 * err / truth["flux"]))
    assert 0.7 < mad_std(frac / (err / truth["flux"])) < 2.5


def test_calib_psf_fit_rejects_a_galaxy_among_the_stars() -> None:
    image, variance, truth = _star_field(14, seed=3)
    # Turn one star into an extended source (a galaxy twice the PSF's width).
    g = truth.iloc[0]
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    image -= (g["flux"] * _moffat(xx - g["x"], yy - g["y"], _fwhm_at(g["x"], g["y"]))).astype(
        np.float32
    )
    image += (g["flux"] * _moffat(xx - g["x"], yy - g["y"], 8.0)).astype(np.float32)
    fit = fit_psf(
        image, variance, truth["x"], truth["y"], truth["flux"], fwhm_px=4.0, config=PsfConfig()
    )
    assert not fit.used[0]
    assert fit.used[1:].all()


def test_calib_psf_fit_with_too_few_stars() -> None:
    image, variance, truth = _star_field(3, seed=1)
    with pytest.raises(CalibrationError, match="3 usable stars") as excinfo:
        fit_psf(image, variance, truth["x"], truth["y"], truth["flux"], fwhm_px=4.0)
    assert excinfo.value.reason == "too_few_stars"


# --- astrometry -------------------------------------------------------------------------------


def _wcs_pair():  # type: ignore[no-untyped-def]
    common = {
        "pixel_scale_arcsec": 0.2,
        "boresight_pixel": (-900.0, 1500.0),
        "distortion_k": 2e-12,
        "shape": (1024, 1024),
    }
    truth = make_detector_wcs(
        boresight_ra_deg=40.0, boresight_dec_deg=-30.0, rotation_deg=30.0, **common
    )
    header = make_detector_wcs(
        boresight_ra_deg=40.0 + 2.5 / 3600 / np.cos(np.deg2rad(30)),
        boresight_dec_deg=-30.0 - 1.5 / 3600,
        rotation_deg=30.0 + 15.0 / 3600,
        **common,
    )
    return truth, header


@pytest.mark.parametrize("kind", ["similarity", "affine"])
def test_calib_wcs_fit_recovers_the_true_pointing(kind: str) -> None:
    rng = np.random.default_rng(11)
    truth, header = _wcs_pair()
    n = 60
    ra, dec = truth.all_pix2world(rng.uniform(0, 1023, n), rng.uniform(0, 1023, n), 0)
    x, y = truth.all_world2pix(ra, dec, 0)
    # Detections: centroid noise, some stars missing, galaxies that are not in the catalog.
    keep = rng.random(n) > 0.2
    xd = np.r_[x[keep] + rng.normal(0, 0.02, keep.sum()), rng.uniform(0, 1023, 30)]
    yd = np.r_[y[keep] + rng.normal(0, 0.02, keep.sum()), rng.uniform(0, 1023, 30)]
    fit = fit_wcs(xd, yd, header, ra, dec, config=AstrometryConfig(fit=kind))
    assert fit.det_index.size == keep.sum()
    assert np.all(fit.det_index < keep.sum())  # no galaxy matched
    yy, xx = np.mgrid[0:1024:64, 0:1024:64]
    r1, d1 = fit.wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
    r0, d0 = truth.all_pix2world(xx.ravel(), yy.ravel(), 0)
    err_mas = np.hypot((r1 - r0) * np.cos(np.deg2rad(d0)), d1 - d0) * 3.6e6
    assert err_mas.max() < 3.0
    assert fit.rms_mas == pytest.approx(0.02 * 200, rel=0.3)  # 0.02 px of 200 mas
    assert fit.offset_arcsec == pytest.approx(np.hypot(2.5, 1.5), abs=0.3)
    # A 1024-pixel field constrains the rotation to a few arcsec (1 arcsec moves it 1 mas).
    assert abs(fit.rotation_arcsec) == pytest.approx(15.0, abs=4.0)


def test_calib_wcs_fit_without_matches() -> None:
    rng = np.random.default_rng(12)
    _, header = _wcs_pair()
    ra, dec = header.all_pix2world(rng.uniform(0, 1023, 20), rng.uniform(0, 1023, 20), 0)
    with pytest.raises(CalibrationError) as excinfo:
        fit_wcs(rng.uniform(0, 1023, 20), rng.uniform(0, 1023, 20), header, ra, dec)
    assert excinfo.value.reason == "too_few_matches"


def test_calib_reference_positions_move_with_proper_motion() -> None:
    ref = pd.DataFrame(
        {"ra": [10.0, 10.0], "dec": [0.0, 60.0], "pm_ra": [100.0, 100.0], "pm_dec": [-50.0, 0.0]}
    ).assign(epoch=57388.5)
    ra, dec = refcat_at_epoch(ref, 57388.5 + 10 * 365.25)
    assert (ra[0] - 10.0) * 3600 == pytest.approx(1.0)
    assert (dec[0] - 0.0) * 3600 == pytest.approx(-0.5)
    assert (ra[1] - 10.0) * 3600 * np.cos(np.deg2rad(60)) == pytest.approx(1.0)
    # Without motions or epochs the catalog positions are used as they are.
    ra, dec = refcat_at_epoch(ref[["ra", "dec"]], 70000.0)
    assert list(ra) == [10.0, 10.0]


# --- photometry -------------------------------------------------------------------------------


def test_calib_zero_point_from_catalog_fluxes_with_outliers() -> None:
    rng = np.random.default_rng(13)
    zp, n = 31.62, 40
    ref_flux = 10 ** rng.uniform(3.5, 5.5, n)
    ref_err = 0.01 * ref_flux
    counts_true = ref_flux * 10 ** (0.4 * (zp - 31.4))
    counts_err = np.sqrt(counts_true + 3e4)
    counts = counts_true + rng.normal(0, 1, n) * counts_err
    measured = ref_flux + rng.normal(0, 1, n) * ref_err
    counts[:3] *= 1.3  # variables, blends
    fit = fit_zero_point(counts, counts_err, measured, ref_err)
    assert not fit.used[:3].any()
    assert fit.n_stars >= n - 5
    assert fit.zero_point == pytest.approx(zp, abs=3 * fit.error)
    assert 0.0005 < fit.error < 0.005
    assert fit.chi2 == pytest.approx(1.0, abs=0.6)


def test_calib_zero_point_needs_enough_stars() -> None:
    with pytest.raises(CalibrationError, match="need at least 3") as excinfo:
        fit_zero_point(
            np.array([1e4, 1e4, -5.0]),
            np.array([100.0, 100.0, 100.0]),
            np.array([2e3, 2e3, 2e3]),
            np.array([20.0, 20.0, 20.0]),
            config=PhotometryConfig(min_stars=3),
        )
    assert excinfo.value.reason == "too_few_calibration_stars"
