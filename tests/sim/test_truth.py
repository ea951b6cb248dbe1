"""The simulated pixels against the simulation's truth and against physics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sep
from astropy.stats import mad_std
from scipy.optimize import least_squares

from diaflow.image import MaskPlane, mask_bits, read_exposure
from diaflow.sim import true_wcs
from diaflow.sim.lightcurves import static_fluxes_njy
from diaflow.sim.render import mosaic, sky_model
from diaflow.sim.sky import J2016_MJD
from simdata import SimulatedSurvey, moffat_enclosed, visit_psf


def _truth_on_exposure(survey: SimulatedSurvey, row: pd.Series) -> pd.DataFrame:
    """Every static source's true pixel position and expected counts on one exposure."""
    sky = survey.static
    years = (row["mjd_tai"] - J2016_MJD) / 365.25
    cosd = np.cos(np.deg2rad(sky["dec_deg"]))
    ra = sky["ra_deg"] + sky["pm_ra_mas_yr"] * years / 3.6e6 / cosd
    dec = sky["dec_deg"] + sky["pm_dec_mas_yr"] * years / 3.6e6
    x, y = true_wcs(row, survey.config).all_world2pix(ra, dec, 0)
    counts = static_fluxes_njy(sky, row["band"], row["mjd_tai"]) * 10 ** (
        0.4 * (row["zero_point_true"] - 31.4)
    )
    return sky.assign(x=x, y=y, counts=counts)


def _isolated_bright_stars(
    survey: SimulatedSurvey, row: pd.Series, truth: pd.DataFrame, radius_px: float, snr_min: float
) -> pd.DataFrame:
    exp = read_exposure(survey.out_dir / row["path"])
    ny, nx = exp.shape
    arts = survey.table("artifacts")
    arts = arts[(arts["visit"] == row["visit"]) & (arts["detector"] == row["detector"])]
    sky_level = float(np.median(exp.image))
    on = truth[
        (truth["x"] > -50) & (truth["x"] < nx + 50) & (truth["y"] > -50) & (truth["y"] < ny + 50)
    ]
    stars = on[
        (on["kind"] == "star")
        & (on["var_type"] == "none")
        & (on["x"] > radius_px + 5)
        & (on["x"] < nx - radius_px - 5)
        & (on["y"] > radius_px + 5)
        & (on["y"] < ny - radius_px - 5)
    ]
    snr = stars["counts"] / np.sqrt(stars["counts"] + np.pi * radius_px**2 * sky_level)
    stars = stars[(snr > snr_min) & (stars["counts"] < 60 * sky_level * radius_px**2 / 10)]
    keep = []
    for _, s in stars.iterrows():
        d = np.hypot(on["x"] - s["x"], on["y"] - s["y"])
        # Neighbours whose light could reach the aperture at more than ~0.1 % of the star's flux.
        reach = radius_px + 3 * on["half_light_arcsec"] / 0.2 + 6
        neighbours = on[(d > 0.01) & (d < reach) & (on["counts"] > 0.05 * s["counts"])]
        if len(neighbours):
            continue
        near_art = False
        for _, a in arts.iterrows():
            if a["kind"] == "satellite":
                ang = np.arctan2(a["y1"] - a["y0"], a["x1"] - a["x0"])
                dist = abs((s["x"] - a["x0"]) * -np.sin(ang) + (s["y"] - a["y0"]) * np.cos(ang))
                near_art |= dist < radius_px + 4 * a["width_px"]
            else:
                near_art |= (
                    min(
                        np.hypot(s["x"] - a["x0"], s["y"] - a["y0"]),
                        np.hypot(s["x"] - a["x1"], s["y"] - a["y1"]),
                        abs(s["x"] - a["x0"]) if a["kind"] in ("bad_column", "bleed") else np.inf,
                    )
                    < radius_px + 3
                )
        if not near_art:
            keep.append(s)
    return pd.DataFrame(keep)


def _local_fwhm_px(
    row: pd.Series, survey: SimulatedSurvey, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    geom = mosaic(survey.config.camera, np.random.default_rng(0))[int(row["detector"])]
    fwhm, _, _ = visit_psf(survey, row).params(
        x - geom.boresight_pixel[0], y - geom.boresight_pixel[1]
    )
    return fwhm / survey.config.camera.pixel_scale_arcsec


def test_aperture_fluxes_of_bright_isolated_stars_match_truth(star_survey: SimulatedSurvey) -> None:
    pulls, fractional = [], []
    for _, row in star_survey.visits.iterrows():
        exp = read_exposure(star_survey.out_dir / row["path"])
        bad = (exp.mask & mask_bits("BAD", "SAT")) != 0
        # The true sky: estimating it is calibration's job, tested there.
        sub = exp.image - sky_model(
            exp.shape, row["sky_e_per_px"], (row["sky_gradient_x"], row["sky_gradient_y"])
        )
        fwhm_px = row["psf_fwhm_arcsec"] / 0.2
        radius = 3.0 * fwhm_px
        truth = _truth_on_exposure(star_survey, row)
        stars = _isolated_bright_stars(star_survey, row, truth, radius, snr_min=100)
        if stars.empty:
            continue
        flux, err, _ = sep.sum_circle(
            sub,
            stars["x"].to_numpy(),
            stars["y"].to_numpy(),
            radius,
            var=exp.variance.astype(np.float64),
            mask=bad,
        )
        local = _local_fwhm_px(row, star_survey, stars["x"].to_numpy(), stars["y"].to_numpy())
        apcorr = np.array(
            [moffat_enclosed(radius, f, star_survey.config.render.psf_beta) for f in local]
        )
        expected = stars["counts"].to_numpy() * apcorr + _blended_light(
            truth, stars, radius, fwhm_px
        )
        pulls.append((flux - expected) / err)
        fractional.append(flux / expected - 1)
    pull = np.concatenate(pulls)
    assert pull.size >= 30, f"only {pull.size} isolated bright stars"
    # Unbiased to a small fraction of the noise, and errors that describe the scatter.
    assert abs(np.median(pull)) < 0.25
    assert 0.85 < mad_std(pull) < 1.2
    assert abs(np.median(np.concatenate(fractional))) < 0.005


def _blended_light(
    truth: pd.DataFrame, stars: pd.DataFrame, radius_px: float, fwhm_px: float
) -> np.ndarray:
    """Light of every other source falling in each star's aperture.

    Neighbours are Moffat profiles; a galaxy's width adds its size in quadrature (2.4 half-light
    radii is the FWHM of an exponential disc). This is a small correction: the stars were chosen
    with no neighbour above 5 % of their flux nearby.
    """
    beta = 3.5
    g = np.arange(-radius_px, radius_px + 0.25, 0.25)
    gx, gy = np.meshgrid(g, g)
    inside = gx**2 + gy**2 <= radius_px**2
    out = np.zeros(len(stars))
    for k, (_, s) in enumerate(stars.iterrows()):
        d = np.hypot(truth["x"] - s["x"], truth["y"] - s["y"])
        near = truth[(d > 0.01) & (d < radius_px + 12 * fwhm_px)]
        for _, n in near.iterrows():
            f = np.hypot(fwhm_px, 2.4 * n["half_light_arcsec"] / 0.2)
            alpha = f / (2 * np.sqrt(2 ** (1 / beta) - 1))
            r2 = (gx[inside] - (n["x"] - s["x"])) ** 2 + (gy[inside] - (n["y"] - s["y"])) ** 2
            prof = (beta - 1) / (np.pi * alpha**2) * (1 + r2 / alpha**2) ** -beta
            out[k] += n["counts"] * prof.sum() * 0.25**2
    return out


def _moffat(params: np.ndarray, yy: np.ndarray, xx: np.ndarray, beta: float) -> np.ndarray:
    amp, x0, y0, fwhm, bkg = params
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return amp * (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** -beta + bkg


def test_measured_psf_fwhm_matches_the_visit(star_survey: SimulatedSurvey) -> None:
    beta = star_survey.config.render.psf_beta
    for _, row in star_survey.visits.iterrows():
        exp = read_exposure(star_survey.out_dir / row["path"])
        truth = _truth_on_exposure(star_survey, row)
        stars = _isolated_bright_stars(star_survey, row, truth, 12, snr_min=80)
        ratios = []
        for _, s in stars.iterrows():
            ix, iy = round(s["x"]), round(s["y"])
            cut = exp.image[iy - 12 : iy + 13, ix - 12 : ix + 13].astype(float)
            yy, xx = np.mgrid[iy - 12 : iy + 13, ix - 12 : ix + 13]
            guess = [cut.max() - np.median(cut), s["x"], s["y"], 5.0, np.median(cut)]
            fit = least_squares(
                lambda p, c=cut, yy=yy, xx=xx: (_moffat(p, yy, xx, beta) - c).ravel(), guess
            )
            local = _local_fwhm_px(row, star_survey, np.array([s["x"]]), np.array([s["y"]]))[0]
            ratios.append(fit.x[3] / local)
        assert len(ratios) >= 5
        # The PSF is slightly elliptical; a circular fit recovers the mean width to ~1 %.
        assert np.median(ratios) == pytest.approx(1.0, abs=0.03), row["visit"]


def test_blank_sky_noise_matches_variance_plane(star_survey: SimulatedSurvey) -> None:
    for _, row in star_survey.visits.iterrows():
        exp = read_exposure(star_survey.out_dir / row["path"])
        ny, nx = exp.shape
        image = exp.image.astype(np.float64)
        masked = exp.mask != 0
        truth = _truth_on_exposure(star_survey, row)
        fwhm_px = row["psf_fwhm_arcsec"] / 0.2
        yy, xx = np.mgrid[0:ny, 0:nx]
        for _, s in truth[
            (truth["x"] > -100)
            & (truth["x"] < nx + 100)
            & (truth["y"] > -100)
            & (truth["y"] < ny + 100)
        ].iterrows():
            r = 3 * fwhm_px + 6 * s["half_light_arcsec"] / 0.2 + 2 * np.log10(max(s["counts"], 1))
            x0, x1 = int(max(s["x"] - r, 0)), int(min(s["x"] + r + 1, nx))
            y0, y1 = int(max(s["y"] - r, 0)), int(min(s["y"] + r + 1, ny))
            if x0 < x1 and y0 < y1:
                masked[y0:y1, x0:x1] |= (xx[y0:y1, x0:x1] - s["x"]) ** 2 + (
                    yy[y0:y1, x0:x1] - s["y"]
                ) ** 2 < r**2
        arts = star_survey.table("artifacts")
        arts = arts[(arts["visit"] == row["visit"])]
        for _, a in arts.iterrows():
            if a["kind"] == "satellite":
                ang = np.arctan2(a["y1"] - a["y0"], a["x1"] - a["x0"])
                d = np.abs((xx - a["x0"]) * -np.sin(ang) + (yy - a["y0"]) * np.cos(ang))
                masked |= d < 5 * a["width_px"]
            else:
                r = 6 if a["kind"] == "cosmic_ray" else 2
                x0, x1 = int(min(a["x0"], a["x1"]) - r), int(max(a["x0"], a["x1"]) + r + 1)
                y0, y1 = int(min(a["y0"], a["y1"]) - r), int(max(a["y0"], a["y1"]) + r + 1)
                masked[max(y0, 0) : y1, max(x0, 0) : x1] = True
        sky = sky_model(
            exp.shape, row["sky_e_per_px"], (row["sky_gradient_x"], row["sky_gradient_y"])
        )
        norm = (image - sky)[~masked] / np.sqrt(exp.variance[~masked])
        assert (~masked).sum() > 0.05 * nx * ny
        ratio = np.std(norm)
        assert 0.97 < ratio < 1.03, f"visit {row['visit']}: noise/variance = {ratio:.3f}"
        assert abs(np.mean(norm)) < 0.02


def test_cosmic_rays_are_present_and_unmasked_bad_columns_masked(
    star_survey: SimulatedSurvey,
) -> None:
    arts = star_survey.table("artifacts")
    assert set(arts["kind"]) >= {"cosmic_ray", "bad_column", "satellite"}
    for _, row in star_survey.visits.iterrows():
        exp = read_exposure(star_survey.out_dir / row["path"])
        here = arts[(arts["visit"] == row["visit"]) & (arts["detector"] == row["detector"])]
        sky_sigma = np.sqrt(np.median(exp.variance))
        for _, cr in here[here["kind"] == "cosmic_ray"].iterrows():
            x, y = round(cr["x0"]), round(cr["y0"])
            peak = exp.image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].max() - np.median(
                exp.image
            )
            assert peak > 5 * sky_sigma
            assert not (exp.mask[y, x] & mask_bits(MaskPlane.CR))
        for _, bc in here[here["kind"] == "bad_column"].iterrows():
            assert np.all(exp.mask[:, int(bc["x0"])] & mask_bits(MaskPlane.BAD))


def test_saturated_stars_bleed_along_columns(star_survey: SimulatedSurvey) -> None:
    arts = star_survey.table("artifacts")
    bleeds = arts[arts["kind"] == "bleed"]
    assert len(bleeds) > 0, "the star field should hold saturated stars"
    for _, b in bleeds.head(20).iterrows():
        row = star_survey.visits[star_survey.visits["visit"] == b["visit"]].iloc[0]
        exp = read_exposure(star_survey.out_dir / row["path"])
        col = int(b["x0"])
        sat = (exp.mask[int(b["y0"]) : int(b["y1"]) + 1, col] & mask_bits(MaskPlane.SAT)) != 0
        # Charge fills pixels to the full well; only the last pixel at each end is partly filled.
        assert sat[1:-1].all()
        assert sat.any()
        assert (
            exp.image[int(b["y0"]) : int(b["y1"]) + 1, col].max()
            <= star_survey.config.camera.full_well_e
        )
