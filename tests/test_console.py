"""The web console (/console): served by the runtime, driven in a real headless
Chromium against real servers. Screenshots go to each test's tmp dir."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
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
    find_browser,
    last_answer,
    open_console,
    send,
    wait_state,
)
from tests.support.sse import message_json

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPORT_ADAPTER = Path(__file__).resolve().parents[1] / "adapters" / "report" / "adapter.py"
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
    # A reload shows the conversation from the task store, question included,
    # and the answer still goes to the task that asked.
    page.reload()
    page.wait_for_selector("[data-testid=agent-message][data-restored=true]")
    assert page.locator("[data-testid=user-message]").all_text_contents() == ["hello there"]
    assert last_answer(page).locator("[data-testid=question]").text_content() == "What is your name?"
    assert last_answer(page).get_attribute("data-state") == "input-required"
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


def jsonrpc(url: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(
        url + "/",
        headers={"A2A-Version": "1.0"},
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        timeout=30,
    )
    body = reply.json()
    assert "result" in body, body
    return body["result"]


@needs_browser
def test_a_question_asked_after_the_console_subscribed_can_be_answered(
    server_factory, page, tmp_path: Path
) -> None:
    # SubscribeToTask stays open across questions: the console, following a
    # running task after a reload, stops at its current question (not at an
    # earlier turn's, which the replay passes) so that the user can answer.
    server = server_factory(
        {
            "ADAPTER_MODULE": str(FIXTURES / "turns_adapter.py"),
            "ADAPTER_OPTIONS": json.dumps({"record_dir": str(tmp_path / "runs")}),
        }
    )
    first = jsonrpc(
        server.url,
        "SendMessage",
        {"message": message_json("first", metadata={"chunks": 1, "ask": "Which colour?"})},
    )["task"]
    assert first["status"]["state"] == "TASK_STATE_INPUT_REQUIRED", first
    task_id, context_id = first["id"], first["contextId"]
    # The answer starts a slow second turn that ends with another question.
    jsonrpc(
        server.url,
        "SendMessage",
        {
            "message": message_json(
                "red", task_id=task_id, context_id=context_id,
                metadata={"chunks": 6, "delay": 0.5, "ask": "Which size?"},
            ),
            "configuration": {"returnImmediately": True},
        },
    )
    open_console(page, server.url)
    page.evaluate("id => sessionStorage.setItem('molecule-console-context', id)", context_id)
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    # Followed live: the second turn's chunks arrive while it works.
    page.wait_for_function(
        """() => {
            const all = document.querySelectorAll('[data-testid=agent-message]');
            const last = all[all.length - 1];
            return last && last.dataset.state === 'working'
                && last.querySelector('[data-testid=answer-text]').textContent.includes('red-0');
        }""",
        timeout=15_000,
    )
    assert page.is_disabled("[data-testid=send]")
    wait_state(page, "input-required")
    answer = last_answer(page)
    assert answer.get_attribute("data-task-id") == task_id
    # The current question only: the earlier one shows in the restored turn above.
    assert answer.locator("[data-testid=question]").all_text_contents() == ["Which size?"]
    # And this turn's answer only: the replay's first-turn chunks are the restored turn's.
    assert answer.locator("[data-testid=answer-text]").text_content() == " ".join(f"red-{i}" for i in range(6)) + " "
    page.wait_for_selector("[data-testid=send]:not([disabled])", timeout=10_000)
    assert page.is_disabled("[data-testid=cancel]")
    assert page.get_attribute("[data-testid=prompt]", "placeholder") == "Answer the agent's question"
    page.screenshot(path=str(tmp_path / "question-after-subscribe.png"))
    # The answer goes to the task that asked, in a turn of its own.
    send(page, "large")
    wait_state(page, "completed")
    assert last_answer(page).get_attribute("data-task-id") == task_id
    assert last_answer(page).locator("[data-testid=answer-text]").text_content() == "large-0 large-1 "


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
    # The header counts the running task (it is refreshed when a task starts).
    page.wait_for_function(
        "() => document.querySelector('[data-health=\"in flight\"] strong')?.textContent === '1'"
    )
    started = time.monotonic()
    page.click("[data-testid=cancel]")
    wait_state(page, "canceled", timeout=15_000)
    # A hang bound, not a latency target: the answer would run ~50 s more if the cancel did not stop it.
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
    assert page.is_hidden("#sign-out")  # no token yet, nothing to forget
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
    # Forgetting the token closes the console and leaves the prompt alone.
    page.click("#sign-out")
    page.wait_for_selector("[data-testid=gate]:not([hidden])")
    assert page.is_hidden("#sign-out") and page.is_hidden("#app")
    assert page.evaluate("sessionStorage.getItem('molecule-console-token')") is None



@needs_browser
def test_server_gone_mid_answer_then_back(server_factory, page, tmp_path: Path) -> None:
    env = {"RUNTIME": "echo", "ADAPTER_OPTIONS": json.dumps({"delay": 0.3})}
    server = server_factory(env)
    open_console(page, server.url)
    send(page, " ".join(f"slow{i}" for i in range(200)))
    page.wait_for_function(
        "() => (document.querySelector('[data-testid=agent-message]:last-child "
        "[data-testid=answer-text]')?.textContent || '').length > 0"
    )
    page.wait_for_selector("[data-testid=task-row] [data-state=working]")
    task_id = last_answer(page).get_attribute("data-task-id")
    server.kill()  # a crash: the stream just breaks
    # The answer says the server is gone, the page says so, the list is marked stale.
    page.wait_for_selector("[data-testid=agent-message][data-connection=lost]")
    assert "stopped answering" in (last_answer(page).locator("[data-testid=connection]").text_content() or "")
    page.wait_for_selector("[data-testid=offline]:not([hidden])")
    page.wait_for_selector("[data-testid=tasks][data-stale=true]")
    assert "not answering" in (page.text_content("#tasks-note") or "")
    assert page.is_disabled("[data-testid=send]") and page.is_disabled("[data-testid=cancel]")
    page.wait_for_selector("[data-health=status] strong:text-is('unreachable')")
    page.screenshot(path=str(tmp_path / "server-gone.png"))
    # Back on the same port and data: the restarted server settled the task
    # (direct mode cannot resume it), and the page shows what became of it.
    server_factory(env, port=server.port, workdir=server.workdir)
    wait_state(page, "failed")
    answer = last_answer(page)
    assert answer.get_attribute("data-task-id") == task_id
    assert answer.get_attribute("data-connection") == "back"
    assert "server stopped" in (answer.locator("[data-testid=status-message]").text_content() or "")
    page.wait_for_selector("[data-testid=offline]", state="hidden")
    page.wait_for_selector("[data-testid=tasks]:not([data-stale])")
    page.wait_for_selector(f"[data-testid=task-row][data-task-id='{task_id}'] [data-state=failed]")
    assert page.locator("[data-testid=task-row] [data-state=working]").count() == 0
    assert page.is_enabled("[data-testid=send]")
    page.screenshot(path=str(tmp_path / "server-back.png"))
    # A reload shows the conversation as the restarted server stored it.
    page.reload()
    page.wait_for_selector("[data-testid=agent-message][data-restored=true]")
    assert last_answer(page).get_attribute("data-task-id") == task_id
    assert last_answer(page).get_attribute("data-state") == "failed"
    assert "server stopped" in (last_answer(page).locator("[data-testid=status-message]").text_content() or "")


@needs_browser
def test_reload_restores_the_conversation(server_factory, page, tmp_path: Path) -> None:
    server = server_factory({"RUNTIME": "echo"})
    open_console(page, server.url)
    send(page, "first words")
    wait_state(page, "completed")
    send(page, "second words")
    wait_state(page, "completed")
    context_id = page.text_content("[data-testid=context-id]")
    page.reload()
    # What the chat showed before the reload, read back from the task store.
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=agent-message][data-restored=true]').length === 2"
    )
    assert page.text_content("[data-testid=context-id]") == context_id
    assert page.locator("[data-testid=user-message]").all_text_contents() == ["first words", "second words"]
    answers = page.locator("[data-testid=agent-message] [data-testid=answer-text]").all_text_contents()
    assert answers == ["first words", "second words"]
    states = page.eval_on_selector_all("[data-testid=agent-message]", "b => b.map(x => x.dataset.state)")
    assert states == ["completed", "completed"]
    # The next message continues that visible conversation.
    send(page, "third words")
    wait_state(page, "completed")
    assert page.text_content("[data-testid=context-id]") == context_id
    page.screenshot(path=str(tmp_path / "restored.png"))
    # A conversation the store does not know: a new one, and the page says so.
    page.evaluate("sessionStorage.setItem('molecule-console-context', 'no-such-context')")
    page.reload()
    page.wait_for_selector("[data-testid=chat-note]")
    assert "new conversation" in (page.text_content("[data-testid=chat-note]") or "")
    assert page.text_content("[data-testid=context-id]") == "new"
    assert page.locator("[data-testid=agent-message]").count() == 0
    send(page, "fresh start")
    wait_state(page, "completed")
    assert page.text_content("[data-testid=context-id]") not in ("new", context_id, "no-such-context")


@needs_browser
def test_finished_answer_and_its_notes_stay_in_view(server_factory, page, tmp_path: Path) -> None:
    long_text = " ".join(f"line{i}" for i in range(400))
    # Cut at the token limit: the answer says so under its text.
    script = [{"text": long_text, "usage": {"input_tokens": 5, "output_tokens": 400}, "finish_reason": "length"}]
    env = {
        "RUNTIME": "langgraph",
        "ADAPTER_OPTIONS": json.dumps(
            {"model_factory": f"{FIXTURES / 'langgraph_fake_models.py'}:scripted", "fake_script": script}
        ),
    }
    server = server_factory(env)
    page.set_viewport_size({"width": 1200, "height": 600})
    open_console(page, server.url)
    for _ in range(2):
        send(page, "tell me a lot")
        wait_state(page, "completed")
    usage = last_answer(page).locator("[data-testid=answer-usage]")
    usage.wait_for()
    assert "5 in / 400 out tokens" in (usage.text_content() or "")
    status = last_answer(page).locator("[data-testid=status-message]").text_content() or ""
    assert status.startswith("The answer stopped at the model's token limit"), status
    # The chat overflows, and its end, the usage line included, is in view.
    in_view = page.evaluate(
        """() => {
            const box = document.getElementById('messages');
            const answers = box.querySelectorAll('[data-testid=agent-message]');
            const usage = answers[answers.length - 1].querySelector('[data-testid=answer-usage]');
            const b = box.getBoundingClientRect(), u = usage.getBoundingClientRect();
            return {overflows: box.scrollHeight > box.clientHeight,
                    visible: u.height > 0 && u.top >= b.top && u.bottom <= b.bottom + 1};
        }"""
    )
    assert in_view == {"overflows": True, "visible": True}, in_view
    page.screenshot(path=str(tmp_path / "in-view.png"))


@needs_browser
def test_files_refusals_and_empty_chunks(server_factory, page, tmp_path: Path) -> None:
    server = server_factory({"ADAPTER_MODULE": str(REPORT_ADAPTER)})
    open_console(page, server.url)
    send(page, "apples 3, pears 5")
    wait_state(page, "completed")
    answer = last_answer(page)
    report_task = answer.get_attribute("data-task-id")
    assert answer.locator("[data-testid=answer-text]").text_content() == "2 items, 8 in all."
    assert answer.locator("[data-testid=status-message]").text_content() == "Report ready."
    # The CSV is a link that downloads the file, with its name and content.
    link = answer.locator("[data-testid=file-link]")
    assert link.get_attribute("download") == "report.csv"
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "report.csv"
    assert Path(download.value.path()).read_bytes() == b"item,qty\napples,3\npears,5\n"
    summary = answer.locator("[data-artifact=summary] pre").text_content() or ""
    assert json.loads(summary) == {"items": 2, "total": 8, "largest": {"item": "pears", "qty": 5}}
    page.screenshot(path=str(tmp_path / "files.png"))
    # A refusal shows its reason and no empty answer line above it.
    send(page, "hello")
    wait_state(page, "rejected")
    refused = last_answer(page)
    assert "Send items with quantities" in (refused.locator("[data-testid=status-message]").text_content() or "")
    assert refused.locator("[data-testid=answer-text]").is_hidden()
    # The timeline: the file as a link too, and no event for an empty chunk.
    page.locator(f"[data-testid=task-row][data-task-id='{report_task}']").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=timeline-event]')]"
        ".some(e => e.querySelector('[data-state=completed]'))"
    )
    assert page.locator("[data-testid=timeline-artifacts] [data-testid=file-link]").count() == 1
    chunks = page.locator("[data-testid=timeline-event][data-kind=artifact] .chunk").all_text_contents()
    assert chunks and '""' not in chunks, chunks
    page.screenshot(path=str(tmp_path / "files-timeline.png"), full_page=True)
