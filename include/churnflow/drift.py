"""Monitoring of one scored day: feature drift, prediction drift, data quality and, once the
labels have matured, the models' realised performance.

`churnflow drift --ds D` compares the day with references that say what "normal" is:
- **features** of `D` against the training set of the version that scored `D` (its
  `churnflow.as_of` tag names `training/churn/as_of=…`), sampled to at most
  `CHURNFLOW_DRIFT_REFERENCE_ROWS` rows, with Evidently's DataDriftPreset (per column the test
  Evidently picks for its type and size; a column drifts past that test's threshold);
- **scores** of `D` against the predictions of the `CHURNFLOW_DRIFT_PREDICTION_DAYS` days
  before it (skipped, and said so, while there are none);
- **data quality**: missing values against the reference's rate, categories the reference
  never saw, numbers outside the reference's range (in metrics.json and, as counters, in the
  report);
- **realised performance**: when `D - horizon` was scored and every silver day up to `D` is
  published, its labels have matured: the champion's PR AUC, recall at the top decile and
  calibration error on that day's predictions, and the challenger's on the same customers where
  shadow predictions exist (the offline A/B).

It writes `monitoring/drift/ds=D/` (`report.html`, Evidently's, and `metrics.json`, the
headline figures) by write, audit, publish. The `metrics.json` of all days are the time series
the trend page and the retraining decision read. It exits 0 whether or not it finds drift;
it fails only when it cannot judge (no predictions for `D`, no reference), with the dataset
it misses in the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.dataset as pads

from churnflow.errors import DataError
from churnflow.evaluation import score_metrics
from churnflow.lake import (
    CUSTOMER_FEATURES,
    DRIFT,
    PREDICTIONS,
    SHADOW_PREDICTIONS,
    SILVER_ORDERS,
    Lake,
    LakeFile,
    partition_relative,
)
from churnflow.registry import MODEL_NAME, TAG_AS_OF, connect
from churnflow.scoring import SCORE
from churnflow.training_set import AS_OF_KEY, CUSTOMER, EXAMPLES, TRAINING_CHURN

if TYPE_CHECKING:
    from mlflow import MlflowClient

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
REALISED = ("pr_auc", "recall_top_decile", "ece", "roc_auc")
SAMPLE_SEED = 0


class DriftInputError(DataError):
    """What the day is judged against, or the day itself, is missing: no judgement."""


@dataclass(frozen=True)
class DriftConfig:
    reference_rows: int = 200_000
    prediction_days: int = 7
    horizon_days: int = 30

    @classmethod
    def from_settings(cls, settings: Any) -> DriftConfig:
        return cls(
            settings.drift_reference_rows,
            settings.drift_prediction_days,
            settings.label_horizon_days,
        )


def _read(lake: Lake, dataset: str, ds: date, columns: list[str] | None = None) -> pd.DataFrame:
    return _read_files(lake, lake.files(dataset, ds), columns)


def _read_files(
    lake: Lake, files: list[LakeFile], columns: list[str] | None = None
) -> pd.DataFrame:
    locations = [item.location for item in files]
    return (
        pads.dataset(locations, filesystem=lake.filesystem, format="parquet")
        .to_table(columns=columns)
        .to_pandas()
    )


def predictions_of(lake: Lake, ds: date, dataset: str = PREDICTIONS) -> pd.DataFrame | None:
    return _read(lake, dataset, ds) if lake.files(dataset, ds) else None


def reference_of(
    lake: Lake, client: MlflowClient, version: int, rows: int
) -> tuple[pd.DataFrame, str]:
    """The training examples of `version` (at most `rows`, a seeded sample) and their place."""
    model = client.get_model_version(MODEL_NAME, str(version))
    as_of_text = model.tags.get(TAG_AS_OF)
    if not as_of_text:
        raise DriftInputError(
            f"{MODEL_NAME} v{version} has no {TAG_AS_OF} tag: its training set, the drift "
            "reference, cannot be found"
        )
    as_of = date.fromisoformat(as_of_text)
    where = f"{partition_relative(TRAINING_CHURN, as_of, AS_OF_KEY)}/{EXAMPLES}"
    files = lake.files(TRAINING_CHURN, as_of, AS_OF_KEY, folder=EXAMPLES)
    if not files:
        raise DriftInputError(
            f"{where}: the training set of {MODEL_NAME} v{version}, the drift reference, is "
            f"not in the lake at {lake.shown}; rebuild it (`churnflow training-set --as-of "
            f"{as_of}`)"
        )
    frame = _read_files(lake, files)
    if len(frame) > rows:
        frame = frame.sample(rows, random_state=SAMPLE_SEED)
    return frame.reset_index(drop=True), where


def feature_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numeric and categorical model inputs present in both frames, as training picks them
    (`FeatureSpec.of`)."""
    from churnflow.models import FeatureSpec

    spec = FeatureSpec.of(current[[name for name in current.columns if name in reference]])
    return list(spec.numeric), list(spec.categorical)


def reference_range(reference: pd.DataFrame, name: str) -> tuple[float, float] | None:
    """The numeric column's smallest and largest value in the reference; None when it has none."""
    values = pd.to_numeric(reference[name], errors="coerce")
    return None if values.isna().all() else (float(values.min()), float(values.max()))


def reference_categories(reference: pd.DataFrame, name: str) -> list[str]:
    """The categorical column's values the reference saw, as text, sorted."""
    return sorted(set(reference[name].dropna().astype(str)))


def data_quality(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, Any]:
    """Per column: missing share (day vs reference), unseen categories, share out of range."""
    columns: dict[str, Any] = {}
    for name in [*numeric, *categorical]:
        entry: dict[str, Any] = {
            "missing_share": float(current[name].isna().mean()),
            "reference_missing_share": float(reference[name].isna().mean()),
        }
        if name in numeric:
            values = pd.to_numeric(current[name], errors="coerce").astype("float64")
            bounds = reference_range(reference, name)
            outside = ((values < bounds[0]) | (values > bounds[1])).mean() if bounds else 0.0
            entry |= {
                "out_of_range_share": float(outside),
                "reference_range": list(bounds) if bounds else None,
            }
        else:
            seen = set(reference_categories(reference, name))
            unseen = sorted(set(current[name].dropna().astype(str)) - seen)
            entry["new_categories"] = unseen[:20]
        columns[name] = entry
    return columns


def quality_section(
    reference: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> list[Any]:
    """The report's data quality, by the rules `data_quality` writes to metrics.json: the
    dataset's counts, and per column the missing values and, against the reference, numbers
    outside its range or categories it never saw. Counters, not DataSummaryPreset: that one
    draws every column's distribution again (the drift section has them) and cost 1.8 of the
    report's 4.2 CPU s a day at demo scale."""
    from evidently.metrics import MissingValueCount, OutListValueCount, OutRangeValueCount
    from evidently.presets import DatasetStats

    section: list[Any] = [DatasetStats()]
    for name in numeric:
        section.append(MissingValueCount(column=name))
        if bounds := reference_range(reference, name):
            section.append(OutRangeValueCount(column=name, left=bounds[0], right=bounds[1]))
    for name in categorical:
        seen = reference_categories(reference, name)
        section += [MissingValueCount(column=name), OutListValueCount(column=name, values=seen)]
    return section


def _verdict(metric: dict[str, Any]) -> dict[str, Any]:
    """One ValueDrift result: its method, value, threshold, and whether the column drifted.
    Distances drift at or above the threshold, p-values below it (TRAPS.md)."""
    config = metric["config"]
    value, threshold = float(metric["value"]), float(config["threshold"])
    method = str(config.get("method", ""))
    testing = "p_value" in method or "test" in method
    drifted = value < threshold if testing else value >= threshold
    return {"method": method, "value": value, "threshold": threshold, "drifted": drifted}


def _evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> tuple[Any, dict[str, Any]]:
    """Evidently's DataDriftPreset and the quality section: the snapshot (for its HTML) and
    the drift figures we keep."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    columns = [*numeric, *categorical]

    def dataset(frame: pd.DataFrame) -> Any:
        typed = frame[columns].copy()
        for name in numeric:
            typed[name] = pd.to_numeric(typed[name], errors="coerce").astype("float64")
        for name in categorical:
            typed[name] = typed[name].astype(str).where(typed[name].notna(), None)
        return Dataset.from_pandas(typed, data_definition=definition)

    report = Report([DataDriftPreset(), *quality_section(reference, numeric, categorical)])
    snapshot = report.run(dataset(current), dataset(reference))
    per_column: dict[str, Any] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            per_column[config["column"]] = _verdict(metric)
    drifted = sorted(name for name, entry in per_column.items() if entry["drifted"])
    share = len(drifted) / len(per_column) if per_column else 0.0
    return snapshot, {"share": share, "drifted_columns": drifted, "columns": per_column}


def prediction_drift(lake: Lake, ds: date, scores: pd.Series, days: int) -> dict[str, Any]:
    """The day's score distribution against the days before it (Evidently's ValueDrift)."""
    previous = [
        frame[SCORE]
        for k in range(1, days + 1)
        if (frame := predictions_of(lake, ds - timedelta(days=k))) is not None
    ]
    figures: dict[str, Any] = {
        "mean": float(scores.mean()),
        "quantiles": {f"p{q}": float(scores.quantile(q / 100)) for q in range(10, 100, 10)},
        "reference_days": len(previous),
    }
    if not previous:
        figures["drift"] = None
        figures["note"] = "no earlier predictions: the first scored day has nothing to compare"
        return figures
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=[SCORE])
    reference = pd.DataFrame({SCORE: pd.concat(previous, ignore_index=True)})
    snapshot = Report([ValueDrift(column=SCORE)]).run(
        Dataset.from_pandas(pd.DataFrame({SCORE: scores}), data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    [metric] = snapshot.dict()["metrics"]
    figures["drift"] = _verdict(metric)
    return figures


def realised_performance(lake: Lake, ds: date, horizon_days: int) -> dict[str, Any] | None:
    """The models' measures on the day whose labels matured at `ds`; None while they have not
    (that day unscored, or a silver day of its label window missing)."""
    scored_day = ds - timedelta(days=horizon_days)
    champion = predictions_of(lake, scored_day)
    window = [scored_day + timedelta(days=k) for k in range(1, horizon_days + 1)]
    if champion is None or not all(lake.exists(SILVER_ORDERS, day) for day in window):
        return None
    buyers = set()
    for day in window:
        if lake.files(SILVER_ORDERS, day):
            buyers |= set(_read(lake, SILVER_ORDERS, day, [CUSTOMER])[CUSTOMER])
    result: dict[str, Any] = {"ds": scored_day.isoformat(), "rows": len(champion)}
    for role, frame in (
        ("champion", champion),
        ("challenger", predictions_of(lake, scored_day, SHADOW_PREDICTIONS)),
    ):
        if frame is None:
            continue
        labels = (~frame[CUSTOMER].isin(buyers)).astype(int).to_numpy()
        measures = score_metrics(labels, frame[SCORE].to_numpy())
        result[role] = {
            "model_version": int(frame["model_version"].iloc[0]),
            "churn_rate": float(labels.mean()),
            **{name: measures[name] for name in REALISED if name in measures},
        }
    return result


@dataclass(frozen=True)
class DriftSummary:
    ds: date
    metrics: dict[str, Any]
    uri: str

    def line(self) -> str:
        features = self.metrics["features"]
        drifted = ", ".join(features["drifted_columns"]) or "none"
        realised = self.metrics.get("realised") or {}
        champion = realised.get("champion", {})
        perf = ""
        if champion.get("pr_auc") is not None:
            perf = (
                f"; realised PR AUC of v{champion['model_version']} on {realised['ds']}: "
                f"{champion['pr_auc']:.4f}"
            )
        return (
            f"ds={self.ds}: {len(features['drifted_columns'])} of {len(features['columns'])} "
            f"feature columns drifted (share {features['share']:.2f}: {drifted}); mean score "
            f"{self.metrics['predictions']['mean']:.4f}{perf}; Report: {self.uri}/{REPORT_FILE}"
        )


def drift(
    lake: Lake | Path | str, ds: date, tracking_uri: str, config: DriftConfig
) -> DriftSummary:
    """Judge day `ds` against the training set of the version that scored it (see the module)."""
    lake = Lake.of(lake)
    predictions = predictions_of(lake, ds)
    if predictions is None:
        raise DriftInputError(
            f"{partition_relative(PREDICTIONS, ds)}: no predictions in {lake.shown}, nothing to "
            f"judge; score the day first (churn_scoring for {ds})"
        )
    version = int(predictions["model_version"].iloc[0])
    reference, reference_at = reference_of(
        lake, connect(tracking_uri), version, config.reference_rows
    )
    return judge(lake, ds, predictions, reference, reference_at=reference_at, config=config)


def judge(
    lake: Lake,
    ds: date,
    predictions: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    reference_at: str,
    config: DriftConfig,
) -> DriftSummary:
    """Compute the day's figures against `reference` and publish report and metrics."""
    if not lake.files(CUSTOMER_FEATURES, ds):
        raise DriftInputError(f"{partition_relative(CUSTOMER_FEATURES, ds)}: no features to judge")
    current = _read(lake, CUSTOMER_FEATURES, ds)
    numeric, categorical = feature_columns(reference, current)
    snapshot, features = _evidently_drift(reference, current, numeric, categorical)
    metrics = {
        "ds": ds.isoformat(),
        "rows": len(current),
        "model_version": int(predictions["model_version"].iloc[0]),
        "reference": {"dataset": reference_at, "rows": len(reference)},
        "features": features,
        "predictions": prediction_drift(lake, ds, predictions[SCORE], config.prediction_days),
        "quality": data_quality(reference, current, numeric, categorical),
        "realised": realised_performance(lake, ds, config.horizon_days),
    }

    def audit(folder: Path) -> None:
        json.loads((folder / METRICS_FILE).read_text())  # complete and readable

    with lake.publishing(DRIFT, ds, audit=audit) as folder:
        snapshot.save_html(str(folder / REPORT_FILE))
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return DriftSummary(ds, metrics, lake.partition_uri(DRIFT, ds))


def read_series(lake: Lake) -> list[dict[str, Any]]:
    """Every published day's metrics.json, oldest first: the monitoring time series."""
    series = []
    for day in lake.partitions(DRIFT):
        data = lake.read_bytes(f"{partition_relative(DRIFT, day)}/{METRICS_FILE}")
        if data is not None:
            series.append(json.loads(data))
    return series


def run_drift(ds: date) -> str:
    """The CLI's `drift`: one day with this process's settings; the summary line."""
    from churnflow.settings import get_settings
    from churnflow.trend import log_to_mlflow, write_trend

    settings = get_settings()
    lake = Lake(settings.lake)
    summary = drift(lake, ds, settings.mlflow_tracking_uri, DriftConfig.from_settings(settings))
    uri, page = write_trend(lake, settings.drift_share)
    run_id = log_to_mlflow(connect(settings.mlflow_tracking_uri), summary.metrics, page)
    return f"{summary.line()}\ntrend: {uri} (and MLflow run {run_id})"
