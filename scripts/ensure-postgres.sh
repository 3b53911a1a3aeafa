#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for the tests (tests/support/postgres.py).
# The tests start their own throw-away server (initdb + postgres on 127.0.0.1);
# this script only installs Debian's `postgresql` package when it is missing.
# Idempotent and quick when already installed. Without root (and no sudo) it
# only says so: the PostgreSQL tests then skip with that reason.
set -euo pipefail

have_server() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        || { command -v initdb >/dev/null && command -v postgres >/dev/null; }
}

if have_server; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure-postgres: PostgreSQL is not installed and this user cannot apt-get install it;" \
        "the PostgreSQL tests will be skipped" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "ensure-postgres: no apt-get here; install PostgreSQL (initdb, postgres) yourself" \
        "or the PostgreSQL tests will be skipped" >&2
    exit 0
fi

echo "== installing PostgreSQL (apt-get install postgresql)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
have_server
