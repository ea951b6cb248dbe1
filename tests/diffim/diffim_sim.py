"""Aligned science/template pairs rendered by the simulator, with exactly known differences.

Both images of a pair are rendered from the same visit, pointing and sources, so they share one
pixel grid; they differ in seeing, noise, depth (the template is deeper), photometric scale and
background, and in the fluxes of a few sources: transients that exist only in the science image
(some hostless, some on galaxies) and stars whose flux changed. Each exposure carries its true
PSF. Pairs are cached, so each is rendered once per test run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from diaflow.image import Exposure, GaussianPsf, VisitInfo
from diaflow.sim import plan_survey, preset, visit_inputs
from diaflow.sim.psf import true_pixel_psf
from diaflow.sim.render import render_detector

SHAPE = 1024
TEMPLATE_DEPTH = 4.0
"""The template collects this many times the science exposure's light."""
EDGE_PX = 48
"""Injected sources and test regions keep this far from the edges."""


@dataclass(frozen=True)
class DiffimPair:
    """A science exposure, a template on the same grid, and the truth about their difference."""

    science: Exposure
    template: Exposure
    truth: pd.DataFrame
    """Every source drawn in either image: ``id``, ``kind`` (star, galaxy, transient),
    ``x``, ``y`` (true, 0-based), ``science_counts`` and ``template_counts`` (both in science
    counts), ``delta_counts`` (what the difference should hold), ``changed`` (bool)."""
    template_scale: float
    """Template counts per science count of the same source (the kernel sum to expect)."""


def _config(psf_variation: float, seed: int):  # type: ignore[no-untyped-def]
    return preset(
        "default",
        **{
            "seed": seed,
            "camera.detector_shape": (SHAPE, SHAPE),
            "camera.n_detectors": 1,
            "cadence.n_nights": 1,
            "cadence.visits_per_night": 2,
            "cadence.weather_loss_fraction": 0.0,
            "cadence.bands": ("r",),
            "sky.star_density_per_arcmin2": 25.0,
            "sky.star_count_slope": 0.12,
            "sky.transients_per_deg2_per_day": 0.0,
            "sky.main_belt_per_deg2": 0.0,
            "sky.neo_per_deg2": 0.0,
            "render.cosmic_rays_per_cm2_per_min": 0.0,
            "render.satellite_probability": 0.0,
            "render.psf_fwhm_radial_variation": psf_variation,
        },
    )


@cache
def make_pair(
    science_fwhm_arcsec: float,
    template_fwhm_arcsec: float,
    *,
    psf_variation: float = 0.08,
    template_scale: float = 1.25,
    seed: int = 5,
) -> DiffimPair:
    """Render a pair (see the module docstring); cached by its arguments."""
    cfg = _config(psf_variation, seed)
    plan = plan_survey(cfg)
    visit = plan.visits.iloc[0]
    inputs = visit_inputs(plan, visit)
    geom = plan.detectors[0]
    rng = np.random.default_rng(seed)

    def render(fwhm: float, depth: float, sources: pd.DataFrame, noise_seed: int):  # type: ignore[no-untyped-def]
        row = visit.copy()
        row["zero_point_true"] = float(row["zero_point_true"]) + 2.5 * np.log10(depth)
        psf = dataclasses.replace(inputs.psf, fwhm_arcsec=fwhm)
        out = render_detector(
            visit=row,
            geometry=geom,
            pointing=inputs.pointing,
            psf=psf,
            camera=cfg.camera,
            render=cfg.render,
            sources=sources,
            rng=np.random.default_rng(noise_seed),
        )
        pixel_psf = true_pixel_psf(
            psf, geom.boresight_pixel, geom.shape, cfg.camera.pixel_scale_arcsec, size=41
        )
        return out, pixel_psf

    base = inputs.sources.reset_index(drop=True)
    tmpl, tmpl_psf = render(template_fwhm_arcsec, TEMPLATE_DEPTH, base, seed + 1)
    drawn = tmpl.sources.set_index("id")
    to_counts = float((drawn["counts"] / drawn["flux_njy"]).median()) / TEMPLATE_DEPTH

    # Science sources: the same sky, some stars brighter or fainter, new transients.
    sci_sources = base.copy()
    stars = drawn[(drawn.index.isin(base.loc[base["kind"] == "star", "id"]))]
    inside = stars["x"].between(EDGE_PX, SHAPE - EDGE_PX) & stars["y"].between(
        EDGE_PX, SHAPE - EDGE_PX
    )
    counts = stars["counts"] / TEMPLATE_DEPTH
    candidates = stars[inside & counts.between(2e4, 2e5)].index.to_numpy()
    changed = rng.choice(candidates, size=min(6, len(candidates)), replace=False)
    factors = np.array([1.5, 0.6, 1.25, 0.8, 2.0, 0.5])[: len(changed)]
    for sid, factor in zip(changed, factors, strict=True):
        sci_sources.loc[sci_sources["id"] == sid, "flux_njy"] *= factor
    n_free, n_hosted = 14, 6
    # Hostless transients: on empty sky, 12 px or more from any source above 500 counts.
    visible = drawn[drawn["counts"] > 500 * TEMPLATE_DEPTH][["x", "y"]].to_numpy()
    free: list[np.ndarray] = []
    while len(free) < n_free:
        p = rng.uniform(EDGE_PX, SHAPE - EDGE_PX, size=2)
        if np.min(np.hypot(*(visible - p).T)) > 12 and all(np.hypot(*(q - p)) > 30 for q in free):
            free.append(p)
    xy = np.array(free)
    galaxies = drawn[
        drawn.index.isin(base.loc[base["kind"] == "galaxy", "id"])
        & drawn["x"].between(EDGE_PX, SHAPE - EDGE_PX)
        & drawn["y"].between(EDGE_PX, SHAPE - EDGE_PX)
    ]
    hosts = galaxies.sort_values("counts", ascending=False).iloc[:n_hosted]
    xy = np.vstack([xy, hosts[["x", "y"]].to_numpy() + rng.uniform(-3, 3, size=(len(hosts), 2))])
    ra, dec = tmpl.wcs_true.all_pix2world(xy[:, 0], xy[:, 1], 0)
    new_counts = rng.uniform(4e3, 3e4, size=len(xy))
    transients = pd.DataFrame(
        {
            "id": 10**9 + np.arange(len(xy), dtype=np.int64),
            "kind": "transient",
            "ra_deg": ra,
            "dec_deg": dec,
            "flux_njy": new_counts / to_counts,
        }
    )
    sci_sources = pd.concat([sci_sources, transients], ignore_index=True)
    sci, sci_psf = render(science_fwhm_arcsec, 1.0, sci_sources, seed + 2)

    # Sky: the true sky comes off both; the template keeps a tilted offset to be fitted.
    ny, nx = sci.exposure.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    offset = 3.0 + 4.0 * (xx / nx - 0.5) - 2.0 * (yy / ny - 0.5)
    science = dataclasses.replace(
        sci.exposure,
        image=(sci.exposure.image - sci.sky_model()).astype(np.float32),
        psf=sci_psf,
    )
    scale = template_scale / TEMPLATE_DEPTH
    template = dataclasses.replace(
        tmpl.exposure,
        image=((tmpl.exposure.image - tmpl.sky_model()) * scale + offset).astype(np.float32),
        variance=(tmpl.exposure.variance * scale**2).astype(np.float32),
        psf=tmpl_psf,
        info=dataclasses.replace(
            tmpl.exposure.info, saturation_e=tmpl.exposure.info.saturation_e * scale
        ),
    )

    s = sci.sources.set_index("id")
    t = tmpl.sources.set_index("id")
    truth = pd.DataFrame(
        {
            "x": s["x"],
            "y": s["y"],
            "science_counts": s["counts"],
            "template_counts": (t["counts"] / TEMPLATE_DEPTH).reindex(s.index).fillna(0.0),
        }
    )
    kinds = pd.concat([base, transients]).drop_duplicates("id").set_index("id")["kind"]
    truth["kind"] = kinds.reindex(truth.index).to_numpy()
    truth["delta_counts"] = truth["science_counts"] - truth["template_counts"]
    truth["changed"] = truth.index.isin(changed) | (truth["kind"] == "transient")
    return DiffimPair(science, template, truth.reset_index(), template_scale)


GAUSSIAN_INFO = VisitInfo(
    visit=1,
    detector=0,
    band="r",
    mjd_tai=61000.0,
    exptime_s=30.0,
    boresight_ra_deg=0.0,
    boresight_dec_deg=0.0,
    rotation_deg=0.0,
    airmass=1.0,
    zero_point_nominal=28.0,
)


def _add_stars(image: np.ndarray, psf: GaussianPsf, xy: np.ndarray, flux: np.ndarray) -> np.ndarray:
    half = psf.size // 2
    for (x, y), f in zip(xy, flux, strict=True):
        ix, iy = round(x), round(y)
        image[iy - half : iy + half + 1, ix - half : ix + half + 1] += f * psf.image(x, y)
    return image


def gaussian_pair(
    sigma_science: float,
    sigma_template: float,
    *,
    n_stars: int = 80,
    n_transients: int = 0,
    shape: tuple[int, int] = (384, 384),
    sky_var: float = 100.0,
    template_var: float = 25.0,
    seed: int = 3,
) -> tuple[Exposure, Exposure, pd.DataFrame]:
    """A small pair with constant Gaussian PSFs, stars in both and transients (``x``, ``y``,
    ``counts``, returned) in the science image only; no WCS, nothing masked."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(30, shape[0] - 30, size=(n_stars, 2))
    flux = 10 ** rng.uniform(3.5, 5.0, n_stars)
    spots: list[np.ndarray] = []
    while len(spots) < n_transients:  # on empty sky, away from the stars and each other
        p = rng.uniform(40, shape[0] - 40, size=2)
        taken = np.vstack([xy, *spots]) if spots else xy
        if len(taken) == 0 or np.min(np.hypot(*(taken - p).T)) > 15:
            spots.append(p)
    spot_xy = np.array(spots).reshape(-1, 2)
    new = pd.DataFrame(
        {"x": spot_xy[:, 0], "y": spot_xy[:, 1], "counts": rng.uniform(1500, 5000, n_transients)}
    )
    out = []
    for sigma, var, extra in (
        (sigma_science, sky_var, True),
        (sigma_template, template_var, False),
    ):
        psf = GaussianPsf(sigma, size=25)
        clean = _add_stars(np.zeros(shape), psf, xy, flux)
        if extra:
            _add_stars(clean, psf, new[["x", "y"]].to_numpy(), new["counts"].to_numpy())
        variance = var + np.maximum(clean, 0) * var / sky_var
        noisy = clean + rng.normal(size=shape) * np.sqrt(variance)
        out.append(
            Exposure(
                image=noisy.astype(np.float32),
                mask=np.zeros(shape, np.int32),
                variance=variance.astype(np.float32),
                wcs=None,
                info=GAUSSIAN_INFO,
                psf=psf,
            )
        )
    return out[0], out[1], new


def psf_flux(diff: Exposure, x: float, y: float) -> tuple[float, float] | None:
    """Linear PSF-fit flux (and its error) at a known position on a difference image.

    None when a pixel within 4 pixels of the position is masked.
    """
    ix, iy = round(x), round(y)
    if diff.mask[iy - 4 : iy + 5, ix - 4 : ix + 5].any():
        return None
    stamp = diff.psf.image(x, y)  # type: ignore[union-attr]
    half = stamp.shape[0] // 2
    win = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
    data = diff.image[win].astype(np.float64)
    var = diff.variance[win].astype(np.float64)
    good = diff.mask[win] == 0
    weight = np.where(good, 1.0 / var, 0.0)
    norm = float(np.sum(stamp**2 * weight))
    return float(np.sum(stamp * data * weight)) / norm, 1.0 / np.sqrt(norm)


def blank_pixels(diff: Exposure, truth: pd.DataFrame, radius_px: int = 15) -> np.ndarray:
    """Unmasked pixels at least ``radius_px`` from every source (boolean image)."""
    near = np.zeros(diff.shape, dtype=bool)
    xi = np.round(truth["x"].to_numpy()).astype(int)
    yi = np.round(truth["y"].to_numpy()).astype(int)
    on = (xi >= 0) & (yi >= 0) & (xi < diff.shape[1]) & (yi < diff.shape[0])
    near[yi[on], xi[on]] = True
    from scipy import ndimage

    near = ndimage.maximum_filter(near, size=2 * radius_px + 1)
    return ~near & (diff.mask == 0)


def stamp_chi2(diff: Exposure, x: float, y: float, half: int = 8) -> float | None:
    """Mean of ``image^2 / variance`` over a square about (x, y); None if any pixel is masked."""
    ix, iy = round(x), round(y)
    win = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
    if diff.mask[win].any():
        return None
    return float(np.mean(diff.image[win].astype(np.float64) ** 2 / diff.variance[win]))
