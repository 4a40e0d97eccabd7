"""churn_scoring: daily, paused until a champion exists, each day scored with its own
features, and the rescore param reaching the step; rendered as an Airflow 3.3 worker does."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.serialization.encoders import coerce_to_core_timetable

from churnflow.lake import CUSTOMER_FEATURES, PREDICTIONS
from churnflow.settings import Settings
from churnflow_airflow.assets import CHURN_PREDICTIONS
from tests.dags.conftest import load_dagbag, worker_context

DAG_: DAG = load_dagbag().dags["churn_scoring"]
TIMETABLE = coerce_to_core_timetable(DAG_.timetable)


def backfill_run(day: pendulum.DateTime, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run of a backfill (or the schedule) for the day `day`: its data interval is the day."""
    end = day.add(days=1)
    return {
        "run_type": "backfill",
        "run_after": end,
        "logical_date": day,
        "data_interval": (day, end),
        "conf": conf,
    }


def rendered(task_id: str, **run: Any) -> tuple[Any, dict[str, Any]]:
    task = copy.deepcopy(DAG_).get_task(task_id)
    task.params = copy.deepcopy(task.params)
    context = worker_context(task, **run)
    task.render_template_fields(context)
    return task, context


def test_scoring_is_daily_and_starts_paused() -> None:
    assert TIMETABLE.summary == "0 0 * * *"
    assert DAG_.catchup is False
    assert DAG_.is_paused_upon_creation is True
    assert DAG_.params.dump() == {"rescore_with_champion": False}
    order = [task.task_id for task in DAG_.topological_sort()]
    assert order == ["wait_for_features", "score_customers", "publish_churn_predictions"]
    for upstream, downstream in itertools.pairwise(order):
        assert DAG_.get_task(downstream).upstream_task_ids == {upstream}


def test_each_day_waits_for_and_scores_its_own_features() -> None:
    for day in (pendulum.datetime(2026, 3, 1, tz="UTC"), pendulum.datetime(2026, 3, 2, tz="UTC")):
        sensor, _ = rendered("wait_for_features", **backfill_run(day))
        assert sensor.dataset == CUSTOMER_FEATURES
        assert str(sensor.partition).endswith(f"{CUSTOMER_FEATURES}/ds={day.date()}")
        step, _ = rendered("score_customers", **backfill_run(day))
        assert step.argv == ["churnflow", "score", "--ds", str(day.date())]


def test_the_rescore_param_reaches_the_steps_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    day = pendulum.datetime(2026, 3, 1, tz="UTC")
    for conf, expected in ((None, False), ({"rescore_with_champion": True}, True)):
        step, _ = rendered("score_customers", **backfill_run(day, conf))
        for name, value in step.env.items():
            monkeypatch.setenv(name, value)
        assert Settings().rescore_with_champion is expected, step.env


def test_the_predictions_event_names_the_day_and_partition() -> None:
    task, context = rendered(
        "publish_churn_predictions", **backfill_run(pendulum.datetime(2026, 3, 1, tz="UTC"))
    )
    task.execute(context)
    assert context["outlet_events"][CHURN_PREDICTIONS].extra == {
        "ds": "2026-03-01",
        "partition": f"{PREDICTIONS}/ds=2026-03-01",
    }
