"""Multi-extension FITS I/O for exposures: primary header, IMAGE, MASK, VARIANCE (and PSF).

The layout is that of Rubin's calexps (EXTNAME IMAGE/MASK/VARIANCE, ``MP_*`` mask-plane cards),
each extension carrying the WCS so that ds9 and astropy display any of them on the sky.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from ..errors import CorruptFileError
from .exposure import Exposure, VisitInfo
from .masks import mask_header_cards
from .psf import PixelPsf

__all__ = ["read_exposure", "write_exposure"]

_INFO_CARDS: dict[str, tuple[str, str]] = {
    # VisitInfo field: (FITS keyword, comment)
    "visit": ("VISIT", "visit (exposure) id"),
    "detector": ("DETECTOR", "detector id"),
    "band": ("BAND", "filter band"),
    "mjd_tai": ("MJD-MID", "[d] mid-exposure time, MJD TAI"),
    "exptime_s": ("EXPTIME", "[s] exposure time"),
    "boresight_ra_deg": ("BORE-RA", "[deg] commanded boresight RA (ICRS)"),
    "boresight_dec_deg": ("BORE-DEC", "[deg] commanded boresight Dec (ICRS)"),
    "rotation_deg": ("ROTPA", "[deg] commanded sky rotation angle"),
    "airmass": ("AIRMASS", "airmass at mid-exposure"),
    "zero_point_nominal": ("MAGZERO", "[mag] nominal AB zero point for 1 count"),
    "gain": ("GAIN", "[e/count] gain of the image plane"),
    "read_noise_e": ("RDNOISE", "[e] read noise"),
    "saturation_e": ("SATURATE", "[count] saturation level"),
}


def write_exposure(
    exposure: Exposure, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write an exposure as multi-extension FITS, atomically (temporary file, then rename).

    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    primary = fits.PrimaryHDU()
    hdr = primary.header
    for name, (key, comment) in _INFO_CARDS.items():
        hdr[key] = (getattr(exposure.info, name), comment)
    hdr["TIMESYS"] = ("TAI", "time scale of MJD values")
    hdr["BUNIT"] = ("count", "image unit (electrons for gain 1)")
    if exposure.zero_point is not None:
        hdr["ZPCAL"] = (exposure.zero_point, "[mag] calibrated AB zero point for 1 count")
    for key, value in exposure.extra.items():
        hdr[key] = value
    wcs_hdr = exposure.wcs.to_header(relax=True) if exposure.wcs is not None else fits.Header()
    hdus = [primary]
    for extname, data, extra in (
        ("IMAGE", exposure.image.astype(np.float32, copy=False), {"BUNIT": "count"}),
        ("MASK", exposure.mask.astype(np.int32, copy=False), mask_header_cards()),
        ("VARIANCE", exposure.variance.astype(np.float32, copy=False), {"BUNIT": "count2"}),
    ):
        h = fits.ImageHDU(data=data, name=extname)
        h.header.extend(wcs_hdr, update=True)
        for key, value in extra.items():
            h.header[key] = value
        hdus.append(h)
    if isinstance(exposure.psf, PixelPsf):
        h = fits.ImageHDU(data=exposure.psf.coeffs.astype(np.float64), name="PSF")
        h.header["PSFORDER"] = (exposure.psf.order, "polynomial order in detector position")
        h.header["PSFNX"] = (exposure.psf.shape[1], "detector width the positions scale over")
        h.header["PSFNY"] = (exposure.psf.shape[0], "detector height the positions scale over")
        hdus.append(h)
    tmp = path.with_name(path.name + ".tmp")
    fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="exception")
    os.replace(tmp, path)
    return path


def read_exposure(path: str | os.PathLike[str]) -> Exposure:
    """Read an exposure written by :func:`write_exposure` (or any file with the same layout).

    Raises
    ------
    CorruptFileError
        If the file is missing, truncated, not FITS, lacks an extension or a header card.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # astropy only warns about a truncated file; here that is an error.
            warnings.simplefilter("error", AstropyUserWarning)
            hdul = fits.open(path, memmap=False)
            try:
                hdul.readall()
            except BaseException:
                hdul.close()
                raise
        with hdul:
            hdul.verify("exception")
            names = [h.name for h in hdul]
            for needed in ("IMAGE", "MASK", "VARIANCE"):
                if needed not in names:
                    raise CorruptFileError(
                        "missing_extension",
                        f"{path}: no {needed} extension (found {names}); "
                        "expected the IMAGE/MASK/VARIANCE layout",
                        path=str(path),
                    )
            hdr = hdul[0].header
            image = np.asarray(hdul["IMAGE"].data, dtype=np.float32)
            mask = np.asarray(hdul["MASK"].data, dtype=np.int32)
            variance = np.asarray(hdul["VARIANCE"].data, dtype=np.float32)
            img_hdr = hdul["IMAGE"].header
            psf = None
            if "PSF" in names:
                ph = hdul["PSF"].header
                psf = PixelPsf(
                    np.asarray(hdul["PSF"].data, dtype=np.float64),
                    int(ph["PSFORDER"]),
                    (int(ph["PSFNY"]), int(ph["PSFNX"])),
                )
    except CorruptFileError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, IndexError, AstropyUserWarning) as exc:
        raise CorruptFileError(
            "unreadable_fits",
            f"{path}: cannot read as FITS ({exc}); is it truncated?",
            path=str(path),
        ) from exc
    if image.ndim != 2:
        raise CorruptFileError("bad_shape", f"{path}: IMAGE is not 2-D (shape {image.shape})")
    values = {}
    for name, (key, _) in _INFO_CARDS.items():
        if key not in hdr:
            raise CorruptFileError(
                "missing_header", f"{path}: primary header lacks {key} ({name})", path=str(path)
            )
        values[name] = hdr[key]
    info = VisitInfo(**values)
    wcs = WCS(img_hdr, relax=True) if "CTYPE1" in img_hdr else None
    if wcs is not None:
        wcs.pixel_shape = (image.shape[1], image.shape[0])
    known = {k for k, _ in _INFO_CARDS.values()} | {"TIMESYS", "BUNIT", "ZPCAL"}
    extra = {
        k: hdr[k]
        for k in hdr
        if k not in known and k not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "COMMENT", "HISTORY")
    }
    return Exposure(
        image=image,
        mask=mask,
        variance=variance,
        wcs=wcs,
        info=info,
        zero_point=hdr.get("ZPCAL"),
        psf=psf,
        extra=extra,
    )
