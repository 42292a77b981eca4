"""The deployment files say what the README promises, checked on every `make test` (the
images themselves are built and run by `make image-test`, which needs root and podman)."""

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes/, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


def pod_spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = manifests()[kind]["spec"]["template"]["spec"]
    return spec


def instructions(containerfile: str) -> list[str]:
    text = re.sub(r"\\\n\s*(#[^\n]*\n\s*)*", " ", (ROOT / containerfile).read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_image_runs_todo_api_as_pid_1_as_a_non_root_user_with_a_health_check() -> None:
    lines = instructions("Containerfile")
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert 'ENTRYPOINT ["todo-api"]' in final_stage  # exec form: no shell to swallow SIGTERM
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]' in final_stage
    assert "USER 10001:10001" in final_stage
    [health] = [line for line in final_stage if line.startswith("HEALTHCHECK")]
    assert "http://127.0.0.1:8000/health" in health
    assert any("uv sync --frozen --no-dev --no-editable" in line for line in lines)
    assert (ROOT / "Dockerfile").resolve() == ROOT / "Containerfile"


def test_the_image_version_label_follows_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG VERSION={version}" in instructions("Containerfile")


def test_only_what_the_image_needs_enters_its_build_context() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # Everything is excluded, then the few inputs the Containerfile copies are let back in.
    assert rules[0] == "*"
    assert {rule for rule in rules if rule.startswith("!")} == {
        "!pyproject.toml",
        "!uv.lock",
        "!README.md",
        "!backend/",
    }
    copied = {
        word
        for line in instructions("Containerfile")
        if line.startswith("COPY ") and "--from=" not in line
        for word in line.split()[1:-1]
    }
    assert copied == {"pyproject.toml", "uv.lock", "README.md", "backend"}


def test_replicas_are_probed_bounded_and_never_cut_a_request_off() -> None:
    objects = manifests()
    settings = objects["ConfigMap"]["data"]
    spec = pod_spec("Deployment")
    [api] = spec["containers"]
    pause = int(api["lifecycle"]["preStop"]["exec"]["command"][1])
    # The pause, the longest request, and uvicorn's 5 s margin (cli.py) fit in the grace period.
    assert spec["terminationGracePeriodSeconds"] > pause + float(settings["REQUEST_TIMEOUT_SECONDS"]) + 5
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= set(api["resources"]["requests"]) & set(api["resources"]["limits"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert api["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert (
        objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == objects["Deployment"]["metadata"]["name"]
    )
    assert objects["Service"]["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]


def test_the_migration_job_and_the_replicas_read_only_declared_secrets() -> None:
    example = (KUBERNETES / "secrets.env.example").read_text()
    declared = set(re.findall(r"^#?\s*([A-Z_]+)=", example, flags=re.MULTILINE))
    [migrate] = pod_spec("Job")["containers"]
    assert migrate["args"] == ["migrate"]
    referenced = {variable["valueFrom"]["secretKeyRef"]["key"] for variable in migrate["env"]}
    assert referenced <= declared
    assert {"DATABASE_URL", "MIGRATE_DATABASE_URL"} <= declared
    assert "deploy/kubernetes/secrets.env" in (ROOT / ".gitignore").read_text().splitlines()
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == listed


def test_compose_migrates_once_before_the_api_and_keeps_the_database_in_a_volume() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "postgres-data" in compose["volumes"]
    # Nothing but the API and the web app is published, and only on loopback.
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert published["postgres"] == []
    assert published["migrate"] == []
    assert all(port.startswith("127.0.0.1:") for ports in published.values() for port in ports)
