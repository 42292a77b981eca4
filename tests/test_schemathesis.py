"""Schemathesis against the live /openapi.json of the real server: no 5xx, every response documented."""

import subprocess
import sys
from pathlib import Path

from backend.auth.tokens import issue_token
from tests.conftest import SECRET
from tests.openai_stub import model_stub
from tests.processes import running_server, server_env

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


def test_every_operation_survives_schemathesis(postgres_url: str, tmp_path: Path) -> None:
    """All checks, response-schema conformance included, on a database of its own.

    `negative_data_rejection` is left out: schemathesis counts the pinned
    `user_id` as the invalid value it generated, and flags the accepted request.
    The validation tests cover rejection of invalid bodies and parameters.
    """
    token = issue_token(SECRET, "fuzz-user")
    # The chat route on a local OpenAI-compatible model, which answers every message "ok".
    with (
        model_stub() as (_model, model_url),
        running_server(
            server_env(postgres_url, CHAT_MODEL="stub", OPENAI_BASE_URL=model_url), tmp_path / "server.log"
        ) as server,
    ):
        result = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--exclude-checks",
                "negative_data_rejection",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=tmp_path,
        )
        access = [line for line in server.log_lines() if line.get("logger") == "backend.access"]
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout
    assert access, "the server logged no requests"
    assert [line for line in access if line["status"] >= 500] == []
    # The chat route was reached past its validation, and answered by the model.
    assert any(line["route"] == "/api/{user_id}/chat" and line["status"] == 200 for line in access)
