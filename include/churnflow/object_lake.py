"""The lake on an object store (`s3://bucket/prefix` or `s3a://…`), behind the same `Lake` API.

An object store has no rename, so a partition is published by a pointer instead of a folder
swap. Each published partition holds `_PUBLISHED.json`, which maps the names a step wrote
(`part-00000.parquet`, `examples/part-0.parquet`, `metrics.json`) to the objects that hold
them; those objects carry the version in their names (`part-00000.3f9c2a1b7d0e.parquet`).
Publishing uploads the staged files under a fresh version, replaces the pointer (one PUT,
atomic on S3 and its compatibles) and then deletes every other object of the partition, the
replaced version and leftovers of killed uploads alike. A failure before the PUT leaves the
pointer, and so the published partition, as it was.

Readers that go through the lake (`files`, `read_bytes`) follow the pointer and see the old
or the new partition, never a mix. A Spark scan of a dataset's prefix lists objects instead:
for the seconds between upload and delete it would see both versions' files, which the DAGs
never overlap (a day is read only after its producer finished). Names starting with `_` are
skipped by Spark and Hive, so the pointer is invisible to them.

Staging is local: the step writes into a temporary folder of its pod's scratch volume (Python
writers and Spark in local mode alike) and publishing uploads it. A Spark Connect server in
another pod cannot write there, so an object-store lake runs the Spark steps in local mode in
their pods (the shared-volume lake is the one for a cluster Spark Connect server; DESIGN.md).

Credentials and endpoint come from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for an S3-compatible store), which
Spark's s3a connector is given too (churnflow.spark).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn
from urllib.parse import urlparse

import pyarrow.fs as pafs

from churnflow.errors import ConfigError
from churnflow.lake import (
    OBJECT_STORE_SCHEMES,
    PARTITION_KEY,
    STAGING_PREFIX,
    Lake,
    LakeFile,
    Staging,
    is_data_name,
    partition_name,
)

POINTER = "_PUBLISHED.json"
# Uploads and deletes of one partition run side by side: a day's partition is a handful of
# files, a training set a few dozen, and each request waits on the network, not the CPU.
TRANSFER_THREADS = 8
_PARTITION_PART = re.compile(r"^[A-Za-z_]\w*=\d{4}-\d{2}-\d{2}$")


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 client from the standard AWS variables (and the SDK's credential chain:
    a pod's web identity or instance profile work without keys)."""
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def versioned_name(logical: str, version: str) -> str:
    """`examples/part-0.parquet` -> `examples/part-0.<version>.parquet`."""
    path = PurePosixPath(logical)
    return str(path.with_name(f"{path.stem}.{version}{path.suffix}"))


class ObjectStoreLake(Lake):
    """The lake in a bucket: names, listings, reads, local staging and pointer publishing."""

    def __init__(self, uri: str, filesystem: pafs.FileSystem | None = None) -> None:
        text = str(uri).strip()
        parsed = urlparse(text)
        if parsed.scheme not in OBJECT_STORE_SCHEMES or not parsed.netloc:
            raise ConfigError(
                f"CHURNFLOW_LAKE={uri!r}: an object-store lake is s3://bucket/prefix or "
                "s3a://bucket/prefix"
            )
        prefix = parsed.path.strip("/")
        self.base = f"{parsed.netloc}/{prefix}" if prefix else parsed.netloc
        self._filesystem = filesystem

    @cached_property
    def filesystem(self) -> pafs.FileSystem:  # type: ignore[override]
        return self._filesystem or s3_filesystem()

    def __repr__(self) -> str:
        return f"ObjectStoreLake({self.uri!r})"

    # names ------------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """`s3a://bucket/prefix`: Hadoop's connector scheme, what Spark and dbt are given."""
        return f"s3a://{self.base}"

    @property
    def root(self) -> NoReturn:  # type: ignore[override]
        self._no_folder("root")

    def dataset_path(self, dataset: str) -> NoReturn:
        self._no_folder("dataset_path")

    def partition_path(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> NoReturn:
        self._no_folder("partition_path")

    def local_folder(self, relative: str) -> NoReturn:
        raise ConfigError(
            f"CHURNFLOW_LAKE={self.uri}: {relative} is a Great Expectations Data Docs site, a "
            "tree of files that this release keeps in a folder lake only; run the steps that "
            "validate (ingest, features, validate) on a folder lake, e.g. a ReadWriteMany "
            "volume (CHURNFLOW_LAKE_PVC, docs/deploy.md)"
        )

    def dataset_uri(self, dataset: str) -> str:
        return f"{self.uri}/{dataset}"

    def partition_uri(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> str:
        return f"{self.dataset_uri(dataset)}/{partition_name(ds, key)}"

    def partition_shown(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> str:
        return self.partition_uri(dataset, ds, key)

    def relative(self, path: Path | PurePosixPath | str) -> str:
        text = str(path)
        for prefix in (f"{self.uri}/", f"s3://{self.base}/", f"{self.base}/"):
            if text.startswith(prefix):
                return text.removeprefix(prefix)
        return text

    def _key(self, relative: str) -> str:
        return f"{self.base}/{relative}".rstrip("/")

    def _no_folder(self, what: str) -> NoReturn:
        raise ConfigError(
            f"CHURNFLOW_LAKE={self.uri}: Lake.{what} names a local folder, which an object-store "
            "lake does not have; read through files(), read_bytes() or the partition's URI"
        )

    # the pointer ------------------------------------------------------------------------------
    def _pointer(self, partition_key: str) -> dict[str, Any] | None:
        try:
            with self.filesystem.open_input_stream(f"{partition_key}/{POINTER}") as stream:
                return json.loads(stream.read())
        except FileNotFoundError:
            return None

    def _partition_key(self, dataset: str, ds: date, key: str) -> str:
        return self._key(f"{dataset}/{partition_name(ds, key)}")

    def _lake_file(
        self, partition_key: str, logical: str, entry: dict[str, Any], published_at: float
    ) -> LakeFile:
        location = f"{partition_key}/{entry['object']}"
        return LakeFile(
            PurePosixPath(logical).name,
            PurePosixPath(location),
            int(entry["size"]),
            float(published_at),
            location=location,
            uri=f"s3a://{location}",
        )

    # listing and reading ----------------------------------------------------------------------
    def exists(self, dataset: str, ds: date | None = None, key: str = PARTITION_KEY) -> bool:
        if ds is not None:
            return self._pointer(self._partition_key(dataset, ds, key)) is not None
        selector = pafs.FileSelector(self._key(dataset), allow_not_found=True, recursive=False)
        return bool(self.filesystem.get_file_info(selector))

    def files(
        self, dataset: str, ds: date, key: str = PARTITION_KEY, folder: str = ""
    ) -> list[LakeFile]:
        partition_key = self._partition_key(dataset, ds, key)
        pointer = self._pointer(partition_key)
        if pointer is None:
            return []
        found = []
        for logical, entry in pointer["files"].items():
            parent, _, name = logical.rpartition("/")
            if parent == folder and is_data_name(name):
                found.append(
                    self._lake_file(partition_key, logical, entry, pointer["published_at"])
                )
        return sorted(found, key=lambda item: item.name)

    def published(self, dataset: str, key: str = PARTITION_KEY) -> dict[date, float]:
        """Partitions whose pointer names at least one data file -> when they were published."""
        days: dict[date, str] = {}
        for name in self.partition_folders(dataset, key):
            try:
                days[date.fromisoformat(name.removeprefix(f"{key}="))] = name
            except ValueError:
                continue
        dataset_key = self._key(dataset)
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            pointers = pool.map(lambda n: self._pointer(f"{dataset_key}/{n}"), days.values())
            found = {}
            for day, pointer in zip(days, pointers, strict=True):
                if pointer and any(
                    "/" not in logical and is_data_name(logical) for logical in pointer["files"]
                ):
                    found[day] = float(pointer["published_at"])
        return found

    def partition_folders(self, dataset: str, key: str = PARTITION_KEY) -> list[str]:
        selector = pafs.FileSelector(self._key(dataset), allow_not_found=True, recursive=False)
        return sorted(
            info.base_name
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{key}=")
        )

    def read_bytes(self, relative: str) -> bytes | None:
        """A small object by lake-relative name; one inside a published partition is read
        through the partition's pointer."""
        parts = relative.split("/")
        inside = [i for i, part in enumerate(parts[:-1]) if _PARTITION_PART.match(part)]
        if inside:
            cut = inside[-1] + 1
            partition_key = self._key("/".join(parts[:cut]))
            pointer = self._pointer(partition_key)
            entry = pointer["files"].get("/".join(parts[cut:])) if pointer else None
            if entry is not None:
                return self._read(f"{partition_key}/{entry['object']}")
        return self._read(self._key(relative))

    def _read(self, location: str) -> bytes | None:
        try:
            with self.filesystem.open_input_stream(location) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Replace a small object whole: one PUT, which S3 applies atomically."""
        with self.filesystem.open_output_stream(self._key(relative)) as stream:
            stream.write(data)
        return f"{self.uri}/{relative}"

    # staging and publishing -------------------------------------------------------------------
    @contextmanager
    def staging(self, area: str, label: str) -> Iterator[Staging]:
        """A local temporary folder for `area`, uploaded by `Staging.publish`; removed on exit."""
        root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{label}-"))
        try:
            yield Staging(self, area, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def install(self, staged: Path, dataset: str, ds: date, key: str = PARTITION_KEY) -> str:
        """Upload a staged partition under a new version, flip the pointer, drop the rest."""
        partition_key = self._partition_key(dataset, ds, key)
        version = uuid.uuid4().hex[:12]
        files = {
            path.relative_to(staged).as_posix(): path
            for path in sorted(staged.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
        objects = {logical: versioned_name(logical, version) for logical in files}
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            list(
                pool.map(
                    lambda logical: self._upload(
                        files[logical], f"{partition_key}/{objects[logical]}"
                    ),
                    files,
                )
            )
        pointer = {
            "version": version,
            "published_at": time.time(),
            "files": {
                logical: {"object": objects[logical], "size": files[logical].stat().st_size}
                for logical in files
            },
        }
        self.write_bytes(
            f"{self.relative(partition_key)}/{POINTER}", json.dumps(pointer, indent=1).encode()
        )
        keep = {f"{partition_key}/{name}" for name in objects.values()}
        self._delete_objects(partition_key, keep=keep | {f"{partition_key}/{POINTER}"})
        return self.partition_uri(dataset, ds, key)

    def _upload(self, source: Path, location: str) -> None:
        with source.open("rb") as reader, self.filesystem.open_output_stream(location) as out:
            shutil.copyfileobj(reader, out, 8 * 1024 * 1024)

    def _delete_objects(self, prefix: str, keep: Collection[str] = ()) -> None:
        selector = pafs.FileSelector(prefix, allow_not_found=True, recursive=True)
        doomed = [
            info.path
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File and info.path not in keep
        ]
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            list(pool.map(self.filesystem.delete_file, doomed))

    def remove(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> None:
        """Unpublish first (the pointer goes in one DELETE), then free the objects."""
        partition_key = self._partition_key(dataset, ds, key)
        try:
            self.filesystem.delete_file(f"{partition_key}/{POINTER}")
        except FileNotFoundError:
            return
        self._delete_objects(partition_key)

    def sweep(self, area: str, label: str) -> list[str]:
        """Nothing to sweep in the bucket: staging is local and a killed upload's objects go
        with the partition's next publish."""
        return []
