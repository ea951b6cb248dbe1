"""Celestial WCS of a detector: a gnomonic (TAN) projection about the boresight with SIP distortion.

The camera's optical distortion is radial about the boresight, ``r' = r (1 + k r^2)`` in focal-plane
pixels. Writing the detector's CRPIX at the boresight's position in detector pixels makes that model
an exact third-order SIP polynomial (``A_3_0 = A_1_2 = B_2_1 = B_0_3 = k``), so every FITS reader
that knows SIP (astropy, ds9) reproduces it.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

__all__ = ["make_detector_wcs"]


def make_detector_wcs(
    *,
    boresight_ra_deg: float,
    boresight_dec_deg: float,
    rotation_deg: float,
    pixel_scale_arcsec: float,
    boresight_pixel: tuple[float, float],
    distortion_k: float = 0.0,
    shape: tuple[int, int] | None = None,
) -> WCS:
    """Build the TAN-SIP WCS of one detector.

    Parameters
    ----------
    boresight_ra_deg, boresight_dec_deg
        ICRS position of the optical axis, degrees.
    rotation_deg
        Position angle of the detector's +y axis, east of north, degrees.
    pixel_scale_arcsec
        Pixel scale at the boresight, arcsec per pixel.
    boresight_pixel
        0-based (x, y) of the boresight in this detector's pixel grid (usually off the detector).
    distortion_k
        Radial distortion coefficient per pixel squared (0: pure TAN).
    shape
        (ny, nx) of the detector, recorded as NAXIS1/2 on the WCS.
    """
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if distortion_k else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [boresight_ra_deg, boresight_dec_deg]
    w.wcs.crpix = [boresight_pixel[0] + 1.0, boresight_pixel[1] + 1.0]  # FITS is 1-based
    scale = pixel_scale_arcsec / 3600.0
    theta = np.deg2rad(rotation_deg)
    # +x to the west of +y when rotation is zero (north up, east left), as on the sky.
    w.wcs.cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    w.wcs.radesys = "ICRS"
    w.wcs.cunit = ["deg", "deg"]
    if distortion_k:
        from astropy.wcs import Sip

        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[3, 0] = a[1, 2] = distortion_k
        b[2, 1] = b[0, 3] = distortion_k
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    if shape is not None:
        w.pixel_shape = (shape[1], shape[0])
    w.wcs.set()
    return w
