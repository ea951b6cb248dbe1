"""Synthetic survey with truth: cadence, sky, solar system, rendering and reference catalog."""

from .config import (
    BANDS,
    PRESETS,
    CadenceConfig,
    CameraConfig,
    RenderConfig,
    SkyConfig,
    SurveyConfig,
    preset,
)
from .plan import SurveyPlan, VisitInputs, detector_rng, plan_survey, visit_inputs
from .survey import SurveyResult, exposure_path, simulate_survey, true_wcs
from .truth import blank_map, occupied_sky

__all__ = [
    "BANDS",
    "PRESETS",
    "CadenceConfig",
    "CameraConfig",
    "RenderConfig",
    "SkyConfig",
    "SurveyConfig",
    "SurveyPlan",
    "SurveyResult",
    "VisitInputs",
    "blank_map",
    "detector_rng",
    "exposure_path",
    "occupied_sky",
    "plan_survey",
    "preset",
    "simulate_survey",
    "true_wcs",
    "visit_inputs",
]
