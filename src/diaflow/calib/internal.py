"""A reference catalog made from one exposure, for relative calibration where no external one is.

Archival images (a pointing without Gaia coverage at hand, cut-outs from another survey, the
DECam test data) can still be calibrated against each other: the sources of one exposure, at its
WCS positions and with fluxes on a chosen zero point, serve as the catalog for all the others.
Astrometry is then relative to that exposure and zero points are relative to ``zero_point``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import CalibrationError
from ..image import Exposure, mask_bits
from .background import estimate_background
from .config import SourceConfig
from .sources import detect_sources

__all__ = ["internal_refcat"]


def internal_refcat(
    exposure: Exposure,
    *,
    zero_point: float,
    min_snr: float = 10.0,
    config: SourceConfig | None = None,
) -> pd.DataFrame:
    """A reference catalog (the columns :func:`~diaflow.calib.calibrate` needs) from one exposure.

    Sources above ``min_snr``, away from masked pixels, with aperture fluxes converted to nJy as
    if one count were ``zero_point`` AB magnitudes; no proper motions, epoch the exposure's.

    Raises
    ------
    CalibrationError
        ``no_wcs`` without a WCS, ``too_few_stars`` with fewer than three usable sources.
    """
    if exposure.wcs is None:
        raise CalibrationError("no_wcs", f"{exposure.label}: no WCS to place the catalog on")
    bad = (exposure.mask & mask_bits("BAD", "NO_DATA", "SAT")) != 0
    bkg = estimate_background(exposure.image, bad)
    sources, _ = detect_sources(
        exposure.image - bkg.model, exposure.variance, bad, saturated=bad, config=config
    )
    keep = (sources["snr"] >= min_snr) & ~sources["near_masked"] & ~sources["edge"]
    sources = sources[keep & ~sources["saturated"]]
    if len(sources) < 3:
        raise CalibrationError(
            "too_few_stars",
            f"{exposure.label}: {len(sources)} sources above S/N {min_snr}; an internal "
            "reference catalog needs at least 3",
            n_stars=len(sources),
        )
    ra, dec = exposure.wcs.all_pix2world(sources["x"], sources["y"], 0)
    to_njy = 10 ** (0.4 * (31.4 - zero_point))
    band = exposure.info.band
    return pd.DataFrame(
        {
            "ra": np.asarray(ra),
            "dec": np.asarray(dec),
            "epoch": exposure.info.mjd_tai,
            "pm_ra": 0.0,
            "pm_dec": 0.0,
            f"{band}_flux": sources["flux"].to_numpy() * to_njy,
            f"{band}_fluxErr": sources["flux_err"].to_numpy() * to_njy,
        }
    )
