"""The `kubernetes` runner: a step becomes a KubernetesPodOperator.

Everything that is the same for every pod of a profile (security context, scratch volume,
GPU placement) is in the profile's pod template; this module adds what is per step: image,
argv, resources, labels, environment and secret references.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from kubernetes.client import models as k8s

from churnflow_airflow.config import StepSettings
from churnflow_airflow.profiles import get_profile
from churnflow_airflow.steps import Step

BASE_CONTAINER = "base"


def pod_operator(
    spec: Step, settings: StepSettings, **operator_kwargs: Any
) -> KubernetesPodOperator:
    profile = get_profile(spec.profile)
    labels = {
        "app.kubernetes.io/name": "churnflow",
        "app.kubernetes.io/component": spec.task_id.replace("_", "-"),
        "churnflow.io/profile": profile.name,
        "churnflow.io/ds": "{{ ds }}",
    }
    secrets = [
        Secret("env", ref.env_var, ref.secret or settings.secret_name, ref.key)
        for ref in spec.secrets
    ]
    return KubernetesPodOperator(
        task_id=spec.task_id,
        name=spec.task_id.replace("_", "-"),
        namespace=settings.namespace,
        kubernetes_conn_id=settings.kubernetes_conn_id,
        image=settings.image(spec.image),
        image_pull_policy="IfNotPresent",
        cmds=[spec.argv[0]],
        arguments=list(spec.argv[1:]),
        env_vars={**settings.pod_env, **spec.env},
        secrets=secrets,
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
        deferrable=settings.deferrable,
        **operator_kwargs,
    )
