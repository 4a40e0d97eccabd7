"""Order days without deadlocks: wait for the previous day's step, fail at once when it failed.

Some steps build on the previous day's output (ingest deduplicates against earlier days, the
feature state chains on yesterday's). Airflow's `depends_on_past` orders them, but when a day
fails every later day then sits with no state, a backfill stays "running" forever and nothing
says which day to fix. This sensor replaces it: it succeeds when the previous day's step
succeeded (or no run of that day exists, as `depends_on_past` treats a first run), waits while
it is pending, and fails without retries, naming the first failed day, once it did not succeed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

SUCCEEDED = frozenset({"success", "skipped"})
FAILED = frozenset({"failed", "upstream_failed", "removed"})
# How far back the failure message looks for the day that started a chain of failures.
LOOKBACK_DAYS = 60
# Poke mode: a check is one call to the execution API, so polling every few seconds costs
# nothing, while every reschedule would start a task process. Reschedule mode with a short
# interval also races the scheduler on a busy machine (a re-queued try is failed as "changed
# externally"). A day waits for at most one of these at a time (they sit right before the
# step they guard), so a backfill holds at most `max_active_runs` worker slots with them.
POKE_INTERVAL_S = 3
# A late previous day (its data lands hours late) is waited for; a day longer is a failure.
TIMEOUT_S = 24 * 3600


class PreviousDaySensor(BaseSensorOperator):
    """Succeeds when `step` of the previous daily run of this DAG succeeded."""

    ui_color = "#eef6ea"

    def __init__(self, *, step: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "poke")
        kwargs.setdefault("poke_interval", POKE_INTERVAL_S)
        kwargs.setdefault("timeout", TIMEOUT_S)
        kwargs.setdefault("execution_timeout", timedelta(seconds=TIMEOUT_S + 60))
        kwargs.setdefault(
            "doc_md",
            f"Waits for `{step}` of the previous day; fails at once, naming the first failed "
            "day, when that day did not succeed (replaces `depends_on_past`).",
        )
        super().__init__(**kwargs)
        self.step = step

    def _state(self, context: Any, days_back: int) -> str | None:
        """The step's state in the run `days_back` days earlier; None when no such run exists."""
        ti = context["ti"]
        logical = context["logical_date"] - timedelta(days=days_back)
        runs = ti.get_task_states(dag_id=ti.dag_id, task_ids=[self.step], logical_dates=[logical])
        states = [tasks.get(self.step) for tasks in runs.values()]
        if not states:
            return None
        return states[0] or "none"

    def poke(self, context: Any) -> bool:
        state = self._state(context, 1)
        ds = context["ds"]
        previous = (context["logical_date"] - timedelta(days=1)).date().isoformat()
        if state is None:
            self.log.info("no run of %s for %s: nothing to wait for", self.dag_id, previous)
            return True
        if state in SUCCEEDED:
            self.log.info("%s of %s: %s", self.step, previous, state)
            return True
        if state in FAILED:
            first = previous
            for days_back in range(2, LOOKBACK_DAYS + 1):
                if self._state(context, days_back) not in FAILED:
                    break
                first = (context["logical_date"] - timedelta(days=days_back)).date().isoformat()
            raise AirflowFailException(
                f"{self.dag_id} ds={ds} builds on ds={previous}, whose {self.step} did not "
                f"succeed ({state}); the first failed day is ds={first}. Fix that day, then "
                f"clear it and the days after it (README, 'Resuming a backfill'): "
                f"airflow tasks clear {self.dag_id} --start-date {first} --end-date <last day> "
                "--only-failed --yes"
            )
        self.log.info("waiting for %s of %s (now %s)", self.step, previous, state)
        return False
