"""One declaration, two runners: the factory's choices and its refusals."""

from __future__ import annotations

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from churnflow_airflow.config import ConfigurationError, is_object_store, load_settings
from churnflow_airflow.local_runner import LocalStepOperator
from churnflow_airflow.profiles import PROFILES
from churnflow_airflow.steps import SecretRef, step
from tests.dags.conftest import KUBERNETES_ENV, load_dagbag

ARGV = ["churnflow", "check-landing", "--ds", "{{ ds }}"]
PROFILE_LABEL = "churnflow.io/profile"


@pytest.fixture
def kubernetes_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNFLOW_RUNNER", "kubernetes")
    monkeypatch.setenv("CHURNFLOW_IMAGE_REGISTRY", "registry.example.com/ml")
    monkeypatch.setenv("CHURNFLOW_IMAGE_TAG", "0.1.0")
    monkeypatch.setenv("CHURNFLOW_LAKE", "s3a://churn-lake/prod")


def test_local_is_the_default_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHURNFLOW_RUNNER", raising=False)
    operator = step("check_landing", image="spark", argv=ARGV)
    assert isinstance(operator, LocalStepOperator)
    assert operator.argv == ARGV


def test_kubernetes_runner_builds_a_pod_with_the_same_argv(kubernetes_env: None) -> None:
    operator = step("check_landing", image="spark", argv=ARGV, profile="spark")
    assert isinstance(operator, KubernetesPodOperator)
    assert [*operator.cmds, *operator.arguments] == ARGV
    assert operator.image == "registry.example.com/ml/churnflow-spark:0.1.0"
    assert operator.pod_template_file.endswith("include/k8s/pod-template-spark.yaml")
    assert operator.on_finish_action.value == "delete_pod"
    assert operator.get_logs is True


def test_deferrable_pods_when_configured(
    kubernetes_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURNFLOW_K8S_DEFERRABLE", "true")
    assert step("check_landing", image="spark", argv=ARGV).deferrable is True


@pytest.mark.parametrize("tag", ["", "latest"])
def test_kubernetes_runner_refuses_unpinned_image_tags(
    kubernetes_env: None, monkeypatch: pytest.MonkeyPatch, tag: str
) -> None:
    monkeypatch.setenv("CHURNFLOW_IMAGE_TAG", tag)
    with pytest.raises(ConfigurationError, match="CHURNFLOW_IMAGE_TAG"):
        step("check_landing", image="spark", argv=ARGV)


def test_kubernetes_runner_needs_a_lake_the_pods_can_reach(
    kubernetes_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHURNFLOW_LAKE")
    with pytest.raises(ConfigurationError, match="CHURNFLOW_LAKE"):
        step("check_landing", image="spark", argv=ARGV)


def test_unknown_runner_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNFLOW_RUNNER", "docker")
    with pytest.raises(ConfigurationError, match="CHURNFLOW_RUNNER='docker'"):
        load_settings()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": "gpu-box"}, "unknown image"),
        ({"image": "spark", "profile": "huge"}, "unknown resource profile"),
        ({"image": "spark", "argv": []}, "argv is empty"),
    ],
)
def test_bad_step_declarations_fail_at_parse_time(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step("bad", **{"argv": ARGV, **kwargs})


def test_secrets_become_secret_references_not_values(kubernetes_env: None) -> None:
    operator = step(
        "notify",
        image="spark",
        argv=["churnflow", "--version"],
        secrets=[SecretRef("SLACK_BOT_TOKEN", key="slack-token")],
    )
    # The object-store lake's keys come first, then the step's own.
    assert [(s.deploy_target, s.secret, s.key) for s in operator.secrets] == [
        ("AWS_ACCESS_KEY_ID", "churnflow-secrets", "aws-access-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "churnflow-secrets", "aws-secret-access-key"),
        ("SLACK_BOT_TOKEN", "churnflow-secrets", "slack-token"),
    ]


def test_both_runners_give_spark_steps_the_configured_spark_connect_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHURNFLOW_RUNNER", raising=False)
    monkeypatch.setenv("CHURNFLOW_SPARK_REMOTE", "sc://spark-connect.churnflow.svc:15002")
    spark = step("build_features", image="spark", argv=ARGV, profile="spark")
    light = step("check_landing", image="spark", argv=ARGV, profile="cpu")
    assert spark.env["SPARK_REMOTE"] == "sc://spark-connect.churnflow.svc:15002"
    assert "SPARK_REMOTE" not in light.env
    own = step("probe", image="spark", argv=ARGV, profile="spark", env={"SPARK_REMOTE": ""})
    assert own.env["SPARK_REMOTE"] == "", "a step's own env wins"


def test_an_object_store_lake_makes_its_keys_secret_references_under_both_runners(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHURNFLOW_RUNNER", raising=False)
    monkeypatch.setenv("CHURNFLOW_LAKE", "s3://churn-lake/dev")
    monkeypatch.setenv("CHURNFLOW_LAKE_AWS_REGION", "eu-west-1")
    local = step("ingest_orders", image="spark", argv=ARGV)
    assert local.secrets == ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    assert local.env["AWS_REGION"] == "eu-west-1"
    assert "AWS_ACCESS_KEY_ID" not in local.env
    monkeypatch.setenv("CHURNFLOW_LAKE", "/tmp/lake")
    assert step("ingest_orders", image="spark", argv=ARGV).secrets == ()


def test_pods_with_their_own_cloud_identity_get_no_lake_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHURNFLOW_RUNNER", raising=False)
    monkeypatch.setenv("CHURNFLOW_LAKE", "S3://churn-lake/dev")
    monkeypatch.setenv("CHURNFLOW_LAKE_AWS_KEYS", "none")
    assert step("ingest_orders", image="spark", argv=ARGV).secrets == ()
    monkeypatch.setenv("CHURNFLOW_LAKE_AWS_KEYS", "vault")
    with pytest.raises(ConfigurationError, match="CHURNFLOW_LAKE_AWS_KEYS='vault'"):
        step("ingest_orders", image="spark", argv=ARGV)


@pytest.mark.parametrize(
    "lake", ["s3://b/x", "S3A://b/x", " s3a://b", "/data/lake", "file:///data/lake", "gs://b"]
)
def test_the_airflow_side_tells_an_object_store_lake_as_the_task_side_does(lake: str) -> None:
    from churnflow.lake import is_object_store_uri

    assert is_object_store(lake) == is_object_store_uri(lake)


POOL_SETTINGS = {"CHURNFLOW_SPARK_POOL": "spark", "CHURNFLOW_GPU_POOL": "gpu"}


@pytest.mark.parametrize("runner", ["local", "kubernetes"])
def test_spark_and_gpu_steps_wait_in_the_configured_pools_under_both_runners(
    kubernetes_env: None, monkeypatch: pytest.MonkeyPatch, runner: str
) -> None:
    monkeypatch.setenv("CHURNFLOW_RUNNER", runner)
    for name, pool in POOL_SETTINGS.items():
        monkeypatch.setenv(name, pool)
    assert step("build_features", image="spark", argv=ARGV, profile="spark").pool == "spark"
    assert step("train_models", image="train", argv=ARGV, profile="gpu").pool == "gpu"
    assert step("check_landing", image="spark", argv=ARGV, profile="cpu").pool == "default_pool"
    own = step("score", image="spark", argv=ARGV, profile="spark", pool="scoring")
    assert own.pool == "scoring", "a pool passed to step() wins"


@pytest.mark.parametrize("runner", ["local", "kubernetes"])
def test_without_pool_settings_every_step_takes_the_default_pool(
    kubernetes_env: None, monkeypatch: pytest.MonkeyPatch, runner: str
) -> None:
    """A pool the deployment lacks is never scheduled: the local stack and e2e name none."""
    monkeypatch.setenv("CHURNFLOW_RUNNER", runner)
    for name in POOL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for profile in PROFILES:
        operator = step("probe", image="spark", argv=ARGV, profile=profile)
        assert operator.pool == "default_pool", profile


def test_dags_built_with_the_pool_settings_put_spark_and_gpu_tasks_in_their_pools() -> None:
    """Each step pod's label names its profile; tasks that are no step keep default_pool."""
    bag = load_dagbag({**KUBERNETES_ENV, **POOL_SETTINGS})
    assert bag.import_errors == {}
    seen = set()
    for dag in bag.dags.values():
        for task in dag.tasks:
            profile = (getattr(task, "labels", None) or {}).get(PROFILE_LABEL)
            seen.add(profile)
            expected = POOL_SETTINGS.get(f"CHURNFLOW_{str(profile).upper()}_POOL")
            assert task.pool == (expected or "default_pool"), f"{dag.dag_id}.{task.task_id}"
    assert {"cpu", "spark", "gpu"} <= seen
