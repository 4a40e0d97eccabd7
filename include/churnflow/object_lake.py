"""The lake on an object store (`s3://bucket/prefix` or `s3a://…`), behind the same `Lake` API.

An object store has no rename, so a partition is published by a pointer instead of a folder
swap. Each published partition holds `_PUBLISHED.json`, which maps the names a step wrote
(`part-00000.parquet`, `examples/part-0.parquet`, `metrics.json`) to the objects that hold
them; those objects carry the version in their names (`part-00000.3f9c2a1b7d0e.parquet`).
Publishing writes a `_PUBLISHING` marker, uploads the staged files under a fresh version,
replaces the pointer (one PUT, atomic on S3 and its compatibles) and then deletes the replaced
version's objects and the marker. A failure before the PUT leaves the pointer, and so the
published partition, as it was. Objects no pointer names (a killed upload's) are deleted by
the partition's next publish once older than any step may run, so a concurrent publish of the
same partition never loses its fresh upload.

A partition without a pointer is one a producer outside the lake wrote (a delivery to `raw/`,
as the landing contract has it): its objects count as they are, unless the marker says a
first publish is under way or was killed.

Readers that go through the lake (`files`, `read_bytes`) follow the pointer and see the old
or the new partition, never a mix. A Spark scan of a dataset's prefix lists objects instead:
it sees both versions' files for the seconds between upload and delete, and a killed upload's
objects until they are swept; the DAGs never read a day while its producer runs. Names
starting with `_` are skipped by Spark and Hive, so the pointer and marker are invisible to
them.

Staging is local: the step writes into a temporary folder of its pod's scratch volume (Python
writers and Spark in local mode alike) and publishing uploads it. A Spark Connect server in
another pod cannot write there, so an object-store lake runs the Spark steps in local mode in
their pods (the shared-volume lake is the one for a cluster Spark Connect server; DESIGN.md).

Credentials and endpoint come from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for an S3-compatible store), which
Spark's s3a connector is given too (churnflow.spark).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
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
    STALE_AFTER_S,
    Lake,
    LakeFile,
    Staging,
    is_data_name,
    partition_name,
)

POINTER = "_PUBLISHED.json"
# Written before a publish uploads and deleted after its pointer: a partition with this and no
# pointer holds a first publish under way (or killed), not a delivery.
PENDING = "_PUBLISHING"
# Uploads and deletes of one partition run side by side: a day's partition is a handful of
# files, a training set a few dozen, and each request waits on the network, not the CPU.
TRANSFER_THREADS = 8
_PARTITION_PART = re.compile(r"^[A-Za-z_]\w*=\d{4}-\d{2}-\d{2}$")


def aws_endpoint(env: Mapping[str, str] = os.environ) -> str | None:
    """An S3-compatible store's endpoint URL, as the AWS SDKs read it; None for AWS itself."""
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def aws_region(env: Mapping[str, str] = os.environ) -> str | None:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 client from the standard AWS variables (and the SDK's credential chain:
    a pod's web identity or instance profile work without keys)."""
    options: dict[str, Any] = {}
    endpoint = aws_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    region = aws_region()
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


@dataclass(frozen=True)
class Current:
    """What a partition holds now: logical name -> {"object", "size"}, and since when."""

    files: dict[str, dict[str, Any]]
    published_at: float

    @property
    def has_data(self) -> bool:
        return any("/" not in name and is_data_name(name) for name in self.files)


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
    holds_folders = False

    @property
    def uri(self) -> str:
        """`s3a://bucket/prefix`: Hadoop's connector scheme, what Spark and dbt are given."""
        return f"s3a://{self.base}"

    @property
    def shown(self) -> str:
        return self.uri

    @property
    def root(self) -> NoReturn:  # type: ignore[override]
        self._no_folder("root")

    def dataset_path(self, dataset: str) -> NoReturn:
        self._no_folder("dataset_path")

    def partition_path(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> NoReturn:
        self._no_folder("partition_path")

    def local_folder(self, relative: str) -> NoReturn:
        self._no_folder("local_folder")

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

    def _objects(self, prefix: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(prefix, allow_not_found=True, recursive=True)
        return [
            info
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
        ]

    def _current(self, partition_key: str) -> Current | None:
        """The partition's files and when they were published; None when it has none.

        The pointer wins. Without one, objects a producer outside the lake wrote (a delivery
        to `raw/`, as the landing contract has it) count as they are, unless the partition's
        first publish is under way or was killed: its marker says the objects are not data.
        """
        pointer = self._pointer(partition_key)
        if pointer is not None:
            return Current(pointer["files"], float(pointer["published_at"]))
        objects = self._objects(partition_key)
        names = {info.path.removeprefix(f"{partition_key}/"): info for info in objects}
        if not names or PENDING in names:
            return None
        files = {name: {"object": name, "size": info.size} for name, info in names.items()}
        return Current(files, max(info.mtime.timestamp() for info in objects))

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
            return self._current(self._partition_key(dataset, ds, key)) is not None
        selector = pafs.FileSelector(self._key(dataset), allow_not_found=True, recursive=False)
        return bool(self.filesystem.get_file_info(selector))

    def files(
        self, dataset: str, ds: date, key: str = PARTITION_KEY, folder: str = ""
    ) -> list[LakeFile]:
        partition_key = self._partition_key(dataset, ds, key)
        current = self._current(partition_key)
        if current is None:
            return []
        found = []
        for logical, entry in current.files.items():
            parent, _, name = logical.rpartition("/")
            if parent == folder and is_data_name(name):
                found.append(self._lake_file(partition_key, logical, entry, current.published_at))
        return sorted(found, key=lambda item: item.name)

    def published(self, dataset: str, key: str = PARTITION_KEY) -> dict[date, float]:
        """Partitions with at least one data file -> when they were published."""
        days: dict[date, str] = {}
        for name in self.partition_folders(dataset, key):
            try:
                days[date.fromisoformat(name.removeprefix(f"{key}="))] = name
            except ValueError:
                continue
        dataset_key = self._key(dataset)
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            states = pool.map(lambda n: self._current(f"{dataset_key}/{n}"), days.values())
            return {
                day: current.published_at
                for day, current in zip(days, states, strict=True)
                if current is not None and current.has_data
            }

    def partition_folders(self, dataset: str, key: str = PARTITION_KEY) -> list[str]:
        selector = pafs.FileSelector(self._key(dataset), allow_not_found=True, recursive=False)
        return sorted(
            info.base_name
            for info in self.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{key}=")
        )

    def read_bytes(self, relative: str) -> bytes | None:
        """A small object by lake-relative name; one inside a partition is read through the
        partition's pointer. A pointer naming a vanished object (a publish replaced it in
        between) is read again once; a second miss is an error, not an absent object."""
        parts = relative.split("/")
        inside = [i for i, part in enumerate(parts[:-1]) if _PARTITION_PART.match(part)]
        if not inside:
            return self._read(self._key(relative))
        cut = inside[0] + 1
        partition_key, logical = self._key("/".join(parts[:cut])), "/".join(parts[cut:])
        for _attempt in range(2):
            current = self._current(partition_key)
            entry = current.files.get(logical) if current else None
            if entry is None:
                return None
            data = self._read(f"{partition_key}/{entry['object']}")
            if data is not None:
                return data
        raise FileNotFoundError(
            f"{self.uri}/{relative}: the partition's pointer names {entry['object']}, which is "
            "gone; another publish of the partition is deleting what it replaced"
        )

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
        previous = self._pointer(partition_key)
        version = uuid.uuid4().hex[:12]
        files = {
            path.relative_to(staged).as_posix(): path
            for path in sorted(staged.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }
        objects = {logical: versioned_name(logical, version) for logical in files}
        marker = f"{self.relative(partition_key)}/{PENDING}"
        self.write_bytes(marker, version.encode())
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
        self._drop_replaced(partition_key, previous, set(objects.values()))
        return self.partition_uri(dataset, ds, key)

    def _drop_replaced(
        self, partition_key: str, previous: dict[str, Any] | None, named: set[str]
    ) -> None:
        """After a publish: delete the replaced version's objects and the marker. Other objects
        no pointer names go too when there was no pointer before (a delivery the publish
        replaced, a killed first publish), else once older than any step may run, so the
        fresh upload of a concurrent publish of the same partition is never touched."""
        replaced = {entry["object"] for entry in previous["files"].values()} if previous else set()
        stale_before = time.time() - STALE_AFTER_S
        doomed = []
        for info in self._objects(partition_key):
            name = info.path.removeprefix(f"{partition_key}/")
            if name in named or name == POINTER:
                continue
            if (
                previous is None
                or name in replaced
                or name == PENDING
                or info.mtime.timestamp() < stale_before
            ):
                doomed.append(info.path)
        self._delete(doomed)

    def _upload(self, source: Path, location: str) -> None:
        with source.open("rb") as reader, self.filesystem.open_output_stream(location) as out:
            shutil.copyfileobj(reader, out, 8 * 1024 * 1024)

    def _delete(self, locations: Collection[str]) -> None:
        with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            list(pool.map(self.filesystem.delete_file, locations))

    def remove(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> None:
        """Unpublish first (the pointer goes in one DELETE), then free the objects."""
        partition_key = self._partition_key(dataset, ds, key)
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(f"{partition_key}/{POINTER}")
        self._delete([info.path for info in self._objects(partition_key)])

    def sweep(self, area: str, label: str) -> list[str]:
        """Nothing to sweep here: staging is local, and a killed upload's objects go with the
        partition's next publish (`_drop_replaced`)."""
        return []
