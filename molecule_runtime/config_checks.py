"""How setting values are parsed, checked and defaulted (the fields are in config.py)."""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import SecretStr

RUNNING_TASKS_PER_CPU = 256


def default_max_running_tasks() -> int:
    """256 running tasks per CPU this process may use.

    A running task relaying a model's stream mostly waits: measured on the
    2-core benchmark machine (docs/performance.md, streaming load), one process
    relays 500 concurrent streams of 50 chunks a second with every answer
    exact, merging chunks into fewer events as the load grows. So the default
    only stops a burst far beyond that from piling up; CPU-heavy adapters (a
    local model) want far fewer.
    """
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return RUNNING_TASKS_PER_CPU * max(1, cpus)


def parse_adapter_options(value: Any) -> Any:
    """ADAPTER_OPTIONS: a JSON object (empty: none)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ADAPTER_OPTIONS is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("ADAPTER_OPTIONS must be a JSON object")
    return value


def empty_secret_is_unset(value: Any) -> Any:
    # `MOLECULE_AUTH_TOKEN=` (e.g. an empty compose variable) must not turn on
    # auth with an empty token that a bare "Bearer" header would match.
    if isinstance(value, str) and not value.strip():
        return None
    return value


# Settings that only work together: each check raises ValueError naming them, never a value.


def check_jwt(has_key: bool, issuer: str | None, audience: str | None) -> None:
    """JWT: a key (MOLECULE_JWT_JWKS_URL or MOLECULE_JWT_KEY_FILE) with issuer and audience."""
    # A key without issuer and audience would accept any token the
    # provider signs, for any application: refuse to start instead.
    if has_key and not (issuer and audience):
        raise ValueError(
            "JWT bearer tokens need MOLECULE_JWT_ISSUER and MOLECULE_JWT_AUDIENCE "
            "(set with MOLECULE_JWT_JWKS_URL or MOLECULE_JWT_KEY_FILE)"
        )
    if (issuer or audience) and not has_key:
        raise ValueError(
            "MOLECULE_JWT_ISSUER / MOLECULE_JWT_AUDIENCE need a key: "
            "MOLECULE_JWT_JWKS_URL or MOLECULE_JWT_KEY_FILE"
        )


def check_push_key(encrypt: bool, key: SecretStr | None) -> None:
    """Push encryption: MOLECULE_PUSH_ENCRYPT needs a key, and a key must be a Fernet key."""
    if encrypt and key is None:
        raise ValueError(
            "MOLECULE_PUSH_ENCRYPT=true needs MOLECULE_PUSH_ENCRYPTION_KEY (a Fernet key: "
            'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
        )
    if key is not None:
        from cryptography.fernet import Fernet

        try:
            Fernet(key.get_secret_value().encode())
        except ValueError:
            # The message names the setting, never the value.
            raise ValueError(
                "MOLECULE_PUSH_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None


def log_level(value: str) -> str:
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}")
    return level


def redact_url(url: str) -> str:
    """Hide the password of a database URL."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
