"""dbt's parsed project, kept between runs, so a daily build does not parse the project again.

dbt parses the whole project again (about 2 s of a 9 s feature build at demo scale) whenever
`--vars` differ from the previous invocation's, and `churnflow features` passes the day's
values as vars on every run. Nothing in the project reads a run's value while it is parsed:
the configs and tests that depend on the day read it when their statement is compiled
(`macros/run_scope.sql`), so one parsed manifest serves every day. It is pickled under dbt's
state folder, keyed by dbt's version, the profile target and the bytes of the project's files,
and handed to `dbtRunner(manifest=...)`; an edit to a model or macro changes the key and the
next run parses afresh. Each run unpickles its own copy, as dbt annotates the manifest while
it compiles. What is pickled is the manifest's public fields, not the object: dbt 1.11's
`Manifest.__reduce_ex__` lists fewer fields than the class has, so an unpickled Manifest has
its lookups shifted into the wrong attributes and fails on the first `ref`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow.errors import ConfigError

if TYPE_CHECKING:
    from churnflow.features import DbtSettings

# The project's own files: what a parse reads (dbt's target/ and logs/ live elsewhere).
PROJECT_SUFFIXES = (".sql", ".yml", ".yaml", ".md", ".csv")
_KEEP = 3  # manifests of earlier project versions kept beside the current one


def project_key(project_dir: Path, target: str) -> str:
    """What a parsed manifest depends on: dbt's version, the target and every project file."""
    from dbt.version import __version__ as dbt_version

    digest = hashlib.sha256(f"{dbt_version}\n{target}\n".encode())
    for path in sorted(project_dir.rglob("*")):
        if path.is_file() and path.suffix in PROJECT_SUFFIXES:
            digest.update(f"{path.relative_to(project_dir)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_or_parse(settings: DbtSettings, dbt_vars: Mapping) -> Any:
    """The project's manifest: unpickled when this version of the project was parsed before,
    else parsed now (with this run's vars, which only the parse's Jinja sees) and kept."""
    cache = settings.state_dir / "manifests"
    path = cache / f"manifest-{project_key(settings.project_dir, settings.target)}.pickle"
    try:
        with path.open("rb") as handle:
            return _from_fields(pickle.load(handle))
    except FileNotFoundError:
        pass
    except Exception:  # a torn or foreign file: parse again and replace it
        path.unlink(missing_ok=True)
    manifest = _parse(settings, dbt_vars)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, prefix=".manifest-", delete=False) as handle:
        pickle.dump(_fields(manifest), handle, protocol=pickle.HIGHEST_PROTOCOL)
    Path(handle.name).replace(path)  # concurrent runs each write a whole file; the last one stays
    _prune(cache, keep=path)
    return manifest


def _fields(manifest: Any) -> dict[str, Any]:
    """The manifest's data: its public dataclass fields (the private ones are caches, rebuilt
    on first use, and a lock)."""
    return {
        field.name: getattr(manifest, field.name)
        for field in dataclasses.fields(manifest)
        if field.init and not field.name.startswith("_")
    }


def _from_fields(fields: dict[str, Any]) -> Any:
    from dbt.contracts.graph.manifest import Manifest

    return Manifest(**fields)


def _parse(settings: DbtSettings, dbt_vars: Mapping) -> Any:
    from dbt.cli.main import dbtRunner

    outcome = dbtRunner().invoke(
        ["parse", *settings.cli_args(), "--vars", json.dumps(dict(dbt_vars)), "--no-partial-parse"]
    )
    if not outcome.success or outcome.result is None:
        raise ConfigError(f"dbt could not parse the project: {outcome.exception}")
    return outcome.result


def _prune(cache: Path, keep: Path) -> None:
    """Remove all but the newest few manifests (one per project version that ran)."""
    others = sorted(
        (p for p in cache.glob("manifest-*.pickle") if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in others[_KEEP:]:
        stale.unlink(missing_ok=True)
