"""`make image-test`'s parts: podman (with deploy/local/containers.conf), the images built
exactly as the Containerfiles say, and PostgreSQL databases of this run's own on the host."""

import json
import os
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import fresh_postgres_database

ROOT = Path(__file__).resolve().parent.parent.parent
CONTAINERS_CONF = ROOT / "deploy" / "local" / "containers.conf"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
API_IMAGE = "localhost/todo-api:dev"
WEB_IMAGE = "localhost/todo-web:dev"
PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
POSTGRES_STANDIN = "localhost/postgres-standin:15"
# Containers reach the host's loopback (its PostgreSQL) at this address through slirp4netns.
HOST_NETWORK = "slirp4netns:allow_host_loopback=true"
HOST_FROM_CONTAINER = "10.0.2.2"
SECRET = "image-test-secret-that-is-long-enough-for-hs256"

# What this machine's builds need to reach PyPI, npm and Debian through a TLS-intercepting
# proxy: the host network, and its CA certificates and pip configuration, read-only. None of
# it enters a layer (volumes are not committed) and none of it is needed elsewhere.
BUILD_MOUNTS = [
    "--network=host",
    *[
        f"--volume={path}:{path}:ro"
        for path in ("/etc/ssl/certs", "/etc/pip.conf", "/etc/xdg/pip")
        if Path(path).exists()
    ],
]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """podman with this test's configuration; podman's own complaints that no systemd runs
    the health checks on a timer are left out of stderr (`podman healthcheck run` runs them)."""
    result = subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result.stderr = "\n".join(
        line for line in result.stderr.splitlines() if "systemd" not in line and "syslog" not in line
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def inspect(image_or_container: str) -> dict[str, object]:
    found: list[dict[str, object]] = json.loads(podman("inspect", image_or_container).stdout)
    return found[0]


def wait_for(url: str, timeout: float = 60, status: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == status:
                return response
            last = response.status_code
        except httpx.TransportError as error:
            last = error
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s (last: {last})")


@dataclass
class Database:
    """A PostgreSQL database of this test's own, as the host and as a container reach it."""

    host_url: str

    @property
    def container_url(self) -> str:
        url = make_url(self.host_url)
        return url.set(host=HOST_FROM_CONTAINER).render_as_string(hide_password=False)


@pytest.fixture
def database() -> Iterator[Database]:
    with fresh_postgres_database() as url:
        yield Database(url)


# Planted in the build context beside the checkout's files, as a developer's checkout has
# them: none may reach a layer (test_image's layer check looks for the canary).
CANARY = f"canary-{uuid.uuid4().hex}"
PLANTED = {
    ".env": f"BETTER_AUTH_SECRET={CANARY}\n",
    "todo.db": CANARY,
    "deploy/kubernetes/secrets.env": f"DATABASE_URL=postgresql://u:{CANARY}@db/app\n",
}


@pytest.fixture(scope="session")
def api_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The API's image, built as the Containerfile says (docker format: OCI images have no
    HEALTHCHECK), with the version label from pyproject.toml, from the checkout's files and
    the secrets a developer's checkout holds (PLANTED)."""
    context = tmp_path_factory.mktemp("context")
    tracked = subprocess.run(
        # The checkout's files, committed or not, without what Git ignores.
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():  # a deleted but not yet committed file is listed too
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / name, follow_symlinks=False)
    for name, content in PLANTED.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(content)
    started = time.monotonic()
    podman(
        "build",
        "--format=docker",
        *BUILD_MOUNTS,
        f"--build-arg=VERSION={VERSION}",
        f"--tag={API_IMAGE}",
        str(context),
        timeout=900,
    )
    print(f"\nbuilt {API_IMAGE} in {time.monotonic() - started:.0f} s")
    return API_IMAGE


@pytest.fixture(scope="session")
def web_image() -> str:
    started = time.monotonic()
    podman(
        "build",
        "--format=docker",
        *BUILD_MOUNTS,
        "--build-arg=NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
        f"--tag={WEB_IMAGE}",
        str(ROOT / "web"),
        timeout=900,
    )
    print(f"\nbuilt {WEB_IMAGE} in {time.monotonic() - started:.0f} s")
    return WEB_IMAGE
