"""
### churn_drift_monitor

Daily monitoring of day `ds` once it is scored, and the decision whether to retrain: at most
one `churn_training` run per drift episode.

1. `wait_for_predictions` — `predictions/churn/ds=<ds>` is published (by
   `churn_scoring.score_customers`).
2. `judge_drift` — `churnflow drift`: Evidently drift of the day's features against the
   training set of the version that scored it, the day's scores against the days before,
   data quality, and, once the labels of `ds` minus the horizon matured, the champion's (and a
   shadow challenger's) realised PR AUC. Publishes `monitoring/drift/ds=<ds>/` (`report.html`,
   `metrics.json`). Succeeds whether or not there is drift.
3. `wait_for_previous_decision` — the previous day's decision is taken and its trigger, if
   any, sent (a backfill runs days side by side; decisions must still come in order).
   `check_training_active` — whether a `churn_training` run is queued or running: it picks
   `decide_while_training` (which can only skip) or `decide_retraining`.
4. `decide_retraining` — `churnflow retraining-decision`: `trigger` when the drift share
   reaches `CHURNFLOW_DRIFT_SHARE` or the realised PR AUC fell more than
   `CHURNFLOW_MAX_PR_AUC_DROP` below the holdout's; `skip` (with the reason) while a
   retraining runs or within `CHURNFLOW_RETRAINING_COOLDOWN_DAYS` of the episode's trigger
   (a champion promoted since re-triggers within it only when its realised PR AUC fell);
   recorded in `monitoring/decisions/ds=<ds>/decision.json`.
5. `report_decision` — logs the figures and the decision and posts them to Slack; continues
   to `trigger_retraining` only on `trigger`.
6. `trigger_retraining` — a `churn_training` run `drift__<ds>` with conf `{"as_of": "<ds>",
   "reason": "drift: ds=<ds>"}`; skipped on a rerun of a day that already triggered it.

Days are judged side by side but decided in order (`wait_for_previous_decision`): a day's
decision reads the decisions of the days before it, so a backfill over a range decides as the
daily runs would have. Starts paused, like scoring:
unpause it once `churn_scoring` runs.
"""

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, chain

from churnflow_airflow.landing_sensor import LandingPartitionSensor
from churnflow_airflow.monitoring import ReportDecision, TrainingActive
from churnflow_airflow.policy import (
    START_DATE,
    UPSTREAM_TIMEOUT_S,
    alert_failure,
    daily,
    default_args,
)
from churnflow_airflow.previous_day import PreviousDaySensor
from churnflow_airflow.steps import step

with DAG(
    dag_id="churn_drift_monitor",
    schedule=daily(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args=default_args(),
    on_failure_callback=alert_failure,
    tags=["churn", "monitoring", "drift", "evidently"],
    doc_md=__doc__,
):
    decide = {
        active: step(
            task_id,
            image="spark",
            profile="cpu",
            argv=[
                "churnflow",
                "retraining-decision",
                "--ds",
                "{{ ds }}",
                "--training-active",
                active,
            ],
        )
        for task_id, active in (("decide_retraining", "false"), ("decide_while_training", "true"))
    }
    report = ReportDecision(task_id="report_decision", trigger_task="trigger_retraining")
    chain(
        LandingPartitionSensor(
            task_id="wait_for_predictions",
            dataset="predictions/churn",
            producer="churn_scoring.score_customers",
            timeout=UPSTREAM_TIMEOUT_S,
        ),
        step(
            "judge_drift",
            image="spark",
            profile="cpu",
            argv=["churnflow", "drift", "--ds", "{{ ds }}"],
        ),
        PreviousDaySensor(task_id="wait_for_previous_decision", step="trigger_retraining"),
        TrainingActive(
            task_id="check_training_active",
            dag_id_to_watch="churn_training",
            active_task="decide_while_training",
            idle_task="decide_retraining",
        ),
        [decide["false"], decide["true"]],
        report,
        TriggerDagRunOperator(
            task_id="trigger_retraining",
            trigger_dag_id="churn_training",
            trigger_run_id="drift__{{ ds }}",
            conf={"as_of": "{{ ds }}", "reason": "drift: ds={{ ds }}"},
            wait_for_completion=False,
            # A rerun of a day that already triggered its retraining triggers nothing more.
            skip_when_already_exists=True,
        ),
    )
