"""The exposure model: image, mask and variance planes with their WCS and visit metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS
from numpy.typing import NDArray

from ..errors import BadInputError
from .psf import PsfModel

__all__ = ["AB_NJY_ZEROPOINT", "Exposure", "VisitInfo"]

AB_NJY_ZEROPOINT = 31.4
"""AB magnitude of 1 nJy: ``m_AB = 31.4 - 2.5 log10(flux / nJy)``."""


@dataclass(frozen=True, kw_only=True)
class VisitInfo:
    """What is known about one detector's exposure when it is taken."""

    visit: int
    """Visit (exposure) id, shared by all detectors of the exposure."""
    detector: int
    """Detector id within the camera."""
    band: str
    """Filter band, one of ugrizy."""
    mjd_tai: float
    """Mid-exposure time, MJD (TAI)."""
    exptime_s: float
    """Exposure time, seconds."""
    boresight_ra_deg: float
    """Commanded boresight right ascension (ICRS), degrees."""
    boresight_dec_deg: float
    """Commanded boresight declination (ICRS), degrees."""
    rotation_deg: float
    """Commanded sky rotation angle, degrees."""
    airmass: float
    """Airmass at mid-exposure."""
    zero_point_nominal: float
    """Expected AB magnitude giving one count (electron) in the exposure; the true one differs."""
    gain: float = 1.0
    """Electrons per count of the image plane."""
    read_noise_e: float = 9.0
    """Read noise, electrons."""
    saturation_e: float = 1.0e5
    """Saturation level of the image plane, counts."""


@dataclass(kw_only=True)
class Exposure:
    """One detector's exposure: image (counts), mask bits, variance (counts^2), WCS and metadata.

    Pixel coordinates are 0-based with integers at pixel centres (numpy convention); only FITS I/O
    converts to FITS's 1-based convention.
    """

    image: NDArray[np.float32]
    mask: NDArray[np.int32]
    variance: NDArray[np.float32]
    wcs: WCS | None
    info: VisitInfo
    zero_point: float | None = None
    """Calibrated AB zero point (magnitude of one count), once calibration has measured it."""
    psf: PsfModel | None = None
    """PSF model, once calibration has measured it (or from truth in tests)."""
    extra: dict[str, object] = field(default_factory=dict)
    """Other header metadata to round-trip through FITS."""

    def __post_init__(self) -> None:
        if self.image.ndim != 2:
            raise BadInputError(
                "bad_shape", f"{self.label}: image must be 2-D, got shape {self.image.shape}"
            )
        for name in ("mask", "variance"):
            plane = getattr(self, name)
            if plane.shape != self.image.shape:
                raise BadInputError(
                    "plane_shape_mismatch",
                    f"{self.label}: {name} shape {plane.shape} differs from image shape "
                    f"{self.image.shape}",
                )

    @property
    def label(self) -> str:
        """``visit/detector`` label for messages."""
        return f"visit {self.info.visit}/{self.info.detector}"

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the planes."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    def counts_to_njy(self, counts: NDArray[np.float64] | float) -> NDArray[np.float64] | float:
        """Convert counts to nJy with the calibrated zero point (nominal if not calibrated)."""
        zp = self.zero_point if self.zero_point is not None else self.info.zero_point_nominal
        return counts * 10.0 ** (-0.4 * (zp - AB_NJY_ZEROPOINT))
