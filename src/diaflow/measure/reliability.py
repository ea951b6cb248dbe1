"""Real/bogus score of DiaSources: boosted decision trees over measured quantities.

The score is the probability that a DiaSource is astrophysical (a point source or a trailed
moving object, of either sign) rather than an artifact (cosmic ray, leftover of a bad column,
misregistration dipole, piece of a satellite streak) or a noise peak. The features are computed
from the DiaSource columns alone (:func:`reliability_features`), so any table with those columns
can be scored. The model is a gradient-boosted ensemble of small regression trees trained on
simulated difference images (:mod:`diaflow.measure.train`), shipped as JSON (node arrays per
tree), evaluated here with numpy alone: no pickle, no dependence on the library that trained it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import BadInputError

__all__ = [
    "FEATURE_NAMES",
    "MODEL_VERSION",
    "evaluate_model",
    "load_model",
    "reliability",
    "reliability_features",
]

MODEL_FILE = "reliability_model.json"
"""The packaged model, next to this module."""
MODEL_FORMAT = "diaflow-gbt-1"

FEATURE_NAMES = (
    "log_snr",
    "log_psf_chi2_per_pixel",
    "log_size_ratio",
    "ellipticity",
    "ap_to_psf_flux",
    "psf_to_detection_snr",
    "is_negative",
    "dipole_fit_attempted",
    "is_dipole",
    "dipole_asymmetry",
    "dipole_length_to_psf",
    "trail_length_to_psf",
    "log_bbox_to_fit_radius",
    "flag_bad",
    "flag_cr",
    "flag_saturated",
    "flag_streak",
    "flag_interpolated",
    "flag_edge",
    "flag_suspect",
    "centroid_flag",
    "shape_flag",
)
"""Features, in the model's order (see :func:`reliability_features`)."""

_MISSING = -9.0


def _col(table: pd.DataFrame, name: str) -> NDArray[np.float64]:
    return table[name].to_numpy(dtype=np.float64, na_value=np.nan)


def reliability_features(table: pd.DataFrame) -> NDArray[np.float64]:
    """Feature matrix (n, len(FEATURE_NAMES)) of a DiaSource table.

    Sizes are relative to the PSF (``sqrt(ixxPSF + iyyPSF)``), so the features do not depend on
    the seeing or the pixel scale. Missing values (a model not fitted, moments that failed)
    become -9, a value no real feature takes.
    """
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise BadInputError(
            "missing_columns",
            f"reliability needs DiaSource columns {missing!r}; measure the sources first",
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        psf_size = np.sqrt(_col(table, "ixxPSF") + _col(table, "iyyPSF"))
        t = _col(table, "ixx") + _col(table, "iyy")
        e = np.hypot(_col(table, "ixx") - _col(table, "iyy"), 2 * _col(table, "ixy")) / t
        psf_flux, psf_err = _col(table, "psfFlux"), _col(table, "psfFluxErr")
        snr = _col(table, "snr")
        mean, diff = _col(table, "dipoleMeanFlux"), _col(table, "dipoleFluxDiff")
        # Moments are arcsec^2 and lengths arcsec, so their ratios to the PSF size are
        # unitless; the footprint size (pixels) is compared with the PSF-fit area (pixels).
        feats = [
            np.log10(np.abs(snr)),
            np.log10(_col(table, "psfChi2") / _col(table, "psfNdata")),
            np.log10(t / (psf_size**2)),
            e,
            np.clip(_col(table, "apFlux") / psf_flux, -5.0, 5.0),
            np.clip(np.abs(psf_flux / psf_err) / snr, 0.0, 5.0),
            _col(table, "isNegative"),
            _col(table, "dipoleFitAttempted"),
            _col(table, "isDipole"),
            np.clip(np.abs(diff) / np.abs(2 * mean), 0.0, 5.0),
            _col(table, "dipoleLength") / psf_size,
            np.where(np.isfinite(_col(table, "trailLength")), 1.0, 0.0)
            * np.nan_to_num(_col(table, "trailLength") / psf_size),
            np.log10(_col(table, "bboxSize") / np.sqrt(_col(table, "psfNdata"))),
            *(
                _col(table, f"pixelFlags_{f}")
                for f in ("bad", "cr", "saturated", "streak", "interpolated", "edge", "suspect")
            ),
            _col(table, "centroid_flag"),
            _col(table, "shape_flag"),
        ]
    x = np.stack(feats, axis=1) if len(table) else np.zeros((0, len(FEATURE_NAMES)))
    return np.where(np.isfinite(x), x, _MISSING)


_REQUIRED = (
    "snr", "psfFlux", "psfFluxErr", "psfChi2", "psfNdata", "apFlux", "ixx", "iyy", "ixy",
    "ixxPSF", "iyyPSF", "isNegative", "dipoleFitAttempted", "isDipole", "dipoleMeanFlux",
    "dipoleFluxDiff", "dipoleLength", "trailLength", "bboxSize", "pixelFlags_bad", "pixelFlags_cr",
    "pixelFlags_saturated", "pixelFlags_streak",
    "pixelFlags_interpolated", "pixelFlags_edge", "pixelFlags_suspect", "centroid_flag",
    "shape_flag",
)  # fmt: skip


@cache
def _packaged() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(MODEL_FILE).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def load_model(path: str | Path | None = None) -> dict[str, Any]:
    """The model as a dictionary: the packaged one, or the JSON file at ``path``."""
    model = _packaged() if path is None else json.loads(Path(path).read_text(encoding="utf-8"))
    if model.get("format") != MODEL_FORMAT:
        raise BadInputError(
            "bad_model",
            f"reliability model format {model.get('format')!r}; expected {MODEL_FORMAT!r}",
        )
    if tuple(model["features"]) != FEATURE_NAMES:
        raise BadInputError(
            "bad_model",
            f"reliability model features {model['features']!r} differ from this code's "
            f"{list(FEATURE_NAMES)!r}; retrain with python -m diaflow.measure.train",
        )
    return model


def evaluate_model(model: dict[str, Any], features: NDArray[np.float64]) -> NDArray[np.float64]:
    """Probabilities in [0, 1] from a boosted-tree model and a feature matrix.

    Each tree is walked for all rows at once (go left when ``x <= threshold``, with ``x``
    rounded to float32 as the training library does); the summed leaf values plus the prior
    log-odds pass through the logistic function.
    """
    x = np.asarray(features, dtype=np.float32).astype(np.float64)
    n = len(x)
    raw = np.full(n, float(model["init_log_odds"]))
    rows = np.arange(n)
    rate = float(model["learning_rate"])
    for tree in model["trees"]:
        left = np.asarray(tree["left"], dtype=np.int64)
        right = np.asarray(tree["right"], dtype=np.int64)
        feat = np.asarray(tree["feature"], dtype=np.int64)
        thr = np.asarray(tree["threshold"], dtype=np.float64)
        value = np.asarray(tree["value"], dtype=np.float64)
        node = np.zeros(n, dtype=np.int64)
        for _ in range(int(tree["depth"])):
            leaf = left[node] < 0
            go_left = x[rows, np.maximum(feat[node], 0)] <= thr[node]
            node = np.where(leaf, node, np.where(go_left, left[node], right[node]))
        raw += rate * value[node]
    return 1.0 / (1.0 + np.exp(-raw))


def reliability(table: pd.DataFrame, *, model: dict[str, Any] | None = None) -> NDArray[np.float64]:
    """Probability in [0, 1] that each DiaSource is real (the ``reliability`` column).

    Parameters
    ----------
    table
        DiaSource table from :func:`~diaflow.measure.measure_dia_sources`.
    model
        A model from :func:`load_model`; default: the packaged one (version
        :data:`MODEL_VERSION`).
    """
    return evaluate_model(model or load_model(), reliability_features(table))


def _version() -> str:
    try:
        return str(_packaged()["version"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return "none"


MODEL_VERSION = _version()
"""Version string of the packaged model (APDB ``reliabilityVersion``, at most 7 characters)."""
