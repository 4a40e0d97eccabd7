"""Airflow-side tasks of the monitoring DAG: what the task side cannot know, and what follows
from the decision it records.

The retraining decision itself is task-side (`churnflow retraining-decision`); Airflow tells
it whether a `churn_training` run is active (`TrainingActive` picks one of two decision
steps), then reads the recorded decision
back from the lake (`ReportDecision`: task log, Slack), and only a `trigger` lets the
`TriggerDagRunOperator` after it run. Nothing here imports the task package: the Airflow image
carries neither it nor its libraries.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator, ObjectStoragePath

from churnflow_airflow.config import lake_uri, load_settings
from churnflow_airflow.data_docs import reports_url
from churnflow_airflow.slack import drift_summary, promotion_outcome, send

DRIFT, DECISIONS = "monitoring/drift", "monitoring/decisions"
PROMOTIONS = "monitoring/promotions"
ACTIVE_STATES = ["queued", "running"]


class TrainingActive(BaseBranchOperator):
    """Follows `active_task` when a run of `dag_id_to_watch` is queued or running, else
    `idle_task`: two decision steps whose argv say which, so no template pulls an XCom."""

    ui_color = "#eef6fb"

    def __init__(
        self, *, dag_id_to_watch: str, active_task: str, idle_task: str, **kwargs: Any
    ) -> None:
        kwargs.setdefault("retries", 1)
        super().__init__(**kwargs)
        self.dag_id_to_watch = dag_id_to_watch
        self.active_task = active_task
        self.idle_task = idle_task

    def choose_branch(self, context: Any) -> str:
        count = context["ti"].get_dr_count(dag_id=self.dag_id_to_watch, states=ACTIVE_STATES)
        self.log.info("%s: %d run(s) queued or running", self.dag_id_to_watch, count)
        return self.active_task if count else self.idle_task


class ReportDecision(BaseBranchOperator):
    """Reads the day's metrics and decision from the lake, logs and posts them (Slack), and
    follows `trigger_task` only for a recorded `trigger` (skips it otherwise)."""

    template_fields = ("ds",)
    ui_color = "#eef6fb"

    def __init__(self, *, trigger_task: str, ds: str = "{{ ds }}", **kwargs: Any) -> None:
        kwargs.setdefault("retries", 1)
        # After whichever of the two decision steps ran (the other is skipped).
        kwargs.setdefault("trigger_rule", "none_failed_min_one_success")
        super().__init__(**kwargs)
        self.trigger_task = trigger_task
        self.ds = ds

    def _read(self, dataset: str, name: str) -> dict[str, Any]:
        root = ObjectStoragePath(lake_uri(load_settings().lake))
        return json.loads((root / dataset / f"ds={self.ds}" / name).read_text())

    def choose_branch(self, context: Any) -> str | None:
        metrics = self._read(DRIFT, "metrics.json")
        decision = self._read(DECISIONS, "decision.json")
        lake = load_settings().lake
        report = f"{ObjectStoragePath(lake_uri(lake)) / DRIFT / f'ds={self.ds}'}/report.html"
        # The page over http where it is served (the api-server's, CHURNFLOW_REPORTS_URL's).
        send(drift_summary(metrics, decision, reports_url(report, lake) or report))
        self.log.info("retraining decision for ds=%s: %s", self.ds, decision["action"])
        return self.trigger_task if decision["action"] == "trigger" else None


class ReportPromotion(BaseOperator):
    """Posts the gate's recorded decision of the run's training (`churnflow promote` writes
    `monitoring/promotions/as_of=D/decision.json`) to the task log and Slack."""

    template_fields = ("as_of",)
    ui_color = "#eef6fb"

    def __init__(self, *, as_of: str, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 1)
        super().__init__(**kwargs)
        self.as_of = as_of

    def execute(self, context: Any) -> None:
        root = ObjectStoragePath(lake_uri(load_settings().lake))
        path = root / PROMOTIONS / f"as_of={self.as_of}" / "decision.json"
        if not path.exists():
            self.log.info("no gate decision recorded for as_of=%s (nothing to decide)", self.as_of)
            return
        send(promotion_outcome(json.loads(path.read_text())))
