"""The landing sensor: waits for a partition, fails clearly when it is missing or empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from churnflow_airflow.config import lake_uri
from churnflow_airflow.landing_sensor import LandingPartitionSensor

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


def test_defaults_to_reschedule_mode_so_waiting_holds_no_worker_slot(tmp_path: Path) -> None:
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
    sensor = _sensor(tmp_path, mode="poke", timeout=0.3, poke_interval=0.1)
    with pytest.raises(AirflowSensorTimeout) as caught:
        sensor.execute({})
    message = str(caught.value)
    assert f"raw/orders partition ds={DS} is missing" in message
    assert str(tmp_path / "raw" / "orders" / f"ds={DS}") in message
    assert "check the upstream export for that day" in message


def test_timeout_of_a_published_dataset_names_the_step_that_publishes_it(tmp_path: Path) -> None:
    sensor = _sensor(
        tmp_path, mode="poke", timeout=0.1, poke_interval=0.05, producer="churn_features.ingest"
    )
    with pytest.raises(AirflowSensorTimeout, match=r"check churn_features\.ingest for that day"):
        sensor.execute({})


def test_lake_uris_map_to_object_storage() -> None:
    assert lake_uri("/data/lake") == "file:///data/lake"
    assert lake_uri("s3a://bucket/lake") == "s3://bucket/lake"
