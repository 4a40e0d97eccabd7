"""Scores of a churn model (churnflow.evaluation), on small hand-computed cases."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from churnflow.evaluation import (
    METRICS,
    RANK_METRICS,
    SLICES,
    SliceResult,
    decile_table,
    evaluation_figures,
    expected_calibration_error,
    feature_importance_figure,
    flat_metrics,
    metric_key,
    recency_scores,
    score_metrics,
    slice_labels,
    slice_metrics,
)


def _examples(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Examples whose scores carry signal, with every slicing column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure_days": rng.integers(0, 800, rows),
            "amount_90d": rng.gamma(2.0, 150.0, rows),
            "country": rng.choice(np.array(["DE", "FR", "GB", None], dtype=object), rows),
            "days_since_last_order": rng.integers(0, 90, rows),
        }
    )
    scores = rng.random(rows)
    labels = (rng.random(rows) < scores).astype(int)
    return frame, labels, scores


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    # 20 rows at 0.25 with 5 churners, 20 at 0.75 with 15: each bin's churn rate is its score.
    scores = np.r_[np.full(20, 0.25), np.full(20, 0.75)]
    labels = np.r_[np.ones(5), np.zeros(15), np.ones(15), np.zeros(5)]
    assert expected_calibration_error(labels, scores) == pytest.approx(0.0)


def test_ece_weighs_each_bin_gap_by_its_rows() -> None:
    # Bin [0.2, 0.3): 30 rows at 0.2, 3 churn (gap 0.1); bin [0.9, 1]: 10 rows at 1.0, all churn.
    scores = np.r_[np.full(30, 0.2), np.full(10, 1.0)]
    labels = np.r_[np.ones(3), np.zeros(27), np.ones(10)]
    assert expected_calibration_error(labels, scores) == pytest.approx(30 / 40 * 0.1)


def test_top_decile_precision_recall_and_lift_on_a_constructed_ranking() -> None:
    # 20 rows, 5 churners: the top ceil(10%) = 2 rows hold 1 churner (the tie at 0.9 keeps
    # input order, so row 0, a churner, and row 1, not one, are taken before row 2).
    scores = np.r_[0.9, 0.9, 0.9, np.linspace(0.8, 0.1, 17)]
    labels = np.r_[1, 0, 1, 1, 1, 1, np.zeros(14)]
    metrics = score_metrics(labels, scores)
    assert metrics["precision_top_decile"] == pytest.approx(0.5)
    assert metrics["recall_top_decile"] == pytest.approx(1 / 5)
    assert metrics["lift_top_decile"] == pytest.approx(0.5 / (5 / 20))
    assert list(metrics) == list(METRICS)


def test_probability_metrics_match_their_definitions() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.8, 0.4, 0.6, 0.0])
    metrics = score_metrics(labels, scores)
    assert metrics["brier"] == pytest.approx((0.04 + 0.16 + 0.16 + 0.0) / 4)
    # the 0.0 score is clipped to 1e-7, so its log loss term is -log(1 - 1e-7), not inf
    expected = -(np.log(0.8) + np.log(0.6) + np.log(0.6) + np.log(1 - 1e-7)) / 4
    assert metrics["log_loss"] == pytest.approx(expected)
    assert metrics["roc_auc"] == pytest.approx(1.0)
    assert metrics["pr_auc"] == pytest.approx(1.0)


def test_single_class_labels_leave_rank_metrics_out() -> None:
    metrics = score_metrics(np.zeros(30), np.linspace(0, 0.5, 30))
    assert set(metrics) == {"log_loss", "brier", "ece"}
    assert not set(metrics) & RANK_METRICS
    assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([], [], "empty"),
        ([0, 1], [0.5], "pair up"),
        ([0, 2], [0.1, 0.5], "0 or 1"),
        ([0, 1], [0.1, 1.5], r"\[0, 1\]"),
        ([0, 1], [0.1, np.nan], r"\[0, 1\]"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_rule(
    labels: list[float], scores: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        score_metrics(labels, scores)


def test_bands_split_at_their_edges_and_nulls_are_unknown() -> None:
    frame = pd.DataFrame(
        {
            "tenure_days": [0, 89, 90, 364, 365, None],
            "amount_90d": [0.0, 99.99, 100.0, 499.99, 500.0, 1e6],
            "country": ["DE", "FR", None, "", " GB ", "US"],
        }
    )
    bands = slice_labels(frame)
    assert list(bands) == [slicing.name for slicing in SLICES] == ["tenure", "spend", "country"]
    assert list(bands["tenure"]) == ["lt90d", "lt90d", "90-365d", "90-365d", "365dplus", "unknown"]
    assert list(bands["spend"]) == ["lt100", "lt100", "100-500", "100-500", "500plus", "500plus"]
    assert list(bands["country"]) == ["DE", "FR", "unknown", "unknown", "GB", "US"]
    assert all(series.index.equals(frame.index) for series in bands.values())


def test_missing_slicing_column_names_it() -> None:
    with pytest.raises(ValueError, match="'amount_90d'"):
        slice_labels(pd.DataFrame({"tenure_days": [1], "country": ["DE"]}))


def test_small_and_single_class_slices_keep_counts_but_say_why_they_are_skipped() -> None:
    frame, labels, scores = _examples(400)
    frame.loc[:9, "country"] = "NL"  # 10 rows: under min_rows
    frame.loc[10:69, "country"] = "ES"  # 60 rows, none churned
    labels[10:70] = 0
    results = {(r.slicing, r.band): r for r in slice_metrics(frame, labels, scores, min_rows=50)}

    small = results["country", "NL"]
    assert (small.rows, small.metrics) == (10, {})
    assert small.skipped_reason == "10 rows, fewer than min_rows=50"
    one_class = results["country", "ES"]
    assert (one_class.rows, one_class.positives, one_class.metrics) == (60, 0, {})
    assert one_class.skipped_reason is not None
    assert "one class" in one_class.skipped_reason
    scored = results["country", "unknown"]
    assert scored.skipped_reason is None
    assert set(scored.metrics) == set(METRICS)
    assert sum(r.rows for r in results.values() if r.slicing == "tenure") == 400


def test_slices_come_in_band_order_with_unknown_last() -> None:
    frame, labels, scores = _examples(300)
    order = [(r.slicing, r.band) for r in slice_metrics(frame, labels, scores)]
    assert order == [
        ("tenure", "lt90d"),
        ("tenure", "90-365d"),
        ("tenure", "365dplus"),
        ("spend", "lt100"),
        ("spend", "100-500"),
        ("spend", "500plus"),
        ("country", "DE"),
        ("country", "FR"),
        ("country", "GB"),
        ("country", "unknown"),
    ]


def test_metric_keys_pass_mlflows_name_validation() -> None:
    # imported here: importing mlflow costs seconds, and only this test needs it
    validation = pytest.importorskip("mlflow.utils.validation")
    frame, labels, scores = _examples(300)
    slices = slice_metrics(frame, labels, scores)
    odd = SliceResult("country", "Côte d'Ivoire/..", 60, 6, {"pr_auc": 0.5})
    flat = flat_metrics("holdout", score_metrics(labels, scores), [*slices, odd])

    assert flat["holdout_pr_auc"] == pytest.approx(score_metrics(labels, scores)["pr_auc"])
    assert "holdout_pr_auc.tenure.90-365d" in flat
    assert "holdout_roc_auc.country.DE" in flat
    assert "holdout_pr_auc.country.C_te_d_Ivoire___" in flat
    for key in flat:
        validation._validate_metric_name(key)  # raises MlflowException on a name MLflow rejects


def test_metric_key_rejects_a_split_that_would_break_the_name() -> None:
    assert metric_key("validation", "ece") == "validation_ece"
    with pytest.raises(ValueError, match="split and metric"):
        metric_key("hold.out", "ece")


def test_skipped_slices_add_no_metrics() -> None:
    skipped = SliceResult("country", "NL", 10, 1, {}, "10 rows, fewer than min_rows=50")
    assert flat_metrics("holdout", {"ece": 0.1}, [skipped]) == {"holdout_ece": 0.1}


def test_decile_table_ranks_highest_scores_first() -> None:
    scores = np.linspace(1.0, 0.0, 100)
    labels = np.r_[np.ones(10), np.zeros(90)]  # every churner in the top decile
    table = decile_table(labels, scores)
    assert list(table["decile"]) == list(range(1, 11))
    assert list(table["rows"]) == [10] * 10
    assert table["positives"].tolist() == [10] + [0] * 9
    assert table["cumulative_lift"].iloc[0] == pytest.approx(10.0)
    assert table["cumulative_lift"].iloc[-1] == pytest.approx(1.0)
    top = score_metrics(labels, scores)
    assert top["lift_top_decile"] == pytest.approx(table["cumulative_lift"].iloc[0])


def test_figures_render_to_png() -> None:
    _, labels, scores = _examples(200)
    curves = {
        "sklearn": (labels, scores),
        "recency baseline": (labels, np.clip(scores + 0.2, 0, 1)),
        "one class": (np.zeros(20), np.linspace(0, 1, 20)),
    }
    figures = evaluation_figures(curves)
    figures["importance.png"] = feature_importance_figure(
        {f"feature_{i}": (-1) ** i * i for i in range(30)}, "Permutation importance (PR AUC)"
    )
    assert set(figures) == {"roc.png", "pr.png", "calibration.png", "lift.png", "importance.png"}
    for figure in figures.values():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=50)
        assert buffer.getvalue().startswith(b"\x89PNG")
    bars = figures["importance.png"].axes[0].patches
    assert len(bars) == 20


def test_recency_baseline_rises_with_days_since_last_order() -> None:
    frame = pd.DataFrame({"days_since_last_order": [0, 1, 7, 30, 89]})
    scores = recency_scores(frame)
    assert scores[0] == 0.0
    assert scores[3] == pytest.approx(0.5)
    assert np.all(np.diff(scores) > 0)
    assert np.all((scores >= 0) & (scores < 1))


def test_recency_baseline_refuses_missing_days() -> None:
    with pytest.raises(ValueError, match="days_since_last_order"):
        recency_scores(pd.DataFrame({"days_since_last_order": [3, None]}))
