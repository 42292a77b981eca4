"""The demo web app (web/) in a real, headless Chromium against the real services.

Two stacks, each the real API (`todo-api serve`, on a SQLite file) and the real web service
(`node web/server.mjs`: Better Auth with its jwt plugin, users in SQLite) on another origin:
one as `make demo` configures them, one whose tokens live 3 seconds and whose API allows no
leeway. Each test below runs one test of web/tests/browser.test.mjs (Playwright, Debian's
chromium); a failing one leaves screenshots in test-results/browser/.

Needs Node, web/node_modules (`make test` runs `npm ci` there) and Chromium (`make test`
installs Debian's package when it can); without them these tests skip, saying why, and
under CI=true they fail.
"""

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import IN_CI
from tests.openai_stub import Answer, ModelStub, calls, model_stub, text
from tests.processes import TODO_API, free_port, running_server, server_env, wait_until_answering

WEB = Path(__file__).parent.parent / "web"
ARTIFACTS = Path(__file__).parent.parent / "test-results" / "browser"
TOKEN_SECONDS = 3


def require_web_app(*, browser: bool = True) -> tuple[str, str]:
    """node and chromium (unless `browser` is False: ""), or a skip (a failure under
    CI=true) saying what is missing."""
    node = shutil.which("node")
    chromium = shutil.which(os.environ.get("CHROMIUM") or "chromium") if browser else ""
    reason = None
    if node is None:
        reason = "node is not installed"
    elif not (WEB / "node_modules" / "playwright-core" / "package.json").exists():
        reason = f"the web app's packages are not installed (cd {WEB} && npm ci)"
    elif chromium is None:
        reason = "chromium is not installed (apt-get install chromium, or set CHROMIUM to its path)"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"browser tests cannot run: {reason} (CI=true requires them)", pytrace=False)
        pytest.skip(f"browser tests skipped: {reason}")
    assert node is not None
    assert chromium is not None
    return node, chromium


@contextmanager
def web_service(node: str, port: int, api_url: str, directory: Path, **settings: str) -> Iterator[str]:
    """`node web/server.mjs` on `port` (localhost), ready to answer; stopped afterwards."""
    env = {
        **os.environ,
        "PORT": str(port),
        "API_URL": api_url,
        "BETTER_AUTH_SECRET": "a-web-secret-for-the-browser-tests-only",
        "WEB_DATABASE": str(directory / "auth.sqlite"),
        **settings,
    }
    log_path = directory / "web.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [node, str(WEB / "server.mjs")], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
    try:
        wait_until_answering(process, f"http://127.0.0.1:{port}/", log_path)
        yield f"http://localhost:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def stack(
    node: str, directory: Path, token_lifetime: str, leeway: str, **api_settings: str
) -> Iterator[tuple[str, str, int]]:
    """The API and the web service, configured for each other as `make demo` does."""
    directory.mkdir()
    web_port = free_port()
    web_url = f"http://localhost:{web_port}"
    env = server_env(
        f"sqlite:///{directory / 'todo.db'}",
        BETTER_AUTH_URL=web_url,
        CORS_ORIGINS=web_url,
        JWT_LEEWAY_SECONDS=leeway,
        # On, as a deployment has it: a person clicking is far below it.
        RATE_LIMIT_PER_SECOND="20",
        **api_settings,
    )
    with (
        running_server(env, directory / "api.log", "--migrate") as api,
        web_service(
            node,
            web_port,
            api.base_url,
            directory,
            JWT_EXPIRATION=token_lifetime,
            # The same service reached at 127.0.0.1 may sign people in, but the API does not
            # allow that origin: the CORS test opens the page there.
            TRUSTED_ORIGINS=f"http://127.0.0.1:{web_port}",
        ) as web,
    ):
        yield web, api.base_url, web_port


@dataclass
class Browsers:
    node: str
    env: dict[str, str]
    model: ModelStub  # the demo stack's chat model


@pytest.fixture(scope="module")
def browsers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browsers]:
    node, chromium = require_web_app()
    directory = tmp_path_factory.mktemp("browser")
    with ExitStack() as stacks:
        model, model_url = stacks.enter_context(model_stub())
        web_url, api_url, web_port = stacks.enter_context(
            stack(node, directory / "demo", "15m", "30", CHAT_MODEL="stub", OPENAI_BASE_URL=model_url)
        )
        expiring_web_url, expiring_api_url, _ = stacks.enter_context(
            stack(node, directory / "expiring", f"{TOKEN_SECONDS}s", "0")
        )
        yield Browsers(
            node,
            {
                **os.environ,
                "WEB_URL": web_url,
                "WEB_OTHER_ORIGIN": f"http://127.0.0.1:{web_port}",
                "EXPIRING_WEB_URL": expiring_web_url,
                "TOKEN_SECONDS": str(TOKEN_SECONDS),
                "API_URL": api_url,
                "EXPIRING_API_URL": expiring_api_url,
                "CHROMIUM": chromium,
                "ARTIFACTS": str(ARTIFACTS),
            },
            model,
        )


def run_browser_test(browsers: Browsers, name: str) -> None:
    result = subprocess.run(
        [
            browsers.node,
            "--test",
            "--test-reporter=spec",
            f"--test-name-pattern=^{re.escape(name)}$",
            "tests/browser.test.mjs",
        ],
        cwd=WEB,
        env=browsers.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # The name matched exactly one test, which ran and passed.
    assert re.search(r"^\S+ pass 1$", output, re.MULTILINE), output


def test_a_new_person_signs_up_adds_ticks_off_filters_reloads_signs_out_and_in(browsers: Browsers) -> None:
    run_browser_test(
        browsers, "a new person signs up, adds three tasks, ticks one off, filters, reloads, signs out and in"
    )


def test_sorting_search_tags_and_paging(browsers: Browsers) -> None:
    run_browser_test(browsers, "sorting, search, tags and paging follow X-Total-Count and Link")


def test_a_second_person_sees_none_of_the_first_ones_tasks(browsers: Browsers) -> None:
    run_browser_test(
        browsers, "a second person in a second browser context sees none of the first one's tasks"
    )


def test_a_stale_edit_from_another_tab_shows_the_conflict(browsers: Browsers) -> None:
    run_browser_test(browsers, "a stale edit from another tab shows the conflict and loses neither edit")


def test_an_expired_token_is_refreshed_unnoticed(browsers: Browsers) -> None:
    run_browser_test(
        browsers, "an expired token is replaced and the request retried without the person noticing"
    )


def test_an_origin_not_in_cors_origins_is_a_failed_fetch_the_page_reports(browsers: Browsers) -> None:
    run_browser_test(browsers, "a request from an origin not in CORS_ORIGINS fails, and the page says so")


def test_a_422_shows_the_apis_message(browsers: Browsers) -> None:
    run_browser_test(browsers, "a 201-character title shows the API's own message and adds nothing")


def test_the_add_form_clears_when_sent_and_keeps_what_is_typed_meanwhile(browsers: Browsers) -> None:
    run_browser_test(
        browsers, "the add form is cleared when a task is sent, so the next title typed meanwhile survives"
    )


def test_make_demo_serves_both_configured_for_each_other_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    require_web_app(browser=False)
    api_port, web_port = free_port(), free_port()
    web_url = f"http://localhost:{web_port}"
    env = {
        **os.environ,
        "TODO_API": TODO_API,
        "API_PORT": str(api_port),
        "WEB_PORT": str(web_port),
        "DEMO_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "WEB_DATABASE": str(tmp_path / "auth.sqlite"),
        "BETTER_AUTH_SECRET": "a-web-secret-for-the-demo-test-only-0123",
    }
    demo = subprocess.Popen(
        ["bash", str(WEB / "demo.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches it
    )
    assert demo.stdout is not None
    try:
        output = []
        for line in demo.stdout:
            output.append(line)
            if line.startswith("==> Open"):
                break
        assert output[-1].strip() == f"==> Open {web_url} and create an account. Ctrl-C stops both.", output

        # A person signs up with the web app; its token is good at the API, from the page's origin.
        with httpx.Client(base_url=f"http://127.0.0.1:{web_port}", headers={"Origin": web_url}) as web:
            signed_up = web.post(
                "/api/auth/sign-up/email",
                json={"email": "demo@example.com", "password": "correct horse battery", "name": "Demo"},
            )
            assert signed_up.status_code == 200, signed_up.text
            token = web.get("/api/auth/token").json()["token"]
        user_id = signed_up.json()["user"]["id"]
        answer = httpx.get(
            f"http://127.0.0.1:{api_port}/api/{user_id}/tasks",
            headers={"Authorization": f"Bearer {token}", "Origin": web_url},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == web_url
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        remaining, _ = demo.communicate(timeout=20)
    for port in (api_port, web_port):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert "Application shutdown complete." in remaining, remaining


def test_the_pages_typescript_type_checks() -> None:
    node, _ = require_web_app(browser=False)
    result = subprocess.run(
        [node, str(WEB / "node_modules" / "typescript" / "bin" / "tsc"), "--noEmit", "-p", str(WEB)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_change_in_one_tab_shows_in_another_within_a_second(browsers: Browsers) -> None:
    run_browser_test(
        browsers, "a change made in one tab shows in another tab of the same person within a second"
    )


def test_a_due_reminder_shows_in_the_page_and_as_a_notification(browsers: Browsers) -> None:
    run_browser_test(browsers, "a reminder shows in the page, and as a notification, when it is due")


def test_the_assistant_adds_a_task_and_answers_what_is_overdue(browsers: Browsers) -> None:
    """The chat panel against the model stub: the answer streams in, the task list shows
    what the assistant added, and the second question continues the conversation."""
    tomorrow_nine = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=1)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    browsers.model.script(
        calls(("add_task", {"title": "Milk", "due_at": tomorrow_nine.isoformat()})),
        # Streamed slowly enough that the page shows it as it is written.
        Answer(text="I added “Milk” to your list for tomorrow at 9:00.", chunk_delay=0.05),
        calls(("list_tasks", {"overdue": True})),
        text("Nothing is overdue."),
    )
    asked = len(browsers.model.requests)
    run_browser_test(browsers, "the assistant adds a task from the chat panel and says what is overdue")
    first, _, second, _ = browsers.model.requests[asked:]
    assert "Europe/Berlin" in first["messages"][0]["content"]  # the page sent its time zone
    said = [message.get("content") for message in second["messages"]]
    assert "add milk to my list for tomorrow" in said  # the same conversation, from the database


def test_a_person_makes_a_list_adds_to_it_and_moves_between_lists(browsers: Browsers) -> None:
    run_browser_test(browsers, "a person makes a list, adds a task to it, and moves between their lists")


def test_the_manual_order_nests_subtasks_and_reorders_by_drag_and_drop_and_keyboard(
    browsers: Browsers,
) -> None:
    run_browser_test(
        browsers,
        "in the manual order a person nests subtasks and reorders by drag and drop and with the keyboard",
    )
