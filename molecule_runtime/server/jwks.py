"""Verification keys for JWT bearer tokens: an OIDC provider's JWKS, or a local key file.

The JWKS is fetched with an async client (never blocking the event loop),
cached, and fetched again when it is older than `max_age` or a token names a
key id not in it (key rotation) — at most once per `min_refetch`, so tokens
with made-up key ids cannot turn the runtime into a flood of JWKS requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

MAX_AGE = 300.0
MIN_REFETCH = 30.0
FETCH_TIMEOUT = 5.0


def _parse_jwks(data: Any) -> dict[str | None, Any]:
    """Key id → verification key of a JWKS (or of one JWK); keys that cannot be used are left out."""
    if isinstance(data, dict) and "keys" not in data:
        data = {"keys": [data]}
    keys: dict[str | None, Any] = {}
    for entry in data.get("keys", []) if isinstance(data, dict) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry.get("kid")] = jwt.PyJWK.from_dict(entry).key
        except jwt.PyJWTError as exc:
            log.warning("JWKS key %r left out: %s", entry.get("kid"), exc)
    return keys


def load_key_file(path: Path) -> dict[str | None, Any]:
    """A PEM public key, or a JWKS / JWK JSON document."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"MOLECULE_JWT_KEY_FILE={path}: {exc.strerror}") from None
    if text.lstrip().startswith("{"):
        keys = _parse_jwks(json.loads(text))
    else:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            keys = {None: load_pem_public_key(text.encode())}
        except ValueError:
            raise ValueError(
                f"MOLECULE_JWT_KEY_FILE={path}: not a PEM public key or a JWKS"
            ) from None
    if not keys:
        raise ValueError(f"MOLECULE_JWT_KEY_FILE={path}: no usable signing key")
    return keys


class JwksKeys:
    """Verification keys by key id, from a JWKS URL (refreshed) or fixed."""

    def __init__(self, url: str | None, keys: dict[str | None, Any] | None = None) -> None:
        self._url = url
        self._keys: dict[str | None, Any] = keys or {}
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()
        self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT) if url else None

    @classmethod
    def static(cls, keys: dict[str | None, Any]) -> JwksKeys:
        return cls(None, keys)

    def _pick(self, kid: str | None) -> Any:
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if None in self._keys and len(self._keys) == 1:
            return self._keys[None]  # a single key without an id serves every token
        return None

    async def key_for(self, kid: str | None) -> Any:
        key = self._pick(kid)
        if self._url is None:
            return key
        age = time.monotonic() - self._fetched
        if (key is not None and age < MAX_AGE) or (key is None and age < MIN_REFETCH):
            return key
        async with self._lock:
            if time.monotonic() - self._fetched >= MIN_REFETCH:
                await self._fetch()
        return self._pick(kid)

    async def _fetch(self) -> None:
        assert self._client is not None and self._url is not None
        self._fetched = time.monotonic()
        try:
            reply = await self._client.get(self._url)
            reply.raise_for_status()
            keys = _parse_jwks(reply.json())
        except (httpx.HTTPError, ValueError) as exc:
            # Keep the keys we had: a provider hiccup must not log everyone out.
            log.warning("could not fetch the JWKS (MOLECULE_JWT_JWKS_URL): %s", type(exc).__name__)
            return
        if keys:
            self._keys = keys

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
