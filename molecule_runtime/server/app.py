"""Composes the Starlette application: A2A routes, agent card, health, auth."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molecule_runtime.execution.admission import Admission
from molecule_runtime.execution.dispatch import Dispatch
from molecule_runtime.execution.drain import stop_direct_after
from molecule_runtime.observability import metrics
from molecule_runtime.server.auth import AuthMiddleware
from molecule_runtime.server.browsers import (
    CORS_REQUEST_HEADERS,
    CrossSiteRefusal,
    HostAllowList,
    allowed_hosts,
    cors_origins,
    note_defaults,
)
from molecule_runtime.server.busy import answering_busy
from molecule_runtime.server.card import REST_PREFIX, build_agent_card, card_routes
from molecule_runtime.server.compat03 import install as install_compat03_client_errors
from molecule_runtime.server.complexity import RequestBounds
from molecule_runtime.server.console.routes import PublicConsole, console_routes
from molecule_runtime.server.executor import RuntimeExecutor
from molecule_runtime.server.handler import RuntimeRequestHandler
from molecule_runtime.server.limits import RequestLimitsMiddleware
from molecule_runtime.server.media_types import ClientMediaType
from molecule_runtime.server.principals import build_authenticator
from molecule_runtime.server.quotas import RequestRate
from molecule_runtime.server.sse_ids import EventIdContextBuilder, with_event_ids
from molecule_runtime.server.submission import SubmissionRules, reply_decision
from molecule_runtime.services import Services, handover_after
from molecule_runtime.store.push_configs import BoundedPushConfigs

if TYPE_CHECKING:
    # Imported only for durable mode (Temporal's SDK adds ~0.7 s to every start).
    from molecule_runtime.durable.client import DurableTasks


def _workflows_reachable(durable: DurableTasks) -> Callable[[], bool]:
    """Whether an answer can be signalled to its workflow now (as `resume` checks)."""
    connection = durable.connection
    return lambda: connection.client is not None and connection.healthy


def build_app(services: Services, *, tracing_enabled: bool = False) -> Starlette:
    """The ASGI app of opened `Services`."""
    settings = services.settings
    stores = services.stores
    if settings.a2a_v03_compat:
        install_compat03_client_errors()
    durable = services.durable.tasks if services.durable is not None else None
    card = build_agent_card(settings, services.adapter, push=services.notifier is not None)
    executor = RuntimeExecutor(
        Dispatch(
            services.adapter,
            stores.tasks,
            services.run,
            durable=services.durable.route if services.durable is not None else None,
            instance_id=settings.resolved_instance_id,
            draining=services.draining,
            message_ids=stores.message_ids,
            stop_direct_after=stop_direct_after(handover_after(settings)),
        )
    )
    notifier = services.notifier
    handler = RuntimeRequestHandler(
        agent_executor=executor,
        task_store=stores.tasks,
        agent_card=card,
        event_log=stores.event_log,
        durable=durable,
        live_offsets=stores.live_offsets,
        admission=Admission(
            settings.max_running_tasks,
            settings.max_queued_tasks,
            max_per_principal=settings.principal_max_tasks,
        ),
        submissions=SubmissionRules(
            stores.tasks,
            stores.message_ids,
            settings.concurrent_messages,
            replies_with_message=reply_decision(services.adapter),
            resumable=_workflows_reachable(durable) if durable is not None else None,
            dedup=settings.message_id_dedup,
        ),
        # Notifications are sent by the store's notifier for every write
        # (also headless ones), so the SDK gets no sender of its own.
        push_config_store=(
            BoundedPushConfigs(stores.push_configs, settings.push_max_configs_per_task)
            if notifier is not None
            else None
        ),
        push_url_validator=notifier.validate_url if notifier is not None else None,
        bounds=RequestBounds.of(settings),
        draining=services.draining.is_set,
    )
    context_builder = EventIdContextBuilder()
    rate = (
        RequestRate(settings.principal_requests_per_minute)
        if settings.principal_requests_per_minute
        else None
    )

    # Open SSE streams may finish during shutdown; kept below uvicorn's own
    # graceful timeout so the server still exits in time.
    sse_grace = handover_after(settings)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        ok, body = await services.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_endpoint(_: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    console = console_routes(services) if settings.console else []
    routes = [
        # Before the REST binding's `/{tenant}/…` mount, which would take /console/….
        *console,
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *card_routes(card, settings),
        *answering_busy(
            with_event_ids(
                create_rest_routes(
                    handler,
                    context_builder=context_builder,
                    path_prefix=REST_PREFIX,
                    shutdown_grace_period=sse_grace,
                )
            ),
            "rest",
            rate,
        ),
        *answering_busy(
            with_event_ids(
                create_jsonrpc_routes(
                    handler,
                    rpc_url="/",
                    context_builder=context_builder,
                    enable_v0_3_compat=settings.a2a_v03_compat,
                    shutdown_grace_period=sse_grace,
                )
            ),
            "jsonrpc",
            rate,
        ),
    ]
    # REST answers in the media type the client used (server/media_types.py).
    middleware = [Middleware(ClientMediaType, prefix=REST_PREFIX)]
    if tracing_enabled:
        # Server spans whose parent is the caller's W3C traceparent; the task
        # stage spans (and Temporal's, in durable mode) nest under them.
        middleware.append(
            Middleware(OpenTelemetryMiddleware, excluded_urls="healthz,readyz,metrics")
        )
    # A Host this server is not reached by is refused first (DNS rebinding);
    # listed web origins get CORS answers, preflights included (server/browsers.py).
    middleware.append(Middleware(HostAllowList, hosts=allowed_hosts(settings)))
    note_defaults(settings)
    origins = cors_origins(settings)
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=["Retry-After"],
            )
        )
    if console:
        # Outside auth: the page loads without the token, then asks for it.
        middleware.append(Middleware(PublicConsole, routes=console))
    authenticator = build_authenticator(settings)
    if authenticator.enabled:
        middleware.append(
            Middleware(
                AuthMiddleware, authenticator=authenticator, metrics_public=settings.metrics_public
            )
        )
    # After auth (an unauthenticated request gets its 401 whatever it sends):
    # what a browser may send cross-site without a preflight is refused.
    middleware.append(Middleware(CrossSiteRefusal, origins=origins))
    # Innermost: unauthenticated requests are refused before their body is read.
    middleware.append(
        Middleware(
            RequestLimitsMiddleware,
            max_body_bytes=settings.max_request_bytes,
            body_timeout=settings.request_timeout,
            max_json_depth=settings.max_json_depth,
            max_json_values=settings.max_json_values,
            max_history_length=settings.max_history_length,
        )
    )

    # Other bindings of the handler (gRPC): their calls end before it closes.
    before_close: list[Callable[[], Awaitable[None]]] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for wait in before_close:
            await wait()
        await handler.aclose()
        await authenticator.aclose()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.services = services
    app.state.request_handler = handler
    # The gRPC binding (process.py) serves the same handler under the same guards.
    app.state.authenticator = authenticator
    app.state.request_rate = rate
    app.state.before_close = before_close
    return app
