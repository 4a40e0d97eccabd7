"""Failure alerts: every DAG and task failure ends up here.

The alert always goes to the task log; when `CHURNFLOW_SLACK_CONN_ID` names an Airflow
connection it is also posted to Slack. A broken alert channel must never hide the failure
that triggered it, so errors while posting are logged, not raised.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("churnflow.alerts")


def failure_message(context: Any) -> str:
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", None) or "(dag run)"
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", "?")
    reason = context.get("exception") or context.get("reason") or "see the task log"
    try_number = getattr(ti, "try_number", None)
    attempt = f", try {try_number}" if try_number else ""
    return (
        f":red_circle: churnflow failure: {dag_id}.{task_id} ds={context.get('ds', '?')} "
        f"run={run_id}{attempt}: {reason}"
    )


def alert_failure(context: Any) -> None:
    """on_failure_callback for tasks and DAG runs."""
    message = failure_message(context)
    log.error("%s", message)
    conn_id = os.environ.get("CHURNFLOW_SLACK_CONN_ID")
    if not conn_id:
        return
    try:
        from airflow.providers.slack.hooks.slack import SlackHook

        channel = os.environ.get("CHURNFLOW_SLACK_CHANNEL", "#churnflow-alerts")
        SlackHook(slack_conn_id=conn_id).call(
            "chat.postMessage", json={"channel": channel, "text": message}
        )
    except Exception:
        log.exception("could not post the alert to Slack connection %r", conn_id)
