"""The `kubernetes` runner: a step becomes a KubernetesPodOperator.

Everything that is the same for every pod of a profile (security context, scratch volume,
GPU placement) is in the profile's pod template; this module adds what is per step: image,
argv, resources, labels, environment and secret references. Every pod gets `CHURNFLOW_IMAGE`,
the full reference of the image it runs. With a folder lake every pod mounts the lake's
ReadWriteMany claim (`CHURNFLOW_LAKE_PVC`) at the lake's folder; an object-store lake needs
no volume, its credentials come by secret reference (`churnflow_airflow.config`).

`StepPodOperator` reads the exit code of the pod's base container and applies the rule the
local runner applies to a process (`churnflow_airflow.exit_codes`): 65 and 78 fail the task
without retries, anything else is retried. It also watches the step's log for its Data Docs
line (in the default, non-deferrable mode, where the provider passes log lines to callbacks).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.sdk.exceptions import AirflowException, AirflowSkipException
from kubernetes.client import models as k8s

from churnflow_airflow.config import StepSettings
from churnflow_airflow.data_docs import DataDocsWatcher
from churnflow_airflow.exit_codes import step_failure
from churnflow_airflow.profiles import get_profile
from churnflow_airflow.steps import Step

BASE_CONTAINER = "base"
LAKE_VOLUME = "lake"


def container_exit_code(pod: k8s.V1Pod | None, container: str = BASE_CONTAINER) -> int | None:
    """Exit code of a pod's terminated container; None when it has not terminated."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        if status.name == container and status.state and status.state.terminated:
            return status.state.terminated.exit_code
    return None


def pod_step_failure(
    err: AirflowException, remote_pod: k8s.V1Pod | None, container: str = BASE_CONTAINER
) -> AirflowException:
    """What a failed pod fails its task with: the provider's message, the exit code's rule."""
    code = container_exit_code(remote_pod, container)
    return step_failure(code, f"{err}\n{container} container exit code: {code}")


class _StepLogWatcher(KubernetesPodOperatorCallback):
    """Hands each line of the step's log to its operator (sync mode only)."""

    def __init__(self, operator: StepPodOperator, lake: str) -> None:
        self.operator = operator
        self.lake = lake

    def progress_callback(self, *, line: str, **kwargs: Any) -> None:  # type: ignore[override]
        self.operator.note_output(line, self.lake)


class StepPodOperator(DataDocsWatcher, KubernetesPodOperator):
    """A step's pod; its base container's exit code decides whether a failure is retried."""

    def __init__(self, *, lake: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lake = lake

    def execute(self, context: Any) -> Any:
        # Bound here, not in __init__: Airflow runs a copy of the parsed operator.
        watchers = [c for c in self.callbacks if not isinstance(c, _StepLogWatcher)]
        self.callbacks = [*watchers, _StepLogWatcher(self, self.lake)]
        return super().execute(context)

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict | None = None,
        context: Any = None,
    ) -> None:
        try:
            super().cleanup(pod, remote_pod, xcom_result=xcom_result, context=context)
        except AirflowSkipException:
            raise
        except AirflowException as err:
            raise pod_step_failure(err, remote_pod, self.base_container_name) from err


def lake_volume(settings: StepSettings) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    """The lake's claim and where the base container mounts it; nothing for an object store."""
    mount_path = settings.lake_mount_path
    if settings.lake_pvc is None or mount_path is None:
        return [], []
    claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=settings.lake_pvc)
    volume = k8s.V1Volume(name=LAKE_VOLUME, persistent_volume_claim=claim)
    return [volume], [k8s.V1VolumeMount(name=LAKE_VOLUME, mount_path=mount_path)]


def pod_operator(spec: Step, settings: StepSettings, **operator_kwargs: Any) -> StepPodOperator:
    profile = get_profile(spec.profile)
    labels = {
        "app.kubernetes.io/name": "churnflow",
        "app.kubernetes.io/component": spec.task_id.replace("_", "-"),
        "churnflow.io/profile": profile.name,
        # A manual run of Airflow 3 may have no logical date, and then no `ds`.
        "churnflow.io/ds": "{{ ds | default('') }}",
    }
    secrets = [
        Secret("env", ref.env_var, ref.secret or settings.secret_name, ref.key)
        for ref in spec.secrets
    ]
    image = settings.image(spec.image)
    volumes, volume_mounts = lake_volume(settings)
    return StepPodOperator(
        lake=settings.lake,
        task_id=spec.task_id,
        name=spec.task_id.replace("_", "-"),
        namespace=settings.namespace,
        kubernetes_conn_id=settings.kubernetes_conn_id,
        image=image,
        image_pull_policy="IfNotPresent",
        cmds=[spec.argv[0]],
        arguments=list(spec.argv[1:]),
        # The task side records the image it ran in (e.g. as an MLflow tag).
        env_vars={**spec.env, "CHURNFLOW_IMAGE": image},
        secrets=secrets,
        volumes=volumes,
        volume_mounts=volume_mounts,
        container_resources=k8s.V1ResourceRequirements(
            requests=profile.requests(), limits=profile.limits()
        ),
        pod_template_file=str(settings.template_dir / profile.template_name),
        base_container_name=BASE_CONTAINER,
        labels=labels,
        service_account_name=settings.service_account,
        get_logs=True,
        log_events_on_failure=True,
        on_finish_action="delete_pod",
        do_xcom_push=False,  # no XCom sidecar: nothing execs into the pod (RBAC has no pods/exec)
        deferrable=settings.deferrable,
        **operator_kwargs,
    )
