"""Training cost of the churn model, per model type, at demo scale and at 1 million examples.

Each measurement runs in a fresh process of this script: it synthesizes a seeded training set
with the training set's columns and a real signal (churn rises with days since the last order
and falls with recent orders), imports torch, Lightning and scikit-learn (timed apart), then
times one `churnflow.models.fit` call, the code `churnflow train` runs. The Lightning fit runs
a fixed number of epochs (patience above it, so early stopping never ends it sooner); a
callback added to its Trainer by this script times each epoch (training and validation pass),
so the table separates the first epoch (warm-up, CUDA start) from the later ones, and the
preprocessing before them. The scikit-learn fit stops early on the validation split, as in
production. The Trainer's `accelerator="auto"` is forced to the CPU by hiding the GPUs
(`CUDA_VISIBLE_DEVICES=""`); the accelerator each row names is what Lightning reported.
The 1-minute load average is printed per row: on a shared machine, figures move with it.

Run: `.venv/bin/python bench/train.py [--scales 10000,1000000 --epochs 3]`; on a GPU machine
`--accelerators cpu,gpu` puts both side by side (the default, `auto`, adds the GPU when CUDA
is available); `--quick` is a smoke run (demo scale, 2 epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

RESULT = "bench-train-result "
WINDOWS = (7, 30, 90, 365)
SNAPSHOT = date(2025, 6, 1)
COUNTRIES = ("DE", "FR", "NL", "BE", "AT")
CHANNELS = ("web", "app")


def examples(rows: int, split: str, rng: np.random.Generator) -> pd.DataFrame:
    """`rows` training examples typed as the training set: the customer_features columns,
    `split`, `snapshot_ds`, `customer_id` and the int label `churned` (about one in five)."""
    tenure = rng.integers(30, 1500, rows)
    rate = rng.lognormal(np.log(0.05), 0.8, rows)  # orders a day
    value = rng.lognormal(np.log(38.0), 0.5, rows)  # an order's amount
    spans = np.diff((0, *WINDOWS))
    counts = np.column_stack([rng.poisson(rate * span) for span in spans])
    counts[:, 2] += (counts[:, :3].sum(axis=1) == 0).astype(counts.dtype)  # active: orders_90d>0
    amounts = counts * value[:, None] * rng.lognormal(0.0, 0.2, counts.shape)
    orders, spend = counts.cumsum(axis=1), amounts.cumsum(axis=1)
    since = np.where(
        orders[:, 0] > 0,
        rng.integers(0, 7, rows),
        np.where(orders[:, 1] > 0, rng.integers(7, 30, rows), rng.integers(30, 90, rows)),
    )
    channel = rng.choice(CHANNELS, rows)
    logit = (
        -1.2
        + 0.045 * (since - 20)
        - 0.7 * np.log1p(orders[:, 2])
        + 0.3 * (channel == "web")
        + rng.normal(0.0, 0.5, rows)
    )
    frame = pd.DataFrame(
        {
            "split": split,
            "snapshot_ds": SNAPSHOT,
            "customer_id": [f"{split[0]}{i:08d}" for i in range(rows)],
            "tenure_days": tenure.astype("int32"),
            "days_since_last_order": since.astype("int32"),
            **{f"orders_{n}d": orders[:, k].astype("int64") for k, n in enumerate(WINDOWS)},
            **{f"amount_{n}d": spend[:, k].round(2) for k, n in enumerate(WINDOWS)},
            "items_90d": orders[:, 2] + rng.poisson(spend[:, 2] / 30.0),
            "avg_order_value_90d": spend[:, 2] / orders[:, 2],
            "mean_gap_days": np.where(
                orders[:, 3] >= 2, np.minimum(tenure, 365) / np.maximum(orders[:, 3] - 1, 1), np.nan
            ),
            "trend_orders_30_90": orders[:, 1] / (orders[:, 2] / 3.0),
            "trend_amount_30_90": spend[:, 1] / (spend[:, 2] / 3.0),
            "country": rng.choice(COUNTRIES, rows, p=(0.4, 0.25, 0.15, 0.1, 0.1)).astype(object),
            "channel": channel.astype(object),
            "signup_date": np.datetime64(SNAPSHOT, "D") - tenure.astype("timedelta64[D]"),
            "churned": (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype("int64"),
        }
    )
    return frame


def clock_epochs(epochs: list[float]) -> None:
    """Adds an epoch-timing callback to every Lightning Trainer this process builds (models.py
    builds its own; this is the bench's only hook into it)."""
    import pytorch_lightning as pl
    import torch

    class EpochClock(pl.Callback):  # type: ignore[misc]
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            epochs.append(time.perf_counter() - self.started)

    class ClockedTrainer(pl.Trainer):  # type: ignore[misc]
        def __init__(self, *args: Any, callbacks: Any = (), **kwargs: Any) -> None:
            super().__init__(*args, callbacks=[*callbacks, EpochClock()], **kwargs)

    pl.Trainer = ClockedTrainer


def cuda_name() -> str:
    import torch

    return str(torch.cuda.get_device_name(0))


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def measure(model_type: str, rows: int, epochs: int, seed: int) -> dict[str, Any]:
    """One fit in this process; what the parent process tabulates."""
    load = os.getloadavg()[0]
    rng = np.random.default_rng(seed)
    train, validation = examples(rows, "train", rng), examples(rows // 5, "validation", rng)
    started = time.perf_counter()
    from churnflow.models import LIGHTNING, FeatureSpec, TrainingConfig, fit

    epoch_times: list[float] = []
    if model_type == LIGHTNING:
        clock_epochs(epoch_times)  # imports torch and Lightning, before the fit is timed
    else:
        import sklearn.ensemble  # noqa: F401
    imports = time.perf_counter() - started
    config = TrainingConfig(seed=seed, max_epochs=epochs, patience=epochs + 1)
    started = time.perf_counter()
    result = fit(model_type, train, validation, FeatureSpec.of(train), config)
    fit_s = time.perf_counter() - started
    params = result.params
    return {
        "model": model_type,
        "rows": rows,
        "churn_rate": float(train["churned"].mean()),
        "load": load,
        "imports_s": imports,
        "fit_s": fit_s,
        "epochs": params.get("epochs_run", params.get("n_iter")),
        "epoch_s": epoch_times,
        "accelerator": params.get("accelerator", "cpu"),
        "device": cuda_name() if params.get("accelerator") == "cuda" else "",
        "threads": torch_threads() if model_type == LIGHTNING else os.cpu_count(),
        "val_loss": result.history.get("val_loss", []),
    }


def run_child(model_type: str, rows: int, accelerator: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if accelerator == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    argv = [sys.executable, __file__, "--measure", model_type, str(rows)]
    argv += ["--epochs", str(args.epochs), "--seed", str(args.seed)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{model_type} at {rows:,} on {accelerator} failed:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    result = json.loads(lines[-1].removeprefix(RESULT))
    wanted = {"cpu": "cpu", "gpu": "cuda"}[accelerator]
    if model_type == "lightning" and result["accelerator"] != wanted:
        raise RuntimeError(f"asked for {accelerator}, Lightning used {result['accelerator']}")
    return result


def cuda_available() -> bool:
    probe = "import torch; print(torch.cuda.is_available())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def later_epoch_s(row: dict) -> float | None:
    """Seconds per epoch after the first (warm-up); the first when only one ran."""
    times = row["epoch_s"]
    if not times:
        return None
    return statistics.mean(times[1:]) if len(times) > 1 else times[0]


def per_example_s(row: dict) -> float:
    """Steady training cost per example: a later epoch (lightning), the whole fit (sklearn)."""
    epoch = later_epoch_s(row)
    return (epoch if epoch is not None else row["fit_s"]) / row["rows"]


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title="churn model training cost (fit = one churnflow.models.fit call)")
    for name in ("model", "examples", "accel", "load", "fit s", "prep s", "epochs"):
        out.add_column(name, justify="left" if name in ("model", "accel") else "right")
    for name in ("1st epoch s", "s/epoch", "s/epoch fit/n", "examples/s"):
        out.add_column(name, justify="right")
    for row in rows:
        epoch = later_epoch_s(row)
        first = row["epoch_s"][0] if row["epoch_s"] else None
        out.add_row(
            row["model"],
            f"{row['rows']:,}",
            row["accelerator"],
            f"{row['load']:.1f}",
            f"{row['fit_s']:.1f}",
            f"{row['fit_s'] - sum(row['epoch_s']):.1f}" if row["epoch_s"] else "",
            f"{row['epochs']}" + ("" if row["epoch_s"] else " it"),
            f"{first:.2f}" if first is not None else "",
            f"{epoch:.2f}" if epoch is not None else "",
            f"{row['fit_s'] / row['epochs']:.2f}" if row["epoch_s"] else "",
            f"{1.0 / per_example_s(row):,.0f}",
        )
    Console(width=140).print(out)


def ratios(rows: list[dict]) -> list[str]:
    """Cost per example at each larger scale vs the smallest; GPU vs CPU at the same scale."""
    keyed = {(r["model"], r["rows"], r["accelerator"]): r for r in rows}
    lines = []
    for (model, count, accel), row in keyed.items():
        smaller = [k for k in keyed if k[0] == model and k[2] == accel and k[1] < count]
        if smaller:
            base = keyed[min(smaller, key=lambda k: k[1])]
            lines.append(
                f"  {model} {accel}: cost per example at {count:,} vs {base['rows']:,}: "
                f"{per_example_s(row) / per_example_s(base):.2f}x"
            )
        if accel == "cuda" and (model, count, "cpu") in keyed:
            cpu = keyed[(model, count, "cpu")]
            lines.append(
                f"  {model} {count:,}: GPU vs CPU speed-up, s/epoch "
                f"{later_epoch_s(cpu) / later_epoch_s(row):.1f}x, whole fit "
                f"{cpu['fit_s'] / row['fit_s']:.1f}x"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales", default="10000,1000000", help="training examples, comma-separated"
    )
    parser.add_argument("--epochs", type=int, default=3, help="Lightning epochs, fixed")
    parser.add_argument("--models", default="lightning,sklearn")
    parser.add_argument("--accelerators", default="auto", help="auto, cpu, gpu or cpu,gpu")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smoke run: demo scale, 2 epochs")
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        result = measure(args.measure[0], int(args.measure[1]), args.epochs, args.seed)
        print(RESULT + json.dumps(result))
        return
    if args.quick:
        args.scales, args.epochs = "10000", 2
    accelerators = args.accelerators.split(",")
    gpu = accelerators != ["cpu"] and cuda_available()
    if accelerators == ["auto"]:
        accelerators = ["cpu", "gpu"] if gpu else ["cpu"]
    if "gpu" in accelerators and not gpu:
        parser.error("--accelerators gpu: torch sees no CUDA device here")
    print(
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"CUDA {'available' if gpu else 'not available'}; accelerators {','.join(accelerators)}"
    )
    results = []
    for model in args.models.split(","):
        for rows in map(int, args.scales.split(",")):
            for accelerator in accelerators if model == "lightning" else ["cpu"]:
                print(f"  {model} at {rows:,} examples on {accelerator} ...", flush=True)
                results.append(run_child(model, rows, accelerator, args))
    print()
    table(results)
    lines = ratios(results)
    print("\n".join(["\nratios:", *lines]) if lines else "")
    for row in results:
        if row["model"] == "lightning":
            losses = " ".join(f"{v:.3f}" for v in row["val_loss"])
            seen = row["device"] or f"{row['threads']} torch threads"
            print(
                f"  lightning {row['rows']:,} on {row['accelerator']} ({seen}): imports "
                f"{row['imports_s']:.1f} s, epochs {' '.join(f'{t:.2f}' for t in row['epoch_s'])}"
                f" s, val_loss {losses}, churn rate {row['churn_rate']:.2f}"
            )
    print(
        f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        "\nfit s: one fit() call (imports excluded); prep s: fit s minus the epochs (imputation,"
        " quantile scaling, one-hot, tensors, Trainer setup); 1st epoch s: the first epoch"
        " (train + validation pass, warm-up included); s/epoch: mean of the later epochs;"
        " s/epoch fit/n: fit s / epochs;\nexamples/s: training examples / s/epoch (lightning),"
        " / fit s (sklearn); sklearn epochs are boosting iterations (it), early-stopped on the"
        " validation split (1 example in 5 per training example)."
    )


if __name__ == "__main__":
    main()
