"""How good a churn model's scores are: metrics, per-slice metrics, MLflow keys and plots.

The one place that measures scores, so training (metrics and plots per split) and the
promotion gate (challenger against champion, slice by slice, on the same holdout) can never
disagree on what "PR AUC of the 90-365 day customers" means. It takes labels (0/1) and
predicted churn probabilities and knows nothing of MLflow, Spark or the model: the caller
logs `flat_metrics(...)` with `mlflow.log_metrics` and each of `evaluation_figures(...)` with
`mlflow.log_figure(fig, f"plots/{name}")`.

Rank metrics (ROC AUC, PR AUC, top-decile precision, recall and lift) are undefined when the
labels hold one class: they are left out of the dict rather than set to NaN, which MLflow
stores but cannot chart or compare.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

METRICS: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "precision_top_decile",
    "recall_top_decile",
    "lift_top_decile",
)
RANK_METRICS = frozenset(
    {"roc_auc", "pr_auc", "precision_top_decile", "recall_top_decile", "lift_top_decile"}
)
CALIBRATION_BINS = 10
LOG_LOSS_EPS = 1e-7
TOP_FRACTION = 0.1
UNKNOWN = "unknown"
TOP_FEATURES = 20
# days_since_last_order at which the recency baseline scores 0.5 (the default label horizon).
RECENCY_HALF_DAYS = 30.0

Curves = Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]


def _checked(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores as float arrays, or a ValueError that says which rule they break."""
    y = np.asarray(labels, dtype=float).ravel()
    p = np.asarray(scores, dtype=float).ravel()
    if y.size == 0:
        raise ValueError("cannot score an empty set of examples: labels and scores hold no rows")
    if y.size != p.size:
        raise ValueError(f"labels hold {y.size} rows but scores {p.size}: they must pair up")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (churned), found other values or nulls")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("scores must be churn probabilities in [0, 1], found others or nulls")
    return y, p


def _top_rows(scores: np.ndarray) -> np.ndarray:
    """Row positions by descending score; ties keep input order, so reruns pick the same rows."""
    return np.argsort(-scores, kind="stable")


def _calibration_bins(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Rows, mean score and churn rate per non-empty equal-width bin of [0, 1].

    Bin i holds scores in [i/10, (i+1)/10); a score of exactly 1 falls in the last bin.
    """
    bin_of = np.minimum(np.floor(p * CALIBRATION_BINS), CALIBRATION_BINS - 1).astype(int)
    grouped = pd.DataFrame({"bin": bin_of, "label": y, "score": p}).groupby("bin")
    return pd.DataFrame(
        {
            "rows": grouped.size(),
            "mean_score": grouped["score"].mean(),
            "churn_rate": grouped["label"].mean(),
        }
    )


def expected_calibration_error(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Mean gap between predicted and observed churn rate over 10 bins, weighted by bin rows.

    A score of 0.3 should mean 30% of such customers churn: the gate and the retention team
    read scores as probabilities, which ranking metrics do not check.
    """
    y, p = _checked(labels, scores)
    bins = _calibration_bins(y, p)
    gaps = (bins["churn_rate"] - bins["mean_score"]).abs()
    return float((gaps * bins["rows"]).sum() / y.size)


def score_metrics(labels: npt.ArrayLike, scores: npt.ArrayLike) -> dict[str, float]:
    """The METRICS of one set of examples; rank metrics only when both classes are present."""
    y, p = _checked(labels, scores)
    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    metrics = {
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p),
    }
    positives = y.sum()
    if positives in (0, y.size):
        return metrics
    top = y[_top_rows(p)[: math.ceil(TOP_FRACTION * y.size)]]
    precision = float(top.mean())
    metrics |= {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "precision_top_decile": precision,
        "recall_top_decile": float(top.sum() / positives),
        "lift_top_decile": precision / float(positives / y.size),
    }
    return {name: metrics[name] for name in METRICS if name in metrics}


@dataclass(frozen=True)
class Slicing:
    """How one column cuts examples into bands: fixed edges, or one band per value.

    A numeric value v falls in band i where edges[i-1] <= v < edges[i] (`bands` has one more
    entry than `edges`); a null in any column falls in UNKNOWN. Band names are valid MLflow
    metric-name parts as they are.
    """

    name: str
    column: str
    edges: tuple[float, ...] = ()
    bands: tuple[str, ...] = ()

    @property
    def by_value(self) -> bool:
        return not self.edges


# Fixed edges, not quantiles: a quantile band moves with each day's data and each model's
# holdout, so "PR AUC of the top spend third" would compare different customers from run to
# run. Spend edges are near the quartiles of the synthetic shop's active customers.
SLICES: tuple[Slicing, ...] = (
    Slicing("tenure", "tenure_days", (90, 365), ("lt90d", "90-365d", "365dplus")),
    Slicing("spend", "amount_90d", (100.0, 500.0), ("lt100", "100-500", "500plus")),
    Slicing("country", "country"),
)


def _bands(frame: pd.DataFrame, slicing: Slicing) -> pd.Series:
    """Each row's band under one slicing; a null or blank value is UNKNOWN, never dropped."""
    if slicing.column not in frame.columns:
        raise ValueError(
            f"slicing {slicing.name!r} needs column {slicing.column!r}, which the examples lack"
        )
    values = frame[slicing.column]
    if slicing.by_value:
        text = values.astype("string").str.strip().fillna("")
        labels = np.where(text.to_numpy() == "", UNKNOWN, text.to_numpy(dtype=object))
    else:
        numbers = pd.to_numeric(values).to_numpy(dtype=float, na_value=np.nan)
        index = np.searchsorted(slicing.edges, numbers, side="right")
        named = np.asarray(slicing.bands, dtype=object)[np.minimum(index, len(slicing.edges))]
        labels = np.where(np.isnan(numbers), UNKNOWN, named)
    return pd.Series(labels, index=frame.index, dtype=object, name=slicing.name)


def slice_labels(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Per slicing name ("tenure", "spend", "country"), each row's band, indexed like frame."""
    return {slicing.name: _bands(frame, slicing) for slicing in SLICES}


@dataclass(frozen=True)
class SliceResult:
    """Scores of one band; `metrics` is empty when `skipped_reason` says why it was not scored."""

    slicing: str
    band: str
    rows: int
    positives: int
    metrics: dict[str, float] = field(default_factory=dict)
    skipped_reason: str | None = None


def _band_order(slicing: Slicing, present: set[str]) -> list[str]:
    """Defined bands in edge order (values sorted), then UNKNOWN: stable across runs."""
    named = list(slicing.bands) if not slicing.by_value else sorted(present - {UNKNOWN})
    return [band for band in [*named, UNKNOWN] if band in present]


def slice_metrics(
    frame: pd.DataFrame,
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    min_rows: int = 50,
) -> list[SliceResult]:
    """score_metrics of each band with rows (frame, labels and scores row-aligned by position).

    A band under `min_rows` rows or with one class is kept with its counts and a
    `skipped_reason` but no metrics: its numbers would be noise, and the gate must be able to
    say why it did not compare them.
    """
    y, p = _checked(labels, scores)
    if len(frame) != y.size:
        raise ValueError(f"the examples hold {len(frame)} rows but labels and scores {y.size}")
    results = []
    for slicing in SLICES:
        bands = _bands(frame, slicing).to_numpy()
        for band in _band_order(slicing, set(bands)):
            rows = bands == band
            count, positives = int(rows.sum()), int(y[rows].sum())
            reason = None
            if count < min_rows:
                reason = f"{count} rows, fewer than min_rows={min_rows}"
            elif positives in (0, count):
                reason = f"one class: all {count} rows have churned={int(positives > 0)}"
            metrics = {} if reason else score_metrics(y[rows], p[rows])
            results.append(SliceResult(slicing.name, band, count, positives, metrics, reason))
    return results


_KEY_PART = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_KEY_LENGTH = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH


def _safe_band(band: str) -> str:
    """A band as a metric-name part: characters MLflow (or '.' as separator) would trip on -> _."""
    return _UNSAFE.sub("_", band) or UNKNOWN


def metric_key(split: str, metric: str, slice_result: SliceResult | None = None) -> str:
    """The MLflow name of a metric: "holdout_pr_auc" or "holdout_pr_auc.country.DE".

    MLflow accepts alphanumerics, _, -, ., space and / in names (mlflow.utils.validation);
    '.' separates the parts here, so band values keep only [A-Za-z0-9_-].
    """
    for part in (split, metric):
        if not _KEY_PART.fullmatch(part):
            raise ValueError(f"split and metric must match [A-Za-z0-9_-]+, got {part!r}")
    key = f"{split}_{metric}"
    if slice_result is not None:
        key = f"{key}.{slice_result.slicing}.{_safe_band(slice_result.band)}"
    if len(key) > _MAX_KEY_LENGTH:
        raise ValueError(f"metric name {key[:40]!r}... is over MLflow's {_MAX_KEY_LENGTH} chars")
    return key


def flat_metrics(
    split: str, overall: Mapping[str, float], slices: list[SliceResult]
) -> dict[str, float]:
    """Every metric of a split, overall and per scored slice, keyed for mlflow.log_metrics."""
    flat = {metric_key(split, name): float(value) for name, value in overall.items()}
    for result in slices:
        for name, value in result.metrics.items():
            key = metric_key(split, name, result)
            if key in flat:
                raise ValueError(f"two slices map to metric {key!r}: band names collide")
            flat[key] = float(value)
    bad = sorted(key for key, value in flat.items() if not math.isfinite(value))
    if bad:
        raise ValueError(f"metrics must be finite for MLflow to chart them: {bad}")
    return flat


def risk_deciles(scores: npt.ArrayLike) -> np.ndarray:
    """Each row's decile by descending score, 1 for the highest: the first ceil(10%) of rows
    by `_top_rows` (ties keep input order) are decile 1, as in the top-decile metrics. Batch
    scoring publishes these with every prediction, so the two never disagree."""
    p = np.asarray(scores, dtype=float).ravel()
    decile = np.empty(p.size, dtype=np.int32)
    decile[_top_rows(p)] = np.arange(p.size) * 10 // max(p.size, 1) + 1
    return decile


def decile_table(labels: npt.ArrayLike, scores: npt.ArrayLike) -> pd.DataFrame:
    """Examples cut into tenths by descending score: decile 1 holds the highest scores.

    Decile 1 is the same ceil(10%) of rows as the top-decile metrics. `cumulative_lift` is the
    churn rate of deciles 1..d over the base rate (NaN when no example churned); fewer than 10
    rows leave some deciles out.
    """
    y, p = _checked(labels, scores)
    grouped = pd.DataFrame({"decile": risk_deciles(p), "label": y, "score": p}).groupby("decile")
    table = pd.DataFrame(
        {
            "rows": grouped.size(),
            "positives": grouped["label"].sum().astype(int),
            "churn_rate": grouped["label"].mean(),
            "mean_score": grouped["score"].mean(),
        }
    )
    base_rate = y.mean()
    cumulative_rate = table["positives"].cumsum() / table["rows"].cumsum()
    table["cumulative_lift"] = cumulative_rate / base_rate if base_rate > 0 else np.nan
    return table.reset_index()


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    """A Figure not registered with pyplot: nothing leaks between calls or needs closing."""
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _both_classes(y: np.ndarray) -> bool:
    return 0 < y.sum() < y.size


def roc_figure(curves: Curves) -> Figure:
    """ROC curve of each named model, with its AUC in the legend and the chance diagonal."""
    figure, axes = _figure("ROC curve", "False positive rate", "True positive rate (recall)")
    for name, (labels, scores) in curves.items():
        y, p = _checked(labels, scores)
        if not _both_classes(y):
            axes.plot([], [], label=f"{name}: undefined (one class)")
            continue
        fpr, tpr, _ = roc_curve(y, p)
        axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.legend(loc="lower right")
    return figure


def pr_figure(curves: Curves) -> Figure:
    """Precision-recall curve of each named model, with PR AUC and the base rate (no skill)."""
    figure, axes = _figure("Precision-recall curve", "Recall", "Precision")
    for name, (labels, scores) in curves.items():
        y, p = _checked(labels, scores)
        if not _both_classes(y):
            axes.plot([], [], label=f"{name}: undefined (one class)")
            continue
        precision, recall, _ = precision_recall_curve(y, p)
        pr_auc = average_precision_score(y, p)
        (line,) = axes.plot(recall, precision, label=f"{name} (PR AUC {pr_auc:.3f})")
        axes.axhline(y.mean(), linestyle=":", color=line.get_color(), alpha=0.6)
    axes.plot([], [], linestyle=":", color="grey", label="base rate (no skill)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.legend(loc="upper right")
    return figure


def calibration_figure(curves: Curves) -> Figure:
    """Reliability diagram: observed churn rate against mean score in 10 equal-width bins."""
    figure, axes = _figure(
        "Calibration (10 equal-width bins)",
        "Mean predicted churn probability",
        "Observed churn rate",
    )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, (labels, scores) in curves.items():
        y, p = _checked(labels, scores)
        bins = _calibration_bins(y, p)
        ece = expected_calibration_error(y, p)
        axes.plot(
            bins["mean_score"], bins["churn_rate"], marker="o", label=f"{name} (ECE {ece:.3f})"
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    return figure


def lift_figure(curves: Curves) -> Figure:
    """Cumulative lift of the top 1..10 deciles by score; 1 is a random ranking."""
    figure, axes = _figure(
        "Cumulative lift by score decile",
        "Top deciles by score (1 = highest 10%)",
        "Cumulative lift (churn rate / base rate)",
    )
    for name, (labels, scores) in curves.items():
        table = decile_table(labels, scores)
        axes.plot(table["decile"], table["cumulative_lift"], marker="o", label=name)
    axes.axhline(1.0, linestyle="--", color="grey", label="random")
    axes.set_xticks(range(1, 11))
    axes.legend(loc="upper right")
    return figure


def feature_importance_figure(importances: Mapping[str, float], title: str) -> Figure:
    """Horizontal bars of the TOP_FEATURES largest importances by absolute value, largest on top."""
    if not importances:
        raise ValueError(f"no feature importances to plot for {title!r}")
    top = sorted(importances.items(), key=lambda item: abs(item[1]), reverse=True)[:TOP_FEATURES]
    names, values = zip(*reversed(top), strict=True)
    figure = Figure(figsize=(6.4, 1.2 + 0.3 * len(top)), layout="constrained")
    axes = figure.add_subplot()
    axes.barh(names, values)
    axes.axvline(0, color="grey", linewidth=0.8)
    axes.set_title(title)
    axes.set_xlabel("Importance")
    axes.set_ylabel("Feature")
    return figure


def evaluation_figures(curves: Curves) -> dict[str, Figure]:
    """The four comparison plots, keyed by the artifact file name to log them under."""
    return {
        "roc.png": roc_figure(curves),
        "pr.png": pr_figure(curves),
        "calibration.png": calibration_figure(curves),
        "lift.png": lift_figure(curves),
    }


def recency_scores(frame: pd.DataFrame) -> np.ndarray:
    """The gate's naive baseline: the longer since the last order, the likelier the churn.

    d / (d + RECENCY_HALF_DAYS) of days_since_last_order d, strictly increasing in d. Only its
    ranking means anything (ROC and PR AUC depend on nothing else); its calibration does not,
    so the gate compares PR AUC against it and nothing else.
    """
    if "days_since_last_order" not in frame.columns:
        raise ValueError("the recency baseline needs column 'days_since_last_order'")
    days = pd.to_numeric(frame["days_since_last_order"]).to_numpy(dtype=float, na_value=np.nan)
    if not (np.isfinite(days).all() and (days >= 0).all()):
        raise ValueError("days_since_last_order must be present and >= 0 on every row")
    return days / (days + RECENCY_HALF_DAYS)
