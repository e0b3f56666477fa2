"""The dashboard's web app (Starlette): one static page, its JSON API, the login form.

Every API answer is JSON; one that fails carries ``{"error": "<one line>"}`` with 400 for a
bad name or id, 401/403 for a refused write, 404 for nothing found, 503 when Redis cannot be
used (unreachable, or the ACL user lacks a command). The page's JS draws everything from the
API with ``textContent`` (never as HTML), so a payload or reason cannot inject markup, and the
Content-Security-Policy allows scripts of this server only.

``/api/status`` is what ``redbatch status --json`` prints (a summary past 20 queues),
``?all=1`` what ``--all`` adds; ``/api/overview`` is the page's document, the summary by
default, every queue with ``?all=1``, the queues whose name holds a text with ``?q=TEXT``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redbatch.dashboard.security import SESSION_COOKIE, SESSION_TTL_S, Guard, origin_ok
from redbatch.dashboard.source import Source
from redbatch.errors import ConfigError, RedbatchError
from redbatch.protocol.keys import check_queue_name, check_request_id
from redbatch.transport.connection import acl_refusal, describe_error

STATIC = Path(__file__).resolve().parent / "static"
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    # "same-origin", not "no-referrer": with that a browser sends "Origin: null" on a form post,
    # and the login form would fail the Origin check.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
# Hosts a browser may call a loopback-bound dashboard by: anything else is a DNS-rebinding
# page trying to read it.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
_MAX_IDS = 1000  # per replay request


class _SecurityHeaders:
    """Adds ``_HEADERS`` to every response, the static files' too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


async def _answer(url: str, work: Callable[[], dict[str, Any]]) -> JSONResponse:
    """Run blocking Redis ``work`` on the thread pool; its failure as one JSON line."""
    try:
        return JSONResponse(await run_in_threadpool(work))
    except ConfigError as exc:
        return _error(400, str(exc))
    except redis.ResponseError as exc:
        refused = acl_refusal(exc)
        return _error(503, refused or describe_error(url, exc))
    except redis.RedisError as exc:
        return _error(503, describe_error(url, exc))
    except RedbatchError as exc:
        return _error(503, str(exc))


def _flag(request: Request, name: str) -> bool:
    """``?all=1`` (or true/yes): a query flag."""
    return request.query_params.get(name, "").lower() in {"1", "true", "yes"}


class _Endpoints:
    """The routes' handlers, for one Redis (``url``, shown redacted) and namespace."""

    def __init__(self, source: Source, guard: Guard, url: str, interval_s: float) -> None:
        self.source = source
        self.guard = guard
        self.url = url
        self.interval_s = interval_s

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def overview(self, request: Request) -> JSONResponse:
        every = _flag(request, "all")
        match = request.query_params.get("q") or None
        return await _answer(self.url, lambda: self.source.overview(every, match))

    async def status(self, request: Request) -> JSONResponse:
        every = _flag(request, "all")
        return await _answer(self.url, lambda: self.source.status(every))

    async def session(self, request: Request) -> JSONResponse:
        csrf = self.guard.csrf(request.cookies.get(SESSION_COOKIE))
        return JSONResponse(
            {
                "writable": self.guard.writable,
                "logged_in": csrf is not None,
                "csrf": csrf,
                "interval_ms": round(self.interval_s * 1000),
            }
        )

    async def find(self, request: Request) -> JSONResponse:
        request_id = request.path_params["request_id"]
        queue = request.query_params.get("queue") or None

        def work() -> dict[str, Any]:
            check_request_id(request_id)
            if queue is not None:
                check_queue_name(queue)
            return self.source.find(request_id, queue)

        return await _answer(self.url, work)

    async def dead_list(self, request: Request) -> JSONResponse:
        queue = request.path_params["queue"]
        try:
            limit = max(1, int(request.query_params.get("limit", "50")))
        except ValueError:
            return _error(400, "limit must be an integer")
        return await _answer(
            self.url, lambda: self.source.dead_letters(check_queue_name(queue), limit)
        )

    async def dead_show(self, request: Request) -> JSONResponse:
        queue, ident = request.path_params["queue"], request.path_params["ident"]

        def work() -> dict[str, Any]:
            found = self.source.dead_letter(check_queue_name(queue), ident)
            if not found["dead_letters"]:
                raise _NotFound(f"no dead letter {ident} in queue {queue}")
            return found

        try:
            return await _answer(self.url, work)
        except _NotFound as exc:
            return _error(404, str(exc))

    async def replay(self, request: Request) -> Response:
        return await self._write(request, self._replay)

    async def purge(self, request: Request) -> Response:
        return await self._write(request, lambda queue, body: self.source.purge(queue))

    def _replay(self, queue: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("all") is True:
            return self.source.replay(queue, None)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ConfigError('give {"ids": [dead entry or request ids]} or {"all": true}')
        if len(ids) > _MAX_IDS:
            raise ConfigError(f"at most {_MAX_IDS} ids per replay")
        return self.source.replay(queue, ids)

    async def _write(
        self, request: Request, work: Callable[[str, dict[str, Any]], dict[str, Any]]
    ) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        session = request.cookies.get(SESSION_COOKIE)
        refusal = self.guard.check_write(headers, session, request.url.scheme)
        if refusal is not None:
            return _error(refusal.status, refusal.reason)
        if not headers.get("content-type", "").startswith("application/json"):
            return _error(415, "send a JSON body (Content-Type: application/json)")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        queue = request.path_params["queue"]
        return await _answer(self.url, lambda: work(check_queue_name(queue), body))

    async def login_form(self, request: Request) -> Response:
        failed = request.query_params.get("failed") is not None
        return HTMLResponse(_login_page(self.guard.writable, failed))

    async def login(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not origin_ok(headers, request.url.scheme):
            return _error(403, "refused: the request comes from another site (Origin)")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        session = self.guard.login((form.get("token") or [""])[0].strip())
        if session is None:
            return RedirectResponse("/login?failed=1", status_code=303)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, session, max_age=SESSION_TTL_S, httponly=True, samesite="strict"
        )
        return response

    async def logout(self, request: Request) -> Response:
        self.guard.logout(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response


def create_app(
    source: Source, guard: Guard, *, url: str, interval_s: float, loopback: bool
) -> Starlette:
    """The app for one Redis (``url``) and namespace (``source``); ``loopback``: it listens
    on a loopback address, so only loopback host names are answered."""
    e = _Endpoints(source, guard, url, interval_s)
    routes = [
        Route("/", e.page),
        Route("/api/overview", e.overview),
        Route("/api/status", e.status),
        Route("/api/session", e.session),
        Route("/api/requests/{request_id}", e.find),
        Route("/api/queues/{queue}/dead", e.dead_list),
        Route("/api/queues/{queue}/dead/replay", e.replay, methods=["POST"]),
        Route("/api/queues/{queue}/dead/purge", e.purge, methods=["POST"]),
        Route("/api/queues/{queue}/dead/{ident}", e.dead_show),
        Route("/login", e.login_form, methods=["GET"]),
        Route("/login", e.login, methods=["POST"]),
        Route("/logout", e.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(_SecurityHeaders)]
    if loopback:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    return Starlette(routes=routes, middleware=middleware)


class _NotFound(Exception):
    pass


def _login_page(writable: bool, failed: bool) -> str:
    if not writable:
        body = (
            "<p>This dashboard is read-only: it was started without <code>--allow-writes</code>."
            "</p>"
        )
    else:
        note = '<p class="error">Wrong token.</p>' if failed else ""
        body = (
            f'{note}<form method="post" action="/login">'
            '<label>Token <input type="password" name="token" id="token" autocomplete="off" '
            'autofocus></label> <button type="submit" id="login">Log in</button></form>'
            "<p>The token was printed when <code>redbatch dashboard --allow-writes</code> "
            "started (or is the content of its <code>--token-file</code>).</p>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>redbatch dashboard: log in</title>"
        '<link rel="stylesheet" href="/static/style.css"></head>'
        f'<body class="login"><h1>redbatch dashboard</h1>{body}'
        '<p><a href="/">back to the dashboard</a></p></body></html>'
    )
