"""Connecting to Temporal: `TEMPORAL_HOST` wins; Temporal's own env config supplies the rest."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfigProfile

from molecule_runtime.config import Settings

log = logging.getLogger(__name__)


def connect_options(settings: Settings, target_host: str) -> dict[str, Any]:
    """Connect kwargs: TEMPORAL_ADDRESS / TEMPORAL_API_KEY / TLS / temporal.toml, then ours."""
    try:
        options: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    except Exception as exc:  # a broken temporal.toml must not hide TEMPORAL_HOST
        log.warning("ignoring Temporal env config: %s", exc)
        options = {}
    options["target_host"] = target_host
    options["namespace"] = settings.temporal_namespace
    return options


async def connect(
    settings: Settings, target_host: str, interceptors: list[Interceptor] | None = None
) -> Client:
    options = connect_options(settings, target_host)
    client = await Client.connect(**options, interceptors=interceptors or [], lazy=False)
    # Fail fast when the frontend is not really serving (connect can succeed early).
    await client.service_client.check_health(
        timeout=timedelta(seconds=settings.temporal_connect_timeout)
    )
    return client
