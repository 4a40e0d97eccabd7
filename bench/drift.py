"""What judging a day costs at scale: `churnflow.drift.judge` with 200 thousand reference rows
against 50 thousand current ones (the issue's sizes), in one process, Evidently included.

Reference and days are synthetic training examples (`bench/train.py`'s generator) written to a
throw-away lake: a day like the reference, and a day whose spend and recency shifted. Each is
judged `--repeat` times (report, metrics, publish); the first call pays for Evidently's import
and its first report. The per-day cost at demo scale, forked from the step server and fresh,
is `bench/daily_steps.py`'s.

    .venv/bin/python bench/drift.py [--reference 200000] [--current 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.train import examples  # noqa: E402
from churnflow.drift import DriftConfig, judge  # noqa: E402
from churnflow.lake import CUSTOMER_FEATURES, PREDICTIONS, Lake  # noqa: E402
from churnflow.scoring import predictions_table, publish_predictions  # noqa: E402

DAY = date(2026, 3, 1)


def _day(lake: Lake, day: date, frame: pd.DataFrame) -> pd.DataFrame:
    """Publish `frame` as the day's features and a recency-like score as its predictions."""
    with lake.publishing(CUSTOMER_FEATURES, day) as folder:
        frame.drop(columns=["split", "snapshot_ds", "churned"], errors="ignore").to_parquet(
            folder / "part-0.parquet", index=False
        )
    scores = frame["days_since_last_order"] / (frame["days_since_last_order"] + 30.0)
    table = predictions_table(
        pa.array(frame["customer_id"]), pa.array(scores.to_numpy(), pa.float64()), 1
    )
    publish_predictions(lake, PREDICTIONS, day, table, len(frame))
    return table.to_pandas()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=200_000)
    parser.add_argument("--current", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    rng = np.random.default_rng(7)
    reference = examples(args.reference, "train", rng)
    like = examples(args.current, "score", rng)
    shifted = examples(args.current, "score", rng)
    for name in ("amount_30d", "amount_90d", "avg_order_value_90d"):
        shifted[name] = shifted[name] * 2.5
    shifted["days_since_last_order"] = shifted["days_since_last_order"] + 20
    home = Path(tempfile.mkdtemp(prefix="churnflow-bench-drift-"))
    config = DriftConfig(reference_rows=args.reference, prediction_days=1, horizon_days=30)
    table = Table(title=f"drift judge: {args.reference:,} reference rows vs {args.current:,}")
    for column in ("day", "first s", "median s (later)", "drift share", "drifted columns"):
        table.add_column(column)
    try:
        lake = Lake(str(home / "lake"))
        for offset, (label, frame) in enumerate((("like the reference", like),
                                                 ("shifted", shifted))):  # fmt: skip
            day = DAY + timedelta(days=offset)
            predictions = _day(lake, day, frame)
            times, summary = [], None
            for _ in range(args.repeat):
                started = time.perf_counter()
                summary = judge(
                    lake, day, predictions, reference, reference_at="bench", config=config
                )
                times.append(time.perf_counter() - started)
            assert summary is not None
            features = summary.metrics["features"]
            later = statistics.median(times[1:]) if len(times) > 1 else float("nan")
            table.add_row(
                label, f"{times[0]:.2f}", f"{later:.2f}", f"{features['share']:.2f}",
                ", ".join(features["drifted_columns"]) or "none",
            )  # fmt: skip
        console.print(table)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
