"""Batch scoring: every active customer of day `ds` gets a churn score from the model that
served that day.

`churnflow score --ds D` reads `features/customer_features/ds=D`, scores it on Spark and
publishes `predictions/churn/ds=D` (customer_id, score, risk_decile, model_name,
model_version; `ds` is the partition) by write, audit, publish.

Which model: a day scored before is scored again with the version its ledger entry
(`predictions/churn_ledger/ds=D/entry.json`) records, so a rerun or a backfill after a new
champion writes the same bytes; a day never scored, or `--rescore-with-champion`, takes
`churn@champion` as it is when the step starts (resolved once to a fixed version: an alias
that moves mid-step never splits a day between two models). When `churn@challenger` is
another version, the same Spark pass scores the day with it too, into
`predictions/churn_shadow/ds=D`: the offline A/B the monitoring compares once labels mature.
Each execution is also an MLflow run of the `churn_scoring` experiment (day, versions, why).

Where the work happens: the step downloads the version's model folder once and ships it, as
bytes, inside the scoring function to Spark's Python workers, which unpack and load it once
per worker process (`_LOADED`), not per Arrow batch; executors need neither the MLflow server
nor a shared disk. Spark reads and scores; the scores come back as Arrow and the step sorts
them by customer, adds the risk deciles (`evaluation.risk_deciles`, the definition the
training metrics use) and writes one Parquet file with pyarrow, whose bytes depend only on
the rows (Spark's parquet-mr writer orders encodings differently per JVM: TRAPS.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churnflow.errors import ConfigError, DataError
from churnflow.evaluation import risk_deciles
from churnflow.lake import (
    CUSTOMER_FEATURES,
    PREDICTIONS,
    SCORING_LEDGER,
    SHADOW_PREDICTIONS,
    Lake,
    partition_relative,
)
from churnflow.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    SCORING_EXPERIMENT,
    TAG_DS,
    TAG_REASON,
    connect,
    provenance,
    version_by_alias,
    version_uri,
)
from churnflow.training_set import CUSTOMER

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from pyspark.sql import SparkSession

SCORE = "score"
DECILE = "risk_decile"
MODEL_NAME_COLUMN = "model_name"
MODEL_VERSION_COLUMN = "model_version"
PREDICTION_FILE = "part-00000.parquet"
LEDGER_FILE = "entry.json"
DECILES = 10
# The Spark Connect session every scoring step joins: its Python workers keep the model
# loaded from one day to the next (churnflow.spark.get_spark).
SPARK_SESSION = "scoring"
# Models a worker keeps loaded: the champion, a shadow, and the ones they just replaced.
LOADED_MODELS = 4

# How the day's model was chosen (ledger entries, MLflow run tags, the task log).
RECORDED, FIRST, RESCORED = "recorded", "first", "rescore-with-champion"

# MLflow signature types -> the Arrow types of a feature column that satisfy them. Scoring
# casts every number to float64 (FeatureSpec.inputs), so integers may feed double inputs.
_INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")
_ACCEPTED = {
    "long": _INTEGERS,
    "integer": _INTEGERS,
    "double": (*_INTEGERS, "float", "double", "decimal"),
    "float": (*_INTEGERS, "float", "double", "decimal"),
    "string": ("string", "large_string"),
    "boolean": ("bool",),
}


class ScoringInputError(DataError):
    """The day's features are missing, empty, or do not carry what the model reads."""


class ScoringOutputError(DataError):
    """The scores break a rule of the predictions contract; nothing is published."""


class NoModelError(ConfigError):
    """The registry has no version to score with (no champion, or a recorded one is gone)."""


# --- the ledger -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    """Which versions scored day `ds`, when, and why: the record a rerun reuses."""

    ds: str
    model_name: str
    model_version: int
    shadow_version: int | None
    rows: int
    scored_at: str
    how: str
    scoring_run: str

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()


def ledger_path(ds: date) -> str:
    return f"{partition_relative(SCORING_LEDGER, ds)}/{LEDGER_FILE}"


def read_ledger(lake: Lake, ds: date) -> LedgerEntry | None:
    data = lake.read_bytes(ledger_path(ds))
    if data is None:
        return None
    try:
        return LedgerEntry(**json.loads(data))
    except (TypeError, ValueError) as err:
        raise ScoringInputError(
            f"{ledger_path(ds)}: not a scoring ledger entry ({err}); it records which model "
            "version scored the day. Restore it, or delete it and rerun with "
            "--rescore-with-champion"
        ) from err


# --- the day's features ---------------------------------------------------------------------


@dataclass(frozen=True)
class DayFeatures:
    ds: date
    uri: str
    rows: int
    schema: pa.Schema
    # The partition's data files, read by name: the shared Spark Connect session caches the
    # analysed plan of a repeated read (Spark 4's plan cache), file listing included, so a
    # rerun after the day's features were rebuilt would read the old, deleted files.
    files: tuple[str, ...] = ()

    @property
    def dataset(self) -> str:
        return partition_relative(CUSTOMER_FEATURES, self.ds)


def day_features(lake: Lake, ds: date) -> DayFeatures:
    """The published features of `ds`, from Parquet footers only (no Spark job)."""
    dataset = partition_relative(CUSTOMER_FEATURES, ds)
    files = lake.files(CUSTOMER_FEATURES, ds)
    if not files:
        raise ScoringInputError(
            f"{dataset}: no published features in {lake.shown} (the partition is missing or "
            f"holds no data file); run churn_features for {ds} first"
        )
    schema, rows = None, 0
    for item in files:
        try:
            metadata = pq.read_metadata(item.location, filesystem=lake.filesystem)
        except (OSError, pa.ArrowInvalid) as err:
            raise ScoringInputError(
                f"{lake.relative(item.path)}: unreadable Parquet ({err})"
            ) from err
        rows += metadata.num_rows
        schema = schema or metadata.schema.to_arrow_schema()
    if rows == 0 or schema is None:
        raise ScoringInputError(
            f"{dataset}: the features hold 0 rows: no active customer to score, which means "
            "the day was built from no orders; rebuild it (churn_features) before scoring"
        )
    uris = tuple(item.uri for item in files)
    return DayFeatures(ds, lake.partition_uri(CUSTOMER_FEATURES, ds), rows, schema, uris)


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """One registered version, packed for Spark's Python workers."""

    version: int
    run_id: str
    columns: tuple[str, ...]
    archive: bytes

    @property
    def key(self) -> str:
        """Unique per model folder: a version number alone repeats across registries."""
        digest = hashlib.sha256(self.archive).hexdigest()[:16]
        return f"{MODEL_NAME}/{self.version}/{digest}"


def _accepts(wanted: str, arrow_type: pa.DataType) -> bool:
    name = "decimal" if pa.types.is_decimal(arrow_type) else str(arrow_type)
    return name in _ACCEPTED.get(wanted, (wanted,))


def signature_columns(folder: Path, features: DayFeatures, version: int) -> tuple[str, ...]:
    """The model's input columns, once each is found in the features with a type it takes."""
    from mlflow.models import Model

    signature = Model.load(str(folder)).signature
    if signature is None or signature.inputs is None:
        raise ConfigError(f"{MODEL_NAME} v{version}: the logged model has no input signature")
    problems = []
    for spec in signature.inputs.inputs:
        wanted = spec.type.name
        if spec.name not in features.schema.names:
            problems.append(f"{spec.name} ({wanted}) is missing")
        elif not _accepts(wanted, features.schema.field(spec.name).type):
            found = features.schema.field(spec.name).type
            problems.append(f"{spec.name} is {found}, the model reads {wanted}")
    if problems:
        raise ScoringInputError(
            f"{MODEL_NAME} v{version} cannot score {features.dataset}: its signature does not "
            f"match the day's feature columns: {'; '.join(problems)}. The features changed "
            "since the model was trained: retrain (churn_training), or score with a version "
            "trained on these columns"
        )
    return tuple(spec.name for spec in signature.inputs.inputs)


def pack_model(folder: Path, features: DayFeatures, version: int, run_id: str) -> ServedModel:
    """A model folder, its signature checked against the day, packed for the workers."""
    columns = signature_columns(folder, features, version)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    return ServedModel(version, run_id, columns, buffer.getvalue())


def fetch_model(version: ModelVersion, features: DayFeatures, tracking_uri: str) -> ServedModel:
    """Download a registered version's model folder and pack it (`pack_model`)."""
    import mlflow.artifacts

    # A handful of small files: a progress bar per download is noise in a task log.
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    with tempfile.TemporaryDirectory(prefix="churnflow-score-") as temporary:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=version_uri(version), dst_path=temporary, tracking_uri=tracking_uri
        )
        return pack_model(Path(folder), features, int(version.version), version.run_id or "")


# --- on Spark's Python workers ------------------------------------------------------------------

# Models this worker process has loaded, by ServedModel.key: Spark reuses a Python worker
# for many tasks, and each task unpickles the scoring function (archive bytes included) but
# finds the model here after its first.
_LOADED: dict[str, Any] = {}


def loaded_model(model: ServedModel) -> Any:
    """The ChurnModel of `model`, unpacked and loaded through MLflow once per process."""
    found = _LOADED.get(model.key)
    if found is None:
        import mlflow.pyfunc

        folder = Path(tempfile.mkdtemp(prefix="churnflow-model-"))
        try:
            with tarfile.open(fileobj=io.BytesIO(model.archive), mode="r:") as tar:
                tar.extractall(folder, filter="data")
            found = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        while len(_LOADED) >= LOADED_MODELS:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[model.key] = found
    return found


def score_batches(
    models: Sequence[ServedModel],
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The mapInPandas function: per Arrow batch, customer_id and one score per model."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        from churnflow.models import churn_probability

        loaded = [loaded_model(model) for model in models]
        for batch in batches:
            out = pd.DataFrame({CUSTOMER: batch[CUSTOMER]})
            for index, model in enumerate(loaded):
                inputs = model.spec.inputs(batch)
                out[f"{SCORE}_{index}"] = churn_probability(model.estimator, inputs)
            yield out

    return score


def score_features(
    spark: SparkSession, files: Sequence[str], models: Sequence[ServedModel]
) -> pa.Table:
    """One Spark pass over the day's feature files with every model; customer_id, score_0, ..."""
    columns = sorted({name for model in models for name in model.columns} - {CUSTOMER})
    frame = spark.read.parquet(*files).select(CUSTOMER, *columns)
    schema = ", ".join([f"{CUSTOMER} string", *(f"{SCORE}_{i} double" for i in range(len(models)))])
    return frame.mapInPandas(score_batches(models), schema).toArrow()


# --- the predictions ------------------------------------------------------------------------


def predictions_table(customers: pa.Array, scores: pa.Array, version: int) -> pa.Table:
    """The published rows, sorted by customer: deciles then depend on the rows only."""
    order = pc.sort_indices(customers)
    customers, scores = customers.take(order), scores.take(order)
    values = scores.to_numpy(zero_copy_only=False)
    deciles = risk_deciles(np.nan_to_num(values, nan=-1.0))
    rows = len(customers)
    return pa.table(
        {
            CUSTOMER: customers,
            SCORE: scores,
            DECILE: pa.array(deciles, pa.int32()),
            MODEL_NAME_COLUMN: pa.array([MODEL_NAME] * rows, pa.string()),
            MODEL_VERSION_COLUMN: pa.array(np.full(rows, version), pa.int64()),
        }
    )


def audit_predictions(table: pa.Table, expected_rows: int, where: str) -> None:
    """The predictions contract: one row per active customer, probabilities, every decile."""
    rows = table.num_rows
    problems = []
    if rows != expected_rows:
        problems.append(f"{rows} rows, but the day has {expected_rows} active customers")
    customers = table[CUSTOMER]
    if customers.null_count:
        problems.append(f"{CUSTOMER}: {customers.null_count} null(s)")
    if pc.count_distinct(customers).as_py() != rows - customers.null_count:
        problems.append(f"{CUSTOMER}: not unique (a customer appears twice in the features)")
    scores = table[SCORE].to_numpy(zero_copy_only=False)
    outside = int(np.sum(~np.isfinite(scores) | (scores < 0) | (scores > 1)))
    if outside:
        problems.append(f"{SCORE}: {outside} value(s) null or outside [0, 1]")
    deciles = set(pc.unique(table[DECILE]).to_pylist())
    # Every decile 1..10; a day with fewer than 10 customers has one decile per row.
    wanted = set(risk_deciles(np.zeros(min(rows, DECILES))).tolist())
    if deciles != wanted:
        problems.append(f"{DECILE}: found {sorted(deciles)}, expected {sorted(wanted)}")
    if problems:
        raise ScoringOutputError(
            f"{where}: the scores break the predictions contract: " + "; ".join(problems)
        )


def publish_predictions(lake: Lake, dataset: str, ds: date, table: pa.Table, rows: int) -> str:
    """Write, audit (read back from the staged file), publish one day's predictions."""
    where = partition_relative(dataset, ds)

    def audit(folder: Path) -> None:
        audit_predictions(pq.read_table(folder / PREDICTION_FILE), rows, where)

    with lake.publishing(dataset, ds, audit=audit) as folder:
        pq.write_table(table, folder / PREDICTION_FILE)
    return lake.partition_uri(dataset, ds)


# --- choosing the versions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    model: ModelVersion
    shadow: ModelVersion | None
    how: str
    why: str


def _version(client: MlflowClient, number: int) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(MODEL_NAME, str(number))
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def choose_versions(
    client: MlflowClient, uri: str, ds: date, recorded: LedgerEntry | None, rescore: bool
) -> Choice:
    """The day's recorded versions, or the champion (and a differing challenger) of now."""
    champion = version_by_alias(client, CHAMPION)
    if recorded is not None and not rescore:
        model = _version(client, recorded.model_version)
        if model is None:
            raise NoModelError(
                f"ds={ds} was scored with {MODEL_NAME} v{recorded.model_version} ("
                f"{ledger_path(ds)}), which the registry at {uri} no longer has; rescore the "
                "day with the current champion (--rescore-with-champion)"
            )
        shadow = None
        if recorded.shadow_version is not None:
            shadow = _version(client, recorded.shadow_version)
        now = f"v{champion.version}" if champion else "none"
        why = (
            f"ds={ds} was scored with v{model.version} on {recorded.scored_at}: scoring it with "
            f"v{model.version} again so the day comes out the same (champion now: {now}; "
            "--rescore-with-champion to use it)"
        )
        if recorded.shadow_version is not None and shadow is None:
            why += f"; its shadow v{recorded.shadow_version} is gone from the registry: no shadow"
        return Choice(model, shadow, RECORDED, why)
    if champion is None:
        raise NoModelError(
            f"{MODEL_NAME} has no @{CHAMPION} in the registry at {uri}: nothing may score "
            f"ds={ds} yet. Train and promote a model first (churn_training, or `churnflow "
            "train` then `churnflow promote`)"
        )
    challenger = version_by_alias(client, CHALLENGER)
    shadow = challenger if challenger and challenger.version != champion.version else None
    if recorded is None:
        how, why = FIRST, f"ds={ds} was never scored: using the champion, v{champion.version}"
    else:
        how = RESCORED
        before = f"v{recorded.model_version} scored ds={ds} on {recorded.scored_at}"
        why = f"--rescore-with-champion: the champion, v{champion.version} ({before})"
    return Choice(champion, shadow, how, why)


# --- the step -------------------------------------------------------------------------------


# The champion's predictions, then the challenger's when it is scored beside it.
SCORED_DATASETS = (PREDICTIONS, SHADOW_PREDICTIONS)


class Phases:
    """Seconds per phase of the step, for the task log: where a day's cost goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


@dataclass(frozen=True)
class ScoringSummary:
    ds: date
    rows: int
    model_version: int
    shadow_version: int | None
    how: str
    uri: str
    seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        shadow = f", shadow v{self.shadow_version}" if self.shadow_version else ""
        spent = ", ".join(f"{name} {value:.2f} s" for name, value in self.seconds.items())
        return (
            f"ds={self.ds}: {self.rows} customers scored with {MODEL_NAME} v{self.model_version}"
            f" ({self.how}{shadow}) -> {self.uri}\ntime: {spent}"
        )


def _experiment_id(client: MlflowClient) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(SCORING_EXPERIMENT)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(SCORING_EXPERIMENT)
    except MlflowException:  # a parallel day created it first
        found = client.get_experiment_by_name(SCORING_EXPERIMENT)
        if found is None:
            raise
        return found.experiment_id


def record_run(client: MlflowClient, ds: date, choice: Choice, tables: dict[str, pa.Table]) -> str:
    """The MLflow side of the ledger: one run per execution, tagged with the day."""
    from mlflow.entities import Metric

    tags = {
        TAG_DS: ds.isoformat(),
        TAG_REASON: choice.how,
        "churnflow.model_version": str(choice.model.version),
        "churnflow.model_uri": version_uri(choice.model),
        "churnflow.why": choice.why[:5000],
        **provenance(),
    }
    if choice.shadow is not None:
        tags["churnflow.shadow_version"] = str(choice.shadow.version)
    run = client.create_run(_experiment_id(client), run_name=f"score ds={ds}", tags=tags)
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    metrics = []
    for name, table in tables.items():
        scores = table[SCORE].to_numpy(zero_copy_only=False)
        figures = {"rows": float(table.num_rows), "score_mean": float(np.mean(scores))}
        figures |= {f"score_p{q}": float(np.quantile(scores, q / 100)) for q in (10, 50, 90)}
        metrics += [Metric(f"{name}.{key}", value, stamp, 0) for key, value in figures.items()]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def score(
    lake: Lake | Path | str,
    ds: date,
    tracking_uri: str,
    *,
    rescore_with_champion: bool = False,
    spark: SparkSession | None = None,
    log: Callable[[str], None] = print,
) -> ScoringSummary:
    """Score day `ds` and publish its predictions (and shadow predictions); see the module.

    Everything that can fail on input (features, registry, signature) is checked before Spark
    runs, and nothing is published until every output passed its audit.
    """
    lake = Lake.of(lake)
    phases = Phases()
    with phases("registry"):
        features = day_features(lake, ds)
        client = connect(tracking_uri)
        recorded = read_ledger(lake, ds)
        choice = choose_versions(client, tracking_uri, ds, recorded, rescore_with_champion)
        log(choice.why)
        models = [fetch_model(choice.model, features, tracking_uri)]
        if choice.shadow is not None:
            models.append(fetch_model(choice.shadow, features, tracking_uri))
            log(f"shadow: @{CHALLENGER} is v{choice.shadow.version}, scored beside the champion")
    with phases("spark"):
        if spark is None:
            from churnflow.spark import get_spark

            spark = get_spark(shared=SPARK_SESSION)
        scored = score_features(spark, features.files, models)
    with phases("publish"):
        outputs = {
            dataset: predictions_table(scored[CUSTOMER], scored[f"{SCORE}_{i}"], model.version)
            for i, (dataset, model) in enumerate(zip(SCORED_DATASETS, models, strict=False))
        }
        for dataset, table in outputs.items():
            publish_predictions(lake, dataset, ds, table, features.rows)
        if SHADOW_PREDICTIONS not in outputs and lake.exists(SHADOW_PREDICTIONS, ds):
            lake.remove(SHADOW_PREDICTIONS, ds)
            log(f"removed {partition_relative(SHADOW_PREDICTIONS, ds)}: no challenger differs now")
    with phases("record"):
        run_id = record_run(client, ds, choice, outputs)
        entry = LedgerEntry(
            ds=ds.isoformat(),
            model_name=MODEL_NAME,
            model_version=models[0].version,
            shadow_version=models[1].version if len(models) > 1 else None,
            rows=features.rows,
            scored_at=datetime.now(UTC).isoformat(timespec="seconds"),
            how=choice.how,
            scoring_run=run_id,
        )
        lake.write_bytes(ledger_path(ds), entry.to_json())
    return ScoringSummary(
        ds, features.rows, entry.model_version, entry.shadow_version, choice.how,
        lake.partition_uri(PREDICTIONS, ds), phases.seconds,
    )  # fmt: skip


def run_score(ds: date, rescore_with_champion: bool | None = None) -> str:
    """The CLI's `score`: one day with this process's settings; the summary line."""
    from churnflow.settings import get_settings

    settings = get_settings()
    rescore = (
        settings.rescore_with_champion if rescore_with_champion is None else rescore_with_champion
    )
    summary = score(
        Lake(settings.lake), ds, settings.mlflow_tracking_uri, rescore_with_champion=rescore
    )
    return summary.line()
