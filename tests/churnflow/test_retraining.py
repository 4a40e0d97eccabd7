"""The retraining decision: one trigger per drift episode, skips that say why, and a record
per day that reruns reproduce."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from churnflow.lake import Lake
from churnflow.retraining import (
    NONE,
    SKIP,
    TRIGGER,
    Decision,
    Thresholds,
    decide,
    read_decisions,
    record,
)

DAY = date(2026, 3, 10)
RULES = Thresholds(drift_share=0.5, max_pr_auc_drop=0.1, cooldown_days=7)


def metrics(share: float, realised: float | None = None) -> dict[str, Any]:
    drifted = [f"c{i}" for i in range(int(share * 10))]
    figures: dict[str, Any] = {
        "features": {
            "share": share,
            "drifted_columns": drifted,
            "columns": {f"c{i}": {} for i in range(10)},
        },
        "realised": None,
    }
    if realised is not None:
        figures["realised"] = {
            "ds": "2026-02-24",
            "champion": {"model_version": 1, "pr_auc": realised},
        }
    return figures


def run(
    day: date,
    figures: dict[str, Any],
    history: list[Decision],
    *,
    champion: int = 1,
    active: bool = False,
) -> Decision:
    return decide(
        day, figures, history, champion_version=champion, holdout_pr_auc=0.60,
        training_active=active, thresholds=RULES,
    )  # fmt: skip


def test_a_day_within_thresholds_does_nothing() -> None:
    decision = run(DAY, metrics(0.2, realised=0.55), [])
    assert decision.action == NONE and decision.reasons == ["within thresholds"]


def test_one_trigger_per_episode_then_skips_that_say_why() -> None:
    history: list[Decision] = []
    actions = []
    for k in range(5):
        decision = run(DAY + timedelta(days=k), metrics(0.6), history)
        history.append(decision)
        actions.append(decision.action)
    assert actions == [TRIGGER, SKIP, SKIP, SKIP, SKIP]
    assert "drift: 6 of 10 feature columns drifted" in history[0].reasons[0]
    assert "same episode: retraining was triggered on 2026-03-10" in history[1].reasons[-1]
    assert "cooldown until 2026-03-17" in history[1].reasons[-1]
    # After the cooldown, drift that persists triggers again.
    assert run(DAY + timedelta(days=7), metrics(0.6), history).action == TRIGGER


def test_a_new_champion_that_still_sees_drift_does_not_trigger_within_the_cooldown() -> None:
    first = run(DAY, metrics(0.6), [])
    drifting = run(DAY + timedelta(days=2), metrics(0.8), [first], champion=2)
    assert drifting.action == SKIP
    assert "champion v2, promoted since, keeps its realised PR AUC" in drifting.reasons[-1]


def test_worse_again_under_a_new_champion_triggers_within_the_cooldown() -> None:
    first = run(DAY, metrics(0.6), [])
    again = run(DAY + timedelta(days=2), metrics(0.7, realised=0.45), [first], champion=2)
    assert again.action == TRIGGER
    assert "worse again: champion v2, promoted after the trigger of 2026-03-10" in again.reasons[-1]
    # The same drop under the champion that was in place at the trigger waits for the cooldown.
    assert run(DAY + timedelta(days=2), metrics(0.7, realised=0.45), [first]).action == SKIP


def test_no_trigger_while_a_retraining_runs() -> None:
    decision = run(DAY, metrics(0.9), [], active=True)
    assert decision.action == SKIP
    assert decision.reasons[-1] == "a churn_training run is already queued or running"


def test_a_realised_pr_auc_drop_crosses_without_drift() -> None:
    decision = run(DAY, metrics(0.0, realised=0.45), [])
    assert decision.action == TRIGGER
    assert "realised PR AUC 0.4500 of v1 on 2026-02-24 is 0.1500 below" in decision.reasons[0]
    assert decision.measures["holdout_pr_auc"] == 0.60


def test_decisions_are_recorded_per_day_and_a_rerun_decides_the_same(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for k in range(3):
        day = DAY + timedelta(days=k)
        record(lake, run(day, metrics(0.6), read_decisions(lake, day)))
    recorded = read_decisions(lake, DAY + timedelta(days=3))
    assert [d.action for d in recorded] == [TRIGGER, SKIP, SKIP]
    rerun = run(
        DAY + timedelta(days=1), metrics(0.6), read_decisions(lake, DAY + timedelta(days=1))
    )
    assert rerun.action == recorded[1].action and rerun.reasons == recorded[1].reasons
