"""Mask-plane bits, shared by every stage.

Bit numbers follow the Rubin science pipelines' defaults, so that masks read by users of both
look the same. The bit of a plane is ``1 << MaskPlane.X``; FITS headers carry ``MP_<NAME>`` cards
with each bit number (the convention of Rubin's afw), so ds9 and astropy users can decode them.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

__all__ = ["MaskPlane", "mask_bits", "mask_header_cards"]


class MaskPlane(IntEnum):
    """Bit number of each mask plane."""

    BAD = 0
    """Known detector defect (bad column, hot pixel): the value means nothing."""
    SAT = 1
    """At or above the saturation level, including bleed trails."""
    INTRP = 2
    """Value was interpolated over a defect or cosmic ray."""
    CR = 3
    """Cosmic ray, found by calibration (the simulator leaves cosmic rays unmasked)."""
    EDGE = 4
    """Too close to the image edge for a full measurement or convolution kernel."""
    DETECTED = 5
    """Inside the footprint of a positive detection."""
    DETECTED_NEGATIVE = 6
    """Inside the footprint of a negative detection (difference images)."""
    SUSPECT = 7
    """Near saturation or nonlinearity: usable with care."""
    NO_DATA = 8
    """No data (outside a warped input's footprint)."""
    STREAK = 9
    """Satellite or aircraft trail."""


def mask_bits(*planes: MaskPlane | str) -> int:
    """Bitmask with the given planes set, e.g. ``mask_bits("BAD", "SAT")``."""
    bits = 0
    for plane in planes:
        bits |= 1 << int(MaskPlane[plane] if isinstance(plane, str) else plane)
    return bits


def mask_header_cards() -> dict[str, int]:
    """``MP_<NAME>: bit`` cards for a FITS mask header (HIERARCH for names over 8 characters)."""
    return {
        (f"MP_{plane.name}" if len(plane.name) <= 5 else f"HIERARCH MP_{plane.name}"): int(plane)
        for plane in MaskPlane
    }


def planes_set(mask: NDArray[np.int32], plane: MaskPlane | str) -> NDArray[np.bool_]:
    """Boolean array where ``plane`` is set in ``mask``."""
    return (mask & mask_bits(plane)) != 0
