"""Association of DiaSources to SSObjects and DiaObjects, and DiaObject summaries.

``associate_visit`` runs the whole per-visit step: attribution to predicted SSObject positions
(``match_ss_objects``), a global one-to-one chi-square matching to the latest DiaObjects
(``match_to_objects``, exact minimum-cost assignment), new DiaObjects for unmatched sources that
pass the quality cuts, and new versions of every touched DiaObject (``summarize``), with Rubin
APDB column names and units.
"""

from .associate import AssociationResult, associate_visit, passes_quality_cuts
from .config import AssociationConfig
from .match import Matches, assign_one_to_one, match_to_objects
from .schema import BANDS, DIA_OBJECT_COLUMNS, SS_SOURCE_COLUMNS, empty_dia_objects
from .ssobject import match_ss_objects, prediction_gate_arcsec
from .summary import summarize

__all__ = [
    "BANDS",
    "DIA_OBJECT_COLUMNS",
    "SS_SOURCE_COLUMNS",
    "AssociationConfig",
    "AssociationResult",
    "Matches",
    "assign_one_to_one",
    "associate_visit",
    "empty_dia_objects",
    "match_ss_objects",
    "match_to_objects",
    "passes_quality_cuts",
    "prediction_gate_arcsec",
    "summarize",
]
