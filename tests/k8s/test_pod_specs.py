"""Every step of every DAG, rendered as the pod the API server would receive, is valid.

No cluster here: the exact pod is built the way KubernetesPodOperator builds it at run time
(templates rendered for a sample day, then `build_pod_request_obj(dry_run=True)`), serialised
to the API's camelCase JSON and validated against the official schema of the two newest
Kubernetes versions that kubernetes-validate ships.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pendulum
import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG
from kubernetes.client import ApiClient

from churnflow_airflow.profiles import PROFILES
from churnflow_airflow.steps import SecretRef, step
from tests.dags.conftest import KUBERNETES_ENV, environment, load_dagbag, worker_context

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


def render_pod(task: Any, params: dict[str, Any] | None = None, **run: Any) -> dict[str, Any]:
    """The pod of `task` as the JSON the API server receives.

    Rendered in the context a worker builds for a run: by default the scheduled run of
    SAMPLE_DS (with run `params` as its conf); `run` describes another (`worker_context`).
    A copy of the task is rendered: rendering replaces the templates of the one it is given.
    """
    task = copy.deepcopy(task)
    if not run:
        day = pendulum.parse(SAMPLE_DS)
        run = {
            "run_type": "scheduled",
            "run_after": day.add(days=1),
            "logical_date": day,
            "data_interval": (day, day.add(days=1)),
        }
    context = worker_context(task, conf=params, **run)
    context["var"] = {"json": {}, "value": {}}  # no Airflow Variables set
    task.render_template_fields(context, jinja_env=task.dag.get_template_env())
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
    assert env["CHURNFLOW_IMAGE"]["value"] == container["image"]  # recorded by the task side


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


def test_the_training_pod_runs_on_a_gpu_node_from_the_train_image() -> None:
    with environment(KUBERNETES_ENV):
        pod = render_pod(BAG.dags["churn_training"].get_task("train_models"))
    validate(pod)
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert container["image"] == "registry.example.com/ml/churnflow-train:0.1.0"
    assert container["command"] == ["churnflow"]
    assert container["args"][:3] == ["train", "--as-of", SAMPLE_DS]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CHURNFLOW_IMAGE"] == container["image"]
    assert env["MLFLOW_TRACKING_URI"] == KUBERNETES_ENV["MLFLOW_TRACKING_URI"]


def test_a_manual_run_without_a_logical_date_renders_valid_pods() -> None:
    """Airflow 3 runs triggered without a logical date have no `ds` in their context."""
    dag = BAG.dags["churn_training"]
    run = {"run_type": "manual", "run_after": pendulum.datetime(2026, 3, 4, 14, tz="UTC")}
    for task_id in ("build_training_set", "train_models", "promote_challenger"):
        with environment(KUBERNETES_ENV):
            pod = render_pod(dag.get_task(task_id), **run)
        validate(pod)
        (container,) = pod["spec"]["containers"]
        assert container["args"][1:3] == ["--as-of", "2026-03-03"], task_id
        assert pod["metadata"]["labels"]["churnflow.io/ds"] == ""
