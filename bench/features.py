"""The feature build for one new day, as the pipeline runs it, against DuckDB on the same data.

Silver orders: 10 million over a year for 200 thousand customers (written straight to the
silver contract, no ingest). Spark side: `churnflow features --ds D` against a warm Spark
Connect server, with the incremental state of the days before D in place, as in a daily run;
forked from the step server as the local runner runs it, and in a fresh process for
comparison. DuckDB side: a fresh process computing the same features for D from the same
Parquet files, from scratch. Both are measured for a day with 90 and with 365 days of history,
side by side in one run, and the two outputs are compared.

Run: `.venv/bin/python bench/features.py [--orders 10000000 --customers 200000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import track

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devstack.services import down, throwaway_config, up  # noqa: E402

START = date(2025, 1, 1)
WINDOWS = (7, 30, 90, 365)

# The features of `ds` from scratch, in either engine's dialect (`Dialect` fills the blanks).
FEATURES_SQL = """
with orders as (
    select customer_id, order_ts, cast(amount as double) as amount, items, cast(ds as date) as ds
    from {source}
    where cast(ds as date) <= {day}
),
history as (
    select customer_id, min(order_ts) as first_ts, max(order_ts) as last_ts, count(*) as n
    from orders group by customer_id
),
windows as (
    select customer_id,
        {window_columns},
        sum(items) filter (where ds > {before_90}) as items_90d
    from orders where ds > {before_365}
    group by customer_id
)
select {hint}
    w.customer_id,
    {tenure_days} as tenure_days,
    {days_since_last_order} as days_since_last_order,
    {window_selects},
    w.items_90d,
    w.amount_90d / w.orders_90d as avg_order_value_90d,
    case when w.orders_365d >= 2
        then ({last_us} - {first_us}) / 86400e6 / (h.n - 1) end
        as mean_gap_days,
    w.orders_30d / (w.orders_90d / 3e0) as trend_orders_30_90,
    case when w.amount_90d > 0 then w.amount_30d / (w.amount_90d / 3e0) end as trend_amount_30_90
from windows w join history h using (customer_id)
where w.orders_90d > 0
"""


# Each engine's measurement: a fresh process runs the query (argv[1]), writes Parquet to argv[2]
# and prints the seconds that took (DuckDB's import included; Spark's after it has connected).
DUCKDB_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import duckdb
rows = duckdb.sql(sys.argv[1]).fetch_arrow_table()
import pyarrow.parquet as pq
pq.write_table(rows, sys.argv[2])
print(json.dumps({"rows": rows.num_rows, "compute_s": time.perf_counter() - t0}))
"""

SPARK_PROBE = """
import json, os, sys, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(os.environ["SPARK_REMOTE"]).getOrCreate()
t0 = time.perf_counter()
spark.sql(sys.argv[1]).write.mode("overwrite").parquet(sys.argv[2])
print(json.dumps({"compute_s": time.perf_counter() - t0}))
"""


@dataclass(frozen=True)
class Dialect:
    """How one engine reads the silver folder and writes date and timestamp arithmetic."""

    source: str  # the silver orders, `{silver}` being the folder
    days_before: str  # `{day}` minus `{n}` days
    days_between: str  # days from `{start}` to `{end}`
    micros: str  # microseconds since the epoch of `{ts}`
    probe: str  # the program that runs the query and times it
    hint: str = ""


DIALECTS = {
    # DuckDB computes the features in-process, the fastest way to them on one machine.
    "duckdb": Dialect(
        source="read_parquet('{silver}/*/*.parquet', hive_partitioning = true)",
        days_before="{day} - {n}",
        days_between="{end} - {start}",
        micros="epoch_us({ts})",
        probe=DUCKDB_PROBE,
    ),
    # The same as one Spark SQL statement on the warm server: what the engine alone costs,
    # without dbt's statements, its tests, the GX audit or the publish.
    "spark": Dialect(
        source="parquet.`{silver}`",
        days_before="date_sub({day}, {n})",
        days_between="datediff({end}, {start})",
        micros="unix_micros({ts})",
        probe=SPARK_PROBE,
        hint="/*+ REPARTITION(1) */",
    ),
}


def features_sql(silver: Path, ds: date, dialect: str = "duckdb") -> str:
    how = DIALECTS[dialect]
    day = f"date '{ds}'"

    def before(n: int) -> str:
        return how.days_before.format(day=day, n=n)

    def since(column: str) -> str:
        return how.days_between.format(start=f"cast({column} as date)", end=day)

    window_columns = ",\n        ".join(
        f"count(*) filter (where ds > {before(n)}) as orders_{n}d,\n        "
        f"coalesce(sum(amount) filter (where ds > {before(n)}), 0) as amount_{n}d"
        for n in WINDOWS
    )
    window_selects = (
        ", ".join(f"w.orders_{n}d" for n in WINDOWS)
        + ", "
        + ", ".join(f"w.amount_{n}d" for n in WINDOWS)
    )
    return FEATURES_SQL.format(
        source=how.source.format(silver=silver),
        day=day,
        before_90=before(90),
        before_365=before(365),
        hint=how.hint,
        tenure_days=since("h.first_ts"),
        days_since_last_order=since("h.last_ts"),
        first_us=how.micros.format(ts="h.first_ts"),
        last_us=how.micros.format(ts="h.last_ts"),
        window_columns=window_columns,
        window_selects=window_selects,
    )


def write_silver(lake: Path, orders: int, customers: int, days: int, seed: int = 11) -> None:
    """Silver orders per the contract, with heterogeneous customers and weekly seasonality."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, customers)
    weights /= weights.sum()
    spend = rng.lognormal(np.log(38.0), 0.6, customers)
    ids = np.array([f"C{i:07d}" for i in range(customers)])
    per_day = orders / days
    weekday = np.array([0.9, 0.85, 0.9, 0.95, 1.1, 1.3, 1.2])
    for offset in track(range(days), description=f"writing {orders:,} silver orders"):
        day = START + timedelta(days=offset)
        n = int(per_day * weekday[day.weekday()] / weekday.mean())
        who = rng.choice(customers, size=n, p=weights)
        seconds = np.sort(rng.integers(0, 86_400, n))
        stamps = np.datetime64(day, "us") + seconds.astype("timedelta64[s]")
        amount = np.round(rng.gamma(2.0, spend[who] / 2.0), 2)
        table = pa.table(
            {
                "order_id": pa.array([f"O{day:%Y%m%d}-{i:06d}" for i in range(n)]),
                "customer_id": pa.array(ids[who]),
                "order_ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
                "amount": pa.array(amount).cast(pa.decimal128(12, 2), safe=False),
                "items": pa.array(1 + rng.poisson(amount / 30.0), pa.int32()),
            }
        )
        folder = lake / "silver" / "orders" / f"ds={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-00000.parquet")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started, result.stdout


def served(argv: list[str], env: dict[str, str], socket_path: Path) -> tuple[float, str]:
    """Wall time and output of `churnflow <argv>` forked from the step server, as the local
    runner runs it."""
    from churnflow.step_server import start_step

    started = time.perf_counter()
    with tempfile.TemporaryFile() as output, Path(os.devnull).open("rb") as devnull:
        stdio = (devnull.fileno(), output.fileno(), output.fileno())
        code = start_step(socket_path, argv, env, Path.cwd(), stdio).wait()
        wall = time.perf_counter() - started
        output.seek(0)
        text = output.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{argv[:3]} failed:\n{text[-3000:]}")
    return wall, text


def spark_day(ds: date, env: dict[str, str], repeats: int) -> tuple[float, float, str]:
    """Median wall time of `churnflow features --ds` forked from the step server and in fresh
    processes (reruns are idempotent), and the step's own account of its dbt nodes."""
    argv = ["features", "--ds", ds.isoformat()]
    socket_path = Path(env["CHURNFLOW_STEP_SERVER"])
    forked = [served(argv, env, socket_path) for _ in range(repeats)]
    fresh = [timed(["churnflow", *argv], env)[0] for _ in range(repeats)]
    breakdown = next(
        (line for line in forked[-1][1].splitlines() if line.startswith("dbt build")), ""
    )
    return statistics.median(w for w, _ in forked), statistics.median(fresh), breakdown


def engine_day(
    dialect: str, silver: Path, ds: date, out: Path, env: dict[str, str], *, repeats: int
) -> tuple[float, float]:
    """Median wall time of a fresh process computing the features of `ds` from scratch with one
    engine, and of its query alone."""
    query = features_sql(silver, ds, dialect)
    walls, computes = [], []
    for _ in range(repeats):
        wall, stdout = timed([sys.executable, "-c", DIALECTS[dialect].probe, query, str(out)], env)
        walls.append(wall)
        computes.append(json.loads(stdout.strip().splitlines()[-1])["compute_s"])
    return statistics.median(walls), statistics.median(computes)


def compare(lake: Path, ds: date, other: Path) -> str:
    spark = pq.read_table(lake / "features" / "customer_features" / f"ds={ds}").to_pandas()
    duck = pq.read_table(other).to_pandas()
    spark, duck = (
        spark.set_index("customer_id").sort_index(),
        duck.set_index("customer_id").sort_index(),
    )
    if not spark.index.equals(duck.index):
        return f"DIFFERENT customers: spark {len(spark)}, duckdb {len(duck)}"
    worst = 0.0
    for column in (
        "orders_7d",
        "orders_90d",
        "orders_365d",
        "amount_30d",
        "amount_365d",
        "days_since_last_order",
    ):
        worst = max(
            worst, float((spark[column].astype(float) - duck[column].astype(float)).abs().max())
        )
    return f"same {len(spark):,} customers; largest difference on checked columns {worst:.6f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    day_90, day_365 = START + timedelta(days=90), START + timedelta(days=365)
    with tempfile.TemporaryDirectory(prefix="churnflow-bench-features-") as home:
        config = throwaway_config(Path(home))
        lake = config.lake
        write_silver(lake, args.orders, args.customers, days=366)
        try:
            os.environ.setdefault("CHURNFLOW_SPARK_DRIVER_MEMORY", "6g")
            env = {**os.environ, **up(config, ("spark", "steps"))}
            env["CHURNFLOW_DBT_STATE_DIR"] = str(Path(home) / "dbt")
            results = []
            for label, ds in (("90 days", day_90), ("365 days", day_365)):
                # The days before `ds` as earlier daily runs left them: one catch-up build.
                catch_up, _ = timed(
                    ["churnflow", "features", "--ds", (ds - timedelta(1)).isoformat()], env
                )
                spark_wall, spark_fresh, breakdown = spark_day(ds, env, args.repeats)
                duck_file = Path(home) / f"duckdb-{ds}.parquet"
                silver = lake / "silver" / "orders"
                duck_wall, duck_compute = engine_day(
                    "duckdb", silver, ds, duck_file, env, repeats=args.repeats
                )
                alone_folder = Path(home) / f"spark-alone-{ds}"
                _, alone = engine_day("spark", silver, ds, alone_folder, env, repeats=args.repeats)
                results.append(
                    (
                        label,
                        ds,
                        catch_up,
                        spark_wall,
                        spark_fresh,
                        duck_wall,
                        duck_compute,
                        compare(lake, ds, duck_file),
                        breakdown,
                        alone,
                        compare(lake, ds, alone_folder),
                    )
                )
        finally:
            down(config, log=lambda _: None)
    print(
        f"\n{args.orders:,} silver orders over 366 days, {args.customers:,} customers; "
        f"median of {args.repeats} runs each\n"
    )
    header = (
        "history", "ds", "spark s", "duckdb s", "ratio", "spark fresh s", "duckdb query s",
        "spark query s", "ratio", "catch-up s",
    )  # fmt: skip
    print("{:9} {:11} {:>8} {:>9} {:>6} {:>14} {:>15} {:>14} {:>6} {:>11}".format(*header))
    for row in results:
        (label, ds, catch_up, spark_wall, spark_fresh, duck_wall, duck_compute, check, dbt,
         alone, alone_check) = row  # fmt: skip
        print(
            f"{label:9} {ds!s:11} {spark_wall:8.1f} {duck_wall:9.1f} "
            f"{spark_wall / duck_wall:5.1f}x {spark_fresh:14.1f} {duck_compute:15.1f} "
            f"{alone:14.1f} {alone / duck_compute:5.1f}x {catch_up:11.1f}"
        )
        print(f"          outputs: {check}\n          spark step: {dbt}")
        print(f"          one Spark statement: {alone_check}")
    print(
        "\nspark s: `churnflow features --ds D` (dbt build on a warm Spark Connect server),"
        " forked from the step server as the local runner runs it, until it exits;"
        "\nspark fresh s: the same in a fresh process (imports included);"
        "\nduckdb s: a fresh python process computing the same features from scratch and"
        " writing Parquet;"
        "\nspark query s: the same features as one Spark SQL statement from scratch on the warm"
        " server (no dbt, tests, GX audit or publish): the engine's floor for the day, against"
        " duckdb query s;"
        "\ncatch-up s: the one-off build of all days before D"
        " (not part of a daily run)."
    )


if __name__ == "__main__":
    main()
