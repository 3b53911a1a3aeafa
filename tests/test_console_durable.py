"""The console in durable mode, in a real headless Chromium: a retry in the chat and the
timeline, a task's durable steps in the timeline (recorded by one attempt, replayed by the
next), the link to the workflow in the Temporal UI, the embedded Temporal UI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support.browser import (
    last_answer,
    open_console,
    send,
    wait_state,
)
from tests.support.durable import own_temporal
from tests.support.sse import message_json

FIXTURES = Path(__file__).resolve().parent / "fixtures"
pytestmark = pytest.mark.temporal


def test_embedded_temporal_ui_is_served_and_linked(server_factory, page, tmp_path: Path) -> None:
    server = server_factory({"RUNTIME": "echo", "TEMPORAL_HOST": "embedded", "TEMPORAL_UI_PORT": "0"})
    config = httpx.get(server.url + "/console/config", timeout=10).json()
    ui = config["temporalUi"]
    assert ui and ui.startswith("http://127.0.0.1:"), config
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(ui, timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the Temporal UI at {ui} never answered"
        time.sleep(0.2)
    open_console(page, server.url)
    page.wait_for_selector("[data-testid=temporal-ui-link]")
    send(page, "durable hello")
    wait_state(page, "completed")
    page.locator("[data-testid=task-row]").first.click()
    link = page.locator("[data-testid=temporal-link]")
    link.wait_for(state="visible")
    task_id = page.locator("[data-testid=agent-message]").last.get_attribute("data-task-id")
    href = link.get_attribute("href") or ""
    assert href.startswith(f"{ui}/namespaces/default/workflows/"), href
    assert href.endswith(f"molecule%3Aworkspace-default%3A{task_id}"), href
    page.screenshot(path=str(tmp_path / "durable.png"), full_page=True)
    # The link opens the workflow in the Temporal UI (its own page: the UI's
    # scripts are not the console's, their errors are not ours).
    ui_page = page.context.new_page()
    ui_page.goto(href)
    ui_page.wait_for_function(
        "id => document.body.innerText.includes(id)",
        arg=f"molecule:workspace-default:{task_id}",
        timeout=30_000,
    )
    ui_page.screenshot(path=str(tmp_path / "temporal-ui.png"))


def test_durable_retry_in_the_timeline(temporal_server, server_factory, page, tmp_path: Path) -> None:
    queue = f"console-{tmp_path.name[-12:]}"
    server = server_factory(
        {
            "ADAPTER_MODULE": str(FIXTURES / "usage_adapter.py"),
            "ADAPTER_OPTIONS": json.dumps({"fail_attempts": 1, "input_tokens": 10, "output_tokens": 4}),
            "TEMPORAL_HOST": temporal_server.address,
            "TEMPORAL_TASK_QUEUE": queue,
            "WORKSPACE_ID": f"ws-{queue}",
            "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2",
            "TEMPORAL_UI_URL": "http://127.0.0.1:8233",
        }
    )
    open_console(page, server.url)
    send(page, "fail once")
    wait_state(page, "completed")
    answer = last_answer(page)
    # The retry replaced the first attempt's text instead of appending to it.
    assert answer.locator("[data-testid=answer-text]").text_content() == "attempt 2 done"
    assert "20 in / 8 out tokens" in (answer.locator("[data-testid=answer-usage]").text_content() or "")
    page.wait_for_function(
        "() => { const r = document.querySelector('[data-testid=task-row]');"
        " return r && r.children[5].textContent === '2'"
        " && r.querySelector('[data-testid=task-tokens]').textContent === '28'; }"
    )
    page.locator("[data-testid=task-row]").first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=timeline-event]')]"
        ".some(e => e.textContent.includes('Retrying: attempt 2'))"
    )
    # The replay renders event by event: wait for both attempts' restarts of the answer.
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=timeline-event][data-kind=artifact]')]"
        ".filter(e => /replace/i.test(e.textContent)).length >= 2"
    )
    assert page.locator("[data-testid=timeline-event][data-kind=artifact]", has_text="replace").count() >= 2
    rows = page.locator("[data-testid=timeline-usage] tbody tr").all_text_contents()
    assert len(rows) == 2, rows
    task_id = answer.get_attribute("data-task-id")
    href = page.locator("[data-testid=temporal-link]").get_attribute("href") or ""
    assert href == f"http://127.0.0.1:8233/namespaces/default/workflows/molecule%3Aws-{queue}%3A{task_id}"
    page.screenshot(path=str(tmp_path / "retry-timeline.png"), full_page=True)


def test_steps_recorded_then_replayed_after_a_crash_in_the_timeline(
    temporal_server, server_factory, page, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    env = {
        **own_temporal(temporal_server.address),
        "ADAPTER_MODULE": str(FIXTURES / "steps_adapter.py"),
        "TEMPORAL_HEARTBEAT_TIMEOUT": "2",
        "TEMPORAL_RETRY_INITIAL_INTERVAL": "0.2",
        "TEMPORAL_SCHEDULE_TO_START_TIMEOUT": "3",
        "MOLECULE_SHUTDOWN_GRACE": "1",
    }
    server = server_factory(env, workdir=tmp_path / "a")
    sent = httpx.post(
        server.url + "/",
        headers={"A2A-Version": "1.0"},
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {
                "message": message_json("go", metadata={"steps": 6, "delay": 0.4, "effects": str(effects)}),
                "configuration": {"returnImmediately": True},
            },
        },
        timeout=30,
    ).json()
    task_id = sent["result"]["task"]["id"]
    steps_url = f"{server.url}/console/tasks/{task_id}/steps"
    deadline = time.monotonic() + 60
    while len(httpx.get(steps_url, timeout=10).json()["steps"]) < 3:
        assert time.monotonic() < deadline, "the steps did not run"
        time.sleep(0.05)
    server.kill()  # attempt 1 dies after its third step; Temporal retries it after the restart
    restarted = server_factory(env, workdir=tmp_path / "a", port=server.port)
    deadline = time.monotonic() + 90
    while True:
        task = httpx.post(
            restarted.url + "/",
            headers={"A2A-Version": "1.0"},
            json={"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task_id}},
            timeout=10,
        ).json()["result"]
        if task["status"]["state"] == "TASK_STATE_COMPLETED":
            break
        assert task["status"]["state"] in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"), task["status"]
        assert time.monotonic() < deadline, "the task did not finish after the restart"
        time.sleep(0.2)
    # Each side effect happened once: the retry replayed what attempt 1 recorded.
    assert effects.read_text().splitlines() == [f"{task_id} step {i}" for i in range(6)]

    open_console(page, restarted.url)
    page.locator(f"[data-testid=task-row][data-task-id='{task_id}']").click()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=step-row]').length === 6"
        " && document.querySelector('[data-testid=step-row]').dataset.replayedBy !== ''"
    )
    rows = page.locator("[data-testid=step-row]")
    recorded_by = [rows.nth(i).get_attribute("data-attempt") for i in range(6)]
    replayed_by = [rows.nth(i).get_attribute("data-replayed-by") for i in range(6)]
    final = recorded_by[-1]
    assert final is not None and int(final) >= 2, recorded_by
    # Steps 0-2 were recorded by attempt 1, before the kill, and replayed by the
    # attempt that finished the task; the last ones it recorded itself, replayed by none.
    assert recorded_by[:3] == ["1", "1", "1"], recorded_by
    assert all(final in (r or "").split(",") for r in replayed_by[:3]), replayed_by
    assert replayed_by[-1] == "", replayed_by
    # Recorded by attempt 1 means replayed (the retry ran every step again), and the reverse.
    for by, replays in zip(recorded_by, replayed_by, strict=True):
        assert (by == "1") == bool(replays), (recorded_by, replayed_by)
    first = rows.nth(0).locator("td").all_text_contents()
    assert first[:3] == ["1", "0", "effect"] and first[4] == "attempt 1", first
    assert first[5].startswith("by attempt ") and final in first[5], first
    assert rows.nth(5).locator("td").all_text_contents()[4:] == [f"attempt {final}", "no"]
    page.screenshot(path=str(tmp_path / "steps-timeline.png"), full_page=True)
