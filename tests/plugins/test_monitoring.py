"""The Airflow side names the monitoring datasets itself (the Airflow image carries no task
package): its names must be the lake's."""

from __future__ import annotations

from churnflow import lake
from churnflow_airflow import monitoring


def test_the_airflow_side_reads_the_datasets_the_task_side_writes() -> None:
    assert monitoring.DRIFT == lake.DRIFT
    assert monitoring.DECISIONS == lake.DECISIONS
    assert monitoring.PROMOTIONS == lake.PROMOTIONS
