"""Detection: false-detection rate in noise, completeness, negative sources, masks, edge cases."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from measure_support import MeasuredField
from measure_support import point_field as _point_field
from measure_support import varying_psf as _varying_psf

from diaflow.errors import BadInputError, ConfigError
from diaflow.image import GaussianPsf, PixelPsf, mask_bits
from diaflow.measure import (
    DIA_SOURCE_COLUMNS,
    DetectConfig,
    MeasureConfig,
    detect,
    detect_and_measure,
    measure_dia_sources,
)
from diaflow.measure.fakes import add_point, blank_exposure, flux_for_snr


@pytest.fixture
def point_field() -> MeasuredField:
    return _point_field()


@pytest.fixture
def varying_psf() -> PixelPsf:
    return _varying_psf()


def _expected_peaks(nu: float, n_pix: int, sigma_g: float) -> float:
    """Expected peaks above nu in a PSF-filtered Gaussian noise field (Euler characteristic)."""
    return nu * math.exp(-(nu**2) / 2) / (2**2.5 * math.pi**1.5) * n_pix / sigma_g**2


def test_measure_false_detections_in_noise_at_most_twice_the_gaussian_expectation() -> None:
    sigma_g = 1.5
    psf = GaussianPsf(sigma_g, size=19)
    rng = np.random.default_rng(11)
    n_images, shape = 10, (2048, 2048)
    counts = {5.0: [0, 0], 4.0: [0, 0]}
    n_pix = {5.0: 0, 4.0: 0}
    for i in range(n_images):
        exp = blank_exposure(shape, psf=psf, noise_sigma=7.0)
        exp.image = (rng.standard_normal(shape) * 7.0).astype(np.float32)
        for nu in (5.0, 4.0) if i < 2 else (5.0,):
            peaks = detect(exp, config=DetectConfig(threshold_sigma=nu)).peaks
            counts[nu][0] += int((~peaks["is_negative"]).sum())
            counts[nu][1] += int(peaks["is_negative"].sum())
            n_pix[nu] += exp.image.size
    expected5 = _expected_peaks(5.0, n_pix[5.0], sigma_g)  # per sign, ~11 over 42M pixels
    assert sum(counts[5.0]) <= 2 * (2 * expected5)
    assert max(counts[5.0]) <= 2 * expected5 + 3 * math.sqrt(2 * expected5)
    # The normalisation, where counts are large: near the expectation (pixel sampling of the
    # filtered field loses some excursions), never above it by more than the noise.
    expected4 = _expected_peaks(4.0, n_pix[4.0], sigma_g)
    for n in counts[4.0]:
        assert 0.55 * expected4 <= n <= expected4 + 3 * math.sqrt(expected4)


def test_measure_significance_is_unit_normal_next_to_masks_and_edges() -> None:
    psf = GaussianPsf(1.8, size=25)
    rng = np.random.default_rng(12)
    exp = blank_exposure((512, 512), psf=psf, noise_sigma=3.0)
    var = rng.uniform(4.0, 16.0) * np.ones(exp.shape)
    var[:, 256:] *= 4.0  # a step in the noise
    exp.variance = var.astype(np.float32)
    exp.image = (rng.standard_normal(exp.shape) * np.sqrt(var)).astype(np.float32)
    exp.mask[:, 100] |= np.int32(mask_bits("BAD"))
    exp.image[:, 100] = 1e6  # garbage under the mask must not leak
    sig = detect(exp).significance
    assert 0.97 < float(sig[:, :].std()) < 1.03
    assert 0.93 < float(sig[:, 95:106].std()) < 1.07
    assert 0.93 < float(sig[:, :8].std()) < 1.07


def _grid_field(psf: PixelPsf, snrs: list[float], seed: int, spacing: int = 32):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    exp = blank_exposure((2048, 2048), psf=psf, noise_sigma=6.0)
    ys, xs = np.mgrid[40:2010:spacing, 40:2010:spacing]
    xs = xs.ravel() + rng.uniform(-0.5, 0.5, xs.size)
    ys = ys.ravel() + rng.uniform(-0.5, 0.5, ys.size)
    pick = rng.permutation(xs.size)[: len(snrs)]
    signal = np.zeros(exp.shape)
    signs = np.where(rng.uniform(size=len(snrs)) < 0.5, -1.0, 1.0)
    for k, snr, sign in zip(pick, snrs, signs, strict=True):
        add_point(signal, psf, xs[k], ys[k], sign * flux_for_snr(psf, xs[k], ys[k], snr, 6.0))
    exp.image = (signal + rng.standard_normal(exp.shape) * 6.0).astype(np.float32)
    return exp, xs[pick], ys[pick], signs


def test_measure_completeness_at_snr_7_and_5p5(varying_psf: PixelPsf) -> None:
    snrs = [7.0] * 700 + [5.5] * 700
    exp, x, y, signs = _grid_field(varying_psf, snrs, seed=13)
    peaks = detect(exp).peaks
    px, py = peaks["x"].to_numpy(), peaks["y"].to_numpy()
    d = np.hypot(x[:, None] - px[None, :], y[:, None] - py[None, :]).min(axis=1)
    found = d <= 2.0
    snr = np.array(snrs)
    assert found[snr == 7.0].mean() >= 0.95
    assert found[snr == 5.5].mean() >= 0.50
    # Negative sources are found as often as positive ones.
    neg, pos = found[(snr == 7.0) & (signs < 0)].mean(), found[(snr == 7.0) & (signs > 0)].mean()
    assert neg >= 0.95
    assert pos >= 0.95


def test_measure_negative_sources_are_found_and_signed(point_field: MeasuredField) -> None:
    truth, got = point_field.matched()
    assert len(truth) >= 0.99 * len(point_field.truth)
    assert np.array_equal(got["isNegative"].to_numpy(), truth["flux"].to_numpy() < 0)
    assert (np.sign(got["psfFlux"]) == np.sign(truth["flux"])).all()


def test_measure_footprints_set_detected_mask_bits(point_field: MeasuredField) -> None:
    det = point_field.detections
    pos = (det.mask & mask_bits("DETECTED")) != 0
    neg = (det.mask & mask_bits("DETECTED_NEGATIVE")) != 0
    for row in det.peaks.itertuples():
        assert (neg if row.is_negative else pos)[row.y, row.x]
    assert not (point_field.exposure.mask & mask_bits("DETECTED")).any()  # input untouched
    assert 0.001 < pos.mean() < 0.2


def test_measure_empty_image_gives_zero_rows_with_full_schema() -> None:
    psf = GaussianPsf(1.8, size=25)
    exp = blank_exposure((256, 256), psf=psf, noise_sigma=5.0)
    table, det = detect_and_measure(exp)
    assert len(det) == 0
    assert len(table) == 0
    assert list(table.columns) == list(DIA_SOURCE_COLUMNS)
    assert [str(t) for t in table.dtypes] == list(DIA_SOURCE_COLUMNS.values())


def test_measure_detect_rejects_missing_psf_and_unusable_images(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exp = blank_exposure((64, 64), psf=GaussianPsf(1.5, size=15), noise_sigma=1.0)
    exp.psf = None
    with pytest.raises(BadInputError, match="no PSF model") as err:
        detect(exp)
    assert err.value.reason == "no_psf"
    exp.psf = GaussianPsf(1.5, size=15)
    exp.mask[:] = mask_bits("NO_DATA")
    with pytest.raises(BadInputError, match="no pixel is usable") as err:
        detect(exp)
    assert err.value.reason == "no_usable_pixels"
    exp.mask[:] = 0
    exp.image[3, 3] = np.nan
    with caplog.at_level(logging.WARNING):
        assert len(detect(exp)) == 0
    assert "1 unmasked pixels have a non-finite value" in caplog.text


def test_measure_measure_rejects_mismatched_inputs() -> None:
    psf = GaussianPsf(1.5, size=15)
    exp = blank_exposure((64, 64), psf=psf, noise_sigma=1.0)
    det = detect(exp)
    other = blank_exposure((64, 32), psf=psf, noise_sigma=1.0)
    with pytest.raises(BadInputError, match="science shape") as err:
        measure_dia_sources(exp, det, science=other)
    assert err.value.reason == "shape_mismatch"
    with pytest.raises(BadInputError, match="detections were made on a"):
        measure_dia_sources(other, det)
    exp.wcs = None
    with pytest.raises(BadInputError, match="no WCS"):
        measure_dia_sources(exp, det)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold_sigma": 0.0}, "threshold_sigma must be > 0, got 0.0"),
        ({"min_pixels": 0}, "min_pixels must be >= 1, got 0"),
        ({"ignore_planes": ("BAD", "NOPE")}, "unknown mask planes \\['NOPE'\\]"),
    ],
)
def test_measure_detect_config_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DetectConfig(**kwargs)  # type: ignore[arg-type]


def test_measure_measure_config_checks() -> None:
    with pytest.raises(ConfigError, match="aperture_radius_px must be > 0, got -1"):
        MeasureConfig(aperture_radius_px=-1)
    with pytest.raises(ConfigError, match="dipole_min_flux_ratio in \\[0, 1\\]"):
        MeasureConfig(dipole_min_flux_ratio=2.0)
