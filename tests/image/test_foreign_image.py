"""Reading real archive images (DECam, from another pipeline) as exposures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std

from diaflow.errors import CorruptFileError
from diaflow.image import read_single_image

DECAM = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "decam" / "input_data"


@pytest.mark.skipif(not DECAM.exists(), reason="shared/realdata/decam is not beside the checkout")
def test_decam_images_read_with_a_consistent_variance_plane() -> None:
    for path in sorted(DECAM.glob("DEC-OBS*.mini.fits")):
        exp = read_single_image(path)
        assert exp.shape == (256, 256)
        assert exp.info.band == "i"
        assert exp.info.gain == pytest.approx(4.0, abs=0.2)
        # The blank-sky pixel noise agrees with the rebuilt variance plane.
        assert 0.85 < mad_std(exp.image / np.sqrt(exp.variance)) < 1.15
        sky = exp.wcs.pixel_to_world(128, 128)  # type: ignore[union-attr]
        assert sky.icrs.dec.deg == pytest.approx(exp.info.boresight_dec_deg, abs=0.2)


def test_sky_in_image_and_bad_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gain, rn, sky = 2.0, 5.0, 1000.0
    electrons = rng.poisson(sky * gain, (64, 64)) + rng.normal(0, rn, (64, 64))
    data = electrons / gain
    data[3, 4] = np.nan
    data[10, 10] = 60000.0
    hdr = fits.Header(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": 10.0,
            "CRVAL2": -5.0,
            "CRPIX1": 32,
            "CRPIX2": 32,
            "CD1_1": -5e-5,
            "CD2_2": 5e-5,
            "GAIN": gain,
            "RDNOISE": rn,
            "SATURATE": 50000.0,
            "EXPTIME": 30.0,
            "FILTER": "g SDSS",
        }
    )
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(data, hdr).writeto(path)
    exp = read_single_image(path)
    assert exp.info.band == "g"
    assert exp.mask[3, 4] != 0
    assert exp.mask[10, 10] != 0
    # Sky still in: variance from the Poisson model, sky/gain + (rn/gain)^2.
    assert np.median(exp.variance) == pytest.approx(sky / gain + (rn / gain) ** 2, rel=0.02)
    good = exp.mask == 0
    assert mad_std(exp.image[good]) ** 2 == pytest.approx(np.median(exp.variance), rel=0.1)


def test_image_without_wcs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.zeros((8, 8))).writeto(path)
    with pytest.raises(CorruptFileError, match="no celestial WCS"):
        read_single_image(path)
