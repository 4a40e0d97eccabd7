"""The Kubernetes manifests under include/k8s, checked strictly against the official schemas
that kubernetes-validate ships, and for what the schemas cannot see: RBAC limits, labels that
services select, ports, and the Spark settings shared with the task package. Nothing here
needs a cluster.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from churnflow.spark import S3A_SETTINGS, SESSION_SETTINGS
from tests.k8s.deploy_files import (
    K8S_MANIFESTS,
    LAKE_PVC_FILE,
    NAMESPACE,
    PYPROJECT_FILE,
    RBAC_FILE,
    SECRET_EXAMPLE_FILE,
    SPARK_CONNECT_FILE,
    k8s_documents,
    newest_kubernetes_versions,
    spark_defaults,
)

SPARK_CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"

# --- helpers -------------------------------------------------------------------------------


def spark_connect() -> dict[tuple[str, str], dict[str, Any]]:
    """spark-connect.yaml by (kind, name)."""
    return {
        (doc["kind"], doc["metadata"]["name"]): doc for doc in k8s_documents(SPARK_CONNECT_FILE)
    }


def spark_conf() -> dict[str, str]:
    return spark_connect()[("ConfigMap", "churnflow-spark-conf")]["data"]


def server_pod() -> dict[str, Any]:
    return spark_connect()[("Deployment", "spark-connect")]["spec"]["template"]


def executor_pod() -> dict[str, Any]:
    return yaml.safe_load(spark_conf()["executor-pod-template.yaml"])


def volume_path(pod_spec: dict[str, Any], container: dict[str, Any], source: str) -> dict:
    """{claim or ConfigMap name: mount path} of a container's volumes of kind `source`."""
    volumes = {v["name"]: v[source] for v in pod_spec["volumes"] if source in v}
    name_key = "claimName" if source == "persistentVolumeClaim" else "name"
    return {
        volumes[mount["name"]][name_key]: mount["mountPath"]
        for mount in container["volumeMounts"]
        if mount["name"] in volumes
    }


def project_version() -> str:
    return tomllib.loads(PYPROJECT_FILE.read_text())["project"]["version"]


# --- every manifest ------------------------------------------------------------------------


def test_every_manifest_file_is_checked() -> None:
    names = {path.name for path in K8S_MANIFESTS}
    assert {RBAC_FILE.name, SECRET_EXAMPLE_FILE.name, SPARK_CONNECT_FILE.name} <= names
    assert LAKE_PVC_FILE.name in names
    assert {f"pod-template-{profile}.yaml" for profile in ("cpu", "spark", "gpu")} <= names


@pytest.mark.parametrize("version", newest_kubernetes_versions())
@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=lambda path: path.name)
def test_k8s_manifests_are_valid_for_the_newest_kubernetes_versions(
    path: Path, version: str
) -> None:
    documents = k8s_documents(path)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)
        if document["kind"] == "Pod":  # a pod template: the runner gives the namespace
            assert "namespace" not in document["metadata"]
        else:
            assert document["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", newest_kubernetes_versions())
def test_the_executor_pod_template_is_a_valid_pod(version: str) -> None:
    kubernetes_validate.validate(executor_pod(), version, strict=True)


# --- RBAC ----------------------------------------------------------------------------------


def test_airflow_service_account_may_only_manage_pods_in_its_namespace() -> None:
    documents = k8s_documents(RBAC_FILE)
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    assert ("ServiceAccount", "churnflow-airflow") in by_kind
    [role] = [doc for doc in documents if doc["kind"] == "Role"]
    granted = {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if rule["apiGroups"] == [""]
    }
    pod_verbs = {"create", "get", "list", "watch", "delete", "patch"}
    expected = {("pods", verb) for verb in pod_verbs}
    expected |= {("pods/log", "get"), ("pods/log", "list")}
    expected |= {("events", "list"), ("events", "watch")}
    assert expected <= granted
    # Nothing execs into a step pod: no XCom sidecar (do_xcom_push=False), no istio.
    assert not any(resource == "pods/exec" for resource, _ in granted)
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert not any("secrets" in rule["resources"] for rule in role["rules"])
    assert not any("*" in rule["verbs"] + rule["resources"] for rule in role["rules"])
    assert not any(doc["kind"].startswith("Cluster") for doc in documents)
    [binding] = [doc for doc in documents if doc["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "churnflow-airflow", "namespace": NAMESPACE}
    ]


def test_task_service_account_gets_no_token_and_no_role() -> None:
    documents = [doc for path in K8S_MANIFESTS for doc in k8s_documents(path)]
    [task] = [
        doc
        for doc in documents
        if doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == "churnflow-task"
    ]
    assert task["automountServiceAccountToken"] is False
    bound = [
        subject["name"]
        for doc in documents
        if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for subject in doc["subjects"]
    ]
    assert "churnflow-task" not in bound


def test_spark_driver_may_only_manage_its_executors_in_its_namespace() -> None:
    manifest = spark_connect()
    assert not any(kind.startswith("Cluster") for kind, _ in manifest)
    role = manifest[("Role", "churnflow-spark-driver")]
    assert role["metadata"]["namespace"] == NAMESPACE
    granted = {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert {resource for resource, _ in granted} <= {"pods", "configmaps", "services"}
    for resource in ("pods", "configmaps"):  # executor pods and their settings' ConfigMap
        needed = {"create", "get", "list", "watch", "delete"}
        assert {(resource, verb) for verb in needed} <= granted, resource
    assert not any("*" in rule["verbs"] + rule["resources"] for rule in role["rules"])
    assert not any(verb in {"escalate", "bind", "impersonate"} for _, verb in granted)
    binding = manifest[("RoleBinding", "churnflow-spark-driver")]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "churnflow-spark-driver",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "churnflow-spark", "namespace": NAMESPACE}
    ]
    # Spark's calls on what the Role leaves out are switched off.
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    assert conf["spark.kubernetes.driver.service.deleteOnTermination"] == "false"
    assert conf["spark.kubernetes.driver.ownPersistentVolumeClaim"] == "false"
    assert conf["spark.kubernetes.driver.reusePersistentVolumeClaim"] == "false"


def test_only_the_driver_holds_an_api_token() -> None:
    manifest = spark_connect()
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    assert ("ServiceAccount", "churnflow-spark") in manifest
    assert server_pod()["spec"]["serviceAccountName"] == "churnflow-spark"
    assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] == "churnflow-spark"
    # Executors call no API: the token-less task account, and no token mounted.
    assert conf["spark.kubernetes.authenticate.executor.serviceAccountName"] == "churnflow-task"
    assert executor_pod()["spec"]["automountServiceAccountToken"] is False


# --- Spark Connect -------------------------------------------------------------------------


def test_the_server_gets_every_session_setting_of_the_task_package() -> None:
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    for key, value in SESSION_SETTINGS.items():
        assert conf.get(key) == value, key


def test_the_servers_s3a_settings_are_the_task_packages() -> None:
    """A task pod's own Spark and the server read an object store the same way."""
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    shared = sorted(
        key for key in conf if key.startswith("spark.hadoop.fs.s3a.") and key in S3A_SETTINGS
    )
    assert "spark.hadoop.fs.s3a.aws.credentials.provider" in shared
    for key in shared:
        assert conf[key] == S3A_SETTINGS[key], key


def test_the_server_runs_spark_connect_on_kubernetes_in_this_namespace() -> None:
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    assert conf["spark.master"] == "k8s://https://kubernetes.default.svc"
    assert conf["spark.submit.deployMode"] == "client"
    assert conf["spark.kubernetes.namespace"] == NAMESPACE
    assert int(conf["spark.executor.instances"]) >= 1
    assert {"spark.executor.cores", "spark.executor.memory"} <= set(conf)
    assert conf["spark.hadoop.fs.s3a.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    (container,) = server_pod()["spec"]["containers"]
    assert container["command"] == ["spark-submit"]
    args = container["args"]
    assert args[args.index("--class") + 1] == SPARK_CONNECT_CLASS
    assert args[-1] == "spark-internal"
    env = {e["name"]: e for e in container["env"]}
    # spark-submit reads spark-defaults.conf from the mounted ConfigMap.
    conf_dir = volume_path(server_pod()["spec"], container, "configMap")["churnflow-spark-conf"]
    assert env["SPARK_CONF_DIR"]["value"] == conf_dir
    assert conf["spark.kubernetes.executor.podTemplateFile"].startswith(f"{conf_dir}/")
    # $(POD_NAME) makes the driver's pod the owner of its executors.
    assert "spark.kubernetes.driver.pod.name=$(POD_NAME)" in args
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_the_server_is_launched_as_the_local_stack_launches_it() -> None:
    from devstack.services import StackConfig, spark_connect_argv

    local = spark_connect_argv(StackConfig.from_env({}))
    (container,) = server_pod()["spec"]["containers"]
    assert local[0].endswith("/spark-submit") and container["command"] == ["spark-submit"]
    assert local[local.index("--class") + 1] == SPARK_CONNECT_CLASS
    assert local[-1] == container["args"][-1]


def test_the_deployment_runs_a_pinned_image_as_a_non_root_user() -> None:
    deployment = spark_connect()[("Deployment", "spark-connect")]
    assert deployment["spec"]["replicas"] == 1
    pod = server_pod()["spec"]
    (container,) = pod["containers"]
    image = container["image"]
    name, _, tag = image.rpartition(":")
    assert name.endswith("/churnflow-spark")
    assert tag and tag != "latest"
    assert tag == project_version(), "the image tag is the release `make images` builds"
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    assert conf["spark.kubernetes.container.image"] == image, "executors run the driver's image"
    for security in (pod["securityContext"], executor_pod()["spec"]["securityContext"]):
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 1000  # the image's user (images/spark/Dockerfile)
    for each in (container, executor_pod()["spec"]["containers"][0]):
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert "/tmp" in {mount["mountPath"] for mount in each["volumeMounts"]}
    assert {"requests", "limits"} <= set(container["resources"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] in ("spark-connect", 15002), probe


def test_services_select_the_server_pod_and_target_its_ports() -> None:
    manifest = spark_connect()
    deployment = manifest[("Deployment", "spark-connect")]
    labels = server_pod()["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = server_pod()["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    services = [doc for (kind, _), doc in manifest.items() if kind == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"spark-connect", "spark-connect-driver"}
    executor_labels = executor_pod()["metadata"]["labels"]
    for service in services:
        selector = service["spec"]["selector"]
        assert selector.items() <= labels.items(), service["metadata"]["name"]
        assert not selector.items() <= executor_labels.items(), "executors are no endpoints"
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), port
    connect = manifest[("Service", "spark-connect")]
    [port] = connect["spec"]["ports"]
    assert port["port"] == 15002
    assert ports.get(port["targetPort"], port["targetPort"]) == 15002
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    assert conf["spark.connect.grpc.binding.port"] == "15002"


def test_executors_reach_the_driver_through_its_headless_service() -> None:
    driver = spark_connect()[("Service", "spark-connect-driver")]
    assert driver["spec"]["clusterIP"] == "None"
    assert driver["spec"]["publishNotReadyAddresses"] is True
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    assert conf["spark.driver.host"] == f"spark-connect-driver.{NAMESPACE}.svc"
    (container,) = server_pod()["spec"]["containers"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    service_ports = {port["targetPort"]: port["port"] for port in driver["spec"]["ports"]}
    for key in ("spark.driver.port", "spark.driver.blockManager.port"):
        port = int(conf[key])
        assert port in container_ports.values(), key
        assert port in service_ports.values(), key


def test_executors_start_from_the_template_and_its_script() -> None:
    conf = spark_defaults(spark_conf()["spark-defaults.conf"])
    pod = executor_pod()["spec"]
    (container,) = pod["containers"]
    assert conf["spark.kubernetes.executor.podTemplateContainerName"] == container["name"]
    conf_dir = volume_path(pod, container, "configMap")["churnflow-spark-conf"]
    script = container["command"][-1]
    assert script == f"{conf_dir}/executor.sh"
    assert "KubernetesExecutorBackend" in spark_conf()["executor.sh"]
    script_text = spark_conf()["executor.sh"]
    syntax = subprocess.run(
        ["bash", "-n"], input=script_text, capture_output=True, text=True, check=False
    )
    assert syntax.returncode == 0, syntax.stderr
    # Spark takes a volume named spark-local-dir-* as its local dir instead of adding one.
    [local_dir] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert local_dir["name"].startswith("spark-local-dir-")


def test_the_server_and_its_executors_mount_the_lake_claim_at_one_path() -> None:
    [claim] = k8s_documents(LAKE_PVC_FILE)
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == "churnflow-lake"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in claim["spec"], "the cluster names its RWX class"
    assert "ReadWriteMany" in LAKE_PVC_FILE.read_text() and "EFS" in LAKE_PVC_FILE.read_text()
    pods = [server_pod()["spec"], executor_pod()["spec"]]
    paths = {
        volume_path(pod, pod["containers"][0], "persistentVolumeClaim")["churnflow-lake"]
        for pod in pods
    }
    assert paths == {"/data/lake"}


def test_the_server_and_its_executors_get_the_lake_keys_by_reference() -> None:
    for pod in (server_pod()["spec"], executor_pod()["spec"]):
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        for name, key in (
            ("AWS_ACCESS_KEY_ID", "aws-access-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-access-key"),
        ):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"] == {
                "name": "churnflow-secrets",
                "key": key,
                "optional": True,  # a folder lake's deployment has no keys
            }


# --- the example Secret --------------------------------------------------------------------


def test_example_secret_holds_only_placeholder_values() -> None:
    [secret] = k8s_documents(SECRET_EXAMPLE_FILE)
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "churnflow-secrets"
    assert "data" not in secret, "use stringData so nobody mistakes base64 for protection"
    assert set(secret["stringData"]) == {
        "slack-token",
        "aws-access-key-id",
        "aws-secret-access-key",
        "mlflow-tracking-password",
    }
    for key, value in secret["stringData"].items():
        assert value.startswith("PLACEHOLDER"), f"{key} looks like a real value"
    assert "kubectl" in SECRET_EXAMPLE_FILE.read_text()


def test_the_secret_holds_the_lake_keys_the_step_factory_references() -> None:
    from churnflow_airflow.steps import OBJECT_STORE_SECRETS

    [secret] = k8s_documents(SECRET_EXAMPLE_FILE)
    assert {ref.key for ref in OBJECT_STORE_SECRETS} <= set(secret["stringData"])
    assert {ref.env_var for ref in OBJECT_STORE_SECRETS} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
