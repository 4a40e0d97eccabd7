"""Slack messages against a local server that speaks Slack's Web API (slack-sdk's `base_url`):
the payloads, and each failure answer Slack gives, none of which may fail the task."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from churnflow_airflow import slack
from churnflow_airflow.alerts import alert_failure
from churnflow_airflow.slack import Message, SlackTarget, send

TOKEN = "xoxb-test-token"


@dataclass
class Answer:
    status: int = 200
    body: dict[str, Any] = field(default_factory=lambda: {"ok": True, "ts": "1.0"})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class FakeSlack:
    """Answers each request with the next scripted Answer (the last one repeats)."""

    def __init__(self) -> None:
        self.answers: list[Answer] = [Answer()]
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                fake.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "json": json.loads(self.rfile.read(length) or b"{}"),
                    }
                )
                answer = fake.answers[min(len(fake.requests), len(fake.answers)) - 1]
                time.sleep(answer.delay_s)
                payload = json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def target(self) -> SlackTarget:
        return SlackTarget(TOKEN, "#churn-alerts", self.base_url)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    server = FakeSlack()
    yield server
    server.server.shutdown()


MESSAGE = slack.failure("churn_scoring", "score_customers", "2026-03-01", "backfill__x", "boom")


def test_a_message_is_posted_as_block_kit_with_the_token(fake: FakeSlack) -> None:
    assert send(MESSAGE, fake.target()) is True
    [request] = fake.requests
    assert request["path"] == "/api/chat.postMessage"
    assert request["auth"] == f"Bearer {TOKEN}"
    body = request["json"]
    assert body["channel"] == "#churn-alerts"
    assert "churn_scoring.score_customers" in body["text"]
    kinds = [block["type"] for block in body["blocks"]]
    assert kinds[0] == "header" and "section" in kinds
    fields = " ".join(f["text"] for f in body["blocks"][1]["fields"])
    assert "2026-03-01" in fields and "score_customers" in fields


def test_an_invalid_token_is_logged_not_raised_nor_retried(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake.answers = [Answer(body={"ok": False, "error": "invalid_auth"})]
    assert send(MESSAGE, fake.target()) is False
    assert len(fake.requests) == 1
    assert "invalid_auth" in caplog.text


def test_a_rate_limit_is_retried_after_the_wait_slack_asks_for(fake: FakeSlack) -> None:
    limited = Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
    fake.answers = [limited, Answer()]
    started = time.monotonic()
    assert send(MESSAGE, fake.target()) is True
    assert len(fake.requests) == 2
    assert time.monotonic() - started >= 1.0


def test_a_rate_limit_longer_than_the_bound_gives_up_at_once(fake: FakeSlack) -> None:
    fake.answers = [Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "600"})]
    started = time.monotonic()
    assert send(MESSAGE, fake.target()) is False
    assert len(fake.requests) == 1 and time.monotonic() - started < 5


def test_server_errors_are_retried_then_logged(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake.answers = [Answer(500, {"ok": False, "error": "fatal_error"})]
    assert send(MESSAGE, fake.target()) is False
    assert len(fake.requests) == 1 + slack.RETRIES
    assert "Slack did not take the message" in caplog.text


def test_a_timeout_is_retried_then_logged(fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slack, "TIMEOUT_S", 1)
    fake.answers = [Answer(delay_s=1.5)]
    assert send(MESSAGE, fake.target()) is False
    assert len(fake.requests) == 1 + slack.RETRIES


def test_without_slack_the_message_goes_to_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("CHURNFLOW_SLACK_TOKEN", "CHURNFLOW_SLACK_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.INFO, logger="churnflow.slack")
    assert send(Message("drift on 2026-03-01")) is False
    assert "drift on 2026-03-01" in caplog.text


def test_a_task_failure_alert_reaches_slack_from_the_environment(
    fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURNFLOW_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("CHURNFLOW_SLACK_CHANNEL", "#ops")
    monkeypatch.setenv("CHURNFLOW_SLACK_BASE_URL", fake.base_url)
    ti = SimpleNamespace(dag_id="churn_features", task_id="build_features", try_number=3)
    alert_failure({"ti": ti, "ds": "2026-03-01", "run_id": "r1", "exception": ValueError("x")})
    [request] = fake.requests
    assert request["json"]["channel"] == "#ops"
    assert "churn_features.build_features" in request["json"]["text"]
    assert "try 3" in request["json"]["text"]


def test_drift_and_promotion_messages_carry_the_figures(fake: FakeSlack) -> None:
    metrics = {
        "ds": "2026-03-01",
        "rows": 900,
        "features": {"share": 0.6, "drifted_columns": ["amount_90d"], "columns": {"a": 1}},
        "predictions": {"mean": 0.31},
        "realised": {"ds": "2026-02-15", "champion": {"model_version": 3, "pr_auc": 0.52}},
    }
    decision = {"action": "trigger", "reasons": ["drift: 6 of 10 feature columns drifted"]}
    assert send(slack.drift_summary(metrics, decision, "file:///lake/report.html"), fake.target())
    outcome = {
        "as_of": "2026-03-01",
        "outcome": "rejected",
        "challenger": "4",
        "lines": ["kept @champion: version 4 not promoted", "  fail PR AUC vs champion v3"],
        "metrics": {"challenger v4": 0.5, "champion v3": 0.55},
    }
    assert send(slack.promotion_outcome(outcome), fake.target())
    drift_body, promotion_body = (request["json"] for request in fake.requests)
    assert "retraining decision: trigger" in drift_body["text"]
    text = json.dumps(drift_body["blocks"])
    assert "amount_90d" in text and "0.5200" in text and "file:///lake/report.html" in text
    assert "v4: rejected" in promotion_body["text"]
    assert "fail PR AUC vs champion v3" in json.dumps(promotion_body["blocks"])
