"""Lanczos interpolation weights, tabulated for fast vectorised resampling.

A Lanczos-``a`` kernel ``L(x) = sinc(x) sinc(x / a)`` (|x| < a) interpolates a band-limited image
from its ``2a`` nearest samples per axis (Duchon 1979; Turkowski 1990). Weights are normalised to
sum to one per axis, so a constant image stays constant and flux is kept exactly.

The warp evaluates weights for millions of pixels, so they are tabulated on a grid of sub-pixel
phases: per axis (for variance propagation and for the PSF stamps) and as a 2-D table of the
``(2a)^2`` products, which replaces an outer product per pixel with one row lookup. Phases are
rounded to ``1 / n_phases`` of a pixel; integer phases are exact.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = ["lanczos_weights", "phase_tables"]


def lanczos_weights(frac: NDArray[np.float64], order: int) -> NDArray[np.float64]:
    """Normalised weights of taps ``floor(x) - order + 1 ... floor(x) + order``.

    Parameters
    ----------
    frac
        Fractional part of the position, ``x - floor(x)``, in [0, 1]; any shape.
    order
        Lanczos order ``a``.

    Returns
    -------
    weights
        Shape ``frac.shape + (2 * order,)``, each row summing to 1.
    """
    taps = np.arange(-order + 1, order + 1, dtype=np.float64)
    x = np.asarray(frac, dtype=np.float64)[..., None] - taps
    w = np.sinc(x) * np.sinc(x / order)
    w[np.abs(x) >= order] = 0.0
    return w / w.sum(axis=-1, keepdims=True)


@lru_cache(maxsize=8)
def phase_tables(
    order: int, n_phases: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Tables of weights on ``n_phases + 1`` phases ``0, 1/n, ..., 1``.

    Returns
    -------
    w1
        ``(n_phases + 1, 2 * order)`` per-axis weights.
    w2
        ``((n_phases + 1)^2, (2 * order)^2)`` products: row ``qy * (n_phases + 1) + qx`` holds
        ``w1[qy, ky] * w1[qx, kx]`` at column ``ky * 2 * order + kx``.
    w2_sq
        ``w2`` squared, for variance propagation.
    """
    w1 = lanczos_weights(np.arange(n_phases + 1) / n_phases, order)
    w2 = (w1[:, None, :, None] * w1[None, :, None, :]).reshape((n_phases + 1) ** 2, -1)
    w1.setflags(write=False)
    out = (w1.astype(np.float32), w2.astype(np.float32), (w2**2).astype(np.float32))
    for table in out:
        table.setflags(write=False)
    return out
