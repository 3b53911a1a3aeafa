"""The console in durable mode, in a real headless Chromium: a retry in the chat and the
timeline, the link to the workflow in the Temporal UI, the embedded Temporal UI."""

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
