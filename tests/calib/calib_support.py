"""Calibrated visits of the shared pipeline survey, with their truth, built once per process.

Not a conftest.py: other test folders import the root ``conftest`` by name, which a second
conftest module would shadow. :func:`calibrated_visits` is cached, so the twenty visits are
calibrated once however many test modules ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from diaflow.calib import CalibrationResult, calibrate
from diaflow.image import Exposure, PixelPsf, read_exposure
from diaflow.sim import true_wcs
from diaflow.sim.lightcurves import static_fluxes_njy
from diaflow.sim.render import sky_model
from diaflow.sim.sky import J2016_MJD
from simdata import SimulatedSurvey, truth_psf


@dataclass(frozen=True)
class CalibratedVisit:
    """One visit: the raw exposure, its calibration and its truth."""

    row: pd.Series
    raw: Exposure
    result: CalibrationResult
    truth_psf: PixelPsf
    sky: np.ndarray
    """True sky (electrons per pixel)."""
    static: pd.DataFrame
    """Every static source with its true pixel position ``x``, ``y`` and ``counts``."""
    artifacts: pd.DataFrame
    """Truth artifacts of this visit."""


def truth_on_exposure(survey: SimulatedSurvey, row: pd.Series) -> pd.DataFrame:
    """Static sources at the visit's epoch through the true WCS, with their true counts."""
    sky = survey.static
    years = (row["mjd_tai"] - J2016_MJD) / 365.25
    cosd = np.cos(np.deg2rad(sky["dec_deg"]))
    ra = sky["ra_deg"] + sky["pm_ra_mas_yr"] * years / 3.6e6 / cosd
    dec = sky["dec_deg"] + sky["pm_dec_mas_yr"] * years / 3.6e6
    x, y = true_wcs(row, survey.config).all_world2pix(ra, dec, 0)
    flux = static_fluxes_njy(sky, row["band"], row["mjd_tai"])
    counts = flux * 10 ** (0.4 * (row["zero_point_true"] - 31.4))
    return sky.assign(x=x, y=y, counts=counts)


@cache
def _calibrate_all(out_dir: str, survey_id: int) -> tuple[CalibratedVisit, ...]:
    survey = _SURVEYS[survey_id]
    refcat = pd.read_parquet(Path(out_dir) / "refcat.parquet")
    arts = survey.table("artifacts")
    out = []
    for _, row in survey.visits.iterrows():
        raw = read_exposure(Path(out_dir) / row["path"])
        out.append(
            CalibratedVisit(
                row=row,
                raw=raw,
                result=calibrate(raw, refcat),
                truth_psf=truth_psf(survey, row),
                sky=sky_model(
                    raw.shape, row["sky_e_per_px"], (row["sky_gradient_x"], row["sky_gradient_y"])
                ),
                static=truth_on_exposure(survey, row),
                artifacts=arts[(arts["visit"] == row["visit"]) & (arts["detector"] == 0)],
            )
        )
    return tuple(out)


_SURVEYS: dict[int, SimulatedSurvey] = {}


def calibrated_visits(survey: SimulatedSurvey) -> tuple[CalibratedVisit, ...]:
    """Every visit of ``survey`` calibrated against its reference catalog (cached)."""
    _SURVEYS[id(survey)] = survey
    return _calibrate_all(str(survey.out_dir), id(survey))


def cosmic_ray_pixels(artifacts: pd.DataFrame, shape: tuple[int, int]) -> list[np.ndarray]:
    """Pixel (y, x) indices of each truth cosmic-ray track, as the simulator deposits them."""
    ny, nx = shape
    tracks = []
    for _, a in artifacts[artifacts["kind"] == "cosmic_ray"].iterrows():
        n = int(4 * max(abs(a["x1"] - a["x0"]), abs(a["y1"] - a["y0"]))) + 2
        xs = np.clip(np.round(np.linspace(a["x0"], a["x1"], n)), 0, nx - 1).astype(int)
        ys = np.clip(np.round(np.linspace(a["y0"], a["y1"], n)), 0, ny - 1).astype(int)
        tracks.append(np.unique(np.column_stack([ys, xs]), axis=0))
    return tracks
