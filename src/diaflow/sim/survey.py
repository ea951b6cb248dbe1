"""Simulate a whole survey: schedule, sky, solar system, then every detector of every visit.

Output directory layout (all Parquet tables are also described in docs/simulation.md)::

    survey.json                 configuration, its hash, software version, fields, counts
    visits.parquet              one row per visit and detector, with true conditions
    refcat.parquet              Gaia-like reference catalog
    exposures/<visit>_<det>.fits  post-ISR exposures (IMAGE, MASK, VARIANCE)
    truth/static.parquet        stars and galaxies (with variability parameters)
    truth/transients.parquet    transients and their hosts
    truth/lightcurves.parquet   true flux of each variable/transient at each visit it is on
    truth/ss_orbits.parquet     solar-system orbits (osculating, two-body)
    truth/ss_positions.parquet  solar-system positions, fluxes and trails at each visit
    truth/artifacts.parquet     cosmic rays, satellites, bleed trails, bad columns

Visits are rendered one at a time in time order, and truth rows are streamed to Parquet, so memory
is bounded by one visit's images however long the survey.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..ephem import Site, astrometric_radec, hg_magnitude, observer_heliocentric
from ..ephem.twobody import OBLIQUITY_J2000_DEG
from ..errors import ConfigError
from ..image import make_detector_wcs, write_exposure
from .cadence import opsim_schedule, synthetic_schedule
from .config import SurveyConfig
from .lightcurves import DampedRandomWalk, mag_to_njy, static_fluxes_njy, transient_fluxes_njy
from .population import ID_SSO_BASE, SSO_COLORS, draw_population, orbits_of
from .psf import VisitPsf
from .refcat import make_refcat
from .render import DetectorGeometry, Pointing, field_radius_px, mosaic, render_detector
from .sky import J2016_MJD, draw_static_sky, draw_transients

__all__ = ["SurveyResult", "exposure_path", "simulate_survey", "true_wcs"]

logger = logging.getLogger(__name__)

MB_RATE_DEG_PER_DAY = 0.3
NEO_RATE_DEG_PER_DAY = 1.5


@dataclass(frozen=True)
class SurveyResult:
    """What :func:`simulate_survey` wrote."""

    out_dir: Path
    n_visits: int
    n_exposures: int
    n_static: int
    n_transients: int
    n_sso: int
    fields: list[tuple[float, float]]
    seconds: float


class _ParquetSink:
    """Append DataFrames to one Parquet file in row groups, keeping little in memory."""

    def __init__(self, path: Path, flush_rows: int = 100_000) -> None:
        self.path = path
        self.flush_rows = flush_rows
        self.buffer: list[pd.DataFrame] = []
        self.rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def append(self, df: pd.DataFrame) -> None:
        if len(df):
            self.buffer.append(df)
            self.rows += len(df)
            if self.rows >= self.flush_rows:
                self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.Table.from_pandas(
            pd.concat(self.buffer, ignore_index=True), preserve_index=False, schema=self.schema
        )
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table)
        self.buffer, self.rows = [], 0

    def close(self, empty: pd.DataFrame) -> None:
        self.flush()
        if self.writer is None:
            empty.to_parquet(self.path, index=False)
        else:
            self.writer.close()


def exposure_path(out_dir: Path, visit: int, detector: int) -> Path:
    """Where the exposure of (visit, detector) is written."""
    return out_dir / "exposures" / f"{visit}_{detector:03d}.fits"


def true_wcs(row: pd.Series | dict[str, object], config: SurveyConfig) -> object:
    """The true WCS of a visit-detector row of ``visits.parquet`` (truth for astrometry tests)."""
    cam = config.camera
    geom = mosaic(cam, np.random.default_rng(0))[int(row["detector"])]
    return make_detector_wcs(
        boresight_ra_deg=float(row["true_ra_deg"]),
        boresight_dec_deg=float(row["true_dec_deg"]),
        rotation_deg=float(row["true_rotation_deg"]),
        pixel_scale_arcsec=cam.pixel_scale_arcsec,
        boresight_pixel=geom.boresight_pixel,
        distortion_k=cam.distortion_k_per_px2,
        shape=geom.shape,
    )


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


def _sep_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    ra, dec, ra0r, dec0r = np.deg2rad(ra), np.deg2rad(dec), np.deg2rad(ra0), np.deg2rad(dec0)
    c = np.sin(dec) * np.sin(dec0r) + np.cos(dec) * np.cos(dec0r) * np.cos(ra - ra0r)
    return np.rad2deg(np.arccos(np.clip(c, -1, 1)))


def simulate_survey(
    config: SurveyConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> SurveyResult:
    """Simulate and write a survey; see the module docstring for what is written.

    Raises
    ------
    ConfigError
        If the configuration cannot work, or ``out_dir`` holds files and ``overwrite`` is false.
        Nothing is written in either case.
    """
    t_start = time.perf_counter()
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out_dir} is not empty; choose another directory or pass overwrite")
        shutil.rmtree(out_dir)
    cam, cad, skycfg = config.camera, config.cadence, config.sky
    seeds = np.random.SeedSequence(config.seed).spawn(8)
    rng_cadence, rng_sky, rng_tr, rng_sso, rng_point, rng_geom, rng_agn, rng_ref = (
        np.random.default_rng(s) for s in seeds
    )

    # Where and when.
    mid_guess = cad.start_mjd + cad.n_nights / 2
    if cad.opsim_path:
        target = (cad.field_ra_deg, cad.field_dec_deg) if cad.field_ra_deg is not None else None
        visits, target = opsim_schedule(cad, target, rng_cadence)  # type: ignore[arg-type]
        fields = [target]
    else:
        first = (
            (cad.field_ra_deg, cad.field_dec_deg)
            if cad.field_ra_deg is not None
            else _opposition_field(mid_guess)
        )
        step = 2 * field_radius_px(cam) * cam.pixel_scale_arcsec / 3600 / np.sqrt(2)
        fields = [_along_ecliptic(first[0], first[1], k * step) for k in range(cad.n_fields)]  # type: ignore[arg-type]
        visits = synthetic_schedule(cad, fields, rng_cadence)
    geoms = mosaic(cam, rng_geom)
    radius_deg = field_radius_px(cam) * cam.pixel_scale_arcsec / 3600 + 0.02
    t0, t1 = float(visits["mjd_tai"].min()), float(visits["mjd_tai"].max())
    mid = 0.5 * (t0 + t1)

    # What is there.
    static = draw_static_sky(skycfg, fields, radius_deg, rng_sky)
    transients = draw_transients(skycfg, static, fields, radius_deg, (t0, t1), rng_tr)
    half_span = 0.5 * (t1 - t0) + 1.0
    pops = [
        draw_population(
            "mba",
            skycfg.main_belt_per_deg2,
            skycfg.main_belt_h_range,
            fields,
            min(radius_deg + MB_RATE_DEG_PER_DAY * half_span, 15.0),
            mid,
            rng_sso,
        ),
        draw_population(
            "neo",
            skycfg.neo_per_deg2,
            skycfg.neo_h_range,
            fields,
            min(radius_deg + NEO_RATE_DEG_PER_DAY * half_span, 20.0),
            mid,
            rng_sso,
        ),
    ]
    sso = (
        pd.concat([p for p in pops if len(p)], ignore_index=True)
        if any(len(p) for p in pops)
        else pops[0]
    )
    sso.insert(0, "ss_id", ID_SSO_BASE + np.arange(len(sso), dtype=np.int64))
    orbits = orbits_of(sso) if len(sso) else None
    site = Site(cad.site_lon_deg, cad.site_lat_deg, cad.site_height_m)
    agn = static[static["var_type"] == "agn"]
    drw = DampedRandomWalk(
        agn["id"].to_numpy(), agn["tau_d"].to_numpy(), agn["sf_inf_mag"].to_numpy(), rng_agn
    )
    variable_ids = set(static.loc[static["var_type"] != "none", "id"].tolist())

    # Write the survey-level tables now; the per-visit ones stream below.
    (out_dir / "exposures").mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    static.to_parquet(out_dir / "truth" / "static.parquet", index=False)
    transients.to_parquet(out_dir / "truth" / "transients.parquet", index=False)
    sso.to_parquet(out_dir / "truth" / "ss_orbits.parquet", index=False)
    make_refcat(static, skycfg.refcat_mag_limit, rng_ref).to_parquet(
        out_dir / "refcat.parquet", index=False
    )
    lc_sink = _ParquetSink(out_dir / "truth" / "lightcurves.parquet")
    ss_sink = _ParquetSink(out_dir / "truth" / "ss_positions.parquet")
    art_sink = _ParquetSink(out_dir / "truth" / "artifacts.parquet")
    visit_rows: list[dict[str, object]] = []
    total = len(visits) * len(geoms)
    done = 0
    field_px = field_radius_px(cam)

    for vi, visit in visits.iterrows():
        mjd, band = float(visit["mjd_tai"]), str(visit["band"])
        ra0, dec0 = float(visit["boresight_ra_deg"]), float(visit["boresight_dec_deg"])
        perr = rng_point.normal(0, cam.pointing_error_arcsec / 3600, 2)
        pointing = Pointing(
            ra0,
            dec0,
            float(visit["rotation_deg"]),
            ra0 + perr[0] / np.cos(np.deg2rad(dec0)),
            dec0 + perr[1],
            float(visit["rotation_deg"]) + rng_point.normal(0, cam.rotation_error_arcsec / 3600),
        )
        psf = VisitPsf.draw(float(visit["seeing_fwhm_arcsec"]), field_px, config.render, rng_point)
        offsets = dict(zip(drw.ids.tolist(), drw.advance(mjd).tolist(), strict=True))
        sources = _visit_sources(
            static, transients, sso, orbits, site, visit, band, mjd, ra0, dec0, radius_deg, offsets
        )
        for geom in geoms:
            rng = np.random.default_rng(
                np.random.SeedSequence([config.seed, int(vi), geom.detector])
            )
            out = render_detector(
                visit=visit,
                geometry=geom,
                pointing=pointing,
                psf=psf,
                camera=cam,
                render=config.render,
                sources=sources,
                rng=rng,
            )
            path = exposure_path(out_dir, int(visit["visit"]), geom.detector)
            write_exposure(out.exposure, path)
            _stream_truth(out, geom, visit, sources, variable_ids, lc_sink, ss_sink, art_sink)
            visit_rows.append(
                {
                    **{k: visit[k] for k in visits.columns},
                    "detector": geom.detector,
                    "true_ra_deg": pointing.true_ra_deg,
                    "true_dec_deg": pointing.true_dec_deg,
                    "true_rotation_deg": pointing.true_rotation_deg,
                    "psf_fwhm_arcsec": out.psf_fwhm_arcsec,
                    "sky_e_per_px": out.sky_e_per_px,
                    "sky_gradient_x": out.sky_gradient[0],
                    "sky_gradient_y": out.sky_gradient[1],
                    "psf_g1": psf.g1_const,
                    "psf_g2": psf.g2_const,
                    "psf_g_astig": psf.g_astig,
                    "path": str(path.relative_to(out_dir)),
                }
            )
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        logger.info("simulate visit=%d band=%s sources=%d", int(visit["visit"]), band, len(sources))

    lc_sink.close(pd.DataFrame({"id": pd.Series(dtype="int64")}))
    ss_sink.close(pd.DataFrame({"ss_id": pd.Series(dtype="int64")}))
    art_sink.close(pd.DataFrame({"kind": pd.Series(dtype=object)}))
    visit_table = pd.DataFrame(visit_rows)
    visit_table.to_parquet(out_dir / "visits.parquet", index=False)
    result = SurveyResult(
        out_dir,
        len(visits),
        len(visit_table),
        len(static),
        len(transients),
        len(sso),
        [tuple(f) for f in fields],
        time.perf_counter() - t_start,
    )
    manifest = {
        "software": "diaflow",
        "version": __version__,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "fields": result.fields,
        "counts": {
            "visits": result.n_visits,
            "exposures": result.n_exposures,
            "static": result.n_static,
            "transients": result.n_transients,
            "sso": result.n_sso,
        },
        "detector_offsets_px": [list(g.offset_px) for g in geoms],
        "bad_columns": [g.bad_columns.tolist() for g in geoms],
    }
    (out_dir / "survey.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return result


def _visit_sources(
    static: pd.DataFrame,
    transients: pd.DataFrame,
    sso: pd.DataFrame,
    orbits: object,
    site: Site,
    visit: pd.Series,
    band: str,
    mjd: float,
    ra0: float,
    dec0: float,
    radius_deg: float,
    agn_offsets: dict[int, float],
) -> pd.DataFrame:
    """Everything near the boresight at ``mjd``, with true fluxes, as render_detector wants."""
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
    if len(sso):
        parts.append(_sso_sources(sso, orbits, site, visit, band, mjd, ra0, dec0, radius_deg))
    return (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else parts[0]
    )


def _sso_sources(
    sso: pd.DataFrame,
    orbits: object,
    site: Site,
    visit: pd.Series,
    band: str,
    mjd: float,
    ra0: float,
    dec0: float,
    radius_deg: float,
) -> pd.DataFrame:
    half = float(visit["exptime_s"]) / 2 / 86400.0
    tdb = 32.184 / 86400.0
    pos = {}
    for label, t in (("start", mjd - half), ("mid", mjd), ("end", mjd + half)):
        obs = observer_heliocentric(site, [t])[0]
        pos[label] = (*astrometric_radec(orbits, t + tdb, obs), obs)  # type: ignore[arg-type]
    ra, dec, delta, r, obs = pos["mid"]
    on = _sep_deg(ra, dec, ra0, dec0) < radius_deg + 0.01
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


def _stream_truth(
    out: object,
    geom: DetectorGeometry,
    visit: pd.Series,
    sources: pd.DataFrame,
    variable_ids: set[int],
    lc_sink: _ParquetSink,
    ss_sink: _ParquetSink,
    art_sink: _ParquetSink,
) -> None:
    ny, nx = geom.shape
    drawn = out.sources  # type: ignore[attr-defined]
    visit_id, det = int(visit["visit"]), geom.detector
    common = {
        "visit": visit_id,
        "detector": det,
        "band": str(visit["band"]),
        "mjd_tai": float(visit["mjd_tai"]),
    }
    if len(drawn):
        on = (drawn["x"] >= 0) & (drawn["x"] <= nx - 1) & (drawn["y"] >= 0) & (drawn["y"] <= ny - 1)
        d = drawn[on]
        ids = d["id"].to_numpy()
        kind = sources.set_index("id").loc[ids, "kind"].to_numpy() if len(d) else np.array([])
        lc = d[(kind == "transient") | np.isin(ids, list(variable_ids))]
        lc_sink.append(lc.assign(**common))
        ss = d[kind == "sso"]
        if len(ss):
            info = sources[sources["kind"] == "sso"].set_index("id").loc[ss["id"].to_numpy()]
            # The drawn position is the start of the trail; report the mid-exposure one too.
            mid_x, mid_y = out.wcs_true.all_world2pix(  # type: ignore[attr-defined]
                info["mid_ra_deg"].to_numpy(), info["mid_dec_deg"].to_numpy(), 0
            )
            end_x, end_y = out.wcs_true.all_world2pix(  # type: ignore[attr-defined]
                info["trail_ra_deg"].to_numpy(), info["trail_dec_deg"].to_numpy(), 0
            )
            ss_sink.append(
                pd.DataFrame(
                    {
                        "ss_id": ss["id"].to_numpy(),
                        **common,
                        "ra_deg": info["mid_ra_deg"].to_numpy(),
                        "dec_deg": info["mid_dec_deg"].to_numpy(),
                        "x": mid_x,
                        "y": mid_y,
                        "mag": info["mag"].to_numpy(),
                        "flux_njy": ss["flux_njy"].to_numpy(),
                        "trail_length_px": np.hypot(
                            end_x - ss["x"].to_numpy(), end_y - ss["y"].to_numpy()
                        ),
                        "r_au": info["r_au"].to_numpy(),
                        "delta_au": info["delta_au"].to_numpy(),
                        "phase_deg": info["phase_deg"].to_numpy(),
                    }
                )
            )
    if out.artifacts:  # type: ignore[attr-defined]
        art_sink.append(pd.DataFrame(out.artifacts).assign(**common))  # type: ignore[attr-defined]
