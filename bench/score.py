"""Batch scoring throughput: the Spark scoring job against in-process `predict_proba`.

The same N feature rows (default 1 million, one Parquet file in the customer_features
contract, seeded) are scored per model type three ways, each in a fresh process of this
script so every first call pays what a fresh step pays:

- `in-process`: the pyfunc folder loaded in this process and
  `churn_probability(estimator, spec.inputs(frame))` over the whole frame, read with pandas
  beforehand: the floor a Spark job is compared with.
- `mapInPandas`: `churnflow.scoring.score_features` on a classic local session (`get_spark()`),
  the code `churnflow score` runs: the model travels as tar bytes in the scoring function and
  is loaded once per Python worker; the scores come back to the driver as Arrow. The step's
  driver-side `predictions_table` (sort, deciles) is timed apart. In the same session, warm
  only, the bench also tries the Arrow batch size, the number of tasks, and the same job with
  a constant for a score (what reading, shipping rows to Python and back and collecting cost
  without a model). A second session gives each Python worker two OpenMP / torch threads
  (`spark.executorEnv.OMP_NUM_THREADS=2`); Spark's default sets one per worker.
- `spark_udf`: MLflow's `mlflow.pyfunc.spark_udf(..., env_manager="local")` over the same rows,
  the alternative to mapInPandas.

First call: the first scoring call of the process (Spark: the first job after the session
started, so fresh Python workers, their imports and the model load; in-process: loading the
model and the first predict). Warm: the median of `--repeats` calls after it. The models are
fitted here on a small seeded training set (`churnflow.models.fit`, a short Lightning run) and
saved as MLflow pyfunc folders, no tracking server; every variant's scores are checked against
the in-process ones.

Run: `.venv/bin/python bench/score.py [--rows 1000000 --repeats 3 --models sklearn,lightning]`
(`make bench-score`); `--rows 50000` is a quick run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.train import examples  # noqa: E402
from tests.churnflow.contracts import FEATURES_SCHEMA  # noqa: E402

RESULT = "bench-score-result "
IN_PROCESS, MAP_IN_PANDAS, SPARK_UDF = "in-process", "mapInPandas", "spark_udf"
VARIANTS = (IN_PROCESS, MAP_IN_PANDAS, SPARK_UDF)
DEFAULTS = "defaults"
TWO_THREADS = "OMP threads 2"
TWO_THREADS_VARIANT = f"{MAP_IN_PANDAS}-omp2"
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"
SPLIT_BYTES = "spark.sql.files.maxPartitionBytes"
FEATURES_FILE = "features/part-00000.parquet"
TRAINING_ROWS = 20_000
DAY = date(2025, 6, 1)
console = Console(width=150)

T = TypeVar("T")


# --- the data and the models (parent process) ---------------------------------------------------


def write_features(path: Path, rows: int, row_group: int, seed: int) -> None:
    """`rows` customers in the customer_features contract, one file of `row_group`-row groups
    (Spark splits a file between tasks at row-group boundaries only)."""
    frame = examples(rows, "score", np.random.default_rng(seed))
    frame["signup_date"] = frame["signup_date"].dt.date
    table = pa.Table.from_pandas(
        frame[FEATURES_SCHEMA.names], FEATURES_SCHEMA, preserve_index=False
    )
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, row_group_size=row_group)


def save_model(folder: Path, model_type: str, seed: int) -> dict[str, Any]:
    """Fit `model_type` on a small training set and save it as the pyfunc train.py logs."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from churnflow.models import ChurnModel, FeatureSpec, TrainingConfig, churn_probability, fit
    from churnflow.models import requirements as model_requirements

    for name in ("pytorch_lightning", "lightning.pytorch", "mlflow"):  # banners, notices
        logging.getLogger(name).setLevel(logging.ERROR)
    rng = np.random.default_rng(seed + 1)
    train = examples(TRAINING_ROWS, "train", rng)
    validation = examples(TRAINING_ROWS // 5, "validation", rng)
    spec = FeatureSpec.of(train)
    config = TrainingConfig(seed=seed, max_epochs=3, patience=4)
    started = time.perf_counter()
    result = fit(model_type, train, validation, spec, config)
    fit_s = time.perf_counter() - started
    example = spec.signature_example(validation.head(5))
    with warnings.catch_warnings():  # type-hint and integer-column hints: train.py's too
        warnings.simplefilter("ignore")
        scores = churn_probability(result.estimator, spec.inputs(example))
        signature = infer_signature(example, scores)
        mlflow.pyfunc.save_model(
            str(folder),
            python_model=ChurnModel(result.estimator, spec, model_type),
            signature=signature,
            input_example=example,
            pip_requirements=model_requirements(model_type),
        )
    size = sum(item.stat().st_size for item in folder.rglob("*") if item.is_file())
    return {"fit_s": fit_s, "bytes": size}


def prepare(work: Path, args: argparse.Namespace) -> None:
    """The features file and one pyfunc folder per model type under `work`."""
    with console.status(f"writing {args.rows:,} feature rows"):
        write_features(work / FEATURES_FILE, args.rows, args.row_group, args.seed)
    console.log(f"features: {args.rows:,} rows, {(work / FEATURES_FILE).stat().st_size:,} bytes")
    for model_type in args.models.split(","):
        with console.status(f"fitting {model_type} on {TRAINING_ROWS:,} examples"):
            saved = save_model(work / "models" / model_type, model_type, args.seed)
        console.log(
            f"{model_type}: fitted in {saved['fit_s']:.1f} s, model folder {saved['bytes']:,} bytes"
        )


# --- measuring (child processes) ----------------------------------------------------------------


def timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def first_and_warm(call: Callable[[], T], repeats: int) -> tuple[float, list[float], T]:
    """The first call's seconds, then `repeats` more calls' seconds, and the last result."""
    first, result = timed(call)
    warm = []
    for _ in range(repeats):
        seconds, result = timed(call)
        warm.append(seconds)
    return first, warm, result


def save_scores(work: Path, name: str, customers: Any, scores: Any) -> None:
    """The scores in customer order, for the parent to compare the variants row by row."""
    order = pc.sort_indices(customers).to_numpy()
    values = scores.to_numpy() if isinstance(scores, pa.ChunkedArray) else np.asarray(scores)
    (work / "scores").mkdir(exist_ok=True)
    np.save(work / "scores" / f"{name}.npy", values[order])


def served_model(work: Path, model_type: str) -> Any:
    """A ServedModel packed from the local pyfunc folder as `scoring.fetch_model` packs a
    downloaded one (its signature checked against the features file the same way)."""
    from churnflow.scoring import DayFeatures, pack_model

    path = work / FEATURES_FILE
    metadata = pq.read_metadata(path)
    features = DayFeatures(
        DAY, str(path.parent), metadata.num_rows, metadata.schema.to_arrow_schema()
    )
    return pack_model(work / "models" / model_type, features, 1, "")


def measure_in_process(work: Path, model_type: str, repeats: int) -> list[dict[str, Any]]:
    """Load the pyfunc, score the whole frame; first call = load + first predict."""
    import mlflow.pyfunc

    from churnflow.models import churn_probability

    read_s, frame = timed(lambda: pd.read_parquet(work / FEATURES_FILE))
    loaded: dict[str, Any] = {}

    def score() -> np.ndarray:
        if "model" not in loaded:
            folder = str(work / "models" / model_type)
            loaded["model"] = mlflow.pyfunc.load_model(folder).unwrap_python_model()
        model = loaded["model"]
        return churn_probability(model.estimator, model.spec.inputs(frame))

    first, warm, scores = first_and_warm(score, repeats)
    model = loaded["model"]
    inputs_s = statistics.median(timed(lambda: model.spec.inputs(frame))[0] for _ in range(repeats))
    save_scores(
        work, f"{model_type}-{IN_PROCESS}-{DEFAULTS}", pa.array(frame["customer_id"]), scores
    )
    note = f"read {read_s:.1f} s; spec.inputs {inputs_s:.2f} s of warm"
    return [row(model_type, IN_PROCESS, DEFAULTS, first, warm, note=note)]


def row(
    model: str, variant: str, setting: str, first: float | None, warm: list[float], **extra: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "variant": variant,
        "setting": setting,
        "first_s": first,
        "warm_s": warm,
        "load": os.getloadavg()[0],
    } | extra


def start_spark(work: Path, name: str) -> tuple[float, Any]:
    """A classic local session (get_spark) with its metastore under `work`."""
    os.environ.pop("SPARK_REMOTE", None)
    os.environ["CHURNFLOW_SPARK_DIR"] = str(work / "spark" / name)
    from churnflow.spark import get_spark

    seconds, spark = timed(get_spark)
    spark.sparkContext.setLogLevel("ERROR")
    return seconds, spark


def tasks(spark: Any, uri: str) -> int:
    return int(spark.read.parquet(uri).rdd.getNumPartitions())


def worker_threads(spark: Any) -> str:
    """What a Python worker of this session sees: OMP_NUM_THREADS, torch's and OpenMP's pools."""

    def probe(batches: Any) -> Any:
        import torch
        from threadpoolctl import threadpool_info

        for _ in batches:
            pass
        openmp = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
        yield pd.DataFrame(
            {
                "pid": [os.getpid()],
                "omp": [os.environ.get("OMP_NUM_THREADS", "unset")],
                "torch": [torch.get_num_threads()],
                "openmp": [max(openmp, default=0)],
            }
        )

    schema = "pid long, omp string, torch int, openmp int"
    seen = spark.range(0, 2, numPartitions=2).mapInPandas(probe, schema).toPandas()
    first = seen.iloc[0]
    return (
        f"{seen['pid'].nunique()} worker process(es), OMP_NUM_THREADS {first['omp']}, "
        f"torch threads {first['torch']}, OpenMP threads {first['openmp']}"
    )


def measure_map_in_pandas(
    work: Path, model_type: str, repeats: int, two_threads: bool
) -> list[dict[str, Any]]:
    """score_features as the step runs it; then predictions_table; then settings, warm only."""
    from churnflow.scoring import CUSTOMER, SCORE, predictions_table, score_features

    if two_threads:
        # Spark sets OMP_NUM_THREADS for its Python workers (1 here) unless this is set.
        os.environ["PYSPARK_SUBMIT_ARGS"] = (
            "--conf spark.executorEnv.OMP_NUM_THREADS=2 pyspark-shell"
        )
    setting = TWO_THREADS if two_threads else DEFAULTS
    session_s, spark = start_spark(work, f"{model_type}-{MAP_IN_PANDAS}-{int(two_threads) + 1}")
    model = served_model(work, model_type)
    uri = str((work / FEATURES_FILE).parent)
    first, warm, scored = first_and_warm(lambda: score_features(spark, [uri], [model]), repeats)
    post = [
        timed(lambda: predictions_table(scored[CUSTOMER], scored[f"{SCORE}_0"], 1))[0]
        for _ in range(repeats)
    ]
    name = f"{model_type}-{MAP_IN_PANDAS}-{setting}"
    save_scores(work, name, scored[CUSTOMER], scored[f"{SCORE}_0"])
    split = tasks(spark, uri)
    rows = [
        row(
            model_type,
            MAP_IN_PANDAS,
            setting,
            first,
            warm,
            tasks=split,
            session_s=session_s,
            post_s=statistics.median(post),
            archive=len(model.archive),
        )
    ]
    if two_threads:
        rows[0]["note"] = "spark.executorEnv.OMP_NUM_THREADS=2"
    if not two_threads:
        rows += settings_tried(spark, uri, model, model_type, repeats)
    rows[0]["workers"] = worker_threads(spark)
    return rows


def settings_tried(
    spark: Any, uri: str, model: Any, model_type: str, repeats: int
) -> list[dict[str, Any]]:
    """Warm runs of score_features under runtime settings of the same (warm) session."""
    from churnflow.scoring import score_features

    size = (Path(uri) / Path(FEATURES_FILE).name).stat().st_size
    tries = {
        "arrow batch 100k": {ARROW_BATCH: "100000"},
        "arrow batch 2k": {ARROW_BATCH: "2000"},
        "~8 tasks": {SPLIT_BYTES: str(size // 8 + 1)},
    }
    rows = [transport_only(spark, uri, model, model_type, repeats)]
    for name, conf in tries.items():
        before = {key: spark.conf.get(key) for key in conf}
        for key, value in conf.items():
            spark.conf.set(key, value)
        warm = [timed(lambda: score_features(spark, [uri], [model]))[0] for _ in range(repeats)]
        note = ", ".join(f"{key}={value}" for key, value in conf.items())
        split = tasks(spark, uri)
        rows.append(row(model_type, MAP_IN_PANDAS, name, None, warm, tasks=split, note=note))
        for key, value in before.items():
            spark.conf.set(key, value)
    return rows


def transport_only(
    spark: Any, uri: str, model: Any, model_type: str, repeats: int
) -> dict[str, Any]:
    """score_features' job with a constant instead of the model: the cost of reading, shipping
    the rows to Python and back and collecting them, which no model speed-up removes."""
    from churnflow.scoring import CUSTOMER

    def constant(batches: Any) -> Any:
        for batch in batches:
            yield pd.DataFrame({CUSTOMER: batch[CUSTOMER], "score_0": 0.0})

    columns = sorted(set(model.columns) - {CUSTOMER})
    frame = spark.read.parquet(uri).select(CUSTOMER, *columns)
    job = frame.mapInPandas(constant, f"{CUSTOMER} string, score_0 double")
    warm = [timed(job.toArrow)[0] for _ in range(repeats + 1)][1:]
    return row(model_type, MAP_IN_PANDAS, "no model (0.0)", None, warm, tasks=tasks(spark, uri))


def measure_spark_udf(work: Path, model_type: str, repeats: int) -> list[dict[str, Any]]:
    """MLflow's spark_udf over the same rows and columns; prepare = building the UDF."""
    import mlflow.pyfunc

    session_s, spark = start_spark(work, f"{model_type}-{SPARK_UDF}")
    columns = served_model(work, model_type).columns
    uri = str((work / FEATURES_FILE).parent)
    folder = str(work / "models" / model_type)
    prepare_s, udf = timed(
        lambda: mlflow.pyfunc.spark_udf(spark, folder, result_type="double", env_manager="local")
    )

    def score() -> pa.Table:
        frame = spark.read.parquet(uri)
        return frame.select("customer_id", udf(*columns).alias("score")).toArrow()

    first, warm, scored = first_and_warm(score, repeats)
    save_scores(
        work, f"{model_type}-{SPARK_UDF}-{DEFAULTS}", scored["customer_id"], scored["score"]
    )
    return [
        row(
            model_type,
            SPARK_UDF,
            DEFAULTS,
            first,
            warm,
            tasks=tasks(spark, uri),
            session_s=session_s,
            note=f"spark_udf() {prepare_s:.1f} s",
        )
    ]


def measure(variant: str, model_type: str, work: Path, repeats: int) -> list[dict[str, Any]]:
    if variant == IN_PROCESS:
        return measure_in_process(work, model_type, repeats)
    if variant == SPARK_UDF:
        return measure_spark_udf(work, model_type, repeats)
    return measure_map_in_pandas(
        work, model_type, repeats, two_threads=variant == TWO_THREADS_VARIANT
    )


def run_child(variant: str, model_type: str, work: Path, repeats: int) -> list[dict[str, Any]]:
    argv = [sys.executable, __file__, "--measure", variant, model_type, str(work)]
    argv += ["--repeats", str(repeats)]
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        return [
            row(
                model_type,
                variant.removesuffix("-omp2"),
                "",
                None,
                [],
                failed=(done.stderr or done.stdout)[-3000:],
            )
        ]
    return list(json.loads(lines[-1].removeprefix(RESULT)))


# --- the report -----------------------------------------------------------------------------------


def warm_s(result: dict[str, Any]) -> float | None:
    return statistics.median(result["warm_s"]) if result["warm_s"] else None


def score_gap(work: Path, result: dict[str, Any]) -> str:
    """Largest absolute difference to the in-process scores of the same model, row by row."""
    found = work / "scores" / f"{result['model']}-{result['variant']}-{result['setting']}.npy"
    base = work / "scores" / f"{result['model']}-{IN_PROCESS}-{DEFAULTS}.npy"
    if not found.exists() or not base.exists():
        return ""
    return f"{np.max(np.abs(np.load(found) - np.load(base))):.1e}"


def table(results: list[dict[str, Any]], rows: int, work: Path) -> None:
    out = Table(title=f"batch scoring of {rows:,} feature rows (seconds; warm = median)")
    for name in ("model", "variant", "setting"):
        out.add_column(name)
    for name in ("tasks", "load", "first s", "warm s", "rows/s warm", "1st-call cost s"):
        out.add_column(name, justify="right")
    out.add_column("vs in-process", justify="right")
    out.add_column("max |Δscore|", justify="right")
    floor = {r["model"]: warm_s(r) for r in results if r["variant"] == IN_PROCESS}
    for result in results:
        warm, first = warm_s(result), result["first_s"]
        base = floor.get(result["model"])
        out.add_row(
            result["model"],
            result["variant"],
            result["setting"] or "failed",
            str(result.get("tasks", "")),
            f"{result['load']:.1f}",
            f"{first:.2f}" if first is not None else "",
            f"{warm:.2f}" if warm is not None else "",
            f"{rows / warm:,.0f}" if warm else "",
            f"{first - warm:.2f}" if first is not None and warm is not None else "",
            f"{warm / base:.2f}x" if warm and base else "",
            "" if result["variant"] == IN_PROCESS else score_gap(work, result),
        )
    console.print(out)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The goal of the issue: the warm Spark job at most 1.5x the in-process time."""
    lines = []
    for result in results:
        base = next(
            (
                warm_s(r)
                for r in results
                if r["model"] == result["model"] and r["variant"] == IN_PROCESS and r["warm_s"]
            ),
            None,
        )
        warm = warm_s(result)
        if result["setting"] != DEFAULTS or result["variant"] == IN_PROCESS or not (base and warm):
            continue
        ratio = warm / base
        goal = "meets" if ratio <= 1.5 else "misses"
        line = (
            f"  {result['model']} {result['variant']}: warm {ratio:.2f}x in-process ({goal} ≤1.5x)"
        )
        if "post_s" in result:
            step = (warm + result["post_s"]) / base
            line += f"; with predictions_table ({result['post_s']:.2f} s) {step:.2f}x"
        lines.append(line)
    return lines


def details(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for result in results:
        where = f"  {result['model']} {result['variant']} {result['setting']}:"
        found = [f"session start {result['session_s']:.1f} s"] if "session_s" in result else []
        found += [result[key] for key in ("note", "workers") if key in result]
        if "archive" in result:
            found.append(f"model archive {result['archive']:,} bytes")
        if result["warm_s"]:
            found.append("warm runs " + " ".join(f"{s:.2f}" for s in result["warm_s"]))
        if "failed" in result:
            found.append("FAILED:\n" + result["failed"])
        if found:
            lines.append(f"{where} {'; '.join(found)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="feature rows to score")
    parser.add_argument("--repeats", type=int, default=3, help="warm calls per variant")
    parser.add_argument("--models", default="sklearn,lightning")
    parser.add_argument("--variants", default=",".join([*VARIANTS, TWO_THREADS_VARIANT]))
    parser.add_argument("--row-group", type=int, default=65_536, help="Parquet row group rows")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument(
        "--measure", nargs=3, metavar=("VARIANT", "MODEL", "DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:
        variant, model_type, work = args.measure
        print(RESULT + json.dumps(measure(variant, model_type, Path(work), args.repeats)))
        return
    started = time.perf_counter()
    console.log(
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    work = Path(tempfile.mkdtemp(prefix="churnflow-bench-score-"))
    try:
        prepare(work, args)
        results = []
        for model_type in args.models.split(","):
            for variant in args.variants.split(","):
                with console.status(f"{model_type}: {variant} ({args.repeats} warm calls)"):
                    found = run_child(variant, model_type, work, args.repeats)
                results += found
                console.log(
                    f"{model_type} {variant}: done" + (" (FAILED)" if "failed" in found[0] else "")
                )
        print()
        table(results, args.rows, work)
        print("\n".join(["", *verdicts(results), "", *details(results)]))
    finally:
        if args.keep:
            console.log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nwall {time.perf_counter() - started:.0f} s; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
        "first s: the process's first scoring call (Spark: first job after the session started:"
        " Python workers, imports, model load; in-process: model load + first predict); warm s:"
        " median of the later calls; 1st-call cost: first - warm; vs in-process: warm s / the\n"
        "in-process warm s of the same model (the issue's goal: ≤1.5x); Spark times include"
        " reading the Parquet file and collecting the scores to the driver as Arrow; settings"
        " other than defaults ran warm in the same session (no first call)."
    )


if __name__ == "__main__":
    main()
