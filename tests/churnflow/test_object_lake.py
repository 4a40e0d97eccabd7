"""The lake's contract on both backends, a folder and an object store, the latter on a local
S3-compatible server (moto's server mode, started here; the only stand-in, for the bucket).

The same assertions run against both, through the `Lake` interface only: what a step sees
must not depend on where the lake lives. The object store's own guarantees (a partition is
published by one pointer PUT, nothing of a replaced or killed version stays behind for a Spark
scan of the prefix) are checked against the bucket's listing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pytest

from churnflow.drift import predictions_of
from churnflow.errors import ConfigError, LandingError
from churnflow.features import build_features
from churnflow.generate import GenerateRequest, generate
from churnflow.ingest import ingest_orders
from churnflow.lake import CUSTOMER_FEATURES, PREDICTIONS, RAW_CUSTOMERS, RAW_ORDERS, Lake
from churnflow.landing import check_landing
from churnflow.object_lake import PENDING, POINTER, ObjectStoreLake
from churnflow.scoring import SCORE, day_features
from churnflow.spark import S3A_SETTINGS, s3a_settings
from churnflow.validate import validate
from tests.conftest import run_cli

DAY = date(2026, 3, 1)
BUCKET = "churnflow-test"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on a free port, with one bucket."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    server = Path(sys.executable).with_name("moto_server")
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.2)
        pafs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            endpoint_override=endpoint.removeprefix("http://"),
            scheme="http",
            allow_bucket_creation=True,
        ).create_dir(BUCKET)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket_lake(s3_env: dict[str, str], request: pytest.FixtureRequest) -> ObjectStoreLake:
    """A fresh prefix of the test bucket per test."""
    lake = Lake(f"s3://{BUCKET}/{request.node.name[:40]}-{os.urandom(4).hex()}")
    assert isinstance(lake, ObjectStoreLake)
    return lake


@pytest.fixture(params=["folder", "bucket"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    if request.param == "folder":
        return Lake(str(tmp_path / "lake"))
    return request.getfixturevalue("bucket_lake")


def _publish(lake: Lake, dataset: str, files: dict[str, str], day: date = DAY) -> None:
    with lake.publishing(dataset, day) as folder:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)


def _texts(lake: Lake, dataset: str, day: date = DAY, folder: str = "") -> dict[str, str]:
    return {
        item.name: lake.filesystem.open_input_stream(item.location).read().decode()
        for item in lake.files(dataset, day, folder=folder)
    }


def _objects(lake: ObjectStoreLake, prefix: str) -> list[str]:
    selector = pafs.FileSelector(f"{lake.base}/{prefix}", allow_not_found=True, recursive=True)
    return sorted(
        lake.relative(info.path)
        for info in lake.filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
    )


# --- the contract, on both backends ------------------------------------------------------------


def test_publishing_replaces_the_whole_partition(lake: Lake) -> None:
    _publish(lake, RAW_ORDERS, {"part-00000.csv": "old", "part-00001.csv": "old"})
    _publish(lake, RAW_ORDERS, {"part-00002.csv": "new"})
    assert _texts(lake, RAW_ORDERS) == {"part-00002.csv": "new"}
    assert lake.partitions(RAW_ORDERS) == [DAY]
    assert lake.exists(RAW_ORDERS, DAY) and lake.exists(RAW_ORDERS)


def test_a_failed_audit_publishes_nothing_and_keeps_the_old_bytes(lake: Lake) -> None:
    _publish(lake, RAW_ORDERS, {"part-00000.csv": "old"})

    def refuse(folder: Path) -> None:
        assert (folder / "part-00000.csv").read_text() == "bad"
        raise ValueError("column amount: negative values")

    with (
        pytest.raises(ValueError, match="negative"),
        lake.publishing(RAW_ORDERS, DAY, audit=refuse) as folder,
    ):
        (folder / "part-00000.csv").write_text("bad")
    assert _texts(lake, RAW_ORDERS) == {"part-00000.csv": "old"}


def test_a_writer_that_dies_leaves_the_published_partition_as_it_was(lake: Lake) -> None:
    _publish(lake, RAW_ORDERS, {"part-00000.csv": "old"})
    with pytest.raises(RuntimeError), lake.publishing(RAW_ORDERS, DAY) as folder:
        (folder / "part-00000.csv").write_text("half")
        raise RuntimeError("writer died")
    assert _texts(lake, RAW_ORDERS) == {"part-00000.csv": "old"}


def test_listing_skips_missing_and_empty_partitions(lake: Lake) -> None:
    _publish(lake, RAW_ORDERS, {"part-00000.csv": "x"})
    _publish(lake, RAW_ORDERS, {}, day=date(2026, 3, 2))
    _publish(lake, RAW_ORDERS, {"_SUCCESS": ""}, day=date(2026, 3, 3))
    assert lake.partitions(RAW_ORDERS) == [DAY]
    assert set(lake.published(RAW_ORDERS)) == {DAY}
    assert lake.files(RAW_ORDERS, date(2026, 3, 9)) == []
    assert lake.partitions("raw/nothing") == []


def test_files_in_a_folder_of_a_partition_and_small_objects_inside_it(lake: Lake) -> None:
    _publish(
        lake,
        "training/churn",
        {"examples/part-0.parquet": "rows", "manifest.json": '{"rows": 1}'},
    )
    assert _texts(lake, "training/churn", folder="examples") == {"part-0.parquet": "rows"}
    assert [item.name for item in lake.files("training/churn", DAY)] == ["manifest.json"]
    assert lake.read_bytes("training/churn/ds=2026-03-01/manifest.json") == b'{"rows": 1}'
    assert lake.read_bytes("training/churn/ds=2026-03-01/missing.json") is None


def test_small_objects_are_replaced_whole(lake: Lake) -> None:
    assert lake.read_bytes("predictions/churn_ledger/ds=2026-03-01.json") is None
    lake.write_bytes("predictions/churn_ledger/ds=2026-03-01.json", b"1")
    lake.write_bytes("predictions/churn_ledger/ds=2026-03-01.json", b"2")
    assert lake.read_bytes("predictions/churn_ledger/ds=2026-03-01.json") == b"2"


def test_removing_a_partition_unpublishes_it(lake: Lake) -> None:
    _publish(lake, RAW_ORDERS, {"part-00000.csv": "x"})
    lake.remove(RAW_ORDERS, DAY)
    lake.remove(RAW_ORDERS, DAY)  # idempotent
    assert lake.partitions(RAW_ORDERS) == []
    assert not lake.exists(RAW_ORDERS, DAY)


# --- what only the object store must show ------------------------------------------------------


def _pointer_of(lake: ObjectStoreLake, partition: str) -> dict[str, Any]:
    with lake.filesystem.open_input_stream(f"{lake.base}/{partition}/{POINTER}") as stream:
        return json.loads(stream.read())


def test_a_republished_partition_leaves_only_its_pointer_and_new_objects(
    bucket_lake: ObjectStoreLake,
) -> None:
    partition = "raw/orders/ds=2026-03-01"
    _publish(bucket_lake, RAW_ORDERS, {"part-00000.csv": "old"})
    _publish(bucket_lake, RAW_ORDERS, {"part-00000.csv": "new"})
    version = _pointer_of(bucket_lake, partition)["version"]
    assert _objects(bucket_lake, partition) == [
        f"{partition}/{POINTER}",
        f"{partition}/part-00000.{version}.csv",
    ]
    assert bucket_lake.partition_uri(RAW_ORDERS, DAY) == f"{bucket_lake.uri}/{partition}"
    assert bucket_lake.uri.startswith("s3a://")
    [item] = bucket_lake.files(RAW_ORDERS, DAY)
    assert item.uri == f"{bucket_lake.uri}/{partition}/part-00000.{version}.csv"
    assert item.name == "part-00000.csv" and item.suffix == ".csv"


def test_a_concurrent_publishs_fresh_upload_survives_another_publish(
    bucket_lake: ObjectStoreLake,
) -> None:
    """Objects no pointer names go only once stale: they may be another attempt's upload."""
    partition = "raw/orders/ds=2026-03-01"
    _publish(bucket_lake, RAW_ORDERS, {"part-00000.csv": "old"})
    bucket_lake.write_bytes(f"{partition}/part-00000.0123456789ab.csv", b"other attempt")
    _publish(bucket_lake, RAW_ORDERS, {"part-00000.csv": "new"})
    assert f"{partition}/part-00000.0123456789ab.csv" in _objects(bucket_lake, partition)
    assert _texts(bucket_lake, RAW_ORDERS) == {"part-00000.csv": "new"}


def test_a_killed_first_publish_is_no_data_and_goes_with_the_next_publish(
    bucket_lake: ObjectStoreLake,
) -> None:
    partition = "raw/orders/ds=2026-03-01"
    bucket_lake.write_bytes(f"{partition}/{PENDING}", b"0123456789ab")
    bucket_lake.write_bytes(f"{partition}/part-00000.0123456789ab.csv", b"half")
    assert bucket_lake.files(RAW_ORDERS, DAY) == []
    assert bucket_lake.partitions(RAW_ORDERS) == []
    _publish(bucket_lake, RAW_ORDERS, {"part-00000.csv": "whole"})
    version = _pointer_of(bucket_lake, partition)["version"]
    assert _objects(bucket_lake, partition) == [
        f"{partition}/{POINTER}",
        f"{partition}/part-00000.{version}.csv",
    ]


def test_a_delivery_without_a_pointer_is_read_as_it_is(bucket_lake: ObjectStoreLake) -> None:
    """Upstream writes plain objects under raw/orders/ds=D/, as into a folder."""
    partition = "raw/orders/ds=2026-03-01"
    header = "order_id,customer_id,order_ts,amount,items\n"
    bucket_lake.write_bytes(
        f"{partition}/orders-a.csv", f"{header}o1,c1,2026-03-01T10:00:00Z,9.5,1\n".encode()
    )
    bucket_lake.write_bytes(f"{partition}/_SUCCESS", b"")
    assert bucket_lake.partitions(RAW_ORDERS) == [DAY]
    [item] = bucket_lake.files(RAW_ORDERS, DAY)
    assert item.uri == f"{bucket_lake.uri}/{partition}/orders-a.csv"
    assert check_landing(bucket_lake, DAY).rows == 1
    bucket_lake.remove(RAW_ORDERS, DAY)
    assert _objects(bucket_lake, partition) == []


def test_a_failed_publish_uploads_nothing_the_pointer_names(bucket_lake: ObjectStoreLake) -> None:
    _publish(bucket_lake, RAW_ORDERS, {"part-00000.csv": "old"})
    before = _objects(bucket_lake, "raw/orders")
    with pytest.raises(ValueError), bucket_lake.publishing(RAW_ORDERS, DAY) as folder:
        (folder / "part-00000.csv").write_text("new")
        raise ValueError("audit failed")
    assert _objects(bucket_lake, "raw/orders") == before


def test_local_folder_names_are_refused_with_what_to_use_instead(
    bucket_lake: ObjectStoreLake,
) -> None:
    with pytest.raises(ConfigError, match=r"CHURNFLOW_LAKE=s3a://.*files\(\)"):
        bucket_lake.partition_path(RAW_ORDERS, DAY)


def test_the_generate_step_writes_a_bucket_lake_through_the_cli(
    bucket_lake: ObjectStoreLake, s3_env: dict[str, str]
) -> None:
    result = run_cli(
        "generate", "--start", "2026-03-01", "--end", "2026-03-03", "--customers", "50",
        "--quiet", lake=f"s3://{bucket_lake.base}", env=s3_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert bucket_lake.uri in result.stdout
    days = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    assert bucket_lake.partitions(RAW_ORDERS) == days
    assert bucket_lake.partitions(RAW_CUSTOMERS) == days
    assert all(item.size > 0 for item in bucket_lake.files(RAW_ORDERS, days[0]))


def test_spark_reads_the_bucket_through_s3a_with_the_same_aws_variables() -> None:
    settings = s3a_settings({"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "eu-west-1"})
    assert settings["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert settings["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert s3a_settings({}) == S3A_SETTINGS  # AWS itself: the SDK's defaults


def test_the_python_readers_of_the_steps_read_a_bucket_lake(lake: Lake) -> None:
    """Scoring's footer read and the drift step's predictions read go through the lake."""
    frame = pd.DataFrame({"customer_id": ["c1", "c2"], SCORE: [0.25, 0.75]})
    for dataset in (CUSTOMER_FEATURES, PREDICTIONS):
        with lake.publishing(dataset, DAY) as folder:
            frame.to_parquet(folder / "part-00000.parquet")
    features = day_features(lake, DAY)
    assert features.rows == 2 and features.files[0].endswith(".parquet")
    read = predictions_of(lake, DAY)
    assert read is not None and read[SCORE].tolist() == [0.25, 0.75]


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_the_landing_check_reads_a_bucket_lake(
    bucket_lake: ObjectStoreLake, file_format: str
) -> None:
    request = GenerateRequest(
        start=DAY, end=DAY, customers=50, file_format=file_format, defect=None, defect_ds=None
    )
    generate(request, bucket_lake, progress=False)
    summary = check_landing(bucket_lake, DAY)
    assert summary.rows > 0 and summary.partition == bucket_lake.partition_uri(RAW_ORDERS, DAY)
    assert [item.relative for item in summary.files] == [
        f"raw/orders/ds=2026-03-01/part-00000.{file_format}"
    ]


def test_the_landing_check_names_an_empty_object_in_a_bucket(bucket_lake: ObjectStoreLake) -> None:
    _publish(bucket_lake, RAW_ORDERS, {"part-00000.csv": ""})
    with pytest.raises(LandingError, match=r"s3a://.*/part-00000\.\w+\.csv: file is empty"):
        check_landing(bucket_lake, DAY)


@pytest.mark.parametrize("step", ["validate", "ingest", "features"])
def test_the_steps_that_validate_stop_on_a_bucket_lake_before_spark(
    bucket_lake: ObjectStoreLake, step: str
) -> None:
    """They keep a GX Data Docs site, which only a folder lake holds: refused up front."""
    run = {
        "validate": lambda: validate(bucket_lake, DAY, "silver_orders"),
        "ingest": lambda: ingest_orders(bucket_lake, DAY),
        "features": lambda: build_features(bucket_lake, DAY),
    }[step]
    with pytest.raises(ConfigError, match=r"reports/gx/\w+ is a Great Expectations"):
        run()
    assert _objects(bucket_lake, "") == []  # nothing was written
