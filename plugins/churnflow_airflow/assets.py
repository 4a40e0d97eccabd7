"""Airflow Assets that churnflow DAGs publish; downstream DAGs schedule on the same objects."""

from __future__ import annotations

from airflow.sdk import Asset

CUSTOMER_FEATURES = Asset(
    name="customer_features",
    uri="churnflow://lake/features/customer_features",
    group="churnflow",
    extra={"partitioned_by": "ds", "format": "parquet"},
)

# An event per promotion decision of `churnflow promote` (extra: as_of). The gate exits 0
# whether or not it moved `champion`: the event says a decision was recorded, the decision
# itself is on the model version in MLflow.
CHURN_MODEL = Asset(
    name="churn_model",
    uri="churnflow://mlflow/models/churn",
    group="churnflow",
    extra={"registered_model": "churn", "aliases": "challenger,champion"},
)

# An event per scored day (extra: ds, partition), emitted once the day's predictions passed
# the scoring step's audit and were published.
CHURN_PREDICTIONS = Asset(
    name="churn_predictions",
    uri="churnflow://lake/predictions/churn",
    group="churnflow",
    extra={"partitioned_by": "ds", "format": "parquet"},
)
