"""The Kubernetes manifests under include/k8s, checked strictly against the official schemas
that kubernetes-validate ships; nothing here needs a cluster.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from tests.k8s.deploy_files import (
    NAMESPACE,
    RBAC_FILE,
    SECRET_EXAMPLE_FILE,
    k8s_documents,
    newest_kubernetes_versions,
)

# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", newest_kubernetes_versions())
@pytest.mark.parametrize("path", [RBAC_FILE, SECRET_EXAMPLE_FILE], ids=lambda path: path.name)
def test_k8s_manifests_are_valid_for_the_newest_kubernetes_versions(
    path: Path, version: str
) -> None:
    documents = k8s_documents(path)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)
        assert document["metadata"]["namespace"] == NAMESPACE


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
    documents = k8s_documents(RBAC_FILE)
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
