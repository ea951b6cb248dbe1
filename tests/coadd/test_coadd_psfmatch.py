"""PSF matching: kernels, the common PSF, fluxes, shapes, variance and masks after convolution."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import sep
from scipy import signal

from diaflow.coadd import (
    PsfMatchConfig,
    common_psf,
    make_patch,
    match_psf,
    matching_kernel,
    psf_shape,
    warp_exposure,
    warp_noise_correlation,
)
from diaflow.errors import ConfigError, TemplateError
from diaflow.image import Exposure, PixelPsf, VisitInfo, make_detector_wcs, mask_bits

INFO = VisitInfo(
    visit=7,
    detector=0,
    band="r",
    mjd_tai=61000.0,
    exptime_s=30.0,
    boresight_ra_deg=30.0,
    boresight_dec_deg=-10.0,
    rotation_deg=0.0,
    airmass=1.1,
    zero_point_nominal=32.0,
)


def _moffat_stamp(fwhm, g1=0.0, g2=0.0, size=31, x=0.0, y=0.0):
    prof = galsim.Moffat(beta=3.5, fwhm=fwhm).shear(g1=g1, g2=g2)
    return prof.drawImage(
        nx=size, ny=size, scale=1.0, method="no_pixel", offset=(x, y)
    ).array.astype(np.float64)


def _psf(fwhm, g1=0.0, g2=0.0, shape=(256, 256)):
    return PixelPsf.from_function(lambda x, y: _moffat_stamp(fwhm, g1, g2), shape, order=0, grid=1)


def _exposure(image, variance, psf, shape, rotation_deg=0.0):
    wcs = make_detector_wcs(
        boresight_ra_deg=30.0,
        boresight_dec_deg=-10.0,
        rotation_deg=rotation_deg,
        pixel_scale_arcsec=0.2,
        boresight_pixel=((shape[1] - 1) / 2, (shape[0] - 1) / 2),
        shape=shape,
    )
    return Exposure(
        image=image.astype(np.float32),
        variance=variance.astype(np.float32),
        mask=np.zeros(shape, np.int32),
        wcs=wcs,
        info=INFO,
        psf=psf,
    )


def _convolve_centred(a, b):
    full = signal.fftconvolve(a, b, mode="full")
    c, h = full.shape[0] // 2, a.shape[0] // 2
    return full[c - h : c + h + 1, c - h : c + h + 1]


def test_matching_kernel_takes_the_psf_to_the_target() -> None:
    psf = _moffat_stamp(4.0, g1=0.03, size=31)
    target = _moffat_stamp(6.5, size=41)
    kernel = matching_kernel(psf, target, size=31)
    assert kernel.shape == (31, 31)
    assert kernel.sum() == pytest.approx(1.0)
    matched = _convolve_centred(psf, kernel)
    want = target[5:-5, 5:-5] / target.sum()
    assert np.abs(matched - want).max() < 5e-3 * want.max()


def test_common_psf_is_round_and_broader_than_every_input() -> None:
    psfs = [_psf(3.8), _psf(5.0, g1=0.05), _psf(4.4, g2=-0.04)]
    target, worst = common_psf(psfs, (256, 256), config=PsfMatchConfig(target_fwhm_factor=1.1))
    stamp = target.kernel(0.0, 0.0)
    fwhm, major, minor = psf_shape(stamp)
    assert worst == pytest.approx(psf_shape(psfs[1].kernel(0, 0))[1])
    assert fwhm == pytest.approx(1.1 * worst, rel=0.01)
    assert major / minor == pytest.approx(1.0, abs=0.02)
    assert stamp.shape == (41, 41)
    assert stamp.sum() == pytest.approx(1.0)


def _star_image(shape, psf_fwhm, rng, spacing=60):
    """Stars on a jittered grid (isolated), pixel-sampled Moffat profiles, no noise."""
    ny, nx = shape
    image = galsim.ImageF(nx, ny, scale=1.0)
    gy, gx = np.mgrid[
        spacing // 2 : ny - spacing // 2 : spacing, spacing // 2 : nx - spacing // 2 : spacing
    ]
    x = gx.ravel() + rng.uniform(-5, 5, gx.size)
    y = gy.ravel() + rng.uniform(-5, 5, gy.size)
    flux = 10 ** rng.uniform(4, 5, gx.size)
    for xi, yi, f in zip(x, y, flux, strict=True):
        star = galsim.Moffat(beta=3.5, fwhm=psf_fwhm).withFlux(f)
        star.drawImage(
            image, center=galsim.PositionD(xi + 1, yi + 1), add_to_image=True, method="no_pixel"
        )
    return image.array.astype(np.float64), x, y, flux


def test_matched_stars_keep_flux_and_take_the_target_shape() -> None:
    rng = np.random.default_rng(5)
    shape = (320, 320)
    image, x, y, _ = _star_image(shape, 4.0, rng)
    exp = _exposure(image, np.ones(shape), _psf(4.0, shape=shape), shape)
    target = _psf(6.0, shape=shape)
    out = match_psf(exp, target)
    assert out.psf is target
    img = np.nan_to_num(out.image).astype(np.float64)
    keep = (x > 40) & (x < 280) & (y > 40) & (y < 280)
    assert keep.sum() >= 9
    before, _, _ = sep.sum_circle(image, x[keep], y[keep], 25.0)
    after, _, _ = sep.sum_circle(img, x[keep], y[keep], 25.0)
    np.testing.assert_allclose(after, before, rtol=3e-3)
    want = psf_shape(target.kernel(0, 0))[0]
    for xi, yi in zip(x[keep], y[keep], strict=True):
        ix, iy = round(xi), round(yi)
        cut = img[iy - 15 : iy + 16, ix - 15 : ix + 16]
        assert psf_shape(cut)[0] == pytest.approx(want, rel=0.02)
        model = _moffat_stamp(6.0, x=xi - ix, y=yi - iy)
        model *= (cut * model).sum() / (model * model).sum()  # stamps hold ~97 % of the light
        assert np.abs(cut - model).max() < 0.01 * model.max()


def test_variance_after_warp_and_match_follows_the_noise() -> None:
    rng = np.random.default_rng(6)
    shape = (300, 300)
    variance = np.full(shape, 100.0)
    noise = rng.normal(0.0, 10.0, shape)
    exp = _exposure(noise, variance, _psf(3.5, shape=shape), shape, rotation_deg=0.0)
    ra0, dec0 = exp.wcs.all_pix2world([[149.5, 149.5]], 0)[0]
    patch = make_patch(
        ra_deg=ra0, dec_deg=dec0, size_arcsec=50.0, pixel_scale_arcsec=0.2, rotation_deg=37.0
    )
    warped = warp_exposure(exp, patch.wcs, patch.shape)
    rho = warp_noise_correlation(exp, patch.wcs, patch.shape)
    target = _psf(4.5, shape=patch.shape)
    for kernel_size in (31, 15):
        config = PsfMatchConfig(kernel_size_px=kernel_size)
        out = match_psf(warped, target, config=config, noise_correlation=rho)
        ok = np.isfinite(out.image)
        ratio = np.std(out.image[ok] / np.sqrt(out.variance[ok]))
        assert ratio == pytest.approx(1.0, abs=0.03)
    # Ignoring the warp's correlations would underestimate the noise.
    naive = match_psf(warped, target)
    ok = np.isfinite(naive.image)
    assert np.std(naive.image[ok] / np.sqrt(naive.variance[ok])) > 1.05


def test_mask_bits_spread_over_the_kernel_and_bad_pixels_are_excluded() -> None:
    shape = (128, 128)
    image = np.zeros(shape)
    image[64, 40] = 1e6  # a bad pixel with a wild value
    mask = np.zeros(shape, np.int32)
    mask[64, 40] = mask_bits("BAD")
    exp = _exposure(image, np.ones(shape), _psf(3.5, shape=shape), shape)
    exp.mask = mask
    out = match_psf(exp, _psf(6.0, shape=shape))
    bad = (out.mask & mask_bits("BAD")) != 0
    assert bad[64, 40]
    assert bad.sum() > 9
    ys, xs = np.nonzero(bad)
    assert np.hypot(xs - 40, ys - 64).max() < 12
    # The wild value did not enter: nothing but zeros around.
    assert np.nanmax(np.abs(out.image)) < 1e-3
    # The image edge is not NO_DATA (no NO_DATA input), the NaN region of a warp is.
    assert not (out.mask & mask_bits("NO_DATA")).any()


def test_match_psf_rejects_bad_input() -> None:
    shape = (64, 64)
    exp = _exposure(np.zeros(shape), np.ones(shape), None, shape)
    with pytest.raises(TemplateError, match="no PSF model") as err:
        match_psf(exp, _psf(5.0, shape=shape))
    assert err.value.reason == "no_psf"
    exp.psf = _psf(4.0, shape=shape)
    exp.mask = np.full(shape, mask_bits("NO_DATA"), np.int32)
    with pytest.raises(TemplateError, match="every pixel is masked") as err:
        match_psf(exp, _psf(5.0, shape=shape))
    assert err.value.reason == "no_valid_pixels"
    with pytest.raises(ConfigError, match="kernel_size_px must be odd"):
        PsfMatchConfig(kernel_size_px=30)
    with pytest.raises(ConfigError, match="unknown mask plane 'GHOST'"):
        PsfMatchConfig(bad_mask_planes=("BAD", "GHOST"))
