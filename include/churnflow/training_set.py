"""`churnflow training-set --as-of D`: the point-in-time training set of the churn model.

Examples are the rows of published `features/customer_features` snapshots (one row per
customer active on the snapshot's day, DESIGN.md "Label"). The window is anchored on the
newest snapshot whose label has matured by D, `D - horizon`, and steps back
`every_days` at a time for `snapshots` snapshots; snapshots older than the first published
feature partition are not in the lake yet and shrink the window, a gap inside it is an error.
An example of snapshot `s` is labelled `churned = 1` when its customer has no order in
`(s, s + horizon]`, read from the `silver/orders` partitions `(oldest snapshot, D]` only: a
partition after D is never listed to Spark, so a late or corrected order cannot leak in.
Silver's `ds` is the order's day (the landing contract), so only `customer_id` is read.

The split is by time and whole snapshots: the newest matured snapshot is the holdout of the
promotion gate, the `validation_snapshots` before it validate, the older ones train. A
customer appears once per snapshot, so never in two splits of the same snapshot; the same
customer does appear in several snapshots, as they do in production. Label windows of
neighbouring snapshots overlap (weekly snapshots, 30-day horizon): a training label can see
orders placed after the first validation snapshot.

Write, audit, publish: Spark writes one Parquet file, sorted by (snapshot, customer), into
`examples/` of the staged partition `training/churn/as_of=D/`; the audit reads it back with
Spark and checks the row rules (keys present and unique, labels 0/1, every split with enough
rows and both classes), then writes `manifest.json` beside `examples/` (snapshots per split,
rows, positive rates, digests, lake URIs, horizon), and both are published in one swap.
The manifest is not inside `examples/`: Spark and pyarrow read every non-hidden file of a
Parquet folder.

A rerun of the same as-of on the same inputs writes the same rows in the same order and keeps
the manifest's `data.digest`, a digest of the rows (schema, and per snapshot the row count and
the sum of Spark's `xxhash64` of every row, computed by the audit's one aggregation). The
files' bytes are the same too when the same JVM writes them (the Spark Connect server), but
not across JVMs: parquet-mr lists a column chunk's encodings in hash-set order, which changes
with the JVM. So `files` carries each file's sha256 for integrity, and `digest` identifies
the data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow.errors import ConfigError, DataError
from churnflow.lake import (
    CUSTOMER_FEATURES,
    SILVER_ORDERS,
    Lake,
    file_uri,
    partition_name,
    partition_names,
    partition_relative,
)

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from pyspark.sql import DataFrame, SparkSession

    from churnflow.settings import Settings

TRAINING_CHURN = "training/churn"
AS_OF_KEY = "as_of"
EXAMPLES = "examples"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
TRAIN, VALIDATION, HOLDOUT = "train", "validation", "holdout"
SPLITS = (TRAIN, VALIDATION, HOLDOUT)
SPLIT = "split"
SNAPSHOT = "snapshot_ds"
CUSTOMER = "customer_id"
LABEL = "churned"
KEYS = (SNAPSHOT, CUSTOMER)


class TrainingSetError(DataError):
    """The training set of an as-of date cannot be built from the lake; nothing is published."""


class TooFewSnapshotsError(TrainingSetError):
    """Fewer matured feature snapshots than one per split needs."""


class MissingSnapshotError(TrainingSetError):
    """A feature snapshot inside the window is not published, or holds no rows."""


class MissingOrdersError(TrainingSetError):
    """Silver orders do not cover the label windows up to the as-of date."""


class SingleClassError(TrainingSetError):
    """A split holds only churned or only retained customers."""


class TrainingSetAuditError(TrainingSetError):
    """The staged rows break a row rule (keys, labels, duplicates, too few rows)."""


@dataclass(frozen=True)
class TrainingSetConfig:
    """How the window, the label and the split are drawn (Settings' `training_*` fields)."""

    horizon_days: int = 30
    snapshots: int = 12
    every_days: int = 7
    validation_snapshots: int = 2
    min_rows: int = 200

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)} (at least {low})"
            for name, low in (
                ("horizon_days", 1),
                ("every_days", 1),
                ("validation_snapshots", 1),
                ("min_rows", 1),
                ("snapshots", self.validation_snapshots + 2),
            )
            if getattr(self, name) < low
        ]
        if problems:
            raise ConfigError(
                "training set: " + ", ".join(problems) + "; the window needs one training "
                "snapshot, the validation snapshots and the holdout snapshot"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingSetConfig:
        return cls(
            horizon_days=settings.label_horizon_days,
            snapshots=settings.training_snapshots,
            every_days=settings.training_snapshot_every_days,
            validation_snapshots=settings.training_validation_snapshots,
            min_rows=settings.training_min_rows,
        )

    @property
    def min_snapshots(self) -> int:
        """One training snapshot, the validation snapshots, the holdout snapshot."""
        return self.validation_snapshots + 2


@dataclass(frozen=True)
class TrainingSetPlan:
    """Which partitions the training set of `as_of` reads, and the split of each snapshot."""

    as_of: date
    config: TrainingSetConfig
    splits: dict[str, tuple[date, ...]]
    orders: tuple[date, ...]  # silver partitions read: every day of (oldest snapshot, as_of]

    @property
    def snapshots(self) -> tuple[date, ...]:
        return tuple(sorted(day for days in self.splits.values() for day in days))

    def split_of(self, snapshot: date) -> str:
        return next(name for name, days in self.splits.items() if snapshot in days)


@dataclass(frozen=True)
class TrainingSetSummary:
    """What was published: the partition's URI and its manifest."""

    as_of: date
    uri: str
    manifest: dict[str, Any] = field(repr=False)

    def line(self) -> str:
        splits = self.manifest["splits"]
        parts = [
            f"{name} {_span(splits[name]['snapshots'])}: {splits[name]['rows']} rows, "
            f"{splits[name]['positive_rate']:.1%} churned"
            for name in SPLITS
        ]
        return (
            f"{TRAINING_CHURN} {partition_name(self.as_of, AS_OF_KEY)}: "
            f"{self.manifest['rows']} examples ({'; '.join(parts)}), "
            f"horizon {self.manifest['label']['horizon_days']} days, "
            f"digest {self.manifest['data']['digest']} at {self.uri}"
        )


def _span(days: list[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)})"


def plan_training_set(lake: Lake, as_of: date, config: TrainingSetConfig) -> TrainingSetPlan:
    """The snapshots and silver partitions of `as_of`, from the lake's listing (no Spark).

    Fails when the window has a gap, when fewer snapshots than `min_snapshots` have matured,
    or when silver misses a day of the label windows: a missing day would label every
    customer who ordered only that day as churned.
    """
    head = f"training set as-of {as_of}"
    left = f"{TRAINING_CHURN} {partition_name(as_of, AS_OF_KEY)} left as it was"
    newest = as_of - timedelta(days=config.horizon_days)
    window = [newest - timedelta(days=config.every_days * k) for k in range(config.snapshots)]
    published = set(lake.partitions(CUSTOMER_FEATURES))
    first = min(published, default=None)
    matured = [] if first is None else sorted(day for day in window if day >= first)
    missing = [day for day in matured if day not in published]
    if missing:
        raise MissingSnapshotError(
            f"{head}: {CUSTOMER_FEATURES} has no published partition "
            f"{partition_names(missing)}, inside the window of {config.snapshots} snapshots "
            f"every {config.every_days} days ending at ds={newest} (as-of minus the "
            f"{config.horizon_days}-day label horizon); published snapshots run from "
            f"ds={first} to ds={max(published)}; build the missing features first; rule: "
            f"every snapshot of the window from the first published one on is present. {left}"
        )
    if len(matured) < config.min_snapshots:
        since = f"published since ds={first}" if first else "published at all"
        raise TooFewSnapshotsError(
            f"{head}: {len(matured)} {CUSTOMER_FEATURES} snapshot(s) of the window "
            f"({partition_names(matured) or 'none'}) have a label matured by {as_of} (snapshot <= "
            f"ds={newest}, horizon {config.horizon_days} days) among those {since}; the "
            f"split needs at least {config.min_snapshots} (one to train, "
            f"{config.validation_snapshots} to validate, one holdout); train at a later as-of "
            f"date or backfill earlier features; rule: enough matured snapshots. {left}"
        )
    held, validating = matured[-1], matured[-1 - config.validation_snapshots : -1]
    splits = {
        TRAIN: tuple(matured[: -1 - config.validation_snapshots]),
        VALIDATION: tuple(validating),
        HOLDOUT: (held,),
    }
    needed = [matured[0] + timedelta(days=k) for k in range(1, (as_of - matured[0]).days + 1)]
    silver = set(lake.partitions(SILVER_ORDERS))
    gaps = [day for day in needed if day not in silver]
    if gaps:
        what = (
            f"no published partition {partition_names(gaps)}"
            if any(day <= as_of for day in silver)
            else f"no partition up to ds={as_of}"
        )
        raise MissingOrdersError(
            f"{head}: {SILVER_ORDERS} has {what} ({len(gaps)} of the {len(needed)} days "
            f"ds={needed[0]}..ds={as_of} that label snapshots {_span([str(d) for d in matured])}"
            f"); a missing day would label its customers churned; ingest those days first; "
            f"rule: silver covers the label windows. {left}"
        )
    return TrainingSetPlan(as_of=as_of, config=config, splits=splits, orders=tuple(needed))


def _examples(spark: SparkSession, lake: Lake, plan: TrainingSetPlan) -> DataFrame:
    """Features of each snapshot, labelled from orders of the plan's silver days."""
    from pyspark.sql import functions as F  # noqa: N812

    features = (
        spark.read.option("basePath", lake.dataset_uri(CUSTOMER_FEATURES))
        .parquet(*(lake.partition_uri(CUSTOMER_FEATURES, day) for day in plan.snapshots))
        .withColumn(SNAPSHOT, F.col("ds").cast("date"))
        .drop("ds")
    )
    order_days = (
        spark.read.schema(f"{CUSTOMER} string, ds date")  # no footer to infer a schema from
        .option("basePath", lake.dataset_uri(SILVER_ORDERS))
        .parquet(*(lake.partition_uri(SILVER_ORDERS, day) for day in plan.orders))
        .select(F.col(CUSTOMER).alias("_customer"), F.col("ds").cast("date").alias("_day"))
        .distinct()
    )
    horizon = plan.config.horizon_days
    retained = (
        features.select(*KEYS)
        .join(
            order_days,
            (F.col(CUSTOMER) == F.col("_customer"))
            & (F.col("_day") > F.col(SNAPSHOT))
            & (F.col("_day") <= F.date_add(F.col(SNAPSHOT), horizon)),
            "left_semi",
        )
        .withColumn("_retained", F.lit(True))
    )
    split = None
    for name, days in plan.splits.items():
        rule = F.col(SNAPSHOT).isin(list(days))
        split = F.when(rule, F.lit(name)) if split is None else split.when(rule, F.lit(name))
    feature_columns = [c for c in features.columns if c not in KEYS]
    return features.join(retained, list(KEYS), "left").select(
        split.alias(SPLIT),  # type: ignore[union-attr]
        *KEYS,
        *feature_columns,
        F.when(F.col("_retained"), 0).otherwise(1).cast("int").alias(LABEL),
    )


def _write(frame: DataFrame, folder: Path) -> None:
    """One Parquet file sorted by key, renamed `part-00000.parquet`: Spark's own names carry
    a random id, and a rerun should list the same files. Checksum and marker files go.

    `repartition(1)` (a shuffle) keeps the joins parallel and only the final write single.
    """
    frame.repartition(1).sortWithinPartitions(*KEYS).write.mode("overwrite").parquet(
        file_uri(folder)
    )
    for index, item in enumerate(Lake.data_files(folder)):
        item.path.rename(folder / f"part-{index:05d}.parquet")
    for entry in folder.iterdir():
        if entry.is_file() and not entry.name.startswith("part-"):
            entry.unlink()


def file_sha256(path: Path | str, filesystem: pafs.FileSystem | None = None) -> str:
    """sha256 of a local file, or of `path` in a lake's pyarrow `filesystem`."""
    import pyarrow.fs as pafs

    hasher = hashlib.sha256()
    with (filesystem or pafs.LocalFileSystem()).open_input_stream(str(path)) as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def rows_digest(counts: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """`sha256:…` of the schema and, per (split, snapshot), the rows and their hash sum."""
    groups = sorted(
        (str(row[SPLIT]), str(row[SNAPSHOT]), row["rows"], str(row["hash_sum"])) for row in counts
    )
    text = json.dumps({"columns": columns, "groups": groups}, sort_keys=True)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def _counts(spark: SparkSession, folder: Path) -> list[dict[str, Any]]:
    """Per (split, snapshot): rows, positives, negatives, null and distinct customers, and
    the sum of every row's xxhash64 (exact, as a decimal) for the rows digest."""
    from pyspark.sql import functions as F  # noqa: N812

    def count(rule: Any) -> Any:
        return F.sum(F.when(rule, 1).otherwise(0))

    frame = spark.read.parquet(file_uri(folder))
    row_hash = F.xxhash64(*(F.col(name) for name in frame.columns)).cast("decimal(38,0)")
    rows = (
        frame.groupBy(SPLIT, SNAPSHOT)
        .agg(
            F.count(F.lit(1)).alias("rows"),
            count(F.col(LABEL) == 1).alias("positives"),
            count(F.col(LABEL) == 0).alias("negatives"),
            count(F.col(CUSTOMER).isNull()).alias("null_customers"),
            F.countDistinct(CUSTOMER).alias("customers"),
            F.sum(row_hash).alias("hash_sum"),
        )
        .collect()
    )
    return [row.asDict() for row in rows]


def audit_counts(counts: list[dict[str, Any]], plan: TrainingSetPlan) -> dict[str, dict[str, Any]]:
    """Check the row rules on the staged counts; the per-split figures of the manifest."""
    head = f"training set as-of {plan.as_of}"
    staged = f"{TRAINING_CHURN} {partition_name(plan.as_of, AS_OF_KEY)} (staged)"
    left = f"{TRAINING_CHURN} {partition_name(plan.as_of, AS_OF_KEY)} left as it was"

    def fail(error: type[TrainingSetError], what: str, rule: str) -> TrainingSetError:
        return error(f"{head}: {what}; rule: {rule}. {left}")

    if any(row[SPLIT] is None or row[SNAPSHOT] is None for row in counts):
        raise fail(TrainingSetAuditError, f"{staged} has rows without a split or snapshot", "keys")
    for row in counts:
        at = f"{CUSTOMER_FEATURES} {partition_name(row[SNAPSHOT])}"
        if row["null_customers"]:
            raise fail(
                TrainingSetAuditError,
                f"{row['null_customers']} example(s) of {at} have no {CUSTOMER}",
                "no null keys",
            )
        if row["positives"] + row["negatives"] != row["rows"]:
            bad = row["rows"] - row["positives"] - row["negatives"]
            raise fail(
                TrainingSetAuditError,
                f"{bad} example(s) of {at} have a {LABEL} label other than 0 or 1",
                "labels are 0 or 1",
            )
        if row["customers"] != row["rows"] - row["null_customers"]:
            twice = row["rows"] - row["customers"]
            raise fail(
                TrainingSetAuditError,
                f"{at} holds {twice} customer row(s) more than customers",
                "one example per customer and snapshot",
            )
        if plan.split_of(row[SNAPSHOT]) != row[SPLIT]:
            raise fail(
                TrainingSetAuditError,
                f"{at} is in split {row[SPLIT]}, planned {plan.split_of(row[SNAPSHOT])}",
                "one split per snapshot",
            )
    found = {row[SNAPSHOT] for row in counts}
    empty = [day for day in plan.snapshots if day not in found]
    if empty:
        raise fail(
            MissingSnapshotError,
            f"{CUSTOMER_FEATURES} {partition_names(empty)} of the window hold(s) no rows",
            "every snapshot of the window has active customers",
        )
    splits: dict[str, dict[str, Any]] = {}
    for name in SPLITS:
        mine = [row for row in counts if row[SPLIT] == name]
        rows = sum(row["rows"] for row in mine)
        positives = sum(row["positives"] for row in mine)
        days = plan.splits[name]
        where = f"the {name} split ({CUSTOMER_FEATURES} {partition_names(list(days))})"
        if rows < plan.config.min_rows:
            raise fail(
                TrainingSetAuditError,
                f"{where} has {rows} example(s), fewer than {plan.config.min_rows} "
                "(CHURNFLOW_TRAINING_MIN_ROWS)",
                "enough rows in every split",
            )
        if positives in (0, rows):
            only = "churned (1)" if positives else "retained (0)"
            raise fail(
                SingleClassError,
                f"all {rows} example(s) of {where} are {only}, labelled from {SILVER_ORDERS} "
                f"ds={plan.orders[0]}..ds={plan.orders[-1]}",
                "both classes in every split, to fit and to evaluate a model",
            )
        splits[name] = {
            "snapshots": [str(day) for day in days],
            "rows": rows,
            "positives": positives,
            "positive_rate": round(positives / rows, 6),
        }
    return splits


def manifest(
    plan: TrainingSetPlan,
    lake: Lake,
    *,
    splits: dict[str, dict[str, Any]],
    columns: list[tuple[str, str]],
    folder: Path,
    digest: str,
) -> dict[str, Any]:
    """What the model steps need to know of the data without reading it (and its digest)."""
    rows = sum(split["rows"] for split in splits.values())
    positives = sum(split["positives"] for split in splits.values())
    horizon = plan.config.horizon_days
    files = Lake.data_files(folder / EXAMPLES)
    return {
        "version": MANIFEST_VERSION,
        "dataset": TRAINING_CHURN,
        "as_of": str(plan.as_of),
        "partition": partition_relative(TRAINING_CHURN, plan.as_of, AS_OF_KEY),
        "uri": lake.partition_uri(TRAINING_CHURN, plan.as_of, AS_OF_KEY),
        "data": {
            "path": EXAMPLES,
            "format": "parquet",
            "files": [
                {"name": item.name, "bytes": item.size, "sha256": file_sha256(item.path)}
                for item in files
            ],
            "rows": rows,
            "digest": digest,
            "sorted_by": list(KEYS),
        },
        "columns": [{"name": name, "type": kind} for name, kind in columns],
        "keys": list(KEYS),
        "features": [name for name, _ in columns if name not in (SPLIT, *KEYS, LABEL)],
        "label": {
            "column": LABEL,
            "horizon_days": horizon,
            "rule": f"1 when the customer places no order in (snapshot, snapshot + {horizon} "
            "days], else 0",
        },
        "window": {
            "snapshots": plan.config.snapshots,
            "every_days": plan.config.every_days,
            "validation_snapshots": plan.config.validation_snapshots,
            "newest_matured": str(plan.as_of - timedelta(days=horizon)),
        },
        "sources": {
            CUSTOMER_FEATURES: {
                "uri": lake.dataset_uri(CUSTOMER_FEATURES),
                "partitions": [str(day) for day in plan.snapshots],
            },
            SILVER_ORDERS: {
                "uri": lake.dataset_uri(SILVER_ORDERS),
                "first": str(plan.orders[0]),
                "last": str(plan.orders[-1]),
                "partitions": len(plan.orders),
            },
        },
        "splits": splits,
        "rows": rows,
        "positives": positives,
        "positive_rate": round(positives / rows, 6),
    }


def build_training_set(
    lake: Lake | Path,
    as_of: date,
    spark: SparkSession | None = None,
    *,
    config: TrainingSetConfig | None = None,
) -> TrainingSetSummary:
    """Build, audit and publish `training/churn/as_of=D`; raises TrainingSetError (nothing
    published) when the lake cannot give a sound training set.

    The plan is checked from the lake's listing before a Spark session is asked for, so a
    missing snapshot or silver day fails in a second.
    """
    lake = Lake.of(lake)
    config = config or TrainingSetConfig()
    plan = plan_training_set(lake, as_of, config)
    if spark is None:
        from churnflow.spark import get_spark

        spark = get_spark()
    examples = _examples(spark, lake, plan)
    columns = [(item.name, item.dataType.simpleString()) for item in examples.schema.fields]
    described: dict[str, Any] = {}

    def check(folder: Path) -> None:
        counts = _counts(spark, folder / EXAMPLES)
        splits = audit_counts(counts, plan)
        digest = rows_digest(counts, columns)
        described.update(
            manifest(plan, lake, splits=splits, columns=columns, folder=folder, digest=digest)
        )
        text = json.dumps(described, indent=2, sort_keys=True) + "\n"
        (folder / MANIFEST).write_text(text)

    with lake.publishing(TRAINING_CHURN, as_of, key=AS_OF_KEY, audit=check) as folder:
        _write(examples, folder / EXAMPLES)
    uri = lake.partition_uri(TRAINING_CHURN, as_of, AS_OF_KEY)
    return TrainingSetSummary(as_of=as_of, uri=uri, manifest=described)


def read_manifest(lake: Lake | Path, as_of: date) -> dict[str, Any] | None:
    """The published manifest of `as_of`; None when that training set was never published."""
    lake = Lake.of(lake)
    relative = f"{partition_relative(TRAINING_CHURN, as_of, AS_OF_KEY)}/{MANIFEST}"
    data = lake.read_bytes(relative)
    return None if data is None else json.loads(data)


def run_training_set(as_of: date) -> str:
    """The CLI's `training-set`: one as-of date with this process's settings; the summary."""
    from churnflow.settings import get_settings

    settings = get_settings()
    summary = build_training_set(
        Lake(settings.lake), as_of, config=TrainingSetConfig.from_settings(settings)
    )
    return summary.line()
