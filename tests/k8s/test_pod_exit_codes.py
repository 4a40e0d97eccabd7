"""Under the kubernetes runner a step's exit code means what it means under the local one.

No cluster: the finished pod the API server would report is built from the kubernetes
client's own models and handed to the mapping `StepPodOperator.cleanup` applies to the
provider's failure (cleanup is where the provider fails a task in both the sync and the
deferrable mode; outside a cluster it cannot run, it reads the pod back from the API).
"""

from __future__ import annotations

import os

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s

from churnflow_airflow.kubernetes_runner import (
    StepPodOperator,
    container_exit_code,
    pod_step_failure,
)
from churnflow_airflow.steps import step
from tests.dags.conftest import KUBERNETES_ENV, environment

# What KubernetesPodOperator.cleanup raises for a pod that did not succeed.
PROVIDER_FAILURE = AirflowException("Pod ingest-orders-abc returned a failure.")


def finished_pod(exit_code: int, container: str = "base") -> k8s.V1Pod:
    terminated = k8s.V1ContainerStateTerminated(exit_code=exit_code, reason="Error")
    status = k8s.V1ContainerStatus(
        name=container,
        image="registry.example.com/ml/churnflow-spark:0.1.0",
        image_id="",
        ready=False,
        restart_count=0,
        state=k8s.V1ContainerState(terminated=terminated),
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="ingest-orders-abc", namespace="churnflow"),
        status=k8s.V1PodStatus(
            phase="Succeeded" if exit_code == 0 else "Failed", container_statuses=[status]
        ),
    )


def test_every_step_of_the_kubernetes_runner_is_a_step_pod_operator() -> None:
    with environment(KUBERNETES_ENV), DAG("probe", schedule=None):
        operator = step("ingest_orders", image="spark", argv=["churnflow", "ingest", "--ds", "x"])
    assert isinstance(operator, StepPodOperator)
    assert StepPodOperator.cleanup is not KubernetesPodOperator.cleanup
    assert operator.do_xcom_push is False


@pytest.mark.parametrize("code", [os.EX_DATAERR, os.EX_CONFIG])
def test_data_and_config_error_exit_codes_fail_a_pod_step_without_retry(code: int) -> None:
    failure = pod_step_failure(PROVIDER_FAILURE, finished_pod(code))
    assert isinstance(failure, AirflowFailException)
    assert "returned a failure" in str(failure) and f"exit code: {code}" in str(failure)


@pytest.mark.parametrize("code", [os.EX_TEMPFAIL, 1, 137])
def test_engine_failures_crashes_and_kills_of_a_pod_step_are_retried(code: int) -> None:
    failure = pod_step_failure(PROVIDER_FAILURE, finished_pod(code))
    assert type(failure) is AirflowException


def test_a_pod_that_never_ran_its_container_is_retried() -> None:
    pending = k8s.V1Pod(status=k8s.V1PodStatus(phase="Failed", reason="Evicted"))
    assert type(pod_step_failure(PROVIDER_FAILURE, pending)) is AirflowException


def test_the_exit_code_is_read_from_the_base_container_only() -> None:
    assert container_exit_code(finished_pod(65)) == 65
    assert container_exit_code(finished_pod(65, container="sidecar")) is None
    assert container_exit_code(k8s.V1Pod(status=k8s.V1PodStatus(phase="Pending"))) is None
