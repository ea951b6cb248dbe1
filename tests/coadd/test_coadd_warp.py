"""Warping: exactness, flux conservation, variance and mask propagation, the warped PSF."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import sep

from diaflow.coadd import WarpConfig, make_patch, warp_exposure, warp_noise_correlation
from diaflow.errors import BadInputError, ConfigError
from diaflow.image import Exposure, MaskPlane, PixelPsf, VisitInfo, make_detector_wcs, mask_bits

SCALE = 0.2
INFO = VisitInfo(
    visit=1,
    detector=0,
    band="r",
    mjd_tai=61000.0,
    exptime_s=30.0,
    boresight_ra_deg=150.0,
    boresight_dec_deg=2.0,
    rotation_deg=0.0,
    airmass=1.2,
    zero_point_nominal=32.0,
)


def _wcs(
    shape,
    *,
    rotation_deg=0.0,
    boresight_pixel=None,
    distortion_k=0.0,
    scale=SCALE,
    ra=150.0,
    dec=2.0,
):
    ny, nx = shape
    bp = boresight_pixel if boresight_pixel is not None else ((nx - 1) / 2, (ny - 1) / 2)
    return make_detector_wcs(
        boresight_ra_deg=ra,
        boresight_dec_deg=dec,
        rotation_deg=rotation_deg,
        pixel_scale_arcsec=scale,
        boresight_pixel=bp,
        distortion_k=distortion_k,
        shape=shape,
    )


def _exposure(image, variance=None, mask=None, wcs=None, psf=None):
    shape = image.shape
    return Exposure(
        image=image.astype(np.float32),
        variance=(np.ones(shape) if variance is None else variance).astype(np.float32),
        mask=np.zeros(shape, np.int32) if mask is None else mask,
        wcs=wcs if wcs is not None else _wcs(shape),
        info=INFO,
        psf=psf,
    )


def _star_field(shape, n_stars, fwhm_px, rng):
    """Pixel-integrated Moffat stars at random positions (no noise), and their positions."""
    ny, nx = shape
    img = galsim.ImageF(nx, ny, scale=1.0)
    x = rng.uniform(30, nx - 31, n_stars)
    y = rng.uniform(30, ny - 31, n_stars)
    flux = 10 ** rng.uniform(3, 5, n_stars)
    for xi, yi, f in zip(x, y, flux, strict=True):
        star = galsim.Moffat(beta=3.5, fwhm=fwhm_px).withFlux(f)
        # galsim pixel (1, 1) is numpy [0, 0]
        star.drawImage(img, center=galsim.PositionD(xi + 1, yi + 1), add_to_image=True)
    return img.array.astype(np.float64), x, y, flux


def _isolated(x, y, distance):
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1) > distance


def _map_pixels(src_wcs, dst_wcs, x, y):
    ra, dec = src_wcs.all_pix2world(x, y, 0)
    return dst_wcs.all_world2pix(ra, dec, 0, tolerance=1e-10)


def test_integer_shift_copies_pixels_exactly() -> None:
    rng = np.random.default_rng(1)
    shape = (200, 240)
    src_wcs = _wcs(shape)
    image = rng.normal(0, 10, shape)
    variance = rng.uniform(1, 5, shape)
    mask = np.zeros(shape, np.int32)
    mask[50, 60] = mask_bits("BAD")
    mask[:, 100] |= mask_bits("SAT")
    exp = _exposure(image, variance, mask, src_wcs)
    dx, dy = 7, -3
    dst_wcs = src_wcs.deepcopy()
    dst_wcs.wcs.crpix = src_wcs.wcs.crpix + np.array([dx, dy])
    dst_wcs.wcs.set()
    out = warp_exposure(exp, dst_wcs, shape)
    # Target pixel (x, y) is source pixel (x - dx, y - dy).
    valid = (out.mask & mask_bits("NO_DATA")) == 0
    assert valid.sum() == (shape[0] - abs(dy)) * (shape[1] - abs(dx))
    want_img = np.full(shape, np.nan, np.float32)
    want_var = np.full(shape, np.nan, np.float32)
    want_mask = np.full(shape, mask_bits("NO_DATA"), np.int32)
    dst = (slice(0, shape[0] + dy), slice(dx, shape[1]))
    src = (slice(-dy, shape[0]), slice(0, shape[1] - dx))
    want_img[dst] = exp.image[src]
    want_var[dst] = exp.variance[src]
    want_mask[dst] = mask[src]
    np.testing.assert_array_equal(out.image, want_img)
    np.testing.assert_array_equal(out.variance, want_var)
    np.testing.assert_array_equal(out.mask, want_mask)


def test_rotation_by_45_degrees_keeps_aperture_fluxes_and_positions() -> None:
    rng = np.random.default_rng(2)
    shape = (512, 512)
    fwhm = 4.0
    image, x, y, _ = _star_field(shape, 60, fwhm, rng)
    src_wcs = _wcs(shape, boresight_pixel=(-4000.0, 3000.0), distortion_k=2e-12)
    ra0, dec0 = src_wcs.all_pix2world([[255.5, 255.5]], 0)[0]
    patch = make_patch(
        ra_deg=ra0,
        dec_deg=dec0,
        size_arcsec=512 * SCALE,
        pixel_scale_arcsec=SCALE,
        rotation_deg=45.0,
    )
    out = warp_exposure(_exposure(image, wcs=src_wcs), patch.wcs, patch.shape)
    tx, ty = _map_pixels(src_wcs, patch.wcs, x, y)
    inside = (tx > 20) & (tx < 491) & (ty > 20) & (ty < 491) & _isolated(x, y, 4 * fwhm)
    assert inside.sum() > 25
    radius = 3 * fwhm
    src_flux, _, _ = sep.sum_circle(image, x[inside], y[inside], radius)
    out_img = np.nan_to_num(out.image).astype(np.float64)
    dst_flux, _, _ = sep.sum_circle(out_img, tx[inside], ty[inside], radius)
    assert np.max(np.abs(dst_flux / src_flux - 1)) < 0.005
    # Centroids land where the WCS says (to a few thousandths of a pixel).
    cx, cy, _ = sep.winpos(out_img, tx[inside], ty[inside], fwhm / 2.355)
    assert np.max(np.hypot(cx - tx[inside], cy - ty[inside])) < 0.01


def test_total_flux_is_conserved_when_pixels_change_size() -> None:
    rng = np.random.default_rng(3)
    shape = (300, 300)
    image, x, y, _ = _star_field(shape, 16, 5.0, rng)
    src_wcs = _wcs(shape)
    dst_wcs = _wcs((260, 260), rotation_deg=20.0, scale=0.26)  # coarser pixels, rotated
    out = warp_exposure(_exposure(image, wcs=src_wcs), dst_wcs, (260, 260))
    tx, ty = _map_pixels(src_wcs, dst_wcs, x, y)
    r_src, r_dst = 20.0, 20.0 * 0.2 / 0.26
    inside = (tx > r_dst + 5) & (tx < 255 - r_dst) & (ty > r_dst + 5) & (ty < 255 - r_dst)
    inside &= _isolated(x, y, r_src + 15)
    assert inside.sum() >= 5
    f_src, _, _ = sep.sum_circle(image, x[inside], y[inside], r_src)
    f_dst, _, _ = sep.sum_circle(
        np.nan_to_num(out.image).astype(np.float64), tx[inside], ty[inside], r_dst
    )
    np.testing.assert_allclose(f_dst, f_src, rtol=1e-3)
    # Per-pixel values scale with the pixel area: a flat image becomes 1.69 times brighter.
    flat = warp_exposure(_exposure(np.ones(shape), wcs=src_wcs), dst_wcs, (260, 260))
    ok = np.isfinite(flat.image)
    np.testing.assert_allclose(flat.image[ok], (0.26 / 0.2) ** 2, rtol=1e-4)


def test_warped_noise_matches_propagated_variance_and_correlation() -> None:
    rng = np.random.default_rng(4)
    shape = (400, 400)
    xx = np.mgrid[0:400, 0:400][1]
    variance = 50.0 * (1 + xx / 400.0)
    image = rng.normal(0.0, np.sqrt(variance))
    src_wcs = _wcs(shape, distortion_k=2e-12, boresight_pixel=(-2000.0, 500.0))
    ra0, dec0 = src_wcs.all_pix2world([[199.5, 199.5]], 0)[0]
    patch = make_patch(
        ra_deg=ra0, dec_deg=dec0, size_arcsec=80.0, pixel_scale_arcsec=SCALE, rotation_deg=30.0
    )
    exp = _exposure(image, variance, wcs=src_wcs)
    out = warp_exposure(exp, patch.wcs, patch.shape)
    ok = np.isfinite(out.image)
    pull = out.image[ok] / np.sqrt(out.variance[ok])
    assert np.std(pull) == pytest.approx(1.0, abs=0.01)
    # Interpolation correlates neighbouring pixels as predicted.
    rho = warp_noise_correlation(exp, patch.wcs, patch.shape)
    c = rho.shape[0] // 2
    norm = np.where(ok, out.image / np.sqrt(np.where(ok, out.variance, 1.0)), 0.0)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2)):
        a = norm[max(dy, 0) :, max(dx, 0) : norm.shape[1] + min(dx, 0)]
        b = norm[: norm.shape[0] - dy, max(-dx, 0) : norm.shape[1] - max(dx, 0)]
        both = (a != 0) & (b != 0)
        measured = np.mean(a[both] * b[both])
        assert measured == pytest.approx(rho[c + dy, c + dx], abs=0.02), (dy, dx)
    assert rho[c, c] == pytest.approx(1.0)
    assert rho[c, c + 1] > 0.05


def test_mask_bits_are_or_ed_over_the_interpolation_footprint() -> None:
    shape = (120, 120)
    mask = np.zeros(shape, np.int32)
    mask[60, 50] = mask_bits("BAD")
    mask[30:33, 80] = mask_bits("CR")
    src_wcs = _wcs(shape)
    dst_wcs = _wcs(shape, rotation_deg=33.0)
    out = warp_exposure(_exposure(np.zeros(shape), mask=mask, wcs=src_wcs), dst_wcs, shape)
    yy, xx = np.mgrid[0:120, 0:120]
    sx, sy = _map_pixels(dst_wcs, src_wcs, xx.ravel(), yy.ravel())
    # Positions are rounded to 1/128 pixel; a whole-pixel phase has a single tap.
    qx, qy = np.rint(sx * 128).reshape(shape), np.rint(sy * 128).reshape(shape)
    fx, fy = qx // 128, qy // 128
    lo_x, hi_x = fx - 2 * (qx % 128 != 0), fx + 3 * (qx % 128 != 0)
    lo_y, hi_y = fy - 2 * (qy % 128 != 0), fy + 3 * (qy % 128 != 0)
    reach_bad = (lo_x <= 50) & (hi_x >= 50) & (lo_y <= 60) & (hi_y >= 60)
    has_bad = (out.mask & mask_bits("BAD")) != 0
    no_data = (out.mask & mask_bits("NO_DATA")) != 0
    np.testing.assert_array_equal(has_bad & ~no_data, reach_bad & ~no_data)
    assert 30 <= has_bad.sum() <= 42
    assert ((out.mask & mask_bits("CR")) != 0).sum() > 36
    # NO_DATA exactly where a tap leaves the source; NaN there and only there.
    outside = (lo_x < 0) | (hi_x > 119) | (lo_y < 0) | (hi_y > 119)
    np.testing.assert_array_equal(no_data, outside)
    np.testing.assert_array_equal(np.isnan(out.image), no_data)


def _elliptical_gaussian(sx, sy, size=25):
    h = size // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    g = np.exp(-0.5 * (xx**2 / sx**2 + yy**2 / sy**2))
    return g / g.sum()


def test_warped_psf_is_the_rotated_psf() -> None:
    shape = (200, 200)
    psf = PixelPsf.from_function(
        lambda x, y: _elliptical_gaussian(2.4, 1.5), shape, order=0, grid=1
    )
    src_wcs = _wcs(shape)
    dst_wcs = _wcs(shape, rotation_deg=90.0)
    out = warp_exposure(_exposure(np.zeros(shape), wcs=src_wcs, psf=psf), dst_wcs, shape)
    stamp = out.psf.kernel(100.0, 100.0)
    # A 90-degree turn of the sky swaps the axes of the PSF on the pixel grid.
    np.testing.assert_allclose(stamp, _elliptical_gaussian(1.5, 2.4), atol=2e-3 * stamp.max())


def test_warp_without_overlap_is_all_no_data() -> None:
    shape = (64, 64)
    far = _wcs(shape, ra=151.0)
    out = warp_exposure(_exposure(np.ones(shape)), far, shape)
    assert np.all(out.mask == mask_bits(MaskPlane.NO_DATA))
    assert np.all(np.isnan(out.image))
    assert np.all(np.isnan(out.variance))


def test_warp_rejects_bad_input() -> None:
    exp = _exposure(np.ones((32, 32)))
    no_wcs = Exposure(image=exp.image, mask=exp.mask, variance=exp.variance, wcs=None, info=INFO)
    with pytest.raises(BadInputError, match="has no WCS") as err:
        warp_exposure(no_wcs, exp.wcs, (32, 32))
    assert err.value.reason == "no_wcs"
    with pytest.raises(BadInputError, match="target_shape"):
        warp_exposure(exp, exp.wcs, (0, 32))
    with pytest.raises(ConfigError, match="lanczos_order"):
        WarpConfig(lanczos_order=1)
