#!/usr/bin/env bash
# Make a Chromium available for the console's browser tests (tests/test_console.py),
# driven by Playwright with the system's browser (no `playwright install` download).
# Installs Debian's `chromium` package when no Chromium or Chrome is found.
# Idempotent and quick when one is there. Without root (and no sudo) it only
# says so: the browser tests then skip with that reason.
set -euo pipefail

have_browser() {
    [ -n "${CONSOLE_TEST_BROWSER:-}" ] && [ -x "${CONSOLE_TEST_BROWSER}" ] && return 0
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
        || command -v google-chrome >/dev/null || command -v google-chrome-stable >/dev/null
}

if have_browser; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure-browser: no Chromium here and this user cannot apt-get install it;" \
        "the console's browser tests will be skipped" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "ensure-browser: no apt-get here; install Chromium yourself (or set" \
        "CONSOLE_TEST_BROWSER) or the console's browser tests will be skipped" >&2
    exit 0
fi

echo "== installing Chromium (apt-get install chromium)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Not fatal: where the package is missing (e.g. Ubuntu's snap-only Chromium) the
# browser tests skip and say why.
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "ensure-browser: apt-get install chromium failed; the console's browser tests will be skipped" >&2
fi
