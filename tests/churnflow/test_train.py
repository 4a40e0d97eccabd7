"""Training, registration and the promotion gate against a real MLflow server.

One synthetic lake (tests/churnflow/synthetic.py) and its point-in-time training set, built on
real Spark, serve the module; the MLflow server is the local stack's (session fixture). The
registry's state moves through the module in order — first champion, a worse challenger
refused, a forced promotion rolled back — so the tests that read it are numbered by the
state they expect.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churnflow.errors import ServiceUnavailableError
from churnflow.evaluation import METRICS, SliceResult, score_metrics
from churnflow.lake import Lake
from churnflow.models import TrainingConfig
from churnflow.promote import (
    PROMOTED,
    REJECTED,
    TAG_DECISION,
    TAG_PREVIOUS_CHAMPION,
    TAG_REASONS,
    GateConfig,
    PromotionError,
    judge,
    promote,
    rollback,
)
from churnflow.registry import CHALLENGER, CHAMPION, MODEL_NAME, connect, version_by_alias
from churnflow.train import Evaluation, TrainingDataError, TrainingOutcome, train
from churnflow.training_set import (
    AS_OF_KEY,
    EXAMPLES,
    HOLDOUT,
    LABEL,
    MANIFEST,
    SPLIT,
    TRAIN,
    TRAINING_CHURN,
    VALIDATION,
    build_training_set,
    file_sha256,
)
from tests.churnflow import synthetic

pytestmark = pytest.mark.usefixtures("classic_spark")

START, AS_OF, SNAPSHOTS = synthetic.START, synthetic.AS_OF, synthetic.SNAPSHOTS
SET_CONFIG = synthetic.TRAINING_WINDOW
FIT = TrainingConfig(seed=11, max_epochs=12, patience=3)
LENIENT = GateConfig(margin=-1.0, slice_tolerance=1.0, max_ece=1.0)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("lake")
    customers = synthetic.population(START, AS_OF, seed=3, size=1500, lifetime_days=120)
    synthetic.write_lake(root, customers, first=START, last=AS_OF, snapshots=SNAPSHOTS)
    build_training_set(root, AS_OF, config=SET_CONFIG)
    return Lake(str(root))


@pytest.fixture(scope="module")
def trained(lake: Lake, registry: str) -> TrainingOutcome:
    return train(lake, AS_OF, registry, reason="test", config=FIT)


def _client(uri: str) -> Any:
    return connect(uri)


def _holdout(lake: Lake) -> pd.DataFrame:
    folder = lake.partition_path(TRAINING_CHURN, AS_OF, AS_OF_KEY) / EXAMPLES
    frame = pd.read_parquet(folder)
    return frame[frame[SPLIT] == HOLDOUT].reset_index(drop=True)


def test_1_training_logs_parent_and_child_runs_and_registers_the_challenger(
    trained: TrainingOutcome, mlflow_server: str
) -> None:
    client = _client(mlflow_server)
    parent = client.get_run(trained.parent_run_id)
    assert parent.data.tags["churnflow.chosen"] == trained.chosen
    assert "better validation PR AUC" in parent.data.tags["churnflow.choice"]
    assert parent.data.tags["churnflow.as_of"] == str(AS_OF)
    assert parent.data.tags["mlflow.source.git.commit"]
    assert parent.data.tags["churnflow.image"] == "local"
    assert parent.inputs.dataset_inputs, "the training set is the run's dataset input"
    dataset = parent.inputs.dataset_inputs[0]
    assert dataset.dataset.source and "as_of=2026-05-01" in dataset.dataset.source
    tags = {tag.key: tag.value for tag in dataset.tags}
    assert tags["snapshots"].startswith(f"{SNAPSHOTS[0]}..{SNAPSHOTS[-1]}")
    assert tags["digest"] == parent.data.tags["churnflow.training_set.digest"]

    for model_type, candidate in trained.candidates.items():
        child = client.get_run(candidate.run_id)
        assert child.data.tags["mlflow.parentRunId"] == trained.parent_run_id
        metrics = child.data.metrics
        for split in (VALIDATION, HOLDOUT):
            for metric in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile"):
                assert f"{split}_{metric}" in metrics, (model_type, split, metric)
        sliced = [key for key in metrics if key.startswith("holdout_pr_auc.")]
        assert any(".country." in key for key in sliced)
        assert any(".tenure." in key for key in sliced)
        assert any(".spend." in key for key in sliced)
        artifacts = {item.path for item in client.list_artifacts(candidate.run_id, "plots/holdout")}
        assert {f"plots/holdout/{name}" for name in ("roc.png", "pr.png", "calibration.png",
                                                      "lift.png")} <= artifacts  # fmt: skip
        names = {item.path for item in client.list_artifacts(candidate.run_id, "plots")}
        assert "plots/feature_importance.png" in names
    history = client.get_metric_history(trained.candidates["lightning"].run_id, "epoch_val_loss")
    assert len(history) >= 2 and [m.step for m in history] == list(range(len(history)))

    version = version_by_alias(client, CHALLENGER)
    assert version is not None and version.version == trained.version
    assert version.tags["churnflow.model_type"] == trained.chosen
    assert version.run_id == trained.candidates[trained.chosen].run_id


def test_2_the_registered_model_reproduces_its_logged_holdout_metrics(
    trained: TrainingOutcome, lake: Lake, mlflow_server: str
) -> None:
    import mlflow.pyfunc

    _client(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHALLENGER}")
    holdout = _holdout(lake)
    scores = np.asarray(model.predict(holdout.drop(columns=[LABEL, SPLIT])), dtype="float64")
    logged = _client(mlflow_server).get_run(trained.candidates[trained.chosen].run_id).data.metrics
    measured = score_metrics(holdout[LABEL].to_numpy(), scores)
    for metric in METRICS:
        assert measured[metric] == pytest.approx(logged[f"holdout_{metric}"], abs=1e-9), metric


def test_3_the_same_seed_gives_the_same_metrics(
    trained: TrainingOutcome, lake: Lake, mlflow_server: str
) -> None:
    again = train(lake, AS_OF, mlflow_server, model_type="lightning", reason="rerun", config=FIT)
    client = _client(mlflow_server)
    first = client.get_run(trained.candidates["lightning"].run_id).data.metrics
    second = client.get_run(again.candidates["lightning"].run_id).data.metrics
    for key in ("validation_pr_auc", "holdout_pr_auc", "holdout_log_loss", "best_epoch"):
        assert second[key] == first[key], key
    # Put the better (auto-chosen) model back as the challenger for the gate's tests.
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, trained.version)


def test_4_the_first_model_is_promoted_over_the_recency_baseline(
    trained: TrainingOutcome, lake: Lake, mlflow_server: str
) -> None:
    decision = promote(lake, mlflow_server, GateConfig(margin=0.0, max_ece=0.1))
    assert decision.outcome == PROMOTED, decision.lines()
    assert decision.compared_with == "recency baseline"
    client = _client(mlflow_server)
    champion = version_by_alias(client, CHAMPION)
    assert champion is not None and champion.version == trained.version
    assert champion.tags[TAG_DECISION] == PROMOTED
    assert "PR AUC vs recency baseline" in champion.tags[TAG_REASONS]
    assert champion.tags[TAG_PREVIOUS_CHAMPION] == ""


def _shuffled_copy(lake: Lake, target: Path) -> Lake:
    """The lake with the train and validation labels of the training set shuffled (the
    holdout keeps its true labels, so the gate compares on the same rows); the manifest's
    file digests follow, as if that set had been published."""
    copy = Lake(str(shutil.copytree(lake.root, target)))
    partition = copy.partition_path(TRAINING_CHURN, AS_OF, AS_OF_KEY)
    path = next((partition / EXAMPLES).glob("*.parquet"))
    frame = pd.read_parquet(path)
    learn = frame[SPLIT].isin([TRAIN, VALIDATION])
    rng = np.random.default_rng(0)
    frame.loc[learn, LABEL] = rng.permutation(frame.loc[learn, LABEL].to_numpy())
    pq.write_table(pq.read_table(path).from_pandas(frame, preserve_index=False), path)
    manifest = json.loads((partition / MANIFEST).read_text())
    manifest["data"]["files"][0]["sha256"] = file_sha256(path)
    (partition / MANIFEST).write_text(json.dumps(manifest))
    return copy


def test_5_a_model_trained_on_shuffled_labels_is_not_promoted_and_says_why(
    trained: TrainingOutcome, lake: Lake, mlflow_server: str, tmp_path: Path
) -> None:
    shuffled = _shuffled_copy(lake, tmp_path / "lake")
    worse = train(shuffled, AS_OF, mlflow_server, model_type="sklearn", reason="test", config=FIT)
    decision = promote(shuffled, mlflow_server, GateConfig())
    assert decision.outcome == REJECTED
    assert decision.challenger == worse.version
    client = _client(mlflow_server)
    assert version_by_alias(client, CHAMPION).version == trained.version  # type: ignore[union-attr]
    tags = client.get_model_version(MODEL_NAME, worse.version).tags
    assert tags[TAG_DECISION] == REJECTED
    assert f"FAIL PR AUC vs champion v{trained.version}" in tags[TAG_REASONS]


def test_6_rollback_restores_the_previous_champion_and_the_gate_does_not_undo_it(
    trained: TrainingOutcome, lake: Lake, mlflow_server: str
) -> None:
    client = _client(mlflow_server)
    forced = promote(lake, mlflow_server, LENIENT)  # the shuffled model, waved through
    assert forced.outcome == PROMOTED
    assert version_by_alias(client, CHAMPION).version == forced.challenger  # type: ignore[union-attr]
    message = rollback(mlflow_server)
    assert f"to version {trained.version}" in message
    assert version_by_alias(client, CHAMPION).version == trained.version  # type: ignore[union-attr]
    again = promote(lake, mlflow_server, LENIENT)
    assert again.outcome == REJECTED and "rolled it back" in again.reasons
    with pytest.raises(PromotionError, match="was the first @champion"):
        rollback(mlflow_server)


def _evaluation(pr_auc: float, ece: float, slices: dict[str, float]) -> Evaluation:
    results = [
        SliceResult("country", band, 500, 100, {"pr_auc": value}, None)
        for band, value in slices.items()
    ]
    return Evaluation(HOLDOUT, np.zeros(1), {"pr_auc": pr_auc, "ece": ece}, results)


def test_the_slice_rule_blocks_a_gain_bought_with_one_country() -> None:
    champion = _evaluation(0.60, 0.02, {"DE": 0.60, "FR": 0.60})
    challenger = _evaluation(0.65, 0.02, {"DE": 0.70, "FR": 0.55})
    rules = judge(challenger, champion, champion, GateConfig(slice_tolerance=0.03))
    failed = [rule for rule in rules if not rule.passed]
    assert [rule.name for rule in failed] == ["slices vs champion"]
    assert "country=FR 0.5500 vs 0.6000" in failed[0].detail


def test_the_calibration_rule_blocks_a_badly_calibrated_challenger() -> None:
    champion = _evaluation(0.60, 0.02, {"DE": 0.60})
    challenger = _evaluation(0.70, 0.12, {"DE": 0.70})
    rules = judge(challenger, champion, champion, GateConfig(max_ece=0.05))
    assert [rule.name for rule in rules if not rule.passed] == ["calibration"]


def test_an_unreachable_mlflow_server_fails_before_training_with_exit_75(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from churnflow.cli import main
    from churnflow.settings import get_settings

    monkeypatch.setenv("CHURNFLOW_LAKE", str(lake.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    get_settings.cache_clear()
    try:
        code = main(["train", "--as-of", str(AS_OF)])
    finally:
        get_settings.cache_clear()
    assert code == ServiceUnavailableError.exit_code == 75
    err = capsys.readouterr().err
    assert "MLflow tracking server at http://127.0.0.1:9 does not answer" in err


def test_a_missing_training_set_fails_with_the_data_error_code(
    lake: Lake, mlflow_server: str
) -> None:
    with pytest.raises(TrainingDataError, match="run `churnflow training-set --as-of 2026-06-01`"):
        train(lake, date(2026, 6, 1), mlflow_server)
    assert TrainingDataError.exit_code == 65


def test_too_few_examples_fail_before_training_naming_the_split(
    lake: Lake, mlflow_server: str
) -> None:
    before = version_by_alias(_client(mlflow_server), CHALLENGER)
    with pytest.raises(TrainingDataError, match=r"split holdout has \d+ examples \(at least"):
        train(lake, AS_OF, mlflow_server, min_rows=100_000)
    after = version_by_alias(_client(mlflow_server), CHALLENGER)
    assert (before and before.version) == (after and after.version)


def test_an_altered_training_set_file_is_refused(lake: Lake, tmp_path: Path) -> None:
    copy = Lake(str(shutil.copytree(lake.root, tmp_path / "lake")))
    path = next((copy.partition_path(TRAINING_CHURN, AS_OF, AS_OF_KEY) / EXAMPLES).glob("*"))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(TrainingDataError, match="does not match its manifest"):
        train(copy, AS_OF, "http://127.0.0.1:9")
