"""Exposures that cannot be calibrated fail with a stable reason; bad pixels alone do not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from diaflow.calib import (
    AstrometryConfig,
    BackgroundConfig,
    CalibConfig,
    CosmicRayConfig,
    PsfConfig,
    calibrate,
)
from diaflow.errors import CalibrationError, ConfigError
from diaflow.image import (
    Exposure,
    GaussianPsf,
    VisitInfo,
    make_detector_wcs,
    mask_bits,
    read_exposure,
)
from simdata import SimulatedSurvey


def _pipeline_visit(survey: SimulatedSurvey, index: int = 5) -> tuple[Exposure, pd.DataFrame]:
    row = survey.visits.iloc[index]
    return (
        read_exposure(survey.out_dir / row["path"]),
        pd.read_parquet(survey.out_dir / "refcat.parquet"),
    )


def _sparse_field(n_stars: int, seed: int = 1) -> tuple[Exposure, pd.DataFrame]:
    """A 256^2 exposure of ``n_stars`` bright stars on a flat sky, and their catalog."""
    rng = np.random.default_rng(seed)
    shape = (256, 256)
    wcs = make_detector_wcs(
        boresight_ra_deg=150.0,
        boresight_dec_deg=2.0,
        rotation_deg=0.0,
        pixel_scale_arcsec=0.2,
        boresight_pixel=(127.5, 127.5),
        shape=shape,
    )
    psf = GaussianPsf(sigma_px=2.0)
    expected = np.full(shape, 1000.0)
    x = rng.uniform(40, 216, n_stars)
    y = rng.uniform(40, 216, n_stars)
    counts = np.full(n_stars, 2e5)
    for xi, yi, c in zip(x, y, counts, strict=True):
        ix, iy = round(xi), round(yi)
        expected[iy - 12 : iy + 13, ix - 12 : ix + 13] += c * psf.image(xi, yi)
    image = (rng.poisson(expected) + rng.normal(0, 9, shape)).astype(np.float32)
    info = VisitInfo(
        visit=1,
        detector=0,
        band="r",
        mjd_tai=61000.0,
        exptime_s=30.0,
        boresight_ra_deg=150.0,
        boresight_dec_deg=2.0,
        rotation_deg=0.0,
        airmass=1.1,
        zero_point_nominal=32.0,
    )
    exposure = Exposure(
        image=image,
        mask=np.zeros(shape, np.int32),
        variance=(np.maximum(image, 0) + 81).astype(np.float32),
        wcs=wcs,
        info=info,
    )
    ra, dec = wcs.all_pix2world(x, y, 0)
    flux = counts * 10 ** (-0.4 * (32.0 - 31.4))
    refcat = pd.DataFrame(
        {"ra": ra, "dec": dec, "r_flux": flux, "r_fluxErr": 0.01 * flux, "epoch": 61000.0}
    )
    return exposure, refcat


def _reason(excinfo: pytest.ExceptionInfo[CalibrationError]) -> str:
    return excinfo.value.reason


def test_calib_all_nan_exposure_fails_as_too_many_bad_pixels(
    pipeline_survey: SimulatedSurvey,
) -> None:
    exposure, refcat = _pipeline_visit(pipeline_survey)
    nan = dataclasses.replace(exposure, image=np.full_like(exposure.image, np.nan))
    with pytest.raises(CalibrationError, match="non-finite") as excinfo:
        calibrate(nan, refcat)
    assert _reason(excinfo) == "too_many_bad_pixels"
    assert excinfo.value.details["n_nonfinite"] == exposure.image.size


def test_calib_fully_masked_exposure_fails_as_too_many_bad_pixels(
    pipeline_survey: SimulatedSurvey,
) -> None:
    exposure, refcat = _pipeline_visit(pipeline_survey)
    masked = dataclasses.replace(exposure, mask=np.full_like(exposure.mask, mask_bits("BAD")))
    with pytest.raises(CalibrationError, match="unusable") as excinfo:
        calibrate(masked, refcat)
    assert _reason(excinfo) == "too_many_bad_pixels"
    assert isinstance(excinfo.value, ValueError)  # a plain `except ValueError` still catches it


def test_calib_some_nan_and_inf_pixels_are_masked_bad_and_calibration_goes_on(
    pipeline_survey: SimulatedSurvey,
) -> None:
    exposure, refcat = _pipeline_visit(pipeline_survey)
    image, variance = exposure.image.copy(), exposure.variance.copy()
    image[600:700, 100:180] = np.nan
    image[5, :] = np.inf
    variance[900, 50:60] = np.nan
    variance[901, 50:60] = -1.0
    result = calibrate(dataclasses.replace(exposure, image=image, variance=variance), refcat)
    cal = result.exposure
    bad = (cal.mask & mask_bits("BAD")) != 0
    assert bad[600:700, 100:180].all()
    assert bad[5, :].all()
    assert bad[900:902, 50:60].all()
    assert np.all(np.isfinite(cal.image))
    assert np.all(np.isfinite(cal.variance))
    assert np.all(cal.variance > 0)
    n_new = 100 * 80 + exposure.shape[1] + 20
    assert result.quality.n_bad_pixels >= n_new
    assert cal.zero_point is not None


def test_calib_no_overlap_with_the_reference_catalog(pipeline_survey: SimulatedSurvey) -> None:
    exposure, refcat = _pipeline_visit(pipeline_survey)
    elsewhere = refcat.assign(ra=(refcat["ra"] + 20.0) % 360.0)
    with pytest.raises(CalibrationError, match="no reference star") as excinfo:
        calibrate(exposure, elsewhere)
    assert _reason(excinfo) == "no_refcat_overlap"
    with pytest.raises(CalibrationError) as excinfo:
        calibrate(exposure, refcat.iloc[:0])
    assert _reason(excinfo) == "no_refcat_overlap"


def test_calib_two_stars_are_too_few() -> None:
    exposure, refcat = _sparse_field(2)
    with pytest.raises(CalibrationError, match="need at least 5") as excinfo:
        calibrate(exposure, refcat)
    assert _reason(excinfo) == "too_few_stars"
    assert excinfo.value.details["n_stars"] == 2


def test_calib_a_catalog_that_matches_nothing(pipeline_survey: SimulatedSurvey) -> None:
    exposure, refcat = _pipeline_visit(pipeline_survey)
    rng = np.random.default_rng(5)
    # Same area, but stars in the wrong places: no consistent offset exists.
    scrambled = refcat.assign(
        ra=refcat["ra"] + rng.uniform(-0.02, 0.02, len(refcat)),
        dec=refcat["dec"] + rng.uniform(-0.02, 0.02, len(refcat)),
    )
    with pytest.raises(CalibrationError) as excinfo:
        calibrate(exposure, scrambled)
    assert _reason(excinfo) == "too_few_matches"


def test_calib_catalog_without_the_visit_band(pipeline_survey: SimulatedSurvey) -> None:
    exposure, refcat = _pipeline_visit(pipeline_survey)
    with pytest.raises(CalibrationError, match="r_flux") as excinfo:
        calibrate(exposure, refcat.drop(columns=["r_flux"]))
    assert _reason(excinfo) == "refcat_missing_columns"


def test_calib_exposure_without_wcs(pipeline_survey: SimulatedSurvey) -> None:
    exposure, refcat = _pipeline_visit(pipeline_survey)
    with pytest.raises(CalibrationError) as excinfo:
        calibrate(dataclasses.replace(exposure, wcs=None), refcat)
    assert _reason(excinfo) == "no_wcs"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BackgroundConfig(mesh_px=0), "mesh_px"),
        (lambda: BackgroundConfig(filter_cells=2), "odd"),
        (lambda: CosmicRayConfig(threshold_sigma=-1.0), "threshold_sigma"),
        (lambda: PsfConfig(variation="pca"), "variation"),
        (lambda: PsfConfig(max_size_px=20), "odd"),
        (lambda: AstrometryConfig(fit="projective"), "similarity"),
        (lambda: AstrometryConfig(min_matches=2), "min_matches"),
        (lambda: CalibConfig(max_bad_fraction=0.0), "max_bad_fraction"),
    ],
)
def test_calib_config_checks(build: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()  # type: ignore[operator]
