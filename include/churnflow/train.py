"""`churnflow train --as-of D`: fit the churn models on the published training set of D, log
them to MLflow, register the better one as `churn@challenger`.

One MLflow parent run per training, one child run per model type (`sklearn`, `lightning`),
both kept whatever is chosen. Each child logs its parameters, its metrics on the validation
and holdout splits overall and per slice (churnflow.evaluation), the network's per-epoch
losses as metric histories, ROC/PR/calibration/lift and permutation-importance plots, the
training set as a dataset input (digest, lake URI, snapshot range), and the model with its
signature and an input example. The candidate is the model with the better validation PR AUC
(the holdout is the promotion gate's, and choosing on it would spend it), unless a model type
is asked for; the choice and its reason go on the parent run and the registered version.

The step reads only the published training set (`training-set` wrote and audited it): its
files are checked against the manifest's sha256s first, then every split's size and classes,
then the MLflow server; all of that before a model is fitted. Registration is the last thing:
a failure before it leaves no version; a failure while tagging or aliasing a new version
deletes that version, so no alias ever points at a half-registered model.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churnflow.errors import ConfigError, DataError
from churnflow.evaluation import (
    SliceResult,
    evaluation_figures,
    feature_importance_figure,
    flat_metrics,
    score_metrics,
    slice_metrics,
)
from churnflow.lake import CUSTOMER_FEATURES, Lake
from churnflow.models import (
    MODEL_TYPES,
    ChurnModel,
    FeatureSpec,
    FitResult,
    TrainingConfig,
    churn_probability,
    fit,
    requirements,
)
from churnflow.registry import (
    CHALLENGER,
    EXPERIMENT,
    MODEL_NAME,
    TAG_AS_OF,
    TAG_DATASET_DIGEST,
    TAG_DATASET_URI,
    TAG_MODEL_TYPE,
    TAG_PARENT_RUN,
    TAG_REASON,
    connect,
    provenance,
)
from churnflow.training_set import (
    AS_OF_KEY,
    EXAMPLES,
    HOLDOUT,
    LABEL,
    SPLIT,
    SPLITS,
    TRAIN,
    TRAINING_CHURN,
    VALIDATION,
    file_sha256,
    read_manifest,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from churnflow.settings import Settings

AUTO = "auto"
CHOICE_METRIC = "pr_auc"
IMPORTANCE_ROWS = 4000
IMPORTANCE_REPEATS = 3


class TrainingDataError(DataError):
    """The published training set cannot be trained on (missing, altered, too small)."""


@dataclass(frozen=True)
class TrainingData:
    """The published training set of one as-of date, loaded and checked."""

    as_of: date
    manifest: dict[str, Any]
    frame: pd.DataFrame
    spec: FeatureSpec

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame[SPLIT] == name].reset_index(drop=True)

    @property
    def uri(self) -> str:
        return str(self.manifest["uri"])

    @property
    def digest(self) -> str:
        return str(self.manifest["data"]["digest"])

    @property
    def snapshots(self) -> list[str]:
        return [str(day) for day in self.manifest["sources"][CUSTOMER_FEATURES]["partitions"]]


def load_training_data(lake: Lake, as_of: date, *, min_rows: int = 1) -> TrainingData:
    """The training set of `as_of`, its files checked against the manifest, every split big
    enough and with both classes; TrainingDataError naming the file, split or rule otherwise."""
    manifest = read_manifest(lake, as_of)
    where = lake.partition_uri(TRAINING_CHURN, as_of, AS_OF_KEY)
    if manifest is None:
        raise TrainingDataError(
            f"no training set is published for as_of={as_of} at {where}: run `churnflow "
            f"training-set --as-of {as_of}` first"
        )
    stored = {item.name: item for item in lake.files(TRAINING_CHURN, as_of, AS_OF_KEY, EXAMPLES)}
    for item in manifest["data"]["files"]:
        found = stored.get(item["name"])
        actual = file_sha256(found.location, lake.filesystem) if found else "missing"
        if actual != item["sha256"]:
            raise TrainingDataError(
                f"training set {where}: file {EXAMPLES}/{item['name']} does not match its "
                f"manifest (sha256 {actual}, manifest {item['sha256']}): rebuild it with "
                f"`churnflow training-set --as-of {as_of}`"
            )
    frame = pd.read_parquet([item.location for item in stored.values()], filesystem=lake.filesystem)
    problems = []
    for name in SPLITS:
        labels = frame.loc[frame[SPLIT] == name, LABEL]
        if len(labels) < min_rows:
            problems.append(f"split {name} has {len(labels)} examples (at least {min_rows})")
        elif labels.nunique() < 2:
            only = "churned" if labels.iloc[0] == 1 else "retained"
            problems.append(f"split {name} holds only {only} customers (column {LABEL})")
    if problems:
        raise TrainingDataError(f"training set {where}: " + "; ".join(problems))
    return TrainingData(as_of, manifest, frame, FeatureSpec.of(frame))


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on one split, measured overall and per slice."""

    split: str
    scores: np.ndarray
    overall: dict[str, float]
    slices: list[SliceResult]

    @classmethod
    def of(cls, split: str, frame: pd.DataFrame, scores: np.ndarray) -> Evaluation:
        labels = frame[LABEL].to_numpy()
        return cls(
            split, scores, score_metrics(labels, scores), slice_metrics(frame, labels, scores)
        )

    def flat(self) -> dict[str, float]:
        return flat_metrics(self.split, self.overall, self.slices)


@dataclass
class Candidate:
    """One model type's fit, its evaluations and where MLflow keeps it."""

    fit: FitResult
    evaluations: dict[str, Evaluation]
    run_id: str
    model_uri: str
    importances: dict[str, float] = field(default_factory=dict)

    @property
    def validation_score(self) -> float:
        return self.evaluations[VALIDATION].overall.get(CHOICE_METRIC, float("nan"))


@dataclass(frozen=True)
class TrainingOutcome:
    as_of: date
    parent_run_id: str
    candidates: dict[str, Candidate]
    chosen: str
    reason: str
    version: str
    tracking_uri: str
    experiment_id: str

    def line(self) -> str:
        scores = ", ".join(
            f"{name} validation PR AUC {c.validation_score:.4f}"
            for name, c in self.candidates.items()
        )
        holdout = self.candidates[self.chosen].evaluations[HOLDOUT].overall.get(CHOICE_METRIC)
        return (
            f"as_of={self.as_of}: {scores}; chose {self.chosen} ({self.reason}); registered "
            f"{MODEL_NAME} version {self.version} as @{CHALLENGER} (holdout PR AUC "
            f"{holdout:.4f}); run {self.tracking_uri}/#/experiments/{self.experiment_id}/runs/"
            f"{self.parent_run_id}"
        )


def _importances(
    estimator: Any, frame: pd.DataFrame, spec: FeatureSpec, seed: int
) -> dict[str, float]:
    """Permutation importance: the mean drop in validation PR AUC when one raw input column is
    shuffled. Both model types are measured the same way, on the columns people know rather
    than on their encoded forms."""
    from sklearn.metrics import average_precision_score

    sample = frame.sample(n=min(IMPORTANCE_ROWS, len(frame)), random_state=seed)
    inputs, labels = spec.inputs(sample).reset_index(drop=True), sample[LABEL].to_numpy()
    base = average_precision_score(labels, churn_probability(estimator, inputs))
    rng = np.random.default_rng(seed)
    drops: dict[str, float] = {}
    for name in inputs.columns:
        scores = []
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = inputs.copy()
            shuffled[name] = rng.permutation(shuffled[name].to_numpy())
            scores.append(average_precision_score(labels, churn_probability(estimator, shuffled)))
        drops[str(name)] = float(base - np.mean(scores))
    return drops


def _log_history(client: MlflowClient, run_id: str, history: dict[str, list[float]]) -> None:
    """Per-epoch losses as metric histories (step = epoch), in one request."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"epoch_{name}", value, now, step)
        for name, values in history.items()
        for step, value in enumerate(values)
    ]
    if metrics:
        client.log_batch(run_id, metrics=metrics)


def _dataset(data: TrainingData) -> Any:
    import mlflow.data

    return mlflow.data.from_pandas(
        data.frame,
        source=data.uri,
        targets=LABEL,
        name=f"churn-training-as_of={data.as_of}",
        digest=data.digest[:32],  # MLflow keeps 36 characters; the tag has the whole digest
    )


def _dataset_tags(data: TrainingData) -> dict[str, str]:
    snapshots = data.snapshots
    return {
        "digest": data.digest,
        "lake_uri": data.uri,
        "snapshots": f"{snapshots[0]}..{snapshots[-1]} ({len(snapshots)})",
        "holdout_snapshot": str(data.manifest["window"]["newest_matured"]),
    }


def _train_one(
    client: MlflowClient,
    data: TrainingData,
    model_type: str,
    config: TrainingConfig,
    parent_tags: dict[str, str],
) -> Candidate:
    import mlflow
    from mlflow.models import infer_signature

    train, validation = data.split(TRAIN), data.split(VALIDATION)
    judged = {VALIDATION: validation, HOLDOUT: data.split(HOLDOUT)}
    with mlflow.start_run(
        run_name=model_type, nested=True, tags=parent_tags | {TAG_MODEL_TYPE: model_type}
    ) as run:
        mlflow.log_input(_dataset(data), context="training", tags=_dataset_tags(data))
        print(f"{model_type}: fitting on {len(train)} examples ({len(validation)} validate)")
        started = time.monotonic()
        result = fit(model_type, train, validation, data.spec, config)
        fit_s = time.monotonic() - started
        epochs = f", {len(result.history.get('val_loss', []))} epochs" if result.history else ""
        print(f"{model_type}: fitted in {fit_s:.1f} s{epochs}; evaluating and logging")
        mlflow.log_params({f"{model_type}.{k}": v for k, v in result.params.items()})
        mlflow.log_param("features", ",".join(data.spec.columns))
        _log_history(client, run.info.run_id, result.history)
        evaluations = {
            name: Evaluation.of(
                name, frame, churn_probability(result.estimator, data.spec.inputs(frame))
            )
            for name, frame in judged.items()
        }
        metrics = {"fit_seconds": fit_s}
        if result.best_epoch is not None:
            metrics["best_epoch"] = float(result.best_epoch)
        for evaluation in evaluations.values():
            metrics |= evaluation.flat()
        mlflow.log_metrics(metrics)
        for split, evaluation in evaluations.items():
            curves = {model_type: (judged[split][LABEL].to_numpy(), evaluation.scores)}
            for name, figure in evaluation_figures(curves).items():
                mlflow.log_figure(figure, f"plots/{split}/{name}")
        importances = _importances(result.estimator, validation, data.spec, config.seed)
        mlflow.log_figure(
            feature_importance_figure(
                importances, f"{model_type}: permutation importance (drop in validation PR AUC)"
            ),
            "plots/feature_importance.png",
        )
        mlflow.log_dict(importances, "feature_importance.json")
        example = data.spec.signature_example(validation.head(5))
        signature = infer_signature(
            example, churn_probability(result.estimator, data.spec.inputs(example))
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ChurnModel(result.estimator, data.spec, model_type),
            signature=signature,
            input_example=example,
            pip_requirements=requirements(model_type),
        )
    return Candidate(result, evaluations, run.info.run_id, info.model_uri, importances)


def _choose(candidates: dict[str, Candidate], asked: str) -> tuple[str, str]:
    if asked != AUTO:
        return asked, f"model type {asked} asked for"
    ranked = sorted(
        candidates.items(), key=lambda item: -np.nan_to_num(item[1].validation_score, nan=-1)
    )
    best = ranked[0][0]
    if len(ranked) == 1:
        return best, "the only model type trained"
    figures = " vs ".join(f"{name} {c.validation_score:.4f}" for name, c in ranked)
    return best, f"better validation PR AUC ({figures})"


def _register(client: MlflowClient, candidate: Candidate, tags: dict[str, str], reason: str) -> str:
    """Register the chosen model and point `challenger` at it; on any failure after the
    version exists, delete it again (no alias moves, no half-tagged version stays)."""
    import mlflow

    version = mlflow.register_model(candidate.model_uri, MODEL_NAME, await_registration_for=60)
    try:
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version.version, key, value)
        client.update_model_version(MODEL_NAME, version.version, description=reason)
        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version.version)
    except BaseException:
        client.delete_model_version(MODEL_NAME, version.version)
        raise
    return str(version.version)


def train(
    lake: Lake,
    as_of: date,
    tracking_uri: str,
    *,
    model_type: str = AUTO,
    reason: str | None = None,
    config: TrainingConfig | None = None,
    min_rows: int = 1,
) -> TrainingOutcome:
    """Train, log and register the churn model of `as_of` (see the module docstring)."""
    if model_type != AUTO and model_type not in MODEL_TYPES:
        raise ConfigError(
            f"--model-type {model_type!r}: expected {AUTO} or one of {', '.join(MODEL_TYPES)}"
        )
    config = config or TrainingConfig()
    data = load_training_data(lake, as_of, min_rows=min_rows)
    client = connect(tracking_uri)
    import mlflow

    experiment = mlflow.set_experiment(EXPERIMENT)
    types: Sequence[str] = MODEL_TYPES if model_type == AUTO else (model_type,)
    why = reason or "manual"
    tags = provenance() | {
        TAG_AS_OF: str(as_of),
        TAG_REASON: why,
        TAG_DATASET_DIGEST: data.digest,
        TAG_DATASET_URI: data.uri,
    }
    with mlflow.start_run(run_name=f"churn as_of={as_of}", tags=tags) as parent:
        mlflow.log_input(_dataset(data), context="training", tags=_dataset_tags(data))
        mlflow.log_params(
            {
                "as_of": str(as_of),
                "model_types": ",".join(types),
                "seed": config.seed,
                "horizon_days": data.manifest["label"]["horizon_days"],
                **{f"rows.{name}": data.manifest["splits"][name]["rows"] for name in SPLITS},
            }
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "manifest.json"
            path.write_text(json.dumps(data.manifest, indent=2, sort_keys=True))
            mlflow.log_artifact(str(path), "training_set")
        child_tags = tags | {TAG_PARENT_RUN: parent.info.run_id}
        candidates = {name: _train_one(client, data, name, config, child_tags) for name in types}
        chosen, choice = _choose(candidates, model_type)
        validation = data.split(VALIDATION)
        curves = {
            name: (validation[LABEL].to_numpy(), c.evaluations[VALIDATION].scores)
            for name, c in candidates.items()
        }
        for name, figure in evaluation_figures(curves).items():
            mlflow.log_figure(figure, f"plots/validation/{name}")
        mlflow.set_tags({"churnflow.chosen": chosen, "churnflow.choice": choice})
        version = _register(
            client,
            candidates[chosen],
            tags
            | {
                TAG_MODEL_TYPE: chosen,
                TAG_PARENT_RUN: parent.info.run_id,
                "churnflow.choice": choice,
            },
            f"{chosen} trained as of {as_of} ({why}); chosen: {choice}",
        )
        mlflow.set_tag("churnflow.registered_version", version)
    return TrainingOutcome(
        as_of,
        parent.info.run_id,
        candidates,
        chosen,
        choice,
        version,
        tracking_uri,
        experiment.experiment_id,
    )


def training_config(settings: Settings) -> TrainingConfig:
    return TrainingConfig(seed=settings.training_seed, max_epochs=settings.training_max_epochs)


def run_train(as_of: date, model_type: str = AUTO, reason: str | None = None) -> str:
    """The CLI's `train`: one as-of date with this process's settings; the summary line."""
    from churnflow.settings import get_settings

    settings = get_settings()
    outcome = train(
        Lake(settings.lake),
        as_of,
        settings.mlflow_tracking_uri,
        model_type=model_type,
        reason=reason,
        config=training_config(settings),
        min_rows=settings.training_min_rows,
    )
    return outcome.line()
