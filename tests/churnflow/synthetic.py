"""A small synthetic lake for the model-side tests: silver orders and customer_features
snapshots written straight to the lake's contracts (`tests/churnflow/contracts.py`) with
pyarrow, from a seeded population, so these tests need neither ingest nor dbt.

Customers start at different times, order at different daily rates, and some stop for good:
the ones who stop are the churners a model can learn to see coming (recency, frequency).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnflow.lake import CUSTOMER_FEATURES, SILVER_ORDERS, Lake
from churnflow.training_set import TrainingSetConfig
from tests.churnflow.contracts import FEATURES_SCHEMA, SILVER_SCHEMA, WINDOWS

COUNTRIES = ("DE", "FR", "NL")

# The window the model-side tests and benchmarks train in: orders from START, six weekly
# snapshots whose 30-day labels have matured by AS_OF (the holdout is the newest).
START, AS_OF = date(2026, 1, 1), date(2026, 5, 1)
SNAPSHOTS = [AS_OF - timedelta(days=30 + 7 * k) for k in range(5, -1, -1)]
TRAINING_WINDOW = TrainingSetConfig(
    horizon_days=30, snapshots=6, every_days=7, validation_snapshots=2, min_rows=100
)
CHANNELS = ("web", "app")


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def orders_of(customers: dict[str, list[date]]) -> pd.DataFrame:
    """Silver rows, one order per customer and listed day, noon UTC."""
    rows = [
        {
            "order_id": f"o-{day}-{customer}",
            "customer_id": customer,
            "day": day,
            "ordinal": day.toordinal(),
            "order_ts": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12),
            "amount": Decimal(10 + (sum(map(ord, customer)) * day.day) % 90) / 4,
            "items": 1 + day.day % 3,
        }
        for customer, ordered in customers.items()
        for day in ordered
    ]
    return pd.DataFrame(rows).sort_values(["day", "order_id"], ignore_index=True)


def population(first: date, last: date, *, seed: int = 5, size: int = 80,
               lifetime_days: float | None = None) -> dict[str, list[date]]:  # fmt: skip
    """Order days per customer over `first..last`.

    By default 40% of the customers stop for good between day 60 and 125; with
    `lifetime_days` every customer stops after an exponential lifetime of that mean instead, a
    constant hazard, so the churn rate is the same at every snapshot (what a model is trained
    for: the split by time then measures skill, not a drifting base rate).
    """
    rng = np.random.default_rng(seed)
    everyone: dict[str, list[date]] = {}
    calendar = days(first, last)
    for number in range(size):
        rate = rng.uniform(0.02, 0.25)
        begin = int(rng.integers(0, 60))
        if lifetime_days is not None:
            end = begin + int(rng.exponential(lifetime_days))
        else:
            end = int(rng.integers(60, 125)) if rng.random() < 0.4 else len(calendar)
        ordered = [day for day in calendar[begin:end] if rng.random() < rate]
        if ordered:
            everyone[f"c-{number:03d}"] = ordered
    return everyone


def features_at(orders: pd.DataFrame, day: date) -> pd.DataFrame:
    """customer_features at `day` from orders up to its end, for customers active on it."""
    past = orders[orders["day"] <= day].assign(
        age=lambda f: day.toordinal() - f["ordinal"], value=lambda f: f["amount"].astype(float)
    )
    active = past[past["customer_id"].isin(past.loc[past["age"] < 90, "customer_id"])]
    mine = active.groupby("customer_id")
    out = pd.DataFrame(index=pd.Index(sorted(mine.groups), name="customer_id"))
    for window in WINDOWS:
        recent = active[active["age"] < window].groupby("customer_id")
        out[f"orders_{window}d"] = recent.size().reindex(out.index, fill_value=0)
        out[f"amount_{window}d"] = recent["value"].sum().reindex(out.index, fill_value=0.0)
    first, last, count = mine["ordinal"].min(), mine["ordinal"].max(), mine.size()
    signup = first - 3
    out["tenure_days"] = day.toordinal() - signup
    out["days_since_last_order"] = day.toordinal() - last
    out["items_90d"] = active[active["age"] < 90].groupby("customer_id")["items"].sum()
    out["avg_order_value_90d"] = out["amount_90d"] / out["orders_90d"]
    out["mean_gap_days"] = ((last - first) / (count - 1)).where(count > 1)
    out["trend_orders_30_90"] = out["orders_30d"] / (out["orders_90d"] / 3)
    out["trend_amount_30_90"] = out["amount_30d"] / (out["amount_90d"] / 3)
    codes = [sum(map(ord, customer)) for customer in out.index]
    out["country"] = [COUNTRIES[code % len(COUNTRIES)] for code in codes]
    out["channel"] = [CHANNELS[code % len(CHANNELS)] for code in codes]
    out["signup_date"] = [date.fromordinal(int(n)) for n in signup]
    return out.reset_index()[FEATURES_SCHEMA.names]


def write_lake(root: Path, customers: dict[str, list[date]], *, first: date, last: date,
               snapshots: list[date]) -> pd.DataFrame:  # fmt: skip
    """Silver for every day `first..last`, customer_features for each of `snapshots`."""
    orders = orders_of(customers)
    lake = Lake(str(root))
    for day in days(first, last):
        rows = orders[orders["day"] == day][SILVER_SCHEMA.names]
        folder = lake.partition_path(SILVER_ORDERS, day)
        folder.mkdir(parents=True)
        table = pa.Table.from_pandas(rows, schema=SILVER_SCHEMA, preserve_index=False)
        pq.write_table(table, folder / "part-0.parquet")
    for day in snapshots:
        folder = lake.partition_path(CUSTOMER_FEATURES, day)
        folder.mkdir(parents=True)
        table = pa.Table.from_pandas(
            features_at(orders, day), schema=FEATURES_SCHEMA, preserve_index=False
        )
        pq.write_table(table, folder / "part-0.parquet")
    return orders
