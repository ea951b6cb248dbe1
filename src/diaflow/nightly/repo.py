"""The working area of the nightly runner: templates, kept images, alert files and run logs.

Layout under one root directory::

    templates/index.json          one entry per template: name, band, centre, radius, version
    templates/<name>.fits         the templates (coadd/io.py format)
    l1db/                         the Level 1 database (SQLite backend; see docs/l1db.md)
    alerts/<visit>_<det>.avro     alert packets, one Avro container file per visit-detector
    images/<visit>_<det>.diff.fits  difference images kept for precovery (pruned after 30 days)
    quarantine.jsonl              every input set aside, with its reason, one JSON per line
    nights/<label>.json           the summary of each run

Every write is atomic (a temporary file, then ``os.replace``), so a crash leaves either the old
file or the new one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs import WCS

from ..coadd import Template, read_template, write_template
from ..errors import TemplateError
from ..image import Exposure, PixelPsf, read_exposure, write_exposure

__all__ = ["Repo", "TemplateEntry", "atomic_write_bytes", "footprint"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def footprint(wcs: WCS, shape: tuple[int, int], margin_arcsec: float = 0.0) -> tuple[float, ...]:
    """(ra, dec, radius) of the cone, in degrees, that covers a pixel grid plus a margin."""
    ny, nx = shape
    centre = wcs.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
    xs = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = wcs.pixel_to_world_values(xs, ys)
    r0, d0 = np.deg2rad(centre[0]), np.deg2rad(centre[1])
    r, d = np.deg2rad(ra), np.deg2rad(dec)
    cos_sep = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
    radius = float(np.rad2deg(np.arccos(np.clip(cos_sep, -1, 1))).max())
    return float(centre[0]), float(centre[1]), radius + margin_arcsec / 3600.0


@dataclass(frozen=True)
class TemplateEntry:
    """One template of the index."""

    name: str
    band: str
    ra: float
    dec: float
    radius: float
    """Radius of the cone the template covers, degrees."""
    version: str
    path: str
    """Relative to ``templates/``."""


class Repo:
    """The runner's working area under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._templates: dict[str, Template] = {}

    @property
    def l1db_dir(self) -> Path:
        return self.root / "l1db"

    @property
    def alerts_dir(self) -> Path:
        return self.root / "alerts"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    # ---- templates ---------------------------------------------------------------------------
    def template_entries(self) -> list[TemplateEntry]:
        path = self.templates_dir / "index.json"
        if not path.exists():
            return []
        return [TemplateEntry(**e) for e in json.loads(path.read_text())]

    def add_template(self, template: Template, band: str) -> TemplateEntry:
        """Write a template and register it (replacing an entry of the same name)."""
        exp = template.exposure
        assert exp.wcs is not None
        ra, dec, radius = footprint(exp.wcs, exp.shape)
        entry = TemplateEntry(
            name=template.name,
            band=band,
            ra=ra,
            dec=dec,
            radius=radius,
            version=template.version,
            path=f"{template.name}.fits",
        )
        self.templates_dir.mkdir(parents=True, exist_ok=True)
        write_template(template, self.templates_dir / entry.path, overwrite=True)
        entries = [e for e in self.template_entries() if e.name != entry.name] + [entry]
        atomic_write_bytes(
            self.templates_dir / "index.json",
            json.dumps([asdict(e) for e in entries], indent=1).encode(),
        )
        return entry

    def template_for(self, band: str, ra: float, dec: float) -> Template:
        """The template of ``band`` whose centre is nearest (ra, dec) and that covers it.

        Raises
        ------
        TemplateError
            ``no_template`` when none covers the position in that band.
        """
        best: tuple[float, TemplateEntry] | None = None
        for e in self.template_entries():
            if e.band != band:
                continue
            cos_sep = np.sin(np.deg2rad(dec)) * np.sin(np.deg2rad(e.dec)) + np.cos(
                np.deg2rad(dec)
            ) * np.cos(np.deg2rad(e.dec)) * np.cos(np.deg2rad(ra - e.ra))
            sep = float(np.rad2deg(np.arccos(np.clip(cos_sep, -1, 1))))
            if sep <= e.radius and (best is None or sep < best[0]):
                best = (sep, e)
        if best is None:
            raise TemplateError(
                "no_template",
                f"no {band}-band template covers ({ra:.4f}, {dec:.4f}); build one with "
                "`diaflow template build`",
            )
        entry = best[1]
        if entry.name not in self._templates:
            self._templates[entry.name] = read_template(self.templates_dir / entry.path)
        return self._templates[entry.name]

    # ---- kept images -------------------------------------------------------------------------
    def difference_path(self, visit: int, detector: int) -> Path:
        return self.images_dir / f"{visit}_{detector:03d}.diff.fits"

    def keep_difference(self, exposure: Exposure) -> None:
        """Keep a difference image for precovery (overwrites the same visit's file).

        Its PSF is stored as a pixel PSF fitted on a 5 x 5 grid, the form FITS files carry.
        """
        if exposure.psf is not None and not isinstance(exposure.psf, PixelPsf):
            psf = PixelPsf.from_function(exposure.psf.kernel, exposure.shape)
            exposure = dataclasses.replace(exposure, psf=psf)
        path = self.difference_path(exposure.info.visit, exposure.info.detector)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_exposure(exposure, path, overwrite=True)

    def read_difference(self, visit: int, detector: int) -> Exposure | None:
        path = self.difference_path(visit, detector)
        return read_exposure(path) if path.exists() else None

    def prune_differences(self, keep: set[tuple[int, int]]) -> int:
        """Delete kept difference images not in ``keep``; returns how many went."""
        n = 0
        for path in self.images_dir.glob("*.diff.fits"):
            visit, det = path.name.split(".")[0].split("_")
            if (int(visit), int(det)) not in keep:
                path.unlink()
                n += 1
        return n

    # ---- logs --------------------------------------------------------------------------------
    def log_quarantine(self, entry: dict[str, Any]) -> None:
        """Append one quarantine record (appending a line is atomic enough for a log)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "quarantine.jsonl", "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def quarantine_log(self) -> list[dict[str, Any]]:
        path = self.root / "quarantine.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write_summary(self, label: str, summary: dict[str, Any]) -> Path:
        path = self.root / "nights" / f"{label}.json"
        atomic_write_bytes(path, json.dumps(summary, indent=1, default=str).encode())
        return path
