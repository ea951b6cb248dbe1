"""Simulated data the tests share: the survey records the fixtures return, and truth helpers.

Test modules import these from here (``from simdata import ...``); the fixtures that build the
surveys are in ``conftest.py``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diaflow.sim import SurveyConfig


@dataclass(frozen=True)
class SimulatedSurvey:
    """A survey on disk, its configuration and its truth tables."""

    out_dir: Path
    config: SurveyConfig
    visits: pd.DataFrame
    static: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.out_dir / "truth" / f"{name}.parquet")


def load_survey(out_dir: Path, cfg: SurveyConfig) -> SimulatedSurvey:
    return SimulatedSurvey(
        out_dir,
        cfg,
        pd.read_parquet(out_dir / "visits.parquet"),
        pd.read_parquet(out_dir / "truth" / "static.parquet"),
    )


def moffat_enclosed(radius_px: float, fwhm_px: float, beta: float) -> float:
    """Fraction of a Moffat profile's flux inside ``radius_px``."""
    alpha = fwhm_px / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return float(1 - (1 + (radius_px / alpha) ** 2) ** (1 - beta))


def visit_psf(survey: SimulatedSurvey, row: pd.Series):  # type: ignore[no-untyped-def]
    """The true PSF model (VisitPsf) of a visit, from its row of ``visits.parquet``."""
    from diaflow.sim.psf import VisitPsf

    return VisitPsf.from_row(row, survey.config)


def truth_psf(survey: SimulatedSurvey, row: pd.Series):  # type: ignore[no-untyped-def]
    """The true PSF of a visit-detector row as a PixelPsf."""
    from diaflow.sim.psf import true_visit_psf

    return true_visit_psf(row, survey.config)


TEMPLATE_NIGHTS = 4


@dataclass(frozen=True)
class NightSurvey:
    """A simulated survey on disk and a repo holding its templates (copy before writing)."""

    survey: Path
    template_repo: Path
    visits: pd.DataFrame
    refcat: pd.DataFrame

    def inputs(self, nights: list[int] | None = None) -> list[Path]:
        v = self.visits[self.visits["night"] >= TEMPLATE_NIGHTS]
        if nights is not None:
            v = v[v["night"].isin(nights)]
        return [self.survey / p for p in v["path"]]

    def fresh_repo(self, root: Path):  # type: ignore[no-untyped-def]
        """A new working area holding only the templates."""
        from diaflow.nightly.repo import Repo

        shutil.copytree(self.template_repo / "templates", root / "templates")
        return Repo(root)

    def truth(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.survey / "truth" / f"{name}.parquet")
