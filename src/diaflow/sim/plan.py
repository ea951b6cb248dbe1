"""Plan a survey: everything but the pixels, drawn from the seed, with no I/O.

:func:`plan_survey` fixes the schedule, the fields, the camera, the sky, the transients and the
solar system. :func:`visit_inputs` then gives, visit after visit in time order, what
:func:`~diaflow.sim.render.render_detector` needs: the true pointing, the PSF and the sources with
their true fluxes and positions at that time. :func:`simulate_survey` strings them together and
writes; benchmarks and tests can call them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..ephem import KeplerianOrbits, Site, astrometric_radec, hg_magnitude, observer_heliocentric
from ..ephem.twobody import OBLIQUITY_J2000_DEG
from .cadence import opsim_schedule, synthetic_schedule
from .config import SurveyConfig
from .lightcurves import DampedRandomWalk, mag_to_njy, static_fluxes_njy, transient_fluxes_njy
from .population import ID_SSO_BASE, SSO_COLORS, draw_population, orbits_of
from .psf import VisitPsf
from .refcat import make_refcat
from .render import DetectorGeometry, Pointing, field_radius_px, mosaic
from .sky import J2016_MJD, _sep_deg, draw_static_sky, draw_transients

__all__ = ["SurveyPlan", "VisitInputs", "detector_rng", "plan_survey", "visit_inputs"]

MB_RATE_DEG_PER_DAY = 0.3
"""Fastest typical main-belt motion near opposition: sets how far out objects are drawn."""
NEO_RATE_DEG_PER_DAY = 1.5


@dataclass
class SurveyPlan:
    """Everything about a survey except its pixels. Visit inputs advance its generators."""

    config: SurveyConfig
    visits: pd.DataFrame
    """The schedule (see :mod:`diaflow.sim.cadence`), in time order."""
    fields: list[tuple[float, float]]
    detectors: list[DetectorGeometry]
    radius_deg: float
    """Radius about a field centre that holds every detector, with a margin."""
    static: pd.DataFrame
    transients: pd.DataFrame
    sso: pd.DataFrame
    orbits: KeplerianOrbits | None
    refcat: pd.DataFrame
    site: Site
    agn_walk: DampedRandomWalk
    variable_ids: set[int]
    rng_pointing: np.random.Generator


@dataclass(frozen=True)
class VisitInputs:
    """What rendering one visit needs, shared by all its detectors."""

    pointing: Pointing
    psf: VisitPsf
    sources: pd.DataFrame


def plan_survey(config: SurveyConfig) -> SurveyPlan:
    """Validate ``config`` and draw the schedule, sky and solar system from its seed."""
    config.validate()
    cam, cad, skycfg = config.camera, config.cadence, config.sky
    seeds = np.random.SeedSequence(config.seed).spawn(8)
    rng_cadence, rng_sky, rng_tr, rng_sso, rng_point, rng_geom, rng_agn, rng_ref = (
        np.random.default_rng(s) for s in seeds
    )
    # Where and when.
    if cad.opsim_path:
        target = (cad.field_ra_deg, cad.field_dec_deg) if cad.field_ra_deg is not None else None
        visits, target = opsim_schedule(cad, target, rng_cadence)  # type: ignore[arg-type]
        fields = [target]
    else:
        first = (
            (float(cad.field_ra_deg), float(cad.field_dec_deg))  # type: ignore[arg-type]
            if cad.field_ra_deg is not None
            else _opposition_field(cad.start_mjd + cad.n_nights / 2)
        )
        step = 2 * field_radius_px(cam) * cam.pixel_scale_arcsec / 3600 / np.sqrt(2)
        fields = [_along_ecliptic(first[0], first[1], k * step) for k in range(cad.n_fields)]
        visits = synthetic_schedule(cad, fields, rng_cadence)
    detectors = mosaic(cam, rng_geom)
    radius_deg = field_radius_px(cam) * cam.pixel_scale_arcsec / 3600 + 0.02
    t0, t1 = float(visits["mjd_tai"].min()), float(visits["mjd_tai"].max())
    mid = 0.5 * (t0 + t1)
    # What is there.
    static = draw_static_sky(skycfg, fields, radius_deg, rng_sky)
    transients = draw_transients(skycfg, static, fields, radius_deg, (t0, t1), rng_tr)
    half_span = 0.5 * (t1 - t0) + 1.0
    pops = [
        draw_population(
            kind, density, h_range, fields, min(radius_deg + rate * half_span, cap), mid, rng_sso
        )
        for kind, density, h_range, rate, cap in (
            ("mba", skycfg.main_belt_per_deg2, skycfg.main_belt_h_range, MB_RATE_DEG_PER_DAY, 15.0),
            ("neo", skycfg.neo_per_deg2, skycfg.neo_h_range, NEO_RATE_DEG_PER_DAY, 20.0),
        )
    ]
    nonempty = [p for p in pops if len(p)]
    sso = pd.concat(nonempty, ignore_index=True) if nonempty else pops[0]
    sso.insert(0, "ss_id", ID_SSO_BASE + np.arange(len(sso), dtype=np.int64))
    agn = static[static["var_type"] == "agn"]
    return SurveyPlan(
        config=config,
        visits=visits,
        fields=[(float(a), float(b)) for a, b in fields],
        detectors=detectors,
        radius_deg=radius_deg,
        static=static,
        transients=transients,
        sso=sso,
        orbits=orbits_of(sso) if len(sso) else None,
        refcat=make_refcat(static, skycfg.refcat_mag_limit, rng_ref),
        site=Site(cad.site_lon_deg, cad.site_lat_deg, cad.site_height_m),
        agn_walk=DampedRandomWalk(
            agn["id"].to_numpy(), agn["tau_d"].to_numpy(), agn["sf_inf_mag"].to_numpy(), rng_agn
        ),
        variable_ids=set(static.loc[static["var_type"] != "none", "id"].tolist()),
        rng_pointing=rng_point,
    )


def visit_inputs(plan: SurveyPlan, visit: pd.Series) -> VisitInputs:
    """True pointing, PSF and sources of one visit. Call in time order: it advances the plan."""
    cam = plan.config.camera
    mjd = float(visit["mjd_tai"])
    ra0, dec0 = float(visit["boresight_ra_deg"]), float(visit["boresight_dec_deg"])
    perr = plan.rng_pointing.normal(0, cam.pointing_error_arcsec / 3600, 2)
    pointing = Pointing(
        ra0,
        dec0,
        float(visit["rotation_deg"]),
        ra0 + perr[0] / np.cos(np.deg2rad(dec0)),
        dec0 + perr[1],
        float(visit["rotation_deg"])
        + plan.rng_pointing.normal(0, cam.rotation_error_arcsec / 3600),
    )
    psf = VisitPsf.draw(
        float(visit["seeing_fwhm_arcsec"]),
        field_radius_px(cam),
        plan.config.render,
        plan.rng_pointing,
    )
    offsets = dict(
        zip(plan.agn_walk.ids.tolist(), plan.agn_walk.advance(mjd).tolist(), strict=True)
    )
    sources = _visit_sources(plan, visit, offsets)
    return VisitInputs(pointing, psf, sources)


def detector_rng(config: SurveyConfig, visit_index: int, detector: int) -> np.random.Generator:
    """The generator of one detector-visit's noise and artifacts (independent of all others)."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, visit_index, detector]))


def _opposition_field(mjd_tai: float) -> tuple[float, float]:
    """ICRS position of the anti-solar point (on the ecliptic) at ``mjd_tai``."""
    earth = observer_heliocentric(None, [mjd_tai])[0]
    ra = float(np.rad2deg(np.arctan2(earth[1], earth[0])) % 360)
    dec = float(np.rad2deg(np.arcsin(earth[2] / np.linalg.norm(earth))))
    return ra, dec


def _along_ecliptic(ra: float, dec: float, dlon_deg: float) -> tuple[float, float]:
    eps = np.deg2rad(OBLIQUITY_J2000_DEG)
    ra_r, dec_r = np.deg2rad(ra), np.deg2rad(dec)
    v = np.array([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)])
    to_ecl = np.array([[1, 0, 0], [0, np.cos(eps), np.sin(eps)], [0, -np.sin(eps), np.cos(eps)]])
    e = to_ecl @ v
    lon, lat = np.arctan2(e[1], e[0]) + np.deg2rad(dlon_deg), np.arcsin(e[2])
    e2 = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    w = to_ecl.T @ e2
    return float(np.rad2deg(np.arctan2(w[1], w[0])) % 360), float(np.rad2deg(np.arcsin(w[2])))


def _visit_sources(
    plan: SurveyPlan, visit: pd.Series, agn_offsets: dict[int, float]
) -> pd.DataFrame:
    """Everything near the boresight at the visit's time, with true fluxes, for rendering."""
    static, transients, radius_deg = plan.static, plan.transients, plan.radius_deg
    mjd, band = float(visit["mjd_tai"]), str(visit["band"])
    ra0, dec0 = float(visit["boresight_ra_deg"]), float(visit["boresight_dec_deg"])
    near = static[
        _sep_deg(static["ra_deg"].to_numpy(), static["dec_deg"].to_numpy(), ra0, dec0)
        < radius_deg + 0.01
    ]
    years = (mjd - J2016_MJD) / 365.25
    cosd = np.cos(np.deg2rad(near["dec_deg"].to_numpy()))
    parts = [
        pd.DataFrame(
            {
                "id": near["id"].to_numpy(),
                "kind": near["kind"].to_numpy(),
                "ra_deg": near["ra_deg"].to_numpy()
                + near["pm_ra_mas_yr"].to_numpy() * years / 3.6e6 / cosd,
                "dec_deg": near["dec_deg"].to_numpy()
                + near["pm_dec_mas_yr"].to_numpy() * years / 3.6e6,
                "flux_njy": static_fluxes_njy(near, band, mjd, agn_offsets),
                "sersic_n": near["sersic_n"].to_numpy(),
                "half_light_arcsec": near["half_light_arcsec"].to_numpy(),
                "g1": near["g1"].to_numpy(),
                "g2": near["g2"].to_numpy(),
            }
        )
    ]
    if len(transients):
        tr = transients[
            _sep_deg(transients["ra_deg"].to_numpy(), transients["dec_deg"].to_numpy(), ra0, dec0)
            < radius_deg + 0.01
        ]
        flux = transient_fluxes_njy(tr, band, mjd)
        live = flux > 0
        parts.append(
            pd.DataFrame(
                {
                    "id": tr["id"].to_numpy()[live],
                    "kind": "transient",
                    "ra_deg": tr["ra_deg"].to_numpy()[live],
                    "dec_deg": tr["dec_deg"].to_numpy()[live],
                    "flux_njy": flux[live],
                }
            )
        )
    if len(plan.sso):
        parts.append(_sso_sources(plan, visit))
    return (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else parts[0]
    )


def _sso_sources(plan: SurveyPlan, visit: pd.Series) -> pd.DataFrame:
    """Moving objects near the boresight: start, middle and end of the exposure, magnitudes."""
    sso, orbits, site = plan.sso, plan.orbits, plan.site
    mjd, band = float(visit["mjd_tai"]), str(visit["band"])
    ra0, dec0 = float(visit["boresight_ra_deg"]), float(visit["boresight_dec_deg"])
    half = float(visit["exptime_s"]) / 2 / 86400.0
    tdb = 32.184 / 86400.0
    pos = {}
    for label, t in (("start", mjd - half), ("mid", mjd), ("end", mjd + half)):
        obs = observer_heliocentric(site, [t])[0]
        pos[label] = (*astrometric_radec(orbits, t + tdb, obs), obs)  # type: ignore[arg-type]
    ra, dec, delta, r, obs = pos["mid"]
    on = _sep_deg(ra, dec, ra0, dec0) < plan.radius_deg + 0.01
    if not on.any():
        return pd.DataFrame()
    r_obs = np.linalg.norm(obs)
    cos_phase = np.clip((r**2 + delta**2 - r_obs**2) / (2 * r * delta), -1, 1)
    phase = np.rad2deg(np.arccos(cos_phase))
    v = hg_magnitude(sso["h_mag"].to_numpy(), sso["g_slope"].to_numpy(), r, delta, phase)
    color = np.array([SSO_COLORS[t][band] for t in sso["taxonomy"]])
    mag = v + color
    idx = np.flatnonzero(on)
    return pd.DataFrame(
        {
            "id": sso["ss_id"].to_numpy()[idx],
            "kind": "sso",
            "ra_deg": pos["start"][0][idx],
            "dec_deg": pos["start"][1][idx],
            "trail_ra_deg": pos["end"][0][idx],
            "trail_dec_deg": pos["end"][1][idx],
            "mid_ra_deg": ra[idx],
            "mid_dec_deg": dec[idx],
            "flux_njy": mag_to_njy(mag[idx]),
            "mag": mag[idx],
            "r_au": r[idx],
            "delta_au": delta[idx],
            "phase_deg": phase[idx],
        }
    )
