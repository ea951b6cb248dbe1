"""Benchmark the Level 1 database: diaflow's backends against Rubin's APDB (``ApdbSql``).

One deterministic workload is run through each database from empty:

* **survey**: one-detector visits (a cone of radius 0.15 deg) centred uniformly on a 2 x 2 deg
  field at Dec -30, one visit a day, bands drawn at random: every place is revisited about 6.5
  times a year, so after ~365 visits the 12-month history of a cone stops growing;
* **per visit** about 1045 DiaSources: ~90 % re-detect true variable sources (about 1050 in each
  cone, each found with probability 0.9), the rest are spurious one-off detections that start new
  DiaObjects; every touched DiaObject gets a new version with recomputed per-band summaries;
  forced photometry of every DiaObject in the cone detected in the last 365.25 days (at most
  2000 per visit);
* **columns**: the DiaSource and DiaForcedSource columns diaflow's measurement stage fills
  (``measure.schema``) plus ``diaObjectId``, and the DiaObject summaries of the issue
  (``OBJECT_COLUMNS``), all with APDB names and types and every value filled; columns of the
  APDB tables outside these stay NULL on both sides.

Each database runs in a fresh process and takes its rows from the same generator (seeded: both
sides get identical rows, checked by a digest). Before each *probe* visit the process reads the
visit's cone (latest DiaObjects, DiaSources of the last 12 months, DiaForcedSources of the last
12 months), then stores the visit; both sides return the same rows (counted). The probes of a
checkpoint are the ``PROBES`` visits stored after the database holds that many visits (10, 100,
300, 1000 by default); figures are their medians. Other visits are only stored.

``ApdbSql`` (``lsst-dax-apdb``, its SQL backend) runs in ``.venv-apdb`` (``make apdb``) through
``benchmarks/peer_apdb.py``; diaflow through ``diaflow.l1db.open_l1db``. Both use SQLite files in
a temporary folder and PostgreSQL at ``DIAFLOW_BENCH_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``), each under schema names of its own, dropped at
the end.

Run it as ``diaflow bench l1db [--quick] [--json]`` or ``python benchmarks/bench_l1db.py
[--quick] [--backends sqlite,postgresql] [--sides diaflow,ApdbSql] [--checkpoints 10,100]``.
``--quick``: checkpoints 10, 30 and 60 on both backends, about 4 minutes.

This module imports only numpy and pandas at the top: ``peer_apdb.py`` reuses its workload and
driver inside ``.venv-apdb``, where diaflow is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, environment

APDB_PYTHON = REPO / ".venv-apdb" / "bin" / "python"
PG_URL = os.environ.get("DIAFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
PROBES = 5
"""Visits measured at each checkpoint."""
BANDS = ("u", "g", "r", "i", "z", "y")
BAND_WEIGHTS = (0.07, 0.1, 0.22, 0.22, 0.2, 0.19)
DAYS_PER_YEAR = 365.25

# Layout of diaflow's 64-bit ids (l1db.ids) at generation 0: visit, detector, index.
_VISIT_SHIFT, _DETECTOR_SHIFT = 22, 14


# ---- the workload -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Workload:
    """A survey of one-detector visits over one field; every number is what one visit sees."""

    n_visits: int
    """Visits to generate, in time order."""
    seed: int = 20261125
    ra_deg: float = 60.0
    """Field centre (ICRS degrees)."""
    dec_deg: float = -30.0
    half_width_deg: float = 1.0
    """Visit centres are uniform in a square of this half-width (on the sky) around the centre."""
    radius_deg: float = 0.15
    """Radius of a visit's cone: the detector footprint, and the region each read asks for."""
    true_per_cone: float = 1050.0
    """Expected true variable sources in one cone (sets their density on the sky)."""
    detect_probability: float = 0.9
    """Chance that a visit detects a true source in its cone."""
    spurious_per_visit: float = 100.0
    """Mean number of one-off detections per visit, each starting a new DiaObject."""
    visits_per_day: float = 1.0
    start_mjd: float = 61000.0
    """MJD (TAI) of the first visit."""
    forced_days: float = DAYS_PER_YEAR
    """Forced photometry covers DiaObjects detected within this many days."""
    max_forced: int = 2000
    """At most this many forced measurements per visit (a random subset beyond)."""
    n_detectors: int = 189


@dataclass
class VisitBatch:
    """What one visit reads and writes."""

    visit: int
    detector: int
    band: str
    mjd: float
    ra: float
    dec: float
    radius: float
    dia_sources: pd.DataFrame
    dia_objects: pd.DataFrame
    dia_forced_sources: pd.DataFrame


def _pack(visit: int, detector: int, index: np.ndarray) -> np.ndarray:
    return (np.int64(visit) << _VISIT_SHIFT) | (np.int64(detector) << _DETECTOR_SHIFT) | index


def in_cone(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float, radius: float) -> np.ndarray:
    """Which positions lie within ``radius`` of (``ra0``, ``dec0``); all in degrees."""
    r0, d0 = math.radians(ra0), math.radians(dec0)
    r, d = np.radians(ra), np.radians(dec)
    cos_sep = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(r - r0)
    return cos_sep >= math.cos(math.radians(radius))


class _Sky:
    """Every DiaObject the survey can make (true sources and spurious ones) and its summaries.

    Index ``i`` is one object; ``obj_id[i] == 0`` until its first detection. A grid of cells
    finds the objects near a cone without scanning them all.
    """

    _STATS = ("n", "sum", "sumsq", "min", "max", "errsum", "slope", "last_flux", "last_t")

    def __init__(self, w: Workload, rng: np.random.Generator) -> None:
        self.w = w
        self.cos_dec = math.cos(math.radians(w.dec_deg))
        margin = w.half_width_deg + w.radius_deg
        area = (2 * margin) ** 2
        n_true = int(rng.poisson(w.true_per_cone / (math.pi * w.radius_deg**2) * area))
        # Room for every spurious object the survey can make (Poisson counts, generous margin).
        cap = n_true + int(1.2 * w.n_visits * w.spurious_per_visit) + 1000
        self.cap, self.size, self.n_true = cap, n_true, n_true
        self.ra = np.zeros(cap)
        self.dec = np.zeros(cap)
        self.ra[:n_true] = w.ra_deg + rng.uniform(-margin, margin, n_true) / self.cos_dec
        self.dec[:n_true] = w.dec_deg + rng.uniform(-margin, margin, n_true)
        # Difference-image flux scale of each source (nJy): variability amplitude.
        self.amp = np.zeros(cap, dtype=np.float32)
        self.amp[:n_true] = rng.lognormal(math.log(1500.0), 0.8, n_true)
        self.obj_id = np.zeros(cap, dtype=np.int64)
        self.nsrc = np.zeros(cap, dtype=np.int32)
        self.first = np.full(cap, np.nan)
        self.last = np.full(cap, np.nan)
        self.sum_ra = np.zeros(cap)
        self.sum_dec = np.zeros(cap)
        self.band_stats = {s: np.zeros((len(BANDS), cap)) for s in self._STATS}
        self.band_stats["min"][:] = np.inf
        self.band_stats["max"][:] = -np.inf
        self.band_stats["last_t"][:] = np.nan
        self.cell = 2 * w.radius_deg
        self.cells: dict[tuple[int, int], list[np.ndarray]] = {}
        self._index(np.arange(n_true))

    def _cell_of(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx = np.floor((ra - self.w.ra_deg) * self.cos_dec / self.cell).astype(np.int64)
        cy = np.floor((dec - self.w.dec_deg) / self.cell).astype(np.int64)
        return cx, cy

    def _index(self, idx: np.ndarray) -> None:
        if idx.size == 0:
            return
        cx, cy = self._cell_of(self.ra[idx], self.dec[idx])
        uniq, inverse = np.unique(np.stack([cx, cy], axis=1), axis=0, return_inverse=True)
        inverse = inverse.ravel()
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        for (x, y), chunk in zip(uniq, np.split(idx[order], bounds), strict=True):
            chunks = self.cells.setdefault((int(x), int(y)), [])
            chunks.append(chunk)
            if len(chunks) > 32:
                chunks[:] = [np.concatenate(chunks)]

    def near(self, ra: float, dec: float, radius: float) -> np.ndarray:
        """Indices of objects within ``radius`` of a position, ascending."""
        cx, cy = self._cell_of(np.array([ra]), np.array([dec]))
        reach = math.ceil(radius / self.cell) + 1
        parts = [
            chunk
            for dx in range(-reach, reach + 1)
            for dy in range(-reach, reach + 1)
            for chunk in self.cells.get((int(cx[0]) + dx, int(cy[0]) + dy), [])
        ]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        idx = np.sort(np.concatenate(parts))
        return idx[in_cone(self.ra[idx], self.dec[idx], ra, dec, radius)]

    def add(self, ra: np.ndarray, dec: np.ndarray, amp: np.ndarray) -> np.ndarray:
        """Append new (spurious) objects; returns their indices."""
        idx = np.arange(self.size, self.size + len(ra))
        if idx.size and idx[-1] >= self.cap:
            raise RuntimeError("workload capacity exceeded")
        self.ra[idx], self.dec[idx], self.amp[idx] = ra, dec, amp
        self.size += len(ra)
        self._index(idx)
        return idx


def _fill(
    columns: dict[str, str], n: int, rng: np.random.Generator, known: dict[str, Any]
) -> pd.DataFrame:
    """A table of ``columns``: the ``known`` values, plausible random values everywhere else."""
    data: dict[str, Any] = {}
    floats = [c for c, t in columns.items() if c not in known and t.startswith("float")]
    noise = rng.standard_normal((len(floats), n)).astype(np.float32)
    for row, name in enumerate(floats):
        data[name] = noise[row]
    for name, dtype in columns.items():
        if name in known:
            value = known[name]
            data[name] = (
                np.full(n, value, dtype=object if dtype == "object" else dtype)
                if np.isscalar(value) or value is None
                else np.asarray(value).astype(dtype, copy=False)
            )
        elif name in data:
            continue
        elif dtype == "bool":
            data[name] = rng.random(n) < 0.01
        elif dtype.startswith("int"):
            data[name] = rng.integers(1, 50, n).astype(dtype)
        else:
            data[name] = np.full(n, "v1", dtype=object)
    return pd.DataFrame({name: data[name] for name in columns})


def _object_table(
    sky: _Sky, idx: np.ndarray, mjd: float, columns: dict[str, str], rng: np.random.Generator
) -> pd.DataFrame:
    """New versions of the objects ``idx`` from their running summaries."""
    st = sky.band_stats
    n = np.maximum(sky.nsrc[idx], 1)
    known: dict[str, Any] = {
        "diaObjectId": sky.obj_id[idx],
        "validityStartMjdTai": mjd,
        "ra": sky.sum_ra[idx] / n,
        "dec": sky.sum_dec[idx] / n,
        "raErr": (0.05 / 3600 / np.sqrt(n)).astype(np.float32),
        "decErr": (0.05 / 3600 / np.sqrt(n)).astype(np.float32),
        "ra_dec_Cov": np.zeros(len(idx), dtype=np.float32),
        "firstDiaSourceMjdTai": sky.first[idx],
        "lastDiaSourceMjdTai": sky.last[idx],
        "nDiaSources": sky.nsrc[idx],
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for b, band in enumerate(BANDS):
            nb = st["n"][b, idx]
            mean = st["sum"][b, idx] / nb
            var = st["sumsq"][b, idx] / nb - mean**2
            known[f"{band}_psfFluxNdata"] = nb.astype(np.int32)
            known[f"{band}_psfFluxMean"] = mean
            known[f"{band}_psfFluxMeanErr"] = st["errsum"][b, idx] / nb / np.sqrt(nb)
            known[f"{band}_psfFluxSigma"] = np.where(nb > 1, np.sqrt(np.maximum(var, 0)), np.nan)
            known[f"{band}_psfFluxMin"] = np.where(nb > 0, st["min"][b, idx], np.nan)
            known[f"{band}_psfFluxMax"] = np.where(nb > 0, st["max"][b, idx], np.nan)
            known[f"{band}_psfFluxMaxSlope"] = np.where(nb > 1, st["slope"][b, idx], np.nan)
            known[f"{band}_psfFluxErrMean"] = st["errsum"][b, idx] / nb
    for name, dtype in columns.items():
        if name not in known and dtype.startswith("float"):
            known[name] = np.nan  # summaries diaflow does not compute stay NULL on both sides
    return _fill(columns, len(idx), rng, known)


def generate(
    w: Workload,
    *,
    source_columns: dict[str, str],
    object_columns: dict[str, str],
    forced_columns: dict[str, str],
) -> Iterator[VisitBatch]:
    """The survey's visits in time order: the rows each one stores (deterministic in ``w``)."""
    rng = np.random.default_rng(w.seed)
    sky = _Sky(w, rng)
    for i in range(w.n_visits):
        visit, detector = i + 1, i % w.n_detectors
        mjd = w.start_mjd + i / w.visits_per_day + rng.uniform(0, 0.1)
        b = int(rng.choice(len(BANDS), p=BAND_WEIGHTS))
        band = BANDS[b]
        ra0 = w.ra_deg + rng.uniform(-w.half_width_deg, w.half_width_deg) / sky.cos_dec
        dec0 = w.dec_deg + rng.uniform(-w.half_width_deg, w.half_width_deg)
        r = w.radius_deg

        near = sky.near(ra0, dec0, r)
        true = near[(near < sky.n_true) & (rng.random(near.size) < w.detect_probability)]
        n_spur = int(rng.poisson(w.spurious_per_visit))
        rho = r * np.sqrt(rng.random(n_spur))
        phi = rng.uniform(0, 2 * np.pi, n_spur)
        s_dec = dec0 + rho * np.sin(phi)
        s_ra = ra0 + rho * np.cos(phi) / np.cos(np.radians(s_dec))
        keep = in_cone(s_ra, s_dec, ra0, dec0, r)
        spur = sky.add(s_ra[keep], s_dec[keep], np.full(int(keep.sum()), 800.0, np.float32))
        det = np.concatenate([true, spur])
        n = det.size
        src_ids = _pack(visit, detector, np.arange(n, dtype=np.int64))
        new = sky.obj_id[det] == 0
        sky.obj_id[det[new]] = src_ids[new]

        jitter = 0.05 / 3600
        ra = sky.ra[det] + rng.normal(0, jitter, n) / math.cos(math.radians(dec0))
        dec = sky.dec[det] + rng.normal(0, jitter, n)
        err = rng.uniform(150.0, 350.0, n).astype(np.float32)
        flux = (sky.amp[det] * rng.choice([-1.0, 1.0], n, p=[0.2, 0.8])).astype(np.float32)
        flux += (err * rng.standard_normal(n)).astype(np.float32)
        sources = _fill(
            source_columns,
            n,
            rng,
            {
                "diaSourceId": src_ids,
                "visit": visit,
                "detector": detector,
                "band": band,
                "diaObjectId": sky.obj_id[det],
                "midpointMjdTai": mjd,
                "exposureTime": 30.0,
                "timeProcessedMjdTai": mjd + 60.0 / 86400,
                "ra": ra,
                "dec": dec,
                "raErr": np.full(n, jitter, np.float32),
                "decErr": np.full(n, jitter, np.float32),
                "x": rng.uniform(0, 4072, n).astype(np.float32),
                "y": rng.uniform(0, 4000, n).astype(np.float32),
                "psfFlux": flux,
                "psfFluxErr": err,
                "snr": np.abs(flux) / err,
                "isNegative": flux < 0,
                "reliability": rng.random(n).astype(np.float32),
                "reliabilityVersion": "bench-1",
            },
        )

        # Update the running summaries of every detected object, then emit its new version.
        st = sky.band_stats
        sky.nsrc[det] += 1
        sky.first[det] = np.where(np.isnan(sky.first[det]), mjd, sky.first[det])
        sky.last[det] = mjd
        sky.sum_ra[det] += ra
        sky.sum_dec[det] += dec
        f64 = flux.astype(np.float64)
        prev_t, prev_f = st["last_t"][b, det], st["last_flux"][b, det]
        slope = np.abs(f64 - prev_f) / np.maximum(mjd - prev_t, 1e-3)
        st["slope"][b, det] = np.where(
            np.isnan(prev_t), st["slope"][b, det], np.maximum(st["slope"][b, det], slope)
        )
        st["n"][b, det] += 1
        st["sum"][b, det] += f64
        st["sumsq"][b, det] += f64**2
        st["min"][b, det] = np.minimum(st["min"][b, det], f64)
        st["max"][b, det] = np.maximum(st["max"][b, det], f64)
        st["errsum"][b, det] += err
        st["last_flux"][b, det], st["last_t"][b, det] = f64, mjd
        objects = _object_table(sky, det, mjd, object_columns, rng)

        # Forced photometry of the cone's recently detected objects (this visit's included).
        cand = np.concatenate([near, spur])
        cand = cand[(sky.obj_id[cand] != 0) & (sky.last[cand] >= mjd - w.forced_days)]
        if cand.size > w.max_forced:
            cand = np.sort(rng.choice(cand, w.max_forced, replace=False))
        m = cand.size
        f_err = rng.uniform(150.0, 350.0, m).astype(np.float32)
        f_flux = (sky.amp[cand] * rng.standard_normal(m)).astype(np.float32)
        forced = _fill(
            forced_columns,
            m,
            rng,
            {
                "diaForcedSourceId": _pack(visit, detector, np.arange(n, n + m, dtype=np.int64)),
                "diaObjectId": sky.obj_id[cand],
                "visit": visit,
                "detector": detector,
                "band": band,
                "midpointMjdTai": mjd,
                "timeProcessedMjdTai": mjd + 60.0 / 86400,
                "ra": sky.sum_ra[cand] / np.maximum(sky.nsrc[cand], 1),
                "dec": sky.sum_dec[cand] / np.maximum(sky.nsrc[cand], 1),
                "psfFlux": f_flux,
                "psfFluxErr": f_err,
                "scienceFlux": f_flux + np.float32(5000.0),
                "scienceFluxErr": f_err * np.float32(1.2),
            },
        )
        yield VisitBatch(
            visit=visit,
            detector=detector,
            band=band,
            mjd=mjd,
            ra=ra0,
            dec=dec0,
            radius=r,
            dia_sources=sources,
            dia_objects=objects,
            dia_forced_sources=forced,
        )


# ---- columns ----------------------------------------------------------------------------------

_SUMMARY = {
    "psfFluxMean": "float32",
    "psfFluxMeanErr": "float32",
    "psfFluxSigma": "float32",
    "psfFluxNdata": "int32",
    "psfFluxMin": "float32",
    "psfFluxMax": "float32",
    "psfFluxMaxSlope": "float32",
    "psfFluxErrMean": "float32",
}
OBJECT_COLUMNS: dict[str, str] = {
    "diaObjectId": "int64",
    "validityStartMjdTai": "float64",
    "ra": "float64",
    "raErr": "float32",
    "dec": "float64",
    "decErr": "float32",
    "ra_dec_Cov": "float32",
    **{f"{b}_{name}": t for b in BANDS for name, t in _SUMMARY.items()},
    "firstDiaSourceMjdTai": "float64",
    "lastDiaSourceMjdTai": "float64",
    "nDiaSources": "int32",
}
"""The DiaObject summaries of the issue (mean position; per band PSF-flux mean, error, sigma,
count, min, max, max slope, mean error; first/last times; count), with APDB names and types."""


def columns() -> dict[str, dict[str, str]]:
    """The columns both databases are given: what diaflow's stages produce, in APDB names.

    Needs diaflow (``.venv``); the peer receives the result in its spec file.
    """
    from diaflow.measure.schema import DIA_FORCED_SOURCE_COLUMNS, DIA_SOURCE_COLUMNS

    source = dict(DIA_SOURCE_COLUMNS)
    source["diaObjectId"] = "int64"
    return {
        "source": source,
        "object": dict(OBJECT_COLUMNS),
        "forced": dict(DIA_FORCED_SOURCE_COLUMNS),
    }


# ---- the driver shared by both sides ----------------------------------------------------------


class Database(Protocol):
    """What the driver needs from a database under test."""

    def read(self, batch: VisitBatch) -> tuple[int, int, int]:
        """Read the batch's cone: rows of DiaObject, DiaSource and DiaForcedSource returned."""

    def store(self, batch: VisitBatch) -> None:
        """Store one visit in one transaction."""

    def close(self) -> None:
        """Release the database."""


@dataclass
class _Probe:
    read_s: list[float] = field(default_factory=list)
    store_s: list[float] = field(default_factory=list)
    rows: list[tuple[int, int, int]] = field(default_factory=list)
    dia_sources_stored: int = 0
    forced_stored: int = 0


def _digest_update(digest: Any, batch: VisitBatch) -> None:
    for frame, cols in (
        (batch.dia_sources, ["diaSourceId", "diaObjectId", "psfFlux", "ra"]),
        (batch.dia_objects, ["diaObjectId", "nDiaSources", "ra"]),
        (batch.dia_forced_sources, ["diaForcedSourceId", "diaObjectId", "psfFlux"]),
    ):
        for col in cols:
            digest.update(np.ascontiguousarray(frame[col].to_numpy()).tobytes())


def drive(
    db: Database,
    workload: Workload,
    checkpoints: Sequence[int],
    cols: dict[str, dict[str, str]],
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the workload through ``db``; time reads and stores of the probe visits.

    The probes of checkpoint ``c`` are visits ``c .. c + PROBES - 1`` (0-based), so the database
    holds ``c`` visits when the first of them is read. Every other visit is only stored (its
    store time counts in ``store_total_s``).
    """
    owner = {c + k: c for c in checkpoints for k in range(PROBES)}
    probes = {c: _Probe() for c in checkpoints}
    digest = hashlib.sha256()
    n_src = n_forced = 0
    gen_s = store_total = 0.0
    t_start = time.perf_counter()
    t_gen = time.perf_counter()
    batches = generate(
        workload,
        source_columns=cols["source"],
        object_columns=cols["object"],
        forced_columns=cols["forced"],
    )
    stored, error = 0, None
    try:
        for i, batch in enumerate(batches):
            gen_s += time.perf_counter() - t_gen
            _digest_update(digest, batch)
            c = owner.get(i)
            if c is not None:
                t0 = time.perf_counter()
                rows = db.read(batch)
                probes[c].read_s.append(time.perf_counter() - t0)
                probes[c].rows.append(rows)
                if i == c:
                    probes[c].dia_sources_stored, probes[c].forced_stored = n_src, n_forced
            t0 = time.perf_counter()
            db.store(batch)
            dt = time.perf_counter() - t0
            store_total += dt
            stored += 1
            if c is not None:
                probes[c].store_s.append(dt)
            n_src += len(batch.dia_sources)
            n_forced += len(batch.dia_forced_sources)
            if log is not None and (i + 1) % 100 == 0:
                log(f"{i + 1} visits, {n_src} DiaSources, {time.perf_counter() - t_start:.0f} s")
            t_gen = time.perf_counter()
    except Exception as exc:  # keep the checkpoints measured so far, and say why it stopped
        error = f"stopped after {stored} visits: {type(exc).__name__}: {exc}"
        if log is not None:
            log(error)
    with contextlib.suppress(Exception):
        db.close()
    out: dict[str, Any] = {"error": error} if error else {}
    return out | {
        "checkpoints": [
            {
                "visits": c,
                "dia_sources_stored": p.dia_sources_stored,
                "dia_forced_sources_stored": p.forced_stored,
                "read_s": statistics.median(p.read_s),
                "store_s": statistics.median(p.store_s),
                "rows_objects": statistics.median(r[0] for r in p.rows),
                "rows_sources": statistics.median(r[1] for r in p.rows),
                "rows_forced": statistics.median(r[2] for r in p.rows),
            }
            for c, p in probes.items()
            if p.read_s and p.store_s
        ],
        "visits": stored,
        "retries": getattr(db, "retries", 0),
        "dia_sources": n_src,
        "dia_forced_sources": n_forced,
        "store_total_s": store_total,
        "generate_s": gen_s,
        "wall_s": time.perf_counter() - t_start,
        "digest": digest.hexdigest()[:16],
    }


def load_spec(path: Path) -> tuple[Workload, list[int], dict[str, dict[str, str]], dict[str, Any]]:
    """Workload, checkpoints, columns and backend options from a spec file (JSON)."""
    spec = json.loads(path.read_text())
    return Workload(**spec["workload"]), spec["checkpoints"], spec["columns"], spec["backend"]


def write_spec(
    path: Path,
    workload: Workload,
    checkpoints: Sequence[int],
    cols: dict[str, dict[str, str]],
    backend: dict[str, Any],
) -> None:
    """The inverse of :func:`load_spec`."""
    spec = {
        "workload": dataclasses.asdict(workload),
        "checkpoints": list(checkpoints),
        "columns": cols,
        "backend": backend,
    }
    path.write_text(json.dumps(spec))


# ---- diaflow's side ---------------------------------------------------------------------------


class DiaflowSide:
    """The driver's view of one diaflow L1 database (one generation, opened by ``open_l1db``).

    A call that finds PostgreSQL unavailable (a test on a shared server terminating diaflow's
    connections, say) reopens the database and is made again, up to ``RETRIES`` times; the
    retries are counted in the figures.
    """

    RETRIES = 5

    def __init__(self, backend: dict[str, Any]) -> None:
        from diaflow.l1db import Region, VisitProducts, VisitRecord, open_l1db

        self._region, self._products, self._record = Region, VisitProducts, VisitRecord
        self._open = lambda: open_l1db(_diaflow_config(backend))
        self.db = self._open()
        self.backend = backend
        self.retries = 0

    def _retrying(self, call: Callable[[], Any]) -> Any:
        from diaflow.errors import DatabaseUnavailableError

        for attempt in range(self.RETRIES + 1):
            try:
                return call()
            except DatabaseUnavailableError:
                if attempt == self.RETRIES:
                    raise
                self.retries += 1
                with contextlib.suppress(Exception):
                    self.db.close()
                time.sleep(1.0)
                self.db = self._open()
        return None

    def read(self, batch: VisitBatch) -> tuple[int, int, int]:
        region = self._region(batch.ra, batch.dec, batch.radius)

        def read() -> tuple[int, int, int]:
            objects = self.db.dia_objects(region)
            sources = self.db.dia_sources(region, batch.mjd, days=DAYS_PER_YEAR)
            forced = self.db.dia_forced_sources(region, batch.mjd, days=DAYS_PER_YEAR)
            return len(objects), len(sources), len(forced)

        return self._retrying(read)

    def store(self, batch: VisitBatch) -> None:
        from diaflow.errors import DuplicateVisitError

        record = self._record(
            visit=batch.visit,
            detector=batch.detector,
            band=batch.band,
            midpointMjdTai=batch.mjd,
            state="stored",
        )
        products = self._products(
            record=record,
            dia_sources=batch.dia_sources,
            dia_objects=batch.dia_objects,
            dia_forced_sources=batch.dia_forced_sources,
        )
        first = self.retries

        def store() -> None:
            try:
                self.db.store_visit(products)
            except DuplicateVisitError:
                if self.retries == first:
                    raise  # stored before this call: a real error
                # Committed just before the connection was lost: the visit is stored.

        self._retrying(store)

    def close(self) -> None:
        self.db.close()
        _drop_diaflow(self.backend)


def _diaflow_config(backend: dict[str, Any]) -> Any:
    from diaflow.l1db import L1DbConfig

    if backend["kind"] == "sqlite":
        return L1DbConfig(backend="sqlite", path=Path(backend["path"]))
    return L1DbConfig(backend="postgres", dsn=backend["url"], pg_prefix=backend["namespace"])


def _drop_diaflow(backend: dict[str, Any]) -> None:
    """Drop every PostgreSQL schema the run made (all start with its prefix)."""
    if backend["kind"] != "postgresql":
        return
    import psycopg

    with psycopg.connect(backend["url"], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
            (backend["namespace"],),
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def child(spec_path: Path) -> None:
    """Run the workload through diaflow in this process; print the figures as JSON."""
    workload, checkpoints, cols, backend = load_spec(spec_path)
    side = DiaflowSide(backend)
    try:
        figures = drive(side, workload, checkpoints, cols, log=_log("diaflow"))
    except BaseException:
        with contextlib.suppress(Exception):
            side.close()
        raise
    figures["peer"] = "diaflow"
    figures["backend"] = backend["kind"]
    print(json.dumps(figures))
    sys.stdout.flush()


def _log(who: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{who}] {message}", file=sys.stderr, flush=True)

    return log


# ---- the benchmark ----------------------------------------------------------------------------


def _run_side(side: str, spec: Path) -> dict[str, Any]:
    """One side in a fresh process: diaflow in this interpreter, ApdbSql in ``.venv-apdb``."""
    if side == "ApdbSql":
        if not APDB_PYTHON.exists():
            return {"error": "no .venv-apdb (run `make apdb`)"}
        cmd = [str(APDB_PYTHON), str(REPO / "benchmarks" / "peer_apdb.py"), str(spec)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"{side} exited with status {done.returncode} (its stderr is above)"}
    return json.loads(lines[-1])


def _pg_available(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``, else why not."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means: skip PostgreSQL, say why
        return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return None


def _rows(cp: dict[str, Any]) -> float:
    return cp["rows_objects"] + cp["rows_sources"] + cp["rows_forced"]


def _summary(backend: str, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flat figures of one backend: per checkpoint times, rows, ratios; growth; totals."""
    out: dict[str, Any] = {}
    for side, res in results.items():
        key = f"{backend}.{side}"
        if "error" in res:
            out[f"{key}.error"] = res["error"]
        if "checkpoints" not in res:
            continue
        out[f"{key}.visits"] = res["visits"]
        out[f"{key}.retries"] = res["retries"]
        out[f"{key}.dia_sources"] = res["dia_sources"]
        out[f"{key}.dia_forced_sources"] = res["dia_forced_sources"]
        out[f"{key}.store_mean_s"] = res["store_total_s"] / max(res["visits"], 1)
        out[f"{key}.wall_s"] = res["wall_s"]
        out[f"{key}.digest"] = res["digest"]
        cps = res["checkpoints"]
        for cp in cps:
            at = f"{key}@{cp['visits']}"
            out[f"{at}.dia_sources_stored"] = cp["dia_sources_stored"]
            out[f"{at}.read_s"] = cp["read_s"]
            out[f"{at}.store_s"] = cp["store_s"]
            out[f"{at}.rows"] = (
                f"{cp['rows_objects']:.0f}/{cp['rows_sources']:.0f}/{cp['rows_forced']:.0f}"
            )
            rows = _rows(cp)
            out[f"{at}.read_us_per_row"] = 1e6 * cp["read_s"] / rows if rows else float("nan")
        if len(cps) > 1:
            first, last = cps[0], cps[-1]
            out[f"{key}.read_growth"] = last["read_s"] / first["read_s"]
            out[f"{key}.store_growth"] = last["store_s"] / first["store_s"]
            # Reads return more rows as the survey fills the sky; per row, growth is the index's.
            full = [cp for cp in cps if _rows(cp)]
            if len(full) > 1:
                per_row = [cp["read_s"] / _rows(cp) for cp in (full[0], full[-1])]
                out[f"{key}.read_per_row_growth"] = per_row[1] / per_row[0]
                out[f"{key}.read_per_row_growth_from"] = full[0]["visits"]
    ours, peer = results.get("diaflow", {}), results.get("ApdbSql", {})
    if "checkpoints" in ours and "checkpoints" in peer:
        out[f"{backend}.same_workload"] = ours["digest"] == peer["digest"]
        theirs = {cp["visits"]: cp for cp in peer["checkpoints"]}
        for cp in ours["checkpoints"]:
            other = theirs.get(cp["visits"])
            if other is None:
                continue
            at = f"{backend}.ratio@{cp['visits']}"
            out[f"{at}.read"] = other["read_s"] / cp["read_s"]
            out[f"{at}.store"] = other["store_s"] / cp["store_s"]
    return out


def run(
    quick: bool = False,
    *,
    backends: Sequence[str] = ("sqlite", "postgresql"),
    checkpoints: Sequence[int] | None = None,
    sides: Sequence[str] = ("diaflow", "ApdbSql"),
    dia_object_index: str = "last_object_table",
) -> dict[str, object]:
    """Run every side on every backend; return the flat figures (see the module docstring)."""
    if checkpoints is None:
        checkpoints = (10, 30, 60) if quick else (10, 100, 300, 1000)
    checkpoints = sorted(checkpoints)
    workload = Workload(n_visits=checkpoints[-1] + PROBES)
    cols = columns()
    figures: dict[str, object] = {
        "bench": "l1db",
        "visits": workload.n_visits,
        "checkpoints": ",".join(map(str, checkpoints)),
        "probes_per_checkpoint": PROBES,
        "apdb.dia_object_index": dia_object_index,
    }
    t_start = time.perf_counter()
    tag = f"{os.getpid()}_{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="diaflow-bench-l1db-") as name:
        tmp = Path(name)
        for backend in backends:
            if backend == "postgresql":
                why = _pg_available(PG_URL)
                if why is not None:
                    figures["postgresql.skipped"] = why
                    continue
            results: dict[str, dict[str, Any]] = {}
            for side in sides:
                opts: dict[str, Any] = {"kind": backend, "dia_object_index": dia_object_index}
                if backend == "sqlite":
                    opts["path"] = str(tmp / side)
                else:
                    # ApdbSql through psycopg2, its documented driver ("postgres" extra).
                    driver = "postgresql+psycopg2" if side == "ApdbSql" else "postgresql"
                    opts["url"] = PG_URL.replace("postgresql", driver, 1)
                    opts["namespace"] = f"bench_{side.lower()}_{tag}_"
                spec = tmp / f"{backend}_{side}.json"
                write_spec(spec, workload, checkpoints, cols, opts)
                results[side] = _run_side(side, spec)
                # Other jobs share the machine: keep the load it ran under beside its figures.
                figures[f"{backend}.{side}.load_avg_5min_after"] = round(os.getloadavg()[1], 2)
                shutil.rmtree(tmp / side, ignore_errors=True)
            figures.update(_summary(backend, results))
    figures["bench_wall_s"] = time.perf_counter() - t_start
    figures.update(environment())
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sides", default="diaflow,ApdbSql")
    parser.add_argument(
        "--checkpoints", help="comma-separated database sizes in visits (default 10,100,300,1000)"
    )
    parser.add_argument(
        "--apdb-index",
        default="last_object_table",
        choices=["baseline", "pix_id_iov", "last_object_table"],
        help="ApdbSql's DiaObject layout (dia_object_index)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return
    figures = run(
        quick=args.quick,
        backends=args.backends.split(","),
        sides=args.sides.split(","),
        checkpoints=[int(c) for c in args.checkpoints.split(",")] if args.checkpoints else None,
        dia_object_index=args.apdb_index,
    )
    print(json.dumps(figures, indent=None if args.json else 2, default=float))


if __name__ == "__main__":
    main()
