"""Footprints, peaks, simple deblending and dipole pairing on a significance image."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from .config import DetectConfig

__all__ = ["footprint_peaks", "pair_dipoles", "suppress_close"]

_EIGHT = np.ones((3, 3), dtype=bool)


def _disk(radius: int) -> NDArray[np.bool_]:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx**2 + yy**2) <= radius**2 + 0.5


def _deblend(
    sub: NDArray[np.float32], inside: NDArray[np.bool_], cfg: DetectConfig, min_sep: float
) -> list[tuple[int, int, float]]:
    """Peaks (row, col, value) of a footprint's (sign-flipped) significance that stand alone."""
    local_max = (sub == ndimage.maximum_filter(sub, size=3, mode="constant", cval=-np.inf)) & inside
    rows, cols = np.nonzero(local_max)
    order = np.argsort(-sub[rows, cols], kind="stable")
    kept: list[tuple[int, int, float]] = []
    for k in order:
        r, c, v = int(rows[k]), int(cols[k]), float(sub[rows[k], cols[k]])
        need = max(cfg.deblend_min_contrast_sigma, cfg.deblend_min_contrast_fraction * v)
        alone = True
        for r2, c2, _ in kept:
            dist = math.hypot(r2 - r, c2 - c)
            if dist < min_sep:
                alone = False
                break
            n = int(2 * dist) + 2
            t = np.linspace(0.0, 1.0, n)
            path = sub[np.rint(r + t * (r2 - r)).astype(int), np.rint(c + t * (c2 - c)).astype(int)]
            if v - float(path.min()) < need:
                alone = False
                break
        if alone:
            kept.append((r, c, v))
            if len(kept) >= cfg.max_peaks_per_footprint:
                break
    return kept


def footprint_peaks(
    sig: NDArray[np.float32],
    sign: int,
    cfg: DetectConfig,
    grow: int,
    min_sep: float,
    labels: NDArray[np.int32],
    grown_mask: NDArray[np.bool_],
) -> list[dict[str, float]]:
    """Peaks of the footprints of one sign; grown footprints go into ``labels``/``grown_mask``."""
    ny, nx = sig.shape
    above = sig * sign >= cfg.threshold_sigma
    lab, _n = ndimage.label(above, structure=_EIGHT)
    rows: list[dict[str, float]] = []
    disk = _disk(grow)
    kept_id = 0
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - grow, 0), min(sl[0].stop + grow, ny)
        x0, x1 = max(sl[1].start - grow, 0), min(sl[1].stop + grow, nx)
        inside = lab[y0:y1, x0:x1] == i
        if int(inside.sum()) < cfg.min_pixels:
            continue
        kept_id += 1
        label = sign * kept_id
        sub = sig[y0:y1, x0:x1] * sign
        grown = ndimage.binary_dilation(inside, structure=disk) if grow else inside
        box = labels[y0:y1, x0:x1]
        box[grown & (box == 0)] = label
        grown_mask[y0:y1, x0:x1] |= grown
        gy, gx = np.nonzero(grown)
        peaks = _deblend(sub, inside, cfg, min_sep)
        for r, c, v in peaks:
            rows.append(
                {
                    "x": x0 + c,
                    "y": y0 + r,
                    "significance": sign * v,
                    "is_negative": sign < 0,
                    "footprint": label,
                    "n_peaks": len(peaks),
                    "bbox_x0": x0 + int(gx.min()),
                    "bbox_y0": y0 + int(gy.min()),
                    "bbox_x1": x0 + int(gx.max()),
                    "bbox_y1": y0 + int(gy.max()),
                }
            )
    return rows


def suppress_close(rows: list[dict[str, float]], min_sep: float) -> list[dict[str, float]]:
    """Drop peaks closer than ``min_sep`` to a brighter peak of the same sign in another
    footprint (noise breaking one faint source into two footprints); boxes are merged."""
    kept: list[dict[str, float]] = []
    cell = max(min_sep, 1.0)
    grid: dict[tuple[int, int], list[dict[str, float]]] = {}
    for row in sorted(rows, key=lambda r: -abs(r["significance"])):
        cx, cy = int(row["x"] // cell), int(row["y"] // cell)
        near = [
            o for dx in (-1, 0, 1) for dy in (-1, 0, 1) for o in grid.get((cx + dx, cy + dy), [])
        ]
        other = next(
            (o for o in near if math.hypot(row["x"] - o["x"], row["y"] - o["y"]) < min_sep), None
        )
        if other is None:
            kept.append(row)
            grid.setdefault((cx, cy), []).append(row)
            continue
        for key, pick in (("bbox_x0", min), ("bbox_y0", min), ("bbox_x1", max), ("bbox_y1", max)):
            other[key] = pick(other[key], row[key])
    return kept


def pair_dipoles(
    rows: list[dict[str, float]], sig: NDArray[np.float32], radius: float, partner_sigma: float
) -> list[dict[str, float]]:
    """Merge close positive/negative peaks into one row; find sub-threshold partners."""
    pos = [k for k, r in enumerate(rows) if not r["is_negative"]]
    neg = [k for k, r in enumerate(rows) if r["is_negative"]]
    pairs = []
    if pos and neg:
        xy_neg = np.array([(rows[j]["x"], rows[j]["y"]) for j in neg], dtype=np.float64)
        tree = cKDTree(xy_neg)
        for i in pos:
            for k in tree.query_ball_point((rows[i]["x"], rows[i]["y"]), radius):
                j = neg[k]
                d = math.hypot(rows[i]["x"] - rows[j]["x"], rows[i]["y"] - rows[j]["y"])
                pairs.append((d, i, j))
    taken: set[int] = set()
    out: list[dict[str, float]] = []
    for _, i, j in sorted(pairs):
        if i in taken or j in taken:
            continue
        taken |= {i, j}
        a, b = (i, j) if abs(rows[i]["significance"]) >= abs(rows[j]["significance"]) else (j, i)
        row = dict(rows[a])
        row.update(
            partner_x=float(rows[b]["x"]),
            partner_y=float(rows[b]["y"]),
            partner_significance=float(rows[b]["significance"]),
            partner_footprint=rows[b]["footprint"],
            bbox_x0=min(rows[a]["bbox_x0"], rows[b]["bbox_x0"]),
            bbox_y0=min(rows[a]["bbox_y0"], rows[b]["bbox_y0"]),
            bbox_x1=max(rows[a]["bbox_x1"], rows[b]["bbox_x1"]),
            bbox_y1=max(rows[a]["bbox_y1"], rows[b]["bbox_y1"]),
        )
        out.append(row)
    ny, nx = sig.shape
    r_int = math.ceil(radius)
    disk = _disk(r_int)
    for k, row in enumerate(rows):
        if k in taken:
            continue
        row = dict(row)
        x, y = int(row["x"]), int(row["y"])
        ya, yb = max(y - r_int, 0), min(y + r_int + 1, ny)
        xa, xb = max(x - r_int, 0), min(x + r_int + 1, nx)
        win = sig[ya:yb, xa:xb]
        dsk = disk[ya - y + r_int : yb - y + r_int, xa - x + r_int : xb - x + r_int]
        flipped = np.where(dsk, -win if not row["is_negative"] else win, -np.inf)
        r, c = np.unravel_index(int(np.argmax(flipped)), flipped.shape)
        if flipped[r, c] >= partner_sigma:
            row.update(
                partner_x=float(xa + c),
                partner_y=float(ya + r),
                partner_significance=float(win[r, c]),
                partner_footprint=0,
            )
        out.append(row)
    return out
