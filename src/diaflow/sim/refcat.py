"""A Gaia-like reference catalog of the survey's stars, for astrometric and photometric calibration.

Columns (Rubin/Gaia conventions): ``id``, ``ra``, ``dec`` (ICRS degrees at ``epoch``), ``ra_err``,
``dec_err`` (degrees), ``pm_ra`` (mas/yr, includes cos dec), ``pm_dec`` (mas/yr), ``pm_ra_err``,
``pm_dec_err``, ``epoch`` (MJD TDB, J2016.0), ``<band>_flux`` and ``<band>_fluxErr`` (nJy), and
``truth_id`` (the simulated star it measures). Positions, motions and fluxes carry measurement
noise matching their errors, as a real catalog does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import BANDS
from .lightcurves import mag_to_njy
from .sky import J2016_MJD

__all__ = ["make_refcat"]


def make_refcat(static: pd.DataFrame, mag_limit: float, rng: np.random.Generator) -> pd.DataFrame:
    """Measure the stars brighter than ``mag_limit`` (r) as a Gaia-like survey would."""
    stars = static[(static["kind"] == "star") & (static["mag_r"] < mag_limit)]
    n = len(stars)
    r = stars["mag_r"].to_numpy()
    sigma_mas = 0.015 * 10 ** (0.25 * (np.clip(r, 12, None) - 14))
    pm_sigma = 1.3 * sigma_mas
    dec = stars["dec_deg"].to_numpy()
    cosd = np.cos(np.deg2rad(dec))
    ref = pd.DataFrame({"id": np.arange(1, n + 1, dtype=np.int64)})
    ref["ra"] = stars["ra_deg"].to_numpy() + rng.normal(0, sigma_mas, n) / 3.6e6 / cosd
    ref["dec"] = dec + rng.normal(0, sigma_mas, n) / 3.6e6
    ref["ra_err"] = sigma_mas / 3.6e6
    ref["dec_err"] = sigma_mas / 3.6e6
    ref["pm_ra"] = stars["pm_ra_mas_yr"].to_numpy() + rng.normal(0, pm_sigma, n)
    ref["pm_dec"] = stars["pm_dec_mas_yr"].to_numpy() + rng.normal(0, pm_sigma, n)
    ref["pm_ra_err"] = pm_sigma
    ref["pm_dec_err"] = pm_sigma
    ref["epoch"] = J2016_MJD
    for b in BANDS:
        # Mean magnitude for variables: the catalog reports the average.
        flux = mag_to_njy(stars[f"mag_{b}"].to_numpy())
        err = flux * np.hypot(0.005, 0.01 * 10 ** (0.4 * (r - 19)))
        ref[f"{b}_flux"] = flux + rng.normal(0, 1, n) * err
        ref[f"{b}_fluxErr"] = err
    ref["truth_id"] = stars["id"].to_numpy()
    ref["is_variable"] = stars["var_type"].to_numpy() != "none"
    return ref
