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

status=0
bash "$(dirname "$0")/apt-install.sh" "the PostgreSQL tests" postgresql || status=$?
[ "$status" -eq 3 ] && exit 0  # cannot install here: the PostgreSQL tests skip
[ "$status" -eq 0 ] || exit "$status"
have_server
