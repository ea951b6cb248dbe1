"""Simulated data shared by the tests, built once per run, with its truth."""

from __future__ import annotations

import pandas as pd
import pytest

from diaflow.sim import preset, simulate_survey
from simdata import TEMPLATE_NIGHTS, NightSurvey, SimulatedSurvey, load_survey


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
    return load_survey(out, cfg)


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
    return load_survey(out, cfg)


@pytest.fixture(scope="session")
def pipeline_survey(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSurvey:
    """Image-pipeline data: one 1024^2 detector, 10 nights of r-band pairs (20 visits).

    Earlier visits make templates, later ones are science visits. The sky has the default
    stars and galaxies, variables, many transients with hosts, asteroids, cosmic rays, satellite
    trails, bad columns and saturated stars; seeing varies from visit to visit.
    """
    cfg = preset(
        "default",
        **{
            "seed": 2024,
            "camera.detector_shape": (1024, 1024),
            "camera.n_detectors": 1,
            "cadence.n_nights": 10,
            "cadence.visits_per_night": 2,
            "cadence.weather_loss_fraction": 0.0,
            "cadence.bands": ("r",),
            "sky.star_density_per_arcmin2": 12.0,
            "sky.transients_per_deg2_per_day": 300.0,
            "sky.main_belt_per_deg2": 600.0,
            "render.satellite_probability": 0.2,
        },
    )
    out = tmp_path_factory.mktemp("pipeline_survey")
    simulate_survey(cfg, out, overwrite=True)
    return load_survey(out, cfg)


@pytest.fixture(scope="session")
def pipeline_template(pipeline_survey: SimulatedSurvey):  # type: ignore[no-untyped-def]
    """The template of the pipeline survey's field from its first six nights (12 visits), on a
    patch 1.5 detectors wide about the field centre."""
    from diaflow.coadd import make_patch
    from diaflow.image import read_exposure
    from diaflow.nightly import build_patch_template

    s = pipeline_survey
    refcat = pd.read_parquet(s.out_dir / "refcat.parquet")
    first = s.visits[s.visits["night"] < 6]
    row = s.visits.iloc[len(first)]
    patch = make_patch(
        ra_deg=float(row["boresight_ra_deg"]),
        dec_deg=float(row["boresight_dec_deg"]),
        size_arcsec=1024 * 0.2 * 1.5,
        pixel_scale_arcsec=0.2,
        name="field0-r",
    )
    exposures = [read_exposure(s.out_dir / p) for p in first["path"]]
    return build_patch_template(exposures, refcat=refcat, patch=patch, band="r")


@pytest.fixture(scope="session")
def night_survey(tmp_path_factory: pytest.TempPathFactory) -> NightSurvey:
    """One 1024² detector, g and r, 8 nights: templates from nights 0-3, nights 4-7 processed.

    Variables, transients with hosts, asteroids, cosmic rays, satellite trails and seeing
    changes as in every simulated survey.
    """
    from diaflow.coadd import TemplateConfig
    from diaflow.nightly.repo import Repo
    from diaflow.nightly.templates import TemplatePlanConfig, build_templates

    cfg = preset(
        "quick",
        **{
            "seed": 404,
            "cadence.n_nights": 8,
            "cadence.weather_loss_fraction": 0.0,
            "camera.detector_shape": (1024, 1024),
            "camera.n_detectors": 1,
            "sky.transients_per_deg2_per_day": 600.0,
            # Enough bright stars to calibrate and PSF-match every visit.
            "sky.star_density_per_arcmin2": 25.0,
            "sky.star_count_slope": 0.12,
        },
    )
    survey = tmp_path_factory.mktemp("night_survey")
    simulate_survey(cfg, survey, overwrite=True)
    visits = pd.read_parquet(survey / "visits.parquet")
    refcat = pd.read_parquet(survey / "refcat.parquet")
    repo_root = tmp_path_factory.mktemp("night_templates")
    first = visits[visits["night"] < TEMPLATE_NIGHTS]
    plan = TemplatePlanConfig(template=TemplateConfig(max_visits=6))
    entries = build_templates(
        [survey / p for p in first["path"]], Repo(repo_root), refcat=refcat, config=plan
    )
    assert {e.band for e in entries} == set(visits["band"])
    return NightSurvey(survey, repo_root, visits, refcat)
