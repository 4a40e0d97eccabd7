"""The Dockerfiles of the three images, checked as text (no Docker engine here)."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from tests.k8s.deploy_files import (
    DOCKERFILES,
    REPO,
    SECRET_NAME,
    TASK_IMAGES,
    dockerfile_instructions,
    dockerfile_stages,
    stage_env,
)

VENV = "/opt/venv"
PYSPARK_JARS = f"{VENV}/lib/python3.11/site-packages/pyspark/jars"
S3A_CHECKSUMS = REPO / "images" / "spark" / "s3a-jars.sha1"


def final_stage(image: str) -> list[tuple[str, str]]:
    return dockerfile_stages(DOCKERFILES[image])[-1]


def runs(stage: list[tuple[str, str]]) -> list[str]:
    return [arguments for keyword, arguments in stage if keyword == "RUN"]


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- bases, stages, user -------------------------------------------------------------------


@pytest.mark.parametrize("image", DOCKERFILES)
def test_every_base_image_is_pinned_to_a_patch_release_tag_and_a_digest(image: str) -> None:
    bases = [stage[0][1].split()[0] for stage in dockerfile_stages(DOCKERFILES[image])]
    assert bases, f"{image}: no FROM"
    for base in bases:
        assert "$" not in base, f"{image}: FROM {base} hides the reference in a build argument"
        reference, _, digest = base.partition("@")
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{image}: FROM {base} has no digest"
        name, _, tag = reference.rpartition(":")
        assert name and "/" not in tag, f"{image}: FROM {base} has no tag"
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: FROM {base} is not a patch release"
    # The final stage runs the venv the builder made, whose python links to the base's.
    assert len(set(bases)) == 1, f"{image}: stages use different bases {bases}"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_the_venv_is_built_in_a_builder_stage_and_copied_into_the_final_one(image: str) -> None:
    stages = dockerfile_stages(DOCKERFILES[image])
    assert len(stages) >= 2, f"{image}: not a multi-stage build"
    builder = stages[0]
    assert builder[0][1].endswith(" AS builder"), f"{image}: the first stage is not `builder`"
    assert any(f"uv venv --python /usr/local/bin/python3.11 {VENV}" in run for run in runs(builder))
    final = stages[-1]
    assert ("COPY", f"--from=builder {VENV} {VENV}") in final
    # The build tools stay in the builder: the final stage installs no Python package.
    assert not any(re.search(r"\b(pip|uv)\b", run) for run in runs(final)), image
    assert stage_env(builder)["UV_COMPILE_BYTECODE"] == "1"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_each_image_installs_its_own_requirements_not_the_whole_lock(image: str) -> None:
    builder = dockerfile_stages(DOCKERFILES[image])[0]
    assert ("COPY", f"images/{image}/requirements.txt ./") in builder
    copies = [
        args for keyword, args in dockerfile_instructions(DOCKERFILES[image]) if keyword == "COPY"
    ]
    assert not any(args.split()[0] == "requirements.txt" for args in copies), image
    installs = [run for run in runs(builder) if "-r requirements" in run]
    assert installs and all("--no-deps" in run for run in installs), image
    assert any("uv pip check --python /opt/venv/bin/python" in run for run in runs(builder))


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [arguments for keyword, arguments in final_stage(image) if keyword == "USER"]
    assert users, f"{image}: no USER, so it runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"{image}: USER {users[-1]} is not numeric (runAsNonRoot needs a uid)"
    assert int(uid) != 0, f"{image}: runs as root"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_no_build_argument_or_environment_variable_holds_a_secret(image: str) -> None:
    for keyword, arguments in dockerfile_instructions(DOCKERFILES[image]):
        if keyword == "ARG":
            names = [arguments.split("=", 1)[0]]
        elif keyword == "ENV":
            names = [pair.split("=", 1)[0] for pair in arguments.split() if "=" in pair]
        else:
            continue
        secret = [name for name in names if SECRET_NAME.search(name)]
        assert not secret, f"{image}: {keyword} {secret} would bake a secret into a layer"


# --- what the images run -------------------------------------------------------------------


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_puts_the_churnflow_command_on_path(image: str) -> None:
    """The pod's command is `churnflow ...`: the script must land in a PATH directory."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "churnflow" in scripts
    builder = dockerfile_stages(DOCKERFILES[image])[0]
    installs = [
        run
        for run in runs(builder)
        if re.search(r"pip install [^&]*/build/churnflow", run)
        and f"--python {VENV}/bin/python" in run
    ]
    assert installs, f"{image}: the churnflow package is not installed into the venv"
    assert not any("--target" in run or "--user" in run or " -e " in run for run in installs)
    final = final_stage(image)
    assert stage_env(final)["PATH"].split(":")[0] == f"{VENV}/bin"
    entrypoints = [arguments for keyword, arguments in final if keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == "[]", f"{image}: the pod's command must be argv"


def test_airflow_image_holds_dags_plugins_and_pod_templates() -> None:
    final = final_stage("airflow")
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert "--chown=50000:0 dags /opt/airflow/dags" in copies
    assert "--chown=50000:0 plugins /opt/airflow/plugins" in copies
    # The kubernetes runner reads <repository root>/include/k8s: /opt/airflow here.
    assert "--chown=50000:0 include/k8s/pod-template-*.yaml /opt/airflow/include/k8s/" in copies
    assert stage_env(final)["PATH"].split(":")[0] == f"{VENV}/bin"
    assert stage_env(final)["AIRFLOW_HOME"] == "/opt/airflow"


def test_airflow_image_has_the_task_packages_code_but_not_its_command() -> None:
    """Compose's local runner imports churnflow.step_server (stdlib only); installing the
    package would add the `churnflow` command, and steps must never run in this image."""
    builder = dockerfile_stages(DOCKERFILES["airflow"])[0]
    site = f"{VENV}/lib/python3.11/site-packages"
    assert ("COPY", f"include/churnflow {site}/churnflow") in builder
    assert not any("/build/churnflow" in run for run in runs(builder))


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_is_ready_for_a_read_only_root_filesystem(image: str) -> None:
    final = final_stage(image)
    env = stage_env(final)
    workdirs = [arguments for keyword, arguments in final if keyword == "WORKDIR"]
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert workdirs[-1] == "/tmp"


def test_spark_image_takes_torch_from_the_pytorch_cpu_index() -> None:
    text = " ".join(runs(dockerfile_stages(DOCKERFILES["spark"])[0]))
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "torch.version.cuda is None" in text


def test_train_image_installs_cuda_torch_with_its_dependencies() -> None:
    builder = dockerfile_stages(DOCKERFILES["train"])[0]
    steps = [step.strip() for run in runs(builder) for step in run.split("&&")]
    torch_installs = [step for step in steps if "grep '^torch=='" in step and "install" in step]
    assert torch_installs, "train: torch is not installed on its own"
    assert all("--no-deps" not in step and "whl/cpu" not in step for step in torch_installs)
    # The lock constrains the rest, so only torch's own CUDA wheels are added.
    assert all("--constraint requirements.txt" in step for step in torch_installs)
    assert any("assert torch.version.cuda," in step for step in steps)
    env = stage_env(final_stage("train"))
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_records_the_git_commit_it_was_built_from(image: str) -> None:
    """The task side tags its MLflow runs with CHURNFLOW_GIT_COMMIT (and CHURNFLOW_IMAGE)."""
    instructions = final_stage(image)
    [arg] = [i for i, (kw, args) in enumerate(instructions) if kw == "ARG" and "GIT_COMMIT" in args]
    envs = {i: stage_env([instr]) for i, instr in enumerate(instructions) if instr[0] == "ENV"}
    [set_at] = [i for i, env in envs.items() if env.get("CHURNFLOW_GIT_COMMIT") == "$GIT_COMMIT"]
    assert set_at > arg
    # After every layer that installs something, so a new commit rebuilds none of them.
    assert not any(kw in ("RUN", "COPY") for kw, _ in instructions[arg:])
    makefile = (REPO / "Makefile").read_text()
    assert "--build-arg GIT_COMMIT=$$(git rev-parse HEAD)" in makefile


# --- the Airflow image's entrypoint ------------------------------------------------------


def test_airflow_image_enters_through_its_entrypoint_script() -> None:
    entrypoints = [args for keyword, args in final_stage("airflow") if keyword == "ENTRYPOINT"]
    assert entrypoints[-1] == '["/bin/sh", "/opt/churnflow/entrypoint.sh"]'


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # compose: an Airflow sub-command
        (["scheduler"], "airflow scheduler"),
        (["db", "migrate"], "airflow db migrate"),
        # the official Helm chart and the KubernetesExecutor: whole command lines
        (["bash", "-c", "exec airflow scheduler"], "airflow scheduler"),
        (["airflow", "db", "check-migrations"], "airflow db check-migrations"),
        (["python", "-c", "print('a task')"], "a task"),
    ],
)
def test_airflow_entrypoint_runs_a_sub_command_or_a_whole_command_line(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    stub = tmp_path / "airflow"
    stub.write_text('#!/bin/sh\necho airflow "$@"\n')
    stub.chmod(0o755)
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    result = subprocess.run(
        ["/bin/sh", str(REPO / "images" / "airflow" / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


# --- health checks -------------------------------------------------------------------------


def test_airflow_image_has_one_healthcheck_for_every_component() -> None:
    final = final_stage("airflow")
    [check] = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    assert check.endswith('CMD ["python", "/opt/churnflow/healthcheck.py"]')
    assert (
        "COPY",
        "images/airflow/healthcheck.py images/airflow/entrypoint.sh /opt/churnflow/",
    ) in final


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_declares_no_healthcheck_since_a_step_runs_to_completion(image: str) -> None:
    checks = [arguments for keyword, arguments in final_stage(image) if keyword == "HEALTHCHECK"]
    assert checks == ["NONE"]


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("/opt/venv/bin/python /opt/venv/bin/airflow api-server", "http://127.0.0.1:8080/"),
        ("/sbin/docker-init -- airflow api-server --port 9090", "http://127.0.0.1:9090/"),
        ("airflow api-server -p 8081 --workers 1", "http://127.0.0.1:8081/"),
        ("/sbin/docker-init -- airflow scheduler", "SchedulerJob"),
        ("/opt/venv/bin/python /opt/venv/bin/airflow dag-processor", "DagProcessorJob"),
        ("airflow triggerer", "TriggererJob"),
        ("airflow version", None),
        ("airflow db migrate", None),
        ("/bin/bash", None),
    ],
)
def test_airflow_healthcheck_picks_the_check_of_the_component_it_runs_in(
    cmdline: str, expected: str | None
) -> None:
    healthcheck = load_module(REPO / "images" / "airflow" / "healthcheck.py")
    check = healthcheck.check_for(shlex.split(cmdline), {})
    if expected is None:
        assert check is None
    elif expected.startswith("http"):
        assert check == f"{expected}api/v2/monitor/health"
    else:
        assert check == ["airflow", "jobs", "check", "--job-type", expected, "--local"]


def test_airflow_healthcheck_takes_the_api_port_from_airflows_setting() -> None:
    healthcheck = load_module(REPO / "images" / "airflow" / "healthcheck.py")
    check = healthcheck.check_for(["airflow", "api-server"], {"AIRFLOW__API__PORT": "8443"})
    assert check == "http://127.0.0.1:8443/api/v2/monitor/health"


# --- Hadoop's s3a connector in the spark image ---------------------------------------------


def s3a_downloads() -> list[str]:
    """The Maven paths the spark image's s3a stage downloads."""
    text = DOCKERFILES["spark"].read_text()
    return re.findall(r"^\s+([\w./-]+\.jar)\s*(?:\\|;)", text, flags=re.MULTILINE)


def test_spark_image_bakes_hadoop_aws_at_the_hadoop_version_of_pysparks_jars() -> None:
    spec = importlib.util.find_spec("pyspark")
    assert spec and spec.origin
    jars = Path(spec.origin).parent / "jars"
    [client] = jars.glob("hadoop-client-api-*.jar")
    hadoop = client.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    downloads = s3a_downloads()
    names = [path.rsplit("/", 1)[1] for path in downloads]
    assert f"hadoop-aws-{hadoop}.jar" in names, (hadoop, names)
    assert f"org/apache/hadoop/hadoop-aws/{hadoop}/hadoop-aws-{hadoop}.jar" in downloads
    assert any(name.startswith("bundle-2.") for name in names), "no AWS SDK v2 bundle"
    final = final_stage("spark")
    assert ("COPY", f"--from=s3a-jars /jars/ {PYSPARK_JARS}/") in final


def test_every_s3a_jar_is_pinned_by_checksum_and_checked_at_build_time() -> None:
    pins = dict(
        reversed(line.split("  ", 1)) for line in S3A_CHECKSUMS.read_text().splitlines() if line
    )
    names = [path.rsplit("/", 1)[1] for path in s3a_downloads()]
    assert sorted(pins) == sorted(names)
    assert all(re.fullmatch(r"[0-9a-f]{40}", digest) for digest in pins.values())
    stage = next(s for s in dockerfile_stages(DOCKERFILES["spark"]) if "AS s3a-jars" in s[0][1])
    text = " ".join(runs(stage))
    assert "sha1sum --check --strict /build/s3a-jars.sha1" in text
    # Maven Central's published .sha1 must agree too.
    assert '"$MAVEN/$path.sha1"' in text
    assert "sha1sum --check --strict /build/published.sha1" in text
