"""Read exposures that other pipelines wrote: a single image HDU with a WCS, no mask or variance.

Real survey archives hand out calibrated images in many layouts. :func:`read_single_image`
builds an :class:`~diaflow.image.Exposure` from the common case: one image (ADU), a celestial WCS
(TAN, TPV, SIP...), the gain and read noise in the header. The variance plane is rebuilt from the
noise model ``sky/gain + max(source, 0)/gain + (read_noise/gain)^2``, the sky variance taken from
the sky level when the sky is still in, or from a robust estimate of the blank-sky noise when it
was already subtracted; the mask flags saturated and non-finite pixels.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from ..errors import CorruptFileError
from .exposure import Exposure, VisitInfo
from .masks import MaskPlane, mask_bits

__all__ = ["read_single_image"]


def _header_float(hdr: fits.Header, *keys: str, default: float | None = None) -> float | None:
    for key in keys:
        if key in hdr and isinstance(hdr[key], (int, float)):
            return float(hdr[key])
    return default


def read_single_image(
    path: str | os.PathLike[str],
    *,
    hdu: int | str = 0,
    visit: int | None = None,
    detector: int = 0,
    band: str | None = None,
    sky_subtracted: bool | None = None,
) -> Exposure:
    """Read one image HDU as an Exposure with a rebuilt mask and variance plane.

    Parameters
    ----------
    path
        The FITS file.
    hdu
        Which HDU holds the image.
    visit
        Visit id; by default a stable 40-bit hash of the file name (it fits the DiaSource id
        packing, which allows visits below 2**41).
    detector
        Detector id to record.
    band
        Filter band; by default the first letter of the ``FILTER`` card.
    sky_subtracted
        Whether the sky was already subtracted; by default guessed from the image median being
        small against its noise.

    Raises
    ------
    CorruptFileError
        If the file cannot be read, the HDU is not a 2-D image, or it has no celestial WCS.
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            image = np.asarray(hdul[hdu].data, dtype=np.float64)
            hdr = hdul[hdu].header.copy()
            if "EXPTIME" not in hdr and len(hdul) > 1:
                hdr.update({k: v for k, v in hdul[0].header.items() if k not in hdr})
    except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise CorruptFileError(
            "unreadable_fits", f"{path}: cannot read HDU {hdu!r} ({exc})"
        ) from exc
    if image.ndim != 2:
        raise CorruptFileError("bad_shape", f"{path}: HDU {hdu!r} is not a 2-D image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # archive headers carry odd cards
        wcs = WCS(hdr)
    if not wcs.has_celestial:
        raise CorruptFileError("missing_wcs", f"{path}: no celestial WCS in HDU {hdu!r}")
    gain = _header_float(hdr, "GAIN", "ARAWGAIN", "GAINA", default=1.0) or 1.0
    read_noise_e = _header_float(hdr, "RDNOISE", "RDNOISEA", default=5.0) or 5.0
    saturation = _header_float(hdr, "SATURATE", "ESATUR", default=np.inf)

    finite = np.isfinite(image)
    mask = np.zeros(image.shape, np.int32)
    mask[~finite] |= mask_bits(MaskPlane.NO_DATA)
    image = np.where(finite, image, 0.0)
    blank_sigma = float(mad_std(image[finite]))
    median = float(np.median(image[finite]))
    if sky_subtracted is None:
        sky_subtracted = abs(median) < 0.5 * blank_sigma
    # With the sky in, its variance follows from its level; once subtracted (and perhaps
    # resampled, which correlates and lowers the per-pixel noise) only the pixels can tell.
    sky = median if not sky_subtracted else None
    sky_var = sky / gain + (read_noise_e / gain) ** 2 if sky and sky > 0 else blank_sigma**2
    source = np.clip(image - (0.0 if sky_subtracted else median), 0.0, None)
    variance = sky_var + source / gain
    if saturation is not None and np.isfinite(saturation):
        mask[image >= saturation] |= mask_bits(MaskPlane.SAT)

    if visit is None:
        visit = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:5], "big")
    filt = str(hdr.get("FILTER", band or "r"))
    ra, dec = wcs.celestial.wcs.crval
    info = VisitInfo(
        visit=int(visit),
        detector=detector,
        band=band or filt.strip()[:1].lower(),
        mjd_tai=float(_header_float(hdr, "MJD-MID", "MJD-OBS", default=0.0) or 0.0),
        exptime_s=float(_header_float(hdr, "EXPTIME", default=1.0) or 1.0),
        boresight_ra_deg=float(ra),
        boresight_dec_deg=float(dec),
        rotation_deg=0.0,
        airmass=float(_header_float(hdr, "AIRMASS", default=1.0) or 1.0),
        zero_point_nominal=float(_header_float(hdr, "MAGZERO", "MAGZPT", default=25.0) or 25.0),
        gain=gain,
        read_noise_e=read_noise_e,
        saturation_e=float(saturation)
        if saturation is not None and np.isfinite(saturation)
        else 1e30,
    )
    return Exposure(
        image=image.astype(np.float32),
        mask=mask,
        variance=variance.astype(np.float32),
        wcs=wcs.celestial,
        info=info,
        extra={"SRCFILE": path.name},
    )
