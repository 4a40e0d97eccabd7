"""Fixtures shared by the task-package tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def classic_spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One classic local session for a test module, with its own Derby folder.

    Modules that need it say `pytestmark = pytest.mark.usefixtures("classic_spark")`; the session
    is stopped when the module ends, so the next module starts from a clean metastore.
    """
    from churnflow.spark import get_spark

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURNFLOW_SPARK_DIR", str(tmp_path_factory.mktemp("spark")))
        patch.delenv("SPARK_REMOTE", raising=False)
        get_spark.cache_clear()
        session = get_spark()
        yield session
        session.stop()
        get_spark.cache_clear()
