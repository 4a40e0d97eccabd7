"""DAG policy that every churnflow DAG shares: owner, retries, timeouts, alerts, schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable

from churnflow_airflow.alerts import alert_failure

__all__ = ["START_DATE", "UPSTREAM_TIMEOUT_S", "alert_failure", "daily", "default_args", "weekly"]

OWNER = "ml-platform"
# Earliest day any churnflow DAG processes; backfills may start here.
START_DATE = pendulum.datetime(2025, 1, 1, tz="UTC")
# How long a DAG waits for a partition another DAG publishes (features for scoring and
# training, predictions for monitoring): the producing day's chain may run for hours.
UPSTREAM_TIMEOUT_S = timedelta(hours=12).total_seconds()


def default_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": alert_failure,
    }
    args.update(overrides)
    return args


def daily() -> CronDataIntervalTimetable:
    """Run after each UTC day ends; `ds` is the day the data belongs to, not the run day."""
    return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")


def weekly() -> CronDataIntervalTimetable:
    """Run after each ISO week (Monday 00:00 UTC); the interval is the week just ended."""
    return CronDataIntervalTimetable("0 0 * * 1", timezone="UTC")
