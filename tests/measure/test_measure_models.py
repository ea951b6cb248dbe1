"""Trailed-source and dipole fits against injected truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from measure_support import varying_psf as _varying_psf

from diaflow.image import Exposure, GaussianPsf, PixelPsf
from diaflow.measure import MeasureConfig, detect, measure_dia_sources
from diaflow.measure.fakes import add_point, add_trail, blank_exposure, flux_for_snr

NOISE = 5.0


@pytest.fixture
def varying_psf() -> PixelPsf:
    return _varying_psf()


def _bearing(exp: Exposure, x: float, y: float, angle: float, step: float = 0.5) -> float:
    """Position angle (deg east of north) of the pixel direction ``angle`` at (x, y)."""
    dx, dy = step * math.cos(angle), step * math.sin(angle)
    (ra0, ra1), (de0, de1) = exp.wcs.all_pix2world([x - dx, x + dx], [y - dy, y + dy], 0)  # type: ignore[union-attr]
    east = (ra1 - ra0) * math.cos(math.radians(0.5 * (de0 + de1)))
    return math.degrees(math.atan2(east, de1 - de0)) % 360.0


def _nearest(table, x: float, y: float):  # type: ignore[no-untyped-def]
    d = np.hypot(table["x"] - x, table["y"] - y)
    return table.iloc[int(np.argmin(d))], float(d.min())


def test_measure_trail_fit_recovers_length_angle_and_flux(varying_psf: PixelPsf) -> None:
    rng = np.random.default_rng(31)
    exp = blank_exposure((1024, 1024), psf=varying_psf, noise_sigma=NOISE)
    signal = np.zeros(exp.shape)
    truth = []
    for k, length in enumerate([5.0, 10.0, 20.0, 40.0] * 5):
        x, y = 90 + 160 * (k % 6) + rng.uniform(), 90 + 200 * (k // 6) + rng.uniform()
        angle = rng.uniform(0, np.pi)
        flux = flux_for_snr(varying_psf, x, y, 150.0, NOISE)
        add_trail(signal, varying_psf, x, y, flux, length, angle, step_px=0.05)
        truth.append((x, y, length, angle, flux))
    exp.image = (signal + rng.standard_normal(exp.shape) * NOISE).astype(np.float32)
    table = measure_dia_sources(exp, detect(exp), config=MeasureConfig(reliability=False))
    to_njy, scale = float(exp.counts_to_njy(1.0)), 0.2
    for x, y, length, angle, flux in truth:
        near = table[np.hypot(table["x"] - x, table["y"] - y) < length / 2 + 5]
        assert len(near) == 1, f"trail of {length} px at ({x:.0f}, {y:.0f}) gave {len(near)}"
        row = near.iloc[0]
        assert not row["trail_flag"]
        rel = 0.1 if length == 5 else 0.04
        assert abs(row["trailLength"] / scale - length) < rel * length
        expected = _bearing(exp, x, y, angle) % 180.0
        d_angle = abs((row["trailAngle"] - expected + 90) % 180 - 90)
        assert d_angle < (5.0 if length == 5 else 1.5)
        assert d_angle < 5 * row["trailAngleErr"] + 0.2
        assert abs(row["trailFlux"] / (flux * to_njy) - 1) < 0.05
        ra, dec = exp.wcs.all_pix2world([x], [y], 0)  # type: ignore[union-attr]
        off_arcsec = 3600 * math.hypot((row["trailRa"] - ra[0]) * math.cos(math.radians(dec[0])),
                                       row["trailDec"] - dec[0])  # fmt: skip
        assert off_arcsec < 0.05
        assert abs(row["trailLength"] / scale - length) < 5 * row["trailLengthErr"] / scale + 0.2


def _dipole_images(psf: PixelPsf | GaussianPsf, seed: int, n: int = 24):  # type: ignore[no-untyped-def]
    """Science, template and difference of misregistered stars (S/N 200 in the science)."""
    rng = np.random.default_rng(seed)
    shape = (720, 720)
    sci = blank_exposure(shape, psf=psf, noise_sigma=NOISE)
    tmpl = blank_exposure(shape, psf=psf, noise_sigma=NOISE / 2)
    diff = blank_exposure(shape, psf=psf, noise_sigma=NOISE)
    s_img, t_img = np.zeros(shape), np.zeros(shape)
    truth = []
    for k in range(n):
        x, y = 60 + 120 * (k % 6) + rng.uniform(), 60 + 120 * (k // 6) + rng.uniform()
        sep, angle = [0.5, 0.8, 1.1, 1.5][k % 4], rng.uniform(0, 2 * np.pi)
        flux = flux_for_snr(psf, x, y, 200.0, NOISE)
        hx, hy = 0.5 * sep * math.cos(angle), 0.5 * sep * math.sin(angle)
        add_point(s_img, psf, x + hx, y + hy, flux)
        add_point(t_img, psf, x - hx, y - hy, flux)
        truth.append((x, y, sep, angle, flux))
    s_var, t_var = NOISE**2 + s_img, (NOISE / 2) ** 2 + t_img
    sci.image = (s_img + rng.standard_normal(shape) * np.sqrt(s_var)).astype(np.float32)
    tmpl.image = (t_img + rng.standard_normal(shape) * np.sqrt(t_var)).astype(np.float32)
    sci.variance, tmpl.variance = s_var.astype(np.float32), t_var.astype(np.float32)
    diff.image = sci.image - tmpl.image
    diff.variance = (s_var + t_var).astype(np.float32)
    return sci, tmpl, diff, truth


def test_measure_dipole_fit_recovers_separation_and_fluxes(varying_psf: PixelPsf) -> None:
    sci, tmpl, diff, truth = _dipole_images(varying_psf, seed=32)
    det = detect(diff)
    config = MeasureConfig(reliability=False)
    with_images = measure_dia_sources(diff, det, science=sci, template=tmpl, config=config)
    alone = measure_dia_sources(diff, det, config=config)
    to_njy, scale = float(diff.counts_to_njy(1.0)), 0.2
    for x, y, sep, angle, flux in truth:
        row, dist = _nearest(with_images, x, y)
        assert dist < 1.0
        assert row["isDipole"]
        assert row["dipoleFitAttempted"]
        assert len(with_images[np.hypot(with_images["x"] - x, with_images["y"] - y) < 15]) == 1
        assert abs(row["dipoleLength"] / scale - sep) < 0.1
        assert abs(row["dipoleMeanFlux"] / (flux * to_njy) - 1) < 0.03
        assert abs(row["dipoleFluxDiff"]) < 4 * row["dipoleFluxDiffErr"]
        # Lobe positions are good to ~0.02 px: the angle to ~2.3 / sep degrees (rms).
        d_angle = abs((row["dipoleAngle"] - _bearing(diff, x, y, angle) + 180) % 360 - 180)
        assert d_angle < 9.0 / sep
        # The difference image alone pins the dipole moment (flux times separation), not the
        # flux and the separation apart.
        solo, _ = _nearest(alone, x, y)
        assert solo["isDipole"]
        moment = solo["dipoleMeanFlux"] * solo["dipoleLength"] / scale
        assert abs(moment / (flux * to_njy * sep) - 1) < 0.2
        d_angle = abs((solo["dipoleAngle"] - _bearing(diff, x, y, angle) + 180) % 360 - 180)
        assert d_angle < 15.0


def test_measure_isolated_sources_are_not_dipoles() -> None:
    psf = GaussianPsf(1.8, size=25)
    rng = np.random.default_rng(33)
    exp = blank_exposure((512, 512), psf=psf, noise_sigma=NOISE)
    signal = np.zeros(exp.shape)
    for k in range(36):
        x, y = 40 + 80 * (k % 6) + rng.uniform(), 40 + 80 * (k // 6) + rng.uniform()
        sign = 1.0 if k % 2 else -1.0
        add_point(signal, psf, x, y, sign * flux_for_snr(psf, x, y, rng.uniform(8, 300), NOISE))
    exp.image = (signal + rng.standard_normal(exp.shape) * NOISE).astype(np.float32)
    table = measure_dia_sources(exp, detect(exp), config=MeasureConfig(reliability=False))
    assert len(table) == 36
    assert not table["isDipole"].any()
    assert table["dipoleFitAttempted"].mean() < 0.2
