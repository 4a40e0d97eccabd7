from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import pytest

from churnflow.lake import STALE_AFTER_S, Lake

DAY = date(2026, 3, 1)


def _write(lake: Lake, dataset: str, text: str, day: date = DAY) -> None:
    with lake.publishing(dataset, day) as folder:
        (folder / "part-00000.csv").write_text(text)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_publishing_a_partition_swaps_its_whole_content(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "raw/orders", "old")
    with lake.publishing("raw/orders", DAY) as folder:
        (folder / "part-00001.csv").write_text("new")
    target = lake.partition_path("raw/orders", DAY)
    assert sorted(p.name for p in target.iterdir()) == ["part-00001.csv"]
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_a_failed_write_leaves_the_old_partition_untouched(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "raw/orders", "old")
    with pytest.raises(RuntimeError), lake.publishing("raw/orders", DAY) as folder:
        (folder / "part-00000.csv").write_text("half")
        raise RuntimeError("writer died")
    target = lake.partition_path("raw/orders", DAY)
    assert (target / "part-00000.csv").read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_failed_audit_publishes_nothing_and_keeps_the_old_bytes(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "silver/orders", "good")
    target = lake.partition_path("silver/orders", DAY)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def audit(staged: Path) -> None:
        assert (staged / "part-00000.csv").read_text() == "bad"  # the audit sees staged data
        assert (target / "part-00000.csv").read_text() == "good"  # readers still see the old
        raise ValueError("rule `amount >= 0` broken by 3 row(s)")

    with (
        pytest.raises(ValueError, match="amount >= 0"),
        lake.publishing("silver/orders", DAY, audit=audit) as folder,
    ):
        (folder / "part-00000.csv").write_text("bad")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert _hidden(target.parent) == []


def test_first_write_creates_the_partition_and_lists_it(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}")
    _write(lake, "silver/orders", "x")
    assert lake.partition_path("silver/orders", DAY) == tmp_path / "silver/orders/ds=2026-03-01"
    assert lake.partitions("silver/orders") == [DAY]
    assert [f.name for f in lake.files("silver/orders", DAY)] == ["part-00000.csv"]
    assert lake.uri == tmp_path.as_uri()


def test_listing_skips_hidden_and_empty_partitions(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "silver/orders", "x")
    (tmp_path / "silver/orders/ds=2026-03-02").mkdir()
    (tmp_path / "silver/orders/ds=2026-03-03").mkdir()
    (tmp_path / "silver/orders/ds=2026-03-03/_SUCCESS").touch()
    (tmp_path / "silver/orders/.staging-ds=2026-03-04-x/ds=2026-03-04").mkdir(parents=True)
    assert lake.partitions("silver/orders") == [DAY]


def test_a_killed_steps_staging_is_swept_by_the_next_run_of_the_same_partition(
    tmp_path: Path,
) -> None:
    lake = Lake(str(tmp_path))
    area = tmp_path / "silver/orders"
    leftover = area / ".staging-ds=2026-03-01-dead/ds=2026-03-01"
    leftover.mkdir(parents=True)
    (leftover / "part-0.parquet").write_text("half")
    retired = area / ".retired-ds=2026-03-01-dead"
    retired.mkdir()
    other_day = area / ".staging-ds=2026-03-02-running"  # a parallel day's live staging
    other_day.mkdir()
    old = area / ".staging-ds=2026-02-01-dead"
    old.mkdir()
    stale = time.time() - STALE_AFTER_S - 60
    os.utime(old, (stale, stale))
    _write(lake, "silver/orders", "x")
    assert _hidden(area) == [other_day.name]


def test_small_objects_are_replaced_whole(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    assert lake.read_bytes("training/churn/manifest.json") is None
    lake.write_bytes("training/churn/manifest.json", b"1")
    lake.write_bytes("training/churn/manifest.json", b"2")
    assert lake.read_bytes("training/churn/manifest.json") == b"2"
    assert _hidden(tmp_path / "training/churn") == []
