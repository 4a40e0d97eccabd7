"""
### churn_landing_check

Daily gate on the upstream delivery of **raw orders** for the day `ds`.

1. `wait_for_orders` waits (in the triggerer, no worker slot held) until
   `raw/orders/ds=<ds>/` holds a data file. It fails with the partition's path when nothing
   lands within `CHURNFLOW_LANDING_TIMEOUT`, and at once when the delivered files are empty.
2. `check_landing` runs `churnflow check-landing`: every file readable, header with the
   landing-contract columns, at least one row. A contract breach fails without retries.

Backfill a range from the UI (*Trigger* > *Backfill*) or with
`airflow backfill create --dag-id churn_landing_check --from-date A --to-date B`.
"""

from airflow.sdk import DAG

from churnflow_airflow.landing_sensor import LandingPartitionSensor
from churnflow_airflow.policy import START_DATE, alert_failure, daily, default_args
from churnflow_airflow.steps import step

with DAG(
    dag_id="churn_landing_check",
    schedule=daily(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=4,
    default_args=default_args(),
    on_failure_callback=alert_failure,
    tags=["churn", "landing", "data-quality"],
    doc_md=__doc__,
):
    wait_for_orders = LandingPartitionSensor(task_id="wait_for_orders", dataset="raw/orders")
    check_landing = step(
        "check_landing",
        image="spark",
        profile="cpu",
        argv=["churnflow", "check-landing", "--ds", "{{ ds }}"],
    )
    wait_for_orders >> check_landing
