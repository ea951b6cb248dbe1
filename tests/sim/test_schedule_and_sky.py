"""Schedules, the static and transient sky, light curves and the solar-system sampler, checked
against physics and against truths computed independently of the code under test (astropy's
topocentric frames, the raw OpSim database, analytic areas and distributions, blind rejection).
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import (
    AltAz,
    EarthLocation,
    SkyCoord,
    get_body,
    get_body_barycentric,
)
from astropy.time import Time
from astropy.utils import iers
from astropy.utils.exceptions import AstropyWarning
from scipy import stats

from diaflow.ephem import KeplerianOrbits, observer_heliocentric
from diaflow.errors import ConfigError
from diaflow.sim.cadence import find_sorcha_cadence, opsim_schedule, synthetic_schedule
from diaflow.sim.config import BANDS, CadenceConfig, SkyConfig
from diaflow.sim.lightcurves import (
    DampedRandomWalk,
    static_fluxes_njy,
    transient_fluxes_njy,
)
from diaflow.sim.population import _draw_elements, draw_population
from diaflow.sim.sky import draw_static_sky, draw_transients

AB_ZERO_NJY = 3631.0e9
"""The AB magnitude system's zero point, 3631 Jy, in nJy."""
OBLIQUITY_RAD = np.deg2rad(84381.448 / 3600.0)


# --------------------------------------------------------------------------------------------
# Independent helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_iers_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Astropy uses the IERS and leap-second tables it ships with; never the network."""
    monkeypatch.setattr(iers.conf, "auto_download", False)
    # The bundled IERS-A predictions are fine for a few years; never fetch a fresher table.
    monkeypatch.setattr(iers.conf, "auto_max_age", None)


def _altaz(cfg: CadenceConfig, mjd_tai: np.ndarray) -> AltAz:
    loc = EarthLocation.from_geodetic(
        cfg.site_lon_deg * u.deg, cfg.site_lat_deg * u.deg, cfg.site_height_m * u.m
    )
    return AltAz(obstime=Time(mjd_tai, format="mjd", scale="tai"), location=loc)


@contextlib.contextmanager
def _iers_warnings_ignored():
    """Tolerate only astropy's IERS-table warnings (stale or out-of-range Earth orientation)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=iers.IERSWarning)
        warnings.filterwarnings(
            "ignore", category=AstropyWarning, message=r".*(IERS|polar motion).*"
        )
        yield


def _sun_altitude_deg(cfg: CadenceConfig, mjd_tai: np.ndarray) -> np.ndarray:
    frame = _altaz(cfg, mjd_tai)
    with _iers_warnings_ignored():
        return get_body("sun", frame.obstime, frame.location).transform_to(frame).alt.deg


def _astropy_airmass(cfg: CadenceConfig, visits: pd.DataFrame) -> np.ndarray:
    frame = _altaz(cfg, visits["mjd_tai"].to_numpy())
    coord = SkyCoord(
        visits["boresight_ra_deg"].to_numpy() * u.deg,
        visits["boresight_dec_deg"].to_numpy() * u.deg,
    )
    with _iers_warnings_ignored():
        return coord.transform_to(frame).secz.value


def _sep_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation (haversine, stable at small angles)."""
    ra1, dec1, ra2, dec2 = (np.deg2rad(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.rad2deg(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def _binomial_ok(k: int, n: int, p: float, z: float = 4.0) -> bool:
    return abs(k - n * p) <= z * np.sqrt(n * p * (1 - p))


# --------------------------------------------------------------------------------------------
# 1. Synthetic schedule
# --------------------------------------------------------------------------------------------

# Two fields 12 h apart in RA at Dec -70: from Cerro Pachon one of them is always above airmass 2
# during the night, so a night without visits can only be a night lost to weather.
SURVEY_FIELDS = [(0.0, -70.0), (180.0, -70.0)]
SURVEY_CFG = CadenceConfig(
    n_nights=200, n_fields=2, weather_loss_fraction=0.2, bands=("g", "r", "i", "z")
)


@pytest.fixture(scope="module")
def survey() -> pd.DataFrame:
    return synthetic_schedule(SURVEY_CFG, SURVEY_FIELDS, np.random.default_rng(1))


def test_visits_sorted_with_rubin_style_ids(survey: pd.DataFrame) -> None:
    assert np.all(np.diff(survey["mjd_tai"].to_numpy()) > 0)
    assert survey["visit"].is_unique
    # dayobs is the UTC date 12 hours earlier (Rubin's convention), computed here with astropy.
    ymd = (Time(survey["mjd_tai"].to_numpy(), format="mjd", scale="tai") - 12 * u.hour).utc.ymdhms
    dayobs = ymd["year"] * 10000 + ymd["month"] * 100 + ymd["day"]
    np.testing.assert_array_equal(survey["visit"].to_numpy() // 100000, dayobs)
    # The sequence number counts 1, 2, 3, ... through each observing day, in time order.
    seq = survey["visit"].to_numpy() % 100000
    for _, s in pd.Series(seq).groupby(dayobs):
        np.testing.assert_array_equal(s.to_numpy(), np.arange(1, len(s) + 1))
    # One calendar night per observing day.
    assert survey.groupby("night")["visit"].apply(lambda v: (v // 100000).nunique()).eq(1).all()


def test_revisits_spaced_as_configured(survey: pd.DataFrame) -> None:
    lo, hi = SURVEY_CFG.revisit_min_minutes
    slot_min = SURVEY_CFG.exptime_s / 60.0 + 0.5
    groups = survey.groupby(["night", "field"])
    assert groups.size().eq(SURVEY_CFG.visits_per_night).all()
    gaps = groups["mjd_tai"].apply(lambda t: np.diff(np.sort(t.to_numpy())) * 1440.0)
    gaps = np.concatenate(gaps.to_numpy())
    assert gaps.size > 100
    assert gaps.min() >= lo - slot_min
    assert gaps.max() <= hi + slot_min
    # Drawn across the whole range, not pinned to one end.
    assert gaps.min() < lo + 0.2 * (hi - lo)
    assert gaps.max() > hi - 0.2 * (hi - lo)


def test_visits_are_at_night(survey: pd.DataFrame) -> None:
    sun_alt = _sun_altitude_deg(SURVEY_CFG, survey["mjd_tai"].to_numpy())
    assert sun_alt.max() < -12.0


def test_airmass_matches_astropy(survey: pd.DataFrame) -> None:
    x_true = _astropy_airmass(SURVEY_CFG, survey)
    x = survey["airmass"].to_numpy()
    assert np.all(x >= 1.0)
    np.testing.assert_allclose(x, x_true, rtol=0.01)


def test_airmass_at_most_two(survey: pd.DataFrame) -> None:
    assert survey["airmass"].max() <= 2.0


def test_airmass_matches_astropy_closely(survey: pd.DataFrame) -> None:
    # Precession and nutation applied (erfa atci13 + era00) agree with astropy to 1e-5; only
    # aberration (20 arcsec, < 2e-4 at X = 2) may be neglected.
    x_true = _astropy_airmass(SURVEY_CFG, survey)
    np.testing.assert_allclose(survey["airmass"].to_numpy(), x_true, rtol=1e-3)


def test_no_twilight_visits_near_summer_solstice() -> None:
    cfg = CadenceConfig(
        start_mjd=61380.0,
        n_nights=20,
        n_fields=2,
        weather_loss_fraction=0.0,
        visits_per_night=2,
        revisit_min_minutes=(15.0, 20.0),
    )
    visits = synthetic_schedule(cfg, [(30.0, -30.0), (210.0, -30.0)], np.random.default_rng(2))
    assert _sun_altitude_deg(cfg, visits["mjd_tai"].to_numpy()).max() < -12.0


def test_exposures_do_not_overlap() -> None:
    cfg = CadenceConfig(n_nights=30, n_fields=5, weather_loss_fraction=0.0)
    visits = synthetic_schedule(
        cfg, [(150.0 + 0.5 * k, 10.0) for k in range(5)], np.random.default_rng(3)
    )
    starts = visits["mjd_tai"].to_numpy() - visits["exptime_s"].to_numpy() / 2 / 86400.0
    assert np.all(np.diff(starts) * 86400.0 >= cfg.exptime_s)


def test_bands_from_config(survey: pd.DataFrame) -> None:
    assert set(survey["band"]) <= set(SURVEY_CFG.bands)
    assert set(survey["band"]) == set(SURVEY_CFG.bands)  # 1300 draws reach all four
    per_night = survey.groupby(["night", "field"])["band"].nunique()
    assert per_night.between(1, 2).all()


def test_seeing_range_and_airmass_dependence(survey: pd.DataFrame) -> None:
    fwhm = survey["seeing_fwhm_arcsec"].to_numpy()
    assert fwhm.min() >= 0.55
    assert fwhm.max() <= 1.8
    # Within a night (same atmosphere) and a band, seeing grows with airmass; Kolmogorov
    # turbulence gives FWHM ~ X^0.6. Demean log FWHM and log X per (night, band).
    df = pd.DataFrame(
        {
            "lf": np.log(fwhm),
            "lx": np.log(survey["airmass"]),
            "key": survey["night"].astype(str) + survey["band"],
        }
    )
    df = df[(fwhm > 0.56) & (fwhm < 1.79)]  # drop clipped values
    d = df[["lf", "lx"]] - df.groupby("key")[["lf", "lx"]].transform("mean")
    slope = float((d["lf"] * d["lx"]).sum() / (d["lx"] ** 2).sum())
    assert 0.4 < slope < 0.8
    hi = survey["airmass"] > survey["airmass"].quantile(0.75)
    lo = survey["airmass"] < survey["airmass"].quantile(0.25)
    assert survey.loc[hi, "seeing_fwhm_arcsec"].mean() > survey.loc[lo, "seeing_fwhm_arcsec"].mean()


def test_zero_points_and_clouds(survey: pd.DataFrame) -> None:
    zp_true = survey["zero_point_true"].to_numpy()
    zp_nom = survey["zero_point_nominal"].to_numpy()
    tr = survey["transparency"].to_numpy()
    assert np.all((tr > 0) & (tr <= 1))
    cloudy = tr < 1
    # Clouds only remove light: never brighter than nominal beyond the 0.02 mag scatter.
    assert np.all(zp_true[cloudy] <= zp_nom[cloudy] + 5 * 0.02)
    assert np.all(np.abs(zp_true[~cloudy] - zp_nom[~cloudy]) < 5 * 0.02)
    # Cloud loss in magnitudes is -2.5 log10(transparency), plus scatter of 0.02 mag.
    resid = zp_true - zp_nom - 2.5 * np.log10(tr)
    assert abs(resid.mean()) < 0.005
    assert 0.015 < resid.std() < 0.025
    # Extinction: in one band the nominal zero point falls as the airmass grows.
    for _, g in survey.groupby("band"):
        assert stats.spearmanr(g["airmass"], g["zero_point_nominal"]).statistic < -0.999
    # Cloudy nights: whole nights, about 30 % of them.
    per_night = pd.Series(cloudy).groupby(survey["night"].to_numpy()).agg(["min", "max"])
    assert (per_night["min"] == per_night["max"]).all()
    assert _binomial_ok(int(per_night["max"].sum()), len(per_night), 0.3)


def test_weather_loss_fraction(survey: pd.DataFrame) -> None:
    observed = survey["night"].nunique()
    assert _binomial_ok(
        SURVEY_CFG.n_nights - observed, SURVEY_CFG.n_nights, SURVEY_CFG.weather_loss_fraction, z=3.5
    )
    # With weather loss off, every night is observed (so the nights missing above are weather).
    cfg = CadenceConfig(n_nights=20, n_fields=2, weather_loss_fraction=0.0)
    clear = synthetic_schedule(cfg, SURVEY_FIELDS, np.random.default_rng(4))
    assert clear["night"].nunique() == cfg.n_nights


# --------------------------------------------------------------------------------------------
# 2. OpSim schedule (the database in Sorcha's wheel)
# --------------------------------------------------------------------------------------------

OPSIM_CFG = CadenceConfig(opsim_path="sorcha", start_mjd=60500.0, n_nights=30)
OPSIM_TARGET = (35.7, -4.75)  # the XMM-LSS deep-drilling field: many visits, negative Dec


def _sorcha_db():
    try:
        return find_sorcha_cadence()
    except ConfigError as exc:
        pytest.skip(f"Sorcha's cadence database is not installed: {exc}")


def _raw_observations(path) -> pd.DataFrame:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        return pd.read_sql_query(
            "SELECT observationStartMJD, visitExposureTime, filter, seeingFwhmEff, fieldRA, "
            "fieldDec FROM observations",
            con,
        )


@pytest.fixture(scope="module")
def opsim() -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = _raw_observations(_sorcha_db())
    visits, target = opsim_schedule(OPSIM_CFG, OPSIM_TARGET, np.random.default_rng(0))
    assert target == OPSIM_TARGET
    return visits, raw


def test_opsim_selects_exactly_the_covering_visits(opsim) -> None:
    visits, raw = opsim
    t0 = np.floor(OPSIM_CFG.start_mjd)
    sep = _sep_deg(raw["fieldRA"], raw["fieldDec"], *OPSIM_TARGET)
    in_window = (raw["observationStartMJD"] >= t0) & (raw["observationStartMJD"] < t0 + 30)
    expect = raw[in_window & (sep < 1.75)].sort_values("observationStartMJD")
    assert len(expect) > 50
    got = visits.sort_values("mjd_tai")
    start = got["mjd_tai"].to_numpy() - got["exptime_s"].to_numpy() / 2 / 86400.0
    assert np.all((start >= t0) & (start < t0 + OPSIM_CFG.n_nights))
    assert len(got) == len(expect)
    np.testing.assert_allclose(start, expect["observationStartMJD"].to_numpy(), rtol=0, atol=1e-8)
    # Every selected pointing really covers the target in the raw database.
    assert _sep_deg(expect["fieldRA"], expect["fieldDec"], *OPSIM_TARGET).max() < 1.75
    np.testing.assert_array_equal(
        got["seeing_fwhm_arcsec"].to_numpy(), expect["seeingFwhmEff"].to_numpy()
    )
    np.testing.assert_array_equal(got["band"].to_numpy(), expect["filter"].to_numpy())
    assert set(got["band"]) <= set(BANDS)
    np.testing.assert_array_equal(
        got["exptime_s"].to_numpy(), expect["visitExposureTime"].to_numpy()
    )
    assert (got["boresight_ra_deg"] == OPSIM_TARGET[0]).all()
    assert (got["boresight_dec_deg"] == OPSIM_TARGET[1]).all()


def test_opsim_visit_table_is_consistent(opsim) -> None:
    visits, _ = opsim
    assert np.all(np.diff(visits["mjd_tai"].to_numpy()) > 0)
    assert visits["visit"].is_unique
    ymd = (Time(visits["mjd_tai"].to_numpy(), format="mjd", scale="tai") - 12 * u.hour).utc.ymdhms
    np.testing.assert_array_equal(
        visits["visit"].to_numpy() // 100000, ymd["year"] * 10000 + ymd["month"] * 100 + ymd["day"]
    )
    assert visits["airmass"].between(1.0, 3.0).all()


def test_opsim_default_target_is_the_densest_cell() -> None:
    from astropy.coordinates import BarycentricTrueEcliptic

    raw = _raw_observations(_sorcha_db())
    t0 = np.floor(OPSIM_CFG.start_mjd)
    w = raw[(raw["observationStartMJD"] >= t0) & (raw["observationStartMJD"] < t0 + 30)]
    coord = SkyCoord(w["fieldRA"].to_numpy() * u.deg, w["fieldDec"].to_numpy() * u.deg)
    elat = coord.transform_to(BarycentricTrueEcliptic()).lat.deg
    near = w[np.abs(elat) < 20]
    cells = zip(
        np.round(near["fieldRA"]).astype(int), np.round(near["fieldDec"]).astype(int), strict=True
    )
    counts = pd.Series(list(cells)).value_counts()
    densest = {tuple(float(v) for v in c) for c in counts.index[counts == counts.iloc[0]]}
    _, target = opsim_schedule(OPSIM_CFG, None, np.random.default_rng(0))
    assert tuple(target) in densest


def test_opsim_missing_database_names_the_path(tmp_path) -> None:
    missing = tmp_path / "no_such_opsim.db"
    cfg = CadenceConfig(opsim_path=str(missing))
    with pytest.raises(ConfigError, match=r"no_such_opsim\.db") as info:
        opsim_schedule(cfg, (0.0, 0.0), np.random.default_rng(0))
    assert str(missing) in str(info.value)


# --------------------------------------------------------------------------------------------
# 3. Light curves
# --------------------------------------------------------------------------------------------


def _variables_table() -> pd.DataFrame:
    rows = []
    for k, (per, amp) in enumerate([(0.45, 0.5), (0.58, 0.8), (0.75, 1.1)]):
        rows.append(
            {
                "id": k + 1,
                "var_type": "rrlyrae",
                "period_d": per,
                "t0_mjd": 60000.1 * (k + 1),
                "amplitude_mag": amp,
                "depth2_frac": 0.0,
                "width_phase": 0.0,
            }
        )
    for k, (per, amp, d2, w) in enumerate(
        [(0.4, 0.15, 0.1, 0.04), (2.0, 0.5, 0.5, 0.07), (6.0, 0.8, 0.8, 0.1)]
    ):
        rows.append(
            {
                "id": k + 10,
                "var_type": "eclipsing",
                "period_d": per,
                "t0_mjd": 60003.3 + k,
                "amplitude_mag": amp,
                "depth2_frac": d2,
                "width_phase": w,
            }
        )
    df = pd.DataFrame(rows)
    for b in BANDS:
        df[f"mag_{b}"] = 18.0 + 0.1 * BANDS.index(b)
    df["tau_d"] = 0.0
    df["sf_inf_mag"] = 0.0
    return df


def _ab_mag(flux_njy: np.ndarray) -> np.ndarray:
    """AB magnitude from nJy, by the definition (3631 Jy is magnitude 0)."""
    return -2.5 * np.log10(np.asarray(flux_njy) / AB_ZERO_NJY)


def _ab_flux_njy(mag: np.ndarray) -> np.ndarray:
    return AB_ZERO_NJY * 10 ** (-0.4 * np.asarray(mag))


def _phase_curve(
    source: pd.Series, band: str, phases: np.ndarray, mjd: float = 61000.0
) -> np.ndarray:
    """Magnitudes of one periodic source at ``phases`` (cycles after its ``t0_mjd``), observed
    at one time ``mjd`` as copies of the source whose epochs are shifted accordingly."""
    copies = pd.DataFrame([source] * phases.size).reset_index(drop=True)
    copies["t0_mjd"] = mjd - phases * source["period_d"]
    return _ab_mag(static_fluxes_njy(copies, band, mjd))


def test_rr_lyrae_periodic_with_band_amplitudes() -> None:
    sky = _variables_table()
    rr = sky[sky["var_type"] == "rrlyrae"].reset_index(drop=True)
    rng = np.random.default_rng(10)
    per = rr["period_d"].to_numpy()
    for t in rng.uniform(60000, 61000, 5):
        for b in ("g", "r"):
            f0 = static_fluxes_njy(rr, b, t)
            # Each star at t + n P_j: a table with each star's epoch moved back n periods.
            for n in (1, 7):
                moved = rr.assign(t0_mjd=rr["t0_mjd"] - n * per)
                np.testing.assert_allclose(static_fluxes_njy(moved, b, t), f0, rtol=1e-6)
    phases = np.arange(4000) / 4000
    for _, row in rr.iterrows():
        m = {b: _phase_curve(row, b, phases) for b in ("g", "r", "i")}
        amp = {b: np.ptp(m[b]) for b in m}
        assert amp["g"] == pytest.approx(row["amplitude_mag"], rel=0.02)
        # Pulsation amplitudes shrink towards the red.
        assert amp["g"] > amp["r"] > amp["i"]
        for b in m:
            # mag_<band> is the mean over the cycle.
            assert np.mean(m[b]) == pytest.approx(row[f"mag_{b}"], abs=0.005)
        # RRab: fast rise (minimum to maximum light in under 20 % of the period).
        phase_faint, phase_bright = phases[np.argmax(m["g"])], phases[np.argmin(m["g"])]
        assert 0.0 < (phase_bright - phase_faint) % 1.0 < 0.2


def test_eclipsing_binary_depths() -> None:
    sky = _variables_table()
    eb = sky[sky["var_type"] == "eclipsing"].reset_index(drop=True)
    for _, row in eb.iterrows():
        base = row["mag_r"]
        dm = _phase_curve(row, "r", np.array([0.0, 0.5, 0.25, 0.75, 7.0, 7.5, -3.0])) - base
        assert dm[0] == pytest.approx(row["amplitude_mag"], rel=0.01)  # primary
        assert dm[1] == pytest.approx(row["amplitude_mag"] * row["depth2_frac"], rel=0.02)
        assert abs(dm[2]) < 1e-3
        assert abs(dm[3]) < 1e-3
        np.testing.assert_allclose(dm[4:6], dm[:2], atol=1e-6)  # periodic
        assert dm[6] == pytest.approx(dm[0], abs=1e-6)
        # The primary minimum is the deepest point of the orbit, at phase 0.
        phase = np.linspace(-0.5, 0.5, 2001)
        curve = _phase_curve(row, "r", phase) - base
        assert abs(phase[np.argmax(curve)]) < 1e-3
        # The eclipse lasts about width_phase (FWHM of the dip in magnitudes).
        fwhm = np.ptp(phase[(curve > dm[0] / 2) & (np.abs(phase) < 0.25)])
        assert fwhm == pytest.approx(row["width_phase"], rel=0.05)


def test_transient_peaks_at_t_peak() -> None:
    tr = pd.DataFrame(
        {"t_peak_mjd": [61010.0, 61020.0], "rise_d": [17.0, 1.0], "fall_d": [30.0, 3.0]}
    )
    for b in BANDS:
        tr[f"peak_mag_{b}"] = [21.0 + 0.1 * BANDS.index(b), 22.5]
    for b in ("g", "r", "z"):
        at_peak = np.array(
            [transient_fluxes_njy(tr, b, t)[k] for k, t in enumerate(tr["t_peak_mjd"])]
        )
        np.testing.assert_allclose(at_peak, _ab_flux_njy(tr[f"peak_mag_{b}"]), rtol=1e-4)
        for k, row in tr.iterrows():
            # The light curve at offsets dt from peak: copies observed at one time.
            dt = row["rise_d"] * np.linspace(-8, 8, 3201)
            mjd = 61100.0
            copies = pd.DataFrame([row] * dt.size).reset_index(drop=True)
            copies["t_peak_mjd"] = mjd - dt
            f = transient_fluxes_njy(copies, b, mjd)
            assert abs(dt[np.argmax(f)]) <= row["rise_d"] * 0.005
            before = dt < 0
            assert np.all(np.diff(f[before]) >= 0)  # rises
            assert np.all(np.diff(f[~before]) <= 0)  # then fades
            # Nothing long before the explosion.
            assert np.all(f[dt < -6.5 * row["rise_d"]] == 0.0)
            assert f[-1] < 0.2 * f.max()
            # The same at the real times.
            assert transient_fluxes_njy(tr, b, row["t_peak_mjd"] - 7 * row["rise_d"])[k] == 0.0


def test_damped_random_walk_statistics() -> None:
    n, tau, sf = 20000, 100.0, 0.3
    drw = DampedRandomWalk(np.arange(n), np.full(n, tau), np.full(n, sf), np.random.default_rng(11))
    sigma2 = sf**2 / 2
    x0 = drw.advance(60000.0)
    # Many small steps must compose into the exact lag correlation exp(-dt/tau).
    for t in np.linspace(60000.0, 60050.0, 11)[1:]:
        x_half = drw.advance(t)
    x_long = drw.advance(60000.0 + 30 * tau)
    x_after = drw.advance(60000.0 + 30 * tau + 2 * tau)
    tol_var = 5 * np.sqrt(2 / n) * sigma2
    for x in (x0, x_half, x_long, x_after):
        assert abs(x.mean()) < 5 * np.sqrt(sigma2 / n)
        assert abs(x.var() - sigma2) < tol_var
    for a, b, lag in ((x0, x_half, 50.0), (x_long, x_after, 2 * tau), (x0, x_long, 30 * tau)):
        rho = np.exp(-lag / tau)
        assert abs(np.corrcoef(a, b)[0, 1] - rho) < 5 * (1 - rho**2) / np.sqrt(n) + 1e-3
    # Different damping times per source.
    taus = np.where(np.arange(n) % 2 == 0, 20.0, 400.0)
    drw = DampedRandomWalk(np.arange(n), taus, np.full(n, sf), np.random.default_rng(12))
    a, b = drw.advance(0.0), drw.advance(40.0)
    for tau_k in (20.0, 400.0):
        sel = taus == tau_k
        rho = np.exp(-40.0 / tau_k)
        assert abs(np.corrcoef(a[sel], b[sel])[0, 1] - rho) < 5 * (1 - rho**2) / np.sqrt(n / 2)
    with pytest.raises(ValueError, match="must not decrease"):
        drw.advance(39.0)


# --------------------------------------------------------------------------------------------
# 4. Static sky and transients
# --------------------------------------------------------------------------------------------

SKY_RADIUS = 0.25
SKY_CENTRES = [(10.0, -20.0), (10.3, -20.0)]
SKY_CFG = SkyConfig(
    star_density_per_arcmin2=20.0,
    galaxy_density_per_arcmin2=20.0,
    rr_lyrae_fraction=0.1,
    eclipsing_fraction=0.15,
    agn_fraction=0.2,
    transients_per_deg2_per_day=30.0,
    hostless_fraction=0.1,
)


def _lens_and_union_deg2() -> tuple[float, float]:
    """Overlap and union of two equal small circles (flat sky: error ~ r^2/12 ~ 1e-6)."""
    r = SKY_RADIUS
    d = float(_sep_deg(*SKY_CENTRES[0], *SKY_CENTRES[1]))
    lens = 2 * r**2 * np.arccos(d / (2 * r)) - d / 2 * np.sqrt(4 * r**2 - d**2)
    cap = 2 * np.pi * (1 - np.cos(np.deg2rad(r))) * (180 / np.pi) ** 2
    return lens, 2 * cap - lens


@pytest.fixture(scope="module")
def static_sky() -> pd.DataFrame:
    return draw_static_sky(SKY_CFG, SKY_CENTRES, SKY_RADIUS, np.random.default_rng(21))


def test_static_counts_and_positions(static_sky: pd.DataFrame) -> None:
    _, union = _lens_and_union_deg2()
    for kind, density in (
        ("star", SKY_CFG.star_density_per_arcmin2),
        ("galaxy", SKY_CFG.galaxy_density_per_arcmin2),
    ):
        src = static_sky[static_sky["kind"] == kind]
        lam = density * union * 3600
        assert abs(len(src) - lam) < 4 * np.sqrt(lam) + 0.01 * lam
        s0 = _sep_deg(src["ra_deg"], src["dec_deg"], *SKY_CENTRES[0])
        s1 = _sep_deg(src["ra_deg"], src["dec_deg"], *SKY_CENTRES[1])
        assert np.all(np.minimum(s0, s1) <= SKY_RADIUS + 1e-9)
    assert static_sky["id"].is_unique


def test_static_sky_uniform_in_one_field() -> None:
    centre, radius = (200.0, 45.0), 0.3
    cfg = SkyConfig(star_density_per_arcmin2=10.0, galaxy_density_per_arcmin2=0.0)
    sky = draw_static_sky(cfg, [centre], radius, np.random.default_rng(23))
    cap = 2 * np.pi * (1 - np.cos(np.deg2rad(radius))) * (180 / np.pi) ** 2 * 3600
    assert abs(len(sky) - 10.0 * cap) < 4 * np.sqrt(10.0 * cap)
    # Uniform in area: (r / R)^2 uniform on [0, 1] and position angles uniform.
    sep = _sep_deg(sky["ra_deg"], sky["dec_deg"], *centre)
    assert sep.max() <= radius
    assert stats.kstest((sep / radius) ** 2, "uniform").pvalue > 1e-3
    pa = (
        SkyCoord(*centre, unit="deg")
        .position_angle(SkyCoord(sky["ra_deg"].to_numpy(), sky["dec_deg"].to_numpy(), unit="deg"))
        .rad
    )
    assert stats.kstest(pa / (2 * np.pi), "uniform").pvalue > 1e-3


def test_static_sky_uniform_over_the_union_of_fields(static_sky: pd.DataFrame) -> None:
    lens, union = _lens_and_union_deg2()
    cap = (union + lens) / 2
    stars = static_sky[static_sky["kind"] == "star"]
    s0 = _sep_deg(stars["ra_deg"], stars["dec_deg"], *SKY_CENTRES[0]) < SKY_RADIUS
    s1 = _sep_deg(stars["ra_deg"], stars["dec_deg"], *SKY_CENTRES[1]) < SKY_RADIUS
    n = len(stars)
    assert _binomial_ok(int((s0 & s1).sum()), n, lens / union)
    assert _binomial_ok(int((s0 & ~s1).sum()), n, (cap - lens) / union)
    assert _binomial_ok(int((s1 & ~s0).sum()), n, (cap - lens) / union)


def test_star_count_slope(static_sky: pd.DataFrame) -> None:
    r = static_sky.loc[static_sky["kind"] == "star", "mag_r"].to_numpy()
    lo, hi = SKY_CFG.star_mag_range
    assert r.min() >= lo
    assert r.max() <= hi
    edges = np.arange(lo, hi + 0.5, 1.0)
    counts, _ = np.histogram(r, edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    ok = counts > 0
    # Weighted least squares on log10 N (variance of log10 N ~ 1 / (N ln(10)^2)).
    slope, _ = np.polyfit(mid[ok], np.log10(counts[ok]), 1, w=np.sqrt(counts[ok]))
    assert slope == pytest.approx(SKY_CFG.star_count_slope, abs=0.02)


def test_variable_fractions(static_sky: pd.DataFrame) -> None:
    stars = static_sky[static_sky["kind"] == "star"]
    gals = static_sky[static_sky["kind"] == "galaxy"]
    n_s, n_g = len(stars), len(gals)
    for src, n, kind, frac in (
        (stars, n_s, "rrlyrae", SKY_CFG.rr_lyrae_fraction),
        (stars, n_s, "eclipsing", SKY_CFG.eclipsing_fraction),
        (gals, n_g, "agn", SKY_CFG.agn_fraction),
    ):
        assert _binomial_ok(int((src["var_type"] == kind).sum()), n, frac), kind
    assert set(stars["var_type"]) == {"none", "rrlyrae", "eclipsing"}
    assert set(gals["var_type"]) == {"none", "agn"}
    rr = stars[stars["var_type"] == "rrlyrae"]
    assert rr["period_d"].between(0.2, 1.0).all()  # RR Lyrae pulsate in 0.2-1 day
    agn = gals[gals["var_type"] == "agn"]
    assert (agn["tau_d"] > 0).all()
    assert (agn["sf_inf_mag"] > 0).all()


def test_transients(static_sky: pd.DataFrame) -> None:
    t_range = (61000.0, 61030.0)
    tr = draw_transients(
        SKY_CFG, static_sky, SKY_CENTRES, SKY_RADIUS, t_range, np.random.default_rng(22)
    )
    _, union = _lens_and_union_deg2()
    lam = SKY_CFG.transients_per_deg2_per_day * union * (t_range[1] - t_range[0] + 30.0)
    assert abs(len(tr) - lam) < 4 * np.sqrt(lam) + 0.01 * lam
    assert tr["t_peak_mjd"].between(t_range[0] - 30.0, t_range[1]).all()
    hostless = tr["host_id"] == -1
    assert _binomial_ok(int(hostless.sum()), len(tr), SKY_CFG.hostless_fraction)
    assert _binomial_ok(int((tr["type"] == "fast").sum()), len(tr), SKY_CFG.fast_transient_fraction)
    # Hostless ones are in the fields.
    h = tr[hostless]
    sep = np.minimum(
        _sep_deg(h["ra_deg"], h["dec_deg"], *SKY_CENTRES[0]),
        _sep_deg(h["ra_deg"], h["dec_deg"], *SKY_CENTRES[1]),
    )
    assert np.all(sep <= SKY_RADIUS + 1e-9)
    # Hosted ones sit on their galaxy: within a few half-light radii (offsets ~ 0.6 r_e).
    hosted = tr[~hostless].merge(
        static_sky, left_on="host_id", right_on="id", suffixes=("", "_host"), validate="many_to_one"
    )
    assert len(hosted) == int((~hostless).sum())
    assert (hosted["kind"] == "galaxy").all()
    off_arcsec = (
        _sep_deg(hosted["ra_deg"], hosted["dec_deg"], hosted["ra_deg_host"], hosted["dec_deg_host"])
        * 3600
    )
    r_e = hosted["half_light_arcsec"].to_numpy()
    assert np.all(off_arcsec < 8 * r_e)
    assert np.median(off_arcsec / r_e) == pytest.approx(0.6 * np.log(2), rel=0.15)
    snia = hosted["type"] == "snia"
    np.testing.assert_allclose(
        hosted.loc[snia, "redshift"], np.clip(hosted.loc[snia, "redshift_host"], 0.03, 0.8)
    )


# --------------------------------------------------------------------------------------------
# 5. Solar-system population
# --------------------------------------------------------------------------------------------

POP_MJD = 61115.0  # 2026-03-16


def _opposition_radec(mjd_tai: float) -> tuple[float, float]:
    t = Time(mjd_tai, format="mjd", scale="tai")
    d = (get_body_barycentric("earth", t) - get_body_barycentric("sun", t)).xyz.to_value(u.au)
    ra = np.rad2deg(np.arctan2(d[1], d[0])) % 360
    return float(ra), float(np.rad2deg(np.arcsin(d[2] / np.linalg.norm(d))))


def _geocentric_directions(pop: pd.DataFrame, mjd_tai: float) -> np.ndarray:
    """Unit ICRF vectors from the geocentre to the objects at their epoch: own Kepler solver,
    own rotations, the Earth from astropy's built-in (ERFA epv00) ephemeris."""
    a, e = pop["a_au"].to_numpy(), pop["e"].to_numpy()
    i, node, w, m = (
        np.deg2rad(pop[c].to_numpy())
        for c in ("inc_deg", "node_deg", "argperi_deg", "mean_anomaly_deg")
    )
    ecc = m.copy()
    for _ in range(100):
        ecc = ecc - (ecc - e * np.sin(ecc) - m) / (1 - e * np.cos(ecc))
    nu = 2 * np.arctan2(np.sqrt(1 + e) * np.sin(ecc / 2), np.sqrt(1 - e) * np.cos(ecc / 2))
    r = a * (1 - e * np.cos(ecc))
    uu = w + nu
    ecl = r[:, None] * np.stack(
        [
            np.cos(node) * np.cos(uu) - np.sin(node) * np.sin(uu) * np.cos(i),
            np.sin(node) * np.cos(uu) + np.cos(node) * np.sin(uu) * np.cos(i),
            np.sin(uu) * np.sin(i),
        ],
        axis=1,
    )
    ce, se = np.cos(OBLIQUITY_RAD), np.sin(OBLIQUITY_RAD)
    eq = np.stack(
        [ecl[:, 0], ce * ecl[:, 1] - se * ecl[:, 2], se * ecl[:, 1] + ce * ecl[:, 2]], axis=1
    )
    t = Time(mjd_tai, format="mjd", scale="tai")
    earth = (get_body_barycentric("earth", t) - get_body_barycentric("sun", t)).xyz.to_value(u.au)
    rel = eq - earth
    return rel / np.linalg.norm(rel, axis=1)[:, None]


def _radec_vec(ra: float, dec: float) -> np.ndarray:
    ra, dec = np.deg2rad(ra), np.deg2rad(dec)
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _power_law_cdf(x: np.ndarray, lo: float, hi: float, slope: float) -> np.ndarray:
    k = slope * np.log(10)
    return (np.exp(k * (x - hi)) - np.exp(k * (lo - hi))) / (1 - np.exp(k * (lo - hi)))


def test_population_in_region_with_valid_elements() -> None:
    centre = _opposition_radec(POP_MJD)
    centres = [centre, (centre[0] + 4.0, centre[1] + 1.5)]
    radius = 2.0
    for kind, density, h_range in (("mba", 200.0, (14.0, 20.5)), ("neo", 20.0, (17.0, 23.0))):
        pop = draw_population(
            kind, density, h_range, centres, radius, POP_MJD, np.random.default_rng(31)
        )
        cap = 2 * np.pi * (1 - np.cos(np.deg2rad(radius))) * (180 / np.pi) ** 2
        lam = density * 2 * cap  # the two circles do not overlap
        assert abs(len(pop) - lam) < 4 * np.sqrt(lam) + 0.01 * lam
        assert (pop["population"] == kind).all()
        assert np.allclose(pop["epoch_mjd_tdb"], POP_MJD + 32.184 / 86400, atol=1e-6)
        v = _geocentric_directions(pop, POP_MJD)
        cos_sep = np.max([v @ _radec_vec(*c) for c in centres], axis=0)
        sep = np.rad2deg(np.arccos(np.clip(cos_sep, -1, 1)))
        assert sep.max() < radius + 1e-3
        h = pop["h_mag"].to_numpy()
        assert h.min() >= h_range[0]
        assert h.max() <= h_range[1]
        # log10 N(<H) rises 0.3 per magnitude.
        assert stats.kstest(h, lambda x, hr=h_range: _power_law_cdf(x, *hr, 0.3)).pvalue > 1e-3
        assert set(pop["taxonomy"]) <= {"S", "C"}
        a, e = pop["a_au"].to_numpy(), pop["e"].to_numpy()
        if kind == "mba":
            assert a.min() >= 2.1
            assert a.max() <= 3.3
            assert e.min() >= 0
            assert e.max() <= 0.35
            assert pop["inc_deg"].between(0, 35).all()
            # Kirkwood gaps (3:1 at 2.50 au, 5:2 at 2.82 au) are empty.
            assert not np.any((np.abs(a - 2.50) < 0.02) | (np.abs(a - 2.82) < 0.02))
        else:
            assert np.all(a * (1 - e) < 1.3)  # near-Earth: perihelion inside 1.3 au
            assert np.all((e > 0) & (e < 1))
            assert pop["inc_deg"].between(0, 60).all()
        for col in ("node_deg", "argperi_deg", "mean_anomaly_deg"):
            assert pop[col].between(0, 360).all()


def _blind_rejection_mba(
    centre: tuple[float, float], radius: float, n_draws: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Elements and uniform angles drawn blindly, kept when seen within ``radius`` of centre."""
    epoch = POP_MJD + 32.184 / 86400.0
    earth = observer_heliocentric(None, [POP_MJD])[0]
    vec = _radec_vec(*centre)
    kept = []
    for _ in range(n_draws // 1_000_000):
        el = _draw_elements("mba", 1_000_000, rng)
        m = rng.uniform(0, 360, 1_000_000)
        pos, _ = KeplerianOrbits(
            el["a"], el["e"], el["inc"], el["node"], el["argperi"], m, epoch
        ).state(epoch)
        rel = pos - earth
        inside = rel @ vec > np.cos(np.deg2rad(radius)) * np.linalg.norm(rel, axis=1)
        kept.append(
            pd.DataFrame(
                {"a_au": el["a"][inside], "e": el["e"][inside], "inc_deg": el["inc"][inside]}
            )
        )
    return pd.concat(kept, ignore_index=True)


@pytest.fixture(scope="module")
def mba_blind() -> pd.DataFrame:
    return _blind_rejection_mba(
        _opposition_radec(POP_MJD), 5.0, 3_000_000, np.random.default_rng(41)
    )


def test_conditioned_sampler_matches_blind_rejection_small_sample(mba_blind) -> None:
    # A modest request (about 160 objects): the pool is barely depleted, no bias shows.
    centre = _opposition_radec(POP_MJD)
    pop = draw_population(
        "mba", 2.0, (14.0, 20.5), [centre], 5.0, POP_MJD, np.random.default_rng(42)
    )
    assert len(mba_blind) > 10000
    for col in ("inc_deg", "e", "a_au"):
        assert stats.ks_2samp(pop[col], mba_blind[col]).pvalue > 1e-3, col


def test_conditioned_sampler_matches_blind_rejection(mba_blind) -> None:
    centre = _opposition_radec(POP_MJD)
    pop = draw_population(
        "mba", 40.0, (14.0, 20.5), [centre], 5.0, POP_MJD, np.random.default_rng(43)
    )
    assert len(pop) > 2500
    for col in ("inc_deg", "e", "a_au"):
        assert stats.ks_2samp(pop[col], mba_blind[col]).pvalue > 1e-3, col
