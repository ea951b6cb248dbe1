"""Survey-level behaviour: reference catalog, determinism, configuration errors, the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sep
from typer.testing import CliRunner

from diaflow.cli import app
from diaflow.errors import ConfigError
from diaflow.image import mask_bits, read_exposure
from diaflow.sim import SurveyConfig, preset, simulate_survey, true_wcs
from diaflow.sim.sky import J2016_MJD
from simdata import SimulatedSurvey


def test_reference_catalog_matches_the_rendered_stars(star_survey: SimulatedSurvey) -> None:
    ref = pd.read_parquet(star_survey.out_dir / "refcat.parquet")
    static = star_survey.static.set_index("id")
    # Catalog positions scatter about the truth by their quoted errors.
    truth = static.loc[ref["truth_id"]]
    dra = (ref["ra"].to_numpy() - truth["ra_deg"].to_numpy()) * np.cos(
        np.deg2rad(ref["dec"].to_numpy())
    )
    pull = dra / ref["ra_err"].to_numpy()
    assert 0.8 < np.std(pull) < 1.2
    # Fluxes: the reference r flux matches the star's r magnitude within its error.
    flux_pull = (ref["r_flux"] - 10 ** (-0.4 * (truth["mag_r"].to_numpy() - 31.4))) / ref[
        "r_fluxErr"
    ]
    assert 0.8 < np.std(flux_pull) < 1.2

    row = star_survey.visits.iloc[0]
    exp = read_exposure(star_survey.out_dir / row["path"])
    years = (row["mjd_tai"] - ref["epoch"].to_numpy()) / 365.25
    ra = ref["ra"] + ref["pm_ra"] * years / 3.6e6 / np.cos(np.deg2rad(ref["dec"]))
    dec = ref["dec"] + ref["pm_dec"] * years / 3.6e6
    x, y = true_wcs(row, star_survey.config).all_world2pix(ra, dec, 0)
    ny, nx = exp.shape
    sky = float(row["sky_e_per_px"])
    sel = (x > 30) & (x < nx - 30) & (y > 30) & (y < ny - 30)
    bright = sel & (ref["r_flux"] > 3e4) & ~ref["is_variable"]
    data = (exp.image - sky).astype(np.float64)
    sat = (exp.mask & mask_bits("SAT", "BAD")) != 0
    xw, yw, flag = sep.winpos(data, x[bright], y[bright], 2.0, mask=sat)
    ok = flag == 0
    offsets = np.hypot(xw[ok] - x[bright][ok], yw[ok] - y[bright][ok])
    assert ok.sum() >= 10
    # Through the true WCS, catalog stars land on their images to a few hundredths of a pixel.
    assert np.median(offsets) < 0.05
    # Through the header WCS they are off by the pointing error: calibration has work to do.
    xh, yh = exp.wcs.all_world2pix(ra[bright][ok], dec[bright][ok], 0)  # type: ignore[union-attr]
    shift_arcsec = np.median(np.hypot(xh - xw[ok], yh - yw[ok])) * 0.2
    cosd = np.cos(np.deg2rad(row["boresight_dec_deg"]))
    expected = (
        np.hypot(
            (row["true_ra_deg"] - row["boresight_ra_deg"]) * cosd,
            row["true_dec_deg"] - row["boresight_dec_deg"],
        )
        * 3600
    )
    assert shift_arcsec == pytest.approx(expected, abs=0.2)
    assert ref["epoch"].iloc[0] == J2016_MJD


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tiny(seed: int = 5) -> SurveyConfig:
    return preset(
        "quick",
        **{
            "seed": seed,
            "camera.detector_shape": (128, 128),
            "cadence.n_nights": 2,
            "cadence.weather_loss_fraction": 0.0,
            "sky.main_belt_per_deg2": 500.0,
            "sky.neo_per_deg2": 1.0,
        },
    )


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    simulate_survey(_tiny(), tmp_path / "a")
    simulate_survey(_tiny(), tmp_path / "b")
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b
    assert any(k.endswith(".fits") for k in a)
    simulate_survey(_tiny(seed=6), tmp_path / "c")
    assert _digest(tmp_path / "c") != a


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cadence.exptime_s": -30.0}, "exptime_s must be a positive"),
        ({"cadence.bands": ("r", "q")}, "unknown band"),
        ({"cadence.visits_per_night": 40, "cadence.n_fields": 4}, "impossible cadence"),
        ({"cadence.revisit_min_minutes": (90.0, 15.0)}, "0 < min <= max"),
        ({"camera.detector_shape": (16, 16)}, "at least 64"),
        ({"sky.rr_lyrae_fraction": 1.5}, "rr_lyrae_fraction"),
        ({"sky.star_mag_range": (26.0, 14.0)}, "bright < faint"),
    ],
)
def test_bad_configuration_is_refused_and_writes_nothing(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=message):
        simulate_survey(_tiny().replace(**changes), out)
    assert not out.exists()


def test_unknown_config_field_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown configuration field"):
        _tiny().replace(**{"cadence.nights": 3})
    bad = tmp_path / "bad.toml"
    bad.write_text("[cadence]\nn_nigths = 3\n")
    with pytest.raises(ConfigError, match=r"unknown field cadence\.n_nigths"):
        SurveyConfig.from_toml(bad)


def test_non_empty_output_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        simulate_survey(_tiny(), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_simulate_with_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "survey.toml"
    config.write_text(
        "seed = 3\n[camera]\ndetector_shape = [128, 128]\nn_detectors = 1\n"
        "[cadence]\nn_nights = 2\nweather_loss_fraction = 0.0\n"
        "[sky]\nmain_belt_per_deg2 = 300.0\nneo_per_deg2 = 1.0\n"
    )
    result = CliRunner().invoke(
        app, ["simulate", "--config", str(config), "--out", str(tmp_path / "s"), "--no-plot"]
    )
    assert result.exit_code == 0, result.output
    assert "exposures" in result.output
    visits = pd.read_parquet(tmp_path / "s" / "visits.parquet")
    assert len(visits) == len(list((tmp_path / "s" / "exposures").glob("*.fits"))) > 0


def test_cli_reports_bad_configuration(tmp_path: Path) -> None:
    config = tmp_path / "survey.toml"
    config.write_text("[cadence]\nexptime_s = -1.0\n")
    result = CliRunner().invoke(
        app, ["simulate", "--config", str(config), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 2
    assert "exptime_s" in result.output
    assert not (tmp_path / "s").exists()


def test_survey_following_rubin_baseline_cadence(tmp_path: Path) -> None:
    from diaflow.sim.cadence import find_sorcha_cadence

    try:
        find_sorcha_cadence()
    except ConfigError:
        pytest.skip("Sorcha's cadence database is not installed")
    cfg = _tiny().replace(
        **{"cadence.opsim_path": "sorcha", "cadence.n_nights": 3, "camera.n_detectors": 1}
    )
    result = simulate_survey(cfg, tmp_path / "s")
    visits = pd.read_parquet(tmp_path / "s" / "visits.parquet")
    assert result.n_visits == len(visits) > 0
    # The baseline starts on 2023-10-01 (MJD 60218): the default start is outside it.
    assert visits["mjd_tai"].min() == pytest.approx(60218.0, abs=3)
    assert set(visits["band"]) <= set("ugrizy")
