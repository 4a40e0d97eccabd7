"""Airflow Assets that churnflow DAGs publish; downstream DAGs schedule on the same objects."""

from __future__ import annotations

from airflow.sdk import Asset

CUSTOMER_FEATURES = Asset(
    name="customer_features",
    uri="churnflow://lake/features/customer_features",
    group="churnflow",
    extra={"partitioned_by": "ds", "format": "parquet"},
)
