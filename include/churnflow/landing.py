"""Check that a day's raw orders landed whole: files readable, rows present, columns there.

This is the cheap gate in front of ingest: it reads headers and counts rows without Spark,
so a missing or truncated delivery fails in seconds with the file named.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from churnflow.errors import LandingError
from churnflow.lake import RAW_ORDERS, Lake, LakeFile, partition_relative

if TYPE_CHECKING:
    import pyarrow.fs as pafs

REQUIRED_ORDER_COLUMNS = ("order_id", "customer_id", "order_ts", "amount", "items")
FORMATS = (".csv", ".parquet")


@dataclass(frozen=True)
class FileSummary:
    file: LakeFile
    relative: str  # lake-relative name: what messages and the quarantine's source_file show
    rows: int
    columns: tuple[str, ...]

    @property
    def path(self) -> PurePath:
        return self.file.path


@dataclass(frozen=True)
class LandingSummary:
    partition: str
    files: tuple[FileSummary, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def _read_csv(file: LakeFile, filesystem: pafs.FileSystem) -> tuple[int, tuple[str, ...]]:
    with (
        filesystem.open_input_stream(file.location) as raw,
        io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle,
    ):
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise LandingError(
                f"{file.shown}: file has no header line (the landing contract wants one)"
            )
        rows = sum(1 for _ in reader)
    return rows, tuple(name.strip() for name in header)


def _read_parquet(file: LakeFile, filesystem: pafs.FileSystem) -> tuple[int, tuple[str, ...]]:
    import pyarrow.parquet as pq

    try:
        with filesystem.open_input_file(file.location) as handle:
            metadata = pq.ParquetFile(handle).metadata
    except Exception as err:  # pyarrow raises several types for a corrupt footer
        raise LandingError(f"{file.shown}: not a readable Parquet file ({err})") from err
    return metadata.num_rows, tuple(metadata.schema.names)


def _summarise(lake: Lake, file: LakeFile, relative: str) -> FileSummary:
    if file.size == 0:
        raise LandingError(f"{file.shown}: file is empty (0 bytes)")
    if file.suffix == ".csv":
        rows, columns = _read_csv(file, lake.filesystem)
    elif file.suffix == ".parquet":
        rows, columns = _read_parquet(file, lake.filesystem)
    else:
        raise LandingError(
            f"{file.shown}: unsupported file type {file.suffix!r}; the landing contract allows "
            f"{', '.join(FORMATS)}"
        )
    missing = [name for name in REQUIRED_ORDER_COLUMNS if name not in columns]
    if missing:
        raise LandingError(
            f"{file.shown}: missing required column(s) {', '.join(missing)} "
            f"(landing contract for {RAW_ORDERS}); columns found: {', '.join(columns)}"
        )
    return FileSummary(file, relative, rows, columns)


def check_landing(lake: Lake | Path, ds: date) -> LandingSummary:
    """Summary of the partition, or a LandingError naming the partition or file at fault."""
    lake = Lake.of(lake)
    partition = lake.partition_shown(RAW_ORDERS, ds)
    if not lake.exists(RAW_ORDERS, ds):
        raise LandingError(f"{RAW_ORDERS} partition ds={ds} is missing: no folder {partition}")
    files = lake.files(RAW_ORDERS, ds)
    if not files:
        raise LandingError(f"{RAW_ORDERS} partition ds={ds} holds no data files: {partition}")
    relative = partition_relative(RAW_ORDERS, ds)
    summary = LandingSummary(
        partition, tuple(_summarise(lake, item, f"{relative}/{item.name}") for item in files)
    )
    if summary.rows == 0:
        raise LandingError(
            f"{RAW_ORDERS} partition ds={ds} has no rows in {len(files)} file(s): {partition}"
        )
    return summary
