"""A load of order history (`churnflow ingest --ds A --through B`): one Spark pass per month of
days against one pass per day, side by side on the same raw data.

Raw orders of `--days` days for `--customers` customers (the demo's scale by default) are
generated once and copied into two lakes. Each lake's first days are ingested day by day as a
warm-up (the JVM compiles the same code either way); then the rest is ingested once with
passes of one day (what every `--through` did before passes, and what a daily run does) and
once with passes of DAYS_PER_PASS, in one local Spark session. Both lakes' silver and
quarantine partitions must come out identical; the seconds per day and the ratio are printed.

    .venv/bin/python bench/history.py [--days 61 --customers 3000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include")]

from churnflow import ingest  # noqa: E402
from churnflow.generate import GenerateRequest, generate  # noqa: E402
from churnflow.lake import QUARANTINE_ORDERS, SILVER_ORDERS, Lake  # noqa: E402
from churnflow.spark import get_spark  # noqa: E402

START = date(2026, 1, 1)
WARM_UP_DAYS = 5


def load(lake: Path, first: date, last: date, days_per_pass: int) -> float:
    """Seconds to ingest first..last with passes of `days_per_pass` days."""
    ingest.DAYS_PER_PASS = days_per_pass
    started = time.perf_counter()
    for _ in ingest.ingest_days(lake, first, last):
        pass
    return time.perf_counter() - started


def rows(lake: Path, days: list[date]) -> dict[tuple[str, date], list[tuple[object, ...]]]:
    return {
        (dataset, day): sorted(
            pq.read_table(Lake(lake).partition_path(dataset, day))
            .to_pandas()
            .astype(str)
            .itertuples(index=False, name=None)
        )
        for dataset in (SILVER_ORDERS, QUARANTINE_ORDERS)
        for day in days
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=61)
    parser.add_argument("--customers", type=int, default=3000)
    args = parser.parse_args()
    last = START + timedelta(days=args.days - 1)
    first = START + timedelta(days=WARM_UP_DAYS)
    measured = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        root = Path(folder)
        request = GenerateRequest(start=START, end=last, customers=args.customers, seed=7)
        generate(request, root / "raw", progress=False)
        passes = ingest.DAYS_PER_PASS
        plans = {
            "one day a pass": (root / "per_day", 1),
            f"{passes} days a pass": (root / "passes", passes),
        }
        spark = get_spark()
        seconds = {}
        for name, (lake, days_per_pass) in plans.items():
            shutil.copytree(root / "raw", lake)
            load(lake, START, first - timedelta(days=1), 1)
            seconds[name] = load(lake, first, last, days_per_pass)
        spark.stop()
        (per_day, _), (in_passes, _) = plans.values()
        same = rows(per_day, measured) == rows(in_passes, measured)
    print(f"history load of {len(measured)} days, {args.customers} customers, local Spark:")
    for name, spent in seconds.items():
        print(f"  {name:>16}: {spent:6.1f} s ({spent / len(measured):.2f} s/day)")
    baseline, faster = seconds.values()
    print(f"  ratio: {baseline / faster:.1f}x faster; outputs identical: {same}")
    if not same:
        raise SystemExit("the two loads published different rows")


if __name__ == "__main__":
    main()
