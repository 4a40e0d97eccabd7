"""Each image's requirements.txt: the closure of its requirements.in, pinned by the lock.

`images/<name>/requirements.in` lists the packages an image needs, without versions. This
walks their dependencies through the metadata of the packages installed in this environment
(`make setup` installs exactly the lock, for Python 3.11 on Linux, the platform the lock is
resolved for) and writes every package reached, with the lock's pin, to
`images/<name>/requirements.txt`. So an image gets the lock's versions and only the packages
it needs; nothing is resolved again and nothing is fetched.

The line `churnflow` stands for the task package itself: its dependencies (pyproject.toml)
are walked, but it is installed from the source tree, so it gets no pin.

    python images/image_requirements.py          # write every image's requirements.txt
    python images/image_requirements.py --check  # exit 1 if a file is not what it would write
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.txt"
IMAGES = ("airflow", "spark", "train")
LOCAL_PROJECT = "churnflow"


class ImageRequirementsError(Exception):
    """The lock, the environment or an image's list do not fit together."""


def lock_pins(lock: Path = LOCK) -> dict[str, tuple[str, str]]:
    """{canonical name: (name as the lock spells it, version)} of every `name==version` line."""
    pins = {}
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        if not separator or ";" in version or " " in version:
            raise ImageRequirementsError(f"{lock.name}: {raw!r} is not a plain name==version pin")
        pins[canonicalize_name(name)] = (name.strip(), version.strip())
    return pins


def top_level(path: Path) -> list[Requirement]:
    """The requirements of one image's requirements.in (comments and blank lines skipped)."""
    lines = (raw.split("#", 1)[0].strip() for raw in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _local_project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def _installed_requirements(name: str, version: str) -> list[Requirement]:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ImageRequirementsError(
            f"{name} is pinned in the lock but not installed here: run `make setup`"
        ) from None
    # The local label (torch's `+cpu`) is the build, not the version the lock pins.
    if Version(dist.version).public != Version(version).public:
        raise ImageRequirementsError(
            f"{name} {dist.version} is installed but the lock pins {version}: run `make setup`"
        )
    return [Requirement(spec) for spec in dist.requires or []]


def closure(requirements: Iterable[Requirement], pins: dict[str, tuple[str, str]]) -> set[str]:
    """Canonical names of every locked package that `requirements` need on this platform.

    A package's extras count as soon as any path asks for them, so `pyspark[connect]` adds
    grpcio even when pyspark was reached without the extra first.
    """
    environment = default_environment()
    wanted: dict[str, set[str]] = {}
    pending = [req for req in requirements if req.marker is None or req.marker.evaluate()]
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        extras = {canonicalize_name(extra) for extra in req.extras}
        if name in wanted and extras <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(extras)
        if name == LOCAL_PROJECT:
            dependencies = _local_project_requirements()
        elif name in pins:
            if req.specifier and not req.specifier.contains(pins[name][1], prereleases=True):
                raise ImageRequirementsError(
                    f"{req} is asked for, but the lock pins {name}=={pins[name][1]}"
                )
            dependencies = _installed_requirements(*pins[name])
        else:
            raise ImageRequirementsError(f"{req} is needed but not in the lock: add it there")
        for dependency in dependencies:
            marker = dependency.marker
            if marker is None or any(
                marker.evaluate({**environment, "extra": extra}) for extra in {"", *wanted[name]}
            ):
                pending.append(dependency)
    wanted.pop(LOCAL_PROJECT, None)
    return set(wanted)


def render(image: str, pins: dict[str, tuple[str, str]] | None = None) -> str:
    """The requirements.txt of `image`, in the lock's order and spelling."""
    pins = lock_pins() if pins is None else pins
    names = closure(top_level(REPO / "images" / image / "requirements.in"), pins)
    lines = [
        f"# Pins of the {image} image: the closure of images/{image}/requirements.in, each at",
        "# the version requirements.txt (the lock) pins. Written by `make image-requirements`.",
        *(f"{spelled}=={version}" for name, (spelled, version) in pins.items() if name in names),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    try:
        pins = lock_pins()
        stale = []
        for image in IMAGES:
            target = REPO / "images" / image / "requirements.txt"
            text = render(image, pins)
            if args.check:
                if not target.is_file() or target.read_text() != text:
                    stale.append(str(target.relative_to(REPO)))
            elif not target.is_file() or target.read_text() != text:
                target.write_text(text)
                print(f"wrote {target.relative_to(REPO)} ({text.count('==')} pins)")
    except ImageRequirementsError as err:
        print(f"image-requirements: {err}", file=sys.stderr)
        return 1
    if stale:
        print(
            f"image-requirements: {', '.join(stale)} differ from the lock's closure: "
            "run `make image-requirements`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
