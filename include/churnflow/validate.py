"""Great Expectations gate for one day of a dataset: `churnflow validate --ds D --suite NAME`.

The suites are JSON files in `include/gx/expectations/` (the image copies them to
`CHURNFLOW_GX_DIR`): GX expectation configurations plus the few things GX cannot know, namely
which dataset a suite reads and how the `$PARAMETER` bounds that depend on earlier days are
computed. Each run checks two batches of the same partition, read once through
`churnflow.spark.get_spark()`:

- `schema` expectations run on the Spark DataFrame itself. They only read its schema, so they
  see the exact Spark types and cost no Spark job, on a classic session and on Spark Connect.
- `expectations` run on the day's rows as a pandas frame (`toArrow`, decimals as float64). A
  day is at most a few hundred thousand rows, and GX on Spark runs a job per metric: about
  60 jobs, 7-15 s on a 2-core machine, against about a second in pandas (the same under
  Spark Connect, where each job is also a round trip). Decimals become floats because GX's
  pandas metrics convert `Decimal` objects one at a time (a minute for 17k rows).

Bounds that depend on history (row count, mean and median of key columns) are the median of
a statistic over the latest earlier partitions times a factor from the suite; with no
earlier partition the suite's `without_history` value applies. The context is ephemeral
(nothing is written under the read-only suite folder); Data Docs and the validation results
they are built from go to `<lake>/reports/gx/<suite>/`. Runs are keyed by `ds`, so a rerun
replaces that day's page and gives the same verdict.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow.errors import ConfigError, DataError
from churnflow.lake import REPORTS as REPORTS_AREA
from churnflow.lake import Lake

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext
    from pyspark.sql import Column, DataFrame, SparkSession

SUITES = ("silver_orders", "customer_features")
REPORTS = f"{REPORTS_AREA}/gx"
_STAT = re.compile(r"^(?:row_count|(?:mean|median)\(\w+\))$")
_SHOWN_VALUES = 5


class ValidationError(DataError):
    """A partition is missing or breaks its suite; `summary` holds the results when it ran."""

    def __init__(self, message: str, summary: ValidationSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class Bound:
    """One history-dependent `$PARAMETER`: `times` x the median of `stat` over earlier days."""

    name: str
    stat: str
    times: float
    without_history: float | None

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> Bound:
        stat = str(spec["stat"])
        if not _STAT.match(stat):
            raise ConfigError(
                f"GX suite parameter {name}: stat {stat!r} is not row_count, mean(c), median(c)"
            )
        return cls(name, stat, float(spec["times"]), spec.get("without_history"))

    def value(self, history: Sequence[float]) -> float | None:
        if not history:
            return self.without_history
        scaled = statistics.median(history) * self.times
        if self.stat != "row_count":
            return round(scaled, 6)
        return math.floor(scaled) if self.times <= 1 else math.ceil(scaled)


@dataclass(frozen=True)
class SuiteDefinition:
    """A suite file: the dataset it reads, history bounds, schema and row expectations."""

    name: str
    dataset: str
    history_partitions: int
    bounds: tuple[Bound, ...]
    schema: tuple[dict[str, Any], ...]
    expectations: tuple[dict[str, Any], ...]
    notes: str = ""

    @classmethod
    def load(cls, name: str, folder: Path | None = None) -> SuiteDefinition:
        if name not in SUITES:
            raise ConfigError(f"validate: unknown suite {name!r}; expected one of {SUITES}")
        path = (folder or suites_dir()) / f"{name}.json"
        try:
            data = json.loads(path.read_text())
        except OSError as err:
            raise ConfigError(f"validate: cannot read suite {name} at {path} ({err})") from err
        history = data.get("history", {})
        return cls(
            name=data["name"],
            dataset=data["dataset"],
            history_partitions=int(history.get("partitions", 7)),
            bounds=tuple(Bound.parse(k, v) for k, v in history.get("parameters", {}).items()),
            schema=tuple(data["schema"]),
            expectations=tuple(data["expectations"]),
            notes=data.get("notes", ""),
        )


@dataclass(frozen=True)
class Failure:
    """One failed expectation, in words."""

    expectation: str
    column: str | None
    observed: str
    expected: str

    def line(self) -> str:
        where = f" [{self.column}]" if self.column else ""
        return f"{self.expectation}{where}: observed {self.observed}; expected {self.expected}"


@dataclass(frozen=True)
class ValidationSummary:
    """What one run found; equal for reruns of the same partition and history."""

    suite: str
    ds: date
    partition: Path
    rows: int
    evaluated: int
    failures: tuple[Failure, ...]
    history: tuple[date, ...]
    parameters: dict[str, Any]
    docs: Path

    @property
    def success(self) -> bool:
        return not self.failures

    def line(self) -> str:
        """The one line the CLI prints on success."""
        return (
            f"{self.suite} ds={self.ds}: {self.evaluated} expectations passed on {self.rows} rows "
            f"({len(self.history)} earlier partition(s) for the bounds); Data Docs: {self.docs}"
        )

    def message(self) -> str:
        """What a failed run reports: every failed expectation, then where the HTML is."""
        head = (
            f"{self.suite} ds={self.ds}: {len(self.failures)} of {self.evaluated} expectations "
            f"failed on {self.partition} ({self.rows} rows); Data Docs: {self.docs}"
        )
        return "\n".join([head, *(f"  - {failure.line()}" for failure in self.failures)])


def suites_dir() -> Path:
    """The suite files: `CHURNFLOW_GX_DIR` in the image, else `include/gx` of this checkout."""
    root = os.environ.get("CHURNFLOW_GX_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "gx"
    return base / "expectations"


def docs_dir(lake: Lake | Path, suite: str) -> Path:
    """The suite's Data Docs site; `index.html` there lists every validated day."""
    return Lake.of(lake).local_folder(f"{REPORTS}/{suite}")


def run_validate(ds: date, suite: str) -> str:
    """CLI entry: validate the lake's published partition, return the summary line or raise."""
    return validate(Lake.from_settings(), ds, suite).line()


def validate(
    lake: Lake | Path, ds: date, suite: str, *, staged: Path | None = None
) -> ValidationSummary:
    """Run the suite's checkpoints on `ds`; raise ValidationError when anything fails.

    `staged` is a partition a step wrote but has not published yet (write, audit, publish);
    without it the published partition is checked. History always comes from published days.
    """
    from churnflow.spark import get_spark

    lake = Lake.of(lake)
    definition = SuiteDefinition.load(suite)
    partition = staged or lake.partition_path(definition.dataset, ds)
    _require_data(partition, suite)
    spark = get_spark()
    frame = spark.read.parquet(partition.as_uri())
    history = earlier_partitions(lake, definition.dataset, ds, definition.history_partitions)
    parameters = {
        "ds_start": datetime.combine(ds, time(), UTC),
        "ds_end": datetime.combine(ds + timedelta(days=1), time(), UTC),
    }
    parameters |= history_bounds(
        spark, lake.dataset_path(definition.dataset), history, definition.bounds
    )
    rows = to_pandas(frame)
    results = _run_checkpoints(lake, ds, definition, frame=frame, rows=rows, parameters=parameters)
    origins = _bound_origins(definition, len(history))
    summary = ValidationSummary(
        suite=suite,
        ds=ds,
        partition=partition,
        rows=len(rows),
        evaluated=sum(len(result.results) for result in results),
        failures=tuple(
            _failure(item, origins)
            for result in results
            for item in result.results
            if not item.success
        ),
        history=tuple(_day_of(path) for path in history),
        parameters=parameters,
        docs=docs_dir(lake, suite) / "index.html",
    )
    if not summary.success:
        raise ValidationError(summary.message(), summary)
    return summary


def _require_data(partition: Path, suite: str) -> None:
    if not partition.is_dir():
        raise ValidationError(f"{suite}: partition {partition} does not exist; nothing to validate")
    if not Lake.data_files(partition):
        raise ValidationError(f"{suite}: partition {partition} has no data files")


def _day_of(partition: Path) -> date:
    return date.fromisoformat(partition.name.removeprefix("ds="))


def earlier_partitions(lake: Lake, dataset: str, ds: date, limit: int) -> list[Path]:
    """The latest `limit` published partitions before `ds` that hold data, oldest first."""
    days = [day for day in lake.partitions(dataset) if day < ds][-limit:]
    return [lake.partition_path(dataset, day) for day in days]


def history_bounds(
    spark: SparkSession, root: Path, history: Sequence[Path], bounds: Sequence[Bound]
) -> dict[str, float | None]:
    """Every bound's value, from one Spark aggregation over the earlier partitions.

    `mergeSchema` lets an earlier day that lacks a column count as having no value for it
    instead of failing the read; a day whose types conflict fails with a clear message.
    """
    stats = sorted({bound.stat for bound in bounds})
    per_day: dict[str, list[float]] = {stat: [] for stat in stats}
    if history and stats:
        from pyspark.errors import PySparkException

        try:
            days = (
                spark.read.option("basePath", str(root))
                .option("mergeSchema", "true")
                .parquet(*(str(path) for path in history))
                .groupBy("ds")
                .agg(*(_aggregate(stat).alias(f"stat{n}") for n, stat in enumerate(stats)))
                .collect()
            )
        except PySparkException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValidationError(
                f"cannot compute the history bounds ({', '.join(stats)}) from "
                f"{len(history)} earlier partition(s) of {root}: {first}"
            ) from err
        for row in days:
            for number, stat in enumerate(stats):
                if row[f"stat{number}"] is not None:
                    per_day[stat].append(float(row[f"stat{number}"]))
    return {bound.name: bound.value(per_day[bound.stat]) for bound in bounds}


def _aggregate(stat: str) -> Column:
    """The Spark aggregate of a bound's statistic: row_count, mean(col) or median(col)."""
    from pyspark.sql import functions as sf

    if stat == "row_count":
        return sf.count(sf.lit(1))
    kind, column = stat.removesuffix(")").split("(")
    value = sf.col(column).cast("double")
    return sf.avg(value) if kind == "mean" else sf.median(value)


def to_pandas(frame: DataFrame) -> pd.DataFrame:
    """The day's rows for GX's pandas engine: decimals as float64, timestamps in UTC."""
    import pyarrow as pa

    table = frame.toArrow()
    columns = []
    for column, kind in zip(table.columns, table.schema.types, strict=True):
        if pa.types.is_decimal(kind):
            columns.append(column.cast(pa.float64()))
        elif pa.types.is_timestamp(kind):
            columns.append(column.cast(pa.timestamp(kind.unit, tz="UTC")))
        else:
            columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names).to_pandas()


@contextmanager
def _site_lock(site: Path) -> Iterator[None]:
    """One writer at a time per Data Docs site: parallel backfill days share its index."""
    site.parent.mkdir(parents=True, exist_ok=True)
    with (site.parent / f".{site.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _context(site: Path) -> AbstractDataContext:
    """In-memory context; only validation results and Data Docs go to the lake."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults()
    stores = dict(defaults.stores)
    # The index lists the days whose results are in this store, so it must outlive the run.
    stores[defaults.validation_results_store_name] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(site / "results"),
        },
    }
    config = DataContextConfig(
        store_backend_defaults=defaults,
        stores=stores,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "lake": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(site),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_checkpoints(
    lake: Lake,
    ds: date,
    definition: SuiteDefinition,
    *,
    frame: DataFrame,
    rows: pd.DataFrame,
    parameters: dict[str, Any],
) -> list[ExpectationSuiteValidationResult]:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    site = docs_dir(lake, definition.name)
    context = _context(site)
    batches = {
        "schema": context.data_sources.add_spark("schema", persist=False),
        "rows": context.data_sources.add_pandas("rows"),
    }
    parts = {
        "schema": (f"{definition.name}.schema", definition.schema, frame),
        "rows": (definition.name, definition.expectations, rows),
    }
    run_id = RunIdentifier(run_name=f"ds={ds}", run_time=datetime.combine(ds, time(), UTC))
    results = []
    with _site_lock(site):
        for part, (suite_name, expectations, data) in parts.items():
            batch = batches[part].add_dataframe_asset(definition.name)
            suite = context.suites.add(
                gx.ExpectationSuite(
                    name=suite_name,
                    expectations=[dict(e) for e in expectations],
                    notes=definition.notes,
                )
            )
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=suite_name,
                    validation_definitions=[
                        context.validation_definitions.add(
                            gx.ValidationDefinition(
                                name=suite_name,
                                data=batch.add_batch_definition_whole_dataframe("day"),
                                suite=suite,
                            )
                        )
                    ],
                    actions=[UpdateDataDocsAction(name="data_docs")],
                    result_format={"result_format": "BASIC"},
                )
            )
            outcome = checkpoint.run(
                batch_parameters={"dataframe": data},
                expectation_parameters=parameters,
                run_id=run_id,
            )
            results.extend(outcome.run_results.values())
    return results


def _columns(kwargs: Mapping[str, Any]) -> str | None:
    return (
        ", ".join(str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k))
        or None
    )


def _bound_origins(definition: SuiteDefinition, days: int) -> dict[tuple[str, str | None], str]:
    """For each expectation with history bounds, how they were computed (for the message)."""
    bounds = {bound.name: bound for bound in definition.bounds}
    origins = {}
    for expectation in definition.expectations:
        kwargs = expectation.get("kwargs", {})
        used = [
            bounds[value["$PARAMETER"]]
            for value in kwargs.values()
            if isinstance(value, dict) and value.get("$PARAMETER") in bounds
        ]
        if not used:
            continue
        if days:
            factors = " and ".join(f"{bound.times}x" for bound in used)
            origin = f"{factors} the median {used[0].stat} of {days} earlier partition(s)"
        else:
            origin = "no earlier partition: bounds relaxed"
        origins[(expectation["type"], _columns(kwargs))] = origin
    return origins


def _failure(item: Any, origins: Mapping[tuple[str, str | None], str]) -> Failure:
    config = item.expectation_config
    column = _columns(config.kwargs)
    error = _exception_text(item.exception_info)
    expected = _expected(config.type, config.kwargs, item.result or {})
    origin = origins.get((config.type, column))
    return Failure(
        expectation=config.type,
        column=column,
        observed=f"an error ({error})" if error is not None else _observed(item.result or {}),
        expected=f"{expected} ({origin})" if origin else expected,
    )


def _exception_text(info: Any) -> str | None:
    """The first error message in GX's exception info: flat, or keyed by the failed metric."""
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        if not info.get("raised_exception"):
            return None
        lines = str(info.get("exception_message") or "no message").strip().splitlines()
        return lines[0] if lines else "no message"
    if isinstance(info, Mapping):
        nested = list(info.values())
    elif isinstance(info, (set, list, tuple)):
        nested = list(info)
    else:
        message = getattr(info, "exception_message", None)
        if message is None and hasattr(info, "to_json_dict"):
            return _exception_text(info.to_json_dict())
        return str(message or info).strip().splitlines()[0]
    for value in nested:
        text = _exception_text(value)
        if text is not None:
            return text
    return None


def _observed(result: Mapping[str, Any]) -> str:
    if "observed_value" in result:
        return _show(result["observed_value"])
    if "unexpected_count" in result:
        sample = list(result.get("partial_unexpected_list") or [])[:_SHOWN_VALUES]
        shown = ", ".join(_show(value) for value in sample)
        return f"{result['unexpected_count']} of {result.get('element_count')} rows unexpected" + (
            f" (e.g. {shown})" if shown else ""
        )
    return "no result"


def _expected(kind: str, kwargs: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    if "column_set" in kwargs:
        mismatch = (result.get("details") or {}).get("mismatched") or {}
        missing, extra = mismatch.get("missing") or [], mismatch.get("unexpected") or []
        parts = [f"missing {_show(sorted(missing))}"] if missing else []
        parts += [f"unexpected {_show(sorted(extra))}"] if extra else []
        detail = f" ({'; '.join(parts)})" if parts else ""
        return f"exactly {_show(sorted(kwargs['column_set']))}{detail}"
    if "type_" in kwargs:
        return str(kwargs["type_"])
    if "column_A" in kwargs:
        sign = ">=" if kwargs.get("or_equal") else ">"
        return f"{kwargs['column_A']} {sign} {kwargs['column_B']} in every row"
    if "min_value" in kwargs or "max_value" in kwargs:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        low_sign = ">" if kwargs.get("strict_min") else ">="
        high_sign = "<" if kwargs.get("strict_max") else "<="
        parts = [f"{low_sign} {_show(low)}"] if low is not None else []
        parts += [f"{high_sign} {_show(high)}"] if high is not None else []
        return " and ".join(parts) or "any value"
    if kind.endswith("to_not_be_null"):
        return "no nulls"
    if kind.endswith("to_be_unique"):
        return "no duplicates"
    return "success"


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)
