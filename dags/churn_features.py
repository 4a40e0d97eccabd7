"""
### churn_features

Daily features for day `ds`, on Spark, dbt and Great Expectations:

1. `wait_for_orders` — the day's raw orders have landed (reschedule mode).
2. `ingest_orders` — `churnflow ingest`: raw → `silver/orders/ds=<ds>`, typed and
   deduplicated (also against earlier days); rejected rows go to `quarantine/orders` with
   the rule they broke. Fails, leaving silver untouched, when the rejected share is too high.
3. `validate_orders` — Great Expectations suite `silver_orders`.
4. `build_features` — `churnflow features`: dbt build of `customer_features` for `ds`
   (only data up to the end of `ds`; dbt tests must pass).
5. `validate_features` — suite `customer_features`; on success the **customer_features**
   asset is updated, which downstream DAGs follow.

A failed validation stops the run before anything downstream reads the day. `ingest_orders`
and `build_features` depend on the previous day's run (`depends_on_past`): deduplication
across days and the look-back windows need every earlier day in place, so a backfill builds
days in order while sensors and validations of other days run alongside. Data Docs:
`<lake>/reports/gx/`.
"""

from airflow.sdk import DAG, chain

from churnflow_airflow.assets import CUSTOMER_FEATURES
from churnflow_airflow.landing_sensor import LandingPartitionSensor
from churnflow_airflow.policy import START_DATE, alert_failure, daily, default_args
from churnflow_airflow.steps import step

with DAG(
    dag_id="churn_features",
    schedule=daily(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=4,
    default_args=default_args(),
    on_failure_callback=alert_failure,
    tags=["churn", "features", "spark", "dbt", "data-quality"],
    doc_md=__doc__,
):
    ds = "{{ ds }}"
    chain(
        LandingPartitionSensor(task_id="wait_for_orders", dataset="raw/orders"),
        step(
            "ingest_orders",
            image="spark",
            profile="spark",
            argv=["churnflow", "ingest", "--ds", ds],
            depends_on_past=True,
        ),
        step(
            "validate_orders",
            image="spark",
            profile="spark",
            argv=["churnflow", "validate", "--ds", ds, "--suite", "silver_orders"],
        ),
        step(
            "build_features",
            image="spark",
            profile="spark",
            argv=["churnflow", "features", "--ds", ds],
            depends_on_past=True,
        ),
        step(
            "validate_features",
            image="spark",
            profile="spark",
            argv=["churnflow", "validate", "--ds", ds, "--suite", "customer_features"],
            outlets=[CUSTOMER_FEATURES],
        ),
    )
