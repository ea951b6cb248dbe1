"""Synthetic difference images with truth, for tests and for training the real/bogus model.

A difference image here is Gaussian noise with a known variance plane (sky plus, optionally,
the sources' own Poisson variance) plus injected signal drawn with a known PSF: point sources of
either sign, dipoles (a PSF minus a shifted PSF, as left by misregistration), trailed sources (a
PSF smeared along a segment), and artifacts (sharp cosmic-ray hits, leftovers of bad columns,
pieces of satellite streaks), with a TAN WCS and a zero point so fluxes convert to nJy. Each
function returns what it drew, so tests compare measurements with truth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage

from ..image import Exposure, PixelPsf, PsfModel, VisitInfo, make_detector_wcs, mask_bits

__all__ = [
    "SyntheticDifference",
    "add_bad_column",
    "add_cosmic_ray",
    "add_point",
    "add_streak",
    "add_trail",
    "blank_exposure",
    "flux_for_snr",
    "inject_point_sources",
    "moffat_psf",
    "point_stamp",
    "simulate_difference",
]


def moffat_psf(
    fwhm_px: float,
    *,
    beta: float = 3.5,
    g1: float = 0.0,
    g2: float = 0.0,
    size: int = 31,
    shape: tuple[int, int] = (4096, 4096),
) -> PixelPsf:
    """A PSF the same everywhere: a (sheared) Moffat profile sampled at pixel centres with
    GalSim, as the survey simulator draws its stars."""
    import galsim

    prof = galsim.Moffat(beta=beta, fwhm=fwhm_px).shear(g1=g1, g2=g2)
    stamp = prof.drawImage(nx=size, ny=size, scale=1.0, method="no_pixel").array
    stamp = np.asarray(stamp, dtype=np.float64)
    return PixelPsf(stamp[None] / stamp.sum(), 0, shape)


def point_stamp(psf: PsfModel, x: float, y: float) -> NDArray[np.float64]:
    """Unit-flux PSF image of a source at (x, y), on the grid about ``round(x), round(y)``."""
    image = getattr(psf, "image", None)
    if callable(image):
        return np.asarray(image(x, y), dtype=np.float64)
    k = np.asarray(psf.kernel(x, y), dtype=np.float64)
    out = ndimage.shift(k, (y - round(y), x - round(x)), order=3, mode="constant")
    return out / out.sum()


def _add(image: NDArray[np.floating], stamp: NDArray[np.float64], ix: int, iy: int) -> None:
    """Add a stamp centred on pixel (ix, iy), clipped to the image."""
    h = stamp.shape[0] // 2
    ny, nx = image.shape
    ya, yb, xa, xb = max(iy - h, 0), min(iy + h + 1, ny), max(ix - h, 0), min(ix + h + 1, nx)
    if ya >= yb or xa >= xb:
        return
    image[ya:yb, xa:xb] += stamp[ya - iy + h : yb - iy + h, xa - ix + h : xb - ix + h]


def add_point(image: NDArray[np.floating], psf: PsfModel, x: float, y: float, flux: float) -> None:
    """Add a point source of ``flux`` counts (negative for a negative source) at (x, y)."""
    _add(image, flux * point_stamp(psf, x, y), round(x), round(y))


def inject_point_sources(
    exposure: Exposure,
    psf: PsfModel,
    xy: NDArray[np.float64],
    counts: NDArray[np.float64],
    *,
    rng: np.random.Generator,
) -> Exposure:
    """A copy of a (raw, sky-in) exposure with point sources added as the camera would see them:
    ``counts`` (ADU, positive) at ``xy`` drawn with ``psf``, plus their photon noise (Gaussian
    with the Poisson variance, through the gain), which is added to the variance plane too."""
    model = np.zeros(exposure.shape, dtype=np.float64)
    for (x, y), c in zip(np.asarray(xy, dtype=np.float64), counts, strict=True):
        add_point(model, psf, float(x), float(y), float(c))
    model = np.clip(model, 0.0, None)
    gain = exposure.info.gain
    noise = rng.normal(size=model.shape) * np.sqrt(model / gain)
    return dataclasses.replace(
        exposure,
        image=(exposure.image + model + noise).astype(np.float32),
        variance=(exposure.variance + model / gain).astype(np.float32),
    )


def add_trail(
    image: NDArray[np.floating],
    psf: PsfModel,
    x: float,
    y: float,
    flux: float,
    length_px: float,
    angle_rad: float,
    *,
    step_px: float = 0.2,
) -> None:
    """Add a trailed source: ``flux`` spread evenly along a segment centred on (x, y)."""
    n = max(math.ceil(length_px / step_px), 1)
    t = (np.arange(n) + 0.5) / n - 0.5
    for ti in t:
        add_point(
            image,
            psf,
            x + ti * length_px * math.cos(angle_rad),
            y + ti * length_px * math.sin(angle_rad),
            flux / n,
        )


def add_cosmic_ray(
    image: NDArray[np.floating],
    x: float,
    y: float,
    charge: float,
    length_px: float,
    angle_rad: float,
) -> list[tuple[int, int]]:
    """Deposit a sharp cosmic-ray track of total ``charge`` counts; returns the pixels hit."""
    ny, nx = image.shape
    n = max(int(length_px * 4), 1)
    t = np.linspace(0.0, 1.0, n)
    xs = np.clip(np.rint(x + t * length_px * math.cos(angle_rad)), 0, nx - 1).astype(int)
    ys = np.clip(np.rint(y + t * length_px * math.sin(angle_rad)), 0, ny - 1).astype(int)
    np.add.at(image, (ys, xs), charge / n)
    return sorted(set(zip(xs.tolist(), ys.tolist(), strict=True)))


def add_bad_column(
    image: NDArray[np.floating],
    mask: NDArray[np.int32],
    x: int,
    y0: int,
    y1: int,
    level: float,
    *,
    leak: float = 0.3,
    masked: bool = True,
) -> None:
    """A defective column: ``level`` counts per pixel on column ``x`` (masked BAD when
    ``masked``) and ``leak * level`` on its unmasked neighbours, rows ``y0`` to ``y1``."""
    image[y0:y1, x] += level
    if masked:
        mask[y0:y1, x] |= np.int32(mask_bits("BAD"))
    for xn in (x - 1, x + 1):
        if 0 <= xn < image.shape[1]:
            image[y0:y1, xn] += leak * level


def add_streak(
    image: NDArray[np.floating],
    mask: NDArray[np.int32],
    x: float,
    y: float,
    angle_rad: float,
    peak: float,
    width_px: float,
    *,
    masked: bool = False,
) -> None:
    """A satellite streak through (x, y): a line with a Gaussian cross-section of FWHM
    ``width_px`` and ``peak`` counts, across the whole image (masked STREAK when ``masked``)."""
    ny, nx = image.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    d = (xx - x) * -math.sin(angle_rad) + (yy - y) * math.cos(angle_rad)
    sigma = width_px / 2.3548
    band = np.abs(d) < 5 * sigma
    image[band] += peak * np.exp(-0.5 * (d[band] / sigma) ** 2)
    if masked:
        mask[np.abs(d) < 1.5 * sigma] |= np.int32(mask_bits("STREAK"))


def blank_exposure(
    shape: tuple[int, int],
    *,
    psf: PsfModel,
    noise_sigma: float,
    zero_point: float = 28.0,
    visit: int = 1,
    detector: int = 0,
    band: str = "r",
    mjd_tai: float = 61000.25,
    pixel_scale_arcsec: float = 0.2,
    ra_deg: float = 150.0,
    dec_deg: float = 2.0,
    rotation_deg: float = 30.0,
    edge_px: int = 0,
) -> Exposure:
    """A noise-free, source-free exposure (image zero, variance ``noise_sigma**2``) with a TAN
    WCS centred on (``ra_deg``, ``dec_deg``), a zero point and, optionally, an EDGE border."""
    ny, nx = shape
    wcs = make_detector_wcs(
        boresight_ra_deg=ra_deg,
        boresight_dec_deg=dec_deg,
        rotation_deg=rotation_deg,
        pixel_scale_arcsec=pixel_scale_arcsec,
        boresight_pixel=((nx - 1) / 2, (ny - 1) / 2),
        shape=shape,
    )
    info = VisitInfo(
        visit=visit,
        detector=detector,
        band=band,
        mjd_tai=mjd_tai,
        exptime_s=30.0,
        boresight_ra_deg=ra_deg,
        boresight_dec_deg=dec_deg,
        rotation_deg=rotation_deg,
        airmass=1.2,
        zero_point_nominal=zero_point,
    )
    mask = np.zeros(shape, dtype=np.int32)
    if edge_px:
        edge = np.ones(shape, dtype=bool)
        edge[edge_px:-edge_px, edge_px:-edge_px] = False
        mask[edge] |= np.int32(mask_bits("EDGE"))
    return Exposure(
        image=np.zeros(shape, dtype=np.float32),
        mask=mask,
        variance=np.full(shape, noise_sigma**2, dtype=np.float32),
        wcs=wcs,
        info=info,
        zero_point=zero_point,
        psf=psf,
    )


def flux_for_snr(psf: PsfModel, x: float, y: float, snr: float, noise_sigma: float) -> float:
    """Flux (counts) of a point source with optimal PSF-fit S/N ``snr`` on sky noise only."""
    k = np.asarray(psf.kernel(x, y), dtype=np.float64)
    k = k / k.sum()
    return float(snr * noise_sigma / math.sqrt(float((k**2).sum())))


@dataclass(frozen=True)
class SyntheticDifference:
    """A synthetic difference image and what was injected into it."""

    exposure: Exposure
    truth: pd.DataFrame
    """One row per injection: ``id``, ``kind`` (point, trail, dipole, cosmic_ray, bad_column,
    streak), ``real`` (astrophysical: points and trails), ``x``, ``y`` (0-based px), ``flux``
    (counts; per lobe for dipoles; per pixel for columns and streaks), ``flux_njy``, ``snr``
    (optimal PSF S/N of a point source of that flux on sky noise), ``length_px``, ``angle_rad``
    (trails, streaks, cosmic rays; dipoles: from the negative to the positive lobe),
    ``separation_px`` (dipoles)."""


def _positions(
    rng: np.random.Generator, n: int, shape: tuple[int, int], margin: float, spacing: float
) -> NDArray[np.float64]:
    ny, nx = shape
    out: list[tuple[float, float]] = []
    for _ in range(50 * n + 100):
        if len(out) == n:
            break
        p = (rng.uniform(margin, nx - 1 - margin), rng.uniform(margin, ny - 1 - margin))
        if all(math.hypot(p[0] - q[0], p[1] - q[1]) >= spacing for q in out):
            out.append(p)
    return np.array(out).reshape(-1, 2)


def simulate_difference(
    shape: tuple[int, int],
    *,
    psf: PsfModel,
    rng: np.random.Generator,
    noise_sigma: float = 10.0,
    counts: dict[str, int] | None = None,
    snr_range: tuple[float, float] = (5.0, 100.0),
    negative_fraction: float = 0.3,
    source_noise: bool = True,
    spacing_px: float = 40.0,
    edge_px: int = 0,
    masked_fraction: float = 0.0,
    **exposure_kw: object,
) -> SyntheticDifference:
    """Draw a difference image with a mix of real sources and artifacts.

    Parameters
    ----------
    counts
        How many of each kind: ``point``, ``trail``, ``dipole``, ``cosmic_ray``, ``bad_column``,
        ``streak`` (missing kinds: none).
    snr_range
        Point and trail S/N are drawn log-uniformly in this range.
    negative_fraction
        Fraction of points and trails that are negative (fading sources).
    source_noise
        Add the sources' Poisson variance (gain 1) to the variance plane and to the noise.
    spacing_px
        Smallest distance between injections.
    masked_fraction
        Probability that calibration found each cosmic ray and streak (masked CR or STREAK);
        bad columns are masked BAD 80% of the time regardless.
    exposure_kw
        Passed to :func:`blank_exposure` (zero point, WCS, visit ...).
    """
    want = {"point": 0, "trail": 0, "dipole": 0, "cosmic_ray": 0, "bad_column": 0, "streak": 0}
    want.update(counts or {})
    exp = blank_exposure(
        shape,
        psf=psf,
        noise_sigma=noise_sigma,
        edge_px=edge_px,
        **exposure_kw,  # type: ignore[arg-type]
    )
    signal = np.zeros(shape)
    kinds = [k for k in ("point", "trail", "dipole", "cosmic_ray") for _ in range(want[k])]
    margin = max(edge_px, 0) + 20.0
    pos = _positions(rng, len(kinds), shape, margin, spacing_px)
    rows: list[dict[str, object]] = []
    lo, hi = np.log(snr_range[0]), np.log(snr_range[1])
    for kind, (x, y) in zip(kinds, pos, strict=False):
        row: dict[str, object] = {"kind": kind, "x": x, "y": y, "real": kind in ("point", "trail")}
        sign = -1.0 if rng.uniform() < negative_fraction else 1.0
        if kind in ("point", "trail"):
            snr = float(np.exp(rng.uniform(lo, hi)))
            flux = sign * flux_for_snr(psf, x, y, snr, noise_sigma)
            row.update(snr=snr, flux=flux)
            if kind == "point":
                add_point(signal, psf, x, y, flux)
            else:
                length, ang = float(rng.uniform(5.0, 40.0)), float(rng.uniform(0, np.pi))
                add_trail(signal, psf, x, y, flux, length, ang)
                row.update(length_px=length, angle_rad=ang)
        elif kind == "dipole":
            snr = float(np.exp(rng.uniform(np.log(20.0), np.log(300.0))))
            flux = flux_for_snr(psf, x, y, snr, noise_sigma)
            sep, ang = float(rng.uniform(0.2, 1.5)), float(rng.uniform(0, 2 * np.pi))
            dx, dy = 0.5 * sep * math.cos(ang), 0.5 * sep * math.sin(ang)
            add_point(signal, psf, x + dx, y + dy, flux)
            add_point(signal, psf, x - dx, y - dy, -flux)
            row.update(snr=snr, flux=flux, separation_px=sep, angle_rad=ang)
        else:
            length, ang = float(rng.exponential(2.0)), float(rng.uniform(0, np.pi))
            charge = float(rng.lognormal(np.log(30 * noise_sigma), 0.7)) * max(length, 1.0)
            hit = add_cosmic_ray(signal, x, y, charge, length, ang)
            if rng.uniform() < masked_fraction:
                cx, cy = np.array(hit).T
                exp.mask[cy, cx] |= np.int32(mask_bits("CR"))
            row.update(flux=charge, length_px=length, angle_rad=ang)
        rows.append(row)
    ny, nx = shape
    for _ in range(want["bad_column"]):
        x = int(rng.integers(margin, nx - margin))
        y0 = int(rng.integers(0, ny // 2))
        y1 = int(min(y0 + rng.integers(20, ny // 2 + 21), ny))
        level = float(rng.uniform(1.0, 6.0)) * noise_sigma
        add_bad_column(signal, exp.mask, x, y0, y1, level, masked=bool(rng.uniform() < 0.8))
        rows.append(
            {"kind": "bad_column", "x": float(x), "y": (y0 + y1) / 2, "real": False,
             "flux": level, "length_px": float(y1 - y0), "angle_rad": np.pi / 2}
        )  # fmt: skip
    for _ in range(want["streak"]):
        x, y = rng.uniform(0, nx), rng.uniform(0, ny)
        ang = float(rng.uniform(0, np.pi))
        peak = float(rng.lognormal(np.log(2.0 * noise_sigma), 0.6))
        width = float(rng.uniform(3.0, 8.0))
        add_streak(
            signal, exp.mask, x, y, ang, peak, width, masked=bool(rng.uniform() < masked_fraction)
        )
        rows.append(
            {"kind": "streak", "x": x, "y": y, "real": False, "flux": peak,
             "length_px": float("inf"), "angle_rad": ang}
        )  # fmt: skip
    var = np.full(shape, noise_sigma**2)
    if source_noise:
        var += np.abs(signal)
    image = signal + rng.standard_normal(shape) * np.sqrt(var)
    exp.image = image.astype(np.float32)
    exp.variance = var.astype(np.float32)
    truth = pd.DataFrame(
        rows,
        columns=[
            "kind",
            "real",
            "x",
            "y",
            "flux",
            "snr",
            "length_px",
            "angle_rad",
            "separation_px",
        ],
    )
    truth.insert(0, "id", np.arange(len(truth), dtype=np.int64))
    truth["real"] = truth["real"].astype(bool)
    for col in ("x", "y", "flux", "snr", "length_px", "angle_rad", "separation_px"):
        truth[col] = truth[col].astype(np.float64)
    truth["flux_njy"] = np.asarray(exp.counts_to_njy(truth["flux"].to_numpy()))
    return SyntheticDifference(exp, truth)
