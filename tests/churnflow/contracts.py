"""The lake's data contracts as Arrow schemas, for tests that write or check partitions."""

from __future__ import annotations

import pyarrow as pa

WINDOWS = (7, 30, 90, 365)

SILVER_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("order_ts", pa.timestamp("us", tz="UTC")),
        ("amount", pa.decimal128(12, 2)),
        ("items", pa.int32()),
    ]
)

FEATURES_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("tenure_days", pa.int32()),
        ("days_since_last_order", pa.int32()),
        *((f"orders_{n}d", pa.int64()) for n in WINDOWS),
        *((f"amount_{n}d", pa.float64()) for n in WINDOWS),
        ("items_90d", pa.int64()),
        ("avg_order_value_90d", pa.float64()),
        ("mean_gap_days", pa.float64()),
        ("trend_orders_30_90", pa.float64()),
        ("trend_amount_30_90", pa.float64()),
        ("country", pa.string()),
        ("channel", pa.string()),
        ("signup_date", pa.date32()),
    ]
)
