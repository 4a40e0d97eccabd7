from __future__ import annotations

import pytest

from churnflow.errors import ConfigError
from churnflow.lake import Lake
from churnflow.settings import Settings


def test_lake_defaults_to_a_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHURNFLOW_LAKE", raising=False)
    assert Lake(Settings().lake).root.name == "lake"


def test_file_uri_lake_is_a_local_folder(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CHURNFLOW_LAKE", f"file://{tmp_path}")
    assert Lake(Settings().lake).root == tmp_path


def test_an_object_store_lake_comes_from_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNFLOW_LAKE", "s3://bucket/lake")
    assert Lake(Settings().lake).uri == "s3a://bucket/lake"


def test_an_unknown_lake_scheme_is_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURNFLOW_LAKE", "gs://bucket/lake")
    with pytest.raises(ConfigError, match="CHURNFLOW_LAKE='gs://bucket/lake'"):
        Lake(Settings().lake)


def test_mlflow_uri_comes_from_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert Settings().mlflow_tracking_uri == "http://mlflow:5000"


def test_reject_share_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHURNFLOW_MAX_REJECT_SHARE", raising=False)
    assert Settings().max_reject_share == 0.01
    monkeypatch.setenv("CHURNFLOW_MAX_REJECT_SHARE", "0.05")
    assert Settings().max_reject_share == 0.05
    for bad in ("5%", "1.5"):
        monkeypatch.setenv("CHURNFLOW_MAX_REJECT_SHARE", bad)
        with pytest.raises(ValueError, match="max_reject_share"):
            Settings()
