"""
### churn_features

Daily features for day `ds`, on Spark, dbt and Great Expectations. Every dataset is written to
a hidden staging folder, checked there, and only then published (write, audit, publish): a day
that fails a check leaves the published partition as it was.

1. `wait_for_orders` — the day's raw orders have landed (waits in the triggerer).
2. `wait_for_previous_ingest` — the previous day's `ingest_orders` succeeded (deduplication
   across days needs it). Fails at once, naming the first failed day, when it did not
   (this replaces `depends_on_past`, under which later days would wait forever).
3. `ingest_orders` — `churnflow ingest`: raw → `silver/orders/ds=<ds>`, typed and
   deduplicated (also against earlier days); rejected rows go to `quarantine/orders` with the
   rule they broke. The `silver_orders` suite runs on the staged day before it is published.
4. `wait_for_previous_features` — the previous day's `build_features` succeeded (the running
   state chains on it); fails at once when it did not.
5. `build_features` — `churnflow features`: dbt build of `customer_features` for `ds` (only
   data up to the end of `ds`); dbt tests and the `customer_features` suite run on the staged
   tables before they are published. One build runs at a time across all runs (dbt's staged
   tables are shared by name in the metastore).
6. `publish_customer_features` — an event of the **customer_features** asset with
   `extra.ds`, which downstream DAGs follow.

**Checks.** Contract breaks fail the step without retries (exit 65). Statistical checks (row
counts, means, medians) learn from recent days with weekday seasonality and have two levels:
outside the warn band the day is published with a `WARNING` line and recorded in the Data
Docs; outside the fail band (order-of-magnitude jumps, empty days) it fails. A flagged day the
business explains (a holiday, a launch) is accepted with a reason: the `accept_reason` param
of a new run, or, to rerun an existing day, `{"<ds>": "<reason>"}` in the Airflow Variable
`churnflow_accept_reasons` and a clear of the failed task. The reason is recorded beside the
validation result.

**Params** (Trigger DAG w/ config): `max_reject_share` overrides the share of raw rows ingest
may quarantine for this run; `accept_reason` accepts statistical flags of this run's day.

**Backfills and reruns**: README, "Backfills, reruns and resuming". Data Docs:
`<lake>/reports/gx/`.
"""

from airflow.sdk import DAG, Param, chain

from churnflow_airflow.asset_events import PublishedPartition
from churnflow_airflow.assets import CUSTOMER_FEATURES
from churnflow_airflow.landing_sensor import LandingPartitionSensor
from churnflow_airflow.policy import START_DATE, alert_failure, daily, default_args
from churnflow_airflow.previous_day import PreviousDaySensor
from churnflow_airflow.steps import step

# A run's `accept_reason` param, or for a rerun of an existing day (runs keep their params) the
# reason an operator stored under the day in the `churnflow_accept_reasons` Variable.
ACCEPT = {
    "CHURNFLOW_ACCEPT_REASON": "{{ params.accept_reason or "
    "var.json.get('churnflow_accept_reasons', {}).get(ds, '') }}"
}

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
    params={
        "max_reject_share": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description="Largest share of the day's raw orders ingest may quarantine in this "
            "run (default: CHURNFLOW_MAX_REJECT_SHARE, 0.01).",
        ),
        "accept_reason": Param(
            None,
            type=["null", "string"],
            description="Accept this day's statistical flags (row counts, means) and publish "
            "it; the reason is recorded beside the validation result. Contract breaks are "
            "never accepted.",
        ),
    },
):
    ds = "{{ ds }}"
    ingest_orders = step(
        "ingest_orders",
        image="spark",
        profile="spark",
        argv=["churnflow", "ingest", "--ds", ds],
        env={
            "CHURNFLOW_MAX_REJECT_SHARE": "{{ params.max_reject_share if params.max_reject_share"
            " is not none else '' }}",
            **ACCEPT,
        },
    )
    build_features = step(
        "build_features",
        image="spark",
        profile="spark",
        argv=["churnflow", "features", "--ds", ds],
        env=ACCEPT,
        # dbt's staged tables have one name per model in the shared metastore: builds of two
        # days at once (a backfill beside the scheduled run) would drop each other's tables.
        max_active_tis_per_dag=1,
    )
    chain(
        LandingPartitionSensor(task_id="wait_for_orders", dataset="raw/orders"),
        PreviousDaySensor(task_id="wait_for_previous_ingest", step="ingest_orders"),
        ingest_orders,
        PreviousDaySensor(task_id="wait_for_previous_features", step="build_features"),
        build_features,
        PublishedPartition(task_id="publish_customer_features", asset=CUSTOMER_FEATURES),
    )
