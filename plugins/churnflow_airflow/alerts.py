"""Failure alerts: one per failure, for task and DAG-run failures alike.

`alert_failure` is both the tasks' (default_args) and the DAGs' on_failure_callback. A failed
task alerts from its own callback, with the task, try and exception. Airflow then also calls
the DAG's callback for the run that task failed (reason `task_failure`): that one stays quiet,
so a failure sends one alert. A run that fails for a reason of its own (`timed_out` past
dagrun_timeout, say) alerts from the DAG callback.

The alert always goes to the log; when Slack is configured (churnflow_airflow.slack) it is
also posted there, in Block Kit. A broken alert channel must never hide the failure that
triggered it, so Slack's errors are logged, not raised.
"""

from __future__ import annotations

import logging
from typing import Any

from churnflow_airflow.slack import Message, failure, post

log = logging.getLogger("churnflow.alerts")


def failure_alert(context: Any) -> Message:
    """The alert of a failed task or run: what failed, which day and run, and why."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", None) or "(dag run)"
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", "?")
    reason = str(context.get("exception") or context.get("reason") or "see the task log")
    try_number = getattr(ti, "try_number", None)
    attempt = f", try {try_number}" if try_number else ""
    ds = str(context.get("ds", "?"))
    log_url = getattr(ti, "log_url", "") or ""
    return failure(dag_id, task_id, ds, f"{run_id}{attempt}", reason, log_url=log_url)


def failure_message(context: Any) -> str:
    return failure_alert(context).text


# The reason Airflow gives a DAG's failure callback when one of its tasks failed.
TASK_FAILURE_REASON = "task_failure"


def alert_failure(context: Any) -> None:
    """on_failure_callback for tasks and DAG runs; a run failed by a task was alerted by it."""
    if context.get("reason") == TASK_FAILURE_REASON:
        log.info("run %s failed by a task failure, alerted by that task", context.get("run_id"))
        return
    message = failure_alert(context)
    log.error("%s", message.text)
    post(message)
