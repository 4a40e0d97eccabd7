"""Batch scoring on real Spark (mapInPandas on its Python workers) against a real MLflow
server: the scores are the registered model's, a scored day is reproducible, shadow scores
follow the challenger, and every bad input fails before anything is published.

The registry moves through the module in order (v1 champion; v2 promoted; v3 challenger), so
the tests are numbered by the state they expect.
"""

from __future__ import annotations

import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.errors import ServiceUnavailableError
from churnflow.lake import (
    CUSTOMER_FEATURES,
    PREDICTIONS,
    SHADOW_PREDICTIONS,
    Lake,
)
from churnflow.models import TrainingConfig, churn_probability
from churnflow.promote import GateConfig, promote
from churnflow.registry import (
    CHALLENGER,
    MODEL_NAME,
    SCORING_EXPERIMENT,
    TAG_DS,
    connect,
    load_version,
)
from churnflow.scoring import (
    DECILE,
    FIRST,
    PREDICTION_FILE,
    RECORDED,
    RESCORED,
    SCORE,
    NoModelError,
    ScoringInputError,
    read_ledger,
    score,
)
from churnflow.train import train
from churnflow.training_set import build_training_set
from tests.churnflow import synthetic
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("classic_spark")

START, AS_OF, SNAPSHOTS = synthetic.START, synthetic.AS_OF, synthetic.SNAPSHOTS
SET_CONFIG = synthetic.TRAINING_WINDOW
DAY_1, DAY_2, DAY_3 = AS_OF - timedelta(days=2), AS_OF - timedelta(days=1), AS_OF
FIT = TrainingConfig(seed=11, max_epochs=8, patience=2)
LENIENT = GateConfig(margin=-1.0, slice_tolerance=1.0, max_ece=1.0)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("lake")
    customers = synthetic.population(START, AS_OF, seed=4, size=1200, lifetime_days=120)
    synthetic.write_lake(
        root, customers, first=START, last=AS_OF, snapshots=[*SNAPSHOTS, DAY_1, DAY_2, DAY_3]
    )
    build_training_set(root, AS_OF, config=SET_CONFIG)
    return Lake(str(root))


def _prediction_file(lake: Lake, ds: date, dataset: str = PREDICTIONS) -> Path:
    return lake.partition_path(dataset, ds) / PREDICTION_FILE


def _features(lake: Lake, ds: date) -> pd.DataFrame:
    return pd.read_parquet(lake.partition_path(CUSTOMER_FEATURES, ds))


def _train(lake: Lake, uri: str, model_type: str, *, promoted: bool) -> str:
    version = train(lake, AS_OF, uri, model_type=model_type, reason="test", config=FIT).version
    if promoted:
        promote(lake, uri, LENIENT)
    return version


def test_0_no_champion_fails_with_the_registry_url(lake: Lake, registry: str) -> None:
    with pytest.raises(NoModelError, match=f"no @champion in the registry at {registry}"):
        score(lake, DAY_1, registry)
    assert not lake.exists(PREDICTIONS, DAY_1)
    assert read_ledger(lake, DAY_1) is None


@pytest.fixture(scope="module")
def v1(lake: Lake, registry: str) -> str:
    return _train(lake, registry, "sklearn", promoted=True)


def test_1_scores_are_the_registered_models_in_process_probabilities(
    lake: Lake, registry: str, v1: str
) -> None:
    summary = score(lake, DAY_1, registry)
    assert (summary.model_version, summary.how, summary.shadow_version) == (int(v1), FIRST, None)

    published = pd.read_parquet(_prediction_file(lake, DAY_1))
    assert list(published.columns) == [
        "customer_id", SCORE, DECILE, "model_name", "model_version"
    ]  # fmt: skip
    features = _features(lake, DAY_1)
    assert len(published) == len(features) == summary.rows
    assert published["customer_id"].is_monotonic_increasing
    assert set(published["model_name"]) == {MODEL_NAME} and set(published["model_version"]) == {
        int(v1)
    }
    model = load_version(v1).unwrap_python_model()
    expected = pd.Series(
        churn_probability(model.estimator, model.spec.inputs(features)),
        index=features["customer_id"],
    )
    got = published.set_index("customer_id")[SCORE]
    assert np.allclose(got.to_numpy(), expected.loc[got.index].to_numpy(), rtol=0, atol=1e-6)
    # Decile 1 holds the highest scores; every decile is there.
    assert sorted(published[DECILE].unique()) == list(range(1, 11))
    by_decile = published.groupby(DECILE)[SCORE]
    assert (by_decile.min().iloc[:-1].to_numpy() >= by_decile.max().iloc[1:].to_numpy()).all()

    entry = read_ledger(lake, DAY_1)
    assert entry is not None and entry.model_version == int(v1) and entry.how == FIRST
    client = connect(registry)
    run = client.get_run(entry.scoring_run)
    assert run.data.tags[TAG_DS] == DAY_1.isoformat()
    assert run.data.tags["churnflow.model_version"] == v1
    assert run.data.metrics[f"{PREDICTIONS}.rows"] == len(features)
    experiment = client.get_experiment_by_name(SCORING_EXPERIMENT)
    assert experiment is not None and experiment.experiment_id == run.info.experiment_id
    assert not lake.exists(SHADOW_PREDICTIONS, DAY_1), "challenger == champion: no shadow"


@pytest.fixture(scope="module")
def v2(lake: Lake, registry: str, v1: str) -> str:
    return _train(lake, registry, "lightning", promoted=True)


def test_2_a_scored_day_keeps_its_version_after_a_new_champion(
    lake: Lake, registry: str, v1: str, v2: str
) -> None:
    before = _prediction_file(lake, DAY_1).read_bytes()
    # The day's features were rebuilt since (new files, same rows): the rerun reads the new
    # files, not the ones the session listed when it scored the day first.
    for item in lake.files(CUSTOMER_FEATURES, DAY_1):
        item.path.rename(item.path.with_name(f"rebuilt-{item.name}"))
    summary = score(lake, DAY_1, registry)
    assert (summary.model_version, summary.how) == (int(v1), RECORDED)
    assert _prediction_file(lake, DAY_1).read_bytes() == before
    assert [f.name for f in lake.files(PREDICTIONS, DAY_1)] == [PREDICTION_FILE]

    fresh = score(lake, DAY_2, registry)
    assert (fresh.model_version, fresh.how) == (int(v2), FIRST)
    assert set(pd.read_parquet(_prediction_file(lake, DAY_2))["model_version"]) == {int(v2)}


def test_3_rescore_with_champion_switches_the_day(lake: Lake, registry: str, v2: str) -> None:
    summary = score(lake, DAY_1, registry, rescore_with_champion=True)
    assert (summary.model_version, summary.how) == (int(v2), RESCORED)
    published = pd.read_parquet(_prediction_file(lake, DAY_1))
    assert set(published["model_version"]) == {int(v2)}
    entry = read_ledger(lake, DAY_1)
    assert entry is not None and (entry.model_version, entry.how) == (int(v2), RESCORED)
    # ...and from then on the day reruns with v2.
    assert score(lake, DAY_1, registry).how == RECORDED


@pytest.fixture(scope="module")
def v3(lake: Lake, registry: str, v1: str, v2: str) -> str:
    """A challenger the gate has not promoted (v1's model again, as a new version)."""
    import mlflow

    client = connect(registry)
    created = mlflow.register_model(client.get_model_version(MODEL_NAME, v1).source, MODEL_NAME)
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, created.version)
    return created.version


def test_4_a_challenger_other_than_the_champion_is_shadow_scored(
    lake: Lake, registry: str, v2: str, v3: str
) -> None:
    summary = score(lake, DAY_3, registry)
    assert (summary.model_version, summary.shadow_version) == (int(v2), int(v3))
    main = pd.read_parquet(_prediction_file(lake, DAY_3))
    shadow = pd.read_parquet(_prediction_file(lake, DAY_3, SHADOW_PREDICTIONS))
    assert set(shadow["model_version"]) == {int(v3)}
    assert list(shadow["customer_id"]) == list(main["customer_id"])
    assert not np.allclose(shadow[SCORE], main[SCORE]), "two different models"
    entry = read_ledger(lake, DAY_3)
    assert entry is not None and entry.shadow_version == int(v3)
    # A day recorded without a shadow stays without one.
    score(lake, DAY_2, registry)
    assert not lake.exists(SHADOW_PREDICTIONS, DAY_2)


def _broken_copy(lake: Lake, target: Path, ds: date, frame: pd.DataFrame | None) -> Lake:
    """The lake with day `ds`'s features replaced by `frame` (None: removed)."""
    copy = Lake(str(shutil.copytree(lake.root, target)))
    folder = copy.partition_path(CUSTOMER_FEATURES, ds)
    shutil.rmtree(folder)
    if frame is not None:
        folder.mkdir()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "p.parquet")
    return copy


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no published features"),
        ("empty", "the features hold 0 rows"),
        ("renamed", r"days_since_last_order \(double\) is missing"),
        ("retyped", "country is int64, the model reads string"),
    ],
)
@pytest.mark.usefixtures("v3")
def test_5_bad_features_fail_before_anything_is_published(
    lake: Lake, registry: str, tmp_path: Path, case: str, message: str
) -> None:
    features = _features(lake, DAY_3)
    frame = {
        "missing": None,
        "empty": features.head(0),
        "renamed": features.rename(columns={"days_since_last_order": "recency_days"}),
        "retyped": features.assign(country=7),
    }[case]
    broken = _broken_copy(lake, tmp_path / "lake", DAY_3, frame)
    before = _prediction_file(broken, DAY_3).read_bytes()
    with pytest.raises(ScoringInputError, match=message) as caught:
        score(broken, DAY_3, registry, rescore_with_champion=True)
    assert "customer_features/ds=2026-05-01" in str(caught.value)
    assert caught.value.exit_code == 65
    assert _prediction_file(broken, DAY_3).read_bytes() == before
    assert read_ledger(broken, DAY_3) == read_ledger(lake, DAY_3)


def test_6_an_unreachable_mlflow_server_is_named_and_retryable(lake: Lake) -> None:
    before = _prediction_file(lake, DAY_3).read_bytes()
    with pytest.raises(ServiceUnavailableError, match=re.escape("http://127.0.0.1:9")) as caught:
        score(lake, DAY_3, "http://127.0.0.1:9")
    assert caught.value.exit_code == 75
    assert _prediction_file(lake, DAY_3).read_bytes() == before


def test_7_the_cli_exits_with_the_data_error_code(lake: Lake) -> None:
    result = run_cli("score", "--ds", "2026-06-30", lake=lake.root)
    assert result.returncode == 65, result.stderr
    assert "features/customer_features/ds=2026-06-30: no published features" in result.stderr
