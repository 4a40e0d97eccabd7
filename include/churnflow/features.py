"""`churnflow features --ds D`: the dbt build of the feature models for one day, on Spark.

The dbt project (`include/dbt`) turns silver orders into `features/customer_features/ds=D`
(through `customer_state`, the running totals). Write, audit, publish: dbt writes the day's
tables into a hidden staging folder of `<lake>/features`, dbt's tests and the
`customer_features` Great Expectations suite check them there, and only then are the staged
partitions swapped into the published datasets; a failed check leaves every published
partition as it was and names the rule. Whether the running state may chain on yesterday's is
decided here from the lake's listing (when each partition was written), so silver re-ingested
(or landed late) after yesterday's state was built makes the state be rebuilt from all silver
orders, instead of silently carrying the old numbers forward.

dbt runs inside this process so that, with the `local` target, it reuses the SparkSession that
`churnflow.spark` builds (a classic local session, or Spark Connect when `SPARK_REMOTE` is set):
one session start per step. The `cluster` target sends the same SQL to a Spark Thrift Server.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow.errors import ConfigError, DataError
from churnflow.ingest import unloaded_days, unloaded_days_problem
from churnflow.lake import CUSTOMER_FEATURES, FEATURES, RAW_CUSTOMERS, SILVER_ORDERS, Lake

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The metastore schema of the published feature tables (dbt's `published()` macro gets it as a
# var); this run's staged tables are in `staged_features` (dbt_project.yml).
PUBLISHED_SCHEMA = "features"
STATE = f"{FEATURES}/customer_state"
# The models of the build, in the order their staged partitions are published (the product last).
MODELS = ("customer_state", "customer_features")
# The feature model and everything upstream of it (staging CTEs, the state model), with their
# tests.
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

    def cli_args(self) -> list[str]:
        """The options every dbt invocation of churnflow passes (parse and build alike)."""
        project = str(self.project_dir)
        return [
            "--project-dir",
            project,
            "--profiles-dir",
            project,
            "--target-path",
            str(self.state_dir / "target"),
            "--log-path",
            str(self.state_dir / "logs"),
            "--no-use-colors",
            "--no-send-anonymous-usage-stats",
            # The results come back in-process; writing manifest.json and friends costs about
            # half a second a run and nothing reads them.
            "--no-write-json",
        ]


@dataclass(frozen=True)
class FeaturesResult:
    """What one build wrote, and where the time went (seconds per dbt node)."""

    ds: date
    rows: int
    location: str
    seconds: float
    node_seconds: dict[str, float] = field(default_factory=dict)
    dbt_seconds: float = 0.0
    plan: BuildPlan | None = None
    validation: str = ""  # the customer_features suite's line for the published day

    def slowest_nodes(self, count: int = 3) -> str:
        """`name 1.6, name 1.2, ...`: where a slow day went, for the task log."""
        ranked = sorted(self.node_seconds.items(), key=lambda item: -item[1])[:count]
        return ", ".join(f"{name} {seconds:.1f}" for name, seconds in ranked)


@dataclass(frozen=True)
class BuildPlan:
    """Whether one run chains on yesterday's state, decided from when lake partitions were
    written."""

    ds: date
    state_from_yesterday: bool
    republished: tuple[date, ...] = ()

    def note(self) -> str:
        """A line for the task log when the run rebuilds the state over silver that changed
        under it, and what that means for the days in between."""
        if not self.republished:
            return ""
        days = ", ".join(day.isoformat() for day in self.republished)
        return (
            f"silver orders of {days} were re-ingested (or landed late) after the running state "
            f"of {self.ds - timedelta(days=1)} was built: rebuilding the running state from all "
            "silver orders. Features of the days between keep the old numbers until they are "
            "rebuilt (README, 'Rebuilding a range')"
        )


def plan_build(lake: Lake, ds: date) -> BuildPlan:
    """Whether yesterday's state can be chained on.

    It can when it exists and every silver partition before `ds` was published before it was
    written; a partition published since (a rerun of ingest, a late day) is named in the plan,
    and the state is rebuilt from all silver orders up to `ds`, as it is when yesterday's state
    is missing (a first run over history, a day after one with no orders). A hole in silver
    where raw orders landed is refused rather than built over.
    """
    silver = lake.published(SILVER_ORDERS)
    if ds not in silver:
        raise FeaturesError(
            f"features ds={ds}: silver orders have no partition at "
            f"{lake.partition_uri(SILVER_ORDERS, ds)}; run `churnflow ingest --ds {ds}` first"
        )
    if unloaded := unloaded_days(lake, ds, silver):
        raise FeaturesError(f"features ds={ds}: {unloaded_days_problem(lake, unloaded, ds)}")
    built = lake.published(STATE).get(ds - timedelta(days=1))
    if built is None:
        return BuildPlan(ds, state_from_yesterday=False)
    republished = tuple(sorted(day for day, t in silver.items() if day < ds and t > built))
    return BuildPlan(ds, state_from_yesterday=not republished, republished=republished)


def _customers_format(lake: Lake) -> str:
    """`csv` or `parquet` for the optional raw/customers dataset; empty when it is absent."""
    formats = {
        item.suffix.lstrip(".")
        for day in lake.partitions(RAW_CUSTOMERS)
        for item in lake.files(RAW_CUSTOMERS, day)
        if item.suffix in (".csv", ".parquet")
    }
    if len(formats) > 1:
        raise FeaturesError(
            f"raw customers at {lake.dataset_uri(RAW_CUSTOMERS)} mix CSV and Parquet files; "
            "one dataset has one format"
        )
    return formats.pop() if formats else ""


def _count_rows(folder: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(folder, format="parquet").count_rows()


def _invoke_dbt(settings: DbtSettings, args: Sequence[str], dbt_vars: dict[str, Any]) -> Any:
    """`dbt <args>` in this process, on the project's manifest as parsed once
    (churnflow.dbt_manifest) rather than parsed again because the day's vars changed."""
    from dbt.cli.main import dbtRunner

    from churnflow.dbt_manifest import load_or_parse

    with warnings.catch_warnings():
        # dbt-spark's session method asks for Hive support on every statement; over Spark
        # Connect the server already has it and pyspark warns that the static config is fixed.
        warnings.filterwarnings("ignore", message=".*CANNOT_MODIFY_STATIC_CONFIG.*")
        manifest = load_or_parse(settings, dbt_vars)
        return dbtRunner(manifest=manifest).invoke(
            [*args, *settings.cli_args(), "--vars", json.dumps(dbt_vars)]
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
    dataset = DATASETS.get(model, f"{FEATURES}/{model} (staged, not published)")
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
    lake: Lake | Path | str,
    ds: date,
    *,
    settings: DbtSettings | None = None,
    accept: str | None = None,
) -> FeaturesResult:
    """Build, check and publish the day's features; raise FeaturesError on any failure."""
    from churnflow.validate import require_site, validate

    started = time.perf_counter()
    lake = Lake.of(lake)
    require_site(lake, "customer_features")
    settings = settings or DbtSettings.from_env()
    plan = plan_build(lake, ds)
    spark = None
    if settings.target == "local":
        from churnflow.spark import get_spark

        spark = get_spark()  # dbt's session method picks this session up
    with lake.staging(FEATURES, f"ds={ds.isoformat()}") as staging:
        dbt_vars = {
            "ds": ds.isoformat(),
            "lake": lake.uri,
            "staging_root": staging.uri,
            "published_schema": PUBLISHED_SCHEMA,
            "state_from_yesterday": plan.state_from_yesterday,
            "raw_customers": _customers_format(lake),
            # The dbt hook adds to (or drops from) the metastore the partitions that differ from
            # these folders: listing them here costs milliseconds, a repair half a second.
            "lake_partitions": {
                dataset: lake.partition_folders(dataset)
                for dataset in (SILVER_ORDERS, RAW_CUSTOMERS, STATE, CUSTOMER_FEATURES)
            },
        }
        dbt_started = time.perf_counter()
        outcome = _invoke_dbt(settings, ["build", "--select", SELECTION], dbt_vars)
        dbt_seconds = time.perf_counter() - dbt_started
        node_seconds = _check_result(outcome, ds, lake.uri, spark, settings.state_dir / "logs")
        staged = staging.partition_path("customer_features", ds)
        validation = validate(lake, ds, "customer_features", staged=staged, accept=accept)
        rows = _count_rows(staged)
        published = {model: staging.publish(model, ds) for model in MODELS}
    if spark is not None:
        _register_published(spark, ds)
    return FeaturesResult(
        ds=ds,
        rows=rows,
        location=published["customer_features"],
        seconds=round(time.perf_counter() - started, 2),
        node_seconds=node_seconds,
        dbt_seconds=round(dbt_seconds, 2),
        plan=plan,
        validation=validation.line(),
    )


def _register_published(spark: SparkSession, ds: date) -> None:
    """Add the partitions just published to the metastore, so the next run's hook finds the
    lake and the metastore equal and repairs nothing (a repair lists every folder)."""
    for model in MODELS:
        spark.sql(
            f"alter table {PUBLISHED_SCHEMA}.{model} add if not exists "
            f"partition (ds='{ds.isoformat()}')"
        )


def run_features(ds: date) -> str:
    """The CLI step: build the day's features in the configured lake; lines for the log."""
    from churnflow.settings import get_settings

    settings = get_settings()
    result = build_features(Lake(settings.lake), ds, accept=settings.accept_reason)
    lines = [
        f"features ds={ds}: {result.rows} active customers published to {result.location} "
        f"in {result.seconds:.1f} s",
        f"dbt build {result.dbt_seconds:.1f} s; slowest nodes (s): {result.slowest_nodes()}",
        result.validation,
    ]
    if result.plan is not None and result.plan.note():
        lines.insert(0, f"WARNING features ds={ds}: {result.plan.note()}")
    return "\n".join(lines)
