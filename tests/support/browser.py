"""A real headless Chromium for the console's tests, driven by Playwright with the
system's browser (scripts/ensure-browser.sh installs Debian's `chromium`); never a
browser downloaded by `playwright install`."""

from __future__ import annotations

import os
import shutil

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
