"""The agent card advertised at /.well-known/agent-card.json."""

from __future__ import annotations

from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)

from molecule_runtime import __version__
from molecule_runtime.adapters.base import BaseAdapter
from molecule_runtime.config import Settings

REST_PREFIX = "/rest"


def build_agent_card(settings: Settings, adapter: BaseAdapter, *, push: bool = False) -> AgentCard:
    """`push`: push notifications are wired up (a config store and a sender)."""
    base = settings.resolved_public_url
    name = settings.agent_name or f"{adapter.name()} agent"
    description = settings.agent_description or adapter.description()
    card = AgentCard(
        name=name,
        description=description,
        version=__version__,
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(
                url=f"{base}{REST_PREFIX}", protocol_binding="HTTP+JSON", protocol_version="1.0"
            ),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=push),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id=adapter.name(),
                name=name,
                description=description,
                tags=[adapter.name(), "durable" if settings.durable else "direct"],
                input_modes=["text/plain"],
                output_modes=["text/plain"],
            )
        ],
    )
    # A2A 1.0: each requirement is one way in (any one of them suffices).
    schemes: dict[str, HTTPAuthSecurityScheme] = {}
    if settings.auth_token is not None or settings.api_keys or settings.api_keys_file:
        schemes["bearer"] = HTTPAuthSecurityScheme(
            scheme="Bearer", description="API key (MOLECULE_AUTH_TOKEN or a named key)"
        )
    if settings.jwt_jwks_url or settings.jwt_key_file:
        schemes["jwt"] = HTTPAuthSecurityScheme(
            scheme="Bearer",
            bearer_format="JWT",
            description=f"JWT from {settings.jwt_issuer} for audience {settings.jwt_audience}",
        )
    for name, scheme in schemes.items():
        card.security_schemes[name].CopyFrom(SecurityScheme(http_auth_security_scheme=scheme))
        card.security_requirements.append(SecurityRequirement(schemes={name: StringList(list=[])}))
    return card
