"""Instrumental and environmental artifacts.

Cosmic rays, satellite trails, bleed trails and bad columns.

Each function changes the image in place and returns truth rows
(``kind``, ``x0``, ``y0``, ``x1``, ``y1``, ``amplitude``) in 0-based pixel coordinates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_cosmic_rays", "add_satellite_trail", "bad_columns", "bleed_saturation"]


def add_cosmic_rays(image: np.ndarray, n: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """Deposit ``n`` cosmic-ray tracks: straight, 1-20 px long, 1-2 px wide, sharp-edged."""
    ny, nx = image.shape
    rows: list[dict[str, object]] = []
    for _ in range(n):
        x0, y0 = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        length = rng.exponential(5.0) + 0.5
        ang = rng.uniform(0, np.pi)
        charge = rng.lognormal(np.log(4000.0), 0.7) * max(length, 1.0)
        steps = max(int(length * 4), 1)
        t = np.linspace(0, 1, steps)
        xs = np.clip(np.round(x0 + t * length * np.cos(ang)), 0, nx - 1).astype(int)
        ys = np.clip(np.round(y0 + t * length * np.sin(ang)), 0, ny - 1).astype(int)
        np.add.at(image, (ys, xs), charge / steps)
        rows.append(
            {
                "kind": "cosmic_ray",
                "x0": float(x0),
                "y0": float(y0),
                "x1": float(xs[-1]),
                "y1": float(ys[-1]),
                "amplitude": float(charge),
            }
        )
    return rows


def add_satellite_trail(
    expected: np.ndarray, fwhm_px: float, rng: np.random.Generator
) -> dict[str, object]:
    """Add a satellite trail crossing the whole detector to the expected (noise-free) image.

    The trail is a straight line with a Gaussian cross-section a little wider than the PSF
    (satellites are out of focus), with a surface brightness of 100-3000 electrons per pixel.
    """
    ny, nx = expected.shape
    x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
    ang = rng.uniform(0, np.pi)
    width = fwhm_px * rng.uniform(1.0, 2.0)
    peak = rng.lognormal(np.log(600.0), 0.8)
    nxv, nyv = -np.sin(ang), np.cos(ang)
    yy, xx = np.mgrid[0:ny, 0:nx]
    d = (xx - x0) * nxv + (yy - y0) * nyv
    sigma = width / 2.3548
    band = np.abs(d) < 6 * sigma
    expected[band] += peak * np.exp(-0.5 * (d[band] / sigma) ** 2)
    # Endpoints where the line leaves the image, for the truth table.
    ext = 2 * max(nx, ny)
    return {
        "kind": "satellite",
        "x0": float(x0 - ext * np.cos(ang)),
        "y0": float(y0 - ext * np.sin(ang)),
        "x1": float(x0 + ext * np.cos(ang)),
        "y1": float(y0 + ext * np.sin(ang)),
        "amplitude": float(peak),
        "width_px": float(width),
    }


def bleed_saturation(image: np.ndarray, full_well: float) -> list[dict[str, object]]:
    """Spill charge above ``full_well`` up and down its column, filling pixels to the full well.

    Charge is conserved until it runs off the detector. Returns one row per bleed trail.
    """
    rows: list[dict[str, object]] = []
    ny = image.shape[0]
    for col in np.flatnonzero((image > full_well).any(axis=0)):
        c = image[:, col]
        over = c > full_well
        excess = float((c[over] - full_well).sum())
        c[over] = full_well
        idx = np.flatnonzero(over)
        lo, hi = int(idx.min()), int(idx.max())
        # Fill outwards alternately, half of the remaining charge each way.
        up, down = excess / 2, excess / 2
        y = hi + 1
        while up > 0 and y < ny:
            take = min(full_well - c[y], up) if c[y] < full_well else 0.0
            c[y] += take
            up -= take
            y += 1
        top = y - 1
        y = lo - 1
        while down > 0 and y >= 0:
            take = min(full_well - c[y], down) if c[y] < full_well else 0.0
            c[y] += take
            down -= take
            y -= 1
        bottom = y + 1
        if top > hi or bottom < lo:
            rows.append(
                {
                    "kind": "bleed",
                    "x0": float(col),
                    "y0": float(bottom),
                    "x1": float(col),
                    "y1": float(top),
                    "amplitude": excess,
                }
            )
    return rows


def bad_columns(nx: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Column indices of a detector's bad columns (fixed per detector)."""
    return (
        np.sort(rng.choice(np.arange(8, nx - 8), size=n, replace=False)) if n else np.zeros(0, int)
    )
