"""Slack messages of churnflow, in Block Kit: task failures, drift summaries, retraining
decisions and promotion outcomes. Every message goes to the task log; it is also posted when
Slack is configured.

Configuration (Airflow side, from the environment of the scheduler and workers):
- the token: the password of the Airflow connection named by `CHURNFLOW_SLACK_CONN_ID` (the
  Slack provider's `slack` connection type), or `CHURNFLOW_SLACK_TOKEN` (on Kubernetes, an env
  var from a secret reference; the token is never in a DAG file or an image);
- `CHURNFLOW_SLACK_CHANNEL` (default `#churnflow-alerts`);
- `CHURNFLOW_SLACK_BASE_URL`: another Web API endpoint (a proxy; the tests' stand-in).

Slack's failures never fail a pipeline task. slack-sdk retries what Slack says to retry: a
rate limit after its `Retry-After` (unless that is longer than `MAX_RETRY_AFTER_S`: a task
does not sleep for minutes over a message), server errors and broken connections; after
that, or on an answer that will not change (an invalid token, an unknown channel), the
message and the reason are logged and the task goes on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("churnflow.slack")

DEFAULT_CHANNEL = "#churnflow-alerts"
TIMEOUT_S = 10
RETRIES = 2
MAX_RETRY_AFTER_S = 30


@dataclass(frozen=True)
class Message:
    """`text` is the notification's fallback and the log line; `blocks` what Slack shows."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SlackTarget:
    token: str
    channel: str
    base_url: str | None = None

    @classmethod
    def from_env(cls) -> SlackTarget | None:
        """The configured workspace and channel; None when no token is configured."""
        token = os.environ.get("CHURNFLOW_SLACK_TOKEN", "")
        conn_id = os.environ.get("CHURNFLOW_SLACK_CONN_ID", "")
        if not token and conn_id:
            token = _connection_token(conn_id)
        if not token:
            return None
        channel = os.environ.get("CHURNFLOW_SLACK_CHANNEL") or DEFAULT_CHANNEL
        return cls(token, channel, os.environ.get("CHURNFLOW_SLACK_BASE_URL") or None)


def _connection_token(conn_id: str) -> str:
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(conn_id).password or ""
    except Exception as err:  # an unknown connection must not fail the task that alerts
        log.warning("Slack connection %r unusable (%s): messages go to the log only", conn_id, err)
        return ""


def _client(target: SlackTarget) -> Any:
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    class BoundedRateLimit(RateLimitErrorRetryHandler):
        """Waits as Slack asks, but not longer than MAX_RETRY_AFTER_S."""

        def _can_retry(self, *, state, request, response=None, error=None) -> bool:  # type: ignore[no-untyped-def]
            if not super()._can_retry(state=state, request=request, response=response, error=error):
                return False
            headers = {k.lower(): v for k, v in (response.headers or {}).items()}
            wait = (headers.get("retry-after") or ["1"])[0]
            return int(wait) <= MAX_RETRY_AFTER_S if str(wait).isdigit() else False

    from urllib.error import URLError

    handlers = [
        BoundedRateLimit(max_retry_count=RETRIES),
        ServerErrorRetryHandler(max_retry_count=RETRIES),
        ConnectionErrorRetryHandler(
            max_retry_count=RETRIES, error_types=[URLError, ConnectionError, TimeoutError]
        ),
    ]
    kwargs: dict[str, Any] = {"token": target.token, "timeout": TIMEOUT_S}
    if target.base_url:
        kwargs["base_url"] = target.base_url
    return WebClient(retry_handlers=handlers, **kwargs)


def send(message: Message, target: SlackTarget | None = None) -> bool:
    """Log the message and post it to Slack when configured; True when Slack accepted it."""
    log.info("%s", message.text)
    return post(message, target)


def post(message: Message, target: SlackTarget | None = None) -> bool:
    """Post to Slack when configured (no log line of the message itself); never raises."""
    target = target or SlackTarget.from_env()
    if target is None:
        return False
    try:
        response = _client(target).chat_postMessage(
            channel=target.channel, text=message.text, blocks=message.blocks or None
        )
        return bool(response.get("ok"))
    except Exception as err:  # Slack must never fail the pipeline
        reason = getattr(getattr(err, "response", None), "data", None) or err
        log.warning("Slack did not take the message for %s: %s", target.channel, reason)
        return False


# --- Block Kit ------------------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _fields(pairs: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in pairs.items()][:10],
    }


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _link(url: str, label: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [{"type": "button", "text": {"type": "plain_text", "text": label}, "url": url}],
    }


def failure(
    dag_id: str, task_id: str, ds: str, run_id: str, reason: str, *, log_url: str = ""
) -> Message:
    """A task (or DAG run) failed."""
    text = f":red_circle: churnflow failure: {dag_id}.{task_id} ds={ds} run={run_id}: {reason}"
    blocks = [
        _header(f"Failure: {dag_id}.{task_id}"),
        _fields({"DAG": dag_id, "task": task_id, "ds": ds, "run": run_id}),
        _section(f"```{reason[:2800]}```"),
    ]
    if log_url:
        blocks.append(_link(log_url, "Task log"))
    return Message(text, blocks)


def drift_summary(metrics: dict[str, Any], decision: dict[str, Any], report_url: str) -> Message:
    """A judged day: drift share and columns, score mean, realised performance, decision."""
    features = metrics.get("features", {})
    drifted = features.get("drifted_columns", [])
    ds, action = metrics.get("ds", "?"), decision.get("action", "?")
    icon = {"trigger": ":rotating_light:", "skip": ":warning:"}.get(action, ":white_check_mark:")
    text = (
        f"{icon} churn drift ds={ds}: {len(drifted)} of {len(features.get('columns', {}))} "
        f"feature columns drifted; retraining decision: {action}"
    )
    pairs = {
        "drift share": f"{features.get('share', 0):.2f}",
        "drifted columns": ", ".join(drifted) or "none",
        "mean score": f"{metrics.get('predictions', {}).get('mean', float('nan')):.4f}",
        "rows": str(metrics.get("rows", "?")),
    }
    realised = metrics.get("realised") or {}
    for role in ("champion", "challenger"):
        if realised.get(role, {}).get("pr_auc") is not None:
            entry = realised[role]
            pairs[f"realised PR AUC, {role} v{entry['model_version']}"] = (
                f"{entry['pr_auc']:.4f} (scored {realised['ds']})"
            )
    blocks = [
        _header(f"Churn monitoring {ds}: {action}"),
        _fields(pairs),
        _section("*Retraining decision*: " + "; ".join(decision.get("reasons", []))),
    ]
    if report_url:
        blocks.append(_link(report_url, "Drift report"))
    return Message(text, blocks)


def promotion_outcome(record: dict[str, Any]) -> Message:
    """The gate's decision on a challenger (churn_training's promote step)."""
    outcome, version = record.get("outcome", "?"), record.get("challenger", "?")
    icon = ":trophy:" if outcome == "promoted" else ":no_entry_sign:"
    lines = record.get("lines", [])
    text = f"{icon} churn model v{version}: {outcome} (as of {record.get('as_of', '?')})"
    metrics = {name: f"{value:.4f}" for name, value in record.get("metrics", {}).items()}
    blocks = [
        _header(f"Churn model v{version}: {outcome}"),
        _section("\n".join(lines) or outcome),
    ]
    if metrics:
        blocks.append(_fields({f"holdout PR AUC, {k}": v for k, v in metrics.items()}))
    return Message(text, blocks)
