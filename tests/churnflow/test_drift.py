"""Drift of a scored day with real Evidently on a synthetic lake: nothing on data like the
reference, drift on shifted data, prediction drift against earlier days, data quality, and
realised performance once the labels matured (champion and shadow challenger)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.drift import (
    METRICS_FILE,
    REPORT_FILE,
    DriftConfig,
    DriftInputError,
    drift,
    judge,
    predictions_of,
    read_series,
)
from churnflow.evaluation import recency_scores
from churnflow.lake import CUSTOMER_FEATURES, DRIFT, PREDICTIONS, SHADOW_PREDICTIONS, Lake
from churnflow.scoring import predictions_table, publish_predictions
from tests.churnflow import synthetic
from tests.churnflow.contracts import FEATURES_SCHEMA

START, LAST = date(2026, 1, 1), date(2026, 5, 1)
HORIZON = 14
SCORED = LAST - timedelta(days=HORIZON)  # its labels mature on LAST
CONFIG = DriftConfig(reference_rows=5000, prediction_days=3, horizon_days=HORIZON)


def _features(lake: Lake, day: date) -> pd.DataFrame:
    return pd.read_parquet(lake.partition_path(CUSTOMER_FEATURES, day))


def _put_features(lake: Lake, day: date, frame: pd.DataFrame) -> None:
    folder = lake.partition_path(CUSTOMER_FEATURES, day)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=FEATURES_SCHEMA, preserve_index=False)
    pq.write_table(table, folder / "part-0.parquet")


def _score(lake: Lake, day: date, version: int = 1, dataset: str = PREDICTIONS) -> pd.DataFrame:
    features = _features(lake, day)
    scores = recency_scores(features) if version == 1 else np.full(len(features), 0.5)
    table = predictions_table(
        pa.array(features["customer_id"]), pa.array(scores, pa.float64()), version
    )
    publish_predictions(lake, dataset, day, table, len(features))
    return table.to_pandas()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("lake")
    customers = synthetic.population(START, LAST, seed=9, size=900, lifetime_days=90)
    days = [SCORED, *(LAST - timedelta(days=k) for k in range(4))]
    synthetic.write_lake(root, customers, first=START, last=LAST, snapshots=days)
    return Lake(str(root))


@pytest.fixture(scope="module")
def reference(lake: Lake) -> pd.DataFrame:
    """The days before LAST as the training set the model learnt from."""
    frames = [_features(lake, LAST - timedelta(days=k)) for k in (1, 2, 3)]
    return pd.concat(frames, ignore_index=True)


def test_a_day_like_the_reference_has_no_drift(lake: Lake, reference: pd.DataFrame) -> None:
    like = reference.sample(800, random_state=1).reset_index(drop=True)
    like["customer_id"] = [f"like-{i}" for i in range(len(like))]
    day = LAST + timedelta(days=1)
    _put_features(lake, day, like)
    predictions = _score(lake, day)
    summary = judge(lake, day, predictions, reference, reference_at="test", config=CONFIG)
    assert summary.metrics["features"]["drifted_columns"] == []
    assert summary.metrics["features"]["share"] == 0.0
    assert len(summary.metrics["features"]["columns"]) >= 10
    folder = lake.partition_path(DRIFT, day)
    assert (folder / REPORT_FILE).stat().st_size > 10_000
    assert json.loads((folder / METRICS_FILE).read_text())["rows"] == 800


def test_shifted_data_drifts_and_quality_names_what_is_new(
    lake: Lake, reference: pd.DataFrame
) -> None:
    shifted = _features(lake, LAST).copy()
    for name in ("amount_30d", "amount_90d", "avg_order_value_90d", "amount_365d"):
        shifted[name] = shifted[name] * 4 + 50
    shifted["days_since_last_order"] = shifted["days_since_last_order"] + 40
    shifted.loc[: len(shifted) // 3, "country"] = "XX"  # a new market
    day = LAST + timedelta(days=2)
    _put_features(lake, day, shifted)
    predictions = _score(lake, day)
    summary = judge(lake, day, predictions, reference, reference_at="test", config=CONFIG)
    features = summary.metrics["features"]
    assert {"amount_90d", "days_since_last_order", "country"} <= set(features["drifted_columns"])
    assert features["share"] >= 0.25
    quality = summary.metrics["quality"]
    assert quality["country"]["new_categories"] == ["XX"]
    assert quality["amount_90d"]["out_of_range_share"] > 0
    # The report's quality section counts by the same rules, against the reference's bounds.
    report = (lake.partition_path(DRIFT, day) / REPORT_FILE).read_text()
    low, high = quality["amount_90d"]["reference_range"]
    assert f"Column 'amount_90d' values out of range {low} to {high}" in report
    assert "Column 'country' values out of list [" in report
    # Scores of a later day are compared with the days before it.
    assert summary.metrics["predictions"]["reference_days"] >= 1
    assert summary.metrics["predictions"]["drift"]["drifted"] is True
    assert "drifted" in summary.line()


def test_realised_performance_once_the_labels_matured(lake: Lake, reference: pd.DataFrame) -> None:
    _score(lake, SCORED)
    _score(lake, SCORED, version=2, dataset=SHADOW_PREDICTIONS)
    predictions = _score(lake, LAST)
    summary = judge(lake, LAST, predictions, reference, reference_at="test", config=CONFIG)
    realised = summary.metrics["realised"]
    assert realised["ds"] == SCORED.isoformat()
    champion, challenger = realised["champion"], realised["challenger"]
    assert champion["model_version"] == 1 and challenger["model_version"] == 2
    assert 0 < champion["churn_rate"] < 1
    assert champion["pr_auc"] > challenger["pr_auc"], "recency beats a constant score"
    assert "realised PR AUC of v1" in summary.line()
    # A day whose labels have not matured yet has none.
    early = judge(
        lake, LAST - timedelta(days=1), _score(lake, LAST - timedelta(days=1)), reference,
        reference_at="test", config=CONFIG,
    )  # fmt: skip
    assert early.metrics["realised"] is None
    assert [m["ds"] for m in read_series(lake)] == sorted(m["ds"] for m in read_series(lake))


def test_a_day_without_predictions_cannot_be_judged(lake: Lake) -> None:

    day = START + timedelta(days=40)
    assert predictions_of(lake, day) is None
    with pytest.raises(DriftInputError, match=f"predictions/churn/ds={day}: no predictions") as e:
        drift(lake, day, "http://127.0.0.1:9", CONFIG)
    assert e.value.exit_code == 65
    assert not lake.exists(DRIFT, day)


def test_the_trend_page_plots_the_judged_days_and_the_decisions(lake: Lake) -> None:
    from churnflow.retraining import TRIGGER, Decision, record
    from churnflow.trend import TREND_PAGE, write_trend

    days = [m["ds"] for m in read_series(lake)]
    assert days, "the tests above judged days"
    record(lake, Decision(days[-1], TRIGGER, ["drift: test"], 1))
    write_trend(lake, drift_share=0.5)
    page = (lake.root / TREND_PAGE).read_text()
    assert "data:image/png;base64," in page
    for day in days:
        assert f"<td>{day}</td>" in page
    assert f"ds={days[-1]}: trigger: drift: test" in page


def test_the_trend_goes_to_one_monitoring_run_per_version(lake: Lake, mlflow_server: str) -> None:
    from churnflow.registry import connect
    from churnflow.trend import TAG_MONITORED, log_to_mlflow, trend_html

    client = connect(mlflow_server)
    series = read_series(lake)[-2:]
    page = trend_html(lake, drift_share=0.5)
    runs = {log_to_mlflow(client, metrics, page) for metrics in series}
    assert len(runs) == 1, "one monitoring run per version"
    [run_id] = runs
    assert client.get_run(run_id).data.tags[TAG_MONITORED] == "1"
    history = client.get_metric_history(run_id, "drift_share")
    assert sorted(m.step for m in history)[-2:] == [date.fromisoformat(m["ds"]).toordinal()
                                                    for m in series]  # fmt: skip
    assert "trend.html" in {item.path for item in client.list_artifacts(run_id)}
