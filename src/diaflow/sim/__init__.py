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
from .survey import SurveyResult, exposure_path, simulate_survey, true_wcs

__all__ = [
    "BANDS",
    "PRESETS",
    "CadenceConfig",
    "CameraConfig",
    "RenderConfig",
    "SkyConfig",
    "SurveyConfig",
    "SurveyResult",
    "exposure_path",
    "preset",
    "simulate_survey",
    "true_wcs",
]
