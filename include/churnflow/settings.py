"""The one typed settings object of the task side, read from `CHURNFLOW_*` variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_REJECT_SHARE = 0.01


class Settings(BaseSettings):
    """Task-side configuration; every field has a local default so a laptop needs none."""

    # Empty variables count as unset: a DAG param left blank renders as "" in a step's env.
    model_config = SettingsConfigDict(
        env_prefix="CHURNFLOW_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    lake: str = Field(
        default=".churnflow/lake",
        description=(
            "Lake root: a folder or file:// URI (on a cluster, a ReadWriteMany volume mounted "
            "at the same path in every pod) or an object store, s3://bucket/prefix "
            "(credentials and endpoint from the standard AWS_* variables)."
        ),
    )
    mlflow_tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CHURNFLOW_MLFLOW_TRACKING_URI"),
    )

    max_reject_share: float = Field(
        default=DEFAULT_MAX_REJECT_SHARE,
        ge=0.0,
        le=1.0,
        description="Largest share of a day's raw orders that ingest may reject before it fails.",
    )
    accept_reason: str | None = Field(
        default=None,
        description=(
            "An operator's reason to publish a day that statistical checks flag (a run param); "
            "recorded beside the validation result. Contract breaks are never accepted."
        ),
    )

    label_horizon_days: int = Field(
        default=30,
        ge=1,
        description="Days after ds in which an active customer must order not to be churned at ds.",
    )
    training_snapshots: int = Field(
        default=12,
        ge=4,
        description=(
            "Feature snapshots in a training set's window, the newest at as-of minus the label "
            "horizon (fewer while the lake is younger than the window)."
        ),
    )
    training_snapshot_every_days: int = Field(
        default=7, ge=1, description="Days between two snapshots of the training window."
    )
    training_validation_snapshots: int = Field(
        default=2,
        ge=1,
        description="Snapshots before the holdout (the newest) that validate; older ones train.",
    )
    training_min_rows: int = Field(
        default=200,
        ge=1,
        description="Fewest examples each split (train, validation, holdout) needs.",
    )
    training_seed: int = Field(
        default=7, description="Seed of both model types: the same seed gives the same metrics."
    )
    training_max_epochs: int = Field(
        default=40,
        ge=1,
        description="Most epochs of the Lightning network (early stopping on validation loss).",
    )
    promotion_margin: float = Field(
        default=0.005,
        ge=0.0,
        description=(
            "PR AUC on the holdout by which a challenger must beat the champion (or, for the "
            "first model, the recency baseline) to be promoted."
        ),
    )
    promotion_slice_tolerance: float = Field(
        default=0.03,
        ge=0.0,
        description=(
            "Most a slice's holdout PR AUC (tenure, spend band, country) may fall below the "
            "champion's for the challenger to be promoted."
        ),
    )
    promotion_max_ece: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="Largest expected calibration error on the holdout a champion may have.",
    )
    rescore_with_champion: bool = Field(
        default=False,
        description=(
            "Score a day that was scored before with the current champion instead of the "
            "version its ledger entry records (a DAG param; `score --rescore-with-champion`)."
        ),
    )
    drift_reference_rows: int = Field(
        default=200_000,
        ge=100,
        description="Most training examples drift compares a day with (a seeded sample).",
    )
    drift_prediction_days: int = Field(
        default=7,
        ge=1,
        description="Days of earlier predictions a day's score distribution is compared with.",
    )
    drift_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Share of drifted feature columns at which a day calls for retraining.",
    )
    max_pr_auc_drop: float = Field(
        default=0.1,
        ge=0.0,
        description=(
            "Most the champion's realised PR AUC may fall below its holdout PR AUC before a "
            "day calls for retraining."
        ),
    )
    retraining_cooldown_days: int = Field(
        default=7,
        ge=0,
        description=(
            "Days after a drift-triggered retraining in which drift triggers none (one "
            "retraining per drift episode); a champion promoted since triggers within them only "
            "when its realised PR AUC fell past the limit."
        ),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
