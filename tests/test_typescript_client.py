"""A TypeScript client generated from /openapi.json by openapi-typescript, with its default
options, lets a frontend create a task with a title alone and read every field with its
proper type: `tsc --strict` accepts tests/interop/typescript/usage.ts against it.

Needs Node and the harness (`npm ci` in tests/interop/typescript, which `make test`
runs); without them the test skips, saying why, and under CI=true it fails.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from backend.app import create_app
from tests.conftest import IN_CI, make_settings

HARNESS = Path(__file__).parent / "interop" / "typescript"
BIN = HARNESS / "node_modules" / ".bin"


def require_harness() -> None:
    reason = None
    if shutil.which("node") is None:
        reason = "node is not installed"
    elif not (BIN / "openapi-typescript").exists() or not (BIN / "tsc").exists():
        reason = f"the harness is not installed (cd {HARNESS} && npm ci)"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"TypeScript client check: {reason} (CI=true requires it)", pytrace=False)
        pytest.skip(f"TypeScript client check skipped: {reason}")


def generate_client(directory: Path) -> None:
    """schema.d.ts from the app's own document, as a frontend would generate it."""
    document = create_app(make_settings(f"sqlite:///{directory / 'unused.db'}")).openapi()
    (directory / "openapi.json").write_text(json.dumps(document))
    subprocess.run(
        [str(BIN / "openapi-typescript"), "openapi.json", "-o", "schema.d.ts"],
        cwd=directory,
        check=True,
        capture_output=True,
        timeout=120,
    )


def type_check(directory: Path, usage: str) -> subprocess.CompletedProcess[str]:
    (directory / "usage.ts").write_text(usage)
    shutil.copy(HARNESS / "tsconfig.json", directory / "tsconfig.json")
    return subprocess.run(
        [str(BIN / "tsc"), "-p", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_generated_client_type_checks_a_frontends_usage(tmp_path: Path) -> None:
    require_harness()
    generate_client(tmp_path)
    result = type_check(tmp_path, (HARNESS / "usage.ts").read_text())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "mistake",
    [
        'export const untitled: NewTask = { priority: "high" };',  # the title is required
        'export const wrong: NewTask = { title: "t", priority: "urgent" };',
        "export function late(task: Task): string { return task.due_at; }",  # it may be null
        "export const mute: ChatBody = { conversation_id: 7 };",  # the message is required
    ],
)
def test_the_check_can_fail(tmp_path: Path, mistake: str) -> None:
    require_harness()
    generate_client(tmp_path)
    result = type_check(tmp_path, (HARNESS / "usage.ts").read_text() + "\n" + mistake + "\n")
    assert result.returncode != 0
    assert "error TS" in result.stdout
