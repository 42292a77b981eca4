"""Against a real Better Auth: its jwt plugin's tokens, its JWKS, its key rotation, and its outages.

Each test starts the Node harness in tests/interop/better_auth (better-auth
pinned by its lock file, memory adapter, email-and-password sign-up) on a free
loopback port, signs real users up and hands their tokens to the API.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from httpx import AsyncClient

from tests.conftest import IN_CI, assert_problem, http_client, make_settings, run_sql, running_app
from tests.processes import blocking

pytestmark = pytest.mark.anyio

HARNESS = Path(__file__).parent / "interop" / "better_auth"


def require_harness() -> str:
    node = shutil.which("node")
    installed = (HARNESS / "node_modules" / "better-auth" / "package.json").exists()
    if node and installed:
        return node
    reason = "node is not installed" if not node else f"the harness is not installed (cd {HARNESS} && npm ci)"
    if IN_CI:
        pytest.fail(f"Better Auth interop tests cannot run: {reason} (CI=true requires them)", pytrace=False)
    pytest.skip(f"Better Auth interop tests skipped: {reason}")


@dataclass
class BetterAuth:
    """A running Better Auth server, and a way to get real users' tokens from it."""

    url: str
    process: subprocess.Popen[str]
    users: dict[str, str] = field(default_factory=dict)

    def sign_up(self, name: str) -> tuple[str, httpx.Cookies]:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            response = http.post(
                "/api/auth/sign-up/email",
                json={
                    "email": f"{name.lower()}-{secrets.token_hex(4)}@example.com",
                    "password": "correct-horse-9",
                    "name": name,
                },
            )
            response.raise_for_status()
            return response.json()["user"]["id"], http.cookies

    def token(self, cookies: httpx.Cookies) -> str:
        response = httpx.get(f"{self.url}/api/auth/token", cookies=cookies, timeout=10)
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def user_with_token(self, name: str) -> tuple[str, str]:
        user_id, cookies = self.sign_up(name)
        return user_id, self.token(cookies)

    def jwks(self) -> dict[str, Any]:
        document: dict[str, Any] = httpx.get(f"{self.url}/api/auth/jwks", timeout=10).json()
        return document

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def better_auth(**env: str) -> Iterator[BetterAuth]:
    node = require_harness()
    process = subprocess.Popen(
        [node, "server.mjs"],
        cwd=HARNESS,
        env={
            **os.environ,
            "PORT": "0",
            "BETTER_AUTH_SECRET": "harness-secret-" + secrets.token_hex(16),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()  # the harness prints one line when it listens
    if not ready.startswith("{"):
        process.kill()
        pytest.fail(f"Better Auth did not start: {ready}{process.stdout.read()}")
    server = BetterAuth(json.loads(ready)["url"], process)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def running_better_auth(**env: str) -> AsyncIterator[BetterAuth]:
    """`better_auth` for async tests: started and stopped in a thread, since the test's event
    loop is watched for callbacks that hold it."""
    manager = better_auth(**env)
    server = await blocking(manager.__enter__)
    try:
        yield server
    finally:
        await blocking(manager.__exit__, None, None, None)


@pytest.fixture
def auth_server() -> Iterator[BetterAuth]:
    with better_auth() as server:
        yield server


@pytest.fixture
async def api(database_url: str, auth_server: BetterAuth) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    settings = make_settings(database_url, better_auth_secret=None, better_auth_url=auth_server.url)
    async with running_app(settings) as app, http_client(app) as client:
        yield app, client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwks_fetches(app: FastAPI) -> int:
    fetches: int = app.state.token_verifier.jwks.fetches
    return fetches


# --- the happy path ---------------------------------------------------------------------


async def test_a_real_token_creates_lists_toggles_and_deletes(
    api: tuple[FastAPI, AsyncClient], auth_server: BetterAuth
) -> None:
    app, client = api
    user_id, token = await blocking(auth_server.user_with_token, "Alice")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"  # Better Auth's default, not HS256
    tasks = f"/api/{user_id}/tasks"

    created = await client.post(tasks, json={"title": "Real Better Auth"}, headers=bearer(token))
    assert created.status_code == 201, created.text
    task_url = f"{tasks}/{created.json()['id']}"
    assert [t["title"] for t in (await client.get(tasks, headers=bearer(token))).json()] == [
        "Real Better Auth"
    ]
    toggled = await client.patch(f"{task_url}/complete", headers=bearer(token))
    assert toggled.json()["completed"] is True
    assert (await client.delete(task_url, headers=bearer(token))).status_code == 204

    # The token's email and name filled the user's row.
    [row] = run_sql(app.state.settings.database_url, "SELECT email, name FROM users")
    assert row.name == "Alice"
    assert row.email.startswith("alice-")


async def test_a_second_real_user_is_isolated(
    api: tuple[FastAPI, AsyncClient], auth_server: BetterAuth
) -> None:
    _, client = api
    alice, alice_token = await blocking(auth_server.user_with_token, "Alice")
    bob, bob_token = await blocking(auth_server.user_with_token, "Bob")
    created = await client.post(f"/api/{alice}/tasks", json={"title": "mine"}, headers=bearer(alice_token))
    task_id = created.json()["id"]

    assert_problem(await client.get(f"/api/{alice}/tasks", headers=bearer(bob_token)), 403)
    assert_problem(await client.get(f"/api/{bob}/tasks/{task_id}", headers=bearer(bob_token)), 404)
    assert_problem(await client.delete(f"/api/{bob}/tasks/{task_id}", headers=bearer(bob_token)), 404)
    assert (await client.get(f"/api/{alice}/tasks/{task_id}", headers=bearer(alice_token))).status_code == 200


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "PS256", "ES512"])
async def test_other_key_pair_configs_verify_too(database_url: str, algorithm: str) -> None:
    async with running_better_auth(JWT_ALG=algorithm) as server:
        user_id, token = await blocking(server.user_with_token, "Carol")
        assert jwt.get_unverified_header(token)["alg"] == algorithm
        async with (
            running_app(
                make_settings(database_url, better_auth_secret=None, better_auth_url=server.url)
            ) as app,
            http_client(app) as client,
        ):
            response = await client.get(f"/api/{user_id}/tasks", headers=bearer(token))
    assert response.status_code == 200, response.text


# --- tokens that must not pass ----------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload), signature


def hs256_forged(payload: dict[str, Any], key: bytes, kid: str) -> str:
    """HMAC by hand: PyJWT itself refuses to use key material as an HMAC secret."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64json(payload)}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


async def test_a_tampered_payload_is_401(api: tuple[FastAPI, AsyncClient], auth_server: BetterAuth) -> None:
    _, client = api
    alice, _ = await blocking(auth_server.user_with_token, "Alice")
    _, mallory_token = await blocking(auth_server.user_with_token, "Mallory")
    header, payload, signature = parts(mallory_token)
    forged = f"{b64json(header)}.{b64json({**payload, 'sub': alice, 'id': alice})}.{signature}"

    response = await client.get(f"/api/{alice}/tasks", headers=bearer(forged))
    assert "signature" in assert_problem(response, 401)["detail"]


async def test_a_token_from_another_better_auth_is_401(
    api: tuple[FastAPI, AsyncClient], auth_server: BetterAuth
) -> None:
    _, client = api
    async with running_better_auth() as impostor:
        user_id, token = await blocking(impostor.user_with_token, "Eve")
    response = await client.get(f"/api/{user_id}/tasks", headers=bearer(token))
    assert_problem(response, 401)


async def test_an_expired_real_token_is_401(database_url: str) -> None:
    async with running_better_auth(JWT_EXPIRATION="1s") as server:
        user_id, token = await blocking(server.user_with_token, "Dave")
        settings = make_settings(
            database_url, better_auth_secret=None, better_auth_url=server.url, jwt_leeway_seconds=0
        )
        async with running_app(settings) as app, http_client(app) as client:
            await asyncio.sleep(2.1)
            response = await client.get(f"/api/{user_id}/tasks", headers=bearer(token))
    assert "expired" in assert_problem(response, 401)["detail"]


async def test_key_confusion_and_alg_none_are_401(database_url: str, auth_server: BetterAuth) -> None:
    """Both key sources configured: the token's alg must never pick the kind of key."""
    user_id, token = await blocking(auth_server.user_with_token, "Alice")
    header, payload, _ = parts(token)
    public_jwk = (await blocking(auth_server.jwks))["keys"][0]
    public_key_bytes = base64.urlsafe_b64decode(public_jwk["x"] + "==")
    attacks = {
        # HMAC keyed with the public key, hoping it is used as the secret.
        "HS256 with the public key as secret": hs256_forged(payload, public_key_bytes, header["kid"]),
        "HS256 with the JWK text as secret": hs256_forged(
            payload, json.dumps(public_jwk).encode(), header["kid"]
        ),
        "alg none": f"{b64json({'alg': 'none', 'kid': header['kid']})}.{b64json(payload)}.",
        "RS256 header on the EdDSA key": f"{b64json({**header, 'alg': 'RS256'})}.{token.split('.', 1)[1]}",
        "ES256 header on the EdDSA key": f"{b64json({**header, 'alg': 'ES256'})}.{token.split('.', 1)[1]}",
        "no kid": f"{b64json({'alg': 'EdDSA'})}.{token.split('.', 1)[1]}",
    }
    settings = make_settings(database_url, better_auth_url=auth_server.url)  # the secret is set too
    async with running_app(settings) as app, http_client(app) as client:
        assert (await client.get(f"/api/{user_id}/tasks", headers=bearer(token))).status_code == 200
        for name, forged in attacks.items():
            response = await client.get(f"/api/{user_id}/tasks", headers=bearer(forged))
            assert response.status_code == 401, name
            assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"'), name


# --- the JWKS cache ---------------------------------------------------------------------


async def test_a_rotated_key_is_picked_up_and_the_old_one_keeps_working(database_url: str) -> None:
    async with running_better_auth(JWKS_ROTATION="2", JWKS_GRACE="600") as server:
        user_id, cookies = await blocking(server.sign_up, "Rita")
        old_token = await blocking(server.token, cookies)
        settings = make_settings(
            database_url, better_auth_secret=None, better_auth_url=server.url, jwks_min_refresh_seconds=1
        )
        async with running_app(settings) as app, http_client(app) as client:
            assert (await client.get(f"/api/{user_id}/tasks", headers=bearer(old_token))).status_code == 200
            assert jwks_fetches(app) == 1

            await asyncio.sleep(2.5)  # the first key expires; Better Auth signs with a new one
            new_token = await blocking(server.token, cookies)
            assert jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
            assert len((await blocking(server.jwks))["keys"]) == 2  # both served during the grace period

            assert (await client.get(f"/api/{user_id}/tasks", headers=bearer(new_token))).status_code == 200
            assert jwks_fetches(app) == 2  # exactly one refetch, for the unknown kid
            assert (await client.get(f"/api/{user_id}/tasks", headers=bearer(old_token))).status_code == 200
            assert jwks_fetches(app) == 2


async def test_cached_keys_outlive_better_auth_but_a_cold_start_is_503(database_url: str) -> None:
    async with running_better_auth() as server:
        alice, alice_token = await blocking(server.user_with_token, "Alice")
        bob, bob_token = await blocking(server.user_with_token, "Bob")
        settings = make_settings(
            database_url, better_auth_secret=None, better_auth_url=server.url, jwks_cache_seconds=0.5
        )
        async with running_app(settings) as app, http_client(app) as client:
            assert (await client.get(f"/api/{alice}/tasks", headers=bearer(alice_token))).status_code == 200
            await blocking(server.stop)
            await asyncio.sleep(0.6)  # the cache is now stale, and refreshing it fails

            for user_id, token in ((alice, alice_token), (bob, bob_token)):
                response = await client.get(f"/api/{user_id}/tasks", headers=bearer(token))
                assert response.status_code == 200, response.text

        # A process that never saw the keys cannot verify anything: 503, not 401.
        async with running_app(settings) as cold, http_client(cold) as client:
            response = await client.get(f"/api/{alice}/tasks", headers=bearer(alice_token))
            problem = assert_problem(response, 503)
            assert "key server" in problem["detail"]
            assert response.headers["retry-after"].isdigit()
            # ...and it does not hammer the dead server on every request.
            await client.get(f"/api/{alice}/tasks", headers=bearer(alice_token))
            assert jwks_fetches(cold) == 1


async def test_requests_arriving_during_the_first_fetch_wait_for_it(
    api: tuple[FastAPI, AsyncClient], auth_server: BetterAuth
) -> None:
    # A page loads its list and a person clicks at once: both must wait for the one fetch
    # of the keys, not be told that the keys are unavailable (found by the browser tests).
    app, client = api
    user_id, token = await blocking(auth_server.user_with_token, "Alice")
    responses = await asyncio.gather(
        *(client.get(f"/api/{user_id}/tasks", headers=bearer(token)) for _ in range(20))
    )
    assert [response.status_code for response in responses] == [200] * 20
    assert jwks_fetches(app) == 1


async def test_a_flood_of_unknown_kids_costs_at_most_one_fetch(
    api: tuple[FastAPI, AsyncClient], auth_server: BetterAuth
) -> None:
    app, client = api
    user_id, token = await blocking(auth_server.user_with_token, "Alice")
    assert (await client.get(f"/api/{user_id}/tasks", headers=bearer(token))).status_code == 200
    assert jwks_fetches(app) == 1

    _, payload, _ = parts(token)
    attacker_key = Ed25519PrivateKey.generate()
    for _ in range(100):
        forged = jwt.encode(
            payload, attacker_key, algorithm="EdDSA", headers={"kid": secrets.token_urlsafe(12)}
        )
        response = await client.get(f"/api/{user_id}/tasks", headers=bearer(forged))
        assert "signing key is not known" in assert_problem(response, 401)["detail"]
    # The keys were fetched under 30 s ago, so not one of the junk kids caused another fetch.
    assert jwks_fetches(app) == 1
