"""The image, its compose file and its Kubernetes manifests, built and run here with podman
(`make image-test`; not part of `make test`: it needs root and a few minutes)."""

import base64
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from deploy.tests.conftest import (
    CANARY,
    CONTAINERS_CONF,
    HOST_NETWORK,
    PLANTED,
    POSTGRES_STANDIN,
    PYTHON_IMAGE,
    ROOT,
    SECRET,
    VERSION,
    Database,
    inspect,
    podman,
    wait_for,
)
from tests.processes import free_port

MB = 1_000_000


def run_api(image: str, database: Database, *args: str, name: str, port: int | None = None) -> None:
    podman(
        "run",
        "--detach",
        f"--name={name}",
        f"--network={HOST_NETWORK}",
        *([f"--publish=127.0.0.1:{port}:8000"] if port else []),
        f"--env=DATABASE_URL={database.container_url}",
        f"--env=BETTER_AUTH_SECRET={SECRET}",
        image,
        *args,
    )


@pytest.fixture
def container_names() -> Iterator[list[str]]:
    """Containers a test starts; removed afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        podman("rm", "--force", "--time=0", name, check=False)


def migrate(image: str, database: Database) -> subprocess.CompletedProcess[str]:
    return podman(
        "run", "--rm", "--no-healthcheck", f"--network={HOST_NETWORK}",
        f"--env=DATABASE_URL={database.container_url}", image, "migrate", check=False,
    )  # fmt: skip


def exercise(base_url: str, token: str) -> list[dict[str, Any]]:
    """The request sequence every deployment passes: create, list, complete, list again."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as api:
        created = api.post("/api/me/tasks", json={"title": "shipped in a container"})
        assert created.status_code == 201, created.text
        task = created.json()
        listed = api.get("/api/me/tasks")
        assert [t["id"] for t in listed.json()] == [task["id"]]
        completed = api.patch(
            f"/api/me/tasks/{task['id']}/complete",
            json={"completed": True},
            headers={"If-Match": created.headers["ETag"]},
        )
        assert completed.status_code == 200, completed.text
        final: list[dict[str, Any]] = api.get("/api/me/tasks", params={"status": "completed"}).json()
        assert [t["completed"] for t in final] == [True]
        return final


def test_the_image_adds_under_150_mb_runs_as_non_root_and_is_labelled(api_image: str) -> None:
    image = inspect(api_image)
    config: dict[str, Any] = image["Config"]  # type: ignore[assignment]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["todo-api"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000/tcp" in config["ExposedPorts"]
    # podman shows a docker-format image's health check beside its Config.
    health: dict[str, Any] = image["Healthcheck"]  # type: ignore[assignment]
    assert "http://127.0.0.1:8000/health" in " ".join(health["Test"])
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert {"org.opencontainers.image.source", "org.opencontainers.image.licenses"} <= set(labels)
    size, base = int(image["Size"]), int(inspect(PYTHON_IMAGE)["Size"])  # type: ignore[call-overload]
    print(f"\nimage {size / MB:.0f} MB = base {base / MB:.0f} MB + the project {(size - base) / MB:.0f} MB")
    assert size - base < 150 * MB


def test_no_secret_env_file_database_or_test_file_is_in_any_layer(api_image: str, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    podman("save", "--format=docker-archive", f"--output={archive}", api_image, timeout=300)
    ours = {path.name for path in (ROOT / "tests").glob("*.py")} - {"__init__.py"}
    canary = CANARY.encode()
    names: list[str] = []
    with tarfile.open(archive) as image:
        for member in image.getmembers():
            if not member.name.endswith(".tar"):
                continue
            layer_file = image.extractfile(member)
            assert layer_file is not None
            with tarfile.open(fileobj=layer_file) as layer:
                for entry in layer.getmembers():
                    names.append(entry.name)
                    if entry.isfile():
                        content = layer.extractfile(entry)
                        assert content is None or canary not in content.read(), entry.name
    assert len(names) > 1000  # the layers were read
    leaked = [
        name
        for name in names
        if Path(name).name in {Path(planted).name for planted in PLANTED} | {".git", "demo.db"}
        or Path(name).name in ours
        or name.startswith(("src/", "app/tests", "app/bench", "app/web"))
    ]
    assert leaked == []


def test_serve_refuses_an_unmigrated_database_then_migrates_serves_and_checks_its_health(
    api_image: str, database: Database, container_names: list[str]
) -> None:
    refused = podman(
        "run", "--rm", "--no-healthcheck", f"--network={HOST_NETWORK}",
        f"--env=DATABASE_URL={database.container_url}", f"--env=BETTER_AUTH_SECRET={SECRET}",
        api_image, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: the database has no schema yet; run `todo-api migrate` first"

    migrated = migrate(api_image, database)
    assert migrated.returncode == 0, migrated.stderr
    assert "database is at the latest schema" in migrated.stderr

    port = free_port()
    container_names.append("image-test-api")
    run_api(api_image, database, name="image-test-api", port=port)
    wait_for(f"http://127.0.0.1:{port}/ready")
    token = podman("exec", "image-test-api", "todo-api", "token", "--user-id", "alice").stdout.strip()
    [task] = exercise(f"http://127.0.0.1:{port}", token)
    assert task["user_id"] == "alice"

    # The server is PID 1 (exec form, no shell), running as the image's user.
    cmdline = podman("exec", "image-test-api", "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[1:4] == ["/app/.venv/bin/todo-api", "serve", "--host"], cmdline
    status = podman("exec", "image-test-api", "cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\s+10001\s+10001", status, flags=re.MULTILINE), status
    # The image's HEALTHCHECK passes (run by hand: no systemd here to run it on a timer).
    assert podman("healthcheck", "run", "image-test-api", check=False).returncode == 0
    assert inspect("image-test-api")["State"]["Health"]["Status"] == "healthy"  # type: ignore[index]


def test_sigterm_during_a_slow_request_lets_it_finish_before_the_container_exits(
    api_image: str, database: Database, container_names: list[str]
) -> None:
    assert migrate(api_image, database).returncode == 0
    port = free_port()
    container_names.append("image-test-sigterm")
    run_api(api_image, database, name="image-test-sigterm", port=port)
    base_url = f"http://127.0.0.1:{port}"
    wait_for(f"{base_url}/ready")
    token = podman("exec", "image-test-sigterm", "todo-api", "token", "--user-id", "alice").stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{base_url}/api/alice/tasks", json={"title": "first"}, headers=auth).status_code == 201

    answers: list[httpx.Response] = []
    with psycopg.connect(database.host_url) as holder:
        # Every write takes its owner's change counter first: holding it makes the next
        # write wait, a request in flight for as long as this transaction lasts.
        holder.execute("SELECT 1 FROM change_counters WHERE user_id = 'alice' FOR UPDATE")
        slow = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{base_url}/api/alice/tasks", json={"title": "in flight"}, headers=auth, timeout=30
                )
            )
        )
        slow.start()
        time.sleep(1)
        stopped_at = time.monotonic()
        podman("kill", "--signal=TERM", "image-test-sigterm")
        time.sleep(2)
        assert slow.is_alive()  # still waiting, and the container still up for it
        holder.rollback()
    slow.join(timeout=30)
    [answer] = answers
    assert answer.status_code == 201, answer.text
    exit_code = podman("wait", "image-test-sigterm", timeout=60).stdout.strip()
    print(f"\nexited {time.monotonic() - stopped_at:.1f} s after SIGTERM, status {exit_code}")
    assert exit_code == "0"
    logs = podman("logs", "image-test-sigterm").stderr + podman("logs", "image-test-sigterm").stdout
    assert "Application shutdown complete" in logs
    with psycopg.connect(database.host_url) as check:
        titles = {row[0] for row in check.execute("SELECT title FROM tasks")}
    assert titles == {"first", "in flight"}


def test_the_kubernetes_manifests_run_under_podman_kube_play(
    api_image: str, database: Database, tmp_path: Path
) -> None:
    """The migration Job's pod, then the Deployment with its ConfigMap and Secret, against
    the host's PostgreSQL. What podman 4.3's `kube play` needs that a cluster does not: one
    replica (each would publish the same host port), a hostPort, and the Secret created as
    a podman secret (a JSON map of base64 values; newer podman reads `kind: Secret`)."""
    kubernetes = ROOT / "deploy" / "kubernetes"
    objects = {
        document["kind"]: document
        for path in sorted(kubernetes.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    }
    port = free_port()
    secret = {
        "DATABASE_URL": database.container_url,
        "MIGRATE_DATABASE_URL": database.container_url,
        "BETTER_AUTH_SECRET": SECRET,
    }
    secret_file = tmp_path / "secret.json"
    secret_file.write_text(json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in secret.items()}))
    podman("secret", "rm", "todo-api", check=False)
    podman("secret", "create", "todo-api", str(secret_file))

    job = objects["Job"]
    job_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": job["metadata"]["name"]},
        "spec": job["spec"]["template"]["spec"],
    }
    for container in job_pod["spec"]["containers"]:
        container["image"] = api_image
    deployment = objects["Deployment"]
    deployment["spec"]["replicas"] = 1
    [api] = deployment["spec"]["template"]["spec"]["containers"]
    api["image"] = api_image
    api["ports"][0]["hostPort"] = port

    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job_pod))
    play = tmp_path / "deployment.yaml"
    play.write_text(yaml.safe_dump_all([objects["ConfigMap"], deployment, objects["Service"]]))
    try:
        podman("kube", "play", "--replace", f"--network={HOST_NETWORK}", str(job_file))
        assert podman("wait", "todo-api-migrate-migrate", timeout=120).stdout.strip() == "0"
        podman("kube", "play", "--replace", f"--network={HOST_NETWORK}", str(play))
        wait_for(f"http://127.0.0.1:{port}/ready")
        container = "todo-api-pod-0-api"
        token = podman("exec", container, "todo-api", "token", "--user-id", "kube").stdout.strip()
        [task] = exercise(f"http://127.0.0.1:{port}", token)
        assert task["user_id"] == "kube"
        host_config: dict[str, Any] = inspect(container)["HostConfig"]  # type: ignore[assignment]
        assert host_config["ReadonlyRootfs"] is True
        assert inspect(container)["Config"]["User"] == "10001:10001"  # type: ignore[index]
        # The read-only root filesystem holds: only the /tmp volume is writable.
        assert podman("exec", container, "touch", "/app/x", check=False).returncode != 0
        assert podman("exec", container, "touch", "/tmp/x", check=False).returncode == 0
    finally:
        podman("kube", "down", str(play), check=False)
        podman("kube", "down", str(job_file), check=False)
        podman("secret", "rm", "todo-api", check=False)


def test_compose_brings_up_postgres_migrations_the_api_and_the_web_app(
    api_image: str, web_image: str, tmp_path: Path
) -> None:
    """compose.yaml under podman-compose, end to end: sign up on the web app's Better Auth,
    take its token (EdDSA, checked by the API against the web app's JWKS over the stack's
    network), manage a task through the API. Debian's podman 4.3 cannot wait for a health
    check or start a container whose dependency has dependencies of its own, so the
    services come up in their order here, one `up --no-deps` each; Docker Compose and
    podman 4.6+ do it in one `up`."""
    api_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "POSTGRES_IMAGE": POSTGRES_STANDIN,
        "API_PORT": str(api_port),
        "WEB_PORT": str(web_port),
    }
    env.pop("BETTER_AUTH_SECRET", None)  # the checkout's own .env is not this stack's
    compose = [
        str(Path(sys.executable).parent / "podman-compose"),
        "--project-name=todo-image-test",
        f"--file={ROOT / 'compose.yaml'}",
    ]

    def up(*args: str) -> None:
        result = subprocess.run(
            [*compose, "up", "--detach", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr

    try:
        up("postgres")
        deadline = time.monotonic() + 60
        ready = ("exec", "todo-image-test_postgres_1", "pg_isready", "--host=127.0.0.1", "--username=todo")
        while podman(*ready, check=False).returncode != 0:
            assert time.monotonic() < deadline, podman("logs", "todo-image-test_postgres_1").stderr
            time.sleep(0.5)
        up("--no-deps", "migrate")
        assert podman("wait", "todo-image-test_migrate_1").stdout.strip() == "0"
        up("--no-deps", "api", "web")
        wait_for(f"http://127.0.0.1:{api_port}/ready")
        web_url = f"http://localhost:{web_port}"
        wait_for(f"{web_url}/api/auth/jwks")
        with httpx.Client(base_url=web_url, headers={"Origin": web_url}, timeout=10) as web:
            signed_up = web.post(
                "/api/auth/sign-up/email",
                json={"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"},
            )
            assert signed_up.status_code == 200, signed_up.text
            token = web.get("/api/auth/token").json()["token"]
        [task] = exercise(f"http://127.0.0.1:{api_port}", token)
        assert task["user_id"] == signed_up.json()["user"]["id"]
        # The web app's page is served, pointing at the API.
        assert str(api_port) in httpx.get(f"{web_url}/").text
    finally:
        subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True, timeout=120)
