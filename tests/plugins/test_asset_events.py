"""Asset events carry the day they are about, rendered for the run that emits them."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from churnflow_airflow.asset_events import AssetEventTask, PublishedPartition
from churnflow_airflow.assets import CHURN_MODEL, CUSTOMER_FEATURES
from tests.dags.conftest import worker_context

DAY = pendulum.datetime(2026, 3, 1, tz="UTC")
DAILY_RUN = {
    "run_type": "scheduled",
    "run_after": DAY.add(days=1),
    "logical_date": DAY,
    "data_interval": (DAY, DAY.add(days=1)),
}


def _emit(task: AssetEventTask) -> dict:
    context = worker_context(task, **DAILY_RUN)
    task.render_template_fields(context)
    task.execute(context)
    return context["outlet_events"][task.asset].extra


def test_a_published_partition_names_its_day_and_path() -> None:
    with DAG("probe_partition_event", schedule=None):
        task = PublishedPartition(task_id="publish_customer_features", asset=CUSTOMER_FEATURES)
    assert task.outlets == [CUSTOMER_FEATURES]
    assert _emit(task) == {
        "ds": "2026-03-01",
        "partition": "features/customer_features/ds=2026-03-01",
    }


def test_an_event_carries_its_rendered_extra() -> None:
    with DAG("probe_model_event", schedule=None):
        task = AssetEventTask(
            task_id="publish_model_decision",
            asset=CHURN_MODEL,
            extra={"as_of": "{{ macros.ds_add(ds, -1) }}"},
        )
    assert _emit(task) == {"as_of": "2026-02-28"}
