"""The web console (/console): served by the runtime, driven in a real headless
Chromium against real servers. Screenshots go to each test's tmp dir."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from molecule_runtime.config import Settings
from molecule_runtime.server.app import build_app
from molecule_runtime.server.console.routes import is_public
from molecule_runtime.services import Services
from tests.support.browser import (
    RECORD_ANSWER,
    console_page,
    find_browser,
    last_answer,
    launched,
    open_console,
    send,
    wait_state,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BROWSER, WHY_NO_BROWSER = find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason=WHY_NO_BROWSER)
TOKEN = "console-token-0123456789"


# -- the routes, in process -----------------------------------------------------


@pytest.fixture
async def app_for(tmp_path: Path) -> AsyncIterator:
    opened: list[Services] = []

    async def build(**settings: Any):
        services = await Services.open(
            Settings(task_store_url="memory", data_dir=tmp_path, **settings), accept_tasks=True
        )
        opened.append(services)
        transport = httpx.ASGITransport(app=build_app(services))  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    yield build
    for services in opened:
        await services.close()


async def test_console_is_served_with_its_files(app_for) -> None:
    async with await app_for() as http:
        redirect = await http.get("/console")
        assert redirect.status_code in (302, 307)
        assert redirect.headers["location"].endswith("/console/")
        page = await http.get("/console/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name in ("main.js", "api.js", "chat.js", "tasks.js", "timeline.js", "health.js"):
            script = await http.get(f"/console/static/{name}")
            assert script.status_code == 200, name
            assert "javascript" in script.headers["content-type"], name
        assert (await http.get("/console/static/console.css")).status_code == 200
        config = (await http.get("/console/config")).json()
        assert config["workflowId"] == "molecule:workspace-default:{taskId}"
        assert config["temporalUi"] is None


def test_only_the_page_and_its_files_skip_auth() -> None:
    assert is_public("/console") and is_public("/console/")
    assert is_public("/console/static/main.js")
    for path in (
        "/console/config",
        "/console/static/../config",
        "/console/static/../../rest/tasks",
        "/console//static/main.js",
        "/consoles/",
        "/rest/tasks",
    ):
        assert not is_public(path), path


async def test_console_can_be_turned_off(app_for) -> None:
    async with await app_for(console=False) as http:
        assert (await http.get("/console/")).status_code == 404


async def test_with_auth_the_page_is_public_and_its_config_is_not(app_for) -> None:
    async with await app_for(auth_token=TOKEN, temporal_ui_url="http://ui.example:8080/") as http:
        assert (await http.get("/console/")).status_code == 200
        assert (await http.get("/console/static/main.js")).status_code == 200
        assert (await http.get("/console/config")).status_code == 401
        # A path that starts like the console's still needs the token.
        assert (await http.get("/console/static/../config")).status_code in (401, 404)
        authed = await http.get("/console/config", headers={"Authorization": f"Bearer {TOKEN}"})
        assert authed.json()["temporalUi"] == "http://ui.example:8080"


# -- in the browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if BROWSER is None:
        pytest.skip(WHY_NO_BROWSER)
    with launched(BROWSER) as browser:
        yield browser


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    with console_page(browser, tmp_path) as page:
        yield page


@needs_browser
def test_chat_streams_the_answer_as_it_grows(server_factory, page, tmp_path: Path) -> None:
    server = server_factory({"RUNTIME": "echo", "ADAPTER_OPTIONS": json.dumps({"delay": 0.05})})
    open_console(page, server.url)
    page.evaluate(RECORD_ANSWER)
    words = " ".join(f"word{i}" for i in range(30))
    send(page, words)
    wait_state(page, "completed")
    page.screenshot(path=str(tmp_path / "chat.png"))
    seen = page.evaluate("window.__answers")
    before_done = [s["text"] for s in seen if s["state"] != "completed" and s["text"]]
    lengths = sorted({len(t) for t in before_done})
    # The answer was seen growing, at least twice, before the task completed.
    assert len(lengths) >= 2, seen
    assert all(words.startswith(t) for t in before_done), before_done
    assert last_answer(page).locator("[data-testid=answer-text]").text_content() == words
    # The conversation continues in the same context.
    context_id = page.text_content("[data-testid=context-id]")
    assert context_id and context_id != "new"
    send(page, "again")
    wait_state(page, "completed")
    assert page.text_content("[data-testid=context-id]") == context_id
    rows = page.locator("[data-testid=task-row]")
    rows.first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=task-row]').length === 2")


@needs_browser
def test_answers_an_input_required_question(server_factory, page, tmp_path: Path) -> None:
    env = {
        "ADAPTER_MODULE": str(FIXTURES / "asking_adapter.py"),
        "ADAPTER_OPTIONS": json.dumps({"record": str(tmp_path / "asked.jsonl")}),
    }
    server = server_factory(env)
    open_console(page, server.url)
    send(page, "hello there")
    wait_state(page, "input-required")
    question = last_answer(page).locator("[data-testid=question]")
    assert question.text_content() == "What is your name?"
    page.screenshot(path=str(tmp_path / "question.png"))
    send(page, "Ada")
    wait_state(page, "completed")
    assert last_answer(page).locator("[data-testid=answer-text]").text_content() == (
        "Nice to meet you, Ada."
    )
    # One task, two turns: the answer went to the task that asked.
    page.wait_for_function(
        """() => {
            const rows = document.querySelectorAll('[data-testid=task-row]');
            return rows.length === 1 && rows[0].querySelector('[data-state=completed]');
        }"""
    )


@needs_browser
def test_cancel_a_long_task(server_factory, page, tmp_path: Path) -> None:
    server = server_factory({"RUNTIME": "echo", "ADAPTER_OPTIONS": json.dumps({"delay": 0.5})})
    open_console(page, server.url)
    send(page, " ".join(f"slow{i}" for i in range(100)))
    page.wait_for_function(
        "() => (document.querySelector('[data-testid=agent-message]:last-child "
        "[data-testid=answer-text]')?.textContent || '').length > 0"
    )
    assert page.is_enabled("[data-testid=cancel]")
    started = time.monotonic()
    page.click("[data-testid=cancel]")
    wait_state(page, "canceled", timeout=15_000)
    assert time.monotonic() - started < 10
    page.screenshot(path=str(tmp_path / "canceled.png"))
    page.wait_for_selector("[data-testid=task-row] [data-state=canceled]")


@needs_browser
def test_task_list_timeline_and_usage(server_factory, page, tmp_path: Path) -> None:
    script = [{"text": "counted answer", "usage": {"input_tokens": 11, "output_tokens": 3}}]
    env = {
        "RUNTIME": "langgraph",
        "ADAPTER_OPTIONS": json.dumps(
            {"model_factory": f"{FIXTURES / 'langgraph_fake_models.py'}:scripted", "fake_script": script}
        ),
    }
    server = server_factory(env)
    open_console(page, server.url)
    send(page, "what does it cost")
    wait_state(page, "completed")
    usage = last_answer(page).locator("[data-testid=answer-usage]")
    assert "11 in / 3 out tokens" in usage.text_content()
    assert "scripted-fake" in usage.text_content()
    row = page.locator("[data-testid=task-row]").first
    row.wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=task-row] [data-testid=task-tokens]')"
        "?.textContent === '14'"
    )
    # Filters: by state, then by context.
    page.select_option("[data-testid=filter-state]", "TASK_STATE_FAILED")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=task-row]').length === 0")
    page.select_option("[data-testid=filter-state]", "TASK_STATE_COMPLETED")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=task-row]').length === 1")
    page.fill("[data-testid=filter-context]", "no-such-context")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=task-row]').length === 0")
    page.fill("[data-testid=filter-context]", page.text_content("[data-testid=context-id]") or "")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=task-row]').length === 1")
    # The timeline: the logged events with their offsets, the artifact, the usage.
    page.locator("[data-testid=task-row]").first.click()
    page.wait_for_selector("[data-testid=timeline]:not([hidden])")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=timeline-event]')]"
        ".some(e => e.querySelector('[data-state=completed]'))"
    )
    offsets = [
        int(o)
        for o in page.locator("[data-testid=timeline-event] .offset").all_text_contents()
        if o.isdigit()
    ]
    assert len(offsets) >= 3 and offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    kinds = page.eval_on_selector_all(
        "[data-testid=timeline-event]", "rows => rows.map(r => r.dataset.kind)"
    )
    assert kinds[0] == "task" and "artifact" in kinds and kinds.count("status") >= 2
    assert page.text_content("[data-testid=timeline-artifacts] pre") == "counted answer"
    assert "11 in / 3 out tokens" in (page.text_content("[data-testid=usage-total]") or "")
    assert page.locator("[data-testid=temporal-link]").is_hidden()  # direct mode
    page.screenshot(path=str(tmp_path / "timeline.png"), full_page=True)


@needs_browser
def test_with_auth_nothing_shows_before_the_token(server_factory, page, tmp_path: Path) -> None:
    server = server_factory({"RUNTIME": "echo", "MOLECULE_AUTH_TOKEN": TOKEN})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/console")
    page.wait_for_selector("[data-testid=gate]:not([hidden])")
    page.screenshot(path=str(tmp_path / "gate.png"))
    assert page.is_hidden("#app") and page.is_hidden("[data-testid=health]")
    assert page.locator("[data-testid=task-row]").count() == 0
    data_requests = [u for u in requests if "/console/static/" not in u and not u.endswith("/console/")]
    assert all(u.endswith("/console") or u.endswith("/console/config") for u in data_requests), requests
    # A wrong token is refused and the page stays closed.
    page.fill("#gate-token", "wrong-token")
    page.click("#gate-form button")
    page.wait_for_function("() => document.getElementById('gate-error').textContent.includes('refused')")
    assert page.is_hidden("#app")
    page.fill("#gate-token", TOKEN)
    page.click("#gate-form button")
    page.wait_for_selector("#app:not([hidden])")
    send(page, "behind auth")
    wait_state(page, "completed")
    assert page.evaluate("sessionStorage.getItem('molecule-console-token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0
    assert all(TOKEN not in u for u in requests)
    assert TOKEN not in server.log()

