"""Safe against browsers, also with auth off: a Host allow-list, and no cross-site
requests a browser sends without asking first.

With auth off (the local default) anything that can reach the port can drive
the agent, and a web page can reach a port on the visitor's machine in two ways:

* a cross-site "simple" request (a form post, or `fetch` with `text/plain`):
  the browser sends it without a CORS preflight, so the server acts on it even
  though the page cannot read the answer. Such a request carries a non-JSON
  Content-Type, or an `Origin` naming another site: both are refused here
  (`415`, `403`) on every unsafe method (POST, PUT, PATCH, DELETE) of every
  route. Clients other than browsers send no `Origin`, and the official A2A
  clients send `Content-Type: application/json` (a body-less POST, like the
  a2a-sdk's REST cancel, has no Content-Type and is served);
* DNS rebinding: the page's own host name starts resolving to 127.0.0.1, so
  the browser thinks it talks to the page's site and lets it read the answers.
  Those requests carry the page's host name in `Host`, so only the names this
  server is meant to be reached by are served (`421` otherwise): by default the
  loopback names, the host of PUBLIC_URL and the address HOST names.

`MOLECULE_ALLOWED_HOSTS` replaces the default list (`*`: any Host, for a
deployment that checks it in front); `MOLECULE_CORS_ORIGINS` lists the web
origins allowed to call (Starlette's CORS middleware answers their preflights).
Health probes (/healthz, /readyz) are served whatever the Host: orchestrators
probe pods by address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from molecule_runtime.config import Settings
from molecule_runtime.server.busy import DOMAIN

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROBES = frozenset({"/healthz", "/readyz"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# What a web app of an allowed origin may send (answered in CORS preflights).
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "A2A-Version",
    "A2A-Extensions",
    "Last-Event-ID",
    "traceparent",
]


def _split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("", "0.0.0.0", "::")


def host_name(header: str) -> str:
    """The name of a `Host` header: lower case, without port, brackets or trailing dot."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name = header.rpartition(":")[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names served (None: any)."""
    named = _split_list(settings.allowed_hosts)
    if "*" in named:
        return None
    if named:
        return frozenset(host_name(name) for name in named)
    hosts = set(LOOPBACK_NAMES)
    public = urlsplit(settings.resolved_public_url).hostname
    if public and not _is_wildcard(public):
        hosts.add(public.lower())
    if not _is_wildcard(settings.host):
        hosts.add(host_name(settings.host))
    return frozenset(hosts)


def cors_origins(settings: Settings) -> list[str]:
    return [origin.rstrip("/") for origin in _split_list(settings.cors_origins)]


def note_defaults(settings: Settings) -> None:
    """At start-up: say which names are served when the port is not loopback-only."""
    if settings.allowed_hosts or is_loopback(settings.host):
        return
    hosts = allowed_hosts(settings)
    log.warning(
        "HOST=%s, but only requests for %s are served (DNS-rebinding protection): "
        "name the host names clients use in MOLECULE_ALLOWED_HOSTS, or set it to * "
        "when a proxy in front checks Host",
        settings.host,
        ", ".join(sorted(hosts or ())),
    )


# The gRPC-style status of each refusal, for the AIP-193 error body that the
# HTTP+JSON binding's errors have (and clients such as the JS SDK parse).
_STATUS = {403: "PERMISSION_DENIED", 421: "FAILED_PRECONDITION"}


# A body that is not JSON is A2A's ContentTypeNotSupportedError, in each binding's
# form (A2A 1.0 §5.4, §9.5, §11.6): JSON-RPC code -32005 on the JSON-RPC endpoint,
# 415 with the AIP-193 body elsewhere; both carry the A2A ErrorInfo reason.
JSONRPC_PATH = "/"
CONTENT_TYPE_NOT_SUPPORTED_CODE = -32005
A2A_DOMAIN = "a2a-protocol.org"
_CONTENT_TYPE_MESSAGE = "send the request body as JSON: Content-Type: application/json"


def _error_info(reason: str, domain: str) -> dict[str, str]:
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}


async def _refuse_content_type(scope: Scope, send: Send) -> None:
    info = _error_info("CONTENT_TYPE_NOT_SUPPORTED", A2A_DOMAIN)
    if scope["path"] == JSONRPC_PATH:
        # The request's id is unknown: its body is never read.
        body = {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": CONTENT_TYPE_NOT_SUPPORTED_CODE,
                "message": _CONTENT_TYPE_MESSAGE,
                "data": [info],
            },
        }
    else:
        body = {
            "error": {
                "code": 415,
                "status": "INVALID_ARGUMENT",
                "message": _CONTENT_TYPE_MESSAGE,
                "details": [info],
            }
        }
    await _send_json(send, 415, body)


async def _send_json(send: Send, status: int, payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, status: int, reason: str, detail: str) -> None:
    error = {
        "code": status,
        "status": _STATUS[status],
        "message": detail,
        "details": [_error_info(reason.upper(), DOMAIN)],
    }
    await _send_json(send, status, {"error": error})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class HostAllowList:
    """Refuses requests whose `Host` is not a name this server is reached by (421)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hosts is None or scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        # No Host at all: HTTP/1.0, never a browser.
        if host is None or host_name(host) in self.hosts:
            await self.app(scope, receive, send)
            return
        shown = host if len(host) <= 100 else host[:100] + "…"
        await _refuse(
            send,
            421,
            "misdirected_request",
            f"this server does not serve the host {shown!r}: "
            "name it in MOLECULE_ALLOWED_HOSTS",
        )


def _same_origin(origin: str, host: str | None) -> bool:
    parts = urlsplit(origin)
    if not parts.scheme or not parts.hostname or host is None:
        return False
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    name = host_name(host)
    _, _, host_port = host.rpartition(":") if not host.endswith("]") else ("", "", "")
    served_port = int(host_port) if host_port.isdigit() else _DEFAULT_PORTS.get(parts.scheme)
    return parts.hostname.lower() == name and port == served_port


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class CrossSiteRefusal:
    """Refuses unsafe requests a browser may send cross-site without a preflight:
    a foreign `Origin` (403) and a body that is not JSON (415)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.any_origin = "*" in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if (
            origin is not None
            and not self.any_origin
            and origin.rstrip("/") not in self.origins
            and not _same_origin(origin, _header(scope, b"host"))
        ):
            await _refuse(
                send,
                403,
                "cross_site_request",
                "requests from other web origins are refused: "
                "list the origin in MOLECULE_CORS_ORIGINS to allow it",
            )
            return
        content_type = _header(scope, b"content-type")
        has_body = _header(scope, b"transfer-encoding") is not None or (
            _header(scope, b"content-length") not in (None, "0")
        )
        if (content_type is not None or has_body) and not is_json(content_type or ""):
            await _refuse_content_type(scope, send)
            return
        await self.app(scope, receive, send)
