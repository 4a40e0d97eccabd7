"""
### churn_training

Weekly retraining of the churn model, as of day `as_of`: point-in-time training set on Spark,
two candidate models on a GPU pod, then the promotion gate. Also started by hand (Trigger DAG
w/ config) and by the drift DAG, with conf `{"as_of": "...", "reason": "drift: ..."}`.

**as_of** is the `as_of` param when given; otherwise the last complete day of the run's data
interval, its end minus one day: for the scheduled run after a week, the Sunday before it;
for a manual run with a logical date, the Sunday of the last week that ended by that date;
for a manual run without one, the day before it was triggered. All steps of a run use the
same day.

1. `wait_for_features` — `features/customer_features/ds=<as_of>` is published (by
   `churn_features.build_features`). The daily chain publishes days in order, so then the
   silver orders up to `as_of` (the labels) and every earlier snapshot are there too; a run
   that starts before the day's features waits for them (in the triggerer, up to 12 hours)
   instead of failing on a missing snapshot.
2. `build_training_set` — `churnflow training-set`: examples are the published
   `customer_features` snapshots whose label has matured by `as_of` (the newest at `as_of`
   minus the label horizon, 30 days by default, then one a week back, 12 by default);
   `churned` = no order within the horizon after the snapshot, read from silver orders up to
   `as_of` only. Split by time, whole snapshots: the newest is the holdout of the gate, the
   two before it validate, older ones train. Published with a manifest (snapshots, rows,
   digest) to `training/churn/as_of=<as_of>/`.
3. `train_models` — `churnflow train` (image `train`, GPU profile): fits both candidates, a
   scikit-learn HistGradientBoosting model and a Lightning MLP, and keeps the one with the
   better validation PR AUC unless `model_type` names one. One MLflow parent run for the
   training (as_of, reason, training-set digest, image, git commit) with a child run per
   model; the chosen model is registered as `churn` with alias **challenger**.
4. `promote_challenger` — `churnflow promote`: the gate scores challenger and **champion** on
   the same holdout of `as_of`. It moves `champion` only when the challenger beats it by the
   margin (`CHURNFLOW_PROMOTION_MARGIN`), falls behind on no customer slice by more than the
   tolerance (`CHURNFLOW_PROMOTION_SLICE_TOLERANCE`) and keeps its calibration error within
   the bound (`CHURNFLOW_PROMOTION_MAX_ECE`); with no champion yet, the first model must beat
   a recency baseline (days since the last order) instead. The decision and its reasons
   are tags on the model version. A refused promotion is a decision, not a failure: the task
   succeeds either way.
5. `report_promotion` — the gate's decision (recorded under `monitoring/promotions/`) to the
   task log and Slack.
6. `publish_model_decision` — an event of the **churn_model** asset with `extra.as_of`.

**Params**: `as_of` (a day, empty = default above), `model_type` (`auto` picks by validation
PR AUC; `sklearn` or `lightning` trains only that one), `reason` (a tag of the MLflow run;
empty = how the run started: `schedule`, `manual`, `backfill`, ...).

Starts paused: unpause it once `customer_features` hold a training window (the snapshots and
the label horizon before the as-of day); with catchup off, the first scheduled run is the
latest week's.

**Rollback** (an operator action, not a task): `churnflow promote --rollback` points
`champion` back at the version it replaced.
"""

from airflow.sdk import DAG, Param, chain

from churnflow_airflow.asset_events import AssetEventTask
from churnflow_airflow.assets import CHURN_MODEL
from churnflow_airflow.landing_sensor import LandingPartitionSensor
from churnflow_airflow.monitoring import ReportPromotion
from churnflow_airflow.policy import (
    START_DATE,
    UPSTREAM_TIMEOUT_S,
    alert_failure,
    default_args,
    weekly,
)
from churnflow_airflow.steps import step

# The run's as-of day, rendered the same for every task. A manual run in Airflow 3 may have no
# logical date and then no data interval: `dag_run.run_after` (when it was triggered) stands in.
AS_OF = (
    "{{ params.as_of or macros.ds_add((dag_run.data_interval_end or dag_run.run_after) | ds, -1) }}"
)
# One argv element: a reason that starts with "-" must not read as an option.
REASON = "--reason={{ params.reason or dag_run.run_type.value | replace('scheduled', 'schedule') }}"

with DAG(
    dag_id="churn_training",
    schedule=weekly(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    # A training needs weeks of published features; unpaused on a new lake, the weekly run
    # would wait half a day for them. Unpause it once the features hold a training window.
    is_paused_upon_creation=True,
    default_args=default_args(),
    on_failure_callback=alert_failure,
    tags=["churn", "training", "mlflow", "gpu"],
    doc_md=__doc__,
    params={
        "as_of": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Train as of this day (YYYY-MM-DD): labels read orders up to it. "
            "Empty: the last complete day of the run's data interval, or the day before a "
            "manual run without a logical date.",
        ),
        "model_type": Param(
            "auto",
            type="string",
            enum=["auto", "sklearn", "lightning"],
            description="auto: train both and keep the better validation PR AUC; sklearn or "
            "lightning: train only that one.",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            description="Why this training runs, a tag of the MLflow run (empty: how the run "
            "started, e.g. schedule or manual).",
        ),
    },
):
    build_training_set = step(
        "build_training_set",
        image="spark",
        profile="spark",
        argv=["churnflow", "training-set", "--as-of", AS_OF],
    )
    train_models = step(
        "train_models",
        image="train",
        profile="gpu",
        argv=[
            "churnflow",
            "train",
            "--as-of",
            AS_OF,
            "--model-type",
            "{{ params.model_type }}",
            REASON,
        ],
    )
    promote_challenger = step(
        "promote_challenger",
        image="train",
        profile="cpu",
        argv=["churnflow", "promote", "--as-of", AS_OF],
    )
    chain(
        LandingPartitionSensor(
            task_id="wait_for_features",
            dataset="features/customer_features",
            ds=AS_OF,
            producer="churn_features.build_features",
            timeout=UPSTREAM_TIMEOUT_S,
        ),
        build_training_set,
        train_models,
        promote_challenger,
        ReportPromotion(task_id="report_promotion", as_of=AS_OF),
        AssetEventTask(task_id="publish_model_decision", asset=CHURN_MODEL, extra={"as_of": AS_OF}),
    )
