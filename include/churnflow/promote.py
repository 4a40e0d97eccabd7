"""`churnflow promote`: the gate that decides whether `churn@challenger` becomes `champion`.

Both models score the same rows: the holdout split of the challenger's training set (the
newest matured snapshot, which neither model chose anything on). The challenger is promoted
only when every rule holds:

- its holdout PR AUC beats the champion's by at least `promotion_margin`;
- no slice (tenure band, spend band, country) with enough rows and both classes loses more
  than `promotion_slice_tolerance` of PR AUC against the champion (an overall gain must not
  come from abandoning a market);
- its expected calibration error is at most `promotion_max_ece` (scores are read as
  probabilities downstream).

With no champion yet, the first model must beat the recency baseline (the longer since the last
order, the likelier the churn) by the margin, and meet the calibration bound. A version an
operator rolled back is never promoted again by the gate.

The decision and every rule's outcome are written as tags on the challenger's version
(`churnflow.promotion.*`) and logged as an MLflow run of the gate (holdout metrics of each model
and comparison plots); only then does `champion` move, and the version it replaced is recorded
on the new champion (`churnflow.previous_champion`) for `promote --rollback`. A refused
promotion is a decision, not a failure: the command exits 0 either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnflow.errors import DataError
from churnflow.evaluation import evaluation_figures, recency_scores
from churnflow.lake import PROMOTIONS, Lake, partition_relative
from churnflow.registry import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT,
    MODEL_NAME,
    TAG_AS_OF,
    connect,
    load_version,
    provenance,
    version_by_alias,
)
from churnflow.train import Evaluation, load_training_data
from churnflow.training_set import AS_OF_KEY, HOLDOUT, LABEL

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from churnflow.settings import Settings

METRIC = "pr_auc"
BASELINE = "recency baseline"
TAG_DECISION = "churnflow.promotion.decision"
TAG_REASONS = "churnflow.promotion.reasons"
TAG_COMPARED_WITH = "churnflow.promotion.compared_with"
TAG_DECIDED_AT = "churnflow.promotion.decided_at"
TAG_HOLDOUT = "churnflow.promotion.holdout"
TAG_PR_AUC = "churnflow.promotion.holdout_pr_auc"
OUTCOME_FILE = "decision.json"
TAG_PREVIOUS_CHAMPION = "churnflow.previous_champion"
TAG_ROLLED_BACK = "churnflow.rolled_back_at"
PROMOTED, REJECTED, UNCHANGED = "promoted", "rejected", "unchanged"


class PromotionError(DataError):
    """The gate cannot compare: no challenger, or a model that cannot score the holdout."""


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds (Settings' `promotion_*` fields)."""

    margin: float = 0.005
    slice_tolerance: float = 0.03
    max_ece: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        return cls(
            margin=settings.promotion_margin,
            slice_tolerance=settings.promotion_slice_tolerance,
            max_ece=settings.promotion_max_ece,
        )


@dataclass(frozen=True)
class Rule:
    """One rule of the gate and what it found."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclass(frozen=True)
class Decision:
    """What the gate decided about one challenger, and why."""

    outcome: str
    challenger: str
    compared_with: str
    rules: tuple[Rule, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    as_of: str = ""  # the training set whose holdout was compared on

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED

    @property
    def reasons(self) -> str:
        return "; ".join(rule.line() for rule in self.rules)

    def lines(self) -> list[str]:
        head = {
            PROMOTED: f"promoted {MODEL_NAME} version {self.challenger} to @{CHAMPION}",
            REJECTED: f"kept @{CHAMPION}: version {self.challenger} not promoted",
            UNCHANGED: f"version {self.challenger} is already @{CHAMPION}: nothing to decide",
        }[self.outcome]
        return [f"{head} (compared with {self.compared_with})"] + [
            f"  {rule.line()}" for rule in self.rules
        ]


def judge(
    challenger: Evaluation,
    champion: Evaluation | None,
    baseline: Evaluation,
    config: GateConfig,
    *,
    champion_name: str = CHAMPION,
) -> tuple[Rule, ...]:
    """The gate's rules on evaluations of the same holdout rows; pure, for tests."""
    reference, name = (champion, champion_name) if champion is not None else (baseline, BASELINE)
    ours, theirs = challenger.overall[METRIC], reference.overall[METRIC]
    gain = ours - theirs
    rules = [
        Rule(
            f"PR AUC vs {name}",
            gain >= config.margin,
            f"{ours:.4f} vs {theirs:.4f} ({gain:+.4f}; needs {config.margin:+.4f})",
        )
    ]
    if champion is not None:
        rules.append(_slices_rule(challenger, champion, config.slice_tolerance))
    ece = challenger.overall["ece"]
    rules.append(
        Rule("calibration", ece <= config.max_ece, f"ECE {ece:.4f} (at most {config.max_ece})")
    )
    return tuple(rules)


def _slices_rule(challenger: Evaluation, champion: Evaluation, tolerance: float) -> Rule:
    theirs = {(s.slicing, s.band): s for s in champion.slices}
    worse, compared, skipped = [], 0, []
    for mine in challenger.slices:
        other = theirs.get((mine.slicing, mine.band))
        if other is None or METRIC not in mine.metrics or METRIC not in other.metrics:
            skipped.append(f"{mine.slicing}={mine.band}")
            continue
        compared += 1
        loss = other.metrics[METRIC] - mine.metrics[METRIC]
        if loss > tolerance:
            worse.append(
                f"{mine.slicing}={mine.band} {mine.metrics[METRIC]:.4f} vs "
                f"{other.metrics[METRIC]:.4f} ({-loss:+.4f})"
            )
    detail = (
        f"{len(worse)} of {compared} slices lose more than {tolerance} PR AUC"
        + (f": {', '.join(worse)}" if worse else "")
        + (f" ({len(skipped)} too small or one-class: {', '.join(skipped)})" if skipped else "")
    )
    return Rule("slices vs champion", not worse, detail)


def _holdout_scores(version: ModelVersion, holdout: pd.DataFrame) -> np.ndarray:
    model = load_version(version)
    names = model.metadata.get_input_schema().input_names()
    missing = [name for name in names if name not in holdout.columns]
    if missing:
        raise PromotionError(
            f"{MODEL_NAME} version {version.version} reads column(s) {', '.join(missing)} that "
            f"the holdout does not have: it cannot be compared on this training set"
        )
    return np.asarray(model.predict(holdout[names]), dtype="float64").reshape(-1)


def _record(
    client: MlflowClient,
    decision: Decision,
    as_of: str,
    evaluations: dict[str, Evaluation],
    holdout: pd.DataFrame,
) -> None:
    """Tags on the challenger's version, and a run of the gate with its figures."""
    import mlflow

    tags = {
        TAG_DECISION: decision.outcome,
        TAG_REASONS: decision.reasons,
        TAG_COMPARED_WITH: decision.compared_with,
        TAG_DECIDED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        TAG_HOLDOUT: f"training set as_of={as_of}, split {HOLDOUT} ({len(holdout)} rows)",
        TAG_PR_AUC: "; ".join(f"{name} {value:.4f}" for name, value in decision.metrics.items()),
    }
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, decision.challenger, key, value)
    mlflow.set_experiment(EXPERIMENT)
    run_tags = provenance() | tags | {TAG_AS_OF: as_of, "churnflow.challenger": decision.challenger}
    with mlflow.start_run(run_name=f"promote v{decision.challenger} as_of={as_of}", tags=run_tags):
        for name, evaluation in evaluations.items():
            mlflow.log_metrics({f"{name}.{k}": v for k, v in evaluation.overall.items()})
        labels = holdout[LABEL].to_numpy()
        curves = {name: (labels, evaluation.scores) for name, evaluation in evaluations.items()}
        for name, figure in evaluation_figures(curves).items():
            mlflow.log_figure(figure, f"plots/holdout/{name}")


def promote(
    lake: Lake, tracking_uri: str, config: GateConfig, *, as_of: date | None = None
) -> Decision:
    """Run the gate on the current challenger (see the module docstring)."""
    client = connect(tracking_uri)
    challenger = version_by_alias(client, CHALLENGER)
    if challenger is None:
        raise PromotionError(
            f"no @{CHALLENGER} of {MODEL_NAME} in the registry at {tracking_uri}: run "
            "`churnflow train --as-of D` first"
        )
    champion = version_by_alias(client, CHAMPION)
    if champion is not None and champion.version == challenger.version:
        return Decision(UNCHANGED, str(challenger.version), f"@{CHAMPION}", ())
    day = as_of or _as_of_tag(challenger)
    holdout = load_training_data(lake, day).split(HOLDOUT)
    challenger_eval = Evaluation.of(HOLDOUT, holdout, _holdout_scores(challenger, holdout))
    evaluations = {f"challenger v{challenger.version}": challenger_eval}
    champion_eval = None
    champion_name = CHAMPION
    if champion is not None:
        champion_name = f"champion v{champion.version}"
        champion_eval = Evaluation.of(HOLDOUT, holdout, _holdout_scores(champion, holdout))
        evaluations[champion_name] = champion_eval
    baseline = Evaluation.of(HOLDOUT, holdout, recency_scores(holdout))
    evaluations[BASELINE] = baseline
    rules = list(
        judge(challenger_eval, champion_eval, baseline, config, champion_name=champion_name)
    )
    rolled_back = challenger.tags.get(TAG_ROLLED_BACK)
    if rolled_back:
        rules.append(Rule("not rolled back", False, f"an operator rolled it back at {rolled_back}"))
    outcome = PROMOTED if all(rule.passed for rule in rules) else REJECTED
    compared = champion_name if champion is not None else BASELINE
    scores = {name: evaluation.overall[METRIC] for name, evaluation in evaluations.items()}
    decision = Decision(
        outcome, str(challenger.version), compared, tuple(rules), scores, as_of=str(day)
    )
    _record(client, decision, str(day), evaluations, holdout)
    if decision.promoted:
        previous = "" if champion is None else str(champion.version)
        client.set_model_version_tag(
            MODEL_NAME, decision.challenger, TAG_PREVIOUS_CHAMPION, previous
        )
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, decision.challenger)
    return decision


def _as_of_tag(version: ModelVersion) -> date:
    text = version.tags.get(TAG_AS_OF)
    if not text:
        raise PromotionError(
            f"{MODEL_NAME} version {version.version} has no {TAG_AS_OF} tag: pass --as-of to "
            "name the training set whose holdout the gate should use"
        )
    return date.fromisoformat(text)


def rollback(tracking_uri: str) -> str:
    """Point `champion` back at the version it replaced (recorded when it was promoted)."""
    client = connect(tracking_uri)
    champion = version_by_alias(client, CHAMPION)
    if champion is None:
        raise PromotionError(
            f"no @{CHAMPION} of {MODEL_NAME} at {tracking_uri}: nothing to roll back"
        )
    previous = champion.tags.get(TAG_PREVIOUS_CHAMPION, "")
    if not previous:
        raise PromotionError(
            f"{MODEL_NAME} version {champion.version} was the first @{CHAMPION} (no "
            f"{TAG_PREVIOUS_CHAMPION} recorded): there is no earlier champion to restore"
        )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(MODEL_NAME, champion.version, TAG_ROLLED_BACK, now)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, previous)
    return (
        f"rolled back @{CHAMPION} of {MODEL_NAME} from version {champion.version} to version "
        f"{previous}; version {champion.version} is marked rolled back and the gate will not "
        "promote it again"
    )


def run_promote(as_of: date | None = None, *, rollback_champion: bool = False) -> str:
    """The CLI's `promote`: the gate with this process's settings, or `--rollback`."""
    from churnflow.settings import get_settings

    settings = get_settings()
    if rollback_champion:
        return rollback(settings.mlflow_tracking_uri)
    lake = Lake(settings.lake)
    decision = promote(
        lake, settings.mlflow_tracking_uri, GateConfig.from_settings(settings), as_of=as_of
    )
    if decision.as_of:
        record_outcome(lake, decision)
    return "\n".join(decision.lines())


def record_outcome(lake: Lake, decision: Decision) -> str:
    """`monitoring/promotions/as_of=D/decision.json`: what the training DAG reports (Slack)."""
    record = {
        "as_of": decision.as_of,
        "outcome": decision.outcome,
        "challenger": decision.challenger,
        "compared_with": decision.compared_with,
        "lines": decision.lines(),
        "metrics": decision.metrics,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    relative = partition_relative(PROMOTIONS, date.fromisoformat(decision.as_of), AS_OF_KEY)
    return lake.write_bytes(
        f"{relative}/{OUTCOME_FILE}", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    )
