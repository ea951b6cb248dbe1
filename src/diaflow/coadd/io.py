"""Templates as FITS: the exposure layout of :mod:`diaflow.image.fits` plus two extensions.

Besides PRIMARY, IMAGE, MASK, VARIANCE and PSF (written by
:func:`~diaflow.image.write_exposure`), a template file holds:

- ``NINPUTS``: int16 image, the number of inputs coadded into each pixel (with the WCS);
- ``VISITS``: binary table, one row per input visit (the fields of
  :class:`~diaflow.coadd.TemplateInput`);

and primary-header cards ``TMPLVER`` (the version), ``TMPLNAME`` (patch name) and ``NVISITS``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import CorruptFileError
from ..image import read_exposure, write_exposure
from .template import Template, TemplateInput

__all__ = ["read_template", "write_template"]

_COLUMNS: dict[str, tuple[str, str]] = {
    # TemplateInput field: (FITS format, unit)
    "visit": ("K", ""),
    "detector": ("J", ""),
    "mjd_tai": ("D", "d"),
    "zero_point": ("D", "mag"),
    "fwhm_px": ("D", "pix"),
    "flux_scale": ("D", ""),
    "weight": ("D", ""),
    "rejected_fraction": ("D", ""),
}
_CARDS = ("TMPLVER", "TMPLNAME", "NVISITS")


def write_template(
    template: Template, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a template as multi-extension FITS, atomically.

    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    exposure = dataclasses.replace(
        template.exposure,
        extra={
            **template.exposure.extra,
            "TMPLVER": (template.version, "template version"),
            "TMPLNAME": (template.name, "sky patch"),
            "NVISITS": (len(template.inputs), "input visits"),
        },
    )
    tmp = path.with_name(path.name + ".part")
    write_exposure(exposure, tmp, overwrite=True)
    try:
        wcs_hdr = template.exposure.wcs.to_header(relax=True) if template.exposure.wcs else None
        n_hdu = fits.ImageHDU(template.n_inputs.astype(np.int16), name="NINPUTS")
        if wcs_hdr is not None:
            n_hdu.header.extend(wcs_hdr, update=True)
        columns = [
            fits.Column(
                name=name.upper(),
                format=fmt,
                unit=unit or None,
                array=np.array([getattr(i, name) for i in template.inputs]),
            )
            for name, (fmt, unit) in _COLUMNS.items()
        ]
        visits = fits.BinTableHDU.from_columns(columns, name="VISITS")
        with fits.open(tmp, mode="append") as hdul:
            hdul.append(n_hdu)
            hdul.append(visits)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_template(path: str | os.PathLike[str]) -> Template:
    """Read a template written by :func:`write_template`.

    Raises
    ------
    CorruptFileError
        If the file is not a readable exposure, or lacks ``NINPUTS``, ``VISITS`` or ``TMPLVER``.
    """
    path = Path(path)
    exposure = read_exposure(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            for needed in ("NINPUTS", "VISITS"):
                if needed not in names:
                    raise CorruptFileError(
                        "missing_extension",
                        f"{path}: no {needed} extension (found {names}); not a template file?",
                        path=str(path),
                    )
            n_inputs = np.asarray(hdul["NINPUTS"].data, dtype=np.int16)
            table = hdul["VISITS"].data
            inputs = tuple(
                TemplateInput(
                    **{
                        name: (int if fmt in ("K", "J") else float)(row[name.upper()])
                        for name, (fmt, _) in _COLUMNS.items()
                    }
                )
                for row in table
            )
    except (OSError, KeyError, ValueError) as exc:
        raise CorruptFileError(
            "unreadable_fits", f"{path}: cannot read template extensions ({exc})", path=str(path)
        ) from exc
    if "TMPLVER" not in exposure.extra:
        raise CorruptFileError(
            "missing_header",
            f"{path}: primary header lacks TMPLVER; not a template file?",
            path=str(path),
        )
    version = str(exposure.extra["TMPLVER"])
    name = str(exposure.extra.get("TMPLNAME", ""))
    extra = {k: v for k, v in exposure.extra.items() if k not in _CARDS}
    exposure = dataclasses.replace(exposure, extra=extra)
    return Template(exposure=exposure, inputs=inputs, n_inputs=n_inputs, version=version, name=name)
