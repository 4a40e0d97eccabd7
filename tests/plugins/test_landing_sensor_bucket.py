"""The landing sensor and its trigger on an object-store lake (moto's S3 server, the one
stand-in): the same check in the task and in the triggerer's thread."""

from __future__ import annotations

import os

import pytest
from airflow.sdk.exceptions import TaskDeferred

from churnflow_airflow.landing_sensor import LandingPartitionSensor, PartitionLandedTrigger
from tests.churnflow.test_object_lake import BUCKET, s3_endpoint, s3_env  # noqa: F401 (fixtures)
from tests.plugins.test_landing_sensor import _run_trigger

DS = "2026-03-01"


@pytest.mark.usefixtures("s3_env")
def test_a_bucket_partition_defers_then_the_trigger_sees_it_land() -> None:
    sensor = LandingPartitionSensor(
        task_id="wait_for_features",
        dataset="features/customer_features",
        lake=f"s3a://{BUCKET}/sensor-{os.urandom(4).hex()}",
    )
    sensor.ds = DS
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, PartitionLandedTrigger)
    assert trigger.uri.startswith(f"s3://{BUCKET}/")
    (sensor.partition / "part-00000.parquet").write_bytes(b"PAR1")
    event = _run_trigger(trigger)
    assert event["state"] == "landed", event
    assert "part-00000.parquet" in event["line"]
    assert sensor.poke({}) is True
