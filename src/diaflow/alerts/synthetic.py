"""Synthetic inputs of alert building, for tests and benchmarks: one visit with a year of history.

The tables have the APDB columns the pipeline produces (``measure.DIA_SOURCE_COLUMNS``,
``associate.DIA_OBJECT_COLUMNS``, ...) with plausible values and null patterns: most sources lack
a dipole and a trail fit (those columns NaN together), a few lack a shape; integers span several
varint lengths. The three exposures share one TAN-SIP grid. Nothing here is physics: it exists to
exercise packing and encoding at a realistic size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..associate.schema import DIA_OBJECT_COLUMNS, SS_SOURCE_COLUMNS
from ..image import Exposure, VisitInfo, make_detector_wcs
from ..l1db.ids import make_ids
from ..measure.schema import DIA_FORCED_SOURCE_COLUMNS, DIA_SOURCE_COLUMNS, new_columns

__all__ = ["SyntheticVisit", "synthetic_visit"]

_DIPOLE = ("dipole",)
_TRAIL = ("trail",)
_SHAPE = ("ixx", "iyy", "ixy", "ixxPSF", "iyyPSF", "ixyPSF")


@dataclass(frozen=True)
class SyntheticVisit:
    """Everything :func:`~diaflow.alerts.build_alert_payloads` takes, for one visit-detector."""

    dia_sources: pd.DataFrame
    dia_objects: pd.DataFrame
    prv_dia_sources: pd.DataFrame
    prv_dia_forced_sources: pd.DataFrame
    ss_sources: pd.DataFrame
    science: Exposure
    template: Exposure
    difference: Exposure

    def inputs(self) -> dict[str, object]:
        """Keyword arguments of ``build_alerts``/``build_alert_payloads``."""
        return {
            "dia_objects": self.dia_objects,
            "prv_dia_sources": self.prv_dia_sources,
            "prv_dia_forced_sources": self.prv_dia_forced_sources,
            "science": self.science,
            "template": self.template,
            "difference": self.difference,
            "ss_sources": self.ss_sources,
        }


def _exposure(
    rng: np.random.Generator, info: VisitInfo, shape: tuple[int, int], sky: float
) -> Exposure:
    wcs = make_detector_wcs(
        boresight_ra_deg=info.boresight_ra_deg,
        boresight_dec_deg=info.boresight_dec_deg,
        rotation_deg=info.rotation_deg,
        pixel_scale_arcsec=0.2,
        boresight_pixel=(-1500.5, 2200.25),
        distortion_k=2e-11,
        shape=shape,
    )
    image = rng.normal(0.0, np.sqrt(sky), shape).astype(np.float32)
    return Exposure(
        image=image,
        mask=(rng.random(shape) < 0.01).astype(np.int32) * 4,
        variance=np.full(shape, sky, dtype=np.float32),
        wcs=wcs,
        info=info,
        zero_point=info.zero_point_nominal + 0.1,
    )


def _sources(
    rng: np.random.Generator,
    n: int,
    *,
    visit: np.ndarray,
    detector: int,
    mjd: np.ndarray,
    ids: np.ndarray,
    shape: tuple[int, int],
) -> pd.DataFrame:
    cols = new_columns(DIA_SOURCE_COLUMNS, n)
    for name, dtype in DIA_SOURCE_COLUMNS.items():
        if dtype.startswith("float"):
            cols[name] = rng.normal(100.0, 30.0, n).astype(dtype)
        elif dtype == "bool":
            cols[name] = rng.random(n) < 0.05
        elif dtype.startswith("int"):
            cols[name] = rng.integers(1, 400, n).astype(dtype)
    cols.update(
        diaSourceId=ids,
        visit=visit,
        detector=np.full(n, detector, np.int16),
        band=rng.choice(np.array(["g", "r", "i"], dtype=object), n),
        midpointMjdTai=mjd,
        timeProcessedMjdTai=mjd + 0.01,
        ra=rng.uniform(150.0, 150.2, n),
        dec=rng.uniform(2.0, 2.2, n),
        x=rng.uniform(0.0, shape[1] - 1, n).astype(np.float32),
        y=rng.uniform(0.0, shape[0] - 1, n).astype(np.float32),
        reliabilityVersion=np.full(n, "rb-1.0", dtype=object),
    )
    frame = pd.DataFrame(cols)
    not_dipole = rng.random(n) > 0.1
    not_trail = rng.random(n) > 0.03
    no_shape = rng.random(n) < 0.03
    for name in frame.columns:
        if frame[name].dtype.kind != "f":
            continue
        if name.startswith(_DIPOLE):
            frame.loc[not_dipole, name] = np.nan
        elif name.startswith(_TRAIL):
            frame.loc[not_trail, name] = np.nan
        elif name in _SHAPE:
            frame.loc[no_shape, name] = np.nan
    return frame


def synthetic_visit(
    n_alerts: int = 100,
    *,
    n_prior_sources: int = 30,
    n_prior_forced: int = 60,
    n_sso: int = 0,
    shape: tuple[int, int] = (1024, 1024),
    seed: int = 0,
) -> SyntheticVisit:
    """One visit-detector whose ``n_alerts`` DiaSources each have a DiaObject with a year of
    history (``n_prior_sources`` DiaSources and ``n_prior_forced`` forced sources per object),
    plus ``n_sso`` more DiaSources attributed to SSObjects (with SSSource rows, no history)."""
    rng = np.random.default_rng(seed)
    visit, detector, mjd = 7_000_123, 42, 60_800.25
    info = VisitInfo(
        visit=visit,
        detector=detector,
        band="r",
        mjd_tai=mjd,
        exptime_s=30.0,
        boresight_ra_deg=150.1,
        boresight_dec_deg=2.1,
        rotation_deg=12.0,
        airmass=1.2,
        zero_point_nominal=28.5,
    )
    science = _exposure(rng, info, shape, 400.0)
    template = _exposure(rng, info, shape, 100.0)
    difference = _exposure(rng, info, shape, 500.0)
    n = n_alerts + n_sso
    ids = make_ids(1, visit, detector, n)
    src = _sources(
        rng,
        n,
        visit=np.full(n, visit),
        detector=detector,
        mjd=np.full(n, mjd),
        ids=ids,
        shape=shape,
    )
    object_ids = make_ids(1, 6_000_000, detector, n_alerts) + 17
    src["diaObjectId"] = pd.array(np.r_[object_ids, np.zeros(n_sso, np.int64)], dtype="Int64")
    src["ssObjectId"] = pd.array(
        np.r_[np.zeros(n_alerts, np.int64), rng.integers(1, 2**40, n_sso)], dtype="Int64"
    )
    src.loc[: n_alerts - 1, "ssObjectId"] = pd.NA
    if n_sso:
        src.loc[n_alerts:, "diaObjectId"] = pd.NA

    objects = pd.DataFrame(new_columns(DIA_OBJECT_COLUMNS, n_alerts))
    for name, dtype in DIA_OBJECT_COLUMNS.items():
        if dtype.startswith("float"):
            objects[name] = rng.normal(50.0, 10.0, n_alerts).astype(dtype)
        elif dtype.startswith("int"):
            objects[name] = rng.integers(0, 60, n_alerts).astype(dtype)
    objects["diaObjectId"] = object_ids
    objects["validityStartMjdTai"] = mjd
    objects["validityEndMjdTai"] = np.nan
    for band in "uzy":  # never observed in those bands
        for name in objects.columns:
            if name.startswith(f"{band}_") and objects[name].dtype.kind == "f":
                objects[name] = np.nan
            elif name.startswith(f"{band}_"):
                objects[name] = 0

    k = n_alerts * n_prior_sources
    owner = np.repeat(object_ids, n_prior_sources)
    prior_mjd = mjd - rng.uniform(1.0, 360.0, k)
    prior_visit = 6_000_000 + (mjd - prior_mjd).astype(np.int64) * 100
    prv = _sources(
        rng,
        k,
        visit=prior_visit,
        detector=detector,
        mjd=prior_mjd,
        ids=make_ids(1, 5_000_000, detector, 1)[0] + np.arange(k, dtype=np.int64) * 3,
        shape=shape,
    )
    prv["diaObjectId"] = pd.array(owner, dtype="Int64")
    prv["ssObjectId"] = pd.array(np.zeros(k, np.int64), dtype="Int64")
    prv.loc[:, "ssObjectId"] = pd.NA

    m = n_alerts * n_prior_forced
    forced = pd.DataFrame(new_columns(DIA_FORCED_SOURCE_COLUMNS, m))
    forced_mjd = mjd - rng.uniform(1.0, 360.0, m)
    forced["diaForcedSourceId"] = 9_000_000_000 + np.arange(m, dtype=np.int64) * 7
    forced["diaObjectId"] = np.repeat(object_ids, n_prior_forced)
    forced["visit"] = 6_000_000 + (mjd - forced_mjd).astype(np.int64) * 100
    forced["detector"] = np.int16(detector)
    forced["band"] = rng.choice(np.array(["g", "r", "i"], dtype=object), m)
    forced["midpointMjdTai"] = forced_mjd
    forced["timeProcessedMjdTai"] = forced_mjd + 0.01
    forced["ra"] = rng.uniform(150.0, 150.2, m)
    forced["dec"] = rng.uniform(2.0, 2.2, m)
    for name in ("psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr"):
        forced[name] = rng.normal(80.0, 20.0, m).astype(np.float32)

    ss = pd.DataFrame(new_columns(SS_SOURCE_COLUMNS, n_sso))
    for name, dtype in SS_SOURCE_COLUMNS.items():
        if dtype.startswith("float"):
            ss[name] = rng.normal(1.0, 0.1, n_sso).astype(dtype)
    ss["diaSourceId"] = ids[n_alerts:]
    ss["ssObjectId"] = src["ssObjectId"].to_numpy(dtype=np.int64, na_value=0)[n_alerts:]
    ss["designation"] = np.array([f"2026 A{i}" for i in range(n_sso)], dtype=object)
    ss["diaDistanceRank"] = np.int16(1)
    return SyntheticVisit(src, objects, prv, forced, ss, science, template, difference)
