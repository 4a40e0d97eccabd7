from __future__ import annotations

import hashlib
import os
import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq
import pytest

from churnflow.generate import Defect, GenerateRequest, generate
from churnflow.ingest import (
    MAX_REJECT_SHARE_ENV,
    QUARANTINE_ORDERS,
    SILVER_COLUMNS,
    SILVER_ORDERS,
    IngestError,
    IngestSummary,
    ingest_days,
    ingest_orders,
)
from churnflow.lake import RAW_ORDERS, Lake
from churnflow.spark import get_spark
from churnflow.validate import docs_dir
from tests.conftest import run_cli

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

START = date(2026, 2, 1)
DAYS = [START + timedelta(n) for n in range(5)]
DAY = DAYS[2]  # the day the defects land on; DAYS[0..2] are ingested in the base lake
QUARANTINE_COLUMNS = [
    "order_id",
    "customer_id",
    "order_ts",
    "amount",
    "items",
    "source_file",
    "rule",
    "column",
]


def _generate(lake: Path, defect: Defect | None = None, file_format: str = "csv") -> None:
    request = GenerateRequest(
        start=DAYS[0],
        end=DAYS[-1],
        customers=300,
        defect=defect,
        defect_ds=DAY if defect else None,
        file_format=file_format,
    )
    generate(request, lake, progress=False)


def _raw(lake: Path, day: date) -> pd.DataFrame:
    return pd.read_csv(Lake(lake).partition_path(RAW_ORDERS, day) / "part-00000.csv", dtype=str)


def _table(lake: Path, dataset: str, day: date) -> pd.DataFrame:
    """A partition through pyarrow (skips `_SUCCESS` and hidden files like Spark does)."""
    return pq.read_table(Lake(lake).partition_path(dataset, day)).to_pandas()


def _rows(lake: Path, day: date) -> list[tuple[object, ...]]:
    frame = _table(lake, SILVER_ORDERS, day)
    return sorted(frame.itertuples(index=False, name=None))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> SparkSession:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURNFLOW_SPARK_DIR", str(tmp_path_factory.mktemp("spark")))
        return get_spark()


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory, spark: SparkSession
) -> tuple[Path, dict[date, IngestSummary]]:
    """Five generated days, the first three ingested; tests work on copies."""
    lake = tmp_path_factory.mktemp("base") / "lake"
    _generate(lake)
    return lake, {day: ingest_orders(lake, day, spark) for day in DAYS[:3]}


@pytest.fixture
def lake_copy(base: tuple[Path, dict[date, IngestSummary]], tmp_path: Path) -> Path:
    """A copy of the base lake that a test may break."""
    copy = tmp_path / "lake"
    shutil.copytree(base[0], copy)
    return copy


def test_three_clean_days_land_in_silver_with_the_contract_schema(
    spark: SparkSession, base: tuple[Path, dict[date, IngestSummary]]
) -> None:
    lake, summaries = base
    for day, summary in summaries.items():
        raw = _raw(lake, day)
        assert (summary.rows_read, summary.rows_written, summary.rows_rejected) == (
            len(raw),
            len(raw),
            0,
        )
        silver = Lake(lake).partition_path(SILVER_ORDERS, day)
        assert spark.read.parquet(str(silver)).dtypes == list(SILVER_COLUMNS.items())
        assert len([p for p in silver.iterdir() if p.name.endswith(".parquet")]) == 1
        rows = _table(lake, SILVER_ORDERS, day).set_index("order_id").sort_index()
        raw = raw.set_index("order_id").sort_index()
        assert list(rows.index) == list(raw.index)
        assert (rows["order_ts"].dt.date == day).all()
        assert list(rows["amount"]) == [Decimal(a).quantize(Decimal("0.01")) for a in raw["amount"]]
        assert list(rows["items"]) == [int(i) for i in raw["items"]]
        quarantine = _table(lake, QUARANTINE_ORDERS, day)
        assert list(quarantine.columns) == QUARANTINE_COLUMNS and quarantine.empty
    assert "rejected 0 (0.00%)" in summaries[DAY].line()


def test_rerun_gives_identical_rows_and_never_duplicates(
    spark: SparkSession, lake_copy: Path
) -> None:
    before = {day: _rows(lake_copy, day) for day in DAYS[:3]}
    summary = ingest_orders(lake_copy, DAY, spark)
    assert summary.rows_rejected == 0  # the day's own earlier output is not an earlier day
    assert {day: _rows(lake_copy, day) for day in DAYS[:3]} == before
    ids = [row[0] for day in DAYS[:3] for row in _rows(lake_copy, day)]
    assert len(ids) == len(set(ids))


def test_a_day_after_a_landed_day_not_yet_ingested_is_refused_and_nothing_is_written(
    spark: SparkSession, lake_copy: Path
) -> None:
    """DAYS[3] landed but is not in silver: DAYS[4]'s duplicates against it would go unseen
    (a scheduled day run ahead of the backfill that loads the days before it)."""
    lake = Lake(lake_copy)
    with pytest.raises(IngestError) as caught:
        ingest_orders(lake_copy, DAYS[4], spark)
    message = str(caught.value)
    assert f"ingest ds={DAYS[4]}: raw orders of ds={DAYS[3]} landed" in message
    assert f"churnflow ingest --ds {DAYS[3]} --through {DAYS[4]}" in message
    assert lake.partitions(SILVER_ORDERS) == DAYS[:3]
    assert [s.ds for s in ingest_days(lake_copy, DAYS[3], DAYS[4], spark)] == DAYS[3:]


def test_several_files_are_read_by_header_and_duplicates_collapse_or_are_quarantined(
    spark: SparkSession, lake_copy: Path
) -> None:
    day = DAYS[3]
    folder = Lake(lake_copy).partition_path(RAW_ORDERS, day)
    raw = _raw(lake_copy, day)
    (folder / "part-00000.csv").unlink()
    (folder / "_SUCCESS").touch()
    (folder / ".part-00001.csv.crc").write_text("not data")
    first, second = raw.iloc[: len(raw) // 2], raw.iloc[len(raw) // 2 :].copy()
    first.to_csv(folder / "part-00000.csv", index=False)
    identical = second.iloc[[0]]
    changed = second.iloc[[1]].assign(amount="999.99")
    earlier_id = second.iloc[[2]].assign(order_id=_raw(lake_copy, DAYS[1])["order_id"].iloc[0])
    second = pd.concat([second, identical, changed, earlier_id]).assign(note="extra column")
    second[["note", "items", "amount", "order_ts", "customer_id", "order_id"]].to_csv(
        folder / "part-00001.csv", index=False
    )

    summary = ingest_orders(lake_copy, day, spark, max_reject_share=1.0)

    assert summary.files == 2
    assert summary.rows_read == len(raw) + 3
    assert summary.duplicates_collapsed == 1
    assert summary.rejected_by_rule() == {"order_id unique across days": 3}
    assert summary.rows_written == len(raw) - 1  # both versions of the changed order go
    quarantine = _table(lake_copy, QUARANTINE_ORDERS, day)
    assert set(quarantine["rule"]) == {"order_id unique across days"}
    assert set(quarantine["column"]) == {"order_id"}
    assert set(quarantine["source_file"]) == {f"{RAW_ORDERS}/ds={day}/part-00001.csv"}
    assert sorted(quarantine["amount"]) == sorted(
        [*changed["amount"], second.iloc[1]["amount"], *earlier_id["amount"]]
    )
    silver_ids = set(_table(lake_copy, SILVER_ORDERS, day)["order_id"])
    assert silver_ids == set(raw["order_id"]) - {changed["order_id"].iloc[0]}


ROW_DEFECTS = {
    Defect.NULLS: ("customer_id", "customer_id not null"),
    Defect.NEGATIVE_AMOUNTS: ("amount", "amount >= 0"),
    Defect.DUPLICATE_IDS: ("order_id", "order_id unique across days"),
    Defect.NON_NUMERIC_AMOUNTS: ("amount", "amount is a decimal"),
    Defect.WRONG_DATE_TIMESTAMPS: ("order_ts", "order_ts falls on ds"),
}
FILE_DEFECTS = {
    Defect.RENAMED_COLUMN: [
        f"ds={DAY}/part-00000.csv",
        "missing required column(s) amount",
        "columns found: order_id, customer_id, order_ts, order_amount, items, currency",
    ],
    Defect.EMPTY_FILE: [f"ds={DAY}/part-00000.csv", "file is empty (0 bytes)"],
    Defect.MISSING_PARTITION: [f"{RAW_ORDERS} partition ds={DAY} is missing"],
}


@pytest.mark.parametrize("defect", list(ROW_DEFECTS), ids=str)
def test_row_defect_fails_on_the_reject_share_quarantines_rows_and_leaves_silver(
    spark: SparkSession, lake_copy: Path, defect: Defect
) -> None:
    column, rule = ROW_DEFECTS[defect]
    silver = _digest(Lake(lake_copy).partition_path(SILVER_ORDERS, DAY))
    _generate(lake_copy, defect)

    with pytest.raises(IngestError) as caught:
        ingest_orders(lake_copy, DAY, spark)

    message = str(caught.value)
    quarantine = _table(lake_copy, QUARANTINE_ORDERS, DAY)
    read = len(_raw(lake_copy, DAY))
    assert f"{len(quarantine)} of {read} row(s) of {RAW_ORDERS}/ds={DAY}" in message
    assert f"column {column}, rule '{rule}': {len(quarantine)} row(s)" in message
    assert f"in {RAW_ORDERS}/ds={DAY}/part-00000.csv, e.g. " in message
    assert "above the limit of 1.00%" in message and MAX_REJECT_SHARE_ENV in message
    assert _digest(Lake(lake_copy).partition_path(SILVER_ORDERS, DAY)) == silver
    assert len(quarantine) > 0
    assert set(quarantine["rule"]) == {rule} and set(quarantine["column"]) == {column}
    if defect is Defect.DUPLICATE_IDS:  # copies of today's rows with yesterday's ids
        assert all(i.startswith(f"O{DAYS[1]:%Y%m%d}-") for i in quarantine["order_id"])


@pytest.mark.parametrize("defect", list(FILE_DEFECTS), ids=str)
def test_file_defect_fails_naming_the_file_and_touches_nothing(
    spark: SparkSession, lake_copy: Path, defect: Defect
) -> None:
    silver = _digest(lake_copy / SILVER_ORDERS)
    quarantine = _digest(lake_copy / QUARANTINE_ORDERS)
    _generate(lake_copy, defect)

    with pytest.raises(IngestError) as caught:
        ingest_orders(lake_copy, DAY, spark)

    for part in FILE_DEFECTS[defect]:
        assert part in str(caught.value)
    assert _digest(lake_copy / SILVER_ORDERS) == silver
    assert _digest(lake_copy / QUARANTINE_ORDERS) == quarantine


def test_rejects_within_the_limit_are_quarantined_and_the_rest_written(
    spark: SparkSession, lake_copy: Path
) -> None:
    _generate(lake_copy, Defect.NEGATIVE_AMOUNTS)
    summary = ingest_orders(lake_copy, DAY, spark, max_reject_share=0.5)
    silver = _table(lake_copy, SILVER_ORDERS, DAY)
    quarantine = _table(lake_copy, QUARANTINE_ORDERS, DAY)
    assert summary.rejected_by_rule() == {"amount >= 0": len(quarantine)}
    assert summary.rows_written == len(silver) == len(_raw(lake_copy, DAY)) - len(quarantine)
    assert (silver["amount"] >= 0).all()
    assert all(amount.startswith("-") for amount in quarantine["amount"])
    assert "rejected" in summary.line() and "(amount >= 0: " in summary.line()


def test_parquet_input_gives_the_same_silver_as_csv(
    spark: SparkSession, base: tuple[Path, dict[date, IngestSummary]], tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    _generate(lake, file_format="parquet")
    summary = ingest_orders(lake, DAYS[0], spark)
    assert summary.rows_rejected == 0
    assert _rows(lake, DAYS[0]) == _rows(base[0], DAYS[0])


def test_parquet_column_of_a_wrong_type_fails_naming_file_and_column(
    spark: SparkSession, lake_copy: Path
) -> None:
    folder = Lake(lake_copy).partition_path(RAW_ORDERS, DAY)
    frame = _raw(lake_copy, DAY).assign(amount=True)
    (folder / "part-00000.csv").unlink()
    frame.to_parquet(folder / "part-00000.parquet", index=False)
    silver = _digest(Lake(lake_copy).partition_path(SILVER_ORDERS, DAY))
    with pytest.raises(
        IngestError, match=rf"ds={DAY}/part-00000.parquet: column amount has type bool"
    ):
        ingest_orders(lake_copy, DAY, spark)
    assert _digest(Lake(lake_copy).partition_path(SILVER_ORDERS, DAY)) == silver


def test_a_file_with_a_header_and_only_blank_lines_fails_as_empty(
    spark: SparkSession, lake_copy: Path
) -> None:
    (Lake(lake_copy).partition_path(RAW_ORDERS, DAY) / "part-00000.csv").write_text(
        "order_id,customer_id,order_ts,amount,items\n\n\n"
    )
    with pytest.raises(IngestError, match=rf"{RAW_ORDERS}/ds={DAY} has no rows in 1 file"):
        ingest_orders(lake_copy, DAY, spark)


def test_cli_missing_partition_exits_with_a_data_error_paragraph(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _generate(lake, Defect.MISSING_PARTITION)
    result = run_cli("ingest", "--ds", DAY.isoformat(), lake=lake)
    assert result.returncode == os.EX_DATAERR
    assert f"churnflow ingest: error: ingest ds={DAY}: {RAW_ORDERS} partition" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_range_ingests_in_order_and_stops_at_the_first_failing_day(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _generate(lake, Defect.MISSING_PARTITION)
    result = run_cli("ingest", "--ds", DAYS[0].isoformat(), "--through", DAYS[-1].isoformat(),
                     lake=lake)  # fmt: skip
    assert result.returncode == os.EX_DATAERR, result.stderr
    assert f"ingest ds={DAY}: {RAW_ORDERS} partition" in result.stderr
    published = Lake(lake).published(SILVER_ORDERS)
    assert sorted(published) == DAYS[:2], "the days before the failing one stay published"
    assert [
        line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("ingest")
    ] == [f"ingest ds={day}" for day in DAYS[:2]]


def _rewrite_raw(lake: Path, day: date, rows: list[dict[str, str]]) -> None:
    """Append rows to the day's raw file; each copies a row of the day and overrides fields."""
    raw = _raw(lake, day)
    extra = pd.DataFrame([{**raw.iloc[n].to_dict(), **changes} for n, changes in enumerate(rows)])
    path = Lake(lake).partition_path(RAW_ORDERS, day) / "part-00000.csv"
    pd.concat([raw, extra]).to_csv(path, index=False)


def _outputs(lake: Path, days: list[date]) -> dict[tuple[str, date], list[tuple[object, ...]]]:
    return {
        (dataset, day): sorted(
            _table(lake, dataset, day).astype(str).itertuples(index=False, name=None)
        )
        for dataset in (SILVER_ORDERS, QUARANTINE_ORDERS)
        for day in days
    }


def test_a_range_in_passes_publishes_exactly_what_day_by_day_ingests_publish(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Order ids that cross days: the pass judges each day against the days before it."""
    lake = tmp_path / "lake"
    _generate(lake)
    ingest_orders(lake, DAYS[0], spark)
    earlier = _raw(lake, DAYS[0])["order_id"].iloc[0]
    _rewrite_raw(lake, DAYS[1], [
        {"order_id": earlier},  # silver held it before the range
        {"order_id": "Y-1", "amount": "-5.00"},  # broken today, valid tomorrow
        {"order_id": "Z-1"},  # kept today, seen on the next day
    ])  # fmt: skip
    _rewrite_raw(lake, DAYS[2], [
        {"order_id": "Y-1"},
        {"order_id": "X-1", "amount": "1.00"},  # two contents today: both rejected...
        {"order_id": "X-1", "amount": "2.00"},
        {"order_id": "Z-1"},
    ])  # fmt: skip
    _rewrite_raw(lake, DAYS[3], [{"order_id": "X-1"}, {}])  # ...kept here; {} an exact copy
    _rewrite_raw(lake, DAYS[4], [{"order_id": "Y-1"}])
    lakes = {name: tmp_path / name for name in ("day_by_day", "passes")}
    for copy in lakes.values():
        shutil.copytree(lake, copy)

    by_day = [
        ingest_orders(lakes["day_by_day"], day, spark, max_reject_share=1.0) for day in DAYS[1:]
    ]
    # Passes of DAYS[1..3] and DAYS[4]: ids cross days within a pass and from one to the next.
    monkeypatch.setattr("churnflow.ingest.DAYS_PER_PASS", 3)
    passes = list(ingest_days(lakes["passes"], DAYS[1], DAYS[-1], spark, max_reject_share=1.0))

    assert [s.line() for s in passes] == [s.line() for s in by_day]
    assert [s.rejected_by_rule() for s in by_day] == [
        {"amount >= 0": 1, "order_id unique across days": 1},
        {"order_id unique across days": 3},
        {},
        {"order_id unique across days": 1},
    ]
    assert by_day[2].duplicates_collapsed == 1
    assert _outputs(lakes["passes"], DAYS[1:]) == _outputs(lakes["day_by_day"], DAYS[1:])
    index = (docs_dir(lakes["passes"], "silver_orders") / "index.html").read_text()
    assert [day for day in DAYS if f"ds={day}" in index] == DAYS
    silver = Lake(lakes["passes"]).partition_path(SILVER_ORDERS, DAYS[3])
    assert len([p for p in silver.iterdir() if p.name.endswith(".parquet")]) == 1


def test_a_range_stops_at_a_day_over_the_reject_share_with_the_days_before_it_published(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    _generate(lake, Defect.NEGATIVE_AMOUNTS)
    published: list[date] = []
    with pytest.raises(IngestError, match=f"ingest ds={DAY}: .* above the limit"):
        for summary in ingest_days(lake, DAYS[0], DAYS[-1], spark):
            published.append(summary.ds)
    assert published == DAYS[:2]
    assert sorted(Lake(lake).published(SILVER_ORDERS)) == DAYS[:2]
    assert sorted(Lake(lake).published(QUARANTINE_ORDERS)) == DAYS[:3]
    assert not list((lake / SILVER_ORDERS).glob(".*")), "the pass's staging is gone"
    # The Data Docs index, built once by the pass's last audit, lists every published day.
    index = (docs_dir(lake, "silver_orders") / "index.html").read_text()
    assert [day for day in DAYS if f"ds={day}" in index] == DAYS[:2]
