"""The real/bogus model: packaging, scores against truth, reproducible retraining."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from measure_support import MeasuredField
from measure_support import model_field as _model_field
from measure_support import point_field as _point_field

from diaflow.errors import BadInputError
from diaflow.measure import MODEL_VERSION, reliability
from diaflow.measure.reliability import FEATURE_NAMES, evaluate_model, load_model
from diaflow.measure.train import labelled_sources, roc_auc, train_reliability_model


@pytest.fixture
def point_field() -> MeasuredField:
    return _point_field()


@pytest.fixture
def model_field() -> MeasuredField:
    return _model_field()


def test_measure_packaged_model_is_plain_json() -> None:
    text = resources.files("diaflow.measure").joinpath("reliability_model.json").read_bytes()
    model = json.loads(text)
    assert model["format"] == "diaflow-gbt-1"
    assert tuple(model["features"]) == FEATURE_NAMES
    assert 0 < len(MODEL_VERSION) <= 7
    assert model["version"] == MODEL_VERSION
    assert model["training"]["holdout_auc"] > 0.95
    for tree in model["trees"]:
        n = len(tree["value"])
        assert len(tree["feature"]) == len(tree["threshold"]) == len(tree["left"]) == n


def test_measure_real_point_sources_score_high(point_field: MeasuredField) -> None:
    _, got = point_field.matched()
    score = got["reliability"].to_numpy()
    assert ((score >= 0) & (score <= 1)).all()
    assert (got["reliabilityVersion"] == MODEL_VERSION).all()
    assert np.mean(score >= 0.5) >= 0.97
    assert np.median(score) > 0.95


def test_measure_artifacts_score_low(model_field: MeasuredField) -> None:
    table, truth = model_field.table, model_field.truth
    for kind in ("cosmic_ray", "dipole"):
        rows = truth[truth["kind"] == kind]
        d = np.hypot(
            table["x"].to_numpy()[:, None] - rows["x"].to_numpy(),
            table["y"].to_numpy()[:, None] - rows["y"].to_numpy(),
        ).min(axis=1)
        hits = table[d < 4.0]
        assert len(hits) >= 0.5 * len(rows), kind
        assert np.median(hits["reliability"]) < 0.2, kind


def test_measure_reliability_auc_on_held_out_simulations() -> None:
    table, real, _ = labelled_sources(seed=4242, n_images=6)
    assert real.sum() > 50
    assert (~real).sum() > 30
    assert roc_auc(reliability(table), real) > 0.95


def test_measure_retraining_is_reproducible_from_a_seed() -> None:
    kwargs = {"seed": 5, "n_images": 3, "n_holdout_images": 1, "n_estimators": 8}
    first = train_reliability_model(**kwargs)  # type: ignore[arg-type]
    second = train_reliability_model(**kwargs)  # type: ignore[arg-type]
    assert json.dumps(first) == json.dumps(second)
    assert len(first["trees"]) == 8
    # The exported trees reproduce the classifier (checked inside training) and load back.
    x = np.zeros((2, len(FEATURE_NAMES)))
    assert evaluate_model(first, x).shape == (2,)


def test_measure_reliability_checks_its_inputs(
    point_field: MeasuredField, tmp_path: pytest.TempPathFactory
) -> None:
    with pytest.raises(BadInputError, match="reliability needs DiaSource columns \\['snr'\\]"):
        reliability(point_field.table.drop(columns=["snr"]))
    bad = dict(load_model(), format="pickle")
    path = tmp_path / "model.json"  # type: ignore[operator]
    path.write_text(json.dumps(bad))
    with pytest.raises(BadInputError, match="reliability model format 'pickle'"):
        load_model(path)
