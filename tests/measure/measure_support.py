"""Synthetic difference images with truth for the measurement tests, built once per run.

Not a conftest.py: other test folders import the root ``conftest`` by name, which a second
conftest module would shadow. Builders are cached, so each field is made once per process;
test modules wrap them in fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from diaflow.image import Exposure, PixelPsf
from diaflow.measure import Detections, DiaSourceConfig, MeasureConfig, detect_and_measure
from diaflow.measure.fakes import SyntheticDifference, simulate_difference
from diaflow.sim.psf import VisitPsf, true_pixel_psf

PIXEL_SCALE = 0.2


@dataclass(frozen=True)
class MeasuredField:
    """A synthetic difference image, its truth, detections and DiaSource table."""

    exposure: Exposure
    truth: pd.DataFrame
    detections: Detections
    table: pd.DataFrame

    def matched(self, radius_px: float = 2.0) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(truth rows, table rows) of detections within ``radius_px`` of an injection."""
        tree = cKDTree(self.truth[["x", "y"]].to_numpy())
        d, j = tree.query(np.c_[self.table["x"], self.table["y"]])
        ok = d <= radius_px
        return self.truth.iloc[j[ok]].reset_index(drop=True), self.table[ok].reset_index(drop=True)


@cache
def varying_psf() -> PixelPsf:
    """A Rubin-like PSF: Moffat (beta 3.5), 0.8 arcsec at the boresight, slightly elliptical,
    varying over a 2048 x 2048 detector that sits off the boresight (the simulator's truth)."""
    psf = VisitPsf(
        fwhm_arcsec=0.8,
        beta=3.5,
        radial_variation=0.08,
        field_radius_px=6000.0,
        g1_const=0.02,
        g2_const=-0.01,
        g_astig=0.02,
    )
    return true_pixel_psf(psf, (-1500.0, -800.0), (2048, 2048), PIXEL_SCALE)  # type: ignore[no-any-return]


def _measure(sim: SyntheticDifference, **kw: object) -> MeasuredField:
    table, det = detect_and_measure(sim.exposure, time_processed_mjd_tai=61000.5, **kw)  # type: ignore[arg-type]
    return MeasuredField(sim.exposure, sim.truth, det, table)


@cache
def point_field() -> MeasuredField:
    """2048 x 2048, 700 point sources at S/N 10-100 (30% negative), source Poisson noise."""
    sim = simulate_difference(
        (2048, 2048),
        psf=varying_psf(),
        rng=np.random.default_rng(101),
        noise_sigma=8.0,
        counts={"point": 700},
        snr_range=(10.0, 100.0),
        spacing_px=45.0,
        zero_point=28.5,
    )
    return _measure(sim)


@cache
def model_field() -> MeasuredField:
    """1024 x 1024 with every kind of injection, for flags and the real/bogus score."""
    sim = simulate_difference(
        (1024, 1024),
        psf=varying_psf(),
        rng=np.random.default_rng(202),
        noise_sigma=10.0,
        counts={"point": 120, "trail": 15, "dipole": 20, "cosmic_ray": 40, "bad_column": 2},
        snr_range=(10.0, 200.0),
        spacing_px=50.0,
    )
    return _measure(sim, config=DiaSourceConfig(measure=MeasureConfig()))
