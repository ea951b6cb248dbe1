"""Fast box sums over images (scipy's uniform_filter is several times slower on big images)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["box_sum3", "grow_mask"]


def box_sum3(a: NDArray[np.floating]) -> NDArray[np.float32]:
    """Sum over each pixel's 3x3 neighbourhood (itself included), zero outside the image."""
    p = np.pad(np.asarray(a, dtype=np.float32), 1)
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return rows[:-2] + rows[1:-1] + rows[2:]


def grow_mask(mask: NDArray[np.bool_], half: int) -> NDArray[np.bool_]:
    """Pixels within a (2 half + 1)^2 box of any set pixel (binary dilation by a square)."""
    out = np.array(mask, dtype=bool, copy=True)
    if half <= 0 or not out.any():
        return out
    for axis in (0, 1):
        src = out.copy()
        n = src.shape[axis]
        for shift in range(1, min(half, n - 1) + 1):
            if axis == 0:
                out[shift:] |= src[:-shift]
                out[:-shift] |= src[shift:]
            else:
                out[:, shift:] |= src[:, :-shift]
                out[:, :-shift] |= src[:, shift:]
    return out
