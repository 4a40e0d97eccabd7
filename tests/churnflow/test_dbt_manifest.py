"""The dbt project is parsed once and its manifest reused: that is only right while nothing in
the project reads a run's var at parse time, and while an edit to the project parses again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from churnflow.dbt_manifest import load_or_parse, project_key
from churnflow.features import DbtSettings

PROJECT = DbtSettings.from_env().project_dir


def run_vars(ds: str, staging_root: str, state_from_yesterday: bool) -> dict[str, Any]:
    return {
        "ds": ds,
        "lake": "file:///lake",
        "staging_root": staging_root,
        "published_schema": "features",
        "state_from_yesterday": state_from_yesterday,
        "raw_customers": "csv",
        "lake_partitions": {},
    }


def settings(project: Path, state: Path) -> DbtSettings:
    return DbtSettings(project_dir=project, state_dir=state)


def configs(manifest: Any) -> dict[str, dict[str, Any]]:
    """Every node's rendered config and upstream nodes: what a parse fixes for all later runs.
    (Macros are looked up by name when a node compiles, so which ones a parse saw is not.)"""
    return {
        unique_id: {"config": node.config.to_dict(), "depends_on": node.depends_on.nodes}
        for unique_id, node in manifest.nodes.items()
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("dbt") / "project"
    shutil.copytree(PROJECT, copy, ignore=shutil.ignore_patterns("target", "logs"))
    return copy


def test_no_config_or_dependency_depends_on_the_runs_vars(project: Path, tmp_path: Path) -> None:
    first = load_or_parse(
        settings(project, tmp_path / "a"),
        run_vars("2026-01-01", "file:///lake/features/.staging-a", True),
    )
    second = load_or_parse(
        settings(project, tmp_path / "b"),
        run_vars("2026-07-15", "file:///lake/features/.staging-b", False),
    )
    assert configs(first) == configs(second)
    assert first.flat_graph["sources"], "the on-run-start hook reads the sources from the graph"


def test_a_kept_manifest_is_reused_and_an_edit_parses_again(project: Path, tmp_path: Path) -> None:
    kept_in = settings(project, tmp_path)
    dbt_vars = run_vars("2026-01-01", "file:///lake/features/.staging", True)
    parsed = load_or_parse(kept_in, dbt_vars)
    kept = list((tmp_path / "manifests").glob("manifest-*.pickle"))
    assert len(kept) == 1
    reused = load_or_parse(kept_in, dbt_vars)
    assert configs(reused) == configs(parsed)
    # The lookups dbt builds lazily work on the reused copy (a plain pickle of dbt 1.11's
    # Manifest shifts them into the wrong fields).
    assert reused.ref_lookup.find("customer_state", None, None, reused) is not None

    key = project_key(project, "local")
    model = project / "models" / "features" / "customer_state.sql"
    model.write_text(model.read_text() + "\n-- an edit\n")
    assert project_key(project, "local") != key
    load_or_parse(kept_in, dbt_vars)
    assert len(list((tmp_path / "manifests").glob("manifest-*.pickle"))) == 2
