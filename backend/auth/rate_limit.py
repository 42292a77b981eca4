"""Per-user rate limiting: a token bucket per `sub`, in this process or shared through Redis."""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

logger = logging.getLogger("backend.rate_limit")


class RateLimiter(Protocol):
    async def wait_seconds(self, key: str) -> float:
        """Take a token for `key`: 0 if allowed now, else how long until one is free."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class LocalRateLimiter:
    """Buckets in this process's memory: exact for one worker, per worker with several."""

    rate: float
    burst: int
    max_keys: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    async def wait_seconds(self, key: str) -> float:
        now = time.monotonic()
        tokens, updated = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        if tokens >= 1:
            self._store(key, tokens - 1, now)
            return 0.0
        self._store(key, tokens, now)
        return (1 - tokens) / self.rate

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            # A bucket that has refilled is the same as no bucket: forget those.
            full_after = self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}

    async def aclose(self) -> None:
        return None


# Atomic in Redis: refill by elapsed time (Redis's clock, shared by every process), take a token.
_BUCKET_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


@dataclass
class RedisRateLimiter:
    """One bucket per user shared by every process that uses the same Redis.

    If Redis fails, requests are let through (and the failure logged, at most
    once a minute): an outage of the limiter must not become an outage of the API.
    """

    url: str
    rate: float
    burst: int
    prefix: str = "todo-api:rate-limit:"
    _client: redis.Redis | None = None
    _script: AsyncScript | None = None
    _last_warning: float = -math.inf

    async def wait_seconds(self, key: str) -> float:
        if self._client is None or self._script is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._script = self._client.register_script(_BUCKET_SCRIPT)  # EVALSHA, loaded once
        try:
            wait = await self._script(keys=[self.prefix + key], args=[self.rate, self.burst])
        except (RedisError, OSError) as error:
            if time.monotonic() - self._last_warning > 60:
                self._last_warning = time.monotonic()
                logger.warning(
                    "rate limiter unavailable; letting requests through",
                    extra={"error": type(error).__name__},
                )
            return 0.0
        return float(wait)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


# A burst of three seconds' worth: a page load's handful of calls never waits.
BURST_SECONDS = 3


def create_rate_limiter(
    rate: float, burst: int | None, redis_url: str | None, prefix: str = "todo-api:rate-limit:"
) -> RateLimiter | None:
    """A bucket of `burst` tokens refilled at `rate` a second, per user (its Redis keys start
    with `prefix`); None when `rate` is 0."""
    if rate <= 0:
        return None
    capacity = burst or max(1, math.ceil(rate * BURST_SECONDS))
    if redis_url:
        return RedisRateLimiter(url=redis_url, rate=rate, burst=capacity, prefix=prefix)
    return LocalRateLimiter(rate=rate, burst=capacity)
