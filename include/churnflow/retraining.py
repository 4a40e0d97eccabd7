"""Whether a day's monitoring figures call for retraining: once per drift episode.

A day crosses when its share of drifted feature columns reaches `CHURNFLOW_DRIFT_SHARE` or the
champion's realised PR AUC (labels matured) fell more than `CHURNFLOW_MAX_PR_AUC_DROP` below
its holdout PR AUC at promotion. A crossing day triggers `churn_training` unless
- a retraining is already queued or running (the DAG passes `--training-active`), or
- a trigger fired within `CHURNFLOW_RETRAINING_COOLDOWN_DAYS` before it: the same episode.
  The retraining it started was refused by the gate, or promoted a champion trained on the
  labels that had matured by then, mostly from before the drift: that champion's inputs still
  drift from its training set, so drift alone cannot say whether it copes. Within the cooldown
  only a champion promoted since whose realised PR AUC then fell past the limit (worse again)
  triggers; after it, a day that still crosses starts the next episode (by then labels from
  after the drift have matured for the next training).

`churnflow retraining-decision --ds D` reads `monitoring/drift/ds=D/metrics.json` and the
decisions of the days before it, and writes `monitoring/decisions/ds=D/decision.json`: the
action (`trigger`, `skip`, `none`), every reason, and the measures. The DAG triggers
`churn_training` only on `trigger`, and posts the decision to Slack. A rerun of a day decides
from the days before it, so it gives the same answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from churnflow.drift import METRICS_FILE, DriftInputError
from churnflow.lake import DECISIONS, DRIFT, Lake, partition_relative

DECISION_FILE = "decision.json"
TRIGGER, SKIP, NONE = "trigger", "skip", "none"


@dataclass(frozen=True)
class Thresholds:
    drift_share: float = 0.5
    max_pr_auc_drop: float = 0.1
    cooldown_days: int = 7

    @classmethod
    def from_settings(cls, settings: Any) -> Thresholds:
        return cls(
            settings.drift_share, settings.max_pr_auc_drop, settings.retraining_cooldown_days
        )


@dataclass(frozen=True)
class Decision:
    ds: str
    action: str
    reasons: list[str]
    champion_version: int | None
    measures: dict[str, Any] = field(default_factory=dict)
    decided_at: str = ""

    @property
    def line(self) -> str:
        return f"ds={self.ds}: {self.action}: " + "; ".join(self.reasons)

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()


def crossings(
    metrics: dict[str, Any], holdout_pr_auc: float | None, thresholds: Thresholds
) -> tuple[list[str], dict[str, Any]]:
    """The thresholds the day crosses (as sentences) and the measures compared."""
    features = metrics["features"]
    measures: dict[str, Any] = {
        "drift_share": features["share"],
        "drifted_columns": features["drifted_columns"],
    }
    crossed = []
    if features["share"] >= thresholds.drift_share:
        crossed.append(
            f"drift: {len(features['drifted_columns'])} of {len(features['columns'])} feature "
            f"columns drifted (share {features['share']:.2f} >= {thresholds.drift_share}: "
            f"{', '.join(features['drifted_columns'])})"
        )
    champion = (metrics.get("realised") or {}).get("champion") or {}
    realised = champion.get("pr_auc")
    if realised is not None and holdout_pr_auc is not None:
        measures |= {"realised_pr_auc": realised, "holdout_pr_auc": holdout_pr_auc}
        if _performance_dropped(measures, thresholds):
            crossed.append(
                f"performance: realised PR AUC {realised:.4f} of v{champion['model_version']} "
                f"on {metrics['realised']['ds']} is {holdout_pr_auc - realised:.4f} below its "
                f"holdout {holdout_pr_auc:.4f} (more than {thresholds.max_pr_auc_drop})"
            )
    return crossed, measures


def decide(
    ds: date,
    metrics: dict[str, Any],
    history: list[Decision],
    *,
    champion_version: int | None,
    holdout_pr_auc: float | None,
    training_active: bool,
    thresholds: Thresholds,
) -> Decision:
    """The day's action from its figures and the decisions of the days before it."""
    crossed, measures = crossings(metrics, holdout_pr_auc, thresholds)

    def decision(action: str, reasons: list[str]) -> Decision:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return Decision(ds.isoformat(), action, reasons, champion_version, measures, now)

    if not crossed:
        return decision(NONE, ["within thresholds"])
    if training_active:
        return decision(SKIP, [*crossed, "a churn_training run is already queued or running"])
    triggers = [d for d in history if d.action == TRIGGER and date.fromisoformat(d.ds) < ds]
    if triggers:
        last = triggers[-1]
        until = date.fromisoformat(last.ds) + timedelta(days=thresholds.cooldown_days)
        new_champion = last.champion_version != champion_version
        if ds < until and not (new_champion and _performance_dropped(measures, thresholds)):
            # A champion promoted since was trained on the labels that had matured by then,
            # mostly from before the drift: its inputs still drift from its training set, and
            # only its measured performance says whether it copes.
            since = (
                f"; champion v{champion_version}, promoted since, keeps its realised PR AUC"
                if new_champion
                else ""
            )
            return decision(
                SKIP,
                [
                    *crossed,
                    f"same episode: retraining was triggered on {last.ds}; cooldown until "
                    f"{until}{since}",
                ],
            )
        if ds < until:
            crossed.append(
                f"worse again: champion v{champion_version}, promoted after the trigger of "
                f"{last.ds}, lost realised performance"
            )
    return decision(TRIGGER, crossed)


def _performance_dropped(measures: dict[str, Any], thresholds: Thresholds) -> bool:
    realised, holdout = measures.get("realised_pr_auc"), measures.get("holdout_pr_auc")
    if realised is None or holdout is None:
        return False
    return holdout - realised > thresholds.max_pr_auc_drop


def read_decisions(lake: Lake, before: date) -> list[Decision]:
    """The recorded decisions of the days before `before`, oldest first."""
    found = []
    for day in lake.partitions(DECISIONS):
        if day >= before:
            continue
        data = lake.read_bytes(f"{partition_relative(DECISIONS, day)}/{DECISION_FILE}")
        if data is not None:
            found.append(Decision(**json.loads(data)))
    return found


def record(lake: Lake, decision: Decision) -> str:
    day = date.fromisoformat(decision.ds)
    with lake.publishing(DECISIONS, day) as folder:
        (folder / DECISION_FILE).write_bytes(decision.to_json())
    return lake.partition_uri(DECISIONS, day)


def run_decision(ds: date, training_active: bool) -> str:
    """The CLI's `retraining-decision`: decide day `ds`, record it, print its line."""
    from churnflow.promote import TAG_PR_AUC
    from churnflow.registry import CHAMPION, MODEL_NAME, connect, version_by_alias
    from churnflow.settings import get_settings

    settings = get_settings()
    lake = Lake(settings.lake)
    metrics_file = f"{partition_relative(DRIFT, ds)}/{METRICS_FILE}"
    data = lake.read_bytes(metrics_file)
    if data is None:
        raise DriftInputError(
            f"{metrics_file}: the day was not judged; run `churnflow drift --ds {ds}` first"
        )
    metrics = json.loads(data)
    client = connect(settings.mlflow_tracking_uri)
    champion = version_by_alias(client, CHAMPION)
    # Realised performance is compared with the holdout PR AUC of the version that scored it.
    scored_by = ((metrics.get("realised") or {}).get("champion") or {}).get("model_version")
    holdout = None
    if scored_by is not None:
        holdout = client.get_model_version(MODEL_NAME, str(scored_by)).tags.get(TAG_PR_AUC)
    decision = decide(
        ds,
        metrics,
        read_decisions(lake, ds),
        champion_version=int(champion.version) if champion else None,
        holdout_pr_auc=float(holdout) if holdout else None,
        training_active=training_active,
        thresholds=Thresholds.from_settings(settings),
    )
    record(lake, decision)
    return decision.line
