"""Wrapping the endpoints of the SDK's route lists (the SDK has no middleware seam
per endpoint): each `Route` gets a new endpoint, `Mount`s are walked, the rest kept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

Endpoint = Callable[[Request], Awaitable[Response]]


def wrap_endpoints(routes: list[BaseRoute], wrap: Callable[[Endpoint], Endpoint]) -> list[BaseRoute]:
    wrapped: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route):
            wrapped.append(
                Route(
                    route.path,
                    wrap(route.endpoint),
                    methods=sorted(route.methods or ()),
                    name=route.name,
                    include_in_schema=route.include_in_schema,
                )
            )
        elif isinstance(route, Mount):
            wrapped.append(
                Mount(route.path, routes=wrap_endpoints(list(route.routes), wrap), name=route.name)
            )
        else:
            wrapped.append(route)
    return wrapped
