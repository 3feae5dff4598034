"""Models load only from safe formats; a pickle where a model is expected is refused, named."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from nightshift.config.pipeline import parse_pipeline
from nightshift.models.kinds import load_scorer, trusted_types
from nightshift.models.safe_models import UnsafeModel
from nightshift.publishing import tracking
from tests.conftest import small_pipeline_dict


class Payload:
    """What an attacker's pickle would run on load (here: nothing, it is never loaded)."""

    def __reduce__(self):
        return (print, ("pickle code ran",))


PICKLE = pickle.dumps(Payload())


@pytest.mark.parametrize("kind", ["xgboost", "sgd", "baseline"])
def test_a_pickle_in_the_lake_is_refused_with_the_file_named(kind: str) -> None:
    with pytest.raises(UnsafeModel, match=r"lake/models/x/model\.bin: refusing to load a pickle"):
        load_scorer(kind, PICKLE, None, "binary_classification", "lake/models/x/model.bin")  # type: ignore[arg-type]


def test_garbage_where_an_xgboost_model_should_be_is_refused() -> None:
    with pytest.raises(UnsafeModel, match=r"m\.ubj: not an XGBoost UBJ/JSON model"):
        load_scorer("xgboost", b"not a model", None, "binary_classification", "m.ubj")  # type: ignore[arg-type]


@pytest.fixture
def registered(tmp_path: Path):
    """A registry with one scikit-learn and one XGBoost version, in a temporary store of each
    test's own (the refusal test plants pickles in it)."""
    import mlflow
    import xgboost as xgb
    from sklearn.linear_model import SGDClassifier

    folder = tmp_path
    data = small_pipeline_dict()
    data["output"] = {"mlflow": str(folder / "mlflow")}
    pipeline = parse_pipeline(data, "safe.yaml")
    mlflow_client = tracking.client(pipeline)
    experiment = tracking.experiment_id(mlflow_client, pipeline)
    x = np.random.default_rng(0).random((50, 3))
    y = (x[:, 0] > 0.5).astype(int)

    class Trained:
        pass

    linear, trees = Trained(), Trained()
    linear.kind, linear.linear = "sgd", SGDClassifier(loss="log_loss").fit(x, y)
    trees.kind = "xgboost"
    trees.booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=y), 3)
    with mlflow.start_run(experiment_id=experiment):
        tracking._log_model(linear, "safe.sgd")
    with mlflow.start_run(experiment_id=experiment):
        tracking._log_model(trees, "safe.xgboost")
    return pipeline, folder, x


def _artifacts(folder: Path, name: str) -> Path:
    [mlmodel] = [
        p for p in (folder / "mlflow" / "artifacts").rglob("MLmodel") if name in p.read_text()
    ]
    return mlmodel.parent


def test_registered_models_load_through_the_safe_loader(registered) -> None:
    pipeline, _, x = registered
    linear = tracking.load_registered(pipeline, "safe.sgd", "1")
    assert linear.predict_proba(x).shape == (50, 2)
    booster = tracking.load_registered(pipeline, "safe.xgboost", "1")
    assert booster.num_boosted_rounds() == 3
    mlmodel = yaml.safe_load((_artifacts(registered[1], "skops") / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["skops_trusted_types"] == trusted_types()


def test_a_pickle_planted_in_the_registry_is_refused(registered) -> None:
    pipeline, folder, _ = registered
    sklearn_dir = _artifacts(folder, "skops")
    # Swap the skops file for a pickle...
    (sklearn_dir / "model.skops").write_bytes(PICKLE)
    with pytest.raises(UnsafeModel, match=r"model\.skops is saved as 'skops' \(a pickle\)"):
        tracking.load_registered(pipeline, "safe.sgd", "1")
    # ...or claim the pickle format in MLmodel: refused all the same.
    mlmodel = sklearn_dir / "MLmodel"
    meta = yaml.safe_load(mlmodel.read_text())
    meta["flavors"]["sklearn"]["serialization_format"] = "cloudpickle"
    mlmodel.write_text(yaml.safe_dump(meta))
    with pytest.raises(UnsafeModel, match="saved as 'cloudpickle'"):
        tracking.load_registered(pipeline, "safe.sgd", "1")
    # A pickle in place of the XGBoost model file is refused too.
    xgb_dir = _artifacts(folder, "xgboost:")
    data_file = yaml.safe_load((xgb_dir / "MLmodel").read_text())["flavors"]["xgboost"]["data"]
    (xgb_dir / data_file).write_bytes(PICKLE)
    with pytest.raises(UnsafeModel, match="is not an XGBoost UBJ/JSON model"):
        tracking.load_registered(pipeline, "safe.xgboost", "1")
