"""A one-page picture of a simulated survey.

An exposure, the cadence, moving objects and light curves.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..image import read_exposure

__all__ = ["plot_survey"]


def plot_survey(out_dir: str | Path, path: str | Path | None = None) -> Path:
    """Draw ``overview.png`` for a survey written by :func:`~diaflow.sim.simulate_survey`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import ZScaleInterval

    out_dir = Path(out_dir)
    path = Path(path) if path is not None else out_dir / "overview.png"
    visits = pd.read_parquet(out_dir / "visits.parquet")
    ss = pd.read_parquet(out_dir / "truth" / "ss_positions.parquet")
    lc = pd.read_parquet(out_dir / "truth" / "lightcurves.parquet")

    fig, axes = plt.subplots(2, 2, figsize=(12, 10))
    # 1. The exposure with the most moving objects on it, with truth marked.
    ax = axes[0, 0]
    if len(ss):
        visit, det = ss.groupby(["visit", "detector"]).size().idxmax()
    else:
        visit, det = int(visits["visit"].iloc[0]), int(visits["detector"].iloc[0])
    row = visits[(visits["visit"] == visit) & (visits["detector"] == det)].iloc[0]
    exp = read_exposure(out_dir / row["path"])
    lo, hi = ZScaleInterval().get_limits(exp.image)
    ax.imshow(exp.image, origin="lower", cmap="gray", vmin=lo, vmax=hi)
    here = ss[(ss["visit"] == visit) & (ss["detector"] == det)]
    ax.scatter(
        here["x"],
        here["y"],
        s=120,
        facecolors="none",
        edgecolors="tab:orange",
        label="asteroids (truth)",
    )
    ax.set_title(
        f'visit {visit} detector {det}, {row["band"]} band, seeing {row["seeing_fwhm_arcsec"]:.2f}"'
    )
    ax.legend(loc="upper right", fontsize=8)
    # 2. Cadence: visits over time, per band, with seeing.
    ax = axes[0, 1]
    per_visit = visits.drop_duplicates("visit")
    colors = {
        "u": "tab:purple",
        "g": "tab:green",
        "r": "tab:red",
        "i": "tab:orange",
        "z": "tab:brown",
        "y": "black",
    }
    for band, grp in per_visit.groupby("band"):
        ax.scatter(
            grp["mjd_tai"], grp["seeing_fwhm_arcsec"], s=18, color=colors.get(band), label=band
        )
    ax.set_xlabel("MJD (TAI)")
    ax.set_ylabel("PSF FWHM (arcsec)")
    ax.set_title(f"{per_visit.shape[0]} visits on {per_visit['night'].nunique()} nights")
    ax.legend(fontsize=8)
    # 3. Moving objects across the footprint.
    ax = axes[1, 0]
    for _, grp in ss.groupby("ss_id"):
        ax.plot(grp["ra_deg"], grp["dec_deg"], ".-", ms=3, lw=0.8)
    ax.invert_xaxis()
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.set_title(f"{ss['ss_id'].nunique()} solar-system objects detected on the detectors")
    # 4. Light curves of the best-sampled variables and transients.
    ax = axes[1, 1]
    if len(lc):
        top = lc.groupby("id").size().sort_values(ascending=False).index[:6]
        for i in top:
            grp = lc[lc["id"] == i].sort_values("mjd_tai")
            ax.plot(grp["mjd_tai"], grp["flux_njy"] / 1e3, "o-", ms=3, label=str(i))
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("MJD (TAI)")
    ax.set_ylabel("true flux (uJy)")
    ax.set_title("variables and transients (truth)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
