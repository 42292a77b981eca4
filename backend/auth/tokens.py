"""Token verification: pure logic and key sources, no web framework.

Two key sources: the shared HS256 secret, and Better Auth's JWKS (EdDSA, ES256,
RS256, PS256, ES512). The configured algorithm allow-list and the key's own
type decide what is accepted; the token's `alg` header is only checked against
them, never trusted to choose a kind of key.
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

from backend.models import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH, USER_ID_MAX_LENGTH

logger = logging.getLogger("backend.security")

HS256 = "HS256"

# Verified tokens remembered per process, and for how long at most.
VERIFIED_TOKENS_KEPT = 4096
VERIFIED_TOKEN_TTL_SECONDS = 300

# The asymmetric algorithms accepted (Better Auth's jwt plugin signs with EdDSA by
# default), each with the key it may be verified with: (kty, allowed crv or None for any).
KEY_TYPE_FOR_ALGORITHM: dict[str, tuple[str, frozenset[str] | None]] = {
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "ES256": ("EC", frozenset({"P-256"})),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "ES512": ("EC", frozenset({"P-521"})),
}


class InvalidTokenError(Exception):
    """The token cannot be trusted. The message is safe to show to the client."""


class KeySetUnavailableError(Exception):
    """No verification key can be had: the JWKS endpoint is unreachable and nothing is cached."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What the API uses from a verified token."""

    subject: str
    email: str | None = None
    name: str | None = None
    expires_at: float | None = None  # `exp`, in seconds since the epoch: when a stream ends


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One JWKS entry, parsed once and kept with what it may verify."""

    kid: str
    kty: str
    crv: str | None
    alg: str | None
    key: Any

    def can_verify(self, algorithm: str) -> bool:
        if self.alg is not None and self.alg != algorithm:
            return False
        kty, curves = KEY_TYPE_FOR_ALGORITHM[algorithm]
        return self.kty == kty and (curves is None or self.crv in curves)


def parse_jwks(document: object) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document, by `kid`; unusable entries are skipped."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use") not in (None, "sig"):
            continue
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as error:
            logger.warning(
                "skipping a JWKS key that cannot be used", extra={"kid": entry["kid"], "error": str(error)}
            )
            continue
        keys[entry["kid"]] = VerificationKey(
            kid=entry["kid"], kty=str(entry.get("kty")), crv=entry.get("crv"), alg=entry.get("alg"), key=key
        )
    return keys


@dataclass
class JwksCache:
    """Better Auth's public keys, shared by every request of the process.

    Keys are kept for `cache_seconds`, and refetched at once for an unknown
    `kid`, but never more often than every `min_refresh_seconds`, so junk `kid`s
    cannot make us hammer Better Auth. A failed refresh keeps the keys we have:
    an outage of Better Auth does not log everyone out.
    """

    url: str
    cache_seconds: float = 300
    min_refresh_seconds: float = 30
    timeout_seconds: float = 3
    fetches: int = 0
    failures: int = 0
    _keys: dict[str, VerificationKey] = field(default_factory=dict)
    _fetched_at: float | None = None
    _attempted_at: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _client: httpx.AsyncClient | None = None

    async def get(self, kid: str) -> VerificationKey | None:
        if self._is_stale():
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            await self._refresh()
            key = self._keys.get(kid)
        if key is None and self._fetched_at is None:
            raise KeySetUnavailableError(f"the JWKS at {self.url} could not be fetched")
        return key

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _is_stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self.cache_seconds

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or time.monotonic() - self._attempted_at >= self.min_refresh_seconds

    async def _refresh(self) -> None:
        # While a fetch is in flight, wait for it (its keys may be the ones we need)
        # rather than go on with none: a page loading its list while the person clicks
        # sends two requests with a new key at once.
        if not self._may_fetch() and not self._lock.locked():
            return
        async with self._lock:
            # Whoever held the lock may have just fetched: one fetch serves all waiters.
            if not self._may_fetch():
                return
            self._attempted_at = time.monotonic()
            self.fetches += 1
            try:
                keys = parse_jwks(await self._download())
            except (httpx.HTTPError, ValueError) as error:
                self.failures += 1
                logger.warning(
                    "JWKS refresh failed; keeping the cached keys",
                    extra={"url": self.url, "error": type(error).__name__, "cached_keys": len(self._keys)},
                )
                return
            self._keys, self._fetched_at = keys, time.monotonic()
            logger.info("JWKS refreshed", extra={"url": self.url, "keys": len(keys)})

    async def _download(self) -> object:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_seconds, follow_redirects=False)
        response = await self._client.get(self.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()


@dataclass
class TokenVerifier:
    """Checks a token's signature, algorithm, expiry, issuer and audience.

    A verified token is remembered (by its exact text, until it expires, for
    at most `VERIFIED_TOKEN_TTL_SECONDS`): a client sends the same token with
    every request, and checking it again cost about 15% of a task read's CPU
    (py-spy, under `make bench`). Only successes are remembered, so a bad token
    is always checked in full.
    """

    algorithms: frozenset[str]
    secret: str | None = None
    jwks: JwksCache | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30
    _verified: dict[str, tuple[TokenClaims, float]] = field(default_factory=dict)

    async def verify(self, token: str) -> TokenClaims:
        remembered = self._verified.get(token)
        if remembered is not None:
            claims, valid_until = remembered
            if time.time() < valid_until:
                return claims
            del self._verified[token]
        claims = await self._verify(token)
        assert claims.expires_at is not None  # set by `_verify`
        self._remember(token, claims, claims.expires_at)
        return claims

    def _remember(self, token: str, claims: TokenClaims, expires_at: float) -> None:
        # The same bound PyJWT applies to `exp`, and no longer than the TTL, so a key
        # withdrawn from the JWKS stops working about as soon as the JWKS cache notices.
        valid_until = min(expires_at + self.leeway_seconds, time.time() + VERIFIED_TOKEN_TTL_SECONDS)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (claims, valid_until)

    async def _verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError("the token is malformed") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidTokenError("the token's algorithm is not accepted")
        key = self.secret if algorithm == HS256 else await self._public_key(header, algorithm)
        payload = self._decode(token, key, algorithm)
        # `exp` is required, and a number (or numeric text) once PyJWT has checked it.
        return replace(claims_from_payload(payload), expires_at=float(payload["exp"]))

    async def _public_key(self, header: Mapping[str, Any], algorithm: str) -> Any:
        kid = header.get("kid")
        if self.jwks is None or not isinstance(kid, str) or not kid:
            raise InvalidTokenError("the token names no signing key ('kid')")
        key = await self.jwks.get(kid)
        if key is None:
            raise InvalidTokenError("the token's signing key is not known")
        if not key.can_verify(algorithm):
            raise InvalidTokenError("the token's algorithm does not match its signing key")
        return key.key

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={
                    "require": ["exp", "sub"],
                    # Without a configured audience a token's `aud` is not ours to judge.
                    "verify_aud": self.audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidTokenError("the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError("the token's issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError("the token's audience is not accepted") from None
        except jwt.MissingRequiredClaimError as error:
            raise InvalidTokenError(f"the token has no {error.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidTokenError("the token's signature is invalid") from None
        except jwt.PyJWTError:
            raise InvalidTokenError("the token is invalid") from None
        return payload


def claims_from_payload(payload: dict[str, object]) -> TokenClaims:
    subject = payload.get("sub")
    if not isinstance(subject, str) or not _fits(subject, USER_ID_MAX_LENGTH):
        raise InvalidTokenError("the token's 'sub' claim is not a user id")
    email, name = payload.get("email"), payload.get("name")
    # Profile claims are a courtesy: one that could not be stored is dropped, not fatal.
    return TokenClaims(
        subject=subject,
        email=email if isinstance(email, str) and _fits(email, EMAIL_MAX_LENGTH) else None,
        name=name if isinstance(name, str) and _fits(name, NAME_MAX_LENGTH) else None,
    )


def _fits(value: str, max_length: int) -> bool:
    """Non-empty, short enough for its column, and free of NUL (which PostgreSQL refuses)."""
    return 0 < len(value) <= max_length and "\x00" not in value


def issue_token(
    secret: str,
    user_id: str,
    *,
    email: str | None = None,
    name: str | None = None,
    lifetime: timedelta = timedelta(minutes=15),
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """An HS256 token as the API expects it, for development and tests."""
    now = datetime.now(UTC)
    payload: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + lifetime}
    for claim, value in (("email", email), ("name", name), ("iss", issuer), ("aud", audience)):
        if value is not None:
            payload[claim] = value
    return jwt.encode(payload, secret, algorithm=HS256)
