"""
### churn_scoring

Daily batch predictions for day `ds`: every customer active on `ds` gets a churn score from
`churn@champion`, on Spark.

1. `wait_for_features` — `features/customer_features/ds=<ds>` is published (by
   `churn_features.build_features`): a day is never scored with another day's features, and
   a backfill over a range waits for each day's own features.
2. `score_customers` — `churnflow score`: scores the day and publishes
   `predictions/churn/ds=<ds>` (customer_id, score, risk_decile 1 = riskiest tenth,
   model_name, model_version). Before it publishes, the step checks its output: one row per
   active customer of the day, scores in [0, 1], every decile present; a failed check leaves
   the previous partition as it was. When `churn@challenger` is another version, the same
   pass also writes `predictions/churn_shadow/ds=<ds>` (the offline A/B of the two models).
3. `publish_churn_predictions` — an event of the **churn_predictions** asset with `extra.ds`.

**Which model scores a day.** A day scored before is scored again with the version recorded
in its ledger entry (`predictions/churn_ledger/ds=<ds>/entry.json`, and the day's run in the
MLflow experiment `churn_scoring`): reruns and backfills after a new champion give the same
predictions. A new day takes the champion of the moment. The task log says which and why.

**Params**: `rescore_with_champion` — score with the current champion even where the day
was scored with another version (a backfill with `--dag-run-conf
'{"rescore_with_champion": true}'` rescored a range).

**Starts paused**: with no champion in the registry every run would fail (exit 78, "no
@champion"); unpause it once `churn_training` has promoted a first model (`make demo` does).
Failures: missing or empty features, or features whose columns do not match the model's
signature, fail without retry (exit 65); an unreachable MLflow server is retried.
"""

from airflow.sdk import DAG, Param, chain

from churnflow_airflow.asset_events import PublishedPartition
from churnflow_airflow.assets import CHURN_PREDICTIONS
from churnflow_airflow.landing_sensor import LandingPartitionSensor
from churnflow_airflow.policy import (
    START_DATE,
    UPSTREAM_TIMEOUT_S,
    alert_failure,
    daily,
    default_args,
)
from churnflow_airflow.steps import step

with DAG(
    dag_id="churn_scoring",
    schedule=daily(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=4,
    is_paused_upon_creation=True,
    default_args=default_args(),
    on_failure_callback=alert_failure,
    tags=["churn", "scoring", "spark", "mlflow"],
    doc_md=__doc__,
    params={
        "rescore_with_champion": Param(
            False,
            type="boolean",
            description="Score with the current champion even if the day was scored before "
            "with another version (default: reuse the day's recorded version).",
        ),
    },
):
    chain(
        LandingPartitionSensor(
            task_id="wait_for_features",
            dataset="features/customer_features",
            producer="churn_features.build_features",
            timeout=UPSTREAM_TIMEOUT_S,
        ),
        step(
            "score_customers",
            image="spark",
            profile="spark",
            argv=["churnflow", "score", "--ds", "{{ ds }}"],
            env={
                "CHURNFLOW_RESCORE_WITH_CHAMPION": "{{ 'true' if params.rescore_with_champion "
                "else '' }}"
            },
        ),
        PublishedPartition(task_id="publish_churn_predictions", asset=CHURN_PREDICTIONS),
    )
