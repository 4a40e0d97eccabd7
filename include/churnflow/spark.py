"""The one place task code gets a SparkSession.

With `SPARK_REMOTE` set (e.g. `sc://127.0.0.1:15002`) it is a Spark Connect client of a
long-lived server that owns the metastore, so a step pays no JVM start. Without it, a classic
local session for a one-off run or a pod, tuned for small machines and keeping its metastore
and warehouse under the state folder instead of the current directory.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from churnflow.errors import ConfigError
from churnflow.lake import is_object_store_uri

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SHUFFLE_PARTITIONS = "8"
# List partition folders on the driver: Spark's parallel listing job, used past 32 folders,
# costs 2-10 s on a small machine, the driver milliseconds.
LISTING_THRESHOLD = "100000"
# What every Spark that churnflow starts is given: the classic session below and the local
# stack's Spark Connect server (devstack); a cluster's Spark Connect server wants the same.
SESSION_SETTINGS = {
    "spark.sql.shuffle.partitions": SHUFFLE_PARTITIONS,
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.sources.parallelPartitionDiscovery.threshold": LISTING_THRESHOLD,
    # The lake replaces a partition by swapping folders outside Spark (churnflow.lake); a
    # cached file listing of a table would then name files that are gone. Without the cache a
    # query lists its partitions' folders, milliseconds on a day's partitions.
    "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
    # Rows per Arrow batch to a Python UDF (batch scoring): at 1M rows 100k batches brought
    # the scoring job from 1.58x to 1.43x of in-process predict_proba (bench/score.py); a
    # batch is 10-20 MB per worker.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
    "spark.ui.enabled": "false",
}


# Hadoop's s3a connector (its jars are installed in the spark image, not by pip: README) reads
# an object-store lake with the same AWS variables the Python side uses. Spark never writes
# there: steps stage locally and the lake uploads (churnflow.object_lake), since s3a emulates
# the committers' renames by copying.
S3A_SETTINGS = {
    "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "spark.hadoop.fs.s3a.aws.credentials.provider": (
        "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
    ),
    # Object stores other than AWS (MinIO, Ceph) address buckets by path.
    "spark.hadoop.fs.s3a.path.style.access": "true",
}


def s3a_settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """S3A_SETTINGS plus the endpoint and region of an S3-compatible store, when set."""
    from churnflow.object_lake import aws_endpoint, aws_region

    settings = dict(S3A_SETTINGS)
    endpoint = aws_endpoint(env)
    if endpoint:
        settings["spark.hadoop.fs.s3a.endpoint"] = endpoint
        settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            endpoint.startswith("https://")
        ).lower()
    region = aws_region(env)
    if region:
        settings["spark.hadoop.fs.s3a.endpoint.region"] = region
    return settings


def spark_home_dir() -> Path:
    """Where a classic session keeps its warehouse and Derby metastore."""
    return Path(os.environ.get("CHURNFLOW_SPARK_DIR", ".churnflow/spark")).resolve()


def _check_remote(remote: str) -> None:
    """Fail in a second with a clear message instead of minutes of client retries (TRAPS.md)."""
    parsed = urlparse(remote)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 15002
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as err:
        raise ConfigError(
            f"SPARK_REMOTE={remote}: no Spark Connect server answers on {host}:{port} ({err}); "
            "start the local stack (`make up`) or unset SPARK_REMOTE for a local session"
        ) from err


def shared_session(remote: str, name: str) -> str:
    """`remote` with a fixed `session_id` for `name`: every process that asks for the same
    name joins one server-side session, and with it the session's Python workers (Spark
    Connect starts them per session, 2-3 s each time with their imports: TRAPS.md)."""
    session_id = uuid.uuid5(uuid.NAMESPACE_URL, f"churnflow:spark-session:{name}")
    base = remote if "/;" in remote else f"{remote.rstrip('/')}/"
    return f"{base};session_id={session_id}"


@lru_cache(maxsize=2)
def get_spark(shared: str | None = None) -> SparkSession:
    """The step's session. `shared` names a Spark Connect session that outlives the step, for
    steps whose Python UDFs load something heavy (the scoring step's model): such a step must
    change no session state (SQL settings, temporary views) and never stop the session. A
    classic local session ignores it."""
    from pyspark.sql import SparkSession

    remote = os.environ.get("SPARK_REMOTE")
    if remote:
        _check_remote(remote)
        address = shared_session(remote, shared) if shared else remote
        return SparkSession.builder.remote(address).getOrCreate()
    if shared:
        return get_spark()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    home = spark_home_dir()
    home.mkdir(parents=True, exist_ok=True)
    derby = f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true"
    builder = SparkSession.builder.master(
        os.environ.get("CHURNFLOW_SPARK_MASTER", "local[2]")
    ).appName("churnflow")
    settings = {
        **SESSION_SETTINGS,
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": derby,
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={home}",
    }
    from churnflow.settings import get_settings

    if is_object_store_uri(get_settings().lake):
        settings.update(s3a_settings())
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.enableHiveSupport().getOrCreate()
