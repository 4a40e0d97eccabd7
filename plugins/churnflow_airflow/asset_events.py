"""Asset events that say what changed: a day's partition (`extra.ds`), or a decision's day.

A consumer DAG scheduled on an asset, or reading its events, must know which partition was
published; a backfill emits one event per day. The event is emitted by a tiny task after the
step that published the partition, so it is the same under both runners.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, BaseOperator


class AssetEventTask(BaseOperator):
    """Emits one event of `asset` with `extra`, a dict of templates rendered for the run."""

    template_fields = ("extra",)
    ui_color = "#f3eefb"

    def __init__(self, *, asset: Asset, extra: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [asset])
        kwargs.setdefault("retries", 0)
        kwargs.setdefault(
            "doc_md", f"Emits an event of asset `{asset.name}` with extra {sorted(extra)}."
        )
        super().__init__(**kwargs)
        self.asset = asset
        self.extra = dict(extra)

    def execute(self, context: Any) -> None:
        context["outlet_events"][self.asset].extra = dict(self.extra)
        self.log.info("asset %s: event with %s", self.asset.name, self.extra)


class PublishedPartition(AssetEventTask):
    """Emits one event of `asset` for the run's day, carrying `ds` and the partition's path."""

    def __init__(self, *, asset: Asset, **kwargs: Any) -> None:
        dataset = asset.uri.removeprefix("churnflow://lake/")
        kwargs.setdefault(
            "doc_md", f"Emits an event of asset `{asset.name}` with `extra.ds` = the run's day."
        )
        extra = {"ds": "{{ ds }}", "partition": f"{dataset}/ds={{{{ ds }}}}"}
        super().__init__(asset=asset, extra=extra, **kwargs)
