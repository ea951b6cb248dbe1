"""Render one detector of one visit: sources through the true PSF and WCS, sky, noise, artifacts.

The output is what instrument signature removal hands to calibration: an image in electrons with
the sky still in, cosmic rays and satellite trails present and unmasked, saturated pixels and
bleed trails masked SAT, known bad columns masked BAD, a variance plane estimated from the image
itself, the *commanded* WCS in the header (the true pointing differs by a few arcsec) and the
*nominal* zero point (clouds and scatter make the true one differ).

Sources are drawn with GalSim on postage stamps (pixel-sampled effective PSF, ``no_pixel``) and
added to the image; noise comes from the visit's own ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np
import pandas as pd
from astropy.wcs import WCS

from .. import __version__
from ..image import Exposure, MaskPlane, VisitInfo, make_detector_wcs, mask_bits
from .artifacts import add_cosmic_rays, add_satellite_trail, bad_columns, bleed_saturation
from .config import CameraConfig, RenderConfig
from .psf import VisitPsf

__all__ = ["DetectorGeometry", "Pointing", "RenderedDetector", "mosaic", "render_detector"]

_GSPARAMS = galsim.GSParams(maximum_fft_size=8192, folding_threshold=5e-3)


@dataclass(frozen=True)
class DetectorGeometry:
    """Where a detector sits in the focal plane, and its permanent defects."""

    detector: int
    shape: tuple[int, int]
    offset_px: tuple[float, float]
    """Detector centre relative to the boresight, focal-plane pixels (x, y)."""
    bad_columns: np.ndarray

    @property
    def boresight_pixel(self) -> tuple[float, float]:
        """0-based (x, y) of the boresight in this detector's pixel grid."""
        ny, nx = self.shape
        return ((nx - 1) / 2 - self.offset_px[0], (ny - 1) / 2 - self.offset_px[1])


@dataclass(frozen=True)
class Pointing:
    """Commanded and true boresight and rotation of one visit."""

    ra_deg: float
    dec_deg: float
    rotation_deg: float
    true_ra_deg: float
    true_dec_deg: float
    true_rotation_deg: float


@dataclass
class RenderedDetector:
    """One rendered detector with its truth."""

    exposure: Exposure
    sources: pd.DataFrame
    """Drawn sources: ``id``, ``x``, ``y`` (true, 0-based), ``flux_njy``, ``counts``."""
    artifacts: list[dict[str, object]]
    wcs_true: WCS
    psf_fwhm_arcsec: float
    """True PSF FWHM at the detector centre."""
    zero_point_true: float
    sky_e_per_px: float
    """True mean sky level, electrons per pixel."""
    sky_gradient: tuple[float, float]
    """Fractional sky change across the detector in x and in y (centred on the middle)."""

    def sky_model(self) -> np.ndarray:
        """The true sky (electrons per pixel) over the detector."""
        return sky_model(self.exposure.shape, self.sky_e_per_px, self.sky_gradient)


def sky_model(shape: tuple[int, int], level: float, gradient: tuple[float, float]) -> np.ndarray:
    """A sky of mean ``level`` changing linearly by ``gradient`` (fractions) across x and y."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    return level * (1 + gradient[0] * (xx / nx - 0.5) + gradient[1] * (yy / ny - 0.5))


def mosaic(camera: CameraConfig, rng: np.random.Generator) -> list[DetectorGeometry]:
    """Detectors in a near-square grid about the boresight, each with its bad columns."""
    ny, nx = camera.detector_shape
    ncol = math.ceil(math.sqrt(camera.n_detectors))
    nrow = math.ceil(camera.n_detectors / ncol)
    out = []
    for d in range(camera.n_detectors):
        i, j = divmod(d, ncol)
        ox = (j - (ncol - 1) / 2) * (nx + camera.detector_gap_px)
        oy = (i - (nrow - 1) / 2) * (ny + camera.detector_gap_px)
        out.append(
            DetectorGeometry(d, (ny, nx), (ox, oy), bad_columns(nx, camera.n_bad_columns, rng))
        )
    return out


def field_radius_px(camera: CameraConfig) -> float:
    """Distance from the boresight to the farthest detector corner, pixels."""
    ny, nx = camera.detector_shape
    ncol = math.ceil(math.sqrt(camera.n_detectors))
    nrow = math.ceil(camera.n_detectors / ncol)
    w = ncol * nx + (ncol - 1) * camera.detector_gap_px
    h = nrow * ny + (nrow - 1) * camera.detector_gap_px
    return 0.5 * math.hypot(w, h)


def _moffat_radius_px(counts: float, fwhm_px: float, beta: float, threshold: float) -> float:
    alpha = fwhm_px / (2 * math.sqrt(2 ** (1 / beta) - 1))
    peak = counts * (beta - 1) / (math.pi * alpha**2)
    if peak <= threshold:
        return 2 * fwhm_px
    return alpha * math.sqrt((peak / threshold) ** (1 / beta) - 1)


def _add_stamp(canvas: np.ndarray, obj: galsim.GSObject, x: float, y: float, half: int) -> None:
    ny, nx = canvas.shape
    ix, iy = round(x), round(y)
    if ix + half < 0 or iy + half < 0 or ix - half >= nx or iy - half >= ny:
        return
    bounds = galsim.BoundsI(ix - half, ix + half, iy - half, iy + half)
    stamp = galsim.ImageD(bounds, scale=1.0)
    obj.drawImage(stamp, center=galsim.PositionD(x, y), method="no_pixel", add_to_image=True)
    x0, x1 = max(bounds.xmin, 0), min(bounds.xmax, nx - 1)
    y0, y1 = max(bounds.ymin, 0), min(bounds.ymax, ny - 1)
    canvas[y0 : y1 + 1, x0 : x1 + 1] += stamp.array[
        y0 - bounds.ymin : y1 - bounds.ymin + 1, x0 - bounds.xmin : x1 - bounds.xmin + 1
    ]


def render_detector(
    *,
    visit: pd.Series,
    geometry: DetectorGeometry,
    pointing: Pointing,
    psf: VisitPsf,
    camera: CameraConfig,
    render: RenderConfig,
    sources: pd.DataFrame,
    rng: np.random.Generator,
) -> RenderedDetector:
    """Render one detector.

    Parameters
    ----------
    visit
        A row of the visit table (band, times, conditions, zero points).
    sources
        Everything that may fall on the detector at the visit's time: ``id``, ``kind`` (star,
        galaxy, transient, sso), ``ra_deg``, ``dec_deg``, ``flux_njy``; galaxies also
        ``sersic_n``, ``half_light_arcsec``, ``g1``, ``g2``; moving objects ``trail_ra_deg`` and
        ``trail_dec_deg`` (the other end of the trail during the exposure).
    rng
        Generator for this detector-visit's noise and artifacts.
    """
    ny, nx = geometry.shape
    scale = camera.pixel_scale_arcsec
    wcs_kw = {
        "pixel_scale_arcsec": scale,
        "boresight_pixel": geometry.boresight_pixel,
        "distortion_k": camera.distortion_k_per_px2,
        "shape": geometry.shape,
    }
    wcs_true = make_detector_wcs(
        boresight_ra_deg=pointing.true_ra_deg,
        boresight_dec_deg=pointing.true_dec_deg,
        rotation_deg=pointing.true_rotation_deg,
        **wcs_kw,
    )
    wcs_header = make_detector_wcs(
        boresight_ra_deg=pointing.ra_deg,
        boresight_dec_deg=pointing.dec_deg,
        rotation_deg=pointing.rotation_deg,
        **wcs_kw,
    )
    zp = float(visit["zero_point_true"])
    to_counts = 10 ** (0.4 * (zp - 31.4))
    sky = 10 ** (-0.4 * (float(visit["sky_mag_arcsec2"]) - zp)) * scale**2
    threshold = 0.01 * math.sqrt(sky)
    canvas = np.zeros((ny, nx))

    drawn = pd.DataFrame(columns=["id", "x", "y", "flux_njy", "counts"])
    if len(sources):
        x, y = wcs_true.all_world2pix(
            sources["ra_deg"].to_numpy(), sources["dec_deg"].to_numpy(), 0
        )
        margin = render.stamp_max_px / 2
        on = (x > -margin) & (x < nx - 1 + margin) & (y > -margin) & (y < ny - 1 + margin)
        src = sources[on]
        x, y = x[on], y[on]
        counts = src["flux_njy"].to_numpy() * to_counts
        fx = x - geometry.boresight_pixel[0]
        fy = y - geometry.boresight_pixel[1]
        fwhm, g1, g2 = psf.params(fx, fy)
        kinds = src["kind"].to_numpy()
        # Galaxy shapes are defined north-up east-left; turn them into this detector's frame.
        rot = -pointing.true_rotation_deg * galsim.degrees
        max_half = render.stamp_max_px // 2
        trail_x = trail_y = None
        if "trail_ra_deg" in src and (kinds == "sso").any():
            trail_x, trail_y = wcs_true.all_world2pix(
                src["trail_ra_deg"].fillna(src["ra_deg"]).to_numpy(),
                src["trail_dec_deg"].fillna(src["dec_deg"]).to_numpy(),
                0,
            )
        for k in range(len(src)):
            c = float(counts[k])
            if not c > 0:
                continue
            f_px = float(fwhm[k]) / scale
            p = psf.galsim_psf(f_px, float(g1[k]), float(g2[k]))
            half = _moffat_radius_px(c, f_px, psf.beta, threshold)
            kind = kinds[k]
            cx, cy = float(x[k]), float(y[k])
            if kind == "galaxy":
                row = src.iloc[k]
                hlr = float(row["half_light_arcsec"]) / scale
                gal = galsim.Sersic(
                    n=float(row["sersic_n"]), half_light_radius=hlr, gsparams=_GSPARAMS
                )
                gal = gal.shear(g1=float(row["g1"]), g2=float(row["g2"])).rotate(rot)
                obj = galsim.Convolve(gal.withFlux(c), p, gsparams=_GSPARAMS)
                half = max(half, 4 * hlr)
            elif kind == "sso" and trail_x is not None:
                dx, dy = float(trail_x[k]) - cx, float(trail_y[k]) - cy
                length = math.hypot(dx, dy)
                if length > 0.5:
                    box = galsim.Box(length, 1e-3, gsparams=_GSPARAMS).rotate(
                        math.atan2(dy, dx) * galsim.radians
                    )
                    obj = galsim.Convolve(box, p, gsparams=_GSPARAMS).withFlux(c)
                    cx, cy = cx + dx / 2, cy + dy / 2
                    half = half + length / 2
                else:
                    obj = p.withFlux(c)
            else:
                obj = p.withFlux(c)
            _add_stamp(canvas, obj, cx, cy, int(min(max(half, 6), max_half)))
        drawn = pd.DataFrame(
            {
                "id": src["id"].to_numpy(),
                "x": x,
                "y": y,
                "flux_njy": src["flux_njy"].to_numpy(),
                "counts": counts,
            }
        )

    # Sky with a gentle gradient, then satellites (light), then photon and read noise.
    grad = render.sky_gradient_fraction * rng.uniform(-0.5, 0.5, 2)
    canvas += sky_model((ny, nx), sky, (float(grad[0]), float(grad[1])))
    artifacts: list[dict[str, object]] = []
    fwhm_centre = float(
        psf.params(np.array([geometry.offset_px[0]]), np.array([geometry.offset_px[1]]))[0][0]
    )
    if rng.uniform() < render.satellite_probability:
        artifacts.append(add_satellite_trail(canvas, fwhm_centre / scale, rng))
    image = rng.poisson(canvas).astype(np.float64) + rng.normal(
        0.0, camera.read_noise_e, canvas.shape
    )
    area_cm2 = nx * ny * (camera.pixel_size_um * 1e-4) ** 2
    n_cr = rng.poisson(
        render.cosmic_rays_per_cm2_per_min * area_cm2 * float(visit["exptime_s"]) / 60
    )
    artifacts += add_cosmic_rays(image, int(n_cr), rng)
    artifacts += bleed_saturation(image, camera.full_well_e)

    mask = np.zeros((ny, nx), np.int32)
    mask[image >= camera.full_well_e] |= mask_bits(MaskPlane.SAT)
    for col in geometry.bad_columns:
        image[:, col] = sky + rng.uniform(2000, 20000) + rng.normal(0, 50, ny)
        mask[:, col] |= mask_bits(MaskPlane.BAD)
        artifacts.append(
            {
                "kind": "bad_column",
                "x0": float(col),
                "y0": 0.0,
                "x1": float(col),
                "y1": float(ny - 1),
                "amplitude": 0.0,
            }
        )
    variance = np.maximum(image, 0.0) + camera.read_noise_e**2

    info = VisitInfo(
        visit=int(visit["visit"]),
        detector=geometry.detector,
        band=str(visit["band"]),
        mjd_tai=float(visit["mjd_tai"]),
        exptime_s=float(visit["exptime_s"]),
        boresight_ra_deg=pointing.ra_deg,
        boresight_dec_deg=pointing.dec_deg,
        rotation_deg=pointing.rotation_deg,
        airmass=float(visit["airmass"]),
        zero_point_nominal=float(visit["zero_point_nominal"]),
        gain=1.0,
        read_noise_e=camera.read_noise_e,
        saturation_e=camera.full_well_e,
    )
    exposure = Exposure(
        image=image.astype(np.float32),
        mask=mask,
        variance=variance.astype(np.float32),
        wcs=wcs_header,
        info=info,
        extra={"ORIGIN": "diaflow.sim", "SIMVER": __version__},
    )
    return RenderedDetector(
        exposure=exposure,
        sources=drawn,
        artifacts=artifacts,
        wcs_true=wcs_true,
        psf_fwhm_arcsec=fwhm_centre,
        zero_point_true=zp,
        sky_e_per_px=sky,
        sky_gradient=(float(grad[0]), float(grad[1])),
    )
