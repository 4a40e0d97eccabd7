"""A drift episode through the real scheduler, on the demo's own steps (`devstack.demo`).

One stack, a smaller plan than `make demo`'s: order history loaded into silver first
(`churnflow ingest --through`, so every feature window up to 90 days holds full history),
churn_features backfilled over the range, the first model trained as of the first day its
(shortened) window fits, and from a few days later a new market opens (`generate
--drift-from`). churn_scoring and churn_drift_monitor are then backfilled across the drift:

- the days before it call for nothing, the drift is detected from its first days on;
- exactly one churn_training run is triggered for the episode (`drift__<ds>`), the days after
  it skip, and the gate decides on the challenger it trained;
- the days scored after the retraining carry the champion the gate left, and a day scored
  before it, backfilled again, keeps the version its ledger recorded;
- `judge_drift` links the day's report, served to a logged-in user only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from rich.console import Console

from churnflow.lake import PROMOTIONS, Lake, partition_relative
from churnflow.promote import OUTCOME_FILE
from churnflow.retraining import NONE, SKIP, TRIGGER, read_decisions
from churnflow.scoring import RECORDED, read_ledger
from churnflow.training_set import AS_OF_KEY
from devstack.api import AirflowClient
from devstack.demo import (
    DEMO_DAGS,
    HISTORY_DAYS,
    MONITOR_DAG,
    SCORING_DAG,
    TRAINING_DAG,
    DemoPlan,
    champion_version,
    generate_raw,
    ingest_history,
    run_backfills,
    run_monitoring,
    train_first_model,
    training_window_days,
)
from devstack.services import (
    ALL_SERVICES,
    StackConfig,
    admin_password,
    down,
    throwaway_config,
    up,
)

pytestmark = pytest.mark.e2e

# A 7-day label horizon and 4 daily snapshots: the first model as of the range's 11th day.
WINDOW = {
    "CHURNFLOW_LABEL_HORIZON_DAYS": "7",
    "CHURNFLOW_TRAINING_SNAPSHOTS": "4",
    "CHURNFLOW_TRAINING_SNAPSHOT_EVERY_DAYS": "1",
}
FIRST = date(2026, 9, 1)
DAYS = 17  # first model on the 11th day, drift from the 13th, monitoring cut after the 16th
TIMEOUT_S = 1800


@pytest.fixture
def stack(stack_home: Path) -> Iterator[StackConfig]:
    config = throwaway_config(stack_home, extra_env=WINDOW)
    try:
        yield config
    finally:
        down(config, log=lambda _: None)


def test_one_drift_episode_triggers_one_retraining_and_later_days_use_its_outcome(
    stack: StackConfig,
) -> None:
    console = Console(quiet=True)
    env = up(stack, ALL_SERVICES, log=lambda _: None)
    plan = DemoPlan(
        first_day=FIRST,
        last_day=FIRST + timedelta(days=DAYS - 1),
        history_days=HISTORY_DAYS,
        customers=1500,
        seed=11,
        window_days=training_window_days(env),
        drift_after_days=2,
    )
    first_model = plan.first_model_as_of
    assert plan.detection_by < plan.last_day, "days left to score after the retraining"
    generate_raw(plan, env)
    ingest_history(plan, env, console)
    client = AirflowClient(stack.airflow_url, "admin", admin_password(stack))
    features = run_backfills(client, DEMO_DAGS[1:], plan.first_day, plan.last_day,
                             console=console, timeout_s=TIMEOUT_S)  # fmt: skip
    assert {r["state"] for r in features["churn_features"]} == {"success"}, stack.logs
    train_first_model(client, stack, plan, console, TIMEOUT_S)
    assert champion_version(stack) == 1, f"no first champion; logs under {stack.logs}"

    runs = run_monitoring(client, plan, first_model, console, TIMEOUT_S)
    for dag_id in (SCORING_DAG, MONITOR_DAG):
        states = {r["logical_date"][:10]: r["state"] for r in runs[dag_id]}
        assert set(states.values()) == {"success"}, f"{dag_id}: {states}; logs under {stack.logs}"
        assert len(states) == (plan.last_day - first_model).days + 1

    lake = Lake(str(stack.lake))
    triggered = _one_trigger_for_the_episode(lake, plan)
    # One retraining for the episode, and the gate's decision on its challenger.
    training = client.all_runs(TRAINING_DAG)
    retrainings = [r for r in training if r["dag_run_id"].startswith("drift__")]
    assert [(r["dag_run_id"], r["state"]) for r in retrainings] == [
        (f"drift__{triggered}", "success")
    ]
    assert len(training) == 2, [r["dag_run_id"] for r in training]
    outcome = f"{partition_relative(PROMOTIONS, triggered, AS_OF_KEY)}/{OUTCOME_FILE}"
    gate = json.loads(lake.read_bytes(outcome) or b"{}")
    assert gate.get("challenger") == "2", gate
    champion = champion_version(stack)
    assert champion == (2 if gate["outcome"] == "promoted" else 1), gate["lines"]

    # Days scored after the retraining carry its outcome; earlier days keep their version.
    scored = {
        day: read_ledger(lake, day)
        for day in (first_model + timedelta(days=n) for n in range(len(runs[SCORING_DAG])))
    }
    for day, entry in scored.items():
        assert entry is not None, day
        assert entry.model_version == (1 if day <= plan.detection_by else champion), (day, entry)
    early = plan.first_model_as_of
    backfill = client.create_backfill(SCORING_DAG, early.isoformat(), early.isoformat(),
                                      reprocess_behavior="completed")  # fmt: skip
    client.wait_for_backfill(backfill["id"])
    (rerun,) = client.dag_runs(SCORING_DAG, early.isoformat(), early.isoformat())
    assert rerun["state"] == "success", f"logs under {stack.logs}"
    entry = read_ledger(lake, early)
    assert entry is not None and entry.model_version == 1 and entry.how == RECORDED, entry

    # The drift task's Report link opens the day's report, for a logged-in user only.
    run = next(r for r in runs[MONITOR_DAG] if r["logical_date"][:10] == triggered.isoformat())
    links = f"/dags/{MONITOR_DAG}/dagRuns/{run['dag_run_id']}/taskInstances/judge_drift/links"
    url = client.request("GET", links)["extra_links"]["Report"]
    expected = f"{stack.airflow_url}/churnflow/monitoring/drift/ds={triggered}/report.html"
    assert url == expected
    page = requests.get(url, headers=client._headers(), timeout=30)
    report = stack.lake / "monitoring" / "drift" / f"ds={triggered}" / "report.html"
    assert page.status_code == 200 and page.content == report.read_bytes()
    assert requests.get(url, timeout=30).status_code in (401, 403)


def _one_trigger_for_the_episode(lake: Lake, plan: DemoPlan) -> date:
    """Nothing before the drift; one day of the episode triggers, every later day skips."""
    decisions = {d.ds: d for d in read_decisions(lake, plan.last_day + timedelta(days=1))}
    lines = [d.line for d in decisions.values()]
    before = [d for ds, d in decisions.items() if date.fromisoformat(ds) < plan.drift_from]
    assert before and {d.action for d in before} == {NONE}, lines
    triggers = [d for d in decisions.values() if d.action == TRIGGER]
    assert len(triggers) == 1, lines
    triggered = date.fromisoformat(triggers[0].ds)
    assert plan.drift_from <= triggered <= plan.detection_by, lines
    after = [d for ds, d in decisions.items() if date.fromisoformat(ds) > triggered]
    assert after and {d.action for d in after} == {SKIP}, lines
    return triggered
