"""Token verification: pure functions, no web framework.

The algorithm allow-list and the key come from configuration; the token's own
`alg` header is only checked against them, never trusted to choose the key.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from backend.models import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH, USER_ID_MAX_LENGTH

HS256 = "HS256"


class InvalidTokenError(Exception):
    """The token cannot be trusted. The message is safe to show to the client."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What the API uses from a verified token."""

    subject: str
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    secret: str
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError("the token is malformed") from None
        if header.get("alg") != HS256:
            raise InvalidTokenError("the token's algorithm is not accepted")
        try:
            payload = jwt.decode(
                token,
                self.secret,
                algorithms=[HS256],
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
        return claims_from_payload(payload)


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
