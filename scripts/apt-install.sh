#!/usr/bin/env bash
# apt-install.sh WHAT PACKAGE: install one Debian package for the tests, as root or
# with password-less sudo. Where that is not possible it says so and exits 3 (the
# tests that need WHAT then skip, saying why); a failing install exits non-zero too.
set -euo pipefail
what=$1
package=$2

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "apt-install: ${package} is missing and this user cannot apt-get install it;" \
        "${what} will be skipped" >&2
    exit 3
fi
if ! command -v apt-get >/dev/null; then
    echo "apt-install: no apt-get here; install ${package} yourself or ${what} will be skipped" >&2
    exit 3
fi

echo "== installing ${package} (apt-get install ${package})"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${package}" >/dev/null
