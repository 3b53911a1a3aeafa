"""A principal's identity (kind, tenant, subject) and the owner it is stored under.

The owner is the encoding of a structured `Identity` that no two identities
share: `Identity.from_owner` reads it back, so two principals are one only
when kind, tenant and subject are all equal.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from molecule_runtime.store.owners import Principal

# The owner column of the SDK's tables holds at most 255 characters.
_MAX_OWNER = 255


Kind = Literal["shared", "key", "jwt"]
_HASHED = "sha256:"


def _escape(text: str) -> str:
    """`text` with `%` and `/` percent-encoded, and a leading `sha256:` too.

    Escaped, a tenant never holds the `/` that ends it, a subject without a
    tenant never looks like `<tenant>/<subject>`, and nothing looks like a
    hashed owner. Text without those characters is left as it is, so owners
    stored by earlier versions under such names still match (docs/security.md).
    """
    escaped = text.replace("%", "%25").replace("/", "%2F")
    if escaped.startswith(_HASHED):
        escaped = "%73" + escaped[1:]
    return escaped


@dataclass(frozen=True)
class Identity:
    """Who a principal is: its kind, its tenant (JWTs with a tenant claim) and its subject.

    `owner` encodes it for the SDK's owner column (at most 255 characters):

    * the shared token (and auth off): the empty owner;
    * an API key: `key:<name>` (a key's name has no `:`);
    * a JWT: `jwt:<escaped sub>`, or with a tenant `jwt:<escaped tenant>/<sub>`:
      the first `/` always ends the tenant, and a subject without a tenant
      never contains one, so `sub="acme/alice"` without a tenant is
      `jwt:acme%2Falice`, apart from tenant `acme`'s `alice`;
    * longer than 255 characters: `<kind>:sha256:<hex digest of the rest>`.
    """

    kind: Kind
    subject: str = ""
    tenant: str | None = None

    def __post_init__(self) -> None:
        # parse_api_keys never makes such a name; refused here so that no key
        # owner can look like a hashed one.
        if self.kind == "key" and ":" in self.subject:
            raise ValueError("an API key's name cannot contain ':'")

    @property
    def owner(self) -> str:
        if self.kind == "shared":
            return ""
        if self.kind == "key":
            rest = self.subject
        elif self.tenant is None:
            rest = _escape(self.subject)
        else:
            rest = f"{_escape(self.tenant)}/{self.subject}"
        owner = f"{self.kind}:{rest}"
        if len(owner) > _MAX_OWNER:
            owner = f"{self.kind}:{_HASHED}{hashlib.sha256(rest.encode()).hexdigest()}"
        return owner

    @property
    def display(self) -> str:
        """For logs: the key's name, the token's subject (with its tenant)."""
        if self.kind == "shared":
            return "shared-token"
        if self.tenant is not None:
            return f"{self.tenant}/{self.subject}"
        return self.subject

    @classmethod
    def from_owner(cls, owner: str) -> Identity | None:
        """The identity an owner encodes; None for a hashed one (or not an owner)."""
        if owner == "":
            return cls("shared")
        kind, sep, rest = owner.partition(":")
        if not sep or not rest or rest.startswith(_HASHED):
            return None
        if kind == "key":
            return cls("key", rest)
        if kind != "jwt":
            return None
        tenant, slash, subject = rest.partition("/")
        if slash:
            return cls("jwt", subject, unquote(tenant))
        return cls("jwt", unquote(rest))

    @property
    def principal(self) -> Principal:
        return Principal(name=self.display, owner=self.owner)
