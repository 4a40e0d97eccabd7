"""The point-in-time training set on real Spark (one classic session for the module).

Silver orders and customer_features snapshots are written straight into a lake folder with
pyarrow, to the contracts in `tests/churnflow/contracts.py`: orders from a seeded random
population, features computed from them in pandas, so these tests need neither ingest nor
dbt. Labels are recomputed here in pandas and compared with what Spark published.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnflow.errors import DataError
from churnflow.lake import CUSTOMER_FEATURES, SILVER_ORDERS, Lake, file_uri
from churnflow.training_set import (
    AS_OF_KEY,
    EXAMPLES,
    MANIFEST,
    TRAINING_CHURN,
    MissingOrdersError,
    MissingSnapshotError,
    SingleClassError,
    TooFewSnapshotsError,
    TrainingSetAuditError,
    TrainingSetConfig,
    TrainingSetSummary,
    audit_counts,
    build_training_set,
    plan_training_set,
    read_manifest,
)
from tests.churnflow import synthetic
from tests.churnflow.contracts import FEATURES_SCHEMA

pytestmark = pytest.mark.usefixtures("classic_spark")

START = date(2026, 1, 1)  # first day of orders
FEATURES_FROM = date(2026, 2, 1)  # first published feature snapshot
AS_OF = date(2026, 5, 1)
NEWEST = AS_OF - timedelta(days=30)  # 2026-04-01, the holdout snapshot
LAST_DAY = AS_OF + timedelta(days=14)  # silver and features exist after as-of too
CONFIG = TrainingSetConfig(
    horizon_days=30, snapshots=6, every_days=7, validation_snapshots=2, min_rows=5
)
WINDOW = [NEWEST - timedelta(days=7 * k) for k in range(5, -1, -1)]  # 02-25 .. 04-01
SPLITS = {"train": WINDOW[:3], "validation": WINDOW[3:5], "holdout": WINDOW[5:]}
ENV = {
    "CHURNFLOW_LABEL_HORIZON_DAYS": "30",
    "CHURNFLOW_TRAINING_SNAPSHOTS": "6",
    "CHURNFLOW_TRAINING_SNAPSHOT_EVERY_DAYS": "7",
    "CHURNFLOW_TRAINING_VALIDATION_SNAPSHOTS": "2",
    "CHURNFLOW_TRAINING_MIN_ROWS": "5",
}
# Customers whose orders sit on the label window's edges at the holdout snapshot NEWEST.
EDGES = {
    "edge-in": [NEWEST - timedelta(days=10), NEWEST + timedelta(days=30)],  # retained
    "edge-out": [NEWEST - timedelta(days=10), NEWEST + timedelta(days=31)],  # churned
    "edge-same-day": [NEWEST],  # an order on the snapshot's day is a feature, not a label
}


def _days(first: date, last: date) -> list[date]:
    return synthetic.days(first, last)


def _population(seed: int = 5, size: int = 80) -> dict[str, list[date]]:
    return synthetic.population(START, LAST_DAY, seed=seed, size=size) | EDGES


def _write_lake(
    root: Path, customers: dict[str, list[date]], snapshots: list[date] | None = None
) -> pd.DataFrame:
    """Silver for every day START..LAST_DAY, features for `snapshots` (default: every day
    FEATURES_FROM..LAST_DAY, so the neighbours of each snapshot of the window are there)."""
    return synthetic.write_lake(
        root, customers, first=START, last=LAST_DAY,
        snapshots=snapshots or _days(FEATURES_FROM, LAST_DAY),
    )  # fmt: skip


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under a folder, hidden ones included (staging leftovers would show)."""
    if not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _published(root: Path) -> dict[str, bytes]:
    return _tree(root / TRAINING_CHURN)


def _cli(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> int:
    """`churnflow training-set --as-of AS_OF` with CONFIG as CHURNFLOW_* variables."""
    from churnflow.cli import main
    from churnflow.settings import get_settings

    for name, value in ENV.items() | {("CHURNFLOW_LAKE", str(lake.root))}:
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return main(["training-set", "--as-of", str(AS_OF)])
    finally:
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, TrainingSetSummary]:
    """A lake with orders and daily snapshots, and the training set of AS_OF built on it."""
    root = tmp_path_factory.mktemp("lake")
    orders = _write_lake(root, _population())
    return root, orders, build_training_set(root, AS_OF, config=CONFIG)


@pytest.fixture(scope="module")
def examples(base: tuple[Path, pd.DataFrame, TrainingSetSummary]) -> pd.DataFrame:
    root = base[0]
    folder = Lake(str(root)).partition_path(TRAINING_CHURN, AS_OF, AS_OF_KEY) / EXAMPLES
    return pd.read_parquet(folder)


@pytest.fixture
def lake_copy(base: tuple[Path, pd.DataFrame, TrainingSetSummary], tmp_path: Path) -> Lake:
    """The base lake, training set included, to change without touching the module's."""
    return Lake(str(shutil.copytree(base[0], tmp_path / "lake")))


def test_snapshots_are_the_matured_window_split_by_time(
    base: tuple[Path, pd.DataFrame, TrainingSetSummary], examples: pd.DataFrame
) -> None:
    manifest = base[2].manifest
    assert {name: split["snapshots"] for name, split in manifest["splits"].items()} == {
        name: [str(day) for day in days] for name, days in SPLITS.items()
    }
    by_split = examples.groupby("split")["snapshot_ds"]
    assert by_split.max()["train"] < by_split.min()["validation"]
    assert by_split.max()["validation"] < by_split.min()["holdout"] == NEWEST
    assert examples["snapshot_ds"].max() <= AS_OF - timedelta(days=30)
    assert sorted(examples["snapshot_ds"].unique()) == WINDOW


def test_labels_match_pandas_from_orders_up_to_as_of_edges_included(
    base: tuple[Path, pd.DataFrame, TrainingSetSummary], examples: pd.DataFrame
) -> None:
    orders = base[1]
    ordered = orders.groupby("customer_id")["day"].apply(set)
    expected = {
        (row.snapshot_ds, row.customer_id): int(
            not any(
                row.snapshot_ds < day <= row.snapshot_ds + timedelta(days=30)
                for day in ordered[row.customer_id]
            )
        )
        for row in examples.itertuples()
    }
    keys = zip(examples["snapshot_ds"], examples["customer_id"], strict=True)
    got = dict(zip(keys, examples["churned"], strict=True))
    assert got == expected
    assert got[(NEWEST, "edge-in")] == 0
    assert got[(NEWEST, "edge-out")] == 1
    assert got[(NEWEST, "edge-same-day")] == 1
    for split in examples.groupby("split")["churned"]:
        assert set(split[1]) == {0, 1}, split[0]


def test_every_example_carries_the_features_of_its_own_snapshot_partition(
    base: tuple[Path, pd.DataFrame, TrainingSetSummary], examples: pd.DataFrame
) -> None:
    lake = Lake(str(base[0]))
    for day in WINDOW:
        partition = pd.read_parquet(lake.partition_path(CUSTOMER_FEATURES, day))
        mine = examples[examples["snapshot_ds"] == day][FEATURES_SCHEMA.names]
        pd.testing.assert_frame_equal(
            mine.reset_index(drop=True),
            partition.sort_values("customer_id", ignore_index=True),
        )
        later = pd.read_parquet(lake.partition_path(CUSTOMER_FEATURES, day + timedelta(days=1)))
        assert not later.equals(partition)  # a feature of s + 1 would show


def test_one_example_per_customer_and_snapshot_and_one_split_per_snapshot(
    examples: pd.DataFrame,
) -> None:
    assert not examples.duplicated(["snapshot_ds", "customer_id"]).any()
    assert (examples.groupby("snapshot_ds")["split"].nunique() == 1).all()
    assert examples["customer_id"].notna().all()
    ordered = examples.sort_values(["snapshot_ds", "customer_id"], ignore_index=True)
    pd.testing.assert_frame_equal(examples, ordered)


def test_manifest_describes_the_published_files_and_figures(
    base: tuple[Path, pd.DataFrame, TrainingSetSummary], examples: pd.DataFrame
) -> None:
    root, _, summary = base
    lake = Lake(str(root))
    folder = lake.partition_path(TRAINING_CHURN, AS_OF, AS_OF_KEY)
    manifest = read_manifest(lake, AS_OF)
    assert manifest == summary.manifest
    assert sorted(_tree(folder)) == [f"{EXAMPLES}/part-00000.parquet", MANIFEST]
    assert lake.partitions(TRAINING_CHURN, AS_OF_KEY) == [AS_OF]
    data = folder / EXAMPLES / "part-00000.parquet"
    assert manifest["data"]["files"] == [
        {
            "name": "part-00000.parquet",
            "bytes": data.stat().st_size,
            "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        }
    ]
    assert manifest["data"]["rows"] == len(examples)
    assert manifest["data"]["digest"].startswith("sha256:")
    assert manifest["uri"] == file_uri(folder) == summary.uri
    assert manifest["sources"][CUSTOMER_FEATURES]["partitions"] == [str(d) for d in WINDOW]
    assert manifest["sources"][SILVER_ORDERS] | {"uri": None} == {
        "uri": None,
        "first": str(WINDOW[0] + timedelta(days=1)),
        "last": str(AS_OF),
        "partitions": (AS_OF - WINDOW[0]).days,
    }
    assert manifest["label"]["horizon_days"] == 30
    assert manifest["rows"] == len(examples)
    for name, split in manifest["splits"].items():
        labels = examples.loc[examples["split"] == name, "churned"]
        assert (split["rows"], split["positives"]) == (len(labels), int(labels.sum()))
        assert split["positive_rate"] == pytest.approx(labels.mean(), abs=1e-6)
    assert manifest["features"] == [c for c in FEATURES_SCHEMA.names if c != "customer_id"]
    assert [c["name"] for c in manifest["columns"]] == list(examples.columns)
    assert "holdout 2026-04-01" in summary.line()


def test_cli_rerun_is_byte_identical_and_never_reads_after_as_of(
    base: tuple[Path, pd.DataFrame, TrainingSetSummary],
    lake_copy: Lake,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unreadable silver after D and unreadable snapshots outside the window change nothing."""
    after = lake_copy.partition_path(SILVER_ORDERS, AS_OF + timedelta(days=1))
    (after / "zz-late.parquet").write_bytes(b"not parquet: reading it fails the job")
    for day in (NEWEST + timedelta(days=1), NEWEST - timedelta(days=1), AS_OF):
        corrupt = lake_copy.partition_path(CUSTOMER_FEATURES, day) / "zz-late.parquet"
        corrupt.write_bytes(b"not parquet either")
    assert _cli(lake_copy, monkeypatch) == 0
    assert "training/churn as_of=2026-05-01:" in capsys.readouterr().out
    # Byte-identical (one JVM wrote both: across JVMs parquet-mr orders a footer's encoding
    # list differently, the rows digest stays). The manifest names its lake: swap the root.
    rebuilt, first = _published(lake_copy.root), _published(base[0])
    key = f"as_of={AS_OF}/{MANIFEST}"
    first[key] = first[key].replace(str(base[0]).encode(), str(lake_copy.root).encode())
    assert rebuilt == first


def test_too_few_matured_snapshots_fail_before_spark_naming_the_rule(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    for day in (FEATURES_FROM, FEATURES_FROM + timedelta(days=7)):
        folder = lake.partition_path(CUSTOMER_FEATURES, day)
        folder.mkdir(parents=True)
        pq.write_table(FEATURES_SCHEMA.empty_table(), folder / "part-0.parquet")
    as_of = FEATURES_FROM + timedelta(days=30 + 14)  # matured: 02-01, 02-08, 02-15 (missing)
    with pytest.raises(MissingSnapshotError, match=r"ds=2026-02-15"):
        build_training_set(lake, as_of, config=CONFIG)
    as_of = FEATURES_FROM + timedelta(days=30 + 7)  # matured: 02-01, 02-08
    with pytest.raises(TooFewSnapshotsError) as caught:
        build_training_set(lake, as_of, config=CONFIG)
    message = str(caught.value)
    assert "2 features/customer_features snapshot(s)" in message
    assert "ds=2026-02-01, ds=2026-02-08" in message and "at least 4" in message
    assert caught.value.exit_code == 65
    assert _published(tmp_path) == {}


@pytest.mark.parametrize(
    ("dataset", "removed", "error", "named"),
    [
        (CUSTOMER_FEATURES, [date(2026, 3, 18)], MissingSnapshotError, "ds=2026-03-18"),
        (SILVER_ORDERS, [date(2026, 4, 10)], MissingOrdersError, "ds=2026-04-10"),
        (SILVER_ORDERS, _days(START, AS_OF), MissingOrdersError, "no partition up to"),
    ],
    ids=["missing-snapshot", "silver-gap", "no-silver-up-to-as-of"],
)
def test_missing_input_fails_naming_dataset_and_partition_and_keeps_the_published_set(
    lake_copy: Lake,
    dataset: str,
    removed: list[date],
    error: type[DataError],
    named: str,
) -> None:
    before = _published(lake_copy.root)
    for day in removed:
        lake_copy.remove(dataset, day)
    with pytest.raises(error) as caught:
        build_training_set(lake_copy, AS_OF, config=CONFIG)
    assert dataset in str(caught.value) and named in str(caught.value)
    assert "rule:" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 65
    assert _published(lake_copy.root) == before


def test_cli_exits_65_with_one_paragraph_on_a_missing_snapshot(
    lake_copy: Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lake_copy.remove(CUSTOMER_FEATURES, WINDOW[0])
    assert _cli(lake_copy, monkeypatch) == 65
    err = capsys.readouterr().err.strip()
    assert err.startswith("churnflow training-set: error: training set as-of 2026-05-01:")
    assert "features/customer_features has no published partition ds=2026-02-25" in err
    assert "\n" not in err


def test_single_class_fails_the_audit_and_publishes_nothing(tmp_path: Path) -> None:
    everyday = {f"loyal-{n}": _days(START, LAST_DAY) for n in range(8)}
    _write_lake(tmp_path, everyday, snapshots=WINDOW)
    with pytest.raises(SingleClassError) as caught:
        build_training_set(tmp_path, AS_OF, config=CONFIG)
    message = str(caught.value)
    assert "the train split" in message and "are retained (0)" in message
    assert "both classes" in message and caught.value.exit_code == 65
    assert _published(tmp_path) == {}


def test_too_few_rows_fail_the_audit_and_leave_the_published_set(lake_copy: Lake) -> None:
    before = _published(lake_copy.root)
    with pytest.raises(TrainingSetAuditError, match=r"fewer than 100000.*enough rows"):
        build_training_set(
            lake_copy, AS_OF, config=TrainingSetConfig(**{**vars(CONFIG), "min_rows": 100_000})
        )
    assert _published(lake_copy.root) == before
    assert json.loads(before[f"as_of={AS_OF}/{MANIFEST}"])["as_of"] == str(AS_OF)


def test_the_digest_follows_the_rows_a_changed_feature_changes_it(
    base: tuple[Path, pd.DataFrame, TrainingSetSummary], lake_copy: Lake
) -> None:
    partition = lake_copy.partition_path(CUSTOMER_FEATURES, WINDOW[1])
    features = pd.read_parquet(partition)
    features.loc[0, "amount_7d"] += 1.0
    table = pa.Table.from_pandas(features, schema=FEATURES_SCHEMA, preserve_index=False)
    pq.write_table(table, partition / "part-0.parquet")
    changed = build_training_set(lake_copy, AS_OF, config=CONFIG).manifest
    first = base[2].manifest
    assert changed["data"]["digest"] != first["data"]["digest"]
    assert changed["splits"] == first["splits"]  # same rows and labels, one value differs


def _counts(**change: object) -> list[dict[str, object]]:
    """Audit counts of a sound staged set (one group per snapshot), with one group changed."""
    counts = []
    for name, days in SPLITS.items():
        for day in days:
            counts.append(
                {
                    "split": name,
                    "snapshot_ds": day,
                    "rows": 10,
                    "positives": 3,
                    "negatives": 7,
                    "null_customers": 0,
                    "customers": 10,
                    "hash_sum": 0,
                }
            )
    counts[-1] |= change
    return counts


@pytest.mark.parametrize(
    ("change", "error", "rule"),
    [
        ({"split": None}, TrainingSetAuditError, "rule: keys"),
        ({"null_customers": 1, "customers": 9}, TrainingSetAuditError, "rule: no null keys"),
        ({"negatives": 6}, TrainingSetAuditError, "rule: labels are 0 or 1"),
        ({"customers": 9}, TrainingSetAuditError, "one example per customer and snapshot"),
        ({"split": "validation"}, TrainingSetAuditError, "rule: one split per snapshot"),
        (
            {"snapshot_ds": date(2026, 3, 25), "split": "validation"},
            MissingSnapshotError,
            "ds=2026-04-01 of the window hold(s) no rows",
        ),
        ({"positives": 10, "negatives": 0}, SingleClassError, "the holdout split"),
        (
            {"rows": 4, "positives": 1, "negatives": 3, "customers": 4},
            TrainingSetAuditError,
            "fewer than 5",
        ),
    ],
    ids=[
        "null-split",
        "null-customer",
        "bad-label",
        "duplicate",
        "split",
        "empty",
        "class",
        "rows",
    ],
)
def test_each_row_rule_of_the_audit_fails_with_its_own_message(
    base: tuple[Path, pd.DataFrame, TrainingSetSummary],
    change: dict[str, object],
    error: type[DataError],
    rule: str,
) -> None:
    plan = plan_training_set(Lake(str(base[0])), AS_OF, CONFIG)
    assert audit_counts(_counts(), plan)["holdout"]["positive_rate"] == 0.3
    with pytest.raises(error, match=re.escape(rule)):
        audit_counts(_counts(**change), plan)


def test_a_window_too_short_for_the_split_is_a_config_error() -> None:
    from churnflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"snapshots=4 \(at least 5\)") as caught:
        TrainingSetConfig(snapshots=4, validation_snapshots=3)
    assert caught.value.exit_code == 78
