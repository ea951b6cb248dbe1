"""The per-visit pipeline end to end on a simulated survey: template, then DiaSources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diaflow.diffim import StampConfig, SubtractConfig
from diaflow.image import read_exposure
from diaflow.measure import DIA_SOURCE_COLUMNS
from diaflow.nightly import VisitConfig, process_visit
from simdata import SimulatedSurvey


def _fresh(s: SimulatedSurvey, first: pd.DataFrame, visit: int) -> pd.DataFrame:
    """Truth transients and asteroids on ``visit``, absent from every template visit, bright
    (> 5000 nJy) and 60 px or more from the detector edges: x, y, ra_deg, dec_deg."""
    lc = s.table("lightcurves")
    transients = s.table("transients").set_index("id")
    now = lc[(lc["visit"] == visit) & (lc["id"] >= 1_000_000_000)]
    in_template = lc[lc["visit"].isin(first["visit"]) & (lc["flux_njy"] > 0)]["id"]
    fresh = now[~now["id"].isin(in_template) & (now["flux_njy"] > 5000)]
    fresh = fresh.assign(
        ra_deg=transients.loc[fresh["id"], "ra_deg"].to_numpy(),
        dec_deg=transients.loc[fresh["id"], "dec_deg"].to_numpy(),
    )
    ss = s.table("ss_positions")
    moving = ss[(ss["visit"] == visit) & (ss["flux_njy"] > 5000)]
    both = pd.concat(
        [fresh[["x", "y", "ra_deg", "dec_deg"]], moving[["x", "y", "ra_deg", "dec_deg"]]]
    )
    inner = both["x"].between(60, 963) & both["y"].between(60, 963)
    return both[inner]


def _visit_with_most_fresh_sources(s: SimulatedSurvey, first: pd.DataFrame) -> pd.Series:
    later = s.visits[s.visits["night"] >= 6]
    counts = [len(_fresh(s, first, int(v))) for v in later["visit"]]
    return later.iloc[int(np.argmax(counts))]


@pytest.fixture(scope="module")
def processed(pipeline_survey: SimulatedSurvey, pipeline_template):  # type: ignore[no-untyped-def]
    s, template = pipeline_survey, pipeline_template
    refcat = pd.read_parquet(s.out_dir / "refcat.parquet")
    first = s.visits[s.visits["night"] < 6]
    row = _visit_with_most_fresh_sources(s, first)
    # A 1024^2 detector at this density offers ~10-20 kernel stars.
    config = VisitConfig(subtract=SubtractConfig(stamps=StampConfig(min_snr=10.0, min_stamps=5)))
    result = process_visit(
        read_exposure(s.out_dir / row["path"]), refcat=refcat, template=template, config=config
    )
    return s, first, row, template, result


def test_pipeline_produces_dia_sources_with_rubin_columns(processed) -> None:  # type: ignore[no-untyped-def]
    _, first, _, template, result = processed
    assert set(template.visits) <= set(first["visit"])
    assert set(DIA_SOURCE_COLUMNS) <= set(result.dia_sources.columns)
    assert len(result.dia_sources) > 0
    assert set(result.seconds) >= {"calibrate", "warp", "subtract", "measure", "total"}
    assert result.template_version == template.version


def test_new_transients_and_asteroids_are_found(processed) -> None:  # type: ignore[no-untyped-def]
    s, first, row, _, result = processed
    targets = _fresh(s, first, int(row["visit"]))
    assert len(targets) >= 1, "the fixture should hold a new bright transient or asteroid"
    ds = result.dia_sources
    for t in targets.itertuples():
        sep = np.hypot((ds["ra"] - t.ra_deg) * np.cos(np.deg2rad(t.dec_deg)), ds["dec"] - t.dec_deg)
        assert sep.min() * 3600 < 0.5, f"missed the source at ({t.x:.0f}, {t.y:.0f})"
