"""Sky patches: the tangent-plane pixel grids that templates and coadds are built on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from ..errors import ConfigError

__all__ = ["SkyPatch", "make_patch"]


@dataclass(frozen=True, kw_only=True)
class SkyPatch:
    """A square or rectangular patch of sky with a gnomonic (TAN) pixel grid, north up."""

    name: str
    """Label of the patch, e.g. ``"field0-r"``; recorded in templates."""
    ra_deg: float
    """ICRS right ascension of the patch centre, degrees."""
    dec_deg: float
    """ICRS declination of the patch centre, degrees."""
    shape: tuple[int, int]
    """(ny, nx) pixels."""
    pixel_scale_arcsec: float
    """Pixel scale at the centre, arcsec per pixel."""
    rotation_deg: float = 0.0
    """Position angle of the grid's +y axis, east of north, degrees."""

    @property
    def wcs(self) -> WCS:
        """The TAN WCS of the grid, its tangent point at the patch centre (0-based pixels)."""
        ny, nx = self.shape
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra_deg, self.dec_deg]
        w.wcs.crpix = [(nx - 1) / 2 + 1.0, (ny - 1) / 2 + 1.0]  # FITS is 1-based
        scale = self.pixel_scale_arcsec / 3600.0
        theta = math.radians(self.rotation_deg)
        # East to the left (+x is west) for rotation 0, as seen on the sky.
        w.wcs.cd = scale * np.array(
            [[-math.cos(theta), math.sin(theta)], [math.sin(theta), math.cos(theta)]]
        )
        w.wcs.radesys = "ICRS"
        w.wcs.cunit = ["deg", "deg"]
        w.pixel_shape = (nx, ny)
        w.wcs.set()
        return w


def make_patch(
    *,
    ra_deg: float,
    dec_deg: float,
    size_arcsec: float | tuple[float, float],
    pixel_scale_arcsec: float,
    rotation_deg: float = 0.0,
    name: str = "",
) -> SkyPatch:
    """A patch centred on (``ra_deg``, ``dec_deg``) covering ``size_arcsec`` (one or (y, x)).

    The pixel count per axis is the size over the pixel scale, rounded up.

    Raises
    ------
    ConfigError
        If the size or the pixel scale is not positive, or the declination is outside +-90.
    """
    sy, sx = (size_arcsec, size_arcsec) if np.isscalar(size_arcsec) else size_arcsec
    if not (pixel_scale_arcsec > 0 and sy > 0 and sx > 0):
        raise ConfigError(
            f"patch {name!r}: size_arcsec {size_arcsec!r} and pixel_scale_arcsec "
            f"{pixel_scale_arcsec!r} must be > 0"
        )
    if not -90.0 <= dec_deg <= 90.0:
        raise ConfigError(f"patch {name!r}: dec_deg must be in [-90, 90], got {dec_deg!r}")
    shape = (math.ceil(sy / pixel_scale_arcsec), math.ceil(sx / pixel_scale_arcsec))
    return SkyPatch(
        name=name,
        ra_deg=float(ra_deg) % 360.0,
        dec_deg=float(dec_deg),
        shape=shape,
        pixel_scale_arcsec=float(pixel_scale_arcsec),
        rotation_deg=float(rotation_deg),
    )
