"""Train the real/bogus model on simulated difference images, reproducibly from a seed.

Each training image is a :func:`~diaflow.measure.fakes.simulate_difference` with its own PSF
(Gaussian or sheared Moffat, FWHM 2.5-6 px), noise level and mix of real sources (point sources
of either sign, S/N 5-200; trailed sources 5-40 px) and artifacts (cosmic rays, misregistration
dipoles, leftovers of bad columns, satellite streaks). Every detection is labelled real when it
lies on an injected point or trail, bogus otherwise (artifacts and noise peaks). A
gradient-boosted tree ensemble (scikit-learn) is fitted to :func:`reliability_features` and
exported as plain JSON that :func:`~diaflow.measure.reliability.evaluate_model` reads.

Run ``python -m diaflow.measure.train --out src/diaflow/measure/reliability_model.json`` to
rebuild the packaged model (about a minute on one core).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..image import GaussianPsf, PsfModel
from .config import DiaSourceConfig, MeasureConfig
from .fakes import SyntheticDifference, moffat_psf, simulate_difference
from .measure import detect_and_measure
from .reliability import FEATURE_NAMES, MODEL_FORMAT, evaluate_model, reliability_features

__all__ = ["labelled_sources", "main", "roc_auc", "train_reliability_model"]

DEFAULT_SEED = 20261125
DEFAULT_IMAGES = 240
VERSION = "rb1.0"


def _random_psf(rng: np.random.Generator) -> PsfModel:
    fwhm = float(rng.uniform(2.5, 6.0))
    if rng.uniform() < 0.3:
        return GaussianPsf(fwhm / 2.3548, size=2 * math.ceil(2.5 * fwhm) + 1)
    return moffat_psf(
        fwhm,
        beta=float(rng.uniform(2.5, 4.5)),
        g1=float(rng.normal(0, 0.04)),
        g2=float(rng.normal(0, 0.04)),
        size=2 * math.ceil(3.5 * fwhm) + 1,
    )


def _simulate(rng: np.random.Generator, shape: tuple[int, int]) -> SyntheticDifference:
    counts = {
        "point": int(rng.integers(10, 30)),
        "trail": int(rng.integers(0, 5)),
        "dipole": int(rng.integers(0, 8)),
        "cosmic_ray": int(rng.integers(0, 16)),
        "bad_column": int(rng.uniform() < 0.5),
        "streak": int(rng.uniform() < 0.15),
    }
    return simulate_difference(
        shape,
        psf=_random_psf(rng),
        rng=rng,
        noise_sigma=float(rng.uniform(5.0, 30.0)),
        counts=counts,
        snr_range=(5.0, 200.0),
        spacing_px=45.0,
        masked_fraction=0.5,
        rotation_deg=float(rng.uniform(0, 360)),
    )


def _segment_distance(
    px: NDArray[np.float64], py: NDArray[np.float64], row: pd.Series
) -> NDArray[np.float64]:
    """Distance of points to a truth row's segment (a point when it has no length)."""
    dx, dy = px - row["x"], py - row["y"]
    if row["kind"] not in ("trail", "cosmic_ray"):
        return np.hypot(dx, dy)
    length = float(row["length_px"])
    ux, uy = math.cos(row["angle_rad"]), math.sin(row["angle_rad"])
    if row["kind"] == "cosmic_ray":  # a track starting at (x, y)
        t = np.clip(dx * ux + dy * uy, 0.0, length)
    else:
        t = np.clip(dx * ux + dy * uy, -length / 2, length / 2)
    return np.hypot(dx - t * ux, dy - t * uy)


def labelled_sources(
    seed: int, n_images: int, *, shape: tuple[int, int] = (512, 512)
) -> tuple[pd.DataFrame, NDArray[np.bool_], NDArray[np.object_]]:
    """Detect and measure ``n_images`` simulated difference images drawn from ``seed``.

    Returns
    -------
    table, real, kind
        All DiaSources (reliability not computed), whether each is real, and the kind of
        injection it matched ("noise" when none).
    """
    rng = np.random.default_rng(seed)
    config = DiaSourceConfig(measure=MeasureConfig(reliability=False))
    tables, labels, kinds = [], [], []
    for _ in range(n_images):
        sim = _simulate(rng, shape)
        table, det = detect_and_measure(sim.exposure, config=config, time_processed_mjd_tai=0.0)
        if not len(table):
            continue
        x, y = table["x"].to_numpy(np.float64), table["y"].to_numpy(np.float64)
        kind = np.full(len(table), "noise", dtype=object)
        best = np.full(len(table), np.inf)
        radius = 1.5 * det.psf_fwhm_px
        for _, row in sim.truth.iterrows():
            if row["kind"] == "bad_column":
                d = np.where(
                    (y >= row["y"] - row["length_px"] / 2 - radius)
                    & (y <= row["y"] + row["length_px"] / 2 + radius),
                    np.abs(x - row["x"]),
                    np.inf,
                )
            elif row["kind"] == "streak":
                a = row["angle_rad"]
                d = np.abs((x - row["x"]) * -math.sin(a) + (y - row["y"]) * math.cos(a))
            else:
                d = _segment_distance(x, y, row)
            closer = (d <= radius) & (d < best)
            kind[closer], best[closer] = row["kind"], d[closer]
        tables.append(table)
        kinds.append(kind)
        labels.append(np.isin(kind, ["point", "trail"]))
    if not tables:
        return pd.DataFrame(), np.zeros(0, bool), np.zeros(0, object)
    return pd.concat(tables, ignore_index=True), np.concatenate(labels), np.concatenate(kinds)


def roc_auc(score: NDArray[np.float64], real: NDArray[np.bool_]) -> float:
    """Area under the ROC curve (probability that a real source outscores a bogus one)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n_real, n_bogus = int(real.sum()), int((~real).sum())
    if not n_real or not n_bogus:
        return float("nan")
    return float((ranks[real].sum() - n_real * (n_real + 1) / 2) / (n_real * n_bogus))


def _export(clf: Any, prior: float) -> dict[str, Any]:
    trees = []
    for est in clf.estimators_[:, 0]:
        t = est.tree_
        trees.append(
            {
                "depth": int(t.max_depth),
                "feature": t.feature.tolist(),
                "threshold": [float(v) for v in t.threshold],
                "left": t.children_left.tolist(),
                "right": t.children_right.tolist(),
                "value": [float(v) for v in t.value[:, 0, 0]],
            }
        )
    return {
        "format": MODEL_FORMAT,
        "version": VERSION,
        "features": list(FEATURE_NAMES),
        "init_log_odds": float(math.log(prior / (1 - prior))),
        "learning_rate": float(clf.learning_rate),
        "trees": trees,
    }


def train_reliability_model(
    *,
    seed: int = DEFAULT_SEED,
    n_images: int = DEFAULT_IMAGES,
    n_holdout_images: int | None = None,
    n_estimators: int = 150,
    max_depth: int = 3,
    learning_rate: float = 0.1,
) -> dict[str, Any]:
    """Simulate, label, fit and export the real/bogus model; the same seed gives the same model.

    The held-out set (``n_holdout_images``, default a third of ``n_images``) comes from another
    seed derived from ``seed``; its ROC AUC, and purity and completeness at a 0.5 cut, are
    stored in the model's ``training`` entry.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    seeds = np.random.SeedSequence(seed).generate_state(2)
    table, real, _ = labelled_sources(int(seeds[0]), n_images)
    x = reliability_features(table)
    clf = GradientBoostingClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        random_state=seed,
    )
    clf.fit(x, real)
    model = _export(clf, float(real.mean()))
    mine = evaluate_model(model, x)
    theirs = clf.predict_proba(x)[:, 1]
    if not np.allclose(mine, theirs, atol=1e-6):
        raise RuntimeError(
            f"exported model differs from the trained one by {np.abs(mine - theirs).max():.2g}"
        )
    n_hold = n_holdout_images if n_holdout_images is not None else max(n_images // 3, 1)
    hold, hold_real, hold_kind = labelled_sources(int(seeds[1]), n_hold)
    score = evaluate_model(model, reliability_features(hold))
    picked = score >= 0.5
    model["training"] = {
        "seed": seed,
        "n_images": n_images,
        "n_sources": len(real),
        "n_real": int(real.sum()),
        "holdout_images": n_hold,
        "holdout_sources": len(hold_real),
        "holdout_auc": roc_auc(score, hold_real),
        "holdout_purity_at_0.5": float(hold_real[picked].mean()) if picked.any() else None,
        "holdout_completeness_at_0.5": float(picked[hold_real].mean()),
        "holdout_kinds": {str(k): int((hold_kind == k).sum()) for k in np.unique(hold_kind)},
        "sklearn_estimator": "GradientBoostingClassifier",
    }
    return model


def main(argv: list[str] | None = None) -> int:
    """Command line: train and write the model as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model = train_reliability_model(seed=args.seed, n_images=args.images)
    args.out.write_text(json.dumps(model, separators=(",", ":")) + "\n", encoding="utf-8")
    print(json.dumps(model["training"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
