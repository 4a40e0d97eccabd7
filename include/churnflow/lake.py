"""Lake layout and the one way a partition is written: staged, then swapped in whole.

Readers (Spark, the landing sensor) skip names that start with `.` or `_`, so a partition is
staged under a hidden name beside its final place and renamed into it. Where the kernel
supports it the old and new folders are exchanged in one `renameat2` call, so a reader never
sees the partition missing; otherwise two renames leave a window of microseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

RAW_ORDERS = "raw/orders"
RAW_CUSTOMERS = "raw/customers"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def partition_path(lake: Path, dataset: str, ds: date) -> Path:
    """Folder of one daily partition, e.g. `<lake>/raw/orders/ds=2026-03-01`."""
    return lake / dataset / f"ds={ds.isoformat()}"


def is_data_file(path: Path) -> bool:
    """Hidden and marker files (`.staging-…`, `_SUCCESS`) are not data, as in Spark and Hive."""
    return path.is_file() and not path.name.startswith((".", "_"))


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


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging)  # now holds the replaced partition
        return
    retired = target.with_name(f".retired-{target.name}-{uuid.uuid4().hex}")
    target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired)


@contextmanager
def replace_partition(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target` whole.

    On any error the staging folder is removed and `target` is left exactly as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".staging-{target.name}-{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, target)


def remove_partition(target: Path) -> None:
    """Delete a partition as one rename away from readers, then free the space."""
    if not target.exists():
        return
    retired = target.with_name(f".retired-{target.name}-{uuid.uuid4().hex}")
    target.rename(retired)
    shutil.rmtree(retired)
