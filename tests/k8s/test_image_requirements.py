"""Each image's requirements.txt: the lock's pins, only the packages the image needs, no drift."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.k8s.deploy_files import DOCKERFILES, REPO

SCRIPT = REPO / "images" / "image_requirements.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_requirements", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pins_of(text: str) -> dict[str, str]:
    """{canonical name: version} of the `name==version` lines (comments skipped)."""
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def image_pins(image: str) -> dict[str, str]:
    return pins_of((REPO / "images" / image / "requirements.txt").read_text())


LOCK = pins_of((REPO / "requirements.txt").read_text())


@pytest.mark.parametrize("image", DOCKERFILES)
def test_every_pin_of_an_image_is_the_locks_pin(image: str) -> None:
    pins = image_pins(image)
    assert pins, f"{image}: no pins"
    differ = {name: (version, LOCK.get(name)) for name, version in pins.items()}
    differ = {name: pair for name, pair in differ.items() if pair[0] != pair[1]}
    assert differ == {}, f"{image}: (image pin, lock pin) {differ}"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_requirements_are_what_make_image_requirements_writes_now(image: str) -> None:
    expected = load_script().render(image)
    actual = (REPO / "images" / image / "requirements.txt").read_text()
    assert actual == expected, (
        f"images/{image}/requirements.txt is stale: run `make image-requirements`"
    )


def test_the_check_mode_of_the_script_passes_on_the_committed_files() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("image", DOCKERFILES)
def test_every_listed_package_is_in_its_image(image: str) -> None:
    pins = image_pins(image)
    for raw in (REPO / "images" / image / "requirements.in").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and line != "churnflow":
            assert canonicalize_name(Requirement(line).name) in pins, f"{image}: {line}"


def test_airflow_image_holds_no_task_side_library() -> None:
    pins = image_pins("airflow")
    for heavy in ("torch", "pyspark", "dbt-core", "great-expectations", "evidently", "mlflow"):
        assert heavy not in pins, f"the airflow image would install {heavy}"
    assert "mlflow-skinny" not in pins
    for needed in ("apache-airflow", "apache-airflow-providers-cncf-kubernetes", "slack-sdk"):
        assert needed in pins
    # Airflow's sync and async engines on PostgreSQL.
    assert {"psycopg2-binary", "asyncpg"} <= set(pins)


def test_train_image_holds_no_spark_and_no_data_quality_stack() -> None:
    pins = image_pins("train")
    for absent in ("pyspark", "dbt-core", "great-expectations", "evidently"):
        assert absent not in pins, f"the train image would install {absent}"
    assert {"torch", "pytorch-lightning", "mlflow", "scikit-learn"} <= set(pins)


def test_spark_image_holds_the_mlflow_client_not_its_server() -> None:
    pins = image_pins("spark")
    assert "mlflow-skinny" in pins
    for server in ("mlflow", "flask", "gunicorn", "alembic", "sqlalchemy"):
        assert server not in pins, f"the spark image would install {server}"


def test_train_image_holds_the_mlflow_distribution_its_logged_models_name() -> None:
    """churnflow.models.requirements() reads `mlflow`'s version from its metadata."""
    assert "mlflow" in image_pins("train")


@pytest.mark.parametrize("image", ["spark", "train"])
def test_task_images_hold_no_airflow(image: str) -> None:
    assert not [name for name in image_pins(image) if name.startswith("apache-airflow")]


@pytest.mark.parametrize("image", ["spark", "train"])
def test_task_images_hold_the_task_packages_own_dependencies(image: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}
    assert needed <= set(image_pins(image)), needed - set(image_pins(image))


def test_spark_image_gets_the_extras_it_asks_for() -> None:
    """pyspark[connect] and dbt-spark[session]: the extras' packages are in the closure."""
    pins = image_pins("spark")
    assert {"pyspark", "grpcio", "grpcio-status", "dbt-spark", "dbt-core"} <= set(pins)


def test_closure_follows_extras_and_markers(tmp_path) -> None:
    script = load_script()
    pins = script.lock_pins()
    plain = script.closure([Requirement("pyspark")], pins)
    connect = script.closure([Requirement("pyspark[connect]")], pins)
    assert "grpcio" not in plain and "grpcio" in connect
    # A dependency for another Python or platform is not followed.
    assert script.closure([Requirement("pyspark; python_version < '3'")], pins) == set()


def test_a_package_missing_from_the_lock_is_an_error() -> None:
    script = load_script()
    with pytest.raises(script.ImageRequirementsError, match="not in the lock"):
        script.closure([Requirement("no-such-package-in-the-lock")], script.lock_pins())
