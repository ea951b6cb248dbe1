"""The nightly prompt pipeline.

``visit``: the image stages of one visit-detector (calibrate, warp the template, subtract,
detect and measure) and template building. ``prompt``: association, forced photometry,
precovery and alert packets for one visit, into one :class:`~diaflow.l1db.VisitProducts`.
``runner``: a night's visits in time order into the Level 1 database, exactly once, with
quarantine of bad input. ``repo``: the on-disk working area the runner uses.
"""

from .visit import VisitConfig, VisitResult, build_patch_template, process_visit

__all__ = ["VisitConfig", "VisitResult", "build_patch_template", "process_visit"]
