"""Check that a day's raw orders landed whole: files readable, rows present, columns there.

This is the cheap gate in front of ingest: it reads headers and counts rows without Spark,
so a missing or truncated delivery fails in seconds with the file named.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from churnflow.errors import LandingError
from churnflow.lake import RAW_ORDERS, Lake

REQUIRED_ORDER_COLUMNS = ("order_id", "customer_id", "order_ts", "amount", "items")
FORMATS = (".csv", ".parquet")


@dataclass(frozen=True)
class FileSummary:
    path: Path
    rows: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class LandingSummary:
    partition: Path
    files: tuple[FileSummary, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def _read_csv(path: Path) -> FileSummary:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise LandingError(f"{path}: file has no header line (the landing contract wants one)")
        rows = sum(1 for _ in reader)
    return FileSummary(path, rows, tuple(name.strip() for name in header))


def _read_parquet(path: Path) -> FileSummary:
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception as err:  # pyarrow raises several types for a corrupt footer
        raise LandingError(f"{path}: not a readable Parquet file ({err})") from err
    return FileSummary(path, metadata.num_rows, tuple(metadata.schema.names))


def _summarise(path: Path) -> FileSummary:
    if path.stat().st_size == 0:
        raise LandingError(f"{path}: file is empty (0 bytes)")
    if path.suffix == ".csv":
        summary = _read_csv(path)
    elif path.suffix == ".parquet":
        summary = _read_parquet(path)
    else:
        raise LandingError(
            f"{path}: unsupported file type {path.suffix!r}; the landing contract allows "
            f"{', '.join(FORMATS)}"
        )
    missing = [name for name in REQUIRED_ORDER_COLUMNS if name not in summary.columns]
    if missing:
        raise LandingError(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"(landing contract for {RAW_ORDERS}); columns found: {', '.join(summary.columns)}"
        )
    return summary


def check_landing(lake: Lake | Path, ds: date) -> LandingSummary:
    """Summary of the partition, or a LandingError naming the partition or file at fault."""
    lake = Lake.of(lake)
    partition = lake.partition_path(RAW_ORDERS, ds)
    if not lake.exists(RAW_ORDERS, ds):
        raise LandingError(f"{RAW_ORDERS} partition ds={ds} is missing: no folder {partition}")
    files = [item.path for item in lake.files(RAW_ORDERS, ds)]
    if not files:
        raise LandingError(f"{RAW_ORDERS} partition ds={ds} holds no data files: {partition}")
    summary = LandingSummary(partition, tuple(_summarise(p) for p in files))
    if summary.rows == 0:
        raise LandingError(
            f"{RAW_ORDERS} partition ds={ds} has no rows in {len(files)} file(s): {partition}"
        )
    return summary
