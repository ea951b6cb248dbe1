"""True fluxes of variable and transient sources at a visit.

Periodic variables and transients are analytic functions of time. AGN-like nuclei follow a damped
random walk (Kelly et al. 2009), advanced exactly between consecutive visit times by
:class:`DampedRandomWalk`, which keeps one state per source so memory does not grow with the survey.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..image.exposure import AB_NJY_ZEROPOINT

__all__ = ["DampedRandomWalk", "mag_to_njy", "static_fluxes_njy", "transient_fluxes_njy"]

_RR_BAND_SCALE = {"u": 1.3, "g": 1.0, "r": 0.78, "i": 0.62, "z": 0.55, "y": 0.5}
_AGN_BAND_SCALE = {"u": 1.4, "g": 1.15, "r": 1.0, "i": 0.9, "z": 0.8, "y": 0.75}
_FALL_BAND_SCALE = {"u": 0.55, "g": 0.7, "r": 1.0, "i": 1.25, "z": 1.35, "y": 1.4}


def mag_to_njy(mag: np.ndarray | float) -> np.ndarray:
    """AB magnitude to nJy."""
    return np.asarray(10.0 ** (-0.4 * (np.asarray(mag) - AB_NJY_ZEROPOINT)))


def _rrlyrae_delta_mag(phase: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """RRab-like shape: a fast rise over 15 % of the period, then a slow decline."""
    rise = 0.15
    frac = np.where(phase < rise, 1 - phase / rise, (phase - rise) / (1 - rise))
    # 0 at maximum light, 1 at minimum; smoothed so the light curve has no corner.
    shape = 0.5 - 0.5 * np.cos(np.pi * frac)
    return amp * (shape - 0.5)


def _eclipse_delta_mag(
    phase: np.ndarray, depth: np.ndarray, depth2: np.ndarray, width: np.ndarray
) -> np.ndarray:
    d1 = np.minimum(phase, 1 - phase)
    d2 = np.abs(phase - 0.5)
    dip = depth * np.exp(-0.5 * (d1 / (width / 2.355)) ** 2) + depth * depth2 * np.exp(
        -0.5 * (d2 / (width / 2.355)) ** 2
    )
    flux_ratio = np.clip(1 - (1 - 10 ** (-0.4 * dip)), 1e-3, None)
    return -2.5 * np.log10(flux_ratio)


class DampedRandomWalk:
    """Exact Ornstein-Uhlenbeck updates of AGN magnitude offsets between increasing times."""

    def __init__(
        self, ids: np.ndarray, tau_d: np.ndarray, sf_inf_mag: np.ndarray, rng: np.random.Generator
    ) -> None:
        self.ids = np.asarray(ids)
        self.tau = np.asarray(tau_d)
        self.sigma = np.asarray(sf_inf_mag) / np.sqrt(2.0)
        self.rng = rng
        self.t: float | None = None
        self.state = rng.normal(0, 1, self.ids.size) * self.sigma

    def advance(self, mjd: float) -> np.ndarray:
        """Offsets (mag, r band) at ``mjd``; times must not decrease between calls."""
        if self.t is not None:
            dt = mjd - self.t
            if dt < 0:
                raise ValueError(f"DampedRandomWalk times must not decrease: {mjd} < {self.t}")
            a = np.exp(-dt / self.tau)
            self.state = a * self.state + self.sigma * np.sqrt(1 - a**2) * self.rng.normal(
                0, 1, self.ids.size
            )
        self.t = mjd
        return self.state.copy()


def static_fluxes_njy(
    sky: pd.DataFrame, band: str, mjd: float, agn_offsets: dict[int, float] | None = None
) -> np.ndarray:
    """True flux (nJy) of each row of the static sky in ``band`` at ``mjd``."""
    mag = sky[f"mag_{band}"].to_numpy().copy()
    vt = sky["var_type"].to_numpy()
    per = sky["period_d"].to_numpy()
    rr = vt == "rrlyrae"
    if rr.any():
        phase = ((mjd - sky["t0_mjd"].to_numpy()[rr]) / per[rr]) % 1.0
        mag[rr] += _rrlyrae_delta_mag(
            phase, sky["amplitude_mag"].to_numpy()[rr] * _RR_BAND_SCALE[band]
        )
    eb = vt == "eclipsing"
    if eb.any():
        phase = ((mjd - sky["t0_mjd"].to_numpy()[eb]) / per[eb]) % 1.0
        mag[eb] += _eclipse_delta_mag(
            phase,
            sky["amplitude_mag"].to_numpy()[eb],
            sky["depth2_frac"].to_numpy()[eb],
            sky["width_phase"].to_numpy()[eb],
        )
    flux = mag_to_njy(mag)
    agn = vt == "agn"
    if agn.any() and agn_offsets:
        # The nucleus (taken as 30 % of the galaxy's light at mean) varies; the host does not.
        dm = np.array([agn_offsets.get(int(i), 0.0) for i in sky["id"].to_numpy()[agn]])
        nucleus = 0.3 * flux[agn]
        flux[agn] = flux[agn] - nucleus + nucleus * 10 ** (-0.4 * dm * _AGN_BAND_SCALE[band])
    return flux


def transient_fluxes_njy(tr: pd.DataFrame, band: str, mjd: float) -> np.ndarray:
    """True flux (nJy) of each transient in ``band`` at ``mjd`` (a Bazin-like rise and fall)."""
    dt = mjd - tr["t_peak_mjd"].to_numpy()
    rise = tr["rise_d"].to_numpy() / 4.0
    fall = tr["fall_d"].to_numpy() * _FALL_BAND_SCALE[band] / 2.0
    peak = mag_to_njy(tr[f"peak_mag_{band}"].to_numpy())
    # 1 at peak: a logistic rise before it, an exponential fall after it.
    before = 2.0 / (1.0 + np.exp(np.clip(-dt / rise, -50, 50)))
    shape = np.where(dt < 0, before, np.exp(-np.clip(dt, 0, None) / fall))
    return np.asarray(peak * np.where(dt < -6 * tr["rise_d"].to_numpy(), 0.0, shape))
