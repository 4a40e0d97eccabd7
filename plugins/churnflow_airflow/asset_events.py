"""Asset events that say which day changed: `extra={"ds": ..., "partition": ...}`.

A consumer DAG scheduled on an asset, or reading its events, must know which partition was
published; a backfill emits one event per day. The event is emitted by a tiny task after the
step that published the partition, so it is the same under both runners.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, BaseOperator


class PublishedPartition(BaseOperator):
    """Emits one event of `asset` for the run's day, carrying `ds` and the partition's path."""

    ui_color = "#f3eefb"

    def __init__(self, *, asset: Asset, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [asset])
        kwargs.setdefault("retries", 0)
        kwargs.setdefault(
            "doc_md", f"Emits an event of asset `{asset.name}` with `extra.ds` = the run's day."
        )
        super().__init__(**kwargs)
        self.asset = asset

    def execute(self, context: Any) -> None:
        ds = context["ds"]
        dataset = self.asset.uri.removeprefix("churnflow://lake/")
        extra = {"ds": ds, "partition": f"{dataset}/ds={ds}"}
        context["outlet_events"][self.asset].extra = extra
        self.log.info("asset %s: published %s", self.asset.name, extra["partition"])
