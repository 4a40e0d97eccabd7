"""Every step of every DAG, rendered as the pod the API server would receive, is valid.

No cluster here: the exact pod is built the way KubernetesPodOperator builds it at run time
(templates rendered for a sample day, then `build_pod_request_obj(dry_run=True)`), serialised
to the API's camelCase JSON and validated against the official schema of the two newest
Kubernetes versions that kubernetes-validate ships.

Both lakes a cluster can have are rendered: the object store of KUBERNETES_ENV (credentials by
secret reference, no volume) and a folder on the shared volume of include/k8s/lake-pvc.yaml
with the Spark Connect server of include/k8s/spark-connect.yaml (the claim mounted in every
pod, SPARK_REMOTE in the Spark pods only).
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

from churnflow_airflow.config import ConfigurationError, load_settings
from churnflow_airflow.profiles import PROFILES
from churnflow_airflow.steps import SecretRef, step
from tests.dags.conftest import KUBERNETES_ENV, environment, load_dagbag, worker_context
from tests.k8s.deploy_files import LAKE_PVC_FILE, SPARK_CONNECT_FILE, k8s_documents

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
LAKE_KEYS = {
    "AWS_ACCESS_KEY_ID": "aws-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key",
}


def shared_volume_env() -> dict[str, str]:
    """The Airflow settings of a deployment with the manifests' lake claim and Spark server."""
    [claim] = k8s_documents(LAKE_PVC_FILE)
    manifest = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents(SPARK_CONNECT_FILE)}
    server = manifest[("Deployment", "spark-connect")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in server["volumes"]}
    [mount_path] = [
        mount["mountPath"]
        for mount in server["containers"][0]["volumeMounts"]
        if volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName")
        == claim["metadata"]["name"]
    ]
    service = manifest[("Service", "spark-connect")]
    [port] = service["spec"]["ports"]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    return {
        **KUBERNETES_ENV,
        "CHURNFLOW_LAKE": mount_path,
        "CHURNFLOW_LAKE_PVC": claim["metadata"]["name"],
        "CHURNFLOW_SPARK_REMOTE": f"sc://{name}.{namespace}.svc:{port['port']}",
    }


SHARED_VOLUME_ENV = shared_volume_env()


@pytest.fixture(scope="module")
def shared_volume_bag() -> Any:
    return load_dagbag(SHARED_VOLUME_ENV)


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
    profiles = {
        BAG.dags[dag_id].get_task(task_id).labels["churnflow.io/profile"]
        for dag_id, task_id in POD_STEPS
    }
    assert "spark" in profiles and profiles - {"spark"}, "both sides of SPARK_REMOTE are seen"


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
    # An object-store lake: its keys by reference, no volume, Spark in the pod.
    for name, key in LAKE_KEYS.items():
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "churnflow-secrets", "key": key}
    assert "lake" not in {volume["name"] for volume in spec["volumes"]}
    assert "SPARK_REMOTE" not in env


@pytest.mark.parametrize(("dag_id", "task_id"), POD_STEPS)
def test_with_a_shared_volume_every_pod_mounts_the_lake_and_spark_pods_share_one_engine(
    shared_volume_bag: Any, dag_id: str, task_id: str
) -> None:
    with environment(SHARED_VOLUME_ENV):
        pod = render_pod(shared_volume_bag.dags[dag_id].get_task(task_id))
    validate(pod)
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    lake = SHARED_VOLUME_ENV["CHURNFLOW_LAKE"]
    assert {"name": "lake", "mountPath": lake} in container["volumeMounts"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    claim = {"claimName": SHARED_VOLUME_ENV["CHURNFLOW_LAKE_PVC"]}
    assert {"name": "lake", "persistentVolumeClaim": claim} in spec["volumes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CHURNFLOW_LAKE"]["value"] == lake
    assert not LAKE_KEYS.keys() & env.keys(), "a folder lake needs no keys"
    if pod["metadata"]["labels"]["churnflow.io/profile"] == "spark":
        assert env["SPARK_REMOTE"]["value"] == SHARED_VOLUME_ENV["CHURNFLOW_SPARK_REMOTE"]
    else:
        assert "SPARK_REMOTE" not in env


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


def test_the_object_store_lake_gets_its_region_and_endpoint_from_the_settings() -> None:
    settings = {
        **KUBERNETES_ENV,
        "CHURNFLOW_LAKE_AWS_REGION": "eu-central-1",
        "CHURNFLOW_LAKE_AWS_ENDPOINT_URL": "http://minio.storage.svc:9000",
    }
    with environment(settings), DAG("probe_s3", schedule=None):
        task = step(
            "probe_s3",
            image="spark",
            argv=["churnflow", "--version"],
            # A step that names a lake key itself keeps its own reference.
            secrets=[SecretRef("AWS_ACCESS_KEY_ID", key="other-key", secret="other")],
        )
        pod = render_pod(task)
    validate(pod)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["AWS_REGION"]["value"] == "eu-central-1"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "other",
        "key": "other-key",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == (
        "aws-secret-access-key"
    )
    names = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"CHURNFLOW_LAKE": "/data/lake"}, ["CHURNFLOW_LAKE='/data/lake'", "CHURNFLOW_LAKE_PVC"]),
        (
            {"CHURNFLOW_LAKE": "data/lake", "CHURNFLOW_LAKE_PVC": "churnflow-lake"},
            ["CHURNFLOW_LAKE_PVC='churnflow-lake'", "absolute folder", "'data/lake'"],
        ),
        (
            {"CHURNFLOW_LAKE": "s3a://churn-lake/prod", "CHURNFLOW_LAKE_PVC": "churnflow-lake"},
            ["CHURNFLOW_LAKE='s3a://churn-lake/prod'", "unset CHURNFLOW_LAKE_PVC"],
        ),
        ({"CHURNFLOW_LAKE": "gs://churn-lake/prod"}, ["CHURNFLOW_LAKE='gs://churn-lake/prod'"]),
        (
            {"CHURNFLOW_SPARK_REMOTE": "sc://spark-connect.churnflow.svc:15002"},
            ["CHURNFLOW_SPARK_REMOTE=", "CHURNFLOW_LAKE='s3a://churn-lake/prod'"],
        ),
        (
            {
                "CHURNFLOW_LAKE": "/data/lake",
                "CHURNFLOW_LAKE_PVC": "churnflow-lake",
                "CHURNFLOW_SPARK_REMOTE": "spark-connect:15002",
            },
            ["CHURNFLOW_SPARK_REMOTE='spark-connect:15002'", "sc://"],
        ),
    ],
    ids=[
        "folder-without-volume",
        "relative-folder-on-volume",
        "object-store-with-volume",
        "unknown-scheme",
        "spark-remote-with-object-store",
        "spark-remote-not-spark-connect",
    ],
)
def test_lake_and_spark_settings_pods_cannot_use_are_refused_at_parse_time(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], names: list[str]
) -> None:
    for name in ("CHURNFLOW_LAKE_PVC", "CHURNFLOW_SPARK_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**KUBERNETES_ENV, **settings}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    for name in names:
        assert name in str(raised.value)


def test_a_file_uri_lake_is_mounted_at_its_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SHARED_VOLUME_ENV, "CHURNFLOW_LAKE": "file:///data/lake/"}.items():
        monkeypatch.setenv(name, value)
    with DAG("probe_file_lake", schedule=None):
        pod = render_pod(step("probe", image="spark", argv=["churnflow", "--version"]))
    validate(pod)
    assert {"name": "lake", "mountPath": "/data/lake"} in pod["spec"]["containers"][0][
        "volumeMounts"
    ]
