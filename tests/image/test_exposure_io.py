"""Exposure FITS I/O and the detector WCS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from diaflow.errors import BadInputError, CorruptFileError
from diaflow.image import Exposure, VisitInfo, make_detector_wcs, read_exposure, write_exposure


def _info() -> VisitInfo:
    return VisitInfo(
        visit=2026030100001,
        detector=3,
        band="r",
        mjd_tai=61100.2,
        exptime_s=30.0,
        boresight_ra_deg=160.0,
        boresight_dec_deg=7.5,
        rotation_deg=12.0,
        airmass=1.2,
        zero_point_nominal=31.9,
    )


def _wcs():  # type: ignore[no-untyped-def]
    return make_detector_wcs(
        boresight_ra_deg=160.0,
        boresight_dec_deg=7.5,
        rotation_deg=12.0,
        pixel_scale_arcsec=0.2,
        boresight_pixel=(-1100.0, 2200.0),
        distortion_k=2e-12,
        shape=(256, 300),
    )


def _exposure() -> Exposure:
    rng = np.random.default_rng(3)
    image = rng.normal(1000, 30, (256, 300)).astype(np.float32)
    mask = np.zeros((256, 300), np.int32)
    mask[:, 17] = 1
    return Exposure(
        image=image, mask=mask, variance=np.full_like(image, 900.0), wcs=_wcs(), info=_info()
    )


def test_wcs_round_trip_and_scale() -> None:
    wcs = _wcs()
    x, y = np.meshgrid(np.linspace(0, 299, 7), np.linspace(0, 255, 7))
    ra, dec = wcs.all_pix2world(x.ravel(), y.ravel(), 0)
    x2, y2 = wcs.all_world2pix(ra, dec, 0, tolerance=1e-10)
    assert np.abs(x2 - x.ravel()).max() < 1e-6
    assert np.abs(y2 - y.ravel()).max() < 1e-6
    # Pixel scale near 0.2 arcsec (distortion grows it by ~k r^2 = 2e-12 * 2500^2 ~ 1e-5).
    r0 = wcs.all_pix2world([[100, 100], [101, 100]], 0)
    step = (
        np.hypot((r0[1, 0] - r0[0, 0]) * np.cos(np.deg2rad(r0[0, 1])), r0[1, 1] - r0[0, 1]) * 3600
    )
    assert step == pytest.approx(0.2, rel=1e-3)


def test_distortion_is_radial_about_the_boresight() -> None:
    k = 2e-12
    distorted = make_detector_wcs(
        boresight_ra_deg=10,
        boresight_dec_deg=-30,
        rotation_deg=0,
        pixel_scale_arcsec=0.2,
        boresight_pixel=(0, 0),
        distortion_k=k,
    )
    plain = make_detector_wcs(
        boresight_ra_deg=10,
        boresight_dec_deg=-30,
        rotation_deg=0,
        pixel_scale_arcsec=0.2,
        boresight_pixel=(0, 0),
    )
    r = 20000.0
    sky = distorted.all_pix2world([[r, 0.0]], 0)
    undistorted_px = plain.all_world2pix(sky, 0)
    assert undistorted_px[0, 0] == pytest.approx(r * (1 + k * r**2), rel=1e-9)


def test_fits_round_trip(tmp_path: Path) -> None:
    exp = _exposure()
    path = write_exposure(exp, tmp_path / "e.fits")
    back = read_exposure(path)
    assert np.array_equal(back.image, exp.image)
    assert np.array_equal(back.mask, exp.mask)
    assert np.array_equal(back.variance, exp.variance)
    assert back.info == exp.info
    sky = exp.wcs.all_pix2world([[10.5, 200.25]], 0)  # type: ignore[union-attr]
    assert np.allclose(back.wcs.all_pix2world([[10.5, 200.25]], 0), sky, atol=1e-10, rtol=0)  # type: ignore[union-attr]
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        assert hdul["MASK"].header["MP_BAD"] == 0
        assert hdul["MASK"].header["MP_DETECTED"] == 5
        assert hdul["IMAGE"].header["CTYPE1"] == "RA---TAN-SIP"


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_exposure(_exposure(), tmp_path / "e.fits")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_exposure(_exposure(), path)


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = write_exposure(_exposure(), tmp_path / "e.fits")
    data = path.read_bytes()
    bad = tmp_path / "truncated.fits"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated") as info:
        read_exposure(bad)
    assert info.value.reason == "unreadable_fits"


def test_not_fits_and_missing_extension(tmp_path: Path) -> None:
    junk = tmp_path / "junk.fits"
    junk.write_text("this is not FITS")
    with pytest.raises(CorruptFileError):
        read_exposure(junk)
    only_image = tmp_path / "one.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4)), name="IMAGE")]).writeto(
        only_image
    )
    with pytest.raises(CorruptFileError, match="no MASK extension") as info:
        read_exposure(only_image)
    assert info.value.reason == "missing_extension"


def test_missing_header_card(tmp_path: Path) -> None:
    path = write_exposure(_exposure(), tmp_path / "e.fits")
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["EXPTIME"]
    with pytest.raises(CorruptFileError, match="EXPTIME"):
        read_exposure(path)


def test_plane_shape_mismatch_is_rejected() -> None:
    exp = _exposure()
    with pytest.raises(BadInputError, match="variance shape"):
        Exposure(
            image=exp.image, mask=exp.mask, variance=exp.variance[:10], wcs=None, info=exp.info
        )
