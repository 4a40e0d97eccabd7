"""The lake: the one way a step lists, reads, stages and publishes data, keyed by its URI.

`CHURNFLOW_LAKE` is a folder or a `file://` URI (on a laptop, or a ReadWriteMany volume that
every task pod mounts at the same path), or an object store `s3://bucket/prefix` (churnflow.
object_lake, same interface), so steps never build paths themselves.

Publishing is write, audit, publish. A step writes into a hidden staging folder of the
dataset's area (readers, Spark and Hive skip names that start with `.` or `_`), checks what it
wrote (dbt tests, GX suite, row rules) while it is still invisible, and only then swaps each
staged partition into place. Where the kernel supports it the old and new folders are
exchanged in one `renameat2` call, so a reader sees either the old or the new partition, never
none and never a mix; elsewhere two renames leave a window of microseconds. A failure before
the swap leaves the published partition byte-identical. Staging and retired folders that a
killed step left behind are swept by the next staging of the same area.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePath
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pyarrow.fs as pafs

from churnflow.errors import ConfigError

RAW_ORDERS = "raw/orders"
RAW_CUSTOMERS = "raw/customers"
SILVER_ORDERS = "silver/orders"
QUARANTINE_ORDERS = "quarantine/orders"
FEATURES = "features"
CUSTOMER_FEATURES = "features/customer_features"
PREDICTIONS = "predictions/churn"
SHADOW_PREDICTIONS = "predictions/churn_shadow"
SCORING_LEDGER = "predictions/churn_ledger"
DRIFT = "monitoring/drift"
DECISIONS = "monitoring/decisions"
PROMOTIONS = "monitoring/promotions"
REPORTS = "reports"

OBJECT_STORE_SCHEMES = ("s3", "s3a")
PARTITION_KEY = "ds"
STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"
# A staging or retired folder of another partition is swept once it is older than any step
# may run (the DAG policy's execution_timeout is 2 h), so a parallel day is never touched.
STALE_AFTER_S = 6 * 3600

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def is_object_store_uri(uri: str) -> bool:
    """`s3://` and `s3a://` lakes live in a bucket (churnflow.object_lake)."""
    return urlparse(str(uri).strip()).scheme in OBJECT_STORE_SCHEMES


def file_uri(path: Path) -> str:
    """`file:///abs/path` as Spark and Hadoop take it: not percent-encoded (`Path.as_uri()`
    would turn the `=` of `ds=…` into `%3D`, which Hadoop keeps literally)."""
    return f"file://{path.as_posix()}"


def partition_name(ds: date, key: str = PARTITION_KEY) -> str:
    """`ds=2026-03-01`: the folder name of one partition."""
    return f"{key}={ds.isoformat()}"


def partition_names(days: Sequence[date], shown: int = 5) -> str:
    """`ds=2026-03-01, ds=2026-03-08 and 3 more`: a list of partitions as messages name them."""
    names = ", ".join(partition_name(day) for day in days[:shown])
    return names + (f" and {len(days) - shown} more" if len(days) > shown else "")


def partition_relative(dataset: str, ds: date, key: str = PARTITION_KEY) -> str:
    """`features/customer_features/ds=2026-03-01`: a partition's lake-relative name, for
    messages and for the small files (manifests, ledgers, decisions) kept in partitions."""
    return f"{dataset}/{partition_name(ds, key)}"


def is_data_name(name: str) -> bool:
    """Hidden and marker names (`.staging-…`, `_SUCCESS`) are not data, as in Spark and Hive."""
    return not name.startswith((".", "_"))


@dataclass(frozen=True)
class LakeFile:
    """One data file of a partition: `location` in the lake's `filesystem` (pyarrow), `uri`
    for Spark; `path` is the local file on a folder lake, the object's key on an object store."""

    name: str
    path: PurePath
    size: int
    mtime: float
    location: str = ""
    uri: str = ""

    def __post_init__(self) -> None:
        if not self.location:
            object.__setattr__(self, "location", str(self.path))
        if not self.uri:
            object.__setattr__(self, "uri", file_uri(Path(self.path)))

    @property
    def suffix(self) -> str:
        """Of the name a step wrote (an object's name in a bucket carries a version)."""
        return PurePath(self.name).suffix

    @property
    def shown(self) -> str:
        """How messages name the file: its path in a folder lake, its URI in a bucket."""
        return str(self.path) if self.uri.startswith("file://") else self.uri


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the platform cannot (caller falls back)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(first))


def _swap_in(staged: Path, target: Path) -> None:
    """Put `staged` at `target`, replacing what was there in one step where possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        staged.rename(target)
        return
    if _exchange(staged, target):
        shutil.rmtree(staged)  # now holds the replaced partition
        return
    retired = target.with_name(f"{RETIRED_PREFIX}{target.name}-{uuid.uuid4().hex}")
    target.rename(retired)
    staged.rename(target)
    shutil.rmtree(retired)


class Staging:
    """A hidden folder under one area of the lake where a step writes before it publishes.

    Datasets inside it mirror the area: `partition_path("customer_state", ds)` is staged where
    `publish("customer_state", ds)` takes it from. An empty name is the area itself (a single
    dataset such as `silver/orders`).
    """

    def __init__(self, lake: Lake, area: str, root: Path) -> None:
        self.lake = lake
        self.area = area
        self.root = root

    @property
    def uri(self) -> str:
        return file_uri(self.root)

    def dataset_path(self, name: str = "") -> Path:
        return self.root / name if name else self.root

    def partition_path(self, name: str, ds: date, key: str = PARTITION_KEY) -> Path:
        return self.dataset_path(name) / partition_name(ds, key)

    def partition(self, ds: date, key: str = PARTITION_KEY) -> Path:
        """A single dataset's staged partition folder, created empty for a writer."""
        path = self.partition_path("", ds, key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, name: str, ds: date, key: str = PARTITION_KEY) -> str:
        """Swap the staged partition into the published dataset; returns its URI."""
        staged = self.partition_path(name, ds, key)
        if not staged.is_dir():
            raise FileNotFoundError(f"nothing staged for {self.area}/{name} {partition_name(ds)}")
        dataset = f"{self.area}/{name}" if name else self.area
        return self.lake.install(staged, dataset, ds, key)


class Lake:
    """The lake behind `CHURNFLOW_LAKE`: names, listings, reads, staging and publishing."""

    def __new__(cls, uri: str, *args: object, **kwargs: object) -> Lake:
        if cls is Lake and is_object_store_uri(uri):
            from churnflow.object_lake import ObjectStoreLake

            return super().__new__(ObjectStoreLake)
        return super().__new__(cls)

    def __getnewargs__(self) -> tuple[str]:
        """pickle and copy rebuild a lake through __new__, which dispatches on the URI."""
        return (self.uri,)

    # Whether the lake keeps trees of files a library writes itself (GX Data Docs sites).
    holds_folders = True

    def __init__(self, uri: str) -> None:
        text = str(uri).strip()
        root = text.removeprefix("file://")
        if "://" in root:
            raise ConfigError(
                f"CHURNFLOW_LAKE={uri!r}: a lake is a folder (a path or file:// URI, also a "
                "volume mounted into every pod) or an object store (s3://bucket/prefix)"
            )
        self.root = Path(root).expanduser().resolve()

    @classmethod
    def of(cls, lake: Lake | Path | str) -> Lake:
        """A Lake from a Lake, a folder or a URI (library callers and tests pass folders)."""
        return lake if isinstance(lake, Lake) else cls(str(lake))

    @classmethod
    def from_settings(cls) -> Lake:
        from churnflow.settings import get_settings

        return cls(get_settings().lake)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # names ------------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """`file:///abs/path`: what Spark and dbt are given."""
        return file_uri(self.root)

    @property
    def shown(self) -> str:
        """How messages name the lake: its folder here, its URI in a bucket."""
        return str(self.root)

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem that `LakeFile.location` is read with."""
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem()

    def dataset_path(self, dataset: str) -> Path:
        return self.root / dataset

    def dataset_uri(self, dataset: str) -> str:
        return file_uri(self.dataset_path(dataset))

    def partition_path(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> Path:
        return self.dataset_path(dataset) / partition_name(ds, key)

    def partition_uri(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> str:
        return file_uri(self.partition_path(dataset, ds, key))

    def partition_shown(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> str:
        """How messages name a partition: its folder here, its URI in a bucket."""
        return str(self.partition_path(dataset, ds, key))

    def relative(self, path: Path) -> str:
        """A path inside the lake as people read it in messages: `raw/orders/ds=…/a.csv`."""
        return path.relative_to(self.root).as_posix()

    # listing and reading ------------------------------------------------------------------------
    def exists(self, dataset: str, ds: date | None = None, key: str = PARTITION_KEY) -> bool:
        path = self.dataset_path(dataset) if ds is None else self.partition_path(dataset, ds, key)
        return path.is_dir()

    def files(
        self, dataset: str, ds: date, key: str = PARTITION_KEY, folder: str = ""
    ) -> list[LakeFile]:
        """The data files of one partition (or of a `folder` inside it), by name; empty when
        it is missing."""
        partition = self.partition_path(dataset, ds, key)
        return self.data_files(partition / folder if folder else partition)

    def partitions(self, dataset: str, key: str = PARTITION_KEY) -> list[date]:
        """Published partitions that hold at least one data file, oldest first."""
        return sorted(self.published(dataset, key))

    def published(self, dataset: str, key: str = PARTITION_KEY) -> dict[date, float]:
        """Published partitions with data -> when they were written (newest file's mtime).

        Publishing moves folders without rewriting them, so this is when the partition's
        content was produced: a day rebuilt after another shows a later time.
        """
        root = self.dataset_path(dataset)
        if not root.is_dir():
            return {}
        found: dict[date, float] = {}
        prefix = f"{key}="
        for entry in os.scandir(root):
            if not entry.is_dir() or not entry.name.startswith(prefix):
                continue
            try:
                day = date.fromisoformat(entry.name.removeprefix(prefix))
            except ValueError:
                continue
            files = self.data_files(Path(entry.path))
            if files:
                found[day] = max(item.mtime for item in files)
        return found

    def partition_folders(self, dataset: str, key: str = PARTITION_KEY) -> list[str]:
        """Names of every partition folder (`ds=…`), with data or not, sorted: what a metastore
        repair would register."""
        root = self.dataset_path(dataset)
        if not root.is_dir():
            return []
        prefix = f"{key}="
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name.startswith(prefix))

    def read_bytes(self, relative: str) -> bytes | None:
        """A small object (manifest, ledger, marker) by lake-relative name; None when absent."""
        path = self.root / relative
        return path.read_bytes() if path.is_file() else None

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Replace a small object whole (written beside it, then renamed); returns its URI."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{STAGING_PREFIX}{path.name}-{uuid.uuid4().hex}")
        temporary.write_bytes(data)
        temporary.replace(path)
        return file_uri(path)

    def local_folder(self, relative: str) -> Path:
        """A folder of the lake for libraries that write trees of files (GX Data Docs)."""
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    # staging and publishing ---------------------------------------------------------------------
    @contextmanager
    def staging(self, area: str, label: str) -> Iterator[Staging]:
        """A hidden staging folder under `area`, removed on exit with whatever was not published.

        `label` names what is staged (usually the partition, `ds=…`); leftovers of an earlier,
        killed run with the same label are swept first, and any other staging or retired folder
        of the area once it is older than STALE_AFTER_S.
        """
        base = self.dataset_path(area)
        base.mkdir(parents=True, exist_ok=True)
        self.sweep(area, label)
        root = base / f"{STAGING_PREFIX}{label}-{uuid.uuid4().hex}"
        root.mkdir()
        try:
            yield Staging(self, area, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    @contextmanager
    def publishing(
        self,
        dataset: str,
        ds: date,
        *,
        audit: Callable[[Path], None] | None = None,
        key: str = PARTITION_KEY,
    ) -> Iterator[Path]:
        """Write one partition: yield an empty staged folder, audit it, then swap it in.

        `audit` gets the staged folder and raises when the data must not be published; on any
        error the staged data is dropped and the published partition stays as it was.
        """
        label = partition_name(ds, key)
        with self.staging(dataset, label) as staging:
            folder = staging.partition(ds, key)
            yield folder
            if audit is not None:
                audit(folder)
            staging.publish("", ds, key)

    def install(self, staged: Path, dataset: str, ds: date, key: str = PARTITION_KEY) -> str:
        """Put a staged partition folder in place of the published one; returns its URI."""
        target = self.partition_path(dataset, ds, key)
        _swap_in(staged, target)
        return file_uri(target)

    def remove(self, dataset: str, ds: date, key: str = PARTITION_KEY) -> None:
        """Delete a partition as one rename away from readers, then free the space."""
        target = self.partition_path(dataset, ds, key)
        if not target.exists():
            return
        retired = target.with_name(f"{RETIRED_PREFIX}{target.name}-{uuid.uuid4().hex}")
        target.rename(retired)
        shutil.rmtree(retired)

    def sweep(self, area: str, label: str) -> list[str]:
        """Remove leftovers of killed steps under `area`; returns what was removed."""
        base = self.dataset_path(area)
        if not base.is_dir():
            return []
        removed = []
        now = time.time()
        # The area itself, and its datasets (not their partition folders, `ds=…`).
        datasets = (p for p in base.iterdir() if p.is_dir() and is_data_name(p.name))
        for folder in (base, *(p for p in datasets if "=" not in p.name)):
            for entry in folder.iterdir():
                if not entry.name.startswith((STAGING_PREFIX, RETIRED_PREFIX)):
                    continue
                mine = entry.name.startswith(
                    (f"{STAGING_PREFIX}{label}-", f"{RETIRED_PREFIX}{label}-")
                )
                if mine or now - entry.stat().st_mtime > STALE_AFTER_S:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed.append(self.relative(entry))
        return removed

    @staticmethod
    def data_files(folder: Path) -> list[LakeFile]:
        if not folder.is_dir():
            return []
        files = []
        for entry in os.scandir(folder):
            if entry.is_file() and is_data_name(entry.name):
                stat = entry.stat()
                files.append(LakeFile(entry.name, Path(entry.path), stat.st_size, stat.st_mtime))
        return sorted(files, key=lambda item: item.name)
