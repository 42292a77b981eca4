"""Prometheus metrics: requests and latency by route template, the database pool, JWKS
fetches, reminders fired and skipped, open event streams, webhook deliveries, chat turns,
their tool calls and the model's tokens."""

import hmac
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.app_state import state_of
from backend.errors import NotAuthenticated

if TYPE_CHECKING:
    from backend.app_state import AppState

# Milliseconds matter here: a task read takes a few.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """One registry per app, so several apps (tests, workers) never share counters."""

    def __init__(self, state: "AppState") -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "todo_api_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "todo_api_request_duration_seconds",
            "Time from receiving a request to finishing its response.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(state))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


class _StateCollector(Collector):
    """Read at scrape time from the pool and the JWKS cache themselves."""

    def __init__(self, state: "AppState") -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        pool = state.database.pool_status()
        in_use = GaugeMetricFamily("todo_api_db_pool_in_use", "Database connections checked out.")
        in_use.add_metric([], pool.in_use)
        yield in_use
        size = GaugeMetricFamily("todo_api_db_pool_size", "Database connections the pool keeps open.")
        size.add_metric([], pool.size)
        yield size
        waiting = GaugeMetricFamily("todo_api_db_pool_waiting", "Requests waiting for a pooled connection.")
        waiting.add_metric([], pool.waiting)
        yield waiting
        jwks = state.token_verifier.jwks
        if jwks is not None:
            fetches = CounterMetricFamily(
                "todo_api_jwks_fetches", "Fetches of Better Auth's JWKS, by outcome.", labels=["outcome"]
            )
            fetches.add_metric(["success"], jwks.fetches - jwks.failures)
            fetches.add_metric(["failure"], jwks.failures)
            yield fetches
        reminders = CounterMetricFamily(
            "todo_api_reminders",
            "Reminders this process handled: fired on time, fired late (after downtime, within "
            "REMINDER_MAX_LATENESS_MINUTES), or skipped (older).",
            labels=["outcome"],
        )
        reminders.add_metric(["on_time"], state.reminders.fired - state.reminders.late)
        reminders.add_metric(["late"], state.reminders.late)
        reminders.add_metric(["skipped"], state.reminders.skipped)
        yield reminders
        streams = GaugeMetricFamily("todo_api_event_streams", "Event streams open on this process.")
        streams.add_metric([], state.event_hub.streams)
        yield streams
        if state.webhooks is not None:
            counts = state.webhooks.counts
            deliveries = CounterMetricFamily(
                "todo_api_webhook_deliveries",
                "Webhook tries by this process: delivered (a 2xx), failed (tried again later), "
                "given up (after WEBHOOK_MAX_ATTEMPTS).",
                labels=["outcome"],
            )
            deliveries.add_metric(["delivered"], counts.delivered)
            deliveries.add_metric(["failed"], counts.failed)
            deliveries.add_metric(["given_up"], counts.given_up)
            yield deliveries
        if state.chat is not None:
            chat = state.chat.counts
            turns = CounterMetricFamily(
                "todo_api_chat_turns",
                "Chat messages this process answered (`answered`) or could not (the problem's status).",
                labels=["outcome"],
            )
            for outcome, count in sorted(chat.turns.items()):
                turns.add_metric([outcome], count)
            yield turns
            calls = CounterMetricFamily("todo_api_chat_tool_calls", "Tool calls the chat agent made.")
            calls.add_metric([], chat.tool_calls)
            yield calls
            tokens = CounterMetricFamily(
                "todo_api_chat_tokens",
                "Tokens the chat model read (input) and wrote (output).",
                labels=["kind"],
            )
            tokens.add_metric(["input"], chat.input_tokens)
            tokens.add_metric(["output"], chat.output_tokens)
            yield tokens


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus metrics (enabled by METRICS_ENABLED; guarded by METRICS_TOKEN when set)."""
    expected = state_of(request).metrics_token
    if expected is not None:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {expected}".encode()):
            raise NotAuthenticated("the metrics token is missing or wrong", token_sent=bool(sent))
    metrics = state_of(request).metrics
    assert metrics is not None  # the route is served only with METRICS_ENABLED
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
