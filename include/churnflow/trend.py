"""The monitoring trend page: one look shows when drift started and what it did.

`reports/monitoring/index.html` plots, day by day, the share of drifted feature columns (with
the retraining threshold), the mean score, the realised PR AUC of the champion and of a shadow
challenger (on the day they scored, once its labels matured), and the retraining decisions
(a red line where one was triggered), above a table of the days. The drift step rebuilds it
after each day from the published `metrics.json` and `decision.json` files, so a rerun or a
backfill leaves the same page; it is a single file with its plot inline, readable anywhere.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from churnflow.drift import read_series
from churnflow.lake import REPORTS, Lake

if TYPE_CHECKING:
    from mlflow import MlflowClient

TREND_PAGE = f"{REPORTS}/monitoring/index.html"
MONITORING_EXPERIMENT = "churn_monitoring"
TAG_MONITORED = "churnflow.monitored_version"


def _figure(series: list[dict[str, Any]], decisions: list[Any], drift_share: float) -> Figure:
    days = [date.fromisoformat(m["ds"]) for m in series]
    figure = Figure(figsize=(10, 8), layout="constrained")
    share, score, realised = figure.subplots(3, 1, sharex=True)
    share.plot(days, [m["features"]["share"] for m in series], marker="o", label="drift share")
    share.axhline(drift_share, color="grey", linestyle="--", label="retraining threshold")
    share.set_ylabel("drifted feature share")
    share.set_ylim(0, 1)
    score.plot(days, [m["predictions"]["mean"] for m in series], marker="o", color="tab:purple")
    score.set_ylabel("mean churn score")
    for role, color in (("champion", "tab:blue"), ("challenger", "tab:orange")):
        points = [
            (date.fromisoformat(r["ds"]), r[role]["pr_auc"])
            for m in series
            if (r := m.get("realised")) and r.get(role, {}).get("pr_auc") is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            realised.plot(xs, ys, marker="o", color=color, label=f"{role} (realised)")
    realised.set_ylabel("realised PR AUC")
    realised.set_xlabel("day (realised: the day scored)")
    for axes in (share, score, realised):
        for decision in decisions:
            if decision.action == "trigger":
                axes.axvline(date.fromisoformat(decision.ds), color="tab:red", alpha=0.6)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="upper left")
    figure.suptitle("churn monitoring (red: retraining triggered)")
    return figure


def trend_html(lake: Lake, drift_share: float) -> str:
    from churnflow.retraining import read_decisions

    series = read_series(lake)
    if not series:
        return "<html><body><p>No day judged yet.</p></body></html>"
    decisions = read_decisions(lake, date.max)
    buffer = io.BytesIO()
    _figure(series, decisions, drift_share).savefig(buffer, format="png", dpi=90)
    image = base64.b64encode(buffer.getvalue()).decode()
    by_day = {d.ds: d for d in decisions}
    rows = []
    for m in reversed(series):
        decision = by_day.get(m["ds"])
        action = html.escape(decision.line if decision else "not decided")
        drifted = html.escape(", ".join(m["features"]["drifted_columns"]) or "none")
        rows.append(
            f"<tr><td>{m['ds']}</td><td>v{m['model_version']}</td><td>{m['rows']}</td>"
            f"<td>{m['features']['share']:.2f}</td><td>{drifted}</td>"
            f"<td>{m['predictions']['mean']:.4f}</td><td>{action}</td></tr>"
        )
    return (
        "<html><head><meta charset='utf-8'><title>churn monitoring</title></head><body>"
        f"<h1>churn monitoring, {series[0]['ds']} .. {series[-1]['ds']}</h1>"
        f"<img alt='trend' src='data:image/png;base64,{image}'/>"
        "<table border='1' cellpadding='4'><tr><th>day</th><th>model</th><th>rows</th>"
        "<th>drift share</th><th>drifted columns</th><th>mean score</th><th>decision</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


def write_trend(lake: Lake, drift_share: float) -> tuple[str, str]:
    """Rebuild the trend page (replaced whole); its URI and its HTML."""
    page = trend_html(lake, drift_share)
    return lake.write_bytes(TREND_PAGE, page.encode()), page


def log_to_mlflow(client: MlflowClient, metrics: dict[str, Any], page: str) -> str:
    """The trend page and the day's headline figures on the monitoring run of the version
    that scored the day (one run per version in the `churn_monitoring` experiment; the
    figures as metric histories, one step per day), so MLflow shows them beside the model."""
    import tempfile
    from pathlib import Path

    from mlflow.entities import Metric

    from churnflow.registry import MODEL_NAME, TAG_DS

    version = str(metrics["model_version"])
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(MONITORING_EXPERIMENT)
    )
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.{TAG_MONITORED} = '{version}'", max_results=1
    )
    run_id = (
        found[0].info.run_id
        if found
        else client.create_run(
            experiment_id,
            run_name=f"monitoring {MODEL_NAME} v{version}",
            tags={TAG_MONITORED: version},
        ).info.run_id
    )
    day = date.fromisoformat(metrics["ds"])
    step, stamp = day.toordinal(), int(datetime.combine(day, time(), UTC).timestamp() * 1000)
    figures = {
        "drift_share": metrics["features"]["share"],
        "score_mean": metrics["predictions"]["mean"],
        "rows": float(metrics["rows"]),
    }
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in figures.items()])
    client.set_tag(run_id, TAG_DS, metrics["ds"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trend.html"
        path.write_text(page)
        client.log_artifact(run_id, str(path))
    return run_id
