"""Bright sources for calibration: detection, centroids, fluxes, sizes and a star-likeness flag.

Detection and measurement are ``sep``'s (SExtractor's algorithms, Bertin & Arnouts 1996):
connected pixels above ``threshold_sigma`` times their own noise (no matched filter: calibration
needs only bright sources, and unfiltered detection is five times faster), windowed centroids
(SExtractor's ``XWIN``/``YWIN``, unbiased for symmetric profiles), circular-aperture fluxes and
half-light radii. Stars are found on the *stellar locus*: the half-light radii of point sources all
equal the PSF's, so the densest narrow bin of half-light radius among clean bright sources marks
the stars, and galaxies (larger) and cosmic rays (smaller) fall off it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import sep
from numpy.typing import NDArray

from ._arrays import grow_mask
from .config import SourceConfig

__all__ = ["SOURCE_COLUMNS", "detect_sources", "flag_near_masked", "stellar_locus"]

logger = logging.getLogger(__name__)

SOURCE_COLUMNS: dict[str, str] = {
    "id": "1-based label of the source in the segmentation map",
    "x": "windowed centroid, 0-based pixels",
    "y": "windowed centroid, 0-based pixels",
    "x_err": "centroid error, pixels (from S/N and size)",
    "y_err": "centroid error, pixels",
    "flux": "aperture flux in a radius of 3 half-light radii of the PSF, counts",
    "flux_err": "error of flux, counts",
    "snr": "flux / flux_err",
    "peak": "highest pixel above the background, counts",
    "r50_px": "half-light radius, pixels",
    "npix": "pixels in the footprint",
    "saturated": "footprint holds a saturated pixel",
    "near_masked": "a flagged (bad, cosmic-ray, interpolated) pixel within 2 half-light radii",
    "edge": "centroid within a PSF-stamp half-size of the image edge",
    "nearest_px": "distance to the nearest other detected source, pixels",
    "star_like": "half-light radius on the stellar locus",
}
"""Columns of :func:`detect_sources`' table and their meaning."""


def _empty() -> pd.DataFrame:
    dtypes = {
        "id": np.int64,
        "npix": np.int64,
        "saturated": bool,
        "near_masked": bool,
        "edge": bool,
        "star_like": bool,
    }
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, np.float64)) for c in SOURCE_COLUMNS})


def stellar_locus(r50_px: NDArray[np.float64], *, min_r50_px: float = 0.7) -> float:
    """Half-light radius of point sources: the densest 10 %-wide bin of ``r50_px`` (log scale).

    Returns NaN if there are no radii above ``min_r50_px`` (cosmic rays and hot pixels are
    below it).
    """
    r = np.asarray(r50_px, dtype=np.float64)
    r = r[np.isfinite(r) & (r > min_r50_px)]
    if r.size == 0:
        return math.nan
    log_r = np.sort(np.log(r))
    # Count neighbours within +-5 % of each radius; the best-supported radius wins, then refine
    # it by the median of its neighbours.
    support = np.searchsorted(log_r, log_r + 0.05) - np.searchsorted(log_r, log_r - 0.05)
    best = log_r[np.argmax(support)]
    return float(np.exp(np.median(log_r[np.abs(log_r - best) < 0.05])))


def detect_sources(
    image: NDArray[np.floating],
    variance: NDArray[np.floating],
    bad: NDArray[np.bool_],
    *,
    saturated: NDArray[np.bool_] | None = None,
    flagged: NDArray[np.bool_] | None = None,
    edge_px: int = 10,
    config: SourceConfig | None = None,
) -> tuple[pd.DataFrame, NDArray[np.int32]]:
    """Detect and measure the bright sources of a background-subtracted image.

    Parameters
    ----------
    image
        2-D background-subtracted image, counts.
    variance
        Per-pixel variance, counts^2.
    bad
        Pixels excluded from detection and measurement (no data, non-finite).
    saturated
        Saturated pixels: their sources are detected and flagged ``saturated``.
    flagged
        Pixels (bad, cosmic ray, interpolated) that make a source ``near_masked`` when within two
        stellar half-light radii of its centroid.
    edge_px
        Sources closer than this to the edge are flagged ``edge``.
    config
        Threshold, minimum area and S/N, maximum number of sources.

    Returns
    -------
    table : pandas.DataFrame
        One row per source with S/N above ``config.min_snr``, brightest first, columns
        :data:`SOURCE_COLUMNS` (zero rows if nothing is found).
    segmentation : numpy.ndarray of int32
        Segmentation map: pixel value is the ``id`` of the source it belongs to, 0 for sky.
    """
    config = config or SourceConfig()
    data = np.ascontiguousarray(image, dtype=np.float32)
    bad = np.ascontiguousarray(bad, dtype=bool)
    var = np.ascontiguousarray(np.where(bad, 0.0, variance), dtype=np.float32)
    err = np.sqrt(np.maximum(var, 0.0))
    data = np.where(bad, 0.0, data).astype(np.float32)
    # sep keeps a pixel buffer per object; allow plenty for crowded images.
    sep.set_extract_pixstack(max(300_000, data.size // 4))
    sep.set_sub_object_limit(4096)
    try:
        objs, seg = sep.extract(
            data,
            config.threshold_sigma,
            err=err,
            mask=bad,
            minarea=config.min_pixels,
            filter_kernel=None,
            segmentation_map=True,
        )
    except Exception as exc:  # sep raises plain Exception on buffer overflows
        logger.warning("source detection failed (%s); returning no sources", exc)
        return _empty(), np.zeros(data.shape, np.int32)
    seg = seg.astype(np.int32)
    if len(objs) == 0:
        return _empty(), seg
    ids = np.arange(1, len(objs) + 1)
    # Keep the brightest, so cost does not grow with crowding.
    order = np.argsort(-objs["flux"])[: config.max_sources]
    objs, ids = objs[order], ids[order]
    x, y = objs["x"].astype(np.float64), objs["y"].astype(np.float64)
    a = np.maximum(objs["a"].astype(np.float64), 0.5)
    r50, _ = sep.flux_radius(data, x, y, 6.0 * a, 0.5, mask=bad, subpix=5)
    r50 = np.asarray(r50, dtype=np.float64)
    locus = stellar_locus(r50[objs["flux"] > 20 * float(np.median(err[::8, ::8]))])
    r_ap = 3.0 * (locus if np.isfinite(locus) else float(np.nanmedian(r50)))
    xw, yw, _ = sep.winpos(data, x, y, np.clip(r50, 0.5, 3 * r_ap) * 2 / 2.3548, mask=bad)
    ok = np.isfinite(xw) & np.isfinite(yw) & (np.hypot(xw - x, yw - y) < 2.0)
    xw, yw = np.where(ok, xw, x), np.where(ok, yw, y)
    flux, flux_err, _ = sep.sum_circle(data, xw, yw, r_ap, err=err, mask=bad, subpix=5)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(flux_err > 0, flux / flux_err, 0.0)
    keep = snr > config.min_snr
    if not keep.any():
        return _empty(), seg
    sel = np.flatnonzero(keep)
    labels = ids[sel]
    sat = np.zeros(sel.size, bool)
    if saturated is not None and saturated.any():
        sat = np.isin(labels, np.unique(seg[saturated & (seg > 0)]))
        # A saturated core under a bleed trail can lie outside the footprint: look nearby too.
        ix = np.clip(np.round(xw[sel]).astype(int), 0, data.shape[1] - 1)
        iy = np.clip(np.round(yw[sel]).astype(int), 0, data.shape[0] - 1)
        sat |= grow_mask(saturated, 2)[iy, ix]
    ny, nx = data.shape
    xs, ys = xw[sel], yw[sel]
    edge = (xs < edge_px) | (ys < edge_px) | (xs > nx - 1 - edge_px) | (ys > ny - 1 - edge_px)
    # Distance to the nearest other detection (any S/N).
    if len(objs) > 1:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([xs, ys]), k=2)
        nearest = dist[:, 1]
    else:
        nearest = np.full(sel.size, np.inf)
    r50s = r50[sel]
    star_like = np.abs(r50s / locus - 1) < config.star_size_tolerance if np.isfinite(locus) else 0
    # Centroid error: sqrt(2) sigma_psf / (S/N), a conservative Cramer-Rao-like bound.
    sig = np.maximum(r50s, 0.5) / 1.1774
    pos_err = np.hypot(np.sqrt(2) * sig / np.maximum(snr[sel], 1.0), 0.005)
    table = pd.DataFrame(
        {
            "id": labels.astype(np.int64),
            "x": xs,
            "y": ys,
            "x_err": pos_err,
            "y_err": pos_err,
            "flux": flux[sel],
            "flux_err": flux_err[sel],
            "snr": snr[sel],
            "peak": objs["peak"][sel].astype(np.float64),
            "r50_px": r50s,
            "npix": objs["npix"][sel].astype(np.int64),
            "saturated": sat,
            "near_masked": np.zeros(sel.size, bool),
            "edge": edge,
            "nearest_px": nearest,
            "star_like": np.asarray(star_like, bool) & np.ones(sel.size, bool),
        }
    )
    table.attrs["stellar_r50_px"] = locus
    if flagged is not None:
        table = flag_near_masked(table, flagged, radius_px=2 * r_ap / 3)
    return table.sort_values("flux", ascending=False, ignore_index=True), seg


def flag_near_masked(
    table: pd.DataFrame, flagged: NDArray[np.bool_], *, radius_px: float
) -> pd.DataFrame:
    """Flag ``near_masked`` the sources with a ``flagged`` pixel within ``radius_px`` of them.

    Useful when the flagged pixels (e.g. cosmic rays) are found after the sources.
    """
    out = table.copy()
    flagged = np.asarray(flagged, bool)
    if len(out) == 0 or not flagged.any():
        return out
    ny, nx = flagged.shape
    r = math.ceil(radius_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = np.hypot(yy, xx) <= radius_px
    near = out["near_masked"].to_numpy().copy()
    for k, (x, y) in enumerate(zip(out["x"].to_numpy(), out["y"].to_numpy(), strict=True)):
        ix, iy = round(x), round(y)
        y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, ny), max(ix - r, 0), min(ix + r + 1, nx)
        if y1 <= y0 or x1 <= x0:
            continue
        sub = flagged[y0:y1, x0:x1] & disc[y0 - iy + r : y1 - iy + r, x0 - ix + r : x1 - ix + r]
        near[k] |= bool(sub.any())
    out["near_masked"] = near
    return out
