"""Truth for the coadd tests: calexps made from simulation truth, and where everything is.

Calibration is another stage; here each exposure gets the true sky subtracted, the true WCS, the
true PSF and the true zero point. Cosmic rays stay unmasked: outlier rejection must remove them.
Expensive products (the warped, PSF-matched inputs of the test patch) are cached per survey, so
that every test module shares one build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from diaflow.coadd import MatchedInputs, SkyPatch, TemplateConfig, make_patch, match_inputs
from diaflow.image import Exposure, read_exposure
from diaflow.sim import true_wcs
from diaflow.sim.lightcurves import mag_to_njy
from diaflow.sim.render import sky_model
from diaflow.sim.sky import J2016_MJD
from simdata import SimulatedSurvey, truth_psf

TEMPLATE_VISITS = 10
"""Visits in the test template: the best seeing of the survey's 20."""


def calexp(survey: SimulatedSurvey, row: pd.Series) -> Exposure:
    """A simulated exposure, calibrated from truth (sky, WCS, PSF, zero point)."""
    exp = read_exposure(survey.out_dir / row["path"])
    sky = sky_model(exp.shape, row["sky_e_per_px"], (row["sky_gradient_x"], row["sky_gradient_y"]))
    exp.image = (exp.image - sky).astype(np.float32)
    exp.wcs = true_wcs(row, survey.config)
    exp.psf = truth_psf(survey, row)
    exp.zero_point = float(row["zero_point_true"])
    return exp


_CACHE: dict[Path, object] = {}


def _inject(survey: SimulatedSurvey, row: pd.Series, exp: Exposure, n: int) -> pd.DataFrame:
    """Add ``n`` single-epoch point sources (fake transients, S/N ~10-200) to a calexp."""
    rng = np.random.default_rng(int(row["visit"]) % 2**32)
    ny, nx = exp.shape
    sky_sigma = float(np.sqrt(row["sky_e_per_px"]))
    fwhm_px = float(row["psf_fwhm_arcsec"]) / survey.config.camera.pixel_scale_arcsec
    noise_psf = sky_sigma * np.sqrt(4 * np.pi) * fwhm_px / 2.355
    x = rng.uniform(20, nx - 21, n)
    y = rng.uniform(20, ny - 21, n)
    counts = noise_psf * 10 ** rng.uniform(1.0, np.log10(200.0), n)
    for xi, yi, c in zip(x, y, counts, strict=True):
        _add_point(exp, xi, yi, c, rng)
    # The fake variable stars, at their flux of the moment.
    var = _fake_variables(survey)
    vx, vy = exp.wcs.all_world2pix(var["ra_deg"], var["dec_deg"], 0)
    to_counts = 10 ** (0.4 * (float(row["zero_point_true"]) - 31.4))
    for xi, yi, f in zip(vx, vy, variable_flux_njy(var, float(row["mjd_tai"])), strict=True):
        _add_point(exp, xi, yi, f * to_counts, rng)
    ra, dec = exp.wcs.all_pix2world(x, y, 0)
    njy = counts * 10 ** (-0.4 * (float(row["zero_point_true"]) - 31.4))
    return pd.DataFrame({"visit": int(row["visit"]), "ra_deg": ra, "dec_deg": dec, "flux_njy": njy})


def _fake_variables(survey: SimulatedSurvey, n: int = 40) -> pd.DataFrame:
    """Fake variable stars in the test patch: sinusoids of 20-60 % amplitude."""
    rng = np.random.default_rng(99)
    patch = truth_patch(survey)
    ny, nx = patch.shape
    x, y = rng.uniform(40, nx - 41, n), rng.uniform(40, ny - 41, n)
    ra, dec = patch.wcs.all_pix2world(x, y, 0)
    return pd.DataFrame(
        {
            "id": np.arange(n) + 3_000_000_000,
            "ra_deg": ra,
            "dec_deg": dec,
            "flux0_njy": 10 ** rng.uniform(np.log10(2000.0), np.log10(50000.0), n),
            "amplitude": rng.uniform(0.2, 0.6, n),
            "period_d": rng.uniform(0.3, 3.0, n),
            "phase": rng.uniform(0, 1, n),
        }
    )


def variable_flux_njy(var: pd.DataFrame, mjd: float) -> np.ndarray:
    """True flux of the fake variables at ``mjd``."""
    phase = 2 * np.pi * (mjd / var["period_d"].to_numpy() + var["phase"].to_numpy())
    return var["flux0_njy"].to_numpy() * (1 + var["amplitude"].to_numpy() * np.sin(phase))


def _add_point(exp: Exposure, x: float, y: float, counts: float, rng: np.random.Generator) -> None:
    stamp = np.clip(counts * exp.psf.image(float(x), float(y)), 0, None)
    h = stamp.shape[0] // 2
    ix, iy = round(x), round(y)
    ny, nx = exp.shape
    if ix - h < 0 or iy - h < 0 or ix + h >= nx or iy + h >= ny:
        return
    sl = (slice(iy - h, iy + h + 1), slice(ix - h, ix + h + 1))
    exp.image[sl] += rng.poisson(stamp).astype(np.float32)
    exp.variance[sl] += stamp.astype(np.float32)


INJECTED_PER_VISIT = 25
"""Fake single-epoch transients added to every calexp (truth in :func:`injected`)."""


def calexps(survey: SimulatedSurvey) -> list[Exposure]:
    """Every visit of the survey as a calexp, in the order of ``survey.visits``, each with
    ``INJECTED_PER_VISIT`` fake single-epoch point sources and the fake variable stars."""
    key = survey.out_dir / "calexps"
    if key not in _CACHE:
        exps, fakes = [], []
        for _, row in survey.visits.iterrows():
            exps.append(calexp(survey, row))
            fakes.append(_inject(survey, row, exps[-1], INJECTED_PER_VISIT))
        _CACHE[key] = exps
        _CACHE[survey.out_dir / "injected"] = pd.concat(fakes, ignore_index=True)
    return _CACHE[key]  # type: ignore[return-value]


def injected(survey: SimulatedSurvey) -> pd.DataFrame:
    """The fake transients added by :func:`calexps`: ``visit``, ``ra_deg``, ``dec_deg``,
    ``flux_njy``."""
    calexps(survey)
    return _CACHE[survey.out_dir / "injected"]  # type: ignore[return-value]


def truth_patch(survey: SimulatedSurvey) -> SkyPatch:
    """A 190" patch on the middle of the field, north up (the visits turn by -40..+33 deg)."""
    v = survey.visits
    return make_patch(
        ra_deg=float(v["true_ra_deg"].mean()),
        dec_deg=float(v["true_dec_deg"].mean()),
        size_arcsec=190.0,
        pixel_scale_arcsec=survey.config.camera.pixel_scale_arcsec,
        name="test-patch",
    )


def best_seeing(survey: SimulatedSurvey, n: int) -> list[int]:
    """Row indices of the ``n`` best-seeing visits."""
    return list(survey.visits.sort_values("seeing_fwhm_arcsec").index[:n])


def matched(survey: SimulatedSurvey) -> MatchedInputs:
    """The best-seeing visits warped onto the test patch and matched to their common PSF."""
    key = survey.out_dir / "matched"
    if key not in _CACHE:
        patch = truth_patch(survey)
        exps = calexps(survey)
        _CACHE[key] = match_inputs(
            [exps[i] for i in best_seeing(survey, TEMPLATE_VISITS)],
            target_wcs=patch.wcs,
            target_shape=patch.shape,
            config=TemplateConfig(),
        )
    return _CACHE[key]  # type: ignore[return-value]


def to_pixels(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
    return np.asarray(x), np.asarray(y)


def static_truth(
    survey: SimulatedSurvey, wcs: WCS, visits: list[int], weights: np.ndarray
) -> pd.DataFrame:
    """Static sources on the grid of ``wcs``: ``x``, ``y`` and the flux the template should
    have (nJy: the weighted mean over the input visits, for variables from their light curves).
    The fake variable stars of :func:`calexps` are included (``var_type`` "fake")."""
    sky = survey.static.copy()
    rows = survey.visits.set_index("visit").loc[visits]
    years = (float(rows["mjd_tai"].mean()) - J2016_MJD) / 365.25
    cosd = np.cos(np.deg2rad(sky["dec_deg"]))
    ra = sky["ra_deg"] + sky["pm_ra_mas_yr"] * years / 3.6e6 / cosd
    dec = sky["dec_deg"] + sky["pm_dec_mas_yr"] * years / 3.6e6
    sky["x"], sky["y"] = to_pixels(wcs, ra, dec)
    flux = mag_to_njy(sky["mag_r"].to_numpy()).astype(float)
    lc = survey.table("lightcurves")
    lc = lc[lc["visit"].isin(visits)]
    w = pd.Series(weights / weights.sum(), index=visits)
    lc = lc.assign(wflux=lc["flux_njy"] * lc["visit"].map(w))
    mean = lc.groupby("id")["wflux"].sum() / lc.groupby("id")["visit"].apply(
        lambda v: w.loc[v].sum()
    )
    is_var = sky["id"].isin(mean.index).to_numpy()
    flux[is_var] = mean.loc[sky.loc[is_var, "id"]].to_numpy()
    sky["flux_njy"] = flux
    fake = _fake_variables(survey)
    fx, fy = to_pixels(wcs, fake["ra_deg"], fake["dec_deg"])
    fluxes = np.array([variable_flux_njy(fake, m) for m in rows["mjd_tai"]])
    fake_rows = pd.DataFrame(
        {
            "id": fake["id"],
            "kind": "star",
            "ra_deg": fake["ra_deg"],
            "dec_deg": fake["dec_deg"],
            "var_type": "fake",
            "half_light_arcsec": 0.0,
            "x": fx,
            "y": fy,
            "flux_njy": (weights[:, None] * fluxes).sum(axis=0) / weights.sum(),
        }
    )
    return pd.concat([sky, fake_rows], ignore_index=True)


def outliers_truth(survey: SimulatedSurvey, wcs: WCS, visits: list[int]) -> pd.DataFrame:
    """Everything that is in one input visit only, on the grid of ``wcs``.

    Columns ``kind`` (cosmic_ray, asteroid, satellite, transient, injected), ``visit``, ``x``,
    ``y``, ``flux_njy`` (NaN for artifacts). Cosmic rays are their midpoints; satellite trails are
    sampled every 20 pixels; transients are those bright in exactly one of the input visits;
    injected are the fake transients of :func:`calexps`.
    """
    vis = survey.visits.set_index("visit")
    out = []
    arts = survey.table("artifacts")
    for kind in ("cosmic_ray", "satellite"):
        for _, a in arts[(arts["kind"] == kind) & arts["visit"].isin(visits)].iterrows():
            w_in = true_wcs(vis.loc[a["visit"]], survey.config)
            if kind == "cosmic_ray":
                px = np.array([(a["x0"] + a["x1"]) / 2])
                py = np.array([(a["y0"] + a["y1"]) / 2])
            else:
                n = int(np.hypot(a["x1"] - a["x0"], a["y1"] - a["y0"]) // 20) + 1
                t = np.linspace(0, 1, n)
                px = a["x0"] + t * (a["x1"] - a["x0"])
                py = a["y0"] + t * (a["y1"] - a["y0"])
            ra, dec = w_in.all_pix2world(px, py, 0)
            x, y = to_pixels(wcs, ra, dec)
            out.append(
                pd.DataFrame(
                    {"kind": kind, "visit": a["visit"], "x": x, "y": y, "flux_njy": np.nan}
                )
            )
    ss = survey.table("ss_positions")
    ss = ss[ss["visit"].isin(visits)]
    if len(ss):
        x, y = to_pixels(wcs, ss["ra_deg"], ss["dec_deg"])
        out.append(
            pd.DataFrame(
                {
                    "kind": "asteroid",
                    "visit": ss["visit"].to_numpy(),
                    "x": x,
                    "y": y,
                    "flux_njy": ss["flux_njy"].to_numpy(),
                }
            )
        )
    tr = survey.table("transients")
    lc = survey.table("lightcurves")
    lc = lc[lc["id"].isin(tr["id"]) & lc["visit"].isin(visits)]
    # Transients bright (> 1000 nJy, ~S/N 10 in one visit) in one input and faint in the rest.
    bright = lc[lc["flux_njy"] > 1000.0].groupby("id")["visit"].agg(["count", "first"])
    faint = lc.groupby("id")["flux_njy"].apply(
        lambda f: np.sort(f.to_numpy())[-2] if len(f) > 1 else 0.0
    )
    single = bright[(bright["count"] == 1) & (faint.loc[bright.index] < 200.0)]
    if len(single):
        t = tr.set_index("id").loc[single.index]
        x, y = to_pixels(wcs, t["ra_deg"], t["dec_deg"])
        peak = lc.set_index(["id", "visit"]).loc[
            list(zip(single.index, single["first"], strict=True)), "flux_njy"
        ]
        out.append(
            pd.DataFrame(
                {
                    "kind": "transient",
                    "visit": single["first"].to_numpy(),
                    "x": x,
                    "y": y,
                    "flux_njy": peak.to_numpy(),
                }
            )
        )
    fake = injected(survey)
    fake = fake[fake["visit"].isin(visits)]
    x, y = to_pixels(wcs, fake["ra_deg"], fake["dec_deg"])
    out.append(
        pd.DataFrame(
            {
                "kind": "injected",
                "visit": fake["visit"].to_numpy(),
                "x": x,
                "y": y,
                "flux_njy": fake["flux_njy"].to_numpy(),
            }
        )
    )
    return pd.concat(out, ignore_index=True)


def source_mask(
    static: pd.DataFrame, shape: tuple[int, int], fwhm_px: float, extra: pd.DataFrame | None = None
) -> np.ndarray:
    """True near any truth source brighter than 10 nJy (radius growing with size and flux)."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    masked = np.zeros(shape, dtype=bool)
    rows = [static[["x", "y", "flux_njy", "half_light_arcsec"]]]
    if extra is not None:
        rows.append(extra[["x", "y", "flux_njy"]].fillna(3000.0).assign(half_light_arcsec=0.0))
    for _, s in pd.concat(rows, ignore_index=True).iterrows():
        if not s["flux_njy"] > 10.0:
            continue
        hlr_px = np.nan_to_num(s["half_light_arcsec"]) / 0.2
        r = 2 * fwhm_px + 3 * hlr_px + 3 * np.log10(s["flux_njy"] / 10.0)
        x0, x1 = int(max(s["x"] - r, 0)), int(min(s["x"] + r + 1, nx))
        y0, y1 = int(max(s["y"] - r, 0)), int(min(s["y"] + r + 1, ny))
        if x0 < x1 and y0 < y1:
            masked[y0:y1, x0:x1] |= (xx[y0:y1, x0:x1] - s["x"]) ** 2 + (
                yy[y0:y1, x0:x1] - s["y"]
            ) ** 2 < r**2
    return masked


def blended_light(
    static: pd.DataFrame, x: float, y: float, radius: float, fwhm_px: float, beta: float = 3.5
) -> float:
    """Light of other sources inside a circular aperture at (x, y), nJy.

    Each neighbour is a Moffat profile whose width adds a galaxy's size in quadrature (2.4
    half-light radii is the FWHM of an exponential disc): good to ~20 % of a small correction.
    """
    g = np.arange(-radius, radius + 0.25, 0.25)
    gx, gy = np.meshgrid(g, g)
    inside = gx**2 + gy**2 <= radius**2
    d = np.hypot(static["x"] - x, static["y"] - y)
    near = static[(d > 0.01) & (d < radius + 15 * fwhm_px)]
    total = 0.0
    for _, n in near.iterrows():
        f = np.hypot(fwhm_px, 2.4 * np.nan_to_num(n["half_light_arcsec"]) / 0.2)
        alpha = f / (2 * np.sqrt(2 ** (1 / beta) - 1))
        r2 = (gx[inside] - (n["x"] - x)) ** 2 + (gy[inside] - (n["y"] - y)) ** 2
        prof = (beta - 1) / (np.pi * alpha**2) * (1 + r2 / alpha**2) ** -beta
        total += n["flux_njy"] * prof.sum() * 0.25**2
    return float(total)


def epoch_fluxes(survey: SimulatedSurvey, sources: pd.DataFrame, visits: list[int]) -> np.ndarray:
    """True flux (nJy) of each source (``id``) at each visit: (len(visits), len(sources))."""
    mjd = survey.visits.set_index("visit").loc[visits, "mjd_tai"].to_numpy()
    fake = _fake_variables(survey).set_index("id")
    lc = survey.table("lightcurves").set_index(["id", "visit"])["flux_njy"]
    out = np.zeros((len(visits), len(sources)))
    for k, sid in enumerate(sources["id"]):
        if sid in fake.index:
            out[:, k] = [variable_flux_njy(fake.loc[[sid]], m)[0] for m in mjd]
        else:
            out[:, k] = [lc.get((sid, v), np.nan) for v in visits]
    return out
