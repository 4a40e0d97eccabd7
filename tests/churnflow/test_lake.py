from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from churnflow.lake import partition_path, replace_partition

DAY = date(2026, 3, 1)


def _write(target: Path, text: str) -> None:
    with replace_partition(target) as staging:
        (staging / "part-00000.csv").write_text(text)


def test_replacing_a_partition_swaps_its_whole_content(tmp_path: Path) -> None:
    target = partition_path(tmp_path, "raw/orders", DAY)
    _write(target, "old")
    with replace_partition(target) as staging:
        (staging / "part-00001.csv").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["part-00001.csv"]
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_a_failed_write_leaves_the_old_partition_untouched(tmp_path: Path) -> None:
    target = partition_path(tmp_path, "raw/orders", DAY)
    _write(target, "old")
    with pytest.raises(RuntimeError), replace_partition(target) as staging:
        (staging / "part-00000.csv").write_text("half")
        raise RuntimeError("writer died")
    assert (target / "part-00000.csv").read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_first_write_creates_the_partition(tmp_path: Path) -> None:
    target = partition_path(tmp_path, "silver/orders", DAY)
    _write(target, "x")
    assert target.name == "ds=2026-03-01" and (target / "part-00000.csv").exists()
