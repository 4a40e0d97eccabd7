"""Alerts name the failure; one failure sends one alert, whichever callbacks Airflow calls."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import structlog
from airflow.callbacks.callback_requests import DagCallbackRequest
from airflow.dag_processing.processor import _execute_dag_callbacks
from airflow.sdk.execution_time.task_runner import _run_task_state_change_callbacks

from churnflow_airflow.alerts import failure_message
from tests.dags.conftest import load_dagbag


def test_failure_message_names_dag_task_day_and_reason() -> None:
    ti = SimpleNamespace(dag_id="churn_landing_check", task_id="check_landing", try_number=2)
    message = failure_message(
        {"ti": ti, "ds": "2026-03-01", "run_id": "backfill__x", "exception": ValueError("no rows")}
    )
    assert "churn_landing_check.check_landing" in message
    assert "ds=2026-03-01" in message and "try 2" in message and "no rows" in message


# --- one failure, one alert: the callbacks called the way Airflow calls them ----------------

DAG_ID, TASK_ID, RUN_ID = "churn_landing_check", "check_landing", "backfill__2026-03-01"


@pytest.fixture(scope="module")
def bag():  # -> DagBag
    return load_dagbag()


def _alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "churnflow.alerts" and r.levelno >= logging.ERROR
    ]


def _task_fails(bag, error: Exception) -> None:
    """What the task runner does when a task's last try fails (task_runner.finalize)."""
    task = bag.dags[DAG_ID].get_task(TASK_ID)
    ti = SimpleNamespace(dag_id=DAG_ID, task_id=TASK_ID, try_number=3)
    context = {
        "ti": ti,
        "task_instance": ti,
        "ds": "2026-03-01",
        "run_id": RUN_ID,
        "exception": error,
    }
    _run_task_state_change_callbacks(task, "on_failure_callback", context, structlog.get_logger())


def _run_fails(bag, reason: str) -> None:
    """What the dag-processor does with the scheduler's callback for a failed run."""
    request = DagCallbackRequest(
        filepath="churn_landing_check.py",
        bundle_name="dags-folder",
        bundle_version=None,
        dag_id=DAG_ID,
        run_id=RUN_ID,
        is_failure_callback=True,
        msg=reason,
    )
    _execute_dag_callbacks(bag, request, structlog.get_logger())


def test_a_failed_task_sends_one_alert_for_its_task_and_its_run(
    bag, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="churnflow.alerts")
    _task_fails(bag, ValueError("ds=2026-03-01: no rows"))
    _run_fails(bag, "task_failure")  # the scheduler's callback for the run it failed
    [alert] = _alerts(caplog)
    assert f"{DAG_ID}.{TASK_ID}" in alert and "try 3" in alert and "no rows" in alert


def test_a_run_that_fails_on_its_own_sends_one_alert(bag, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="churnflow.alerts")
    _run_fails(bag, "timed_out")
    [alert] = _alerts(caplog)
    assert f"{DAG_ID}.(dag run)" in alert and "timed_out" in alert
