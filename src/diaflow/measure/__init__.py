"""Detection, measurement, forced photometry and real/bogus scoring on difference images.

``detect`` finds positive and negative sources at a matched-filter threshold;
``measure_dia_sources`` measures them into a DiaSource table with Rubin APDB column names (nJy);
``forced_photometry`` measures PSF fluxes at given sky positions (DiaForcedSource);
``reliability`` scores sources with the packaged real/bogus model.
"""

from .config import DetectConfig, DiaSourceConfig, MeasureConfig
from .detect import Detections, detect, matched_filter_significance
from .forced import forced_photometry
from .measure import default_ids, detect_and_measure, measure_dia_sources
from .reliability import MODEL_VERSION, reliability, reliability_features
from .schema import DIA_FORCED_SOURCE_COLUMNS, DIA_SOURCE_COLUMNS

__all__ = [
    "DIA_FORCED_SOURCE_COLUMNS",
    "DIA_SOURCE_COLUMNS",
    "MODEL_VERSION",
    "DetectConfig",
    "Detections",
    "DiaSourceConfig",
    "MeasureConfig",
    "default_ids",
    "detect",
    "detect_and_measure",
    "forced_photometry",
    "matched_filter_significance",
    "measure_dia_sources",
    "reliability",
    "reliability_features",
]
