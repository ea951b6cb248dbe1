"""Exposure model (image/mask/variance, WCS, visit metadata) and its FITS I/O."""

from .exposure import AB_NJY_ZEROPOINT, Exposure, VisitInfo
from .fits import read_exposure, write_exposure
from .foreign import read_single_image
from .masks import MaskPlane, mask_bits, planes_set
from .psf import GaussianPsf, PixelPsf, PsfModel, poly_terms
from .wcs import make_detector_wcs

__all__ = [
    "AB_NJY_ZEROPOINT",
    "Exposure",
    "GaussianPsf",
    "MaskPlane",
    "PixelPsf",
    "PsfModel",
    "VisitInfo",
    "make_detector_wcs",
    "mask_bits",
    "planes_set",
    "poly_terms",
    "read_exposure",
    "read_single_image",
    "write_exposure",
]
