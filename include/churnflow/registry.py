"""The MLflow side of the churn model: the server, the registered model and its aliases.

Training, the promotion gate and scoring reach MLflow only through here, so the names
(experiment, registered model, aliases, tag keys) and the reachability rule are defined once.
MLflow's client retries an unreachable server for minutes with backoff; `connect` asks the
server's `/health` once with a short timeout instead, so a step fails in seconds with the URL
in the message and the exit code that lets the runner retry (75).
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

EXPERIMENT = "churn"
# One run per execution of batch scoring: which version scored which day, when, and why.
SCORING_EXPERIMENT = "churn_scoring"
MODEL_NAME = "churn"
CHALLENGER, CHAMPION = "challenger", "champion"
HEALTH_TIMEOUT_S = 5.0

# Tags on runs and model versions (one spelling for the writer and every reader).
TAG_AS_OF = "churnflow.as_of"
TAG_MODEL_TYPE = "churnflow.model_type"
TAG_REASON = "churnflow.reason"
TAG_DATASET_DIGEST = "churnflow.training_set.digest"
TAG_DATASET_URI = "churnflow.training_set.uri"
TAG_IMAGE = "churnflow.image"
TAG_GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own key: the UI shows it on the run
TAG_PARENT_RUN = "churnflow.training_run"
TAG_DS = "churnflow.ds"


def _health(uri: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        problem = f"HTTP {err.code}"
    except (OSError, urllib.error.URLError) as err:
        problem = str(getattr(err, "reason", err))
    raise ServiceUnavailableError(
        f"the MLflow tracking server at {uri} does not answer ({url}: {problem}); start it "
        "(`make up`) or point MLFLOW_TRACKING_URI at a running server"
    )


def connect(uri: str) -> MlflowClient:
    """A client of the tracking server at `uri`, after checking the server answers."""
    import mlflow

    if uri.startswith(("http://", "https://")):
        _health(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def version_by_alias(client: MlflowClient, alias: str) -> ModelVersion | None:
    """The version of `churn` an alias points to; None when the alias (or model) is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def version_uri(version: ModelVersion | str) -> str:
    """`models:/churn/<n>`: a fixed version, never an alias that may move mid-step."""
    number = version if isinstance(version, str) else version.version
    return f"models:/{MODEL_NAME}/{number}"


def load_version(version: ModelVersion | str) -> Any:
    """The pyfunc of one version (its `predict` gives the churn probability per row)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(version_uri(version))


def provenance() -> dict[str, str]:
    """Which code and image ran: CHURNFLOW_GIT_COMMIT (baked into images) or the checkout's
    HEAD, and CHURNFLOW_IMAGE (set by the pod runner) or `local`."""
    commit = os.environ.get("CHURNFLOW_GIT_COMMIT", "")
    if not commit:
        repo = Path(__file__).resolve().parents[2]
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"
    return {TAG_GIT_COMMIT: commit, TAG_IMAGE: os.environ.get("CHURNFLOW_IMAGE", "local")}
