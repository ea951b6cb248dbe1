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
from numpy.typing import NDArray

from .. import __version__
from ..errors import ConfigError
from ..image import make_detector_wcs, write_exposure
from .config import SurveyConfig
from .plan import detector_rng, plan_survey, visit_inputs
from .render import DetectorGeometry, RenderedDetector, mosaic, render_detector

__all__ = ["SurveyResult", "exposure_path", "simulate_survey", "true_wcs"]

logger = logging.getLogger(__name__)


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
    plan = plan_survey(config)
    visits, geoms = plan.visits, plan.detectors

    # Write the survey-level tables now; the per-visit ones stream below.
    (out_dir / "exposures").mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    plan.static.to_parquet(out_dir / "truth" / "static.parquet", index=False)
    plan.transients.to_parquet(out_dir / "truth" / "transients.parquet", index=False)
    plan.sso.to_parquet(out_dir / "truth" / "ss_orbits.parquet", index=False)
    plan.refcat.to_parquet(out_dir / "refcat.parquet", index=False)
    lc_sink = _ParquetSink(out_dir / "truth" / "lightcurves.parquet")
    ss_sink = _ParquetSink(out_dir / "truth" / "ss_positions.parquet")
    art_sink = _ParquetSink(out_dir / "truth" / "artifacts.parquet")
    visit_rows: list[dict[str, object]] = []
    variable_ids = np.array(sorted(plan.variable_ids), dtype=np.int64)
    total = len(visits) * len(geoms)
    done = 0

    for vi, visit in visits.iterrows():
        inputs = visit_inputs(plan, visit)
        pointing, psf, sources = inputs.pointing, inputs.psf, inputs.sources
        by_id = sources.set_index("id")  # once per visit, for every detector's truth rows
        for geom in geoms:
            rng = detector_rng(config, int(vi), geom.detector)
            out = render_detector(
                visit=visit,
                geometry=geom,
                pointing=pointing,
                psf=psf,
                camera=config.camera,
                render=config.render,
                sources=sources,
                rng=rng,
            )
            path = exposure_path(out_dir, int(visit["visit"]), geom.detector)
            write_exposure(out.exposure, path)
            _stream_truth(out, geom, visit, by_id, variable_ids, lc_sink, ss_sink, art_sink)
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
        logger.info(
            "simulate visit=%d band=%s sources=%d", int(visit["visit"]), visit["band"], len(sources)
        )

    lc_sink.close(pd.DataFrame({"id": pd.Series(dtype="int64")}))
    ss_sink.close(pd.DataFrame({"ss_id": pd.Series(dtype="int64")}))
    art_sink.close(pd.DataFrame({"kind": pd.Series(dtype=object)}))
    visit_table = pd.DataFrame(visit_rows)
    visit_table.to_parquet(out_dir / "visits.parquet", index=False)
    result = SurveyResult(
        out_dir,
        len(visits),
        len(visit_table),
        len(plan.static),
        len(plan.transients),
        len(plan.sso),
        plan.fields,
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


def _stream_truth(
    out: RenderedDetector,
    geom: DetectorGeometry,
    visit: pd.Series,
    sources_by_id: pd.DataFrame,
    variable_ids: NDArray[np.int64],
    lc_sink: _ParquetSink,
    ss_sink: _ParquetSink,
    art_sink: _ParquetSink,
) -> None:
    ny, nx = geom.shape
    drawn = out.sources
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
        kind = sources_by_id.loc[ids, "kind"].to_numpy() if len(d) else np.array([])
        lc = d[(kind == "transient") | np.isin(ids, variable_ids)]
        lc_sink.append(lc.assign(**common))
        ss = d[kind == "sso"]
        if len(ss):
            info = sources_by_id.loc[ss["id"].to_numpy()]
            # The drawn position is the start of the trail; report the mid-exposure one too.
            mid_x, mid_y = out.wcs_true.all_world2pix(
                info["mid_ra_deg"].to_numpy(), info["mid_dec_deg"].to_numpy(), 0
            )
            end_x, end_y = out.wcs_true.all_world2pix(
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
    if out.artifacts:
        art_sink.append(pd.DataFrame(out.artifacts).assign(**common))
