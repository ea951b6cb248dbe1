"""Warping, PSF matching and coaddition with outlier rejection: templates and deep coadds.

The stage in order: :func:`make_patch` defines a grid on the sky; :func:`warp_exposure` resamples
an exposure onto it; :func:`match_psf` convolves it to a common PSF (:func:`common_psf`);
:func:`find_outliers` finds transient outliers across inputs; :func:`build_template` does all of
it for one patch and band and returns a :class:`Template`, which :func:`write_template` and
:func:`read_template` store as FITS. See ``docs/templates.md``.
"""

from .io import read_template, write_template
from .patch import SkyPatch, make_patch
from .psfmatch import PsfMatchConfig, common_psf, match_psf, matching_kernel, psf_shape
from .reject import RejectConfig, Rejection, find_outliers, robust_median
from .template import (
    MatchedInputs,
    Template,
    TemplateConfig,
    TemplateInput,
    build_template,
    coadd_matched,
    match_inputs,
    select_visits,
)
from .warp import WarpConfig, warp_exposure, warp_noise_correlation, warp_psf

__all__ = [
    "MatchedInputs",
    "PsfMatchConfig",
    "RejectConfig",
    "Rejection",
    "SkyPatch",
    "Template",
    "TemplateConfig",
    "TemplateInput",
    "WarpConfig",
    "build_template",
    "coadd_matched",
    "common_psf",
    "find_outliers",
    "make_patch",
    "match_inputs",
    "match_psf",
    "matching_kernel",
    "psf_shape",
    "read_template",
    "robust_median",
    "select_visits",
    "warp_exposure",
    "warp_noise_correlation",
    "warp_psf",
    "write_template",
]
