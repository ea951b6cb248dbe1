"""Simulated data shared by the tests, built once per run, with its truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diaflow.sim import SurveyConfig, preset, simulate_survey


@dataclass(frozen=True)
class SimulatedSurvey:
    """A survey on disk, its configuration and its truth tables."""

    out_dir: Path
    config: SurveyConfig
    visits: pd.DataFrame
    static: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.out_dir / "truth" / f"{name}.parquet")


def _load(out_dir: Path, cfg: SurveyConfig) -> SimulatedSurvey:
    return SimulatedSurvey(
        out_dir,
        cfg,
        pd.read_parquet(out_dir / "visits.parquet"),
        pd.read_parquet(out_dir / "truth" / "static.parquet"),
    )


@pytest.fixture(scope="session")
def star_survey(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSurvey:
    """One 1024^2 detector, 3 clear nights of r/i pairs, a star-rich field with all artifacts."""
    cfg = preset(
        "default",
        **{
            "seed": 7,
            "camera.detector_shape": (1024, 1024),
            "camera.n_detectors": 1,
            "cadence.n_nights": 3,
            "cadence.visits_per_night": 2,
            "cadence.weather_loss_fraction": 0.0,
            "cadence.bands": ("r", "i"),
            "sky.star_density_per_arcmin2": 25.0,
            "sky.star_count_slope": 0.12,  # more bright stars than high latitude: a disc field
            "render.satellite_probability": 0.5,
        },
    )
    out = tmp_path_factory.mktemp("star_survey")
    simulate_survey(cfg, out, overwrite=True)
    return _load(out, cfg)


@pytest.fixture(scope="session")
def sso_survey(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSurvey:
    """15 nights of an empty sky full of asteroids (cheap to render), for the orbit tests."""
    cfg = preset(
        "default",
        **{
            "seed": 11,
            "camera.detector_shape": (1024, 1024),
            "camera.n_detectors": 1,
            "cadence.n_nights": 15,
            "cadence.visits_per_night": 2,
            "cadence.weather_loss_fraction": 0.0,
            "cadence.bands": ("r",),
            "sky.star_density_per_arcmin2": 0.0,
            "sky.galaxy_density_per_arcmin2": 0.0,
            "sky.transients_per_deg2_per_day": 0.0,
            "sky.main_belt_per_deg2": 1500.0,
            "sky.neo_per_deg2": 20.0,
            "render.cosmic_rays_per_cm2_per_min": 0.0,
            "render.satellite_probability": 0.0,
        },
    )
    out = tmp_path_factory.mktemp("sso_survey")
    simulate_survey(cfg, out, overwrite=True)
    return _load(out, cfg)


def moffat_enclosed(radius_px: float, fwhm_px: float, beta: float) -> float:
    """Fraction of a Moffat profile's flux inside ``radius_px``."""
    alpha = fwhm_px / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return float(1 - (1 + (radius_px / alpha) ** 2) ** (1 - beta))
