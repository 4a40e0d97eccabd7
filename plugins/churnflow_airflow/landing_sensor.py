"""Wait for a day's partition to land, in reschedule mode so no worker slot is held.

Raw input from upstream, or a dataset another DAG publishes (silver orders for training).

Arrival means the partition folder holds at least one data file; a folder whose data files
are all zero bytes is a broken delivery and fails at once, without retries. The content
check (rows, columns) is a task-side step that follows this sensor.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from churnflow_airflow.config import lake_uri, load_settings


class LandingPartitionSensor(BaseSensorOperator):
    """Succeeds once `<lake>/<dataset>/ds=<ds>/` holds a non-empty data file.

    `producer` names what writes the partition, for the message of a missing one: an
    upstream export for raw data, the producing DAG's step for a published dataset.
    """

    template_fields = ("ds",)
    ui_color = "#fdf3e1"

    def __init__(
        self,
        *,
        dataset: str,
        ds: str = "{{ ds }}",
        lake: str | None = None,
        conn_id: str | None = None,
        producer: str = "the upstream export",
        **kwargs: Any,
    ) -> None:
        settings = load_settings()
        # Where the timeout comes from, for the message when it expires.
        self.timeout_source = "" if "timeout" in kwargs else " (CHURNFLOW_LANDING_TIMEOUT)"
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("timeout", settings.landing_timeout_s)
        kwargs.setdefault("poke_interval", settings.landing_poke_interval_s)
        kwargs.setdefault("exponential_backoff", False)
        super().__init__(**kwargs)
        self.dataset = dataset
        self.ds = ds
        self.lake = lake or settings.lake
        self.conn_id = conn_id
        self.producer = producer

    @property
    def partition(self) -> ObjectStoragePath:
        root = ObjectStoragePath(lake_uri(self.lake), conn_id=self.conn_id)
        return root / self.dataset / f"ds={self.ds}"

    def poke(self, context: Any) -> bool:
        partition = self.partition
        if not partition.is_dir():
            self.log.info("%s ds=%s not landed yet: no folder %s", self.dataset, self.ds, partition)
            return False
        files = [
            entry
            for entry in partition.iterdir()
            if entry.is_file() and not entry.name.startswith((".", "_"))
        ]
        if not files:
            self.log.info("%s ds=%s: folder exists, no data file yet", self.dataset, self.ds)
            return False
        sizes = {entry.name: entry.stat().st_size for entry in files}
        if not any(sizes.values()):
            raise AirflowFailException(
                f"{self.dataset} partition ds={self.ds} at {partition} is empty: "
                f"{', '.join(sorted(sizes))} {'has' if len(sizes) == 1 else 'have'} 0 bytes"
            )
        self.log.info("%s ds=%s landed: %s", self.dataset, self.ds, sizes)
        return True

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            raise AirflowSensorTimeout(
                f"{self.dataset} partition ds={self.ds} is missing: nothing landed at "
                f"{self.partition} within {int(self.timeout)} s{self.timeout_source}; "
                f"check {self.producer} for that day"
            ) from err
