"""The agent card advertised at /.well-known/agent-card.json.

The card lists every binding (JSON-RPC, REST and, when on, gRPC) for A2A 1.0.
While 0.3 compatibility is on, the served document also carries the 0.3
fields (`url`, `protocolVersion`, `preferredTransport`, `additionalInterfaces`,
0.3-shaped security schemes), made by the SDK's own 0.3 conversion of the
interfaces that answer 0.3 (JSON-RPC at `/`, the 0.3 gRPC service), so an
a2a-sdk 0.3 client resolves it. A 1.0 client reads `supportedInterfaces`,
which stays the 1.0 list: it ignores the 0.3 fields (the a2a-sdk client drops
them) and parses the same card as without them.

A client that says it speaks 1.0 (an `A2A-Version` header or query parameter
of 1.0 or later, as the JS SDK sends) gets the 1.0 card alone: some read a
0.3 key inside a 1.0 object (a security scheme's `type`) as the sign of a 0.3
card, and strict schema checks (the TCK's) refuse extra fields. Without the
header a client is taken for 0.3 (A2A 1.0: a request without `A2A-Version`
is a 0.3 request) and gets both.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
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
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_0_3, VERSION_HEADER
from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molecule_runtime import __version__
from molecule_runtime.adapters.base import BaseAdapter
from molecule_runtime.config import Settings

REST_PREFIX = "/rest"
GRPC = "GRPC"


def build_agent_card(settings: Settings, adapter: BaseAdapter, *, push: bool = False) -> AgentCard:
    """`push`: push notifications are wired up (a config store and a sender)."""
    base = settings.resolved_public_url
    name = settings.agent_name or f"{adapter.name()} agent"
    description = settings.agent_description or adapter.description()
    input_modes, output_modes = adapter.input_modes(), adapter.output_modes()
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
        default_input_modes=input_modes,
        default_output_modes=output_modes,
        skills=[
            AgentSkill(
                id=adapter.name(),
                name=name,
                description=description,
                tags=[adapter.name(), "durable" if settings.durable else "direct"],
                input_modes=input_modes,
                output_modes=output_modes,
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
    grpc_url = settings.resolved_grpc_url
    if grpc_url is not None:
        card.supported_interfaces.append(
            AgentInterface(url=grpc_url, protocol_binding=GRPC, protocol_version="1.0")
        )
    return card


def v03_interfaces(settings: Settings) -> list[AgentInterface]:
    """The interfaces that answer A2A 0.3 clients, the first one preferred."""
    if not settings.a2a_v03_compat:
        return []
    found = [
        AgentInterface(
            url=f"{settings.resolved_public_url}/",
            protocol_binding="JSONRPC",
            protocol_version=PROTOCOL_VERSION_0_3,
        )
    ]
    grpc_url = settings.resolved_grpc_url
    if grpc_url is not None:
        found.append(
            AgentInterface(url=grpc_url, protocol_binding=GRPC, protocol_version=PROTOCOL_VERSION_0_3)
        )
    return found


def card_document(card: AgentCard, legacy: list[AgentInterface]) -> dict[str, Any]:
    """The JSON served: the 1.0 card, plus its 0.3 fields when `legacy` names 0.3 interfaces."""
    document = MessageToDict(card)
    if not legacy:
        return document
    view = AgentCard()
    view.CopyFrom(card)
    del view.supported_interfaces[:]
    view.supported_interfaces.extend(legacy)
    merged = agent_card_to_dict(view)
    merged["supportedInterfaces"] = document.get("supportedInterfaces", [])
    return merged


def _etag(document: dict[str, Any]) -> str:
    # Weak: equal content, whatever the key order of the serialisation.
    body = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return f'W/"{hashlib.sha256(body.encode()).hexdigest()}"'


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match asks."""
    candidates = [c.strip() for c in if_none_match.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == etag.removeprefix("W/") for c in candidates)


def speaks_1_0(request: Request) -> bool:
    """The client asked for A2A 1.0 or later (`A2A-Version`, header or query)."""
    version = request.headers.get(VERSION_HEADER) or request.query_params.get(VERSION_HEADER, "")
    major = version.strip().split(".", 1)[0]
    return major.isdigit() and int(major) >= 1


def card_routes(card: AgentCard, settings: Settings) -> list[Route]:
    """GET of the card, the one the client reads (`speaks_1_0`): `ETag` (a
    matching `If-None-Match` gets 304), `Cache-Control: max-age`
    (MOLECULE_CARD_MAX_AGE) and `Vary: A2A-Version` for caches."""
    legacy = v03_interfaces(settings)

    def served(document: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        headers = {
            "ETag": _etag(document),
            "Cache-Control": f"public, max-age={settings.card_max_age}",
        }
        if legacy:
            headers["Vary"] = VERSION_HEADER
        return json.dumps(document).encode(), headers

    for_1_0 = served(card_document(card, []))
    for_0_3 = served(card_document(card, legacy))

    async def agent_card(request: Request) -> Response:
        body, headers = for_1_0 if speaks_1_0(request) else for_0_3
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and _matches(if_none_match, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=JSONResponse.media_type, headers=headers)

    return [Route(AGENT_CARD_WELL_KNOWN_PATH, agent_card, methods=["GET"])]
