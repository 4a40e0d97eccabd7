"""Great Expectations gate for one day of a dataset: `churnflow validate --ds D --suite NAME`.

The suites are JSON files in `include/gx/expectations/` (the image copies them to
`CHURNFLOW_GX_DIR`): GX expectation configurations plus the few things GX cannot know, namely
which dataset a suite reads and how the statistical checks learn from earlier days. Each run
checks two batches of the same partition, read once through `churnflow.spark.get_spark()`:

- `schema` expectations run on the Spark DataFrame itself. They only read its schema, so they
  see the exact Spark types and cost no Spark job, on a classic session and on Spark Connect.
- `expectations` run on the day's rows as a pandas frame (`toArrow`, decimals as float64). A
  day is at most a few hundred thousand rows, and GX on Spark runs a job per metric: about
  60 jobs, 7-15 s on a 2-core machine, against about a second in pandas (the same under
  Spark Connect, where each job is also a round trip). Decimals become floats because GX's
  pandas metrics convert `Decimal` objects one at a time (a minute for 17k rows).

Two kinds of check, told apart because real data changes:

- Contract expectations (schema, nulls, keys, ranges) fail the step (GX severity `critical`).
- A statistical check (an expectation with a `band`: row count, mean or median of a column)
  becomes two GX expectations on the same metric. The value expected on D comes from the
  statistic over the latest published partitions, with weekday factors and a level that
  re-centres after a lasting shift (`churnflow.bands`). Outside the warn band (severity
  `warning`) the step carries on and reports a `WARNING` line; outside the fail band (severity
  `critical`) it fails, unless an operator accepts the day with a reason: then those failures
  become accepted warnings and the reason is recorded beside the validation result. Contract
  failures are never accepted.

The context is ephemeral (nothing is written under the read-only suite folder); Data Docs and
the validation results they are built from go to `<lake>/reports/gx/<suite>/`, acceptances to
its `accepted/ds=D.json`. Runs are keyed by `ds`, so a rerun replaces that day's page and
gives the same verdict.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow.bands import Band, Baseline, baseline
from churnflow.errors import ConfigError, DataError
from churnflow.lake import REPORTS as REPORTS_AREA
from churnflow.lake import Lake, partition_name, partition_relative

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext
    from pyspark.sql import Column, DataFrame, SparkSession

SUITES = ("silver_orders", "customer_features")
REPORTS = f"{REPORTS_AREA}/gx"
ACCEPT_ENV = "CHURNFLOW_ACCEPT_REASON"
# The expectations a band can drive, and the statistic of the day each one observes.
_BANDED = {
    "expect_table_row_count_to_be_between": "row_count",
    "expect_column_mean_to_be_between": "mean",
    "expect_column_median_to_be_between": "median",
}
CONTRACT, FAIL, WARN = "contract", "fail", "warn"
_SEVERITY = {WARN: "warning", FAIL: "critical"}
_SHOWN_VALUES = 5

Ratios = tuple[float | None, float | None]
# A statistic of one published partition: (partition URI, statistic) -> value (None: no rows).
StatsCache = dict[tuple[str, str], float | None]


class ValidationError(DataError):
    """A partition is missing or breaks its suite; `summary` holds the results when it ran."""

    def __init__(self, message: str, summary: ValidationSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


def _ratios(name: str, value: Any) -> Ratios:
    if not (isinstance(value, list) and len(value) == 2):
        raise ConfigError(
            f"GX suite band {name}: expected [low, high] (null for open), got {value}"
        )
    return (
        None if value[0] is None else float(value[0]),
        None if value[1] is None else float(value[1]),
    )


@dataclass(frozen=True)
class BandCheck:
    """A statistical check: warn and fail bands around what earlier days expect of `stat`."""

    stat: str  # row_count, mean(column) or median(column)
    warn: Ratios
    fail: Ratios
    without_history: Ratios
    expectation: Mapping[str, Any]

    @classmethod
    def parse(cls, expectation: Mapping[str, Any]) -> BandCheck:
        kind = _BANDED.get(expectation["type"])
        column = expectation.get("kwargs", {}).get("column")
        if kind is None or (kind != "row_count") != bool(column):
            raise ConfigError(
                f"GX suite: a band drives {', '.join(_BANDED)} (with a column for mean and "
                f"median), not {expectation['type']} {column or ''}"
            )
        band = expectation["band"]
        return cls(
            stat=kind if kind == "row_count" else f"{kind}({column})",
            warn=_ratios(f"{kind}.warn", band["warn"]),
            fail=_ratios(f"{kind}.fail", band["fail"]),
            without_history=_ratios(f"{kind}.without_history", band["without_history"]),
            expectation=expectation,
        )

    @property
    def key(self) -> str:
        """`row_count`, `mean_amount`: the prefix of this check's `$PARAMETER` names."""
        return self.stat.removesuffix(")").replace("(", "_")

    @property
    def counts(self) -> bool:
        return self.stat == "row_count"

    def band(self, level: str, expected: Baseline | None) -> Band:
        """Without history the warn band is open and the fail band is `without_history`."""
        if expected is None:
            return Band(*self.without_history) if level == FAIL else Band(None, None)
        return Band.around(expected.expected, self.ratios(level), counts=self.counts)

    def ratios(self, level: str) -> Ratios:
        return self.warn if level == WARN else self.fail

    def origin(self, level: str, expected: Baseline | None) -> str:
        """How the `level` band was computed, in words (messages, Data Docs notes)."""
        if expected is None:
            source = "the suite's without_history" if level == FAIL else "open"
            return f"no earlier partition: {level} band {source}"
        ratios = "-".join("open" if r is None else f"{_show(r)}x" for r in self.ratios(level))
        poisson = ", at least -/+3 sqrt(expected) for a count" if self.counts else ""
        return f"{level} band {ratios}{poisson} of {self.stat}: {expected.describe()}"

    def gx_expectations(self, expected: Baseline | None) -> list[dict[str, Any]]:
        """The warn and the fail expectation, bounds as `$PARAMETER`s named after `key`."""
        out = []
        for level in (WARN, FAIL):
            kwargs = dict(self.expectation.get("kwargs", {}))
            kwargs["min_value"] = {"$PARAMETER": f"{self.key}_{level}_min"}
            kwargs["max_value"] = {"$PARAMETER": f"{self.key}_{level}_max"}
            origin = self.origin(level, expected)
            meta = dict(self.expectation.get("meta", {})) | {"level": level, "band": origin}
            out.append(
                {
                    "type": self.expectation["type"],
                    "kwargs": kwargs,
                    "severity": _SEVERITY[level],
                    "meta": meta,
                    "notes": origin,
                }
            )
        return out

    def parameters(self, expected: Baseline | None) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for level in (WARN, FAIL):
            band = self.band(level, expected)
            out[f"{self.key}_{level}_min"] = band.low
            out[f"{self.key}_{level}_max"] = band.high
        return out


@dataclass(frozen=True)
class SuiteDefinition:
    """A suite file: the dataset it reads, how much history, schema and row expectations."""

    name: str
    dataset: str
    history_partitions: int
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
        definition = cls(
            name=data["name"],
            dataset=data["dataset"],
            history_partitions=int(data.get("history", {}).get("partitions", 56)),
            schema=tuple(data["schema"]),
            expectations=tuple(data["expectations"]),
            notes=data.get("notes", ""),
        )
        definition.bands  # noqa: B018 - a bad band fails at load, before Spark starts
        return definition

    @property
    def bands(self) -> tuple[BandCheck, ...]:
        return tuple(BandCheck.parse(e) for e in self.expectations if "band" in e)

    def gx_expectations(self, expected: Mapping[str, Baseline | None]) -> list[dict[str, Any]]:
        """The row expectations for GX, each band expanded to its warn and fail expectation."""
        out: list[dict[str, Any]] = []
        for expectation in self.expectations:
            if "band" in expectation:
                check = BandCheck.parse(expectation)
                out.extend(check.gx_expectations(expected[check.stat]))
            else:
                out.append(dict(expectation))
        return out


@dataclass(frozen=True)
class Failure:
    """One failed expectation, in words; `level` is contract, fail or warn."""

    expectation: str
    column: str | None
    observed: str
    expected: str
    level: str = CONTRACT

    def line(self) -> str:
        where = f" [{self.column}]" if self.column else ""
        band = f" ({self.level} band)" if self.level != CONTRACT else ""
        return (
            f"{self.expectation}{where}{band}: observed {self.observed}; expected {self.expected}"
        )


@dataclass(frozen=True)
class ValidationSummary:
    """What one run found; equal for reruns of the same partition, history and reason.

    `failures` block publishing; `warnings` do not (warn-band findings, and fail-band findings
    an operator accepted); `accepted` is the operator's reason when something was accepted.
    """

    suite: str
    ds: date
    partition: Path | str
    rows: int
    evaluated: int
    failures: tuple[Failure, ...]
    history: tuple[date, ...]
    parameters: dict[str, Any]
    docs: Path
    warnings: tuple[Failure, ...] = ()
    accepted: str | None = None

    @property
    def success(self) -> bool:
        return not self.failures

    def line(self) -> str:
        """What the CLI prints on success: the summary, then one `WARNING` line per warning."""
        passed = self.evaluated - len(self.warnings)
        flagged = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        if self.accepted is not None:
            flagged += f" (fail-band findings accepted: {self.accepted})"
        head = (
            f"{self.suite} ds={self.ds}: {passed} of {self.evaluated} expectations passed"
            f"{flagged} on {self.rows} rows ({len(self.history)} earlier partition(s) for the "
            f"bands); Data Docs: {self.docs}"
        )
        return "\n".join([head, *self.warning_lines()])

    def warning_lines(self) -> list[str]:
        lines = []
        for warning in self.warnings:
            accepted = f" [accepted: {self.accepted}]" if warning.level == FAIL else ""
            lines.append(f"WARNING {self.suite} ds={self.ds}: {warning.line()}{accepted}")
        return lines

    def message(self, accept: str | None = None) -> str:
        """What a failed run reports: every failure, the warnings, where the HTML is, and why
        the day can or cannot be accepted."""
        head = (
            f"{self.suite} ds={self.ds}: {len(self.failures)} of {self.evaluated} expectations "
            f"failed on {self.partition} ({self.rows} rows); Data Docs: {self.docs}"
        )
        contract = [f for f in self.failures if f.level == CONTRACT]
        if contract and accept is not None:
            tail = (
                f"The accept reason ({accept}) was not applied: contract failures "
                f"({len(contract)}) are never accepted; fix the data and rerun."
            )
        elif contract:
            tail = "Contract failures: fix the data and rerun."
        else:
            tail = (
                "Only statistical fail bands failed: if the business really changed, rerun with "
                f"a reason to accept the day ({ACCEPT_ENV}, the DAG's accept param)."
            )
        return "\n".join(
            [
                head,
                *(f"  - {failure.line()}" for failure in self.failures),
                *(f"  {line}" for line in self.warning_lines()),
                tail,
            ]
        )


def suites_dir() -> Path:
    """The suite files: `CHURNFLOW_GX_DIR` in the image, else `include/gx` of this checkout."""
    root = os.environ.get("CHURNFLOW_GX_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "gx"
    return base / "expectations"


def day_page(lake: Lake | Path, suite: str, ds: date) -> Path:
    """The Data Docs page of one day's row checks (what a task links to); the index when the
    day has none yet."""
    site = docs_dir(lake, suite)
    pages = sorted((site / "validations" / suite / f"ds={ds.isoformat()}").glob("*/rows-*.html"))
    return pages[-1] if pages else site / "index.html"


def require_site(lake: Lake, suite: str) -> None:
    """Fail before any Spark work where the lake cannot keep the suite's Data Docs site."""
    if not lake.holds_folders:
        raise ConfigError(
            f"CHURNFLOW_LAKE={lake.uri}: {REPORTS}/{suite} is a Great Expectations Data Docs "
            "site, a tree of files that this release keeps in a folder lake only; run the "
            "steps that validate (ingest, features, validate) on a folder lake, e.g. a "
            "ReadWriteMany volume (CHURNFLOW_LAKE_PVC, docs/deploy.md)"
        )


def docs_dir(lake: Lake | Path, suite: str) -> Path:
    """The suite's Data Docs site; `index.html` there lists every validated day."""
    return Lake.of(lake).local_folder(f"{REPORTS}/{suite}")


def accepted_record(suite: str, ds: date) -> str:
    """Lake-relative name of the record of an operator's acceptance of `ds`."""
    return f"{REPORTS}/{suite}/accepted/{partition_name(ds)}.json"


def run_validate(ds: date, suite: str) -> str:
    """CLI entry: validate the lake's published partition, return the summary or raise."""
    from churnflow.settings import get_settings

    accept = get_settings().accept_reason
    return validate(Lake.from_settings(), ds, suite, accept=accept).line()


def validate(
    lake: Lake | Path,
    ds: date,
    suite: str,
    *,
    staged: Path | None = None,
    accept: str | None = None,
    known_stats: StatsCache | None = None,
    index: bool = True,
) -> ValidationSummary:
    """Run the suite's checkpoints on `ds`; raise ValidationError when anything blocks it.

    `staged` is a partition a step wrote but has not published yet (write, audit, publish);
    without it the published partition is checked. History always comes from published days.
    `accept` is an operator's reason to let fail-band (statistical) findings through as
    warnings; it is recorded beside the result. Contract failures block whatever the reason.
    `known_stats` carries earlier days' statistics from one validation to the next (see
    `history_stats`) for a caller that validates a range of days in order; such a caller may
    leave the Data Docs index to the range's last day (`index=False`: the day's own pages are
    written, the index that lists every day is not). A failed day always rebuilds the index.
    """
    from churnflow.spark import get_spark

    lake = Lake.of(lake)
    accept = accept.strip() if accept and accept.strip() else None
    definition = SuiteDefinition.load(suite)
    require_site(lake, suite)
    partition, sources = _data_of(lake, definition.dataset, ds, staged, suite)
    spark = get_spark()
    frame = spark.read.parquet(*sources)
    history = earlier_partitions(lake, definition.dataset, ds, definition.history_partitions)
    bands = definition.bands
    per_day = history_stats(
        spark, lake.dataset_uri(definition.dataset), history, [b.stat for b in bands], known_stats
    )
    expected = {stat: baseline(values, ds) for stat, values in per_day.items()}
    parameters: dict[str, Any] = {
        "ds_start": datetime.combine(ds, time(), UTC),
        "ds_end": datetime.combine(ds + timedelta(days=1), time(), UTC),
    }
    for check in bands:
        parameters |= check.parameters(expected[check.stat])
    rows = to_pandas(frame)
    gx_rows = definition.gx_expectations(expected)
    with _site_lock(docs_dir(lake, suite)):
        context, results = _run_checkpoints(
            lake,
            ds,
            definition,
            frame=frame,
            rows=rows,
            parameters=parameters,
            expectations=gx_rows,
        )
        findings = [
            _failure(item)
            for result in results.values()
            for item in result.results
            if not item.success
        ]
        failures = [f for f in findings if f.level != WARN]
        warnings = [f for f in findings if f.level == WARN]
        accepted = None
        if failures and accept is not None and all(f.level == FAIL for f in failures):
            warnings, failures, accepted = warnings + failures, [], accept
        summary = ValidationSummary(
            suite=suite,
            ds=ds,
            partition=partition,
            rows=len(rows),
            evaluated=sum(len(result.results) for result in results.values()),
            failures=tuple(failures),
            history=tuple(_day_of(uri) for uri in history),
            parameters=parameters,
            docs=docs_dir(lake, suite) / "index.html",
            warnings=tuple(warnings),
            accepted=accepted,
        )
        _record(context, results, summary, index=index or not summary.success)
        summary = replace(summary, docs=day_page(lake, suite, ds))
    if accepted is not None:
        _record_acceptance(lake, definition.dataset, summary)
    if not summary.success:
        raise ValidationError(summary.message(accept), summary)
    return summary


def _record_acceptance(lake: Lake, dataset: str, summary: ValidationSummary) -> None:
    """Write `accepted/ds=D.json` beside the suite's results: why a flagged day went through."""
    record = {
        "suite": summary.suite,
        "ds": summary.ds.isoformat(),
        "partition": partition_relative(dataset, summary.ds),
        "reason": summary.accepted,
        "accepted": [w.line() for w in summary.warnings if w.level == FAIL],
        "warnings": [w.line() for w in summary.warnings if w.level == WARN],
        "data_docs": str(summary.docs),
    }
    lake.write_bytes(
        accepted_record(summary.suite, summary.ds), json.dumps(record, indent=2).encode()
    )


def _data_of(
    lake: Lake, dataset: str, ds: date, staged: Path | None, suite: str
) -> tuple[Path | str, list[str]]:
    """The partition to check (as messages name it) and what Spark reads: the staged folder,
    or the published partition's files by name (in a folder or a bucket alike)."""
    if staged is not None:
        found, sources = staged.is_dir(), [str(staged)]  # as_uri() would escape ds=…'s `=`
        has_data = bool(Lake.data_files(staged))
        partition: Path | str = staged
    else:
        partition = lake.partition_shown(dataset, ds)
        found = lake.exists(dataset, ds)
        sources = [item.uri for item in lake.files(dataset, ds)]
        has_data = bool(sources)
    if not found:
        raise ValidationError(f"{suite}: partition {partition} does not exist; nothing to validate")
    if not has_data:
        raise ValidationError(f"{suite}: partition {partition} has no data files")
    return partition, sources


def _day_of(partition: str) -> date:
    return date.fromisoformat(partition.rstrip("/").rpartition("/")[2].removeprefix("ds="))


def earlier_partitions(lake: Lake, dataset: str, ds: date, limit: int) -> list[str]:
    """The URIs of the latest `limit` published partitions before `ds` that hold data,
    oldest first."""
    days = [day for day in lake.partitions(dataset) if day < ds][-limit:]
    return [lake.partition_uri(dataset, day) for day in days]


def history_stats(
    spark: SparkSession,
    root: str,
    history: Sequence[str],
    stats: Sequence[str],
    known: StatsCache | None = None,
) -> dict[str, dict[date, float]]:
    """Each statistic per earlier day, from one Spark aggregation over their partitions.

    `known` holds statistics of partitions computed earlier by the same caller (a load of
    history validates day after day against nearly the same earlier days); only partitions
    missing from it are read, and what they give is added to it.
    `mergeSchema` lets an earlier day that lacks a column count as having no value for it
    instead of failing the read; a day whose types conflict fails with a clear message.
    """
    names = sorted(set(stats))
    known = {} if known is None else known
    missing = [uri for uri in history if any((uri, stat) not in known for stat in names)]
    if missing and names:
        from pyspark.errors import PySparkException

        try:
            rows = (
                spark.read.option("basePath", str(root))
                .option("mergeSchema", "true")
                .parquet(*(str(path) for path in missing))
                .groupBy("ds")
                .agg(*(_aggregate(stat).alias(f"stat{n}") for n, stat in enumerate(names)))
                .collect()
            )
        except PySparkException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValidationError(
                f"cannot compute the history of {', '.join(names)} from "
                f"{len(history)} earlier partition(s) of {root}: {first}"
            ) from err
        by_day = {
            row["ds"] if isinstance(row["ds"], date) else date.fromisoformat(str(row["ds"])): row
            for row in rows
        }
        for uri in missing:
            row = by_day.get(_day_of(uri))
            for number, stat in enumerate(names):
                value = None if row is None else row[f"stat{number}"]
                known[(uri, stat)] = None if value is None else float(value)
    per_day: dict[str, dict[date, float]] = {stat: {} for stat in names}
    for uri in history:
        for stat in names:
            value = known[(uri, stat)]
            if value is not None:
                per_day[stat][_day_of(uri)] = value
    return per_day


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

    from churnflow import data_docs

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
                "site_section_builders": data_docs.site_sections(),
                "site_index_builder": data_docs.index_builder(),
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
    expectations: Sequence[dict[str, Any]],
) -> tuple[AbstractDataContext, dict[Any, ExpectationSuiteValidationResult]]:
    """Both checkpoints of the day; `_record` then adds the verdict and builds Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(docs_dir(lake, definition.name))
    batches = {
        "schema": context.data_sources.add_spark("schema", persist=False),
        "rows": context.data_sources.add_pandas("rows"),
    }
    parts = {
        "schema": (f"{definition.name}.schema", definition.schema, frame),
        "rows": (definition.name, expectations, rows),
    }
    run_id = RunIdentifier(run_name=f"ds={ds}", run_time=datetime.combine(ds, time(), UTC))
    results = {}
    for part, (suite_name, suite_expectations, data) in parts.items():
        batch = batches[part].add_dataframe_asset(definition.name)
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=suite_name,
                expectations=[dict(e) for e in suite_expectations],
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
                actions=[],
                result_format={"result_format": "BASIC"},
            )
        )
        outcome = checkpoint.run(
            batch_parameters={"dataframe": data},
            expectation_parameters=parameters,
            run_id=run_id,
        )
        results |= outcome.run_results
    return context, results


def _record(
    context: AbstractDataContext,
    results: Mapping[Any, ExpectationSuiteValidationResult],
    summary: ValidationSummary,
    *,
    index: bool = True,
) -> None:
    """Store each result with the day's verdict, warnings and acceptance; build its Data Docs.

    A result's `success` is the verdict (warnings do not fail a day), so the Data Docs index
    shows the days that were published as passed; its `meta.churnflow` lists the warnings
    and the operator's reason.
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    for key, result in results.items():
        result.success = summary.success
        result.meta["churnflow"] = {
            "warnings": [warning.line() for warning in summary.warnings],
            "accepted": summary.accepted,
        }
        context.validation_results_store.set(key, result)
    suites = {ExpectationSuiteIdentifier(name=result.suite_name) for result in results.values()}
    context.build_data_docs(
        site_names=["lake"], resource_identifiers=[*results, *suites], build_index=index
    )


def _columns(kwargs: Mapping[str, Any]) -> str | None:
    return (
        ", ".join(str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k))
        or None
    )


def _failure(item: Any) -> Failure:
    config = item.expectation_config
    error = _exception_text(item.exception_info)
    expected = _expected(config.type, config.kwargs, item.result or {})
    origin = (config.meta or {}).get("band")
    return Failure(
        expectation=config.type,
        column=_columns(config.kwargs),
        observed=f"an error ({error})" if error is not None else _observed(item.result or {}),
        expected=f"{expected} ({origin})" if origin else expected,
        level=(config.meta or {}).get("level", CONTRACT),
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
