from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from churnflow.errors import LandingError
from churnflow.generate import Defect, GenerateRequest, generate
from churnflow.lake import RAW_ORDERS, Lake
from churnflow.landing import check_landing
from tests.conftest import run_cli

DAY = date(2026, 2, 3)


def _generate(lake: Path, defect: Defect | None = None, file_format: str = "csv") -> Path:
    request = GenerateRequest(
        start=date(2026, 2, 1),
        end=date(2026, 2, 4),
        customers=300,
        defect=defect,
        defect_ds=DAY if defect else None,
        file_format=file_format,
    )
    generate(request, lake, progress=False)
    return Lake(lake).partition_path(RAW_ORDERS, DAY)


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_a_clean_partition_passes_with_its_row_count(tmp_path: Path, file_format: str) -> None:
    folder = _generate(tmp_path, file_format=file_format)
    summary = check_landing(tmp_path, DAY)
    assert summary.partition == str(folder)
    assert summary.rows > 0
    assert [f.path.name for f in summary.files] == [f"part-00000.{file_format}"]


def test_missing_partition_names_the_folder(tmp_path: Path) -> None:
    folder = _generate(tmp_path, Defect.MISSING_PARTITION)
    with pytest.raises(LandingError, match=f"ds={DAY} is missing: no folder {folder}"):
        check_landing(tmp_path, DAY)


def test_empty_file_names_the_file(tmp_path: Path) -> None:
    folder = _generate(tmp_path, Defect.EMPTY_FILE)
    with pytest.raises(LandingError, match=rf"{folder}/part-00000.csv: file is empty \(0 bytes\)"):
        check_landing(tmp_path, DAY)


def test_renamed_column_names_file_column_and_contract(tmp_path: Path) -> None:
    _generate(tmp_path, Defect.RENAMED_COLUMN)
    with pytest.raises(LandingError) as caught:
        check_landing(tmp_path, DAY)
    message = str(caught.value)
    assert "part-00000.csv" in message
    assert "missing required column(s) amount" in message
    assert "landing contract" in message and "order_amount" in message


def test_header_only_partition_has_no_rows(tmp_path: Path) -> None:
    folder = _generate(tmp_path)
    (folder / "part-00000.csv").write_text("order_id,customer_id,order_ts,amount,items\n")
    with pytest.raises(LandingError, match="has no rows in 1 file"):
        check_landing(tmp_path, DAY)


def test_folder_with_only_hidden_files_holds_no_data(tmp_path: Path) -> None:
    folder = _generate(tmp_path)
    (folder / "part-00000.csv").rename(folder / "_SUCCESS")
    with pytest.raises(LandingError, match="holds no data files"):
        check_landing(tmp_path, DAY)


def test_unsupported_file_type_is_named(tmp_path: Path) -> None:
    folder = _generate(tmp_path)
    (folder / "orders.json").write_text("[]")
    with pytest.raises(LandingError, match=r"orders.json: unsupported file type '.json'"):
        check_landing(tmp_path, DAY)


def test_cli_exits_with_data_error_and_one_paragraph(lake: Path) -> None:
    _generate(lake, Defect.EMPTY_FILE)
    result = run_cli("check-landing", "--ds", DAY.isoformat(), lake=lake)
    assert result.returncode == os.EX_DATAERR
    assert result.stderr.startswith("churnflow check-landing: error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_prints_the_summary(lake: Path) -> None:
    _generate(lake)
    result = run_cli("check-landing", "--ds", DAY.isoformat(), lake=lake)
    assert result.returncode == 0, result.stderr
    assert f"ds={DAY}: " in result.stdout and " orders in 1 file(s)" in result.stdout
