"""Who may do what: 401 without a valid token, 403 on another user's path, 404 for another user's task."""

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from httpx import AsyncClient

from backend.auth import tokens as security
from backend.auth.tokens import InvalidTokenError, TokenVerifier, issue_token
from tests.conftest import SECRET, Caller, assert_problem, sign_in

pytestmark = pytest.mark.anyio

ROUTES = [
    ("GET", ""),
    ("POST", ""),
    ("GET", "/{id}"),
    ("PUT", "/{id}"),
    ("PATCH", "/{id}"),
    ("DELETE", "/{id}"),
    ("PATCH", "/{id}/complete"),
]
BODIES = {"POST": {"title": "x"}, "PUT": {"title": "x"}, "PATCH": {"title": "x"}}


def now() -> datetime:
    return datetime.now(UTC)


def at(moment: datetime) -> int:
    return int(moment.timestamp())


def hs256(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(payload)}."


def valid_claims(**overrides: Any) -> dict[str, Any]:
    return {"sub": "alice-8KJx2mQ", "exp": at(now() + timedelta(minutes=5)), **overrides}


async def call(client: AsyncClient, method: str, path: str, headers: dict[str, str]) -> Any:
    url = "/api/alice-8KJx2mQ/tasks" + path.format(id=1)
    return await client.request(
        method, url, headers=headers, json=BODIES.get(method) if path != "/{id}/complete" else None
    )


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_task_route_needs_a_token(client: AsyncClient, method: str, path: str) -> None:
    response = await call(client, method, path, {})
    problem = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert "token" in problem["detail"]


@pytest.mark.parametrize("authorization", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Token abc", "bearer-ish"])
async def test_a_non_bearer_authorization_header_is_401(client: AsyncClient, authorization: str) -> None:
    response = await call(client, "GET", "", {"Authorization": authorization})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


BAD_TOKENS = {
    "garbage": lambda: "not-a-jwt",
    "three garbage parts": lambda: "a.b.c",
    "wrong secret": lambda: hs256(valid_claims(), "another-secret-that-is-also-long-enough-0000"),
    "alg none": lambda: unsigned(valid_claims()),
    "alg None, capitalised": lambda: unsigned(valid_claims(), alg="None"),
    "HS512 (not configured)": lambda: jwt.encode(valid_claims(), SECRET * 2, algorithm="HS512"),
    "RS256 (not configured)": lambda: jwt.encode(
        valid_claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256"
    ),
    "signature stripped": lambda: hs256(valid_claims()).rsplit(".", 1)[0] + ".",
    "signature truncated": lambda: hs256(valid_claims())[:-4],
    "payload tampered": lambda: _tamper(hs256(valid_claims())),
    "expired": lambda: hs256(valid_claims(exp=at(now() - timedelta(minutes=5)))),
    "not yet valid": lambda: hs256(valid_claims(nbf=at(now() + timedelta(minutes=5)))),
    "issued in the future": lambda: hs256(valid_claims(iat=at(now() + timedelta(minutes=5)))),
    "another issuer and audience (unconfigured: fine) but expired": lambda: hs256(
        valid_claims(iss="https://evil.example", aud="other", exp=at(now() - timedelta(hours=1)))
    ),
    "non-ASCII and NUL in the JWT header": lambda: jwt.encode(
        valid_claims(), SECRET, algorithm="HS256", headers={"kid": "k\u00fc\u0000y"}
    )[:-2],
    "no exp": lambda: hs256({"sub": "alice-8KJx2mQ"}),
    "no sub": lambda: hs256({"exp": at(now() + timedelta(minutes=5))}),
    "sub is a number": lambda: hs256(valid_claims(sub=42)),
    "sub is empty": lambda: hs256(valid_claims(sub="")),
}


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_untrustworthy_tokens_are_401_with_invalid_token(client: AsyncClient, kind: str) -> None:
    token = BAD_TOKENS[kind]()
    started = time.perf_counter()
    response = await call(client, "GET", "", {"Authorization": f"Bearer {token}"})
    assert time.perf_counter() - started < 0.5  # refused without delay
    problem = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert token not in response.text
    assert SECRET not in response.text
    assert problem["detail"]


async def test_expiry_within_the_leeway_is_accepted(client: AsyncClient) -> None:
    token = hs256(valid_claims(exp=at(now() - timedelta(seconds=10))))  # leeway is 30 s
    response = await call(client, "GET", "", {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_expired_token_says_it_expired(client: AsyncClient) -> None:
    token = hs256(valid_claims(exp=at(now() - timedelta(minutes=1))))
    response = await call(client, "GET", "", {"Authorization": f"Bearer {token}"})
    assert "expired" in assert_problem(response, 401)["detail"]
    assert 'error_description="the token has expired"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_another_users_path_is_403(
    alice: Caller, bob: Caller, alice_task: dict[str, Any], method: str, path: str
) -> None:
    response = await bob.request(
        method,
        path.format(id=alice_task["id"]),
        user_id=alice.user_id,
        json=BODIES.get(method) if path != "/{id}/complete" else None,
    )
    assert_problem(response, 403)
    assert (await alice.request("GET", f"/{alice_task['id']}")).json() == alice_task


@pytest.mark.parametrize(("method", "path"), [route for route in ROUTES if "{id}" in route[1]])
async def test_another_users_task_is_404_like_a_missing_one(
    alice: Caller, bob: Caller, alice_task: dict[str, Any], method: str, path: str
) -> None:
    body = BODIES.get(method) if path != "/{id}/complete" else None
    theirs = await bob.request(method, path.format(id=alice_task["id"]), json=body)
    missing = await bob.request(method, path.format(id=alice_task["id"] + 1000), json=body)

    assert_problem(theirs, 404)
    assert theirs.json() == missing.json()
    assert (await alice.request("GET", f"/{alice_task['id']}")).json() == alice_task


async def test_another_users_tasks_never_appear_in_a_list(
    alice: Caller, bob: Caller, alice_task: dict[str, Any]
) -> None:
    response = await bob.request("GET")
    assert response.json() == []
    assert response.headers["x-total-count"] == "0"


async def test_issuer_and_audience_are_checked_when_configured(database_url: str) -> None:
    from httpx import ASGITransport

    from backend.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url, jwt_issuer="https://auth.example", jwt_audience="todo"))
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        user = "alice-8KJx2mQ"

        async def status(token: str) -> int:
            response = await client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}"})
            return response.status_code

        assert await status(issue_token(SECRET, user, issuer="https://auth.example", audience="todo")) == 200
        assert await status(issue_token(SECRET, user, issuer="https://evil.example", audience="todo")) == 401
        assert await status(issue_token(SECRET, user, issuer="https://auth.example", audience="other")) == 401
        assert await status(issue_token(SECRET, user)) == 401
    await app.state.database.close()


async def test_a_user_id_with_spaces_and_non_ascii_works(client: AsyncClient) -> None:
    caller = sign_in(client, "user with spaces ünï")
    created = await caller.request("POST", json={"title": "mine"})
    task = created.json()
    assert task["user_id"] == "user with spaces ünï"
    assert (await caller.request("GET", f"/{task['id']}")).status_code == 200
    # The Location header is the task's path, percent-encoded (a header must be ASCII).
    expected = f"/api/user%20with%20spaces%20%C3%BCn%C3%AF/tasks/{task['id']}"
    assert created.headers["location"] == expected
    assert (await client.get(created.headers["location"], headers=caller.headers)).json() == task


@pytest.mark.parametrize("subject", ["nul\x00byte", "x" * 256])
async def test_a_subject_that_cannot_be_a_user_id_is_401(client: AsyncClient, subject: str) -> None:
    token = hs256(valid_claims(sub=subject))
    response = await client.get("/api/anyone/tasks", headers={"Authorization": f"Bearer {token}"})
    assert "'sub'" in assert_problem(response, 401)["detail"]


# --- the cache of verified tokens -------------------------------------------------------


def verifier(**overrides: Any) -> TokenVerifier:
    return TokenVerifier(algorithms=frozenset({"HS256"}), secret=SECRET, **overrides)


async def test_a_remembered_token_still_expires() -> None:
    tokens = verifier(leeway_seconds=0)
    token = hs256({"sub": "alice", "exp": at(now()) + 1})
    assert (await tokens.verify(token)).subject == "alice"
    assert (await tokens.verify(token)).subject == "alice"  # now from the cache
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(InvalidTokenError, match="expired"):
        await tokens.verify(token)


async def test_a_remembered_token_is_forgotten_after_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = verifier()
    token = hs256({"sub": "alice", "exp": at(now() + timedelta(hours=1))})
    await tokens.verify(token)
    checked = 0
    real_decode = tokens._decode

    def counting_decode(*args: Any) -> dict[str, Any]:
        nonlocal checked
        checked += 1
        return real_decode(*args)

    monkeypatch.setattr(tokens, "_decode", counting_decode)
    await tokens.verify(token)
    assert checked == 0
    moment = time.time()
    monkeypatch.setattr(time, "time", lambda: moment + security.VERIFIED_TOKEN_TTL_SECONDS + 1)
    await tokens.verify(token)
    assert checked == 1


async def test_the_cache_is_bounded_and_keeps_only_successes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "VERIFIED_TOKENS_KEPT", 8)
    tokens = verifier()
    for index in range(20):
        await tokens.verify(hs256({"sub": f"user-{index}", "exp": at(now() + timedelta(hours=1))}))
    assert len(tokens._verified) == 8
    assert all(claims.subject.startswith("user-1") for claims, _ in tokens._verified.values())

    forged = hs256({"sub": "mallory", "exp": at(now() + timedelta(hours=1))}, secret="x" * 40)
    for _ in range(2):
        with pytest.raises(InvalidTokenError, match="signature"):
            await tokens.verify(forged)
    assert forged not in tokens._verified
