"""Templates for the nightly runner: one per field and band, from past exposure files.

Exposures are grouped by band and by pointing (boresights within ``field_radius_deg`` are one
field); each group's template covers the footprints of all its detectors on a north-up patch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from ..calib import CalibConfig
from ..coadd import TemplateConfig, make_patch
from ..errors import BadInputError, TemplateError
from ..image import read_exposure
from .repo import Repo, TemplateEntry
from .visit import build_patch_template

__all__ = ["TemplatePlanConfig", "build_templates"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TemplatePlanConfig:
    """How exposures are grouped into templates."""

    field_radius_deg: float = 0.1
    """Boresights closer than this belong to one field."""
    pixel_scale_arcsec: float = 0.2
    margin_arcsec: float = 30.0
    """Added on every side of the detectors' footprints (pointing jitter)."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)


def _fields(heads: pd.DataFrame, radius: float) -> np.ndarray:
    labels = np.full(len(heads), -1)
    centres: list[tuple[float, float]] = []
    for k, (ra, dec) in enumerate(zip(heads["ra"], heads["dec"], strict=True)):
        for j, (r0, d0) in enumerate(centres):
            if np.hypot((ra - r0 + 180) % 360 - 180, dec - d0) < radius:
                labels[k] = j
                break
        else:
            centres.append((ra, dec))
            labels[k] = len(centres) - 1
    return labels


def build_templates(
    paths: Sequence[str | os.PathLike[str]],
    repo: Repo,
    *,
    refcat: pd.DataFrame,
    config: TemplatePlanConfig | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[TemplateEntry]:
    """Build and register one template per field and band from the given exposure files.

    Groups that cannot make a template (too few usable visits) are logged and skipped.
    """
    cfg = config or TemplatePlanConfig()
    rows = []
    for p in paths:
        try:
            h = fits.getheader(p, 0)
            rows.append((Path(p), h["BAND"], float(h["BORE-RA"]), float(h["BORE-DEC"])))
        except Exception as exc:  # unreadable inputs are simply not template material
            logger.warning("template inputs: skipped %s (%s)", p, exc)
    heads = pd.DataFrame(rows, columns=["path", "band", "ra", "dec"])
    heads["field"] = _fields(heads, cfg.field_radius_deg)
    entries = []
    for (fld, band), group in heads.groupby(["field", "band"], sort=True):
        name = f"field{fld}-{band}"
        exposures = []
        for p in group["path"]:
            try:
                exposures.append(read_exposure(p))
            except BadInputError as exc:
                logger.warning("template %s: skipped %s (%s)", name, p, exc)
        corners = []
        for exp in exposures:
            if exp.wcs is None:
                continue
            ny, nx = exp.shape
            ra, dec = exp.wcs.pixel_to_world_values([0, nx - 1, 0, nx - 1], [0, 0, ny - 1, ny - 1])
            corners.append(np.column_stack([ra, dec]))
        if not corners:
            continue
        pts = np.vstack(corners)
        ra0 = float(np.rad2deg(np.angle(np.exp(1j * np.deg2rad(pts[:, 0])).mean())) % 360)
        dec0 = float(pts[:, 1].mean())
        dx = ((pts[:, 0] - ra0 + 180) % 360 - 180) * np.cos(np.deg2rad(dec0)) * 3600
        dy = (pts[:, 1] - dec0) * 3600
        size = (
            float(2 * np.abs(dy).max() + 2 * cfg.margin_arcsec),
            float(2 * np.abs(dx).max() + 2 * cfg.margin_arcsec),
        )
        patch = make_patch(
            ra_deg=ra0,
            dec_deg=dec0,
            size_arcsec=size,
            pixel_scale_arcsec=cfg.pixel_scale_arcsec,
            name=name,
        )
        if on_progress is not None:
            on_progress(f"{name}: {len(exposures)} exposures")
        try:
            template = build_patch_template(
                exposures,
                refcat=refcat,
                patch=patch,
                band=str(band),
                config=cfg.template,
                calib=cfg.calib,
            )
        except TemplateError as exc:
            logger.warning("template %s: not built (%s)", name, exc)
            continue
        entries.append(repo.add_template(template, str(band)))
    return entries
