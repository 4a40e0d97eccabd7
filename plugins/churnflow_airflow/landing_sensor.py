"""Wait for a day's partition to land without holding a worker slot.

Raw input from upstream, or a dataset another DAG publishes (features for scoring,
predictions for monitoring, silver orders for training).

Arrival means the partition folder holds at least one data file; a folder whose data files
are all zero bytes is a broken delivery and fails at once, without retries. The content
check (rows, columns) is a task-side step that follows this sensor.

By default the sensor defers: one check in the task, then the triggerer checks every
`poke_interval` in its event loop. Reschedule mode started a task process for every check
(about half a CPU second each on the local stack) and left up to a poke interval between a
partition's publication and the next DAG's step, on every hop of the daily chain
(bench/backfill.py). `CHURNFLOW_LANDING_DEFERRABLE=false` is for a deployment without a
triggerer: reschedule mode as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout
from airflow.triggers.base import BaseTrigger, TriggerEvent

from churnflow_airflow.config import lake_uri, load_settings

LANDED, WAITING, EMPTY, TIMED_OUT = "landed", "waiting", "empty", "timed_out"


def partition_state(partition: ObjectStoragePath, what: str) -> tuple[str, str]:
    """Whether `partition` landed, and the line that says so; `what` names it in that line."""
    if not partition.is_dir():
        return WAITING, f"{what} not landed yet: no folder {partition}"
    files = [
        entry
        for entry in partition.iterdir()
        if entry.is_file() and not entry.name.startswith((".", "_"))
    ]
    if not files:
        return WAITING, f"{what}: folder exists, no data file yet"
    sizes = {entry.name: entry.stat().st_size for entry in files}
    if not any(sizes.values()):
        return EMPTY, (
            f"{what} at {partition} is empty: "
            f"{', '.join(sorted(sizes))} {'has' if len(sizes) == 1 else 'have'} 0 bytes"
        )
    return LANDED, f"{what} landed: {sizes}"


class PartitionLandedTrigger(BaseTrigger):
    """Checks a partition every `poke_interval` seconds in the triggerer until it landed, is
    an empty delivery, or `deadline` (ISO, UTC) passed; one event says which."""

    def __init__(
        self, uri: str, conn_id: str | None, what: str, poke_interval: float, deadline: str
    ) -> None:
        super().__init__()
        self.uri, self.conn_id, self.what = uri, conn_id, what
        self.poke_interval, self.deadline = poke_interval, deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "uri": self.uri,
                "conn_id": self.conn_id,
                "what": self.what,
                "poke_interval": self.poke_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        partition = ObjectStoragePath(self.uri, conn_id=self.conn_id)
        deadline = datetime.fromisoformat(self.deadline)
        while True:
            state, line = await asyncio.to_thread(partition_state, partition, self.what)
            if state != WAITING:
                yield TriggerEvent({"state": state, "line": line})
                return
            if datetime.now(UTC) >= deadline:
                yield TriggerEvent({"state": TIMED_OUT, "line": line})
                return
            self.log.info("%s", line)
            await asyncio.sleep(self.poke_interval)


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
        deferrable: bool | None = None,
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
        self.deferrable = settings.landing_deferrable if deferrable is None else deferrable

    @property
    def partition(self) -> ObjectStoragePath:
        root = ObjectStoragePath(lake_uri(self.lake), conn_id=self.conn_id)
        return root / self.dataset / f"ds={self.ds}"

    @property
    def what(self) -> str:
        return f"{self.dataset} partition ds={self.ds}"

    def poke(self, context: Any) -> bool:
        state, line = partition_state(self.partition, self.what)
        if state == EMPTY:
            raise AirflowFailException(line)
        self.log.info("%s", line)
        return state == LANDED

    def execute(self, context: Any) -> Any:
        if self.deferrable:
            if self.poke(context):
                return None
            deadline = datetime.now(UTC) + timedelta(seconds=self.timeout)
            trigger = PartitionLandedTrigger(
                str(self.partition),
                self.conn_id,
                self.what,
                self.poke_interval,
                deadline.isoformat(),
            )
            # The trigger's own deadline ends the wait with the message below; this is a backstop.
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + 300),
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            raise self._missing() from err

    def execute_complete(self, context: Any, event: dict[str, str]) -> None:
        """Back from the triggerer: landed, an empty delivery, or the wait timed out."""
        if event["state"] == EMPTY:
            raise AirflowFailException(event["line"])
        if event["state"] == TIMED_OUT:
            raise self._missing()
        self.log.info("%s", event["line"])

    def _missing(self) -> AirflowSensorTimeout:
        return AirflowSensorTimeout(
            f"{self.what} is missing: nothing landed at "
            f"{self.partition} within {int(self.timeout)} s{self.timeout_source}; "
            f"check {self.producer} for that day"
        )
