"""The web console at /console: a page that talks to this runtime over its own A2A
JSON-RPC endpoint, like any client would.

The page and its static files are public, like the agent card: they hold no data,
and with auth on the page asks for the token before it fetches anything. Its
settings (`/console/config`) are behind auth like every A2A route. No build step
and no CDN: the files under static/ are what the browser runs.

A task's durable steps are not part of A2A: the timeline reads them from
`/console/tasks/{id}/steps`, behind auth, and only for a task the caller may
read with GetTask (another principal's task is "not found", as there).
"""

from __future__ import annotations

from pathlib import Path

from a2a.server.routes.common import DefaultServerCallContextBuilder
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from molecule_runtime.durable.types import workflow_id
from molecule_runtime.execution.usage import turn_of_artifact
from molecule_runtime.services import Services
from molecule_runtime.store.failures import StoreUnavailable
from molecule_runtime.store.health import refusing

STATIC_DIR = Path(__file__).resolve().parent / "static"
PATH = "/console"
# Task ids are at most this long in the stores (longer ones name no task).
_MAX_TASK_ID = 255

# Same-origin scripts, styles and API calls only: no inline code runs, so a
# task's text shown on the page can never execute.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


def temporal_ui_url(services: Services) -> str | None:
    """Where the Temporal UI is: `TEMPORAL_UI_URL`, else the embedded server's UI."""
    if services.settings.temporal_ui_url:
        return services.settings.temporal_ui_url.rstrip("/")
    if services.durable is not None:
        return services.durable.connection.ui_url
    return None


def console_routes(services: Services) -> list[BaseRoute]:
    """`GET /console` (the page), its static files, and its settings."""
    settings = services.settings

    async def redirect(request: Request) -> Response:
        # Relative asset URLs in the page need the trailing slash.
        return RedirectResponse(request.url.replace(path=request.url.path + "/"))

    async def index(_: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)

    async def config(_: Request) -> Response:
        return JSONResponse(
            {
                "workspace": settings.workspace_id,
                "durable": settings.durable,
                "namespace": settings.temporal_namespace,
                "temporalUi": temporal_ui_url(services),
                # The page fills in a task id to link to its workflow.
                "workflowId": workflow_id(settings.workspace_id, "{taskId}"),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def steps(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        headers = {"Cache-Control": "no-store"}
        not_found = JSONResponse({"error": "task not found"}, status_code=404, headers=headers)
        if len(task_id) > _MAX_TASK_ID:
            return not_found
        tasks = services.stores.tasks
        # The caller's own scope, as GetTask reads it: another principal's task is not found.
        context = DefaultServerCallContextBuilder().build(request)
        try:
            if await tasks.get(task_id, context) is None:
                return not_found
            with refusing(tasks.health):
                journal = await tasks.steps.journal(task_id)
        except StoreUnavailable:
            return JSONResponse(
                {"error": "the task store is unavailable; try again"}, status_code=503, headers=headers
            )
        return JSONResponse(
            {
                "taskId": task_id,
                "steps": [
                    {
                        "turn": turn_of_artifact(task_id, entry.turn),
                        "seq": entry.seq,
                        "name": entry.name,
                        "recordedAt": entry.recorded_at.isoformat().replace("+00:00", "Z"),
                        # None: recorded before the journal kept who recorded and replayed.
                        "attempt": entry.attempt,
                        "replayedBy": list(entry.replayed_by) if entry.replayed_by is not None else None,
                    }
                    for entry in journal
                ],
            },
            headers=headers,
        )

    return [
        Route(PATH, redirect, methods=["GET"]),
        Mount(
            PATH,
            routes=[
                Route("/", index, methods=["GET"]),
                Route("/config", config, methods=["GET"]),
                Route("/tasks/{task_id}/steps", steps, methods=["GET"]),
                Mount("/static", _ConsoleFiles(directory=STATIC_DIR), name="console-static"),
            ],
        ),
    ]


def is_public(path: str) -> bool:
    """The page and its files: no task data, so no token needed to load them."""
    if ".." in path or "//" in path or "\\" in path:
        return False
    return path in (PATH, PATH + "/") or path.startswith(PATH + "/static/")


class PublicConsole:
    """Serves the console's public paths before authentication runs.

    Placed outside the auth middleware (whichever scheme it implements), so the
    page can load and ask for the token; every other path, /console/config
    included, goes through auth as before. Only the console's own routes are
    reachable from here, never the A2A ones.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.console = Router(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and is_public(scope["path"]):
            await self.console(scope, receive, send)
            return
        await self.app(scope, receive, send)
