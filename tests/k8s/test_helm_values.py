"""include/helm/airflow-values.yaml: the values of the official Airflow chart, checked against
a schema of the keys churnflow sets and against what the Airflow side reads.

The chart's own values.schema.json is not available offline. VALUES_SCHEMA follows the
chart's key names of the 1.18/1.19 line (its values.yaml) for every key the file sets, and
rejects unknown top-level keys, so a misspelt key fails here instead of being ignored by Helm.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from churnflow_airflow import config
from churnflow_airflow.profiles import PROFILES
from tests.k8s.deploy_files import (
    NAMESPACE,
    RBAC_FILE,
    REPO,
    SECRET_EXAMPLE_FILE,
    SECRET_NAME,
    URL_PASSWORD,
    k8s_documents,
    lock_version,
)

HELM_DIR = REPO / "include" / "helm"
VALUES_FILE = HELM_DIR / "airflow-values.yaml"
POOLS_FILE = HELM_DIR / "pools.json"
CONFIG_MODULE = REPO / "plugins" / "churnflow_airflow" / "config.py"
AIRFLOW_IMAGE_REQUIREMENTS = REPO / "images" / "airflow" / "requirements.in"

# Every top-level key of the chart's values.yaml (1.18/1.19).
CHART_TOP_LEVEL_KEYS = {
    "fullnameOverride", "nameOverride", "useStandardNaming", "revisionHistoryLimit", "devMode",
    "uid", "gid", "securityContext", "securityContexts", "containerLifecycleHooks",
    "airflowHome", "defaultAirflowRepository", "defaultAirflowTag", "defaultAirflowDigest",
    "airflowVersion", "images", "nodeSelector", "affinity", "tolerations",
    "topologySpreadConstraints", "schedulerName", "labels", "imagePullSecrets", "ingress",
    "networkPolicies", "airflowPodAnnotations", "airflowConfigAnnotations",
    "airflowLocalSettings", "rbac", "executor", "allowPodLaunching", "allowJobLaunching", "env",
    "volumes", "volumeMounts", "secret", "enableBuiltInSecretEnvVars", "priorityClasses",
    "extraSecrets", "extraConfigMaps", "extraEnv", "extraEnvFrom", "data", "fernetKey",
    "fernetKeySecretName", "fernetKeySecretAnnotations", "apiSecretKey", "apiSecretAnnotations",
    "apiSecretKeySecretName", "jwtSecret", "jwtSecretAnnotations", "jwtSecretName",
    "webserverSecretKey", "webserverSecretAnnotations", "webserverSecretKeySecretName",
    "kerberos", "workers", "scheduler", "createUserJob", "migrateDatabaseJob", "apiServer",
    "webserver", "triggerer", "dagProcessor", "flower", "statsd", "pgbouncer", "redis",
    "registry", "elasticsearch", "opensearch", "ports", "quotas", "limits", "cleanup",
    "postgresql", "config", "multiNamespaceMode", "podTemplate", "dags", "logs",
}  # fmt: skip
# The chart's keys that would carry a secret's value: only their *SecretName forms may be set.
LITERAL_SECRET_KEYS = {"fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey"}
# The key the chart reads in each Secret it is given by name.
CHART_SECRET_KEYS = {
    "fernetKeySecretName": "fernet-key",
    "apiSecretKeySecretName": "api-secret-key",
    "jwtSecretName": "jwt-secret",
}

K8S_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
PINNED_TAG = {"type": "string", "minLength": 1, "not": {"const": "latest"}}
SERVICE_ACCOUNT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "automountServiceAccountToken": {"type": "boolean"},
        "create": {"type": "boolean"},
        "name": K8S_NAME,
        "annotations": {"type": "object"},
    },
}
ENABLED = {
    "type": "object",
    "properties": {"enabled": {"type": "boolean"}},
    "required": ["enabled"],
}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}},
}
CONTAINER_EXTRAS = {
    "extraVolumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
    "extraVolumeMounts": {
        "type": "array",
        "items": {"type": "object", "required": ["name", "mountPath"]},
    },
    "extraInitContainers": {
        "type": "array",
        "items": {"type": "object", "required": ["name", "image"]},
    },
}
# airflow.cfg sections: the chart templates every value as a string.
CONFIG_SECTION = {"type": "object", "additionalProperties": {"type": "string"}}

VALUES_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "propertyNames": {"enum": sorted(CHART_TOP_LEVEL_KEYS)},
    "required": [
        "executor",
        "airflowVersion",
        "images",
        "dags",
        "postgresql",
        "data",
        "fernetKeySecretName",
        "apiSecretKeySecretName",
        "jwtSecretName",
        "env",
        "secret",
        "config",
        "workers",
    ],
    "properties": {
        "executor": {"const": "KubernetesExecutor"},
        "airflowVersion": {"type": "string", "pattern": r"^3\.\d+\.\d+$"},
        "defaultAirflowRepository": {"type": "string"},
        "defaultAirflowTag": PINNED_TAG,
        "images": {
            "type": "object",
            "properties": {
                "airflow": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["repository", "tag"],
                    "properties": {
                        "repository": {"type": "string"},
                        "tag": PINNED_TAG,
                        "digest": {"type": ["string", "null"]},
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    },
                }
            },
        },
        "dags": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mountPath": {"type": ["string", "null"]},
                "persistence": ENABLED,
                "gitSync": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "repo": {"type": "string"},
                        "branch": {"type": "string"},
                        "subPath": {"type": "string"},
                        "credentialsSecret": K8S_NAME,
                    },
                },
            },
        },
        "postgresql": ENABLED,
        "data": {
            "type": "object",
            "additionalProperties": False,
            "required": ["metadataSecretName"],
            "properties": {"metadataSecretName": K8S_NAME},
        },
        "fernetKeySecretName": K8S_NAME,
        "apiSecretKeySecretName": K8S_NAME,
        "jwtSecretName": K8S_NAME,
        "webserverSecretKeySecretName": K8S_NAME,
        "multiNamespaceMode": {"type": "boolean"},
        "scheduler": {
            "type": "object",
            "properties": {"serviceAccount": SERVICE_ACCOUNT, "resources": RESOURCES},
        },
        "workers": {
            "type": "object",
            "properties": {"serviceAccount": SERVICE_ACCOUNT, "resources": RESOURCES},
        },
        "triggerer": {
            "type": "object",
            "properties": {"serviceAccount": SERVICE_ACCOUNT, "persistence": ENABLED},
        },
        "webserver": {
            "type": "object",
            "properties": {"defaultUser": ENABLED},
        },
        "apiServer": {
            "type": "object",
            "properties": {"serviceAccount": SERVICE_ACCOUNT, **CONTAINER_EXTRAS},
        },
        "redis": ENABLED,
        "logs": {"type": "object", "properties": {"persistence": ENABLED}},
        "config": {"type": "object", "additionalProperties": CONFIG_SECTION},
        # The chart takes a (templated) string of more env entries: EXTRA_ENV_SCHEMA is its YAML.
        "extraEnv": {"type": "string"},
        "secret": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["envName", "secretName", "secretKey"],
                "properties": {
                    "envName": {"type": "string", "pattern": r"^[A-Z_][A-Z0-9_]*$"},
                    "secretName": K8S_NAME,
                    "secretKey": {"type": "string"},
                },
            },
        },
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "value"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Z_][A-Z0-9_]*$"},
                    "value": {"type": "string"},
                },
            },
        },
    },
}

# The entries of `extraEnv`: churnflow puts there only what `secret:` cannot say, a reference to
# a key the deployment may lack (`optional`, which the chart's `secret:` entries do not have).
EXTRA_ENV_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "valueFrom"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Z_][A-Z0-9_]*$"},
            "valueFrom": {
                "type": "object",
                "additionalProperties": False,
                "required": ["secretKeyRef"],
                "properties": {
                    "secretKeyRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "key", "optional"],
                        "properties": {
                            "name": K8S_NAME,
                            "key": {"type": "string", "minLength": 1},
                            "optional": {"const": True},
                        },
                    }
                },
            },
        },
    },
}

# Names an Airflow-side setting gives to a Secret; its value is a name, not a secret.
SECRET_REFERENCE_SETTINGS = {"CHURNFLOW_K8S_SECRET"}
# What the kubernetes runner cannot do without in a cluster, default or not: the default
# image registry (none: Docker Hub), tag (none), lake (none) and MLflow (localhost) are wrong
# there, and the pods' namespace, account and Secret must be the ones include/k8s creates.
DEPLOYMENT_SETTINGS = {
    "CHURNFLOW_RUNNER",
    "CHURNFLOW_IMAGE_REGISTRY",
    "CHURNFLOW_IMAGE_TAG",
    "CHURNFLOW_LAKE",
    "CHURNFLOW_K8S_NAMESPACE",
    "CHURNFLOW_K8S_SERVICE_ACCOUNT",
    "CHURNFLOW_K8S_SECRET",
    "MLFLOW_TRACKING_URI",
}


def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES_FILE.read_text())


def values_env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in values()["env"]}


def extra_env() -> list[dict[str, Any]]:
    """The env entries of `extraEnv`, a YAML string in the chart's values."""
    return yaml.safe_load(values().get("extraEnv") or "[]")


def secret_references() -> set[tuple[str, str, str, bool]]:
    """(env var, Secret, key, optional) of every secret value the Airflow containers get."""
    refs = {
        (item["envName"], item["secretName"], item["secretKey"], False)
        for item in values()["secret"]
    }
    for item in extra_env():
        ref = item["valueFrom"]["secretKeyRef"]
        refs.add((item["name"], ref["name"], ref["key"], ref["optional"]))
    return refs


def values_settings(monkeypatch: pytest.MonkeyPatch) -> config.StepSettings:
    """The Airflow-side settings as the values' env gives them, and nothing else."""
    for name in list(os.environ):
        if name.startswith("CHURNFLOW_") or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)
    for name, value in values_env().items():
        monkeypatch.setenv(name, value)
    return config.load_settings()


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path, last key, value) of every scalar in the values."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, f"{path}[{index}]")
    else:
        yield path, path.rsplit(".", 1)[-1], node


def airflow_side_settings() -> set[str]:
    """The CHURNFLOW_* variables that plugins/churnflow_airflow/config.py reads."""
    return set(re.findall(r'"(CHURNFLOW_[A-Z0-9_]+)"', CONFIG_MODULE.read_text()))


def rbac_service_accounts() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in k8s_documents(RBAC_FILE)
        if doc["kind"] == "ServiceAccount"
    }


# --- shape ---------------------------------------------------------------------------------


def test_values_follow_the_charts_keys_for_everything_churnflow_sets() -> None:
    jsonschema.validate(values(), VALUES_SCHEMA)


def test_extra_env_is_only_optional_secret_references() -> None:
    jsonschema.validate(extra_env(), EXTRA_ENV_SCHEMA)
    assert "{{" not in values().get("extraEnv", ""), "the chart renders extraEnv with tpl"


def test_the_schema_catches_a_misspelt_key() -> None:
    broken = {**values(), "exector": "KubernetesExecutor"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, VALUES_SCHEMA)


def test_airflow_runs_the_kubernetes_executor_on_an_external_database() -> None:
    data = values()
    assert data["executor"] == "KubernetesExecutor"
    assert data["postgresql"]["enabled"] is False
    assert data["data"]["metadataSecretName"]
    assert data["redis"]["enabled"] is False


def test_dags_are_baked_into_the_image_and_git_sync_is_the_documented_alternative() -> None:
    dags = values()["dags"]
    assert dags["persistence"]["enabled"] is False
    assert dags["gitSync"]["enabled"] is False
    commented = "\n".join(
        line.strip().removeprefix("#").strip()
        for line in VALUES_FILE.read_text().splitlines()
        if line.strip().startswith("#")
    )
    for key in ("enabled: true", "repo:", "branch:", "subPath: dags"):
        assert key in commented, f"the commented git-sync alternative lacks {key!r}"


# --- images --------------------------------------------------------------------------------


def test_every_airflow_pod_runs_the_churnflow_airflow_image_at_a_pinned_tag() -> None:
    data = values()
    env = values_env()
    repository = f"{env['CHURNFLOW_IMAGE_REGISTRY'].rstrip('/')}/churnflow-airflow"
    assert data["images"]["airflow"]["repository"] == repository
    assert data["defaultAirflowRepository"] == repository
    tags = {data["images"]["airflow"]["tag"], data["defaultAirflowTag"], env["CHURNFLOW_IMAGE_TAG"]}
    assert len(tags) == 1, f"the Airflow and step images must be one release: {tags}"
    assert tags != {"latest"}


def test_airflow_version_is_the_one_in_the_image() -> None:
    assert values()["airflowVersion"] == lock_version("apache-airflow")


# --- secrets -------------------------------------------------------------------------------


def test_values_hold_no_literal_secrets() -> None:
    data = values()
    present = LITERAL_SECRET_KEYS & set(data)
    assert not present, f"set {sorted(present)} as *SecretName references instead"
    for path, key, value in leaves(data):
        if isinstance(value, str):
            for match in URL_PASSWORD.finditer(value):
                pytest.fail(f"{path}: a URL embeds the password {match['password']!r}")
        reference = key.endswith(("SecretName", "secretName", "Secret", "secretKey", "_file"))
        if SECRET_NAME.search(key) and not reference and not isinstance(value, bool):
            pytest.fail(f"{path} holds a literal secret value")
    for item in data["env"]:
        if SECRET_NAME.search(item["name"]) and item["name"] not in SECRET_REFERENCE_SETTINGS:
            pytest.fail(f"env {item['name']} must come from a Secret (`secret:`), not a value")


def test_every_secret_the_values_name_is_documented_in_the_header() -> None:
    data = values()
    named = {(data[value], key) for value, key in CHART_SECRET_KEYS.items()}
    named.add((data["data"]["metadataSecretName"], "connection"))
    named |= {(secret, key) for _, secret, key, _ in secret_references()}
    passwords = Path(data["config"]["core"]["simple_auth_manager_passwords_file"]).name
    named |= {
        (volume["secret"]["secretName"], passwords)
        for volume in data["apiServer"]["extraVolumes"]
        if "secret" in volume
    }
    header = "\n".join(
        line for line in VALUES_FILE.read_text().splitlines() if line.startswith("#")
    )
    for name, key in named:
        pattern = rf"#\s+{re.escape(name)}\s+{re.escape(key)}\s"
        assert re.search(pattern, header), f"the header does not list the Secret {name} {key}"


def test_the_steps_secret_is_the_one_include_k8s_describes() -> None:
    example = k8s_documents(SECRET_EXAMPLE_FILE)[0]
    assert values_env()["CHURNFLOW_K8S_SECRET"] == example["metadata"]["name"]
    keys = set(example["stringData"])
    for env_var, secret, key, _ in secret_references():
        if secret == example["metadata"]["name"]:
            assert key in keys, (env_var, key)


def test_the_slack_token_is_optional_so_the_pods_start_without_it() -> None:
    """A missing key of a required reference keeps every Airflow pod from starting."""
    refs = {
        env_var: (secret, key, optional) for env_var, secret, key, optional in secret_references()
    }
    secret, key, optional = refs["CHURNFLOW_SLACK_TOKEN"]
    assert (secret, key) == (values_env()["CHURNFLOW_K8S_SECRET"], "slack-token")
    assert optional, "CHURNFLOW_SLACK_TOKEN must be an optional reference (extraEnv)"


# --- the Airflow-side settings --------------------------------------------------------------


def test_load_settings_accepts_the_values_for_the_kubernetes_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = values_env()
    settings = values_settings(monkeypatch)
    assert settings.runner is config.Runner.KUBERNETES
    registry = env["CHURNFLOW_IMAGE_REGISTRY"].rstrip("/")
    assert settings.image("spark") == f"{registry}/churnflow-spark:{env['CHURNFLOW_IMAGE_TAG']}"
    assert settings.image("train") == f"{registry}/churnflow-train:{env['CHURNFLOW_IMAGE_TAG']}"
    assert settings.lake == env["CHURNFLOW_LAKE"]


def test_the_values_set_every_setting_a_deployment_must_choose() -> None:
    missing = DEPLOYMENT_SETTINGS - set(values_env())
    assert not missing, f"the values leave {sorted(missing)} to a default that is wrong here"


def test_the_values_name_every_airflow_side_setting_set_or_commented() -> None:
    """The file is the list of what can be set; config.py's settings all appear in it."""
    text = VALUES_FILE.read_text()
    unnamed = sorted(name for name in airflow_side_settings() if name not in text)
    assert not unnamed, f"airflow-values.yaml does not mention {unnamed}"
    unknown = sorted(
        name
        for name in values_env()
        if name.startswith("CHURNFLOW_")
        and name not in airflow_side_settings()
        and name not in SECRET_REFERENCE_SETTINGS
    )
    assert not unknown, f"the Airflow side reads no {unknown}"


def test_the_commented_object_store_alternative_is_accepted_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commented env block: the lake in a bucket, Spark in each pod, no volume."""
    text = VALUES_FILE.read_text()
    alternative = dict(re.findall(r"#\s+- name: (CHURNFLOW_\w+)\n\s+#\s+value: (\S+)", text))
    assert {"CHURNFLOW_LAKE", "CHURNFLOW_LAKE_AWS_REGION"} <= set(alternative)
    assert alternative["CHURNFLOW_LAKE"].startswith("s3a://")
    for name in list(os.environ):
        if name.startswith("CHURNFLOW_"):
            monkeypatch.delenv(name)
    dropped = ("CHURNFLOW_LAKE", "CHURNFLOW_SPARK_REMOTE")
    env = {k: v for k, v in values_env().items() if not k.startswith(dropped)}
    env.update({k: v for k, v in alternative.items() if k.startswith("CHURNFLOW_LAKE")})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = config.load_settings()
    assert settings.object_store_lake and settings.lake_pvc is None


def test_the_airflow_pods_mount_the_lake_where_the_steps_do() -> None:
    data = values()
    env = values_env()
    [volume] = [v for v in data["volumes"] if v["name"] == "lake"]
    assert volume["persistentVolumeClaim"]["claimName"] == env["CHURNFLOW_LAKE_PVC"]
    [mount] = [m for m in data["volumeMounts"] if m["name"] == "lake"]
    assert mount["mountPath"] == env["CHURNFLOW_LAKE"]


# --- namespace and service accounts --------------------------------------------------------


def test_airflow_and_the_step_pods_use_the_service_accounts_of_include_k8s() -> None:
    data = values()
    accounts = rbac_service_accounts()
    for component in ("scheduler", "workers", "triggerer"):
        account = data[component]["serviceAccount"]
        assert account["create"] is False, f"{component}: the account comes from rbac.yaml"
        assert account["name"] in accounts, f"{component}: {account['name']} is not in rbac.yaml"
        assert accounts[account["name"]]["metadata"]["namespace"] == NAMESPACE
    task_account = values_env()["CHURNFLOW_K8S_SERVICE_ACCOUNT"]
    assert task_account in accounts
    assert accounts[task_account].get("automountServiceAccountToken") is False
    assert values_env()["CHURNFLOW_K8S_NAMESPACE"] == NAMESPACE
    assert data["multiNamespaceMode"] is False


# --- logs ----------------------------------------------------------------------------------


def test_task_logs_go_to_the_object_store_through_a_connection_from_a_secret() -> None:
    data = values()
    logging = data["config"]["logging"]
    assert logging["remote_logging"] == "True"
    assert logging["remote_base_log_folder"].startswith("s3://")
    conn_env = f"AIRFLOW_CONN_{logging['remote_log_conn_id'].upper()}"
    assert conn_env in {item["envName"] for item in data["secret"]}
    assert conn_env not in values_env()


def test_the_airflow_image_can_write_task_logs_to_s3() -> None:
    """S3 remote logging is the Amazon provider's; the image must install it."""
    listed = AIRFLOW_IMAGE_REQUIREMENTS.read_text().splitlines()
    wanted = {line.split("#", 1)[0].split("[", 1)[0].strip() for line in listed}
    assert "apache-airflow-providers-amazon" in wanted, (
        "remote_base_log_folder is s3://: add apache-airflow-providers-amazon to the lock and "
        "to images/airflow/requirements.in"
    )


# --- users ---------------------------------------------------------------------------------


def test_ui_passwords_come_from_a_secret_copied_where_the_auth_manager_writes() -> None:
    data = values()
    core = data["config"]["core"]
    assert core["auth_manager"].endswith("SimpleAuthManager")
    assert data["webserver"]["defaultUser"]["enabled"] is False
    passwords = Path(core["simple_auth_manager_passwords_file"])
    api = data["apiServer"]
    mounted = {mount["mountPath"]: mount["name"] for mount in api["extraVolumeMounts"]}
    volume = mounted.get(str(passwords.parent))
    assert volume, "the passwords file is on no volume of the api-server"
    (init,) = api["extraInitContainers"]
    assert init["command"][-1].rstrip("/") == str(passwords.parent)
    assert volume in {mount["name"] for mount in init["volumeMounts"]}


# --- pools ---------------------------------------------------------------------------------


def test_pools_file_is_what_airflow_pools_import_reads() -> None:
    pools = json.loads(POOLS_FILE.read_text())
    assert pools, "pools.json defines no pool"
    for name, pool in pools.items():
        assert set(pool) == {"slots", "description", "include_deferred"}, name
        assert isinstance(pool["slots"], int) and pool["slots"] >= 1, name
        assert isinstance(pool["include_deferred"], bool), name
        assert pool["description"], name
        assert name in PROFILES, f"pool {name} is named after no resource profile"


def test_every_pool_the_values_name_is_in_the_pools_file_and_every_pool_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task naming a pool Airflow lacks is never scheduled; a pool no step names limits
    nothing."""
    pools = set(json.loads(POOLS_FILE.read_text()))
    settings = values_settings(monkeypatch)
    named = {profile: settings.pool(profile) for profile in PROFILES if settings.pool(profile)}
    missing = sorted(set(named.values()) - pools)
    assert not missing, f"include/helm/pools.json lacks the pools {missing} the values name"
    unused = sorted(pools - set(named.values()))
    assert not unused, f"no profile's steps wait in the pools {unused}: name them in `env`"
