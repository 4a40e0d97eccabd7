"""The landing sensor: waits for a partition, fails clearly when it is missing or empty."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from churnflow_airflow.config import lake_uri
from churnflow_airflow.landing_sensor import LandingPartitionSensor, PartitionLandedTrigger

DS = "2026-03-01"


def _sensor(lake: Path, **kwargs: object) -> LandingPartitionSensor:
    sensor = LandingPartitionSensor(
        task_id="wait_for_orders",
        dataset="raw/orders",
        lake=str(lake),
        **kwargs,  # type: ignore[arg-type]
    )
    sensor.ds = DS  # what template rendering does for {{ ds }}
    return sensor


def _partition(lake: Path) -> Path:
    folder = lake / "raw" / "orders" / f"ds={DS}"
    folder.mkdir(parents=True)
    return folder


def test_without_a_triggerer_it_reschedules_so_waiting_holds_no_worker_slot(tmp_path: Path) -> None:
    assert _sensor(tmp_path).mode == "reschedule"


def test_not_landed_while_the_folder_is_missing(tmp_path: Path) -> None:
    assert _sensor(tmp_path).poke({}) is False


def test_not_landed_while_only_staging_or_marker_files_exist(tmp_path: Path) -> None:
    folder = _partition(tmp_path)
    (folder / "_SUCCESS").touch()
    (folder / ".part-00000.csv.crc").write_text("x")
    assert _sensor(tmp_path).poke({}) is False


def test_landed_when_a_data_file_has_bytes(tmp_path: Path) -> None:
    (_partition(tmp_path) / "part-00000.csv").write_text("order_id\n1\n")
    assert _sensor(tmp_path).poke({}) is True


def test_empty_delivery_fails_at_once_naming_the_files(tmp_path: Path) -> None:
    folder = _partition(tmp_path)
    (folder / "part-00000.csv").touch()
    with pytest.raises(AirflowFailException, match=r"ds=2026-03-01 at .* is empty: part-00000.csv"):
        _sensor(tmp_path).poke({})


def test_timeout_names_the_missing_partition(tmp_path: Path) -> None:
    sensor = _sensor(tmp_path, mode="poke", timeout=0.3, poke_interval=0.1, deferrable=False)
    with pytest.raises(AirflowSensorTimeout) as caught:
        sensor.execute({})
    message = str(caught.value)
    assert f"raw/orders partition ds={DS} is missing" in message
    assert str(tmp_path / "raw" / "orders" / f"ds={DS}") in message
    assert "check the upstream export for that day" in message


def test_timeout_of_a_published_dataset_names_the_step_that_publishes_it(tmp_path: Path) -> None:
    sensor = _sensor(
        tmp_path,
        mode="poke",
        timeout=0.1,
        poke_interval=0.05,
        producer="churn_features.ingest",
        deferrable=False,
    )
    with pytest.raises(AirflowSensorTimeout, match=r"check churn_features\.ingest for that day"):
        sensor.execute({})


def test_lake_uris_map_to_object_storage() -> None:
    assert lake_uri("/data/lake") == "file:///data/lake"
    assert lake_uri("s3a://bucket/lake") == "s3://bucket/lake"


def _run_trigger(trigger: PartitionLandedTrigger) -> dict[str, str]:
    async def first_event() -> dict[str, str]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first_event(), timeout=10))


def _trigger(lake: Path, *, deadline_s: float = 30) -> PartitionLandedTrigger:
    sensor = _sensor(lake)
    deadline = (datetime.now(UTC) + timedelta(seconds=deadline_s)).isoformat()
    return PartitionLandedTrigger(str(sensor.partition), None, sensor.what, 0.05, deadline)


def test_defers_by_default_and_checks_once_before_deferring(tmp_path: Path) -> None:
    (_partition(tmp_path) / "part-00000.csv").write_text("order_id\n1\n")
    sensor = _sensor(tmp_path)
    assert sensor.deferrable
    assert sensor.execute({}) is None  # landed: done in the task, no trip to the triggerer


def test_a_missing_partition_defers_to_the_triggerer_with_a_deadline(tmp_path: Path) -> None:
    sensor = _sensor(tmp_path, timeout=600)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, PartitionLandedTrigger)
    assert deferred.value.method_name == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == "churnflow_airflow.landing_sensor.PartitionLandedTrigger"
    assert PartitionLandedTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert datetime.fromisoformat(kwargs["deadline"]) > datetime.now(UTC) + timedelta(seconds=590)


def test_the_trigger_fires_once_the_partition_lands(tmp_path: Path) -> None:
    trigger = _trigger(tmp_path)
    folder = _partition(tmp_path)

    async def land_later() -> dict[str, str]:
        async def land() -> None:
            await asyncio.sleep(0.2)
            (folder / "part-00000.parquet").write_bytes(b"PAR1")

        landing = asyncio.create_task(land())
        async for event in trigger.run():
            await landing
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(land_later(), timeout=10))
    assert event["state"] == "landed"
    assert _sensor(tmp_path).execute_complete({}, event) is None


def test_the_trigger_reports_an_empty_delivery_and_the_task_fails_naming_it(
    tmp_path: Path,
) -> None:
    (_partition(tmp_path) / "part-00000.csv").touch()
    event = _run_trigger(_trigger(tmp_path))
    assert event["state"] == "empty"
    with pytest.raises(AirflowFailException, match=r"ds=2026-03-01 at .* is empty: part-00000.csv"):
        _sensor(tmp_path).execute_complete({}, event)


def test_the_trigger_deadline_fails_the_task_naming_the_missing_partition(
    tmp_path: Path,
) -> None:
    event = _run_trigger(_trigger(tmp_path, deadline_s=0.2))
    assert event["state"] == "timed_out"
    with pytest.raises(AirflowSensorTimeout, match=f"raw/orders partition ds={DS} is missing"):
        _sensor(tmp_path).execute_complete({}, event)


def test_reschedule_mode_when_deferral_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURNFLOW_LANDING_DEFERRABLE", "false")
    sensor = _sensor(tmp_path, timeout=0.2, poke_interval=0.05, mode="poke")
    assert not sensor.deferrable
    with pytest.raises(AirflowSensorTimeout, match="is missing"):
        sensor.execute({})
