"""The web application of ``serve``: a Starlette app over a ``Board``. Read-only routes only.

I/O: answers HTTP requests from the board's last observation (never from LXD); reads its
templates and static files from the package. ``/`` is the page (Jinja2, autoescaped),
``/api/v1/status`` its data as JSON, ``/metrics`` Prometheus text, ``/healthz`` whether the
observer is current, ``/static/`` the page's CSS and JavaScript (no file from the internet).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lxdgpu_reconcile.web.board import Board, Observer
from lxdgpu_reconcile.web.prometheus import metrics_text
from lxdgpu_reconcile.web.view import memory_text, notes

STATIC = Path(__file__).parent / "static"

#: Sent with every answer: only this server's own scripts and styles, no framing, no referrer.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

_templates = Environment(
    loader=PackageLoader("lxdgpu_reconcile.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.globals.update(notes=notes, memory=memory_text)


def render_page(data: dict[str, Any], *, title: str) -> str:
    """The page's HTML for ``data`` (``view.page_data``); everything from LXD is escaped."""
    return _templates.get_template("page.html").render(data=data, title=title)


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    board: Board,
    *,
    title: str = "GPU servers",
    observer: Observer | None = None,
    stale_after: float = 180.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ASGIApp:
    """The application over ``board``; with ``observer``, it is started and stopped with the
    application. ``/healthz`` fails when no observation finished in ``stale_after`` seconds."""
    cache: dict[str, tuple[int, bytes]] = {}

    def cached(kind: str, make: Callable[[dict[str, Any]], str]) -> bytes:
        """``make(data)`` of the current observation, made once per observation."""
        current = board.current
        key = id(current)
        if cache.get(kind, (None, b""))[0] != key:
            cache[kind] = (key, make(current.data).encode())
        return cache[kind][1]

    async def page(request: Request) -> Response:
        body = cached("page", lambda data: render_page(data, title=title))
        return HTMLResponse(body)

    async def api_status(request: Request) -> Response:
        body = cached("status", lambda data: json.dumps(data, sort_keys=True))
        return Response(body, media_type="application/json")

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(
            metrics_text(board.current, failures=board.failures),
            media_type="text/plain; version=0.0.4",
        )

    async def healthz(request: Request) -> Response:
        current = board.current
        finished = current.finished_at
        fresh = finished is not None and clock() - finished <= timedelta(seconds=stale_after)
        body = {
            "status": "ok" if fresh else "stale" if finished else "starting",
            "observed_at": current.data.get("observed_at"),
            "rounds": current.rounds,
        }
        return JSONResponse(body, status_code=200 if fresh else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if observer is not None:
            observer.start()
        try:
            yield
        finally:
            if observer is not None:
                observer.stop()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/v1/status", api_status),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    return _SecurityHeaders(app)
