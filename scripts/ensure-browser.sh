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

# Not fatal: where the package is missing (e.g. Ubuntu's snap-only Chromium) the
# browser tests skip and say why.
status=0
bash "$(dirname "$0")/apt-install.sh" "the console's browser tests" chromium || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    echo "ensure-browser: apt-get install chromium failed; the console's browser tests will be skipped" >&2
fi
exit 0
