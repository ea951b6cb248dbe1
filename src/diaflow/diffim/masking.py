"""Masks and noise figures of a difference image.

The difference's mask is the OR of both inputs' masks (detection planes cleared: they belong to
the inputs' own catalogs), with every plane of the convolved image grown by the kernel's reach
(as convolving a mask ORs it over the kernel footprint) and those of the other image by the
decorrelation filter's; the band along the edges that the circular convolutions pollute is set
to zero and flagged ``EDGE`` and ``NO_DATA``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..image.exposure import Exposure
from ..image.masks import MaskPlane, mask_bits

__all__ = ["DETECTION_BITS", "difference_mask", "dilate_bits", "filter_reach", "noise_ratio"]

DETECTION_BITS = mask_bits(MaskPlane.DETECTED, MaskPlane.DETECTED_NEGATIVE)
"""Planes that are not carried from the inputs to the difference."""


def _window_or(a: NDArray[np.integer], half: int, axis: int) -> NDArray[np.integer]:
    """Bitwise OR of ``a`` over ``[i - half, i + half]`` along ``axis`` (zeros outside).

    Doubling: after step k each element holds the OR of the next ``2^k`` ones, so a window of
    any width costs about ``log2(width)`` whole-array operations.
    """
    n = a.shape[axis]
    width = 2 * half + 1
    pad = [(0, 0)] * a.ndim
    pad[axis] = (half, half)
    b = np.pad(a, pad)

    def part(start: int, stop: int) -> tuple[slice, ...]:
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    length, span = b.shape[axis], 1
    while 2 * span <= width:
        b = b[part(0, length - span)] | b[part(span, length)]
        length -= span
        span *= 2
    return b[part(0, n)] | b[part(width - span, width - span + n)]


def dilate_bits(mask: NDArray[np.int32], radius_px: int, keep: int) -> NDArray[np.int32]:
    """Grow every bit of ``mask & keep`` by a square of half-side ``radius_px``.

    Each mask plane is grown on its own (a bitwise OR over the square, as a convolution of the
    mask does), so planes keep their meaning in the grown mask.
    """
    kept = mask & keep
    if radius_px <= 0:
        return kept
    top = int(kept.view(np.uint32).max(initial=0))
    if top == 0:
        return kept
    if top < 1 << 16:  # the usual case: every plane fits 8 or 16 bits
        small = kept.astype(np.uint8 if top < 1 << 8 else np.uint16)
        return _window_or(_window_or(small, radius_px, 1), radius_px, 0).astype(np.int32)
    out = np.zeros_like(mask)
    for shift in (0, 16):
        part = ((kept >> shift) & 0xFFFF).astype(np.uint16)
        out |= _window_or(_window_or(part, radius_px, 1), radius_px, 0).astype(np.int32) << shift
    return out


def difference_mask(
    convolved_mask: NDArray[np.int32],
    other_mask: NDArray[np.int32],
    *,
    kernel_reach_px: int,
    filter_reach_px: int,
    edge_px: int,
) -> NDArray[np.int32]:
    """Mask of a difference image (see the module docstring)."""
    keep = ~DETECTION_BITS
    # Growing a mask keeps its own pixels, so the grown masks hold the plain OR too.
    mask = dilate_bits(convolved_mask, kernel_reach_px, keep)
    mask |= dilate_bits(other_mask, filter_reach_px, keep)
    edge = mask_bits(MaskPlane.EDGE, MaskPlane.NO_DATA)
    if edge_px > 0:
        mask[:edge_px] |= edge
        mask[-edge_px:] |= edge
        mask[:, :edge_px] |= edge
        mask[:, -edge_px:] |= edge
    return mask


def filter_reach(phi: NDArray[np.float64]) -> int:
    """Half-width of the square holding 99.9 % of the filter's absolute weight."""
    h = phi.shape[0] // 2
    total = np.abs(phi).sum()
    for r in range(h + 1):
        if np.abs(phi[h - r : h + r + 1, h - r : h + r + 1]).sum() >= 0.999 * total:
            return r
    return h


def noise_ratio(difference: Exposure, step: int = 4) -> float:
    """Robust standard deviation of ``image / sqrt(variance)`` over unmasked pixels.

    The median absolute deviation ignores the few pixels on real sources, so on a difference
    image this measures the blank-sky noise relative to what the variance plane predicts. Every
    ``step``-th pixel of each axis is used, or fewer steps if that leaves under 200 000 pixels.
    """
    step = max(1, min(step, int(np.sqrt(difference.image.size / 200_000))))
    img = difference.image[::step, ::step]
    var = difference.variance[::step, ::step]
    good = (difference.mask[::step, ::step] == 0) & (var > 0) & np.isfinite(img)
    if not good.any():
        return float("nan")
    z = img[good] / np.sqrt(var[good])
    return float(1.4826 * np.median(np.abs(z - np.median(z))))
