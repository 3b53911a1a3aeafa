"""Principals: who is calling, from the bearer credential of a request.

Three kinds of credential, any mix of them:

* `MOLECULE_AUTH_TOKEN`, the shared token: one principal, whose owner scope is
  the empty one, so tasks stored before principals existed (and tasks created
  while auth was off) stay visible to it;
* named API keys (`MOLECULE_API_KEYS`, `MOLECULE_API_KEYS_FILE`): `name:key`
  entries, several keys per name allowed (rotation);
* JWT bearer tokens from an OIDC provider, checked against its JWKS (or a local
  key file): signature, `iss`, `aud`, `exp` (with a small leeway) and `sub`.

Every stored task, push config and subscription is scoped by the principal's
`owner` (the SDK's owner scoping; the call context's user name is the owner).
The owner is the encoding of a structured `Identity` (server/identity.py);
the principal reaches the SDK as a `PrincipalUser` (store/owners.py).
Keys are compared in constant time, against every configured key; neither keys
nor tokens are ever logged.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import jwt

from molecule_runtime.config import Settings
from molecule_runtime.server.identity import Identity
from molecule_runtime.server.jwks import JwksKeys, load_key_file
from molecule_runtime.store.owners import Principal

__all__ = [
    "SHARED_TOKEN",
    "AuthConfigError",
    "Authenticator",
    "JwtVerifier",
    "build_authenticator",
    "parse_api_keys",
]

log = logging.getLogger(__name__)

SHARED_TOKEN = Identity("shared").principal


class AuthConfigError(ValueError):
    """The auth settings cannot be used (the message never contains a key)."""


def parse_api_keys(text: str, source: str) -> list[tuple[str, str]]:
    """`name:key` entries, separated by newlines or commas; `#` starts a comment line."""
    entries: list[tuple[str, str]] = []
    for number, raw in enumerate(text.replace(",", "\n").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = line.partition(":")
        name, key = name.strip(), key.strip()
        if not sep or not name or not key:
            raise AuthConfigError(f"{source}: entry {number} is not 'name:key'")
        if len(key) < 16:
            raise AuthConfigError(f"{source}: the key of {name!r} is shorter than 16 characters")
        entries.append((name, key))
    return entries


class Authenticator:
    """Maps a request's `Authorization` header to a `Principal` (None: refused)."""

    def __init__(
        self, keys: list[tuple[bytes, Principal]], tokens: JwtVerifier | None = None
    ) -> None:
        self._keys = keys
        self._tokens = tokens

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or self._tokens is not None

    def match_key(self, supplied: bytes) -> Principal | None:
        """Constant time in the supplied value, and every key is compared."""
        found: Principal | None = None
        for key, principal in self._keys:
            if hmac.compare_digest(supplied, key) and found is None:
                found = principal
        return found

    async def authenticate(self, header: bytes) -> Principal | None:
        # The scheme name is case-insensitive (RFC 9110); the credential is not.
        scheme, _, supplied = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        supplied = supplied.strip(b" ")
        if not supplied:
            return None
        principal = self.match_key(supplied)
        if principal is not None or self._tokens is None:
            return principal
        try:
            token = supplied.decode("ascii")
        except UnicodeDecodeError:
            return None
        return await self._tokens.verify(token)

    async def aclose(self) -> None:
        if self._tokens is not None:
            await self._tokens.aclose()


class JwtVerifier:
    """JWT bearer tokens: PyJWT checks signature, issuer, audience and expiry."""

    def __init__(
        self,
        keys: JwksKeys,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway: float,
        tenant_claim: str | None = None,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        # `none` never: an unsigned token proves nothing.
        self._algorithms = [a for a in algorithms if a.lower() != "none"]
        self._leeway = leeway
        self._tenant_claim = tenant_claim

    async def verify(self, token: str) -> Principal | None:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in self._algorithms:
                return None
            key = await self._keys.key_for(header.get("kid"))
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except Exception as exc:  # PyJWT's errors, or a key of the wrong type
            # Only the kind of failure: the token itself is a credential.
            log.debug("bearer token refused: %s", type(exc).__name__)
            return None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            return None
        tenant = claims.get(self._tenant_claim) if self._tenant_claim else None
        if tenant is None or tenant == "":
            return Identity("jwt", subject).principal
        if isinstance(tenant, bool) or not isinstance(tenant, str | int):
            # A list or an object names no one tenant: refused, not guessed at.
            log.debug("bearer token refused: tenant claim is a %s", type(tenant).__name__)
            return None
        return Identity("jwt", subject, str(tenant)).principal

    async def aclose(self) -> None:
        await self._keys.aclose()


def _api_key_entries(settings: Settings) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    if settings.api_keys is not None:
        entries += parse_api_keys(settings.api_keys.get_secret_value(), "MOLECULE_API_KEYS")
    if settings.api_keys_file is not None:
        path = Path(settings.api_keys_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise AuthConfigError(f"MOLECULE_API_KEYS_FILE={path}: {exc.strerror}") from None
        entries += parse_api_keys(text, f"MOLECULE_API_KEYS_FILE={path}")
    return entries


def build_authenticator(settings: Settings) -> Authenticator:
    """The principals the settings name; raises AuthConfigError / ValueError on a bad setting."""
    keys: list[tuple[bytes, Principal]] = []
    if settings.auth_token is not None:
        keys.append((settings.auth_token.get_secret_value().encode(), SHARED_TOKEN))
    seen: set[str] = set()
    for name, key in _api_key_entries(settings):
        if key in seen:
            raise AuthConfigError(f"the key of {name!r} is configured twice")
        seen.add(key)
        keys.append((key.encode(), Identity("key", name).principal))
    tokens = None
    if settings.jwt_jwks_url or settings.jwt_key_file:
        assert settings.jwt_issuer and settings.jwt_audience  # checked by Settings
        if settings.jwt_key_file is not None:
            try:
                source = JwksKeys.static(load_key_file(Path(settings.jwt_key_file)))
            except ValueError as exc:
                raise AuthConfigError(str(exc)) from None
        else:
            source = JwksKeys(str(settings.jwt_jwks_url))
        tokens = JwtVerifier(
            source,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=[a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()],
            leeway=settings.jwt_leeway,
            tenant_claim=settings.jwt_tenant_claim,
        )
    return Authenticator(keys, tokens)
