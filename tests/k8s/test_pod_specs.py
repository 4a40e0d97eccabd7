"""Every step of every DAG, rendered as the pod the API server would receive, is valid.

No cluster here: the exact pod is built the way KubernetesPodOperator builds it at run time
(templates rendered for a sample day, then `build_pod_request_obj(dry_run=True)`), serialised
to the API's camelCase JSON and validated against the official schema of the two newest
Kubernetes versions that kubernetes-validate ships.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pendulum
import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG
from kubernetes.client import ApiClient

from churnflow_airflow.profiles import PROFILES
from churnflow_airflow.steps import SecretRef, step
from tests.dags.conftest import KUBERNETES_ENV, environment, load_dagbag

SAMPLE_DS = "2026-03-01"
K8S_VERSIONS = sorted(
    kubernetes_validate.utils.all_versions(), key=lambda v: tuple(map(int, v.split(".")))
)[-2:]

BAG = load_dagbag(KUBERNETES_ENV)
POD_STEPS = [
    (dag_id, task.task_id)
    for dag_id, dag in sorted(BAG.dags.items())
    for task in dag.tasks
    if isinstance(task, KubernetesPodOperator)
]


def render_pod(task: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pod of `task` for SAMPLE_DS (and run `params`), as the JSON the API server receives."""
    dag = task.dag
    run_id = f"scheduled__{SAMPLE_DS}T00:00:00+00:00"
    ti = SimpleNamespace(
        dag_id=dag.dag_id,
        task_id=task.task_id,
        run_id=run_id,
        try_number=1,
        map_index=-1,
    )
    context = {
        "ds": SAMPLE_DS,
        "ds_nodash": SAMPLE_DS.replace("-", ""),
        "logical_date": pendulum.parse(SAMPLE_DS),
        "run_id": run_id,
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "params": {**dag.params.dump(), **(params or {})},  # the run's: defaults, then overrides
        "var": {"json": {}, "value": {}},  # no Airflow Variables set
    }
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    pod = task.build_pod_request_obj(context, dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


def validate(pod: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_there_are_pod_steps_to_check() -> None:
    assert POD_STEPS
    assert len(K8S_VERSIONS) == 2


@pytest.mark.parametrize(("dag_id", "task_id"), POD_STEPS)
def test_every_step_renders_a_valid_hardened_pod(dag_id: str, task_id: str) -> None:
    with environment(KUBERNETES_ENV):
        pod = render_pod(BAG.dags[dag_id].get_task(task_id))
    validate(pod)
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert container["name"] == "base"
    assert container["image"].startswith("registry.example.com/ml/churnflow-")
    assert not container["image"].endswith(":latest")
    assert SAMPLE_DS in container["args"] or all("{{" not in arg for arg in container["args"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])
    assert {"requests", "limits"} <= set(container["resources"])
    labels = pod["metadata"]["labels"]
    assert labels["dag_id"] == dag_id and labels["task_id"] == task_id
    assert labels["churnflow.io/ds"] == SAMPLE_DS and "run_id" in labels
    env = {e["name"]: e for e in container["env"]}
    assert env["CHURNFLOW_LAKE"]["value"] == KUBERNETES_ENV["CHURNFLOW_LAKE"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_renders_a_valid_pod_with_its_resources(profile: str) -> None:
    with environment(KUBERNETES_ENV), DAG(f"probe_{profile}", schedule=None):
        task = step(
            f"probe_{profile}",
            image="train" if profile == "gpu" else "spark",
            argv=["churnflow", "--version"],
            profile=profile,
            secrets=[SecretRef("SLACK_BOT_TOKEN", key="slack-token")],
        )
        pod = render_pod(task)
    validate(pod)
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert container["resources"]["limits"] == PROFILES[profile].limits()
    env = {e["name"]: e for e in container["env"]}
    secret_ref = env["SLACK_BOT_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert secret_ref == {"name": "churnflow-secrets", "key": "slack-token"}
    assert "value" not in env["SLACK_BOT_TOKEN"]
    if profile == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
