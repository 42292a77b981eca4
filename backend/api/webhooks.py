"""Webhooks: every event POSTed to each WEBHOOK_URL as a CloudEvent, signed as Standard
Webhooks signs (`webhook-id`, `webhook-timestamp`, `webhook-signature`), at least once.

The queue is in the database (`store/webhooks.py`): the events trigger queues a delivery in
the change's own transaction, every process configured with webhooks claims due deliveries
(each by one process, under a lease) and sends them. A 2xx answer is a delivery; anything
else, or no answer within WEBHOOK_TIMEOUT_SECONDS, is tried again after
WEBHOOK_RETRY_BASE_SECONDS x 4^(tries - 1) (at most 10 hours; +-25 % jitter, so receivers
coming back are not met by every retry at once), until WEBHOOK_MAX_ATTEMPTS tries, then
given up: logged and counted. `webhook-id` is the event's id, the same on every try, so a
receiver drops repeats; the body's `sequence` orders one user's events.

The body is a CloudEvent in its JSON format (`application/cloudevents+json`): a Dapr
sidecar's publish endpoint takes it as it is and puts it on any broker Dapr supports.
"""

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from standardwebhooks.webhooks import Webhook

from backend.api.event_stream import Rendering, render
from backend.config import Settings
from backend.domain.cloud_events import CONTENT_TYPE, event_id
from backend.store import webhooks
from backend.store.database import Database, DatabaseUnavailableError
from backend.store.events import OwnedEvents
from backend.store.housekeeping import repeat

logger = logging.getLogger("backend.webhooks")

EVERY_SECONDS = 0.5  # a new event waits at most this (and a claim) for its first try
CLAIM = 50  # deliveries one endpoint's round sends at once (each a different user)
REGISTER_EVERY = timedelta(minutes=10)  # an endpoint not named for an hour is forgotten
LONGEST_WAIT = timedelta(hours=10)


@dataclass
class WebhookCounts:
    """What this process's sender did, for the metrics."""

    delivered: int = 0
    failed: int = 0  # tries that will be tried again
    given_up: int = 0


def retry_delay(base_seconds: float, tries: int) -> timedelta:
    """How long after its `tries`-th failed try a delivery is tried again."""
    # Not a secret: jitter only spreads retries out.
    jitter = random.uniform(0.75, 1.25)  # noqa: S311
    return min(timedelta(seconds=base_seconds * 4 ** (tries - 1)), LONGEST_WAIT) * jitter


class WebhookSender:
    def __init__(self, database: Database, settings: Settings, rendering: Rendering) -> None:
        assert settings.webhook_secret is not None  # required with WEBHOOK_URL (`config`)
        self.database = database
        self.urls = settings.webhook_url
        self.signer = Webhook(settings.webhook_secret.get_secret_value())
        self.rendering = rendering
        self.timeout_seconds = settings.webhook_timeout_seconds
        self.base_seconds = settings.webhook_retry_base_seconds
        self.max_attempts = settings.webhook_max_attempts
        self.counts = WebhookCounts()
        self._endpoints: dict[str, int] = {}
        self._registered: datetime | None = None
        self._http = httpx.AsyncClient(timeout=self.timeout_seconds, follow_redirects=False)

    async def run(self) -> None:
        """Send until cancelled."""
        await repeat(self.round, EVERY_SECONDS, "a webhook round", logger)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def round(self) -> bool:
        """One claim and send per endpoint; True when one was full (more are waiting)."""
        now = datetime.now(UTC)
        if self._registered is None or now - self._registered > REGISTER_EVERY:
            self._endpoints = await webhooks.register_endpoints(self.database, self.urls)
            self._registered = now
        lease = timedelta(seconds=self.timeout_seconds + 10)
        full = False
        for url, endpoint_id in self._endpoints.items():
            claimed = await webhooks.claim(self.database, endpoint_id, CLAIM, lease)
            full = full or len(claimed) == CLAIM
            await asyncio.gather(*(self._send(url, endpoint_id, delivery) for delivery in claimed))
        return full

    async def _send(self, url: str, endpoint_id: int, delivery: webhooks.Claimed) -> None:
        try:
            rows = await OwnedEvents(self.database, delivery.user_id).after(delivery.sequence - 1, 1)
            if not rows or rows[0]["sequence"] != delivery.sequence:
                # Purged (older than SYNC_RETENTION_DAYS): nothing left to send.
                await webhooks.delivered(self.database, endpoint_id, delivery)
                return
            body = render(rows[0], delivery.user_id, self.rendering).body
            problem = await self._post(url, event_id(delivery.user_id, delivery.sequence), body)
            if problem is None:
                await webhooks.delivered(self.database, endpoint_id, delivery)
                self.counts.delivered += 1
            elif delivery.attempts >= self.max_attempts:
                await webhooks.delivered(self.database, endpoint_id, delivery)
                self.counts.given_up += 1
                logger.warning(
                    "a webhook delivery was given up",
                    extra={
                        "url": url,
                        "event": event_id(delivery.user_id, delivery.sequence),
                        "attempts": delivery.attempts,
                        "error": problem,
                    },
                )
            else:
                when = datetime.now(UTC) + retry_delay(self.base_seconds, delivery.attempts)
                await webhooks.retry_at(self.database, endpoint_id, delivery, when)
                self.counts.failed += 1
                logger.info(
                    "a webhook delivery failed; it will be tried again",
                    extra={
                        "url": url,
                        "attempts": delivery.attempts,
                        "error": problem,
                        "retry_at": when.isoformat(),
                    },
                )
        except DatabaseUnavailableError as error:
            # The lease runs out and the delivery is claimed again.
            logger.warning("a webhook delivery is on hold: the database is unreachable (%s)", error)

    async def _post(self, url: str, message_id: str, body: str) -> str | None:
        """None once the endpoint has taken the event; else what went wrong."""
        sent_at = datetime.now(UTC)
        headers = {
            "content-type": CONTENT_TYPE,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self.signer.sign(message_id, sent_at, body),
        }
        try:
            response = await self._http.post(url, content=body.encode(), headers=headers)
        except httpx.TimeoutException:
            return f"no answer within {self.timeout_seconds:g} s"
        except httpx.HTTPError as error:
            return type(error).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"status {response.status_code}"
