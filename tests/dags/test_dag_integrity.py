"""Every DAG parses, has no cycle, and carries the policy STYLE.md asks of it."""

from __future__ import annotations

import pytest

from tests.dags.conftest import KUBERNETES_ENV, dag_files, load_dagbag

LOCAL_BAG = load_dagbag()
DAG_IDS = sorted(LOCAL_BAG.dag_ids)


def test_the_dag_folder_has_dags() -> None:
    assert dag_files(), "no DAG files found"
    assert len(DAG_IDS) >= len(dag_files())


@pytest.mark.parametrize("env", [None, KUBERNETES_ENV], ids=["local", "kubernetes"])
def test_dag_files_import_without_errors(env: dict[str, str] | None) -> None:
    bag = load_dagbag(env)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == DAG_IDS


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_has_no_cycles(dag_id: str) -> None:
    dag = LOCAL_BAG.dags[dag_id]
    dag.check_cycle()
    assert len(dag.topological_sort()) == len(dag.tasks)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_carries_owner_tags_docs_retries_and_failure_callback(dag_id: str) -> None:
    dag = LOCAL_BAG.dags[dag_id]
    assert dag_id.startswith("churn_")
    assert dag.tags, "tags"
    assert dag.doc_md and len(dag.doc_md.strip()) > 80, "doc_md"
    assert dag.on_failure_callback, "DAG-level failure callback"
    for task in dag.tasks:
        assert task.owner == "ml-platform", task.task_id
        if hasattr(task, "argv") or hasattr(task, "cmds"):  # a step: engine failures retry
            assert task.retries >= 1, task.task_id
        assert task.on_failure_callback, task.task_id
        assert task.execution_timeout is not None, task.task_id


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_task_ids_are_verbs_in_snake_case(dag_id: str) -> None:
    for task in LOCAL_BAG.dags[dag_id].tasks:
        assert task.task_id == task.task_id.lower() and " " not in task.task_id
        assert "_" in task.task_id, f"{task.task_id}: expected verb_object"
