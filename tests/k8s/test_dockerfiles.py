"""The Dockerfiles of the three images, checked as text."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.k8s.deploy_files import (
    DOCKERFILES,
    REPO,
    TASK_IMAGES,
    dockerfile_instructions,
    env_assignments,
)

# --- Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_base_image_is_pinned_to_an_explicit_non_latest_tag(image: str) -> None:
    instructions = dockerfile_instructions(DOCKERFILES[image])
    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert bases, f"{image}: no FROM"
    for base in bases:
        assert "$" not in base, f"{image}: FROM {base} hides the tag in a build argument"
        if "@sha256:" in base:
            continue
        name, _, tag = base.rpartition(":")
        assert name and "/" not in tag, f"{image}: FROM {base} has no tag"
        assert tag != "latest", f"{image}: FROM {base} uses the latest tag"
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: FROM {base} is not a patch release"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [
        arguments
        for keyword, arguments in dockerfile_instructions(DOCKERFILES[image])
        if keyword == "USER"
    ]
    assert users, f"{image}: no USER, so it runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"{image}: USER {users[-1]} is not numeric (runAsNonRoot needs a uid)"
    assert int(uid) != 0, f"{image}: runs as root"


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_puts_the_churnflow_command_on_path(image: str) -> None:
    """The pod's command is `churnflow ...`: the script must land in a PATH directory."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "churnflow" in scripts
    instructions = dockerfile_instructions(DOCKERFILES[image])
    installs = [
        arguments
        for keyword, arguments in instructions
        if keyword == "RUN" and re.search(r"pip install [^&]*/build/churnflow", arguments)
    ]
    assert installs, f"{image}: the churnflow package is not installed"
    # pip into the image's system Python puts console scripts in /usr/local/bin.
    assert not any("--target" in run or "--user" in run for run in installs)
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            env.update(env_assignments(arguments))
    assert "/usr/local/bin" in env["PATH"].split(":")
    entrypoints = [arguments for keyword, arguments in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == "[]", f"{image}: the pod's command must be argv"


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_is_ready_for_a_read_only_root_filesystem(image: str) -> None:
    env: dict[str, str] = {}
    workdirs = []
    for keyword, arguments in dockerfile_instructions(DOCKERFILES[image]):
        if keyword == "ENV":
            env.update(env_assignments(arguments))
        if keyword == "WORKDIR":
            workdirs.append(arguments)
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert workdirs[-1] == "/tmp"


@pytest.mark.parametrize("image", ["airflow", "spark"])
def test_cpu_images_take_torch_from_the_pytorch_cpu_index(image: str) -> None:
    text = " ".join(arguments for _, arguments in dockerfile_instructions(DOCKERFILES[image]))
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "torch.version.cuda is None" in text


def test_train_image_installs_cuda_torch_with_its_dependencies() -> None:
    runs = [
        arguments
        for keyword, arguments in dockerfile_instructions(DOCKERFILES["train"])
        if keyword == "RUN"
    ]
    steps = [step.strip() for run in runs for step in run.split("&&")]
    torch_installs = [step for step in steps if "grep '^torch=='" in step and "install" in step]
    assert torch_installs, "train: torch is not installed on its own"
    assert all("--no-deps" not in step and "whl/cpu" not in step for step in torch_installs)
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(DOCKERFILES["train"]):
        if keyword == "ENV":
            env.update(env_assignments(arguments))
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_records_the_git_commit_it_was_built_from(image: str) -> None:
    """The task side tags its MLflow runs with CHURNFLOW_GIT_COMMIT (and CHURNFLOW_IMAGE)."""
    instructions = dockerfile_instructions(DOCKERFILES[image])
    [arg] = [i for i, (kw, args) in enumerate(instructions) if kw == "ARG" and "GIT_COMMIT" in args]
    envs = {i: env_assignments(args) for i, (kw, args) in enumerate(instructions) if kw == "ENV"}
    [set_at] = [i for i, env in envs.items() if env.get("CHURNFLOW_GIT_COMMIT") == "$GIT_COMMIT"]
    assert set_at > arg
    # After every layer that installs something, so a new commit rebuilds none of them.
    assert not any(kw in ("RUN", "COPY") for kw, _ in instructions[arg:])
    makefile = (REPO / "Makefile").read_text()
    assert "--build-arg GIT_COMMIT=$$(git rev-parse HEAD)" in makefile
