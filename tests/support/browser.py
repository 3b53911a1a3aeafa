"""A real headless Chromium for the console's tests, driven by Playwright with the
system's browser (scripts/ensure-browser.sh installs Debian's `chromium`); never a
browser downloaded by `playwright install`."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> tuple[str | None, str]:
    """(path of a Chromium, "") or (None, why there is none)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "playwright is not installed (pip install -e '.[test]')"
    explicit = os.environ.get("CONSOLE_TEST_BROWSER")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"CONSOLE_TEST_BROWSER={explicit} is not an executable"
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path, ""
    return None, (
        "no Chromium found (apt-get install chromium, or set CONSOLE_TEST_BROWSER); "
        "scripts/ensure-browser.sh installs it where it can"
    )


# In-page recorder of how the newest answer grows: every change of its text and
# state, so a test sees the stream as the user did, not just the final text.
RECORD_ANSWER = """
() => {
  window.__answers = [];
  const messages = document.getElementById('messages');
  new MutationObserver(() => {
    const bubbles = messages.querySelectorAll('[data-testid=agent-message]');
    const last = bubbles[bubbles.length - 1];
    if (!last) return;
    const text = last.querySelector('[data-testid=answer-text]').textContent;
    const state = last.dataset.state || '';
    const prev = window.__answers[window.__answers.length - 1];
    if (!prev || prev.text !== text || prev.state !== state) window.__answers.push({text, state});
  }).observe(messages, {subtree: true, childList: true, characterData: true, attributes: true});
}
"""


@contextlib.contextmanager
def launched(path: str) -> Iterator[Any]:
    """A headless Chromium (the system's, at `path`), closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def console_page(browser: Any, screenshots: Path) -> Iterator[Any]:
    """A fresh page (own cookies and sessionStorage); fails on JavaScript errors and
    leaves `final.png` in `screenshots` however the test ends."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        page.screenshot(path=str(screenshots / "final.png"), full_page=True)
        context.close()


def open_console(page: Any, url: str) -> None:
    page.goto(url + "/console")
    page.wait_for_selector("#app:not([hidden])")


def send(page: Any, text: str) -> None:
    page.fill("[data-testid=prompt]", text)
    page.click("[data-testid=send]")


def last_answer(page: Any) -> Any:
    return page.locator("[data-testid=agent-message]").last


def wait_state(page: Any, state: str, timeout: float = 30_000) -> None:
    """Until the newest answer's task is in `state` (e.g. "completed", "input-required")."""
    page.wait_for_function(
        """state => {
            const all = document.querySelectorAll('[data-testid=agent-message]');
            return all.length && all[all.length - 1].dataset.state === state;
        }""",
        arg=state,
        timeout=timeout,
    )
