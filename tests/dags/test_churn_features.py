"""churn_features: one feature build at a time across runs, under either runner."""

from __future__ import annotations

import pytest

from tests.dags.conftest import KUBERNETES_ENV, load_dagbag


@pytest.mark.parametrize("env", [None, KUBERNETES_ENV], ids=["local", "kubernetes"])
def test_builds_of_different_days_never_overlap(env: dict[str, str] | None) -> None:
    # dbt's staged tables are named per model in the metastore, so a backfill's build and the
    # scheduled run's build at the same time would drop each other's tables (seen in a
    # benchmark: TABLE_OR_VIEW_ALREADY_EXISTS, or a model reading the other day's table).
    dag = load_dagbag(env).dags["churn_features"]
    assert dag.get_task("build_features").max_active_tis_per_dag == 1
    assert dag.get_task("ingest_orders").max_active_tis_per_dag is None
