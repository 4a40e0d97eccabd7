"""State folders for throw-away stacks, outside pytest's own temporary root.

The embedded PostgreSQL runs as its own system user when the tests run as root, so every
folder above its data directory must stay traversable. pytest resets its temporary root to
mode 0700 whenever a pytest session starts, which would cut a running server off its data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def stack_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="churnflow-e2e-"))
    try:
        yield home / "state"
    finally:
        if not os.environ.get("CHURNFLOW_KEEP_E2E"):  # set it to read a failed run's logs
            shutil.rmtree(home, ignore_errors=True)
