"""The per-visit prompt pipeline: calibrate, warp the template, subtract, detect and measure.

:func:`process_visit` strings the image stages together for one detector of one visit and
returns every product with the seconds each stage took. :func:`build_patch_template` calibrates
a patch's past visits and coadds them into its template. Later stages (association, the Level 1
database, alerts) build on these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..calib import CalibConfig, CalibrationResult, calibrate
from ..coadd import SkyPatch, Template, TemplateConfig, build_template, warp_exposure
from ..diffim import SubtractConfig, Subtraction, subtract
from ..errors import BadInputError
from ..image import Exposure
from ..measure import DiaSourceConfig, detect_and_measure
from ..timing import Stopwatch

__all__ = ["VisitConfig", "VisitResult", "build_patch_template", "process_visit"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VisitConfig:
    """Configuration of every image stage of the per-visit pipeline."""

    calib: CalibConfig = field(default_factory=CalibConfig)
    subtract: SubtractConfig = field(default_factory=SubtractConfig)
    measure: DiaSourceConfig = field(default_factory=DiaSourceConfig)


@dataclass(frozen=True)
class VisitResult:
    """Everything one visit-detector produced."""

    calibration: CalibrationResult
    template: Exposure
    """The template warped onto the science exposure's pixel grid."""
    subtraction: Subtraction
    dia_sources: pd.DataFrame
    """Measured DiaSources (Rubin APDB column names, nJy)."""
    seconds: dict[str, float]
    """Wall seconds per stage: calibrate, warp, subtract, measure, total."""
    template_version: str = ""


def process_visit(
    exposure: Exposure,
    *,
    refcat: pd.DataFrame,
    template: Template,
    config: VisitConfig | None = None,
    make_ids: Callable[[int], np.ndarray] | None = None,
) -> VisitResult:
    """Take one post-ISR exposure to measured DiaSources.

    ``make_ids(n)`` gives the DiaSource ids (the Level 1 database's, see ``l1db.ids``); by
    default they are unique within this processing only.

    Raises
    ------
    BadInputError
        (or a subclass: CalibrationError, SubtractionError) when the visit cannot be processed;
        its ``reason`` says why, for the quarantine record.
    """
    config = config or VisitConfig()
    clock = Stopwatch()
    cal = calibrate(exposure, refcat, config=config.calib)
    clock.lap("calibrate")
    science = cal.exposure
    if science.wcs is None:
        raise BadInputError("no_wcs", f"{exposure.label}: calibration produced no WCS")
    warped = warp_exposure(template.exposure, science.wcs, science.shape)
    if not np.isfinite(warped.image).any():
        raise BadInputError(
            "no_template_overlap", f"{exposure.label}: the template does not cover this detector"
        )
    clock.lap("warp")
    sub = subtract(science, warped, config=config.subtract)
    clock.lap("subtract")
    sources, _ = detect_and_measure(
        sub.difference, science=science, template=warped, config=config.measure, make_ids=make_ids
    )
    clock.lap("measure")
    seconds = clock.done()
    logger.info(
        "visit=%d/%d sources=%d %s",
        exposure.info.visit,
        exposure.info.detector,
        len(sources),
        " ".join(f"{k}={v:.2f}s" for k, v in seconds.items()),
    )
    return VisitResult(cal, warped, sub, sources, seconds, template.version)


def build_patch_template(
    exposures: Sequence[Exposure],
    *,
    refcat: pd.DataFrame,
    patch: SkyPatch,
    band: str,
    config: TemplateConfig | None = None,
    calib: CalibConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Template:
    """Calibrate past exposures of a patch (skipping those that cannot be) and coadd them."""
    calibrated = []
    for k, exp in enumerate(exposures):
        try:
            calibrated.append(calibrate(exp, refcat, config=calib).exposure)
        except BadInputError as exc:
            logger.warning("template %s: skipped %s (%s)", patch.name, exp.label, exc)
        if on_progress is not None:
            on_progress(k + 1, len(exposures))
    return build_template(
        calibrated,
        target_wcs=patch.wcs,
        target_shape=patch.shape,
        config=config,
        band=band,
        name=patch.name,
    )
