"""Raw orders of one day -> silver orders: typed, checked against the contract, deduplicated.

`churnflow ingest --ds D` reads `raw/orders/ds=D`, writes the rows that keep the landing
contract to `silver/orders/ds=D` and the rows that break it to `quarantine/orders/ds=D`, each
with the rule it broke. Choices worth knowing:

- File-level faults (partition missing, no data files, an empty file, a contract column
  missing) are found by the Spark-free landing check before a job starts; they fail the step.
- Every file is read on its own with all columns as strings (CSV under its own header as an
  all-string schema, so no inference pass and no mix-up between files whose columns come in
  another order; Parquet cast to strings after its column types are checked), with its
  lake-relative path as a literal `source_file`. `_metadata.file_name` would serve one scan
  for all files but is URL-encoded (`a%20b.csv`), so it cannot name a file reliably.
- Each row is typed and checked; the first rule it breaks (in `ROW_RULES` order) is the one
  recorded. Identical orders within the day collapse to one. An order id that comes with
  different content within the day, or that silver already holds on an earlier day (ds < D,
  so a rerun never sees the day's own previous output), is rejected as not unique.
- The earlier-day check reads only the `order_id` column of earlier silver partitions, with
  a range filter on the day's lowest and highest id pushed down to Parquet row-group
  statistics. Ids that grow with time (the generator's, most upstream systems') make every
  earlier file cost its footer only, so a day's cost stays nearly flat as history grows;
  random ids fall back to reading the id column of the history. Measured warm on 2 busy
  cores, 11.6k new ids against 365 days / 10M orders: 1.4 s with the range filter, 5 s
  without. No separate id index is kept: it would be a second copy of silver to keep right
  under reruns and backfills. Partitions are listed on the driver (`SESSION_CONF`): Spark's
  parallel listing job for more than 32 folders cost 2-10 s here, the driver milliseconds.
- Quarantine is written (replaced whole, empty when nothing was rejected) as soon as rows are
  classified, so people can see the rejects even when the step then fails on the reject
  share. Silver is written last, through the lake's write-audit-publish: staged, checked by
  the `silver_orders` Great Expectations suite while still invisible to readers, and only
  then swapped in; on any failure the day's silver partition is left exactly as it was.
- The session's time zone is set to UTC: timestamps without an offset are UTC by contract,
  and "falls on D" is the UTC date. The raw and classified rows are cached for the four jobs
  (id range, counts, quarantine, silver) and freed at the end, since a Connect server lives on.
- `ingest --ds A --through B` (a load of history) runs those jobs once for up to a month of
  days (`ingest_days`, DAYS_PER_PASS): every day is classified as if the days before it were
  already published (an id is kept on the first day it comes valid with one content), staged
  in one write per dataset, then audited and published one day at a time, in order, the
  audits sharing the earlier days' statistics and leaving the Data Docs index to the last.
  A day then costs its audit instead of five Spark jobs: the demo's 91 days of history took
  220 s one day at a time and 65-69 s in passes on 2 cores (`make bench-history`: 1.76 s
  against 0.55 s a day). A single day is the same code with a pass of one day.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING

from churnflow.errors import DataError, LandingError
from churnflow.lake import (
    PARTITION_KEY,
    QUARANTINE_ORDERS,
    RAW_ORDERS,
    SILVER_ORDERS,
    Lake,
    file_uri,
    partition_name,
    partition_names,
    partition_relative,
)
from churnflow.landing import (
    REQUIRED_ORDER_COLUMNS,
    FileSummary,
    LandingSummary,
    check_landing,
)
from churnflow.settings import DEFAULT_MAX_REJECT_SHARE
from churnflow.spark import SESSION_SETTINGS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Row, SparkSession

    from churnflow.validate import StatsCache

MAX_REJECT_SHARE_ENV = "CHURNFLOW_MAX_REJECT_SHARE"
# The silver contract: column -> Spark type, in this order.
SILVER_COLUMNS = {
    "order_id": "string",
    "customer_id": "string",
    "order_ts": "timestamp",
    "amount": "decimal(12,2)",
    "items": "int",
}
# The quarantine: the raw contract columns as they came, where from, and the rule broken.
QUARANTINE_COLUMNS = (*REQUIRED_ORDER_COLUMNS, "source_file", "rule", "column")
EXAMPLES_PER_RULE = 3
# Days `ingest_days` reads, classifies and stages in one Spark pass. Bounded so that a load of
# years of history keeps a month of raw rows cached at a time, not all of it.
DAYS_PER_PASS = 31
# Set on the session by every ingest; see the module docstring.
SESSION_CONF = {
    key: SESSION_SETTINGS[key]
    for key in (
        "spark.sql.session.timeZone",
        "spark.sql.sources.parallelPartitionDiscovery.threshold",
    )
}

# Internal statuses of a row besides the rules it can break.
_KEPT = "kept"
_COLLAPSED = "collapsed"

# Arrow type families each contract column may have in a Parquet file (cast to string first).
_PARQUET_TYPES = {
    "order_id": ("string", "integer"),
    "customer_id": ("string", "integer"),
    "order_ts": ("string", "timestamp"),
    "amount": ("string", "decimal", "floating", "integer"),
    "items": ("string", "integer", "floating"),
}


class IngestError(DataError):
    """A day's raw orders cannot become silver: a file, a column or too many rows break the
    landing contract."""


def unloaded_days(lake: Lake, before: date, silver: Collection[date] | None = None) -> list[date]:
    """Days before `before` whose raw orders landed but were never ingested, counted from the
    first silver day: a hole in the history that anything built on the days after it would not
    see (typically a scheduled day run ahead of the backfill that loads the days before it).
    Raw days before the first silver day are history the lake chose not to load, not a hole."""
    loaded = lake.partitions(SILVER_ORDERS) if silver is None else silver
    if not loaded:
        return []
    start = min(loaded)
    return [d for d in lake.partitions(RAW_ORDERS) if start < d < before and d not in loaded]


def unloaded_days_problem(lake: Lake, days: Sequence[date], through: date) -> str:
    """What is wrong and the commands that mend it (the range up to `through`, the day asked
    for: its own duplicate check ran against the incomplete history), for an error message."""
    return (
        f"raw orders of {partition_names(days)} landed at {lake.dataset_uri(RAW_ORDERS)} but "
        f"have no silver partition at {lake.dataset_uri(SILVER_ORDERS)}, so what is built on "
        f"later days would miss their orders. Ingest them first: `churnflow ingest --ds "
        f"{days[0]} --through {through}`, or in Airflow `airflow backfill create --dag-id "
        f"churn_features --from-date {days[0]} --to-date {through} --reprocess-behavior "
        "completed`. A day whose own ingest fails there needs its delivery fixed first "
        "(README, 'Backfills, reruns and resuming')"
    )


@dataclass(frozen=True)
class Rule:
    """One landing-contract rule a row can break, and the column it is about."""

    name: str
    column: str


ORDER_ID_PRESENT = Rule("order_id not null", "order_id")
CUSTOMER_ID_PRESENT = Rule("customer_id not null", "customer_id")
ORDER_TS_PARSES = Rule("order_ts is an ISO-8601 timestamp", "order_ts")
ORDER_TS_ON_DAY = Rule("order_ts falls on ds", "order_ts")
AMOUNT_PARSES = Rule("amount is a decimal", "amount")
AMOUNT_NOT_NEGATIVE = Rule("amount >= 0", "amount")
ITEMS_PARSES = Rule("items is an integer", "items")
ITEMS_POSITIVE = Rule("items >= 1", "items")
ORDER_ID_UNIQUE = Rule("order_id unique across days", "order_id")
ROW_RULES = (
    ORDER_ID_PRESENT,
    CUSTOMER_ID_PRESENT,
    ORDER_TS_PARSES,
    ORDER_TS_ON_DAY,
    AMOUNT_PARSES,
    AMOUNT_NOT_NEGATIVE,
    ITEMS_PARSES,
    ITEMS_POSITIVE,
)
RULES = (*ROW_RULES, ORDER_ID_UNIQUE)


@dataclass(frozen=True)
class Rejects:
    """Rows that broke one rule: how many, a few examples and the files they came from."""

    rule: Rule
    rows: int
    examples: tuple[str, ...]
    files: tuple[str, ...]

    def describe(self) -> str:
        examples = ", ".join(self.examples)
        more = ", ..." if self.rows > len(self.examples) else ""
        return (
            f"column {self.rule.column}, rule '{self.rule.name}': {self.rows} row(s) "
            f"in {', '.join(self.files)}, e.g. {examples}{more}"
        )


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest did; `line()` is what the CLI prints."""

    ds: date
    files: int
    rows_read: int
    rows_written: int
    duplicates_collapsed: int
    rejects: tuple[Rejects, ...] = field(default_factory=tuple)
    validation: str = ""  # the silver_orders suite's line for the published day

    @property
    def rows_rejected(self) -> int:
        return sum(r.rows for r in self.rejects)

    @property
    def reject_share(self) -> float:
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0

    def rejected_by_rule(self) -> dict[str, int]:
        return {r.rule.name: r.rows for r in self.rejects}

    def line(self) -> str:
        by_rule = "; ".join(f"{name}: {rows}" for name, rows in self.rejected_by_rule().items())
        return (
            f"ingest ds={self.ds}: read {self.rows_read} raw order(s) from {self.files} "
            f"file(s), wrote {self.rows_written} to {SILVER_ORDERS}, collapsed "
            f"{self.duplicates_collapsed} identical duplicate(s), rejected {self.rows_rejected} "
            f"({self.reject_share:.2%}) to {QUARANTINE_ORDERS}"
            + (f" ({by_rule})" if by_rule else "")
        )


def _cached(stack: ExitStack, frame: DataFrame) -> DataFrame:
    """Cache a frame the next jobs share; freed when the step ends (a Connect server lives on)."""
    frame = frame.cache()
    stack.callback(frame.unpersist)
    return frame


def _check_parquet_types(lake: Lake, summary: FileSummary) -> None:
    """A contract column of a type that no cast can read right fails the file, not its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(summary.file.location, filesystem=lake.filesystem)
    families = {
        "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        "integer": pa.types.is_integer,
        "floating": pa.types.is_floating,
        "decimal": pa.types.is_decimal,
        "timestamp": lambda t: pa.types.is_timestamp(t) and t.unit != "ns",
    }
    for column, allowed in _PARQUET_TYPES.items():
        kind = schema.field(column).type
        if not any(families[family](kind) for family in allowed):
            raise IngestError(
                f"{summary.relative}: column {column} has type {kind}; the landing contract "
                f"for {RAW_ORDERS} reads it from {' or '.join(allowed)} values "
                "(timestamps in at most microseconds)"
            )


def _read_file(spark: SparkSession, lake: Lake, summary: FileSummary, ds: date) -> DataFrame:
    """One raw file as the contract columns in strings, plus its lake-relative path and day."""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql.types import StringType, StructField, StructType

    duplicated = sorted({c for c in REQUIRED_ORDER_COLUMNS if summary.columns.count(c) > 1})
    if duplicated:
        raise IngestError(
            f"{summary.relative}: column(s) {', '.join(duplicated)} appear more than once "
            f"in the header; columns found: {', '.join(summary.columns)}"
        )
    if summary.file.suffix == ".parquet":
        _check_parquet_types(lake, summary)
        frame = spark.read.parquet(summary.file.uri)
    else:
        # The file's own header, all strings; extra or repeated other names get a placeholder.
        schema = StructType(
            [
                StructField(
                    name if summary.columns.index(name) == i else f"_extra_{i}", StringType()
                )
                for i, name in enumerate(summary.columns)
            ]
        )
        frame = spark.read.csv(
            summary.file.uri,
            schema=schema,
            header=True,
            escape='"',
            multiLine=True,
            mode="PERMISSIVE",
        )
    return frame.select(
        *(F.col(f"`{c}`").cast("string").alias(c) for c in REQUIRED_ORDER_COLUMNS),
        F.lit(summary.relative).alias("source_file"),
        F.lit(ds).alias(PARTITION_KEY),
    )


def _union(frames: Sequence[DataFrame]) -> DataFrame:
    """All frames as one, unioned as a balanced tree: a pass reads a file per day or more, and
    a left-deep chain of a hundred unions makes a plan Spark Connect refuses as too deep."""
    if len(frames) == 1:
        return frames[0]
    middle = len(frames) // 2
    return _union(frames[:middle]).unionByName(_union(frames[middle:]))


def _earlier_ids(spark: SparkSession, lake: Lake, first: date, raw: DataFrame) -> DataFrame | None:
    """Order ids silver holds on days before `first` in the range of the pass's ids, or None."""
    from pyspark.sql import functions as F  # noqa: N812

    if not any(day < first for day in lake.partitions(SILVER_ORDERS)):
        return None
    low, high = raw.agg(F.min("order_id"), F.max("order_id")).first() or (None, None)
    if low is None:
        return None
    return (
        spark.read.schema("order_id string")
        .parquet(lake.dataset_uri(SILVER_ORDERS))
        .where((F.col(PARTITION_KEY) < F.lit(first)) & F.col("order_id").between(low, high))
        .select("order_id")
    )


def _row_rule() -> tuple[Column, Column]:
    """The name and column of the first rule a typed row breaks (null when it keeps them all)."""
    from pyspark.sql import functions as F  # noqa: N812

    def blank(name: str) -> Column:
        return F.col(name).isNull() | (F.trim(F.col(name)) == "")

    checks = {
        ORDER_ID_PRESENT: blank("order_id"),
        CUSTOMER_ID_PRESENT: blank("customer_id"),
        ORDER_TS_PARSES: F.col("_ts").isNull(),
        ORDER_TS_ON_DAY: F.to_date("_ts") != F.col(PARTITION_KEY),
        AMOUNT_PARSES: F.col("_amount").isNull(),
        AMOUNT_NOT_NEGATIVE: F.col("_amount") < 0,
        ITEMS_PARSES: F.col("_items").isNull()
        | (F.col("_items") != F.floor("_items"))
        | (F.col("_items") > 2**31 - 1),
        ITEMS_POSITIVE: F.col("_items") < 1,
    }
    first, *others = ROW_RULES
    name = F.when(checks[first], F.lit(first.name))
    column = F.when(checks[first], F.lit(first.column))
    for rule in others:
        name = name.when(checks[rule], F.lit(rule.name))
        column = column.when(checks[rule], F.lit(rule.column))
    return name, column


def _classify(raw: DataFrame, earlier_ids: DataFrame | None, *, days: int) -> DataFrame:
    """Every raw row of the pass with its typed values, `status` (kept, collapsed or a rule)
    and column, each day judged as if the days before it in the pass were already published.

    An id is kept on the first day of the pass it comes valid and with one content (unless
    silver held it before the pass), so on every later day it counts as seen before.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812

    day = F.col(PARTITION_KEY)
    typed = raw.select(
        "*",
        F.col("order_ts").try_cast("timestamp").alias("_ts"),
        F.col("amount").try_cast("decimal(12,2)").alias("_amount"),
        F.col("items").try_cast("decimal(20,4)").alias("_items"),
    )
    rule, column = _row_rule()
    valid = F.col("_rule").isNull()
    content = ["customer_id", "_ts", "_amount", "_items"]
    versions = F.size(
        F.collect_set(F.when(valid, F.struct(*content))).over(
            Window.partitionBy(PARTITION_KEY, "order_id")
        )
    )
    typed = typed.select("*", rule.alias("_rule"), column.alias("_column")).select(
        "*", versions.alias("_versions")
    )
    seen_before = F.lit(False)
    if days > 1:  # one more window over the pass; a single day has no earlier day in it
        kept_from = F.min(F.when(valid & (F.col("_versions") == 1), day)).over(
            Window.partitionBy("order_id")
        )
        seen_before = F.coalesce(kept_from < day, F.lit(False))
    if earlier_ids is not None:
        ids = typed.where(F.col("order_id").isNotNull()).select("order_id").distinct()
        in_silver = (
            earlier_ids.join(F.broadcast(ids), "order_id", "left_semi")
            .distinct()
            .withColumn("_in_silver", F.lit(True))
        )
        typed = typed.join(F.broadcast(in_silver), "order_id", "left").fillna(
            False, subset=["_in_silver"]
        )
        seen_before = seen_before | F.col("_in_silver")

    copy = F.row_number().over(
        Window.partitionBy(PARTITION_KEY, "order_id", *content).orderBy("source_file")
    )
    not_unique = valid & ((F.col("_versions") > 1) | seen_before)
    status = (
        F.when(~valid, F.col("_rule"))
        .when(not_unique, F.lit(ORDER_ID_UNIQUE.name))
        .when(copy > 1, F.lit(_COLLAPSED))
        .otherwise(F.lit(_KEPT))
    )
    column = F.when(~valid, F.col("_column")).when(not_unique, F.lit(ORDER_ID_UNIQUE.column))
    return typed.select("*", status.alias("status"), column.alias("column"))


def _offending_value() -> Column:
    """The order id, and the value of the column its rule is about, for error messages."""
    from pyspark.sql import functions as F  # noqa: N812

    def quoted(column: Column) -> Column:
        return F.coalesce(F.concat(F.lit("'"), column, F.lit("'")), F.lit("null"))

    value = F.lit(None).cast("string")
    for name in ("customer_id", "order_ts", "amount", "items"):
        value = F.when(F.col("column") == name, F.col(name)).otherwise(value)
    detail = F.concat(F.lit(" ("), F.col("column"), F.lit(" "), quoted(value), F.lit(")"))
    return F.concat(
        quoted(F.col("order_id")),
        F.when(F.col("column") != ORDER_ID_UNIQUE.column, detail).otherwise(F.lit("")),
    )


def _count(classified: DataFrame) -> dict[date, tuple[dict[str, int], tuple[Rejects, ...]]]:
    """Per day, rows per status and per broken rule a few examples and the files (one job)."""
    from pyspark.sql import functions as F  # noqa: N812

    rejected = F.col("column").isNotNull()
    rows = (
        classified.groupBy(PARTITION_KEY, "status")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.slice(F.array_sort(F.collect_set(F.when(rejected, _offending_value()))), 1, 3).alias(
                "examples"
            ),
            F.array_sort(F.collect_set(F.when(rejected, F.col("source_file")))).alias("files"),
        )
        .collect()
    )
    by_day: dict[date, dict[str, Row]] = {}
    for row in rows:
        by_day.setdefault(row[PARTITION_KEY], {})[row["status"]] = row
    counted = {}
    for day, by_status in by_day.items():
        counts = {status: row["rows"] for status, row in by_status.items()}
        rejects = tuple(
            Rejects(
                rule,
                by_status[rule.name]["rows"],
                tuple(by_status[rule.name]["examples"][:EXAMPLES_PER_RULE]),
                tuple(by_status[rule.name]["files"]),
            )
            for rule in RULES
            if rule.name in by_status
        )
        counted[day] = (counts, rejects)
    return counted


def _stage(rows: DataFrame, folder: Path, order: Sequence[str]) -> None:
    """Every day's rows in one write: `folder/ds=D/`, one file per day, sorted by `order`.

    One task writes the days one after the other (sorted by day, its writer keeps one file
    open at a time): a day is a few thousand rows, and a shuffle to spread the days over
    tasks cost a single-day ingest 0.2 s more on 2 cores.
    """
    rows.coalesce(1).sortWithinPartitions(PARTITION_KEY, *order).write.partitionBy(
        PARTITION_KEY
    ).mode("overwrite").parquet(file_uri(folder))


def _quarantine_rows(classified: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F  # noqa: N812

    columns = {"rule": F.col("status").alias("rule")}
    return classified.where(F.col("column").isNotNull()).select(
        *(columns.get(name, F.col(name)) for name in QUARANTINE_COLUMNS), PARTITION_KEY
    )


def _silver_rows(classified: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F  # noqa: N812

    typed = {"order_ts": "_ts", "amount": "_amount", "items": "_items"}
    return classified.where(F.col("status") == _KEPT).select(
        *(
            F.col(typed.get(name, name)).cast(kind).alias(name)
            for name, kind in SILVER_COLUMNS.items()
        ),
        PARTITION_KEY,
    )


def _place(staged: Path, ds: date, target: Path, empty: Callable[[Path], None]) -> None:
    """Move the day's staged files into a partition being published; a day without rows (no
    folder in the staged write) gets an empty file with the dataset's columns."""
    day = staged / partition_name(ds)
    if not day.is_dir():
        empty(target)
        return
    for item in day.iterdir():
        item.rename(target / item.name)


def _empty_quarantine(target: Path) -> None:
    """Quarantine columns are all strings: an empty day is written without a Spark job."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(name, pa.string()) for name in QUARANTINE_COLUMNS])
    pq.write_table(schema.empty_table(), target / "part-00000.parquet")


def _empty_silver(spark: SparkSession) -> Callable[[Path], None]:
    def write(target: Path) -> None:
        schema = ", ".join(f"{name} {kind}" for name, kind in SILVER_COLUMNS.items())
        spark.createDataFrame([], schema).coalesce(1).write.mode("overwrite").parquet(
            file_uri(target)
        )

    return write


def ingest_days(
    lake: Lake | Path,
    first: date,
    last: date,
    spark: SparkSession | None = None,
    *,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
    accept: str | None = None,
) -> Iterator[IngestSummary]:
    """Ingest `first` .. `last` in order, yielding each day's summary once it is published.

    Each day is checked and published as its own run would do it: the first day that breaks
    the contract raises IngestError (its silver untouched), the days before it stay published.
    The Spark work is shared: up to DAYS_PER_PASS days are read, classified and staged in one
    pass (a load of history costs a job per pass, not per day), then audited by the
    `silver_orders` suite and published one day at a time.

    Without `spark`, the session comes from `get_spark()` once the files passed the landing
    check, so a missing or empty delivery fails in a second, before a JVM starts. `accept` is
    an operator's reason to publish a day the statistical checks flag (recorded with it).
    """
    from churnflow.validate import require_site

    lake = Lake.of(lake)
    require_site(lake, "silver_orders")
    if unloaded := unloaded_days(lake, first):  # its earlier-day duplicates would go unseen
        raise IngestError(f"ingest ds={first}: {unloaded_days_problem(lake, unloaded, last)}")
    day = first
    while day <= last:
        days = [day + timedelta(days=n) for n in range(min(DAYS_PER_PASS, (last - day).days + 1))]
        landings: dict[date, LandingSummary] = {}
        for one in days:
            try:
                landings[one] = check_landing(lake, one)
            except LandingError as err:  # the days before it are still ingested, then it fails
                if landings:
                    yield from _pass(lake, landings, spark, max_reject_share, accept)
                raise IngestError(f"ingest ds={one}: {err}") from err
        yield from _pass(lake, landings, spark, max_reject_share, accept)
        day = days[-1] + timedelta(days=1)


def _pass(
    lake: Lake,
    landings: Mapping[date, LandingSummary],
    spark: SparkSession | None,
    max_reject_share: float,
    accept: str | None,
) -> Iterator[IngestSummary]:
    """One pass over days whose files passed the landing check; see `ingest_days`."""
    if spark is None:
        from churnflow.spark import get_spark

        spark = get_spark()
    for key, value in SESSION_CONF.items():
        spark.conf.set(key, value)
    days = list(landings)
    label = f"pass-{days[0]}-{days[-1]}"
    with (
        ExitStack() as cached,
        lake.staging(QUARANTINE_ORDERS, label) as quarantine,
        lake.staging(SILVER_ORDERS, label) as silver,
    ):
        files = [
            _read_file(spark, lake, summary, day)
            for day, landing in landings.items()
            for summary in landing.files
        ]
        raw = _cached(cached, _union(files))
        earlier_ids = _earlier_ids(spark, lake, days[0], raw)
        classified = _cached(cached, _classify(raw, earlier_ids, days=len(days)))
        counted = _count(classified)
        _stage(_quarantine_rows(classified), quarantine.root, ("source_file", "order_id", "rule"))
        _stage(_silver_rows(classified), silver.root, ("order_id",))
        summaries = []
        for day, landing in landings.items():
            counts, rejects = counted.get(day, ({}, ()))
            summaries.append(
                IngestSummary(
                    ds=day,
                    files=len(landing.files),
                    rows_read=sum(counts.values()),
                    rows_written=counts.get(_KEPT, 0),
                    duplicates_collapsed=counts.get(_COLLAPSED, 0),
                    rejects=rejects,
                )
            )
        # The suite's Data Docs index lists every day: built once, by the pass's last audit (the
        # days up to the first one the reject share stops; a day that fails its audit builds it).
        audited = list(
            takewhile(lambda s: s.rows_read and s.reject_share <= max_reject_share, summaries)
        )
        known_stats: StatsCache = {}  # the suite's history statistics, shared by the pass's days
        for summary in summaries:
            yield _publish(
                lake,
                summary,
                quarantine=quarantine.root,
                silver=silver.root,
                spark=spark,
                max_reject_share=max_reject_share,
                accept=accept,
                known_stats=known_stats,
                index=bool(audited) and summary is audited[-1],
            )


def _publish(
    lake: Lake,
    summary: IngestSummary,
    *,
    quarantine: Path,
    silver: Path,
    spark: SparkSession,
    max_reject_share: float,
    accept: str | None,
    known_stats: StatsCache,
    index: bool,
) -> IngestSummary:
    """Publish one day of a pass: its quarantine (even when the day then fails), and its
    silver once the reject share and the `silver_orders` suite let it through."""
    from churnflow.validate import validate

    ds = summary.ds
    raw_partition = partition_relative(RAW_ORDERS, ds)
    if summary.rows_read == 0:
        raise IngestError(
            f"ingest ds={ds}: {raw_partition} has no rows in {summary.files} file(s); "
            f"{SILVER_ORDERS} ds={ds} left as it was"
        )
    # Rejects are evidence, not a product: published whole (empty when none) without an audit.
    with lake.publishing(QUARANTINE_ORDERS, ds) as staging:
        _place(quarantine, ds, staging, _empty_quarantine)
    if summary.reject_share > max_reject_share:
        raise IngestError(
            f"ingest ds={ds}: {summary.rows_rejected} of {summary.rows_read} row(s) of "
            f"{raw_partition} ({summary.reject_share:.2%}) break the landing contract, above "
            f"the limit of {max_reject_share:.2%} ({MAX_REJECT_SHARE_ENV}); {SILVER_ORDERS} "
            f"ds={ds} left as it was, rejected rows in "
            f"{partition_relative(QUARANTINE_ORDERS, ds)}. "
            "By rule: " + "; ".join(r.describe() for r in summary.rejects)
        )
    checked: list[str] = []

    def audit(staged: Path) -> None:
        result = validate(
            lake,
            ds,
            "silver_orders",
            staged=staged,
            accept=accept,
            known_stats=known_stats,
            index=index,
        )
        checked.append(result.line())

    with lake.publishing(SILVER_ORDERS, ds, audit=audit) as staging:
        _place(silver, ds, staging, _empty_silver(spark))
    return replace(summary, validation=checked[0])


def ingest_orders(
    lake: Lake | Path,
    ds: date,
    spark: SparkSession | None = None,
    *,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
    accept: str | None = None,
) -> IngestSummary:
    """Ingest one day; raises IngestError (silver untouched) when the day breaks the contract."""
    [summary] = ingest_days(lake, ds, ds, spark, max_reject_share=max_reject_share, accept=accept)
    return summary


def run_ingest(first: date, last: date | None = None) -> Iterator[str]:
    """The CLI's `ingest`: each day's summary lines, with this process's settings."""
    from churnflow.settings import get_settings

    settings = get_settings()
    for summary in ingest_days(
        Lake(settings.lake),
        first,
        last or first,
        max_reject_share=settings.max_reject_share,
        accept=settings.accept_reason,
    ):
        yield f"{summary.line()}\n{summary.validation}"
