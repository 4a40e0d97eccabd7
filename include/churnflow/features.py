"""`churnflow features --ds D`: the dbt build of the feature models for one day, on Spark.

The dbt project (`include/dbt`) turns silver orders into `features/customer_features/ds=D`.
dbt runs inside this process so that, with the `local` target, it reuses the SparkSession that
`churnflow.spark` builds (a classic local session, or Spark Connect when `SPARK_REMOTE` is set):
one session start per step. The `cluster` target sends the same SQL to a Spark Thrift Server.
Any failed dbt model or test becomes a FeaturesError naming the model, the rule and the count.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

FEATURES = "features/customer_features"
SILVER_ORDERS = "silver/orders"
RAW_CUSTOMERS = "raw/customers"
# The feature model and everything upstream of it (staging views, daily and state models), with
# their tests.
SELECTION = "+customer_features"
# The lake dataset behind each model, to name it in failures.
DATASETS = {"stg_orders": SILVER_ORDERS, "stg_customers": RAW_CUSTOMERS}
_DETAIL_ROWS = 5


class FeaturesError(DataError):
    """The day's features cannot be built from its inputs, or a dbt test failed on them."""


@dataclass(frozen=True)
class DbtSettings:
    """Where the dbt project is, where dbt may write, and which profile target it uses."""

    project_dir: Path
    state_dir: Path
    target: str = "local"

    @classmethod
    def from_env(cls) -> DbtSettings:
        """`CHURNFLOW_DBT_PROJECT_DIR`, `CHURNFLOW_DBT_STATE_DIR`, `CHURNFLOW_DBT_TARGET`."""
        default_project = Path(__file__).resolve().parents[1] / "dbt"
        target = os.environ.get("CHURNFLOW_DBT_TARGET", "local")
        if target not in ("local", "cluster"):
            raise ConfigError(f"CHURNFLOW_DBT_TARGET={target!r}: expected 'local' or 'cluster'")
        return cls(
            project_dir=Path(os.environ.get("CHURNFLOW_DBT_PROJECT_DIR", default_project)),
            state_dir=Path(os.environ.get("CHURNFLOW_DBT_STATE_DIR", ".churnflow/dbt")).resolve(),
            target=target,
        )


@dataclass(frozen=True)
class FeaturesResult:
    """What one build wrote, and where the time went (seconds per dbt node)."""

    ds: date
    rows: int
    location: str
    seconds: float
    node_seconds: dict[str, float] = field(default_factory=dict)
    dbt_seconds: float = 0.0

    def slowest_nodes(self, count: int = 3) -> str:
        """`name 1.6, name 1.2, ...`: where a slow day went, for the task log."""
        ranked = sorted(self.node_seconds.items(), key=lambda item: -item[1])[:count]
        return ", ".join(f"{name} {seconds:.1f}" for name, seconds in ranked)


def lake_uri(lake: Path | str) -> str:
    """The lake root as the URI Spark and dbt use: `file:///abs/path` for a local folder."""
    text = str(lake)
    if "://" in text and not text.startswith("file://"):
        return text.rstrip("/")
    return Path(text.removeprefix("file://")).expanduser().resolve().as_uri()


def _filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for a lake URI (s3a:// is Hadoop's name for s3://)."""
    from pyarrow import fs

    if uri.startswith("s3a://"):
        uri = "s3://" + uri.removeprefix("s3a://")
    return fs.FileSystem.from_uri(uri)


def _exists(uri: str) -> bool:
    from pyarrow import fs

    filesystem, path = _filesystem(uri)
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def _customers_format(root: str) -> str:
    """`csv` or `parquet` for the optional raw/customers dataset; empty when it is absent."""
    from pyarrow import fs

    uri = f"{root}/{RAW_CUSTOMERS}"
    if not _exists(uri):
        return ""
    filesystem, path = _filesystem(uri)
    names = [i.base_name for i in filesystem.get_file_info(fs.FileSelector(path, recursive=True))]
    formats = {
        name.rsplit(".", 1)[-1]
        for name in names
        if name.endswith((".csv", ".parquet")) and not name.startswith((".", "_"))
    }
    if len(formats) > 1:
        raise FeaturesError(
            f"raw customers at {uri} mix CSV and Parquet files; one dataset has one format"
        )
    return formats.pop() if formats else ""


def partitions_fingerprint(uri: str) -> str:
    """md5 of a dataset's partition folder names (`ds=...`), sorted, one per line.

    The dbt hook compares it with the metastore's `show partitions` and repairs the table only
    when they differ; listing one folder here costs milliseconds, a repair up to a second.
    """
    from pyarrow import fs

    if not _exists(uri):
        return ""
    filesystem, path = _filesystem(uri)
    names = sorted(
        info.base_name
        for info in filesystem.get_file_info(fs.FileSelector(path))
        if info.type == fs.FileType.Directory and info.base_name.startswith("ds=")
    )
    return hashlib.md5("\n".join(names).encode(), usedforsecurity=False).hexdigest()


def _count_rows(uri: str) -> int:
    import pyarrow.dataset as ds

    filesystem, path = _filesystem(uri)
    return ds.dataset(path, filesystem=filesystem, format="parquet").count_rows()


def _invoke_dbt(settings: DbtSettings, args: Sequence[str]) -> Any:
    from dbt.cli.main import dbtRunner

    project = str(settings.project_dir)
    with warnings.catch_warnings():
        # dbt-spark's session method asks for Hive support on every statement; over Spark
        # Connect the server already has it and pyspark warns that the static config is fixed.
        warnings.filterwarnings("ignore", message=".*CANNOT_MODIFY_STATIC_CONFIG.*")
        return dbtRunner().invoke(
            [
                *args,
                "--project-dir",
                project,
                "--profiles-dir",
                project,
                "--target-path",
                str(settings.state_dir / "target"),
                "--log-path",
                str(settings.state_dir / "logs"),
                "--no-use-colors",
                "--no-send-anonymous-usage-stats",
                # The results come back in-process; writing manifest.json and friends costs
                # about half a second a run and nothing reads them.
                "--no-write-json",
            ]
        )


def _failed_rows(spark: SparkSession | None, sql: str | None) -> list[tuple[Any, ...]]:
    """The rows a failed test returned (rerun on its compiled SQL), when a session is at hand."""
    if spark is None or not sql:
        return []
    try:
        return [tuple(row) for row in spark.sql(sql).limit(_DETAIL_ROWS).collect()]
    except Exception:  # the details are a courtesy; the failure itself is already known
        return []


def _describe_failure(result: Any, root: str, ds: date, spark: SparkSession | None) -> str:
    """One failed dbt node as a sentence: model or test, lake partition, rule, counts."""
    node = result.node
    if node.resource_type != "test":
        lines = (result.message or "").strip().splitlines()[:3]
        return f"{node.resource_type} {node.name} failed: {' '.join(lines)}"
    model = (node.attached_node or "").rsplit(".", 1)[-1] or node.name
    test = node.test_metadata.name if node.test_metadata else node.name
    dataset = DATASETS.get(model, f"features/{model}")
    scope = f" ({root}/{dataset}/ds={ds.isoformat()})"
    rows = _failed_rows(spark, getattr(node, "compiled_code", None))
    if test == "row_rules" and rows:
        broken = "; ".join(f"rule `{rule}` broken by {count} row(s)" for rule, count in rows)
        return f"test row_rules on {model}{scope} failed: {broken}"
    column = node.column_name or (node.test_metadata.kwargs.get("column_name", "") or "")
    subject = f"{model}.{column}" if column else model
    failures = result.failures if result.failures is not None else "?"
    detail = f", e.g. {rows[:3]}" if rows else ""
    return f"test {test} on {subject}{scope} failed: {failures} failing row(s){detail}"


def _check_result(
    outcome: Any, ds: date, root: str, spark: SparkSession | None, logs: Path
) -> dict[str, float]:
    """Raise FeaturesError for any failed node; return seconds per node on success."""
    if outcome.exception is not None and outcome.result is None:
        raise ConfigError(f"features ds={ds}: dbt could not run: {outcome.exception}")
    results = list(outcome.result.results) if outcome.result is not None else []
    failed = [r for r in results if str(r.status) in ("error", "fail", "runtime error")]
    skipped = [r for r in results if str(r.status) == "skipped"]
    if failed or not outcome.success:
        problems = [_describe_failure(r, root, ds, spark) for r in failed]
        problems = problems or [str(outcome.exception)]
        tail = f"; {len(skipped)} downstream node(s) skipped, not written" if skipped else ""
        raise FeaturesError(
            f"features ds={ds}: dbt build failed: {'; '.join(problems)}{tail}. "
            f"dbt's log is under {logs}"
        )
    return {r.node.name: round(float(r.execution_time), 3) for r in results}


def build_features(
    lake: Path | str, ds: date, *, settings: DbtSettings | None = None
) -> FeaturesResult:
    """Run `dbt build` of the feature models for `ds`; raise FeaturesError on any failure."""
    started = time.perf_counter()
    settings = settings or DbtSettings.from_env()
    root = lake_uri(lake)
    silver_day = f"{root}/{SILVER_ORDERS}/ds={ds.isoformat()}"
    if not _exists(silver_day):
        raise FeaturesError(
            f"features ds={ds}: silver orders have no partition at {silver_day}; "
            f"run `churnflow ingest --ds {ds}` first"
        )
    spark = None
    if settings.target == "local":
        from churnflow.spark import get_spark

        spark = get_spark()  # dbt's session method picks this session up
    dbt_vars = {
        "ds": ds.isoformat(),
        "lake": root,
        "raw_customers": _customers_format(root),
        "lake_partitions": {
            dataset: partitions_fingerprint(f"{root}/{dataset}")
            for dataset in (SILVER_ORDERS, RAW_CUSTOMERS)
        },
    }
    dbt_started = time.perf_counter()
    outcome = _invoke_dbt(
        settings, ["build", "--select", SELECTION, "--vars", json.dumps(dbt_vars)]
    )
    dbt_seconds = time.perf_counter() - dbt_started
    node_seconds = _check_result(outcome, ds, root, spark, settings.state_dir / "logs")
    location = f"{root}/{FEATURES}/ds={ds.isoformat()}"
    return FeaturesResult(
        ds=ds,
        rows=_count_rows(location),
        location=location,
        seconds=round(time.perf_counter() - started, 2),
        node_seconds=node_seconds,
        dbt_seconds=round(dbt_seconds, 2),
    )


def run_features(ds: date) -> str:
    """The CLI step: build the day's features in the configured lake; two lines for the log."""
    from churnflow.settings import get_settings

    result = build_features(get_settings().lake, ds)
    return (
        f"features ds={ds}: {result.rows} active customers written to {result.location} "
        f"in {result.seconds:.1f} s\n"
        f"dbt build {result.dbt_seconds:.1f} s; slowest nodes (s): {result.slowest_nodes()}"
    )
