"""Subtraction pieces and edge cases on small synthetic images with Gaussian PSFs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from diffim_sim import gaussian_pair
from scipy.signal import convolve2d

from diaflow.diffim import (
    DifferencePsf,
    KernelConfig,
    StampConfig,
    SubtractConfig,
    alard_lupton_basis,
    decorrelation_kernel,
    subtract,
)
from diaflow.diffim.fourier import kernel_spectra, poly_map
from diaflow.diffim.masking import dilate_bits
from diaflow.errors import ConfigError, SubtractionError
from diaflow.image import Exposure, GaussianPsf, MaskPlane, mask_bits, poly_terms

# --- kernel basis ---------------------------------------------------------------------------


def test_diffim_basis_normalisation_and_orthonormality() -> None:
    basis = alard_lupton_basis((0.8, 1.6, 3.2), (6, 4, 2), 10)
    images = basis.images()
    assert images.shape == (28 + 15 + 6, 21, 21)
    assert images[0].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(images[1:].sum(axis=(1, 2)), 0.0, atol=1e-10)
    flat = images[1:].reshape(len(images) - 1, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(len(flat)), atol=1e-10)


def test_diffim_basis_cutout_convolution_matches_direct() -> None:
    basis = alard_lupton_basis((0.9, 1.8), (3, 1), 6)
    cutouts = np.random.default_rng(0).normal(size=(2, 27, 27))
    got = basis.convolve_cutouts(cutouts)
    want = np.array([[convolve2d(c, b, mode="valid") for b in basis.images()] for c in cutouts])
    np.testing.assert_allclose(got, want, atol=1e-10)


# --- Fourier helpers ------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(64, 64), (45, 50)])
def test_diffim_kernel_spectra_match_padded_fft(grid: tuple[int, int]) -> None:
    kernels = np.random.default_rng(1).normal(size=(2, 9, 9))
    got = kernel_spectra(kernels, grid, dtype=np.complex128)
    for k, kernel in enumerate(kernels):
        padded = np.zeros(grid)
        padded[:9, :9] = kernel
        want = np.fft.rfft2(np.roll(padded, (-4, -4), axis=(0, 1)))
        np.testing.assert_allclose(got[k], want, atol=1e-10)


def test_diffim_poly_map_matches_poly_terms() -> None:
    coeffs = np.array([1.0, -0.5, 0.25, 2.0, 0.1, -0.3])
    shape = (7, 9)
    yy, xx = np.mgrid[0:7, 0:9]
    u, v = 2 * xx / 8 - 1, 2 * yy / 6 - 1
    want = np.tensordot(coeffs, poly_terms(u, v, 2), axes=1)
    np.testing.assert_allclose(poly_map(coeffs, 2, shape, np.float64), want, atol=1e-12)


def test_diffim_mask_growth_keeps_planes_apart() -> None:
    mask = np.zeros((40, 40), np.int32)
    mask[10, 10] = mask_bits(MaskPlane.BAD)
    mask[30, 30] = mask_bits(MaskPlane.SAT) | mask_bits(MaskPlane.DETECTED)
    grown = dilate_bits(mask, 2, ~mask_bits(MaskPlane.DETECTED))
    assert (grown[8:13, 8:13] == mask_bits(MaskPlane.BAD)).all()
    assert (grown[28:33, 28:33] == mask_bits(MaskPlane.SAT)).all()
    assert grown[7, 10] == 0
    assert grown[10, 13] == 0
    assert int(np.count_nonzero(grown)) == 50


# --- decorrelation --------------------------------------------------------------------------


def test_diffim_decorrelation_kernel_whitens_the_noise_spectrum() -> None:
    kernel = GaussianPsf(1.5, size=21).kernel(0, 0) * 1.2
    phi = decorrelation_kernel(kernel, var_target=100.0, var_convolved=40.0, half_width_px=10)
    assert phi.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(phi, phi[::-1, ::-1], atol=1e-12)
    # Noise power of phi * (Y - K * X) is flat at var_Y + kappa^2 var_X.
    grid = 128
    pad = np.zeros((grid, grid))
    pad[:21, :21] = phi
    phi_hat = np.fft.fft2(np.roll(pad, (-10, -10), axis=(0, 1)))
    padk = np.zeros((grid, grid))
    padk[:21, :21] = kernel
    k_hat = np.fft.fft2(np.roll(padk, (-10, -10), axis=(0, 1)))
    power = np.abs(phi_hat) ** 2 * (100.0 + 40.0 * np.abs(k_hat) ** 2)
    np.testing.assert_allclose(power, 100.0 + 40.0 * 1.2**2, rtol=2e-3)


def test_diffim_decorrelation_is_identity_without_template_noise() -> None:
    kernel = GaussianPsf(1.5, size=21).kernel(0, 0)
    phi = decorrelation_kernel(kernel, var_target=100.0, var_convolved=0.0, half_width_px=5)
    assert phi[5, 5] == pytest.approx(1.0, abs=1e-9)


# --- the subtraction on Gaussian PSFs -------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> tuple[Exposure, Exposure]:
    science, template, _ = gaussian_pair(2.2, 1.4)
    return science, template


def test_diffim_kernel_recovers_gaussian_matching_width(
    pair: tuple[Exposure, Exposure],
) -> None:
    science, template = pair
    res = subtract(science, template)
    assert res.convolved == "template"
    kernel = res.solution.kernel(192.0, 192.0)  # type: ignore[union-attr]
    h = kernel.shape[0] // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    norm = kernel.sum()
    sigma2 = float(((xx**2 + yy**2) * kernel).sum() / norm / 2)
    assert np.sqrt(sigma2) == pytest.approx(np.sqrt(2.2**2 - 1.4**2), rel=0.05)
    assert norm == pytest.approx(1.0, abs=0.01)


def test_diffim_gaussian_pair_noise_matches_variance(
    pair: tuple[Exposure, Exposure],
) -> None:
    science, template = pair
    res = subtract(science, template)
    assert 0.95 < res.quality.noise_ratio < 1.05
    assert isinstance(res.difference.psf, DifferencePsf)
    assert res.difference.psf.kernel(100, 100).sum() == pytest.approx(1.0)


# --- errors and edge cases ------------------------------------------------------------------


def test_diffim_too_few_stamps(pair: tuple[Exposure, Exposure]) -> None:
    science, template = pair
    cfg = SubtractConfig(stamps=StampConfig(min_stamps=500, max_stamps=500))
    with pytest.raises(SubtractionError, match="kernel stamps") as info:
        subtract(science, template, config=cfg)
    assert info.value.reason == "too_few_stamps"
    assert info.value.details["min_stamps"] == 500


def test_diffim_empty_sky_has_no_stamps() -> None:
    science, template, _ = gaussian_pair(2.0, 1.5, n_stars=0, shape=(128, 128))
    with pytest.raises(SubtractionError) as info:
        subtract(science, template)
    assert info.value.reason == "too_few_stamps"


def test_diffim_shape_mismatch(pair: tuple[Exposure, Exposure]) -> None:
    science, template = pair
    small = dataclasses.replace(
        template,
        image=template.image[:-1],
        mask=template.mask[:-1],
        variance=template.variance[:-1],
    )
    with pytest.raises(SubtractionError, match="warp the template") as info:
        subtract(science, small)
    assert info.value.reason == "shape_mismatch"


def test_diffim_needs_psfs(pair: tuple[Exposure, Exposure]) -> None:
    science, template = pair
    with pytest.raises(SubtractionError, match="no PSF model") as info:
        subtract(science, dataclasses.replace(template, psf=None))
    assert info.value.reason == "no_psf"


def test_diffim_all_masked(pair: tuple[Exposure, Exposure]) -> None:
    science, template = pair
    masked = dataclasses.replace(
        science, mask=np.full(science.shape, mask_bits(MaskPlane.BAD), np.int32)
    )
    with pytest.raises(SubtractionError, match="every pixel") as info:
        subtract(masked, template)
    assert info.value.reason == "no_good_pixels"


def test_diffim_nan_pixels_are_masked_not_spread(
    pair: tuple[Exposure, Exposure],
) -> None:
    science, template = pair
    image = template.image.copy()
    image[200, 150:160] = np.nan
    res = subtract(science, dataclasses.replace(template, image=image))
    diff = res.difference
    assert np.isfinite(diff.image).all()
    assert np.isfinite(diff.variance).all()
    assert (diff.variance > 0).all()
    assert diff.mask[200, 155] != 0
    assert 0.95 < res.quality.noise_ratio < 1.05


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: KernelConfig(basis_degrees=()), "basis_degrees"),
        (lambda: KernelConfig(basis_sigma_ratio=1.0), "basis_sigma_ratio"),
        (lambda: KernelConfig(min_half_width_px=20, max_half_width_px=10), "half-widths"),
        (lambda: KernelConfig(spatial_order=7), "spatial_order"),
        (lambda: KernelConfig(power_penalty=-1.0), "power_penalty"),
        (lambda: StampConfig(min_stamps=0), "min_stamps"),
        (lambda: StampConfig(bad_mask_planes=("NOPE",)), "NOPE"),
        (lambda: SubtractConfig(method="magic"), "method"),  # type: ignore[arg-type]
        (lambda: SubtractConfig(convolve="both"), "convolve"),  # type: ignore[arg-type]
    ],
)
def test_diffim_config_rejects_bad_values(make: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("method", ["al", "zogy"])
def test_diffim_inputs_are_left_alone(pair: tuple[Exposure, Exposure], method: str) -> None:
    science, template = pair
    image = template.image.copy()
    image[100, 100] = np.nan
    template = dataclasses.replace(template, image=image)
    before = [p.copy() for e in (science, template) for p in (e.image, e.variance, e.mask)]
    subtract(science, template, config=SubtractConfig(method=method))  # type: ignore[arg-type]
    after = [p for e in (science, template) for p in (e.image, e.variance, e.mask)]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_diffim_variance_rescaling(pair: tuple[Exposure, Exposure]) -> None:
    """A science variance plane 2x too small: rescaling puts the noise ratio at 1."""
    science, template = pair
    wrong = dataclasses.replace(science, variance=science.variance / 2)
    plain = subtract(wrong, template)
    fixed = subtract(wrong, template, config=SubtractConfig(rescale_variance=True))
    assert plain.quality.noise_ratio > 1.2
    assert fixed.quality.noise_ratio == pytest.approx(plain.quality.noise_ratio)
    diff = fixed.difference
    z = diff.image[diff.mask == 0] / np.sqrt(diff.variance[diff.mask == 0])
    assert 1.4826 * float(np.median(np.abs(z - np.median(z)))) == pytest.approx(1.0, abs=0.01)
