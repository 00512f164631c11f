"""``create_app(settings)``: the FastAPI application (health, auth, events, sources, drones, media).

Every endpoint except ``GET /api/health`` needs a bearer token (``POST /api/auth/login``) or an ``X-API-Key``; health
answers everyone with coarse fields and adds the event delivery counters for authenticated callers. Roles are ordered
operator < reviewer < admin: operators read, acknowledge and dismiss, and abort / restart a drone's patrol (drone
crews are operators); reviewers also confirm; admins also list the configured principals. Errors always have the
``ErrorBody`` shape.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import ipaddress
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence

import numpy as np
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seawatch import __version__
from seawatch.errors import ConfigError, InputError, SeawatchError, StreamError, TelemetryError
from seawatch.service import audit
from seawatch.service.auth import Authenticator, LoginThrottle, Principal
from seawatch.service.calibration import CalibrationApplyIn, CalibrationFitIn
from seawatch.service.config import ServeConfig, root_path_problem
from seawatch.service.live import LiveHub
from seawatch.service.live_video import LiveVideo
from seawatch.service.live_view import LiveView
from seawatch.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, IncidentCounts, process_start_time_s
from seawatch.service.metrics import render as render_metrics
from seawatch.service.schemas import (
    AuditOut,
    ErrorBody,
    EventOut,
    EventPage,
    HealthOut,
    HoldOut,
    HoldReleaseIn,
    IgnoreAreaOut,
    IgnoreSpotIn,
    IgnoreSpotOut,
    LoginIn,
    RecordingsOut,
    ReportIn,
    ReviewIn,
    SearchParams,
    SourceOut,
    SpanOut,
    TokenOut,
    WhoAmI,
    to_ns,
)
from seawatch.service.report import ReportParams
from seawatch.service.snooze import SnoozeEndIn, SnoozeIn, snooze_answer
from seawatch.service.store import AreaExists, BBox, EventQuery, EventStore
from seawatch.vision.events import reason_problem
from seawatch.vision.schedule import rule_status

log = logging.getLogger(__name__)

SourceStatusFn = Callable[[], list[dict[str, Any]]]
StatsFn = Callable[[], dict[str, dict[str, Any] | None]]  # {"store_sink": StoreSink.stats(), "mqtt": ...}
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 416: "range_not_satisfiable", 422: "invalid_request", 429: "rate_limited"}
_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody} for c in (400, 401, 403, 404, 422)}

_bearer = HTTPBearer(auto_error=False, description="token from POST /api/auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key of a machine client")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error(status: int, message: str, details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": _CODES.get(status, "internal" if status >= 500 else "error"), "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


MAX_BODY_BYTES = 64 * 1024  # every body this API takes (login, reviews, ignore-spot) is JSON of a few KB


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


# The path prefix the URLs this request's answer hands out start with (snapshot_url, clip_url): "" at the host's root,
# "/seawatch" behind a proxy serving the service there (PublicRoot sets it per request)
_PUBLIC_ROOT: contextvars.ContextVar[str] = contextvars.ContextVar("seawatch_public_root", default="")


def _event_out(ev) -> EventOut:
    """An event as this request's answer serves it: its URLs under the service's public root (``PublicRoot``). Messages
    to everyone (the live feed, MQTT, webhooks) keep ``/api/...``, relative to the service's root."""
    return EventOut.from_event(ev, prefix=_PUBLIC_ROOT.get() + "/api")


class PublicRoot:
    """ASGI middleware, outermost: where clients reach the service, for the URLs its answers hand out, then the
    trusted proxies' ``X-Forwarded-For`` / ``X-Forwarded-Proto`` (uvicorn's ``ProxyHeadersMiddleware``, applied here
    rather than by uvicorn so that the proxy's own address is still known when its prefix header is judged).

    The root: ``service.root_path`` when set; else ``X-Forwarded-Prefix`` (``/seawatch``) from a trusted proxy (the
    connection's own address in ``service.trusted_proxies``; from anyone else the header is ignored, and a value that
    is not a plain path prefix too); else the ASGI ``root_path`` (the app mounted under a parent app); else "" (the
    host's root, as before).

    A proxy that strips the prefix sends ``/api/events``; one that passes it on (nginx's ``proxy_pass`` without a
    path) sends ``/seawatch/api/events``: a path under the root is routed without it (the ASGI ``root_path``, which
    Starlette's routing takes off), and the root itself (``/seawatch``) is redirected to ``/seawatch/``, the page
    whose relative URLs stay under the prefix. A path outside the root is routed as it is (the service reached
    directly, not through the proxy), so either kind of proxy, and none, work with the same configuration."""

    def __init__(self, app: ASGIApp, root_path: str, trusted: Sequence[str]) -> None:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        self.root_path = root_path
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted]
        self.app = ProxyHeadersMiddleware(app, trusted_hosts=list(trusted)) if trusted else app

    def _from_trusted_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        try:
            addr = ipaddress.ip_address(client[0]) if client else None
        except ValueError:  # a unix socket's path
            return False
        return addr is not None and any(addr in n for n in self.trusted)

    def _root(self, scope: Scope) -> str:
        if self.root_path:
            return self.root_path
        forwarded = Headers(scope=scope).get("x-forwarded-prefix")
        if forwarded is not None and self._from_trusted_proxy(scope):
            if root_path_problem(forwarded) is None:
                return forwarded.rstrip("/")
            log.debug("X-Forwarded-Prefix %r ignored: not a path prefix", forwarded[:80])
        return str(scope.get("root_path") or "").rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        root = self._root(scope)
        path = str(scope.get("path") or "")
        if root and path == root:  # the prefix without its slash: the page lives at root + "/"
            if scope["type"] == "http":
                query = scope.get("query_string", b"").decode("latin-1")
                await RedirectResponse(root + "/" + (f"?{query}" if query else ""), status_code=307)(scope, receive, send)
                return
            scope = dict(scope, path=root + "/")
        if root and path.startswith(root + "/") and scope.get("root_path") != root:
            scope = dict(scope, root_path=root)  # passed on unstripped: routed without the prefix
        token = _PUBLIC_ROOT.set(root)
        try:
            await self.app(scope, receive, send)
        finally:
            _PUBLIC_ROOT.reset(token)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before anything holds it whole. A declared
    Content-Length over the limit is answered at once (the app never runs); a streamed (chunked) body fails on the
    chunk that passes the limit, while FastAPI reads it, which it does before auth and validation."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared = int(Headers(scope=scope).get("content-length", ""))
        except ValueError:  # absent (chunked) or unreadable: counted as it arrives
            declared = 0
        if declared > self.max_bytes:
            exc = _BodyTooLarge(self.max_bytes)
            await _error(exc.status_code, exc.detail)(scope, receive, send)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)  # the app's handler answers it in the API's error shape
            return message

        await self.app(scope, receive_limited, send)


def _state(request: Request):
    return request.app.state


def principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    auth: Authenticator = request.app.state.auth
    who = None
    if bearer is not None:
        who = auth.verify_token(bearer.credentials)
    elif api_key:
        who = auth.check_api_key(api_key)
    if who is None:
        raise ApiError(401, "authentication required: a valid bearer token or X-API-Key", {"WWW-Authenticate": "Bearer"})
    return who


def require(role: str) -> Callable[..., Principal]:
    def dep(request: Request, who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.has(role):
            audit.record(request, "auth.forbidden", who, target=request.url.path, status=403,
                         details={"method": request.method, "needs": role})
            raise ApiError(403, f"{who.kind} {who.name!r} has role {who.role}; this needs {role} or above")
        return who

    return dep


def optional_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal | None:
    """Who the credentials name, or None (absent or refused: the caller is served as anonymous, never a 401)."""
    auth: Authenticator = request.app.state.auth
    if bearer is not None:
        return auth.verify_token(bearer.credentials)
    return auth.check_api_key(api_key) if api_key else None


Viewer = Annotated[Principal, Depends(require("viewer"))]  # reads only: wall displays, dashboards
Operator = Annotated[Principal, Depends(require("operator"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def _store(request: Request) -> EventStore:
    return request.app.state.store


Store = Annotated[EventStore, Depends(_store)]


def _audited(name: str, target: str | Callable[[dict[str, Any]], Any] | None = None,
             details: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
             when: Callable[[dict[str, Any]], bool] | None = None, status: int = 200) -> Callable[[Callable], Callable]:
    """Records the route's action in the security audit log (``service/audit.py``) when it ends: ``ok`` with
    ``status``, or ``refused`` / ``failed`` with the status of the error that ended it. ``target``: the path parameter
    naming what it acts on (or a function of the route's arguments); ``details(arguments)``: what of the request is
    kept (never a secret: see ``audit.clean_details``); ``when(arguments)`` False: nothing recorded. The route adds
    what it learnt with :func:`_audit_add`. FastAPI sees the route's own signature (``functools.wraps``)."""
    def wrap(fn: Callable) -> Callable:
        def begin(kwargs: dict[str, Any]) -> audit.action:
            request = kwargs.get("request")
            act = audit.action(request, name, kwargs.get("who"), enabled=when(kwargs) if when else True)
            act.status = status
            try:
                act.target = (target(kwargs) if callable(target) else kwargs.get(target, "")) if target else ""
                if details is not None:
                    act.details.update(details(kwargs))
            except Exception:  # noqa: BLE001 - what is kept of a request never fails it
                log.exception("audit: the details of %s could not be read", name)
            if request is not None:
                request.state.audit = act
            return act

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with begin(kwargs):
                    return await fn(*args, **kwargs)
            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with begin(kwargs):
                return fn(*args, **kwargs)
        return run
    return wrap


def _audit_add(request: Request, **details: Any) -> None:
    """Adds to the audit entry of this request's action (``_audited``) what the route learnt (an id made, a count)."""
    act = getattr(request.state, "audit", None)
    if act is not None:
        act.details.update(details)


def _body_fields(*names: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``details`` for ``_audited``: these fields of the route's ``body`` (absent body: none)."""
    def get(kwargs: dict[str, Any]) -> dict[str, Any]:
        body = kwargs.get("body")
        return {} if body is None else {n: getattr(body, n, None) for n in names}
    return get


def _search_filters(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``details`` of an export: the search's filters as given (no paging)."""
    params = kwargs.get("params")
    if params is None:
        return {}
    return {"filters": params.model_dump(mode="json", exclude_defaults=True, exclude={"cursor", "limit"})}


def _media_file(media_dir: Path, rel: str) -> Path:
    """The file ``rel`` inside ``media_dir``; anything resolving outside it (.., absolute, links) is not found."""
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
        raise ApiError(404, "no such media file")
    root = media_dir.resolve()
    try:
        path = (root / rel).resolve()
        found = path.is_relative_to(root) and path.is_file()
    except (OSError, ValueError):  # a name the file system refuses (too long, ...) names no file either
        found = False
    if not found:
        raise ApiError(404, "no such media file")
    return path


# ---- routers ------------------------------------------------------------------------------------------------
health = APIRouter(tags=["health"])
auth_router = APIRouter(prefix="/auth", tags=["auth"], responses=_ERRORS)
events = APIRouter(prefix="/events", tags=["events"], responses=_ERRORS)
sources = APIRouter(prefix="/sources", tags=["sources"], responses=_ERRORS)
drones_router = APIRouter(prefix="/drones", tags=["sources"], responses=_ERRORS)
ais_router = APIRouter(prefix="/ais", tags=["sources"], responses=_ERRORS)
map_router = APIRouter(prefix="/map", tags=["sources"], responses=_ERRORS)
media = APIRouter(prefix="/media", tags=["media"], responses=_ERRORS)
admin = APIRouter(prefix="/admin", tags=["admin"], responses=_ERRORS)
export = APIRouter(prefix="/export", tags=["export"], responses=_ERRORS)
live_router = APIRouter(tags=["live"])
report_router = APIRouter(prefix="/report", tags=["report"], responses=_ERRORS)


class DeliveryStats(BaseModel):
    """Where events went since start: the store sink's counters and the MQTT publisher's (None when not in use)."""

    store_sink: dict[str, int] | None = Field(None, description="stored, errors (failed writes), pending (queued for a "
                                                                "retry), dropped (lost: the retry queue was full)")
    mqtt: dict[str, Any] | None = Field(None, description="connected, dropped and dropped_retained (messages not queued)")
    webhooks: list[dict[str, Any]] | None = Field(None, description="per endpoint (when configured): name, delivered, pending, "
                                           "dropped (queue full), rejected (refused by the endpoint), failed_attempts "
                                           "(retried), last_error, last_delivered_ns")
    email: dict[str, Any] | None = Field(None, description="the e-mail notifier (when configured): server, sent, failed "
                                         "(attempts retried), rejected (refused by the server), dropped (queue full), "
                                         "pending, held (by the rate limit, for a summary), last_error, last_sent_ns, "
                                         "per recipient sent / held")


class HealthDetailOut(HealthOut):
    """Health; ``delivery`` and ``retention`` only for authenticated callers (an anonymous probe sees the coarse
    fields)."""

    delivery: DeliveryStats | None = None
    audit: dict[str, int] | None = Field(None, description="the security audit log since start: entries `written` and "
                                                           "`failures` (entries that could not be stored; each is in the "
                                                           "service log at ERROR instead)")
    retention: dict[str, Any] | None = Field(
        None, description="media disk (free bytes, threshold, low), the last retention sweep and disk guard run (what "
                          "they deleted), totals since start, held event counts, the policy (ages per severity, per "
                          "source, false detections) and the upgrade grace (events kept until when; service.retention)")
    recording: list[dict[str, Any]] | None = Field(
        None, description="the cameras whose recording fails now (`source_id`, `reason`, `since_ns`, `failures`): "
                          "their video is not kept for clips and evidence; absent when every camera records (or has "
                          "recording off)")


@health.get("/health", response_model=HealthDetailOut, response_model_exclude_none=True,
            summary="liveness and database check (no auth); event delivery counters for authenticated callers",
            description="`status` is `degraded` when the database check fails, the store sink holds events it "
                        "could not write yet (pending), a webhook endpoint or the mail server is failing with messages waiting, the "
                        "media disk stays below its free-space threshold after "
                        "the disk guard ran, or a camera's recording fails. With credentials, `delivery` adds the store sink's, the "
                        "MQTT publisher's, each webhook's and the e-mail notifier's counters (pending, dropped, ...), so "
                        "lost or queued events show, "
                        "`retention` the disk, the last sweep, deleted and held counts, and `recording` the cameras "
                        "whose recording fails and why.")
def get_health(request: Request, store: Store, who: Annotated[Principal | None, Depends(optional_principal)]) -> HealthDetailOut:
    try:
        store.count()
        db = "ok"
    except Exception:  # noqa: BLE001 - reported, not raised
        log.exception("health: database check failed")
        db = "error"
    try:
        stats = request.app.state.stats() or {}
    except Exception:  # noqa: BLE001 - a counter that fails must not take the health check with it
        log.exception("health: delivery counters failed")
        stats = {}
    sink = stats.get("store_sink") or {}
    worker = getattr(request.app.state, "retention", None)
    # a webhook endpoint failing with messages waiting: alerts are not reaching the control room
    hooks_failing = any(w.get("pending") and w.get("last_error") for w in stats.get("webhooks") or [])
    mail = stats.get("email") or {}  # likewise the mail server: incidents are not reaching the duty officer
    hooks_failing = hooks_failing or bool(mail.get("pending") and mail.get("last_error"))
    try:  # cameras whose recording fails: analysed, but no video kept for their clips and evidence
        rec_failing = [{"source_id": d.get("source_id"), **{k: (d.get("recording") or {}).get(k)
                                                           for k in ("reason", "since_ns", "failures")}}
                       for d in request.app.state.source_status() if (d.get("recording") or {}).get("state") == "failing"]
    except Exception:  # noqa: BLE001 - a status that fails must not take the health check with it
        log.exception("health: the cameras' recording status failed")
        rec_failing = []
    ok = (db == "ok" and not sink.get("pending") and not hooks_failing and not (worker is not None and worker.disk_low)
          and not rec_failing)
    out = HealthDetailOut(status="ok" if ok else "degraded", version=__version__, database=db)
    if who is not None:
        out.delivery = DeliveryStats(store_sink=stats.get("store_sink"), mqtt=stats.get("mqtt"),
                                     webhooks=stats.get("webhooks") or None)
        trail = getattr(request.app.state, "audit", None)
        if trail is not None:
            out.audit = {"written": trail.written, "failures": trail.failures}
        out.delivery.email = stats.get("email")  # None: no e-mail configured
        out.recording = rec_failing or None
        try:
            out.retention = worker.status() if worker is not None else {"enabled": False}
        except Exception:  # noqa: BLE001 - reported, not raised
            log.exception("health: retention status failed")
            out.retention = {"enabled": True, "last_error": "status unavailable (logged)"}
    return out


@health.get("/metrics", response_class=Response, responses={**_ERRORS, 200: {"content": {"text/plain": {}}}},
            summary="the service's numbers for Prometheus (text exposition format 0.0.4; a viewer is enough)",
            description="Cameras (state, analysis rates, lag, time per frame, frames, reconnects, down since), "
                        "incidents stored since start and open now by type and severity, the store sink's, MQTT's "
                        "and each webhook's counters, the media disk and retention, drones (link, battery, armed), "
                        "AIS (messages, vessels, feeds), live viewers, build info and process start time: the numbers "
                        "of /api/health and /api/sources, read from the same place. No database query: a scrape "
                        "costs a few milliseconds. See service/README.md for the list and a scrape configuration.")
def get_metrics(request: Request, who: Viewer) -> Response:
    st = request.app.state
    return Response(render_metrics(st, st.incidents, __version__, st.started_s), media_type=METRICS_CONTENT_TYPE)


@auth_router.post("/login", response_model=TokenOut, responses={429: {"model": ErrorBody}}, summary="exchange a password for a bearer token")
def login(request: Request, body: Annotated[LoginIn, Body()]) -> TokenOut:
    st = request.app.state
    client = request.client.host if request.client else "unknown"
    # the attempt is reserved (counted as failed) before the slow password check: concurrent guesses cannot all
    # pass the throttle before the first of them has failed
    wait_s = st.throttle.begin(client)
    if wait_s > 0:
        _login_refused(request, body.username, 429, "too many failed logins from this address", f"address:{client}", wait_s)
        raise ApiError(429, f"too many failed logins from this address; retry in {wait_s:.0f} s", {"Retry-After": str(int(wait_s) + 1)})
    # and per user name, from every address together: guesses spread over many addresses (or behind one proxy that
    # rotates them) get no more tries at an account; the name's owner waits at most the window, never a lockout
    wait_s = st.user_throttle.begin(body.username)
    if wait_s > 0:
        log.warning("login for %s refused from %s: too many failed logins for this user name",
                    st.auth.logged_name(body.username), client)
        _login_refused(request, body.username, 429, "too many failed logins for this user name",
                       f"user:{body.username}", wait_s)
        raise ApiError(429, f"too many failed logins for this user; retry in {wait_s:.0f} s", {"Retry-After": str(int(wait_s) + 1)})
    who = st.auth.check_password(body.username, body.password)
    if who is None:
        log.warning("failed login for %s from %s", st.auth.logged_name(body.username), client)
        _login_refused(request, body.username, 401, "wrong user name or password")
        raise ApiError(401, "wrong user name or password")
    st.throttle.succeeded(client)
    st.user_throttle.succeeded(body.username)
    token, exp = st.auth.issue_token(who)
    audit.record(request, "auth.login", who, target=who.name, details={"expires_at_s": round(exp)})
    return TokenOut(access_token=token, expires_at_s=exp, role=who.role)


def _login_refused(request: Request, username: str, status: int, reason: str, once_key: str | None = None,
                   window_s: float = 0.0) -> None:
    """A refused log-in in the audit log (``auth.login_failed``): the user name when it is a configured user's (an
    unknown name is not repeated: it is sometimes a password typed in the wrong box), never the password. A throttled
    attempt (429, ``once_key``) is recorded once per throttle window: repeating it costs the caller nothing."""
    st = request.app.state
    if once_key is not None and not st.audit.first_in_window(once_key, max(1.0, window_s)):
        return
    known = any(u.name == username for u in st.settings.auth.users)
    audit.record(request, "auth.login_failed", None, actor=username if known else "", target=username if known else "",
                 status=status, details={"reason": reason, "user_known": known})


@auth_router.post("/logout", status_code=204, response_class=Response,
                  summary="end the bearer token now (a log-out), not at its expiry")
@_audited("auth.logout", target=lambda k: k["who"].name, status=204)
def logout(request: Request, who: Viewer,
           bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Response:
    if bearer is None:  # an API key is ended by removing it from the configuration
        raise ApiError(422, "log-out ends a bearer token; an API key is revoked by removing it from auth.api_keys")
    request.app.state.auth.revoke(bearer.credentials)
    return Response(status_code=204)


@auth_router.get("/me", response_model=WhoAmI, summary="who the credentials belong to")
def me(who: Viewer) -> WhoAmI:
    return WhoAmI(name=who.name, role=who.role, kind=who.kind)


@events.get("", response_model=EventPage, summary="search events (typed filters, cursor pagination)")
def search_events(request: Request, store: Store, who: Viewer, params: Annotated[SearchParams, Query()]) -> EventPage:
    max_page = request.app.state.settings.service.max_page_size
    if params.limit > max_page:
        raise ApiError(400, f"limit {params.limit} exceeds the largest page, {max_page}")
    page = store.search(_query(params, request.app.state.settings))
    held = store.with_holds([e.id for e in page.events])
    return EventPage(events=[_event_out(e).model_copy(update={"held": e.id in held}) for e in page.events],
                     next_cursor=page.next_cursor)


def _drone_sources(settings: Any, drone_ids: Sequence[str]) -> tuple[str, ...]:
    """The source ids of a drone's events: the drone itself (its drone_link_lost incidents) and its cameras."""
    if not drone_ids:
        return ()
    wanted = set(drone_ids)
    out = list(drone_ids)
    for s in getattr(settings, "sources", ()):
        d = settings.drone_of(s.id)
        if d is not None and d.id in wanted:
            out.append(s.id)
    out += [d.video_source for d in getattr(settings, "drones", ()) if d.id in wanted and d.video_source]
    return tuple(dict.fromkeys(out))


def _query(params: SearchParams, settings: Any = None, **over: Any) -> EventQuery:
    """API filters -> the store's typed query (explicit conversion between the two shapes); ``settings`` resolves
    ``drone`` to source ids."""
    bbox = None
    if params.min_lat is not None:
        bbox = BBox(params.min_lat, params.min_lon, params.max_lat, params.max_lon)  # type: ignore[arg-type]
    fields: dict[str, Any] = dict(
        types=tuple(params.type), severities=tuple(params.severity), min_severity=params.min_severity,
        statuses=tuple(params.status), zone_ids=tuple(params.zone),
        source_ids=tuple(dict.fromkeys((*params.source, *_drone_sources(settings, params.drone)))),
        start_from_ns=to_ns(params.start_from) if params.start_from else None,
        start_to_ns=to_ns(params.start_to) if params.start_to else None,
        active_from_ns=to_ns(params.active_from) if params.active_from else None, open_only=params.open, bbox=bbox, has_geo=params.has_geo, mmsi=params.mmsi, vessel_name=params.vessel_name,
        hull_text=params.hull_text, text=params.q, sort=params.sort, limit=params.limit, cursor=params.cursor,
    )
    fields.update(params.geo_filters())  # polygon=, near_lat/near_lon/radius_m= (validated by SearchParams)
    fields.update(over)
    return EventQuery(**fields)


MAX_EXPORT = 10_000


def _export_events(store: EventStore, params: SearchParams, settings: Any) -> tuple[list, bool]:
    """Every match (in the requested sort) up to MAX_EXPORT; True when there were more."""
    out: list = []
    cursor = params.cursor
    while True:
        page = store.search(_query(params, settings, limit=min(1000, MAX_EXPORT - len(out)), cursor=cursor))
        out += page.events
        cursor = page.next_cursor
        if cursor is None:
            return out, False
        if len(out) >= MAX_EXPORT:
            return out, True


@export.get("/events.geojson", summary="the events a search finds, as a GeoJSON FeatureCollection (limit/cursor ignored)",
            response_class=JSONResponse, responses={200: {"content": {"application/geo+json": {"schema": {"type": "object"}}}}})
@_audited("export.geojson", details=_search_filters)
def export_geojson(request: Request, store: Store, who: Viewer, params: Annotated[SearchParams, Query()]) -> JSONResponse:
    from seawatch.service.export import to_geojson

    evs, truncated = _export_events(store, params.model_copy(update={"cursor": None}), request.app.state.settings)
    _audit_add(request, events=len(evs), truncated=truncated)
    return JSONResponse(to_geojson(evs, truncated), media_type="application/geo+json",
                        headers={"Content-Disposition": 'attachment; filename="seawatch-events.geojson"'})


@export.get("/events.kml", summary="the located events a search finds, as KML 2.2 Placemarks", response_class=Response,
            responses={200: {"content": {"application/vnd.google-earth.kml+xml": {"schema": {"type": "string"}}}}})
@_audited("export.kml", details=_search_filters)
def export_kml(request: Request, store: Store, who: Viewer, params: Annotated[SearchParams, Query()]) -> Response:
    from seawatch.service.export import to_kml

    evs, truncated = _export_events(store, params.model_copy(update={"cursor": None}), request.app.state.settings)
    _audit_add(request, events=len(evs), truncated=truncated)
    return Response(to_kml(evs), media_type="application/vnd.google-earth.kml+xml",
                    headers={"Content-Disposition": 'attachment; filename="seawatch-events.kml"',
                             "X-Seawatch-Truncated": "true" if truncated else "false"})


@export.get("/events.csv", summary="the events a search finds, as CSV for a spreadsheet (limit/cursor ignored)",
            response_class=Response, responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
@_audited("export.csv", details=_search_filters)
def export_csv(request: Request, store: Store, who: Viewer, params: Annotated[SearchParams, Query()]) -> Response:
    from seawatch.service.export import to_csv

    evs, truncated = _export_events(store, params.model_copy(update={"cursor": None}), request.app.state.settings)
    _audit_add(request, events=len(evs), truncated=truncated)
    return Response(to_csv(evs, store.with_holds([e.id for e in evs])).encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="seawatch-events.csv"',
                             "X-Seawatch-Truncated": "true" if truncated else "false"})


@report_router.get("", summary="a shift / period report: incidents counted by type x severity, camera, review status, "
                                "hour and day (local to `tz`); response times; the confirmed, high / critical and held "
                                "ones listed")
def get_report(request: Request, store: Store, who: Viewer, params: Annotated[ReportParams, Query()]) -> dict[str, Any]:
    from seawatch.service.report import build_report, source_drones

    settings = request.app.state.settings
    start_ns, end_ns = to_ns(params.start_from), to_ns(params.start_to)
    out = build_report(store, _query(params.search_params(), settings), start_ns, end_ns, list_limit=params.list_limit,
                       drones=source_drones(settings), tz=params.tz)
    return {**out, "filters": params.filters(), "generated_ns": time.time_ns(),
            "generated_by": {"name": who.name, "role": who.role, "kind": who.kind}}


def _get_event(store: EventStore, event_id: str):
    if len(event_id) > 64:
        raise ApiError(404, "no such event")
    ev = store.get(event_id)
    if ev is None:
        raise ApiError(404, f"no event {event_id!r}")
    return ev


@events.get("/{event_id}", response_model=EventOut, summary="one event with its audit trail")
def get_event(event_id: str, store: Store, who: Viewer) -> EventOut:
    ev = _get_event(store, event_id)
    return _event_out(ev).model_copy(update={"held": bool(store.with_holds([event_id]))})


@events.get("/{event_id}/audit", response_model=list[AuditOut], summary="who reviewed the event, when, as what")
def get_audit(event_id: str, store: Store, who: Viewer) -> list[AuditOut]:
    _get_event(store, event_id)
    return [AuditOut(**a.to_dict()) for a in store.audit(event_id)]


def _review(store: EventStore, live: LiveHub, event_id: str, status: str, who: Principal, body: ReviewIn | None) -> EventOut:
    current = _get_event(store, event_id)
    if current.review_status == "confirmed" and status != "confirmed" and not who.has("reviewer"):
        # a reviewer's verdict is evidence (and training data: `seawatch reviews export`): an operator cannot undo it
        raise ApiError(409, f"event {event_id} was confirmed by a reviewer; only a reviewer can change its status")
    if body is not None and (why := reason_problem(status, body.reason)) is not None:
        raise ApiError(422, why)
    ev = store.review(event_id, status, who.name, who.kind, body.note if body else "", reason=body.reason if body else "")
    log.info("event %s %s by %s %s", event_id, status, who.kind, who.name)
    live.publish_event(ev, kind="review")  # after the commit, like every publication
    return _event_out(ev)


@events.post("/{event_id}/acknowledge", response_model=EventOut, summary="operator: seen and being handled")
@_audited("review.acknowledge", target="event_id", details=_body_fields("note", "reason"))
def acknowledge(event_id: str, request: Request, store: Store, who: Operator, body: Annotated[ReviewIn | None, Body()] = None) -> EventOut:
    return _review(store, request.app.state.live, event_id, "acknowledged", who, body)


@events.post("/{event_id}/dismiss", response_model=EventOut, summary="operator: false alarm / nothing to do")
@_audited("review.dismiss", target="event_id", details=_body_fields("note", "reason"))
def dismiss(event_id: str, request: Request, store: Store, who: Operator, body: Annotated[ReviewIn | None, Body()] = None) -> EventOut:
    return _review(store, request.app.state.live, event_id, "dismissed", who, body)


@events.post("/{event_id}/confirm", response_model=EventOut, summary="reviewer: a real incident (evidence)")
@_audited("review.confirm", target="event_id", details=_body_fields("note", "reason"))
def confirm(event_id: str, request: Request, store: Store, who: Reviewer, body: Annotated[ReviewIn | None, Body()] = None) -> EventOut:
    return _review(store, request.app.state.live, event_id, "confirmed", who, body)


@events.post("/{event_id}/ignore-spot", response_model=IgnoreSpotOut, status_code=201,
             responses={409: {"model": ErrorBody}},
             summary="reviewer: dismiss a fixed false alarm and drop detections of its labels at that spot of its camera from now on")
@_audited("ignore_area.add", target="event_id", details=_body_fields("note", "labels"))
def ignore_spot(event_id: str, request: Request, store: Store, who: Reviewer,
                body: Annotated[IgnoreSpotIn | None, Body()] = None) -> IgnoreSpotOut:
    """The event's subject box (its snapshot's) becomes an ignore area of its fixed camera around the box's anchor
    point (a vessel's waterline), stored and applied to the running pipeline at once; the event is dismissed with
    a note naming the area. 409 for a drone's or a panning camera's event, one without a subject box, or one that
    already made an area (remove that one first)."""
    from seawatch.vision.zones import ignore_area_around

    body = body or IgnoreSpotIn()
    st = request.app.state
    ev = _get_event(store, event_id)
    if (why := st.settings.ignore_refusal(ev.source_id)) is not None:
        raise ApiError(409, why)
    if ev.snapshot is None:
        raise ApiError(409, f"event {event_id} has no subject box to ignore")
    labels = list(dict.fromkeys(body.labels if body.labels is not None else ev.labels))  # each label once, in order
    if not labels or not set(labels) <= set(ev.labels):
        raise ApiError(422, f"labels must be among the event's labels {list(ev.labels)}")
    try:
        corners = np.array([ignore_area_around(ev.snapshot.xyxy_px, lab, body.margin_frac, body.min_margin_px) for lab in labels])
    except ValueError as exc:
        raise ApiError(409, f"event {event_id}: its subject box cannot make an area: {exc}") from None
    (x0, y0), (x1, y1) = corners.reshape(-1, 2).min(axis=0), corners.reshape(-1, 2).max(axis=0)
    polygon = [[float(x0), float(y0)], [float(x1), float(y0)], [float(x1), float(y1)], [float(x0), float(y1)]]
    try:
        area = store.add_ignore_area(ev.source_id, polygon, labels, who.name, body.note, event_id)
    except AreaExists as exc:
        raise ApiError(409, f"event {event_id} already made ignore area {exc.area.id} on {ev.source_id}; "
                            "remove that area first to make another") from None
    try:
        st.apply_ignore(ev.source_id, store.ignore_areas(ev.source_id))
    except SeawatchError as exc:
        store.remove_ignore_area(area.id)
        raise ApiError(409, f"the pipeline refused the area: {exc}") from None
    log.info("ignore area %d on %s (%s) from event %s by %s %s", area.id, ev.source_id, ",".join(labels), event_id, who.kind, who.name)
    _audit_add(request, source_id=ev.source_id, area_id=area.id, labels=labels)
    note = f"ignore area {area.id} added" + (f": {body.note}" if body.note else "")
    out = _review(store, st.live, event_id, "dismissed", who, ReviewIn(note=note, reason="false_detection"))
    return IgnoreSpotOut(area=IgnoreAreaOut(**area.to_dict()), event=out)


class HoldIn(BaseModel):
    """Why a reviewer holds an event (an investigation, a claim)."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000, description="why the event is held")


def _publish_hold(live: LiveHub, store: EventStore, ev) -> None:
    """A ``hold`` live message: the event with ``held`` (whether an active hold is left), after the commit, so that
    other desks' lists and open details follow a hold put on or lifted."""
    held = bool(store.with_holds([ev.id]))
    live.publish({"kind": "hold", "event": EventOut.from_event(ev).model_copy(update={"held": held}).model_dump(mode="json")})


@events.post("/{event_id}/hold", response_model=list[HoldOut],
             summary="reviewer: keep the event, its snapshot and clip from retention until the hold is lifted",
             description="Adds a `manual` hold (an evidence export adds `evidence_export`): retention never deletes an "
                         "event with an active hold nor its media. Answers the event's holds.")
@_audited("hold.add", target="event_id", details=_body_fields("note"))
def hold_event(event_id: str, request: Request, store: Store, who: Reviewer,
               body: Annotated[HoldIn | None, Body()] = None) -> list[dict[str, Any]]:
    ev = _get_event(store, event_id)
    try:
        store.hold(event_id, "manual", f"{who.kind}:{who.name}", (body or HoldIn()).note)
    except KeyError:
        raise ApiError(404, f"no event {event_id!r}") from None
    log.info("event %s held by %s %s", event_id, who.kind, who.name)
    _publish_hold(request.app.state.live, store, ev)  # other desks' open detail and list follow
    return store.holds(event_id)


@events.delete("/{event_id}/hold", response_model=list[HoldOut], responses={409: {"model": ErrorBody}},
               summary="reviewer: lift the event's reviewer holds (an evidence export's: admin, with a note)",
               description="Without `hold_id`, lifts every active `manual` hold of the event; with it, that one hold. "
                           "An `evidence_export` hold is lifted only by an admin, one at a time (`hold_id`) and with a "
                           "`note` saying why: the exported package can be checked against the stored original only "
                           "while it exists. A lifted hold stays listed (who lifted it, when, why); once no active "
                           "hold is left (and the event is not confirmed) retention treats the event like any other. "
                           "409 when there is no such active hold. Answers the event's holds.")
@_audited("hold.release", target="event_id", details=_body_fields("note", "hold_id"))
def release_hold(event_id: str, request: Request, store: Store, who: Reviewer,
                 body: Annotated[HoldReleaseIn | None, Body()] = None) -> list[dict[str, Any]]:
    body = body or HoldReleaseIn()
    ev = _get_event(store, event_id)
    holds = store.holds(event_id)
    reasons: tuple[str, ...] | None = None
    if body.hold_id is not None:
        h = next((x for x in holds if x["id"] == body.hold_id), None)
        if h is None:
            raise ApiError(404, f"event {event_id} has no hold {body.hold_id}")
        if not h["active"]:
            raise ApiError(409, f"hold {body.hold_id} of event {event_id} was lifted already (by {h['released_by']})")
        if h["reason"] == "evidence_export":
            if not who.has("admin"):
                raise ApiError(403, "only an admin can lift an evidence export's hold (the exported package can be "
                                    "checked against the stored original only while it exists)")
            if not body.note.strip():
                raise ApiError(422, "lifting an evidence export's hold needs a note saying why")
    else:
        reasons = ("manual",)
        if not any(x["active"] and x["reason"] == "manual" for x in holds):
            exports = sum(1 for x in holds if x["active"] and x["reason"] == "evidence_export")
            raise ApiError(409, f"event {event_id} has no active reviewer's hold to lift" + (
                f"; its {exports} evidence export hold(s) are lifted by an admin, one at a time (hold_id) with a note"
                if exports else ""))
    try:
        lifted = store.release_holds(event_id, f"{who.kind}:{who.name}", body.note, hold_id=body.hold_id, reasons=reasons)
    except KeyError:
        raise ApiError(404, f"no event {event_id!r}") from None
    if not lifted:
        raise ApiError(409, f"the hold(s) of event {event_id} were lifted meanwhile by another desk")
    _audit_add(request, lifted=[{"id": h["id"], "reason": h["reason"]} for h in lifted])
    log.info("event %s: %s hold(s) %s lifted by %s %s%s", event_id, "/".join(sorted({h["reason"] for h in lifted})),
             ",".join(str(h["id"]) for h in lifted), who.kind, who.name, f": {body.note}" if body.note else "")
    _publish_hold(request.app.state.live, store, ev)
    return store.holds(event_id)


@events.get("/{event_id}/holds", response_model=list[HoldOut],
            summary="the event's holds (evidence exports, reviewers' holds, lifted ones too): who, when, why")
def get_holds(event_id: str, store: Store, who: Viewer) -> list[dict[str, Any]]:
    _get_event(store, event_id)
    return store.holds(event_id)


@events.get("/{event_id}/snapshot", response_class=FileResponse, summary="JPEG of the best view (HTTP Range supported)")
def get_snapshot(event_id: str, request: Request, store: Store, who: Viewer) -> FileResponse:
    ev = _get_event(store, event_id)
    if ev.snapshot is None or not ev.snapshot.uri:
        raise ApiError(404, f"event {event_id} has no stored snapshot")
    path = _media_file(request.app.state.media_dir, ev.snapshot.uri)
    return FileResponse(path, media_type="image/jpeg")


CLIP_WAIT_S = 15.0  # how long a clip request waits for a just-closed event's post-roll to be recorded
CLIP_POLL_S = 0.25  # while it waits, how often it looks again (the wait holds no worker thread)
CLIP_FUTURE_S = 3600  # a window ending further ahead than this is refused (422), not "not ready yet"


async def _get_clip_file(clips, source_id: str, start_ns: int, end_ns: int) -> Path:
    """The clip file of a window, waiting up to ``CLIP_WAIT_S`` for a post-roll still being recorded. The wait is
    spent in the event loop, not in a worker thread, and only when the window can be complete within it: a window
    ending further ahead is answered at once (ClipNotReady), so requests for future windows cannot tie up the API.
    Raises ApiError 422 for a live camera's window that ends more than ``CLIP_FUTURE_S`` from now (the recordings
    judge that: a replay's capture times are not wall-clock times, so its windows are never "ahead")."""
    import asyncio
    import time

    from seawatch.streams.recording import ClipNotReady

    deadline = time.monotonic() + CLIP_WAIT_S
    while True:
        try:
            return await run_in_threadpool(clips.get, source_id, start_ns, end_ns)
        except ClipNotReady as exc:
            if exc.retry_after_s > CLIP_FUTURE_S:  # a live camera's window far ahead of now: not a wait, a mistake
                raise ApiError(422, f"the window ends {exc.retry_after_s / 3600:.1f} h from now: clips are of "
                                    "recorded video") from None
            left_s = deadline - time.monotonic()
            if left_s <= 0 or exc.retry_after_s > left_s + CLIP_POLL_S:
                raise
            await asyncio.sleep(min(CLIP_POLL_S, left_s))


@events.get("/{event_id}/clip", response_class=FileResponse, summary="MP4 clip of the event window (HTTP Range supported)",
            description="Waits up to 15 s for a window whose end (post-roll) is still being recorded, then answers 409 "
                        "with Retry-After (at once when its end is further ahead). A clip with an outage in its window holds the video there is; "
                        "X-Clip-Coverage says `complete` or `partial` and X-Clip-Covered-Ns lists the covered "
                        "spans (`start-end` capture times, comma-separated).")
async def get_clip(event_id: str, request: Request, store: Store, who: Viewer) -> FileResponse:
    ev = await run_in_threadpool(_get_event, store, event_id)
    if ev.clip is None or ev.clip.end_ns is None:
        raise ApiError(404, f"event {event_id} has no closed clip window yet")
    return await _clip_response(request.app.state.clips, ev.clip.source_id, ev.clip.start_ns, ev.clip.end_ns,
                                f"no clip for event {event_id}")


async def _clip_response(clips, source_id: str, start_ns: int, end_ns: int, not_found: str,
                         filename: str | None = None) -> FileResponse:
    """The clip of a window (cut on demand, waiting up to ``CLIP_WAIT_S`` for its end) with its coverage headers:
    409 + Retry-After while its end is still being recorded, 404 (``not_found: why``) when nothing covers it."""
    from seawatch.streams.recording import ClipNotReady, read_clip_coverage

    try:
        path = await _get_clip_file(clips, source_id, start_ns, end_ns)
    except ClipNotReady as exc:
        raise ApiError(409, str(exc), headers={"Retry-After": str(max(1, round(exc.retry_after_s)))}) from None
    except (StreamError, InputError) as exc:
        raise ApiError(404, f"{not_found}: {exc}") from None
    except OSError as exc:  # the clips folder cannot be written (disk full, read-only): the video is there, not the clip
        raise ApiError(503, f"the clip could not be written: {exc.strerror or exc}") from None
    coverage = await run_in_threadpool(read_clip_coverage, path)
    headers = {}
    if coverage is not None:
        headers = {"X-Clip-Coverage": "partial" if coverage.partial else "complete",
                   "X-Clip-Covered-Ns": ",".join(f"{a}-{b}" for a, b in coverage.spans)}
        if coverage.first_ns is not None:
            headers["X-Clip-First-Ns"] = str(coverage.first_ns)
    return FileResponse(path, media_type="video/mp4", headers=headers, filename=filename)


@events.get("/{event_id}/evidence.zip", response_class=FileResponse,
            summary="reviewer: evidence package (event and audit JSON, snapshot, clip, manifest with SHA-256 sums)")
@_audited("export.evidence", target="event_id")
async def get_evidence(event_id: str, request: Request, store: Store, who: Reviewer) -> FileResponse:
    import tempfile

    from starlette.background import BackgroundTask

    from seawatch.service.export import drone_timeline, evidence_telemetry, evidence_zip, iso

    ev = await run_in_threadpool(_get_event, store, event_id)
    st = request.app.state
    # exported evidence is held before it is packed: retention never deletes it, nor its snapshot and clip
    await run_in_threadpool(store.hold, event_id, "evidence_export", f"{who.kind}:{who.name}")
    await run_in_threadpool(_publish_hold, st.live, store, ev)
    telemetry, why = evidence_telemetry(ev, st.media_dir, drone_timeline(getattr(st, "fleet", None), st.settings, ev.source_id))
    missing: dict[str, str] = {"telemetry.json": why} if telemetry is None else {}
    snapshot = None
    if ev.snapshot is not None and ev.snapshot.uri:
        try:
            snapshot = _media_file(st.media_dir, ev.snapshot.uri)
        except ApiError:
            missing["snapshot.jpg"] = "the stored snapshot file is gone"
    else:
        missing["snapshot.jpg"] = "the event has no snapshot"
    clip, notes = None, {}
    clip_end_ns = None if ev.clip is None else ev.clip.end_ns
    if ev.clip is not None and clip_end_ns is None:
        # an incident still going on (a fire burning for an hour): its video so far, from its pre-roll to the newest
        # recorded picture (at most one clip's length), said so in the manifest
        recorded = await run_in_threadpool(st.clips.recorded, ev.clip.source_id)
        newest = recorded.newest_ns
        if newest is None or newest <= ev.clip.start_ns:
            missing["clip.mp4"] = "the incident is still open and none of its video is recorded yet"
        else:
            clip_end_ns = min(newest, ev.clip.start_ns + MAX_RECORDING_CLIP_S * 1_000_000_000)
            notes["clip.mp4"] = (f"the incident is still open: the clip ends at {iso(clip_end_ns)}"
                                 + (" (the newest recorded picture)" if clip_end_ns == newest
                                    else f" ({MAX_RECORDING_CLIP_S // 60} min after its window starts)")
                                 + "; export again once it has ended for all of it")
    if ev.clip is None:
        missing["clip.mp4"] = "the event has no clip window"
    elif clip_end_ns is not None:
        from seawatch.streams.recording import ClipNotReady

        try:
            clip = await _get_clip_file(st.clips, ev.clip.source_id, ev.clip.start_ns, clip_end_ns)
        except ClipNotReady as exc:  # an export now would lack the clip for good: say so, and when to ask again
            raise ApiError(409, f"evidence of event {event_id} is not ready: {exc}",
                           headers={"Retry-After": str(max(1, round(exc.retry_after_s)))}) from None
        except (StreamError, InputError) as exc:
            missing["clip.mp4"] = f"no recording covers the window: {exc}"
        except OSError as exc:  # the clips folder cannot be written: the package goes out without it, saying why
            missing["clip.mp4"] = f"the clip could not be written: {exc.strerror or exc}"
    audit = [a.to_dict() for a in await run_in_threadpool(store.audit, event_id)]
    fd, tmp = tempfile.mkstemp(prefix="seawatch-evidence-", suffix=".zip")
    os.close(fd)
    try:
        await run_in_threadpool(evidence_zip, tmp, EventOut.from_event(ev).model_dump(mode="json"), audit, snapshot=snapshot,
                                clip=clip, missing=missing, exported_by=f"{who.kind}:{who.name}", version=__version__,
                                telemetry=telemetry, notes=notes)
    except BaseException:
        os.unlink(tmp)
        raise
    log.info("evidence of event %s exported by %s %s", event_id, who.kind, who.name)
    _audit_add(request, missing=sorted(missing), clip=clip is not None)
    return FileResponse(tmp, media_type="application/zip", filename=f"seawatch-evidence-{event_id}.zip",
                        background=BackgroundTask(os.unlink, tmp))


@media.get("/{rel_path:path}", response_class=FileResponse, summary="a file under the media folder (HTTP Range supported)")
def get_media(rel_path: str, request: Request, who: Viewer) -> FileResponse:
    return FileResponse(_media_file(request.app.state.media_dir, rel_path))


@sources.get("", response_model=list[SourceOut], summary="configured sources and their live status")
def list_sources(request: Request, who: Viewer) -> list[SourceOut]:
    return _sources(request.app.state)


def _sources(state) -> list[SourceOut]:
    """Cameras (``kind: camera``, with their surveyed position and view for the map), then drones and AIS."""
    live = {d["source_id"]: d for d in state.source_status()}
    from seawatch.service.calibration import calibration_view, in_force

    added: dict[str, list] = {}
    for a in state.store.ignore_areas():
        added.setdefault(a.source_id, []).append(a)
    operator_cals = state.store.calibrations_in_force()
    out = []
    for spec in state.settings.sources:
        d = dict(live.get(spec.id, {"source_id": spec.id, "state": "not_running"}))
        d.pop("url", None)  # even redacted, the URL is for admins' logs, not every operator's screen
        d["models"] = list(spec.models)
        d["kind"] = "camera"
        drone = state.settings.drone_of(spec.id)
        # the calibration in force: an operator's applied from the calibration page over the configured one (a
        # drone's camera has none to apply; one stored before it became one is not used)
        cal, d["calibration_origin"] = in_force(spec, operator_cals.get(spec.id) if drone is None else None)
        d["view"] = calibration_view(cal)
        d["areas"] = _camera_areas(spec, state.settings.zones, state.settings.site.timezone) + [
            _ignore_area_out(f"op-{a.id}", "operator", a, area_id=a.id, event_id=a.event_id, created_by=a.created_by)
            for a in added.get(spec.id, ())]
        d["zone_rules"] = _zone_rules(spec.id, state.settings)
        d["drone_id"] = getattr(drone, "id", None)
        sn = state.snoozes.get(spec.id) if state.snoozes is not None else None
        d["snooze"] = sn.as_dict() if sn is not None else None  # its alerts snoozed: who, until when, why
        out.append(SourceOut.model_validate(d))
    fleet = state.fleet
    if fleet is not None:
        out += [SourceOut.model_validate(d) for d in fleet.drones() + fleet.ais()]
    return out


def _camera_areas(spec, zones, site_tz: str = "UTC") -> list[dict[str, Any]]:
    """The pixel areas of a fixed camera, for drawing over its snapshots: its zones with a pixel polygon (the rules
    that apply there, and in ``rule_states`` each one's schedule and whether it is armed now), its water polygons
    and its ignore areas. Geo zones and panning cameras' water views are not listed (they have no fixed place in the
    picture; ``zone_rules`` lists every zone's rules)."""
    out: list[dict[str, Any]] = []
    now_ns = time.time_ns()
    for z in zones:
        if z.source == spec.id and z.polygon_px is not None:
            out.append({"kind": "zone", "id": z.id, "polygon_px": [list(p) for p in z.polygon_px],
                        "rules": [r.type for r in z.rules],
                        "rule_states": [rule_status(r, site_tz, now_ns) for r in z.rules]})
    for i, poly in enumerate(spec.water or ()):
        out.append({"kind": "water", "id": f"water-{i + 1}", "polygon_px": [list(p) for p in poly]})
    for i, area in enumerate(spec.ignore):
        out.append(_ignore_area_out(f"ignore-{i + 1}", "config", area))
    return out


def _zone_rules(source_id: str, settings) -> list[dict[str, Any]]:
    """Every rule of a camera's zones (pixel, geo or the whole frame), each with its zone id, its schedule (null:
    always armed), whether it is armed now and when that next changes (``seawatch.vision.schedule``)."""
    now_ns = time.time_ns()
    return [{"zone_id": z.id, **rule_status(r, settings.site.timezone, now_ns)}
            for z in settings.zones if z.source == source_id for r in z.rules]


def _ignore_area_out(listed_id: str, origin: str, area, **extra) -> dict[str, Any]:
    """One ignore area of a camera as listed: a configured one (``origin: config``) or one the review desk added
    (``operator``, with its row id, event and author in ``extra``); both have ``polygon_px``, ``labels``, ``note``."""
    return {"kind": "ignore", "id": listed_id, "origin": origin, "polygon_px": [list(p) for p in area.polygon_px], "labels": list(area.labels),
            "note": area.note, **extra}


@sources.get("/{source_id}/ignore-areas", response_model=list[IgnoreAreaOut],
             summary="ignore areas added from the review desk on this camera (the configured ones are in its areas)")
def list_ignore_areas(source_id: str, request: Request, store: Store, who: Viewer) -> list[IgnoreAreaOut]:
    _configured_source(request.app.state, source_id)
    return [IgnoreAreaOut(**a.to_dict()) for a in store.ignore_areas(source_id)]


@sources.delete("/{source_id}/ignore-areas/{area_id}", response_model=IgnoreAreaOut,
                summary="reviewer: remove an ignore area added from the review desk (detections there count again)")
@_audited("ignore_area.remove", target="source_id", details=lambda k: {"area_id": k["area_id"]})
def remove_ignore_area(source_id: str, area_id: int, request: Request, store: Store, who: Reviewer) -> IgnoreAreaOut:
    st = request.app.state
    _configured_source(st, source_id)
    # looked up among the camera's rows, not by id in SQL: any integer in the path is then a 404, never an overflow
    area = next((a for a in store.ignore_areas(source_id) if a.id == area_id), None)
    if area is None or store.remove_ignore_area(area_id) is None:
        raise ApiError(404, f"no ignore area {area_id} on source {source_id!r}")
    st.apply_ignore(source_id, store.ignore_areas(source_id))
    log.info("ignore area %d on %s removed by %s %s", area_id, source_id, who.kind, who.name)
    ev = store.get(area.event_id) if area.event_id else None
    if ev is not None and ev.review_status != "new":  # the event it came from keeps the whole story in its audit trail
        _review(store, st.live, ev.id, ev.review_status, who,
                ReviewIn(note=f"ignore area {area_id} removed", reason=ev.review_reason))  # still a false detection
    return IgnoreAreaOut(**area.to_dict())


@sources.get("/{source_id}/latest.jpg", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}},
             summary="the camera's newest analysed picture, with what is tracked in it (the live view)",
             description="JPEG of the newest frame the pipeline analysed for this camera (a drone's camera too), with "
                         "its tracked boxes (`label #track confidence`) unless `boxes=false`, scaled down to `width` "
                         "px when given. `X-Capture-Time-Ns` is the frame's capture time. 404 for an unknown camera "
                         "and before its first analysed frame. Not cached by browsers (a new picture each call).")
def latest_picture(source_id: str, request: Request, who: Viewer, boxes: bool = True,
                   width: int | None = Query(None, ge=64, le=3840, description="scale down to this width (px)")) -> Response:
    st = request.app.state
    _configured_source(st, source_id)
    got = st.live_view.jpeg(source_id, boxes, width)
    if got is None:
        raise ApiError(404, f"source {source_id!r} has no analysed picture yet")
    capture_ns, data = got
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Capture-Time-Ns": str(capture_ns)})


@sources.post("/{source_id}/calibration/fit", responses={422: {"model": ErrorBody}},
              summary="admin: fit a fixed camera's pan, tilt, roll and field of view to points marked in its picture",
              description="The calibration page's fit (`seawatch calibrate` over the API): `points` (up to 60) are "
                          "pixels of the full-size picture (`width_px` x `height_px`) with their surveyed positions, "
                          "`horizon_px` pixels on the sea horizon; the camera's position is the source's surveyed one "
                          "unless `camera` gives it; `hfov_deg` keeps a field of view (none: fitted); `fit_position` "
                          "moves the camera too. Answers the `calibration` section to paste into the source, each "
                          "point's residual, ground error and error when left out, where the fitted pose projects it "
                          "(`projected_px`), warnings, the fitted `view` for the map, and `current`: the same points' "
                          "ground errors under the calibration the camera runs with now. Nothing is saved. 422 for a "
                          "drone's camera (located from the drone's pose), too few points or points that cannot be fitted.")
def fit_calibration(source_id: str, request: Request, who: Admin, body: Annotated[CalibrationFitIn, Body()]) -> dict[str, Any]:
    from seawatch.service.calibration import fit_for_source

    st = request.app.state
    spec = _fixed_camera(st, source_id)
    row = st.store.calibration_in_force(source_id)
    current = None
    if row is not None:  # "better or worse than now": now is the operator's calibration when one is in force
        from seawatch.drone.config import CalibrationConfig

        current = CalibrationConfig.model_validate(row.calibration)
    try:
        return fit_for_source(spec, body, current)
    except InputError as exc:
        raise ApiError(422, str(exc)) from None


def _fixed_camera(state, source_id: str):
    """The configured fixed camera ``source_id`` (404 unknown, 422 a drone's camera)."""
    spec = _configured_source(state, source_id)
    if (why := state.settings.calibration_refusal(source_id)) is not None:
        raise ApiError(422, why)
    return spec


def _calibration_out(state, spec) -> dict[str, Any]:
    from seawatch.service.calibration import calibration_answer

    return calibration_answer(spec, state.store.calibration_history(spec.id))


@sources.get("/{source_id}/calibration", responses={422: {"model": ErrorBody}},
             summary="the calibration a fixed camera runs with: configured, or applied by an administrator",
             description="`origin`: `config` (the configuration file's), `operator` (applied with PUT: `applied_by`, "
                         "`applied_ns`, `note`, the fit's summary in `fit`, and `config_changed_since`: true when the "
                         "configured section was edited after it was applied; it stays in force all the same, "
                         "`config_matches`: the configured section now equals it) or null (no calibration). `view` "
                         "is the camera's view for the map; `configured` / `configured_view` the configuration's. "
                         "`history`: every calibration applied, newest first, each `in_force`, `superseded` or "
                         "`reverted` (with who reverted it, when). 422 for a drone's camera.")
def get_calibration(source_id: str, request: Request, who: Viewer) -> dict[str, Any]:
    st = request.app.state
    return _calibration_out(st, _fixed_camera(st, source_id))


@sources.put("/{source_id}/calibration", responses={422: {"model": ErrorBody}},
             summary="admin: apply a calibration to the running service (stored; in force until reverted)",
             description="Body: `calibration`, the section as the fit answers it (validated like the configuration "
                         "file's), an optional `note` and the fit's summary `fit`. The camera's events are located "
                         "with it from the next analysed frame, and after restarts, until `DELETE` reverts to the "
                         "configured one (the log says what to paste into the configuration to make it permanent). "
                         "Answers like GET. 422 for a drone's camera, a section the configuration would refuse, or "
                         "one for another picture size than the camera sends.")
@_audited("calibration.apply", target="source_id", details=_body_fields("note"))
def put_calibration(source_id: str, request: Request, who: Admin,
                    body: Annotated[CalibrationApplyIn, Body()]) -> dict[str, Any]:
    from seawatch.service.calibration import config_section_sha256, yaml_section

    st = request.app.state
    spec = _fixed_camera(st, source_id)
    cal = body.calibration
    try:
        cal.build()  # what the pipeline will build: refused here, before anything is stored
    except (SeawatchError, ValueError) as exc:
        raise ApiError(422, f"calibration: {exc}") from None
    latest = st.latest_frame(source_id)
    if latest is not None and cal.camera is not None:
        h, w = latest[1].shape[:2]
        if (cal.camera.width_px, cal.camera.height_px) != (w, h):
            raise ApiError(422, f"the calibration is for a {cal.camera.width_px}x{cal.camera.height_px} picture; camera "
                                f"{source_id!r} sends {w}x{h}: it would place every event wrong")
    with st.calibration_lock:  # stored and applied in one step: two administrators cannot leave them out of step
        row = st.store.add_calibration(source_id, cal.model_dump(mode="json"), f"{who.kind}:{who.name}", note=body.note,
                                       fit=body.fit.model_dump(mode="json") if body.fit else {},
                                       config_sha256=config_section_sha256(spec.calibration))
        try:
            st.apply_calibration(source_id, cal)
        except SeawatchError as exc:
            st.store.remove_calibration(row.id)
            raise ApiError(422, str(exc)) from None
    _audit_add(request, calibration_id=row.id)
    sv = cal.surveyed
    log.warning("source %s: calibration applied to the running service by %s %s (%s)%s; it is in force, over restarts, "
                "until reverted (DELETE /api/sources/%s/calibration). To make it permanent, put this under the source "
                "in the configuration:\n%s", source_id, who.kind, who.name,
                f"pan {sv.pan_deg:.2f}, tilt {sv.tilt_deg:.2f}, roll {sv.roll_deg:.2f} deg" if sv is not None else
                "ground control points", f", note {body.note!r}" if body.note else "", source_id, yaml_section(cal))
    return _calibration_out(st, spec)


@sources.delete("/{source_id}/calibration", responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
                summary="admin: revert to the configured calibration (the applied one is kept in the history)",
                description="The operator calibration in force is marked reverted (who, when) and the camera's events "
                            "are located with the configured calibration from the next analysed frame. Answers like "
                            "GET. 404 when no operator calibration is in force.")
@_audited("calibration.revert", target="source_id")
def revert_calibration(source_id: str, request: Request, who: Admin) -> dict[str, Any]:
    st = request.app.state
    spec = _fixed_camera(st, source_id)
    with st.calibration_lock:
        row = st.store.revert_calibration(source_id, f"{who.kind}:{who.name}")
        if row is None:
            raise ApiError(404, f"source {source_id!r} has no operator calibration in force: it runs with the configured one")
        _audit_add(request, calibration_id=row.id, applied_by=row.created_by)
        try:
            st.apply_calibration(source_id, None)
        except SeawatchError as exc:  # the configured one does not build (it did at start): say so, the row stays reverted
            log.error("source %s: reverting to the configured calibration failed: %s", source_id, exc)
            raise ApiError(409, f"reverted in the store, but the running service refused the configured calibration: {exc}") from None
    log.warning("source %s: calibration %d (applied by %s) reverted to the configured one by %s %s", source_id, row.id,
                row.created_by, who.kind, who.name)
    return _calibration_out(st, spec)


@sources.post("/{source_id}/view_reference", responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
              summary="admin: the camera's view now becomes its reference view (after re-aiming it on purpose)",
              description="The view check (camera_moved / camera_covered / camera_blurred incidents) compares a fixed "
                          "camera's picture with its reference view. After the camera was re-aimed on purpose, this "
                          "makes its newest analysed picture the reference (stored: a restart keeps it; without a "
                          "picture yet, one is learnt from its next stable minute) and ends its open view incidents. "
                          "Answers `learning`, `reference_origin`, `reference_ns`, `raised` and `ended` (incident "
                          "ids). 422 for a drone's camera or a camera whose view is not checked.")
@_audited("view_reference.reset", target="source_id")
def reset_view_reference(source_id: str, request: Request, who: Admin) -> dict[str, Any]:
    st = request.app.state
    _fixed_camera(st, source_id)
    reset = getattr(st, "reset_view_reference", None)
    if reset is None:
        raise ApiError(422, "no running pipeline: there is no view to take as the reference")
    try:
        out = reset(source_id)
    except KeyError:
        raise ApiError(422, f"source {source_id!r}: its view is not checked (view_check disabled, or a camera that "
                            "pans)") from None
    log.warning("source %s: view reference reset by %s %s", source_id, who.kind, who.name)
    return out


def _snoozes(state):
    if state.snoozes is None:
        raise ApiError(409, "snoozes are not available yet (the service is starting)")
    return state.snoozes


@sources.get("/{source_id}/snooze", summary="whether the camera's alerts are snoozed: by whom, until when, why",
             description="`snooze`: the snooze in force (`id`, `by`, `since_ns`, `until_ns`, `note`, `types`: empty "
                         "for every type) or null; `history`: the camera's last 20 snoozes, newest first (their "
                         "`source_snoozed` records: `end_ns`, `end_reason` expired / ended early / replaced, "
                         "`ended_by`, `end_note`); `max_s`: the longest snooze allowed.")
def get_snooze(source_id: str, request: Request, who: Viewer) -> dict[str, Any]:
    st = request.app.state
    _configured_source(st, source_id)
    return snooze_answer(_snoozes(st), st.store, source_id)


@sources.post("/{source_id}/snooze", responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
              summary="operator: snooze the camera's alerts for a while (still detected and stored, marked, no alarm)",
              description="Body: `minutes` from now or `until_ns` (UTC ns; in the future, at most "
                          "`source_alerts.snooze_max_s`, 12 h by default), `note` (why: required), `types` (the event "
                          "types snoozed; default every type, `source_offline` and the view check's included). Until "
                          "then the camera's new incidents are stored with their snapshot and clip as always but carry "
                          "`attributes.snoozed` (`by`, `since_ns`, `until_ns`, `note`, `snooze_id`): the UI sounds no "
                          "alarm for them, the wall's tile stays calm, webhooks do not send them (unless an endpoint "
                          "has `snoozed: true`), MQTT publishes them with the mark. A snooze in force is replaced. "
                          "The snooze is recorded as a `source_snoozed` incident of the camera (survives restarts). "
                          "Answers like GET. 404 unknown camera, 422 junk, a past end or one too far.")
@_audited("camera.snooze", target="source_id", details=_body_fields("minutes", "until_ns", "note", "types"))
def snooze_source(source_id: str, request: Request, who: Operator, body: Annotated[SnoozeIn, Body()]) -> dict[str, Any]:
    st = request.app.state
    _configured_source(st, source_id)
    book = _snoozes(st)
    now_ns = time.time_ns()
    try:
        until_ns = body.until(now_ns, book.max_s)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    book.snooze(source_id, f"{who.kind}:{who.name}", until_ns, body.note, body.types or (), now_ns)
    return snooze_answer(book, st.store, source_id)


@sources.delete("/{source_id}/snooze", responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
                summary="operator: end the camera's snooze early (its alerts alarm again at once)",
                description="Body (optional): `note`, why it ends early. The snooze's record ends now (`end_reason: "
                            "ended early`, `ended_by`, `end_note`). Answers like GET. 409 when the camera is not snoozed.")
@_audited("camera.snooze_end", target="source_id", details=_body_fields("note"))
def end_snooze(source_id: str, request: Request, who: Operator,
               body: Annotated[SnoozeEndIn | None, Body()] = None) -> dict[str, Any]:
    st = request.app.state
    _configured_source(st, source_id)
    book = _snoozes(st)
    if book.end(source_id, f"{who.kind}:{who.name}", (body or SnoozeEndIn()).note.strip()) is None:
        raise ApiError(409, f"source {source_id!r} is not snoozed")
    return snooze_answer(book, st.store, source_id)


MAX_RECORDING_CLIP_S = 1800  # the longest window of a camera's recording cut as one clip (a remux: seconds of work)


@sources.get("/{source_id}/recordings", response_model=RecordingsOut,
             summary="what is recorded of a camera: spans of video, oldest and newest picture, disk used",
             description="Spans of recorded video (finished segments, the one being written, the pre-event buffer) "
                         "inside `[start_ns, end_ns]` (both optional, UTC ns), joined across segment boundaries and "
                         "split where the camera was out. Any window inside a span plays with "
                         "`GET /api/sources/{id}/clip`.")
def list_recordings(source_id: str, request: Request, who: Viewer,
                    start_ns: int | None = Query(None, ge=0, description="window start (UTC ns)"),
                    end_ns: int | None = Query(None, ge=0, description="window end (UTC ns)")) -> RecordingsOut:
    st = request.app.state
    _configured_source(st, source_id)
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        raise ApiError(422, "end_ns is before start_ns")
    rec = st.clips.recorded(source_id)
    return RecordingsOut(source_id=source_id, recording=bool(st.settings.storage.recording.enabled),
                         spans=[SpanOut(start_ns=a, end_ns=b) for a, b in rec.within(start_ns, end_ns)],
                         oldest_ns=rec.oldest_ns, newest_ns=rec.newest_ns, segments=rec.segments, bytes=rec.bytes,
                         max_clip_s=MAX_RECORDING_CLIP_S)


def _window(start_ns: int, end_ns: int) -> None:
    if end_ns <= start_ns:
        raise ApiError(422, "the window is empty: end_ns must be after start_ns")
    if end_ns - start_ns > MAX_RECORDING_CLIP_S * 1_000_000_000:
        raise ApiError(422, f"the window is {(end_ns - start_ns) / 1e9:.0f} s long; at most {MAX_RECORDING_CLIP_S} s "
                            "are cut as one clip")


def _utc_name(ns: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@sources.get("/{source_id}/clip", response_class=FileResponse, responses={409: {"model": ErrorBody}},
             summary="MP4 of any window of a camera's recording (HTTP Range supported)",
             description="H.264 MP4 of `[start_ns, end_ns]` (UTC ns, at most 30 min), from the keyframe before the "
                         "start. Waits up to 15 s for a window whose end is still being recorded, then answers 409 "
                         "with Retry-After (at once when its end is further ahead; 422 when it is over an hour "
                         "ahead); 404 when no video was recorded in the window (camera out, deleted by "
                         "retention). `X-Clip-Coverage` (`complete`/`partial`) and `X-Clip-Covered-Ns` as for an "
                         "event's clip; `X-Clip-First-Ns` is the capture time of the clip's first picture (video time "
                         "0), so a player's position maps to a capture time. `download=true` names it as a download.")
@_audited("export.recording", target="source_id", when=lambda k: bool(k.get("download")),
          details=lambda k: {"start_ns": k["start_ns"], "end_ns": k["end_ns"]})
async def get_recording_clip(source_id: str, request: Request, who: Viewer,
                             start_ns: int = Query(ge=0, description="window start (UTC ns)"),
                             end_ns: int = Query(ge=0, description="window end (UTC ns)"),
                             download: bool = False) -> FileResponse:
    st = request.app.state
    _configured_source(st, source_id)
    _window(start_ns, end_ns)
    name = f"seawatch-{source_id}-{_utc_name(start_ns)}-{max(1, round((end_ns - start_ns) / 1e9))}s.mp4"
    return await _clip_response(st.clips, source_id, start_ns, end_ns, f"no recording of {source_id} in that window",
                                filename=name if download else None)


@events.post("", response_model=EventOut, status_code=201, responses={409: {"model": ErrorBody}},
             summary="report an event seen in a camera's recording (a fire the detector missed, a boat on the video)",
             description="Makes an ended incident of `type` on the camera over `[start_ns, end_ns]` (its clip window, "
                         "at most 30 min), with the recorded picture nearest `at_ns` as its snapshot and, with "
                         "`point_px`, a position located like the detector's (the camera's calibration, a drone's "
                         "pose at that time). It is stored, published (live feed, MQTT, webhooks) and acknowledged "
                         "by the reporter with the note. 404 when nothing was recorded near `at_ns`.")
@_audited("event.report", target=lambda k: k["body"].source, status=201,
          details=_body_fields("source", "type", "severity", "label", "start_ns", "end_ns", "at_ns", "note"))
async def report_event(request: Request, who: Operator, body: Annotated[ReportIn, Body()]) -> EventOut:
    st = request.app.state
    _configured_source(st, body.source)
    _window(body.start_ns, body.end_ns)
    at_ns = body.at_ns if body.at_ns is not None else (body.start_ns + body.end_ns) // 2
    try:
        capture_ns, image = await run_in_threadpool(st.clips.picture_at, body.source, at_ns)
    except (StreamError, InputError) as exc:
        raise ApiError(404, f"nothing to report from: {exc}") from None
    ev = await run_in_threadpool(_reported_event, st, body, who, capture_ns, image)
    try:
        await run_in_threadpool(st.report, ev)
    except SeawatchError as exc:
        raise ApiError(503, f"the report was not stored: {exc}") from None
    stored = await run_in_threadpool(st.store.get, ev.id)
    if stored is None:
        raise ApiError(503, "the report waits for the event store (it is retried); look for it shortly")
    log.info("event %s (%s on %s) reported by %s %s", ev.id, ev.type, ev.source_id, who.kind, who.name)
    request.state.audit.target = ev.id
    note = "reported" + (f": {body.note}" if body.note else "")
    return await run_in_threadpool(_review, st.store, st.live, ev.id, "acknowledged", who, ReviewIn(note=note))


def _reported_event(st, body: ReportIn, who: Principal, capture_ns: int, image: np.ndarray):
    """The event a person reports: its subject box (the given box, a box around the point, else the whole picture),
    its position from the point through the source's locator at the picture's time."""
    import uuid

    from seawatch.vision.events import ClipRef, Event, Snapshot

    h, w = image.shape[:2]
    for name, v in (("point_px", body.point_px), ("box_px", body.box_px)):
        if v is not None and (max(v[0::2]) > w or max(v[1::2]) > h):
            raise ApiError(422, f"{name} {v} lies outside the {w}x{h} picture")
    if body.box_px is not None:
        box = tuple(float(v) for v in body.box_px)
    elif body.point_px is not None:
        r = max(8.0, 0.03 * max(w, h))
        x, y = body.point_px
        box = (max(0.0, x - r), max(0.0, y - r), min(float(w), x + r), min(float(h), y + r))
    else:
        box = (0.0, 0.0, float(w), float(h))
    attributes: dict[str, Any] = {"reported_by": f"{who.kind}:{who.name}", "note": body.note}
    geo, geo_reason = None, "reported without a spot in the picture"
    point = body.point_px
    if point is None and body.box_px is not None:  # where the subject meets the ground or water
        point = [(body.box_px[0] + body.box_px[2]) / 2, body.box_px[3]]
    if body.box_px is not None:
        attributes["box_drawn"] = True  # the subject's own box: a training label once confirmed
    if point is not None:
        attributes["point_px"] = [float(v) for v in point]
        locator = st.locate(body.source, capture_ns)
        if locator is None:
            geo_reason = "source is not geo-referenced"
        else:
            attributes["geo_reference"] = locator.kind
            if locator.pose is not None:
                attributes["geo_pose"] = locator.pose
            geo, geo_reason = locator.geo_positions(np.array([point], np.float64))[0]
    labels = (body.label,) if body.label else ()
    # the picture nearest at_ns may lie just outside the window asked for (a browser's times are floats, a lead-in
    # picture before the window): the event's window holds it
    start_ns, end_ns = min(body.start_ns, capture_ns), max(body.end_ns, capture_ns)
    return Event(id=uuid.uuid4().hex, type=body.type, severity=body.severity, phase="end", source_id=body.source,
                 start_ns=start_ns, end_ns=end_ns, at_ns=capture_ns, attributes=attributes,
                 labels=labels, scores=(1.0,) * len(labels),
                 snapshot=Snapshot(body.source, capture_ns, box, 1.0, image=image),
                 clip=ClipRef(body.source, start_ns, end_ns), geo=geo, geo_reason=geo_reason)


def _configured_source(state, source_id: str):
    spec = next((s for s in state.settings.sources if s.id == source_id), None)
    if spec is None:
        raise ApiError(404, f"no source {source_id!r}")
    return spec


@drones_router.get("", summary="drones: link state, mode, armed, battery, position, heading, waypoint, patrol route")
def list_drones(request: Request, who: Viewer) -> list[dict[str, Any]]:
    fleet = request.app.state.fleet
    return fleet.drones() if fleet is not None else []


class AbortIn(BaseModel):
    """The mode the drone is switched to when its patrol is aborted."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["RTL", "LAND", "LOITER"] = Field("RTL", description="RTL: fly home and land; LAND: land here; "
                                                                      "LOITER: hold position")


def _drone_status(fleet: Any, drone_id: str) -> dict[str, Any]:
    """The drone's status dict (404 for a drone the fleet does not have)."""
    if fleet is None or len(drone_id) > 128:
        raise ApiError(404, f"no drone {drone_id[:128]!r}")
    found = next((d for d in fleet.drones() if d.get("drone_id") == drone_id), None)
    if found is None:
        raise ApiError(404, f"no drone {drone_id!r}")
    return found


MAX_TRACK_S = 86400  # the longest window of a drone's flight log one track request reads


@drones_router.get("/{drone_id}/track", summary="where the drone flew in a time window (its flight log)",
                   description="`points`: `[time_ns, lat_deg, lon_deg, alt_m]` per logged position inside "
                               "`[start_ns, end_ns]` (UTC ns, at most 24 h; default the last 10 min), evenly thinned "
                               "to `max_points`. The service logs every drone's telemetry beside its video and keeps "
                               "it as long (`storage.recording.max_age_s`), so a camera's recording can be shown with "
                               "where the drone was. 404 for an unknown drone.")
def drone_track(drone_id: str, request: Request, who: Viewer,
                start_ns: int | None = Query(None, ge=0, description="window start (UTC ns)"),
                end_ns: int | None = Query(None, ge=0, description="window end (UTC ns)"),
                max_points: int = Query(2000, ge=2, le=20000)) -> dict[str, Any]:
    import time

    from seawatch.drone.flight_log import flight_track

    st = request.app.state
    if drone_id not in {d.id for d in st.settings.drones}:
        raise ApiError(404, f"no drone {drone_id[:128]!r}")
    end = end_ns if end_ns is not None else time.time_ns()
    start = start_ns if start_ns is not None else end - 600 * 1_000_000_000
    if end <= start:
        raise ApiError(422, "the window is empty: end_ns must be after start_ns")
    if end - start > MAX_TRACK_S * 1_000_000_000:
        raise ApiError(422, f"the window is {(end - start) / 1e9:.0f} s long; at most {MAX_TRACK_S} s")
    points = flight_track(st.media_dir / "flightlog", drone_id, start, end, max_points)
    return {"drone_id": drone_id, "start_ns": start, "end_ns": end, "points": points}


_DRONE_ERRORS: dict[int | str, dict[str, Any]] = {409: {"model": ErrorBody}}


# Sync handlers (run in the thread pool): the abort waits for the vehicle to report the new mode (a few seconds).
@drones_router.post("/{drone_id}/abort", responses=_DRONE_ERRORS,
                    summary="operator: abort the drone's patrol and switch it to RTL / LAND / LOITER",
                    description="The patrol stays `aborted` (no repeat) until `restart`; a task under way "
                                "(`investigate`) ends `aborted` too. A drone without a patrol only gets the mode; a drone "
                                "that reports itself disarmed (on the ground) gets none: the abort only stops its "
                                "patrol from being flown again. 409 "
                                "when the drone has no link or refuses the mode (the patrol is still marked aborted). "
                                "Answers the drone's status.")
@_audited("drone.abort", target="drone_id", details=lambda k: {"mode": (k.get("body") or AbortIn()).mode})
def abort_drone(drone_id: str, request: Request, who: Operator, body: Annotated[AbortIn | None, Body()] = None) -> dict[str, Any]:
    fleet = request.app.state.fleet
    _drone_status(fleet, drone_id)
    mode = (body or AbortIn()).mode
    try:
        sent = fleet.abort_patrol(drone_id, mode)
    except InputError as exc:
        raise ApiError(404, str(exc)) from None
    except SeawatchError as exc:  # TelemetryError: no link, refused or unconfirmed mode change
        log.warning("drone %s: abort (%s) by %s %s: the mode change failed: %s", drone_id, mode, who.kind, who.name, exc)
        raise ApiError(409, f"drone {drone_id}: {mode} not confirmed: {exc}") from None
    log.warning("drone %s: patrol aborted, %s, by %s %s", drone_id, f"now {mode}" if sent else
                "on the ground (disarmed): no mode sent", who.kind, who.name)
    return _drone_status(fleet, drone_id)


@drones_router.post("/{drone_id}/restart", responses=_DRONE_ERRORS,
                    summary="operator: fly the drone's patrol again (after an abort, a hold or an error)",
                    description="The start checks still apply (the patrol waits as `held` for battery or a failsafe). "
                                "409 when the drone has no patrol or is flying it now. Answers the drone's status.")
@_audited("drone.restart", target="drone_id")
def restart_drone(drone_id: str, request: Request, who: Operator) -> dict[str, Any]:
    fleet = request.app.state.fleet
    st = _drone_status(fleet, drone_id)
    if st.get("patrol") is None:
        raise ApiError(409, f"drone {drone_id} has no patrol configured")
    if st.get("patrol_state") == "flying":  # a restart would start the mission over from its first item
        raise ApiError(409, f"drone {drone_id} is flying its patrol; abort it first to restart it")
    try:
        fleet.restart_patrol(drone_id)
    except InputError as exc:
        raise ApiError(404, str(exc)) from None
    except (ConfigError, TelemetryError) as exc:
        raise ApiError(409, str(exc)) from None
    log.warning("drone %s: patrol restart by %s %s (was %s)", drone_id, who.kind, who.name, st.get("patrol_state"))
    return _drone_status(fleet, drone_id)


class InvestigateIn(BaseModel):
    """Where to send the drone: a point, or an event's geo position; height and hold default to the drone's config."""

    model_config = ConfigDict(extra="forbid")

    lat_deg: float | None = Field(None, ge=-90, le=90, description="target latitude (WGS84), with lon_deg")
    lon_deg: float | None = Field(None, ge=-180, le=180, description="target longitude (WGS84), with lat_deg")
    event_id: str | None = Field(None, min_length=1, max_length=64, description="or: the event whose geo position "
                                 "is the target")
    alt_m: float | None = Field(None, ge=2, le=500, description="height above home to fly and hold at (default the "
                                "drone's task_alt_m; within its task_min_alt_m / task_max_alt_m)")
    hold_s: float | None = Field(None, ge=0, le=3600, description="seconds to hold over the target (default the "
                                 "drone's task_hold_s)")


@drones_router.post("/{drone_id}/investigate", responses={409: {"model": ErrorBody}, 422: {"model": ErrorBody}},
                    summary="operator: send the drone to look at a point or an event, hold over it, then return home",
                    description="Interrupts the drone's patrol (`patrol_state: interrupted`, flown again only by "
                                "`restart`) and flies a task mission: take off if on the ground, fly to the target, "
                                "hold `hold_s` with the gimbal pitched down (when the vehicle reports one), RTL. The "
                                "drone's status shows it as `task` (`state`: flying / holding / returning / complete / "
                                "aborted, `reason`); `abort` aborts it, `restart` ends it and flies the patrol; a new "
                                "task replaces it. Body: `lat_deg` + `lon_deg`, or `event_id`. 422: both or neither, "
                                "an event without a geo position, a target farther than the drone's "
                                "`max_task_range_m` from home or outside its `operating_area_lonlat`, a height outside "
                                "its limits. 409: no link, unknown home, failsafe, battery below "
                                "`patrol_min_battery_pct` or unknown, a vehicle someone else is flying, a start the "
                                "vehicle refused. Answers the drone's status.")
@_audited("drone.investigate", target="drone_id",
          details=_body_fields("lat_deg", "lon_deg", "event_id", "alt_m", "hold_s"))
def investigate_drone(drone_id: str, request: Request, who: Operator, body: Annotated[InvestigateIn, Body()]) -> dict[str, Any]:
    from seawatch.service.fleet import TaskRefused

    st = request.app.state
    fleet = st.fleet
    _drone_status(fleet, drone_id)
    asker = f"{who.kind} {who.name}"
    has_point = body.lat_deg is not None or body.lon_deg is not None
    if has_point == (body.event_id is not None) or (has_point and (body.lat_deg is None or body.lon_deg is None)):
        log.warning("drone %s: investigate by %s refused: give lat_deg and lon_deg, or event_id", drone_id, asker)
        raise ApiError(422, "give either lat_deg and lon_deg, or event_id")
    lat, lon = body.lat_deg, body.lon_deg
    if body.event_id is not None:
        ev = _get_event(st.store, body.event_id)
        if ev.geo is None:
            log.warning("drone %s: investigate by %s refused: event %s has no geo position", drone_id, asker, ev.id)
            raise ApiError(422, f"event {ev.id} has no geo position ({ev.geo_reason or 'unknown reason'}); "
                                "send the drone to a lat_deg / lon_deg instead")
        lat, lon = ev.geo.lat_deg, ev.geo.lon_deg
    try:
        fleet.investigate(drone_id, lat, lon, alt_m=body.alt_m, hold_s=body.hold_s, event_id=body.event_id,
                          requested_by=asker)
    except InputError as exc:
        raise ApiError(404, str(exc)) from None
    except TaskRefused as exc:
        log.warning("drone %s: investigate (%.6f, %.6f) by %s refused: %s", drone_id, lat, lon, asker, exc)
        raise ApiError(422 if exc.kind == "target" else 409, str(exc)) from None
    except SeawatchError as exc:
        log.warning("drone %s: investigate (%.6f, %.6f) by %s failed: %s", drone_id, lat, lon, asker, exc)
        raise ApiError(409, f"drone {drone_id}: the task was not started: {exc}") from None
    log.warning("drone %s: patrol interrupted, investigating (%.6f, %.6f)%s, by %s", drone_id, lat, lon,
                f" (event {body.event_id})" if body.event_id else "", asker)
    return _drone_status(fleet, drone_id)


@ais_router.get("/vessels", summary="vessels of the AIS table (positioned first), aged by the feed's own clock")
def ais_vessels(request: Request, who: Viewer, limit: Annotated[int, Query(ge=1, le=5000)] = 2000) -> dict[str, Any]:
    fleet = request.app.state.fleet
    vessels = fleet.vessels(limit) if fleet is not None else []
    return {"vessels": vessels, "feeds": fleet.ais() if fleet is not None else []}


@map_router.get("", summary="map settings for the UI: tile server, attribution, whether a coastline is bundled")
def map_settings(request: Request, who: Viewer) -> dict[str, Any]:
    svc = request.app.state.settings.service
    return {"tiles_url": svc.map_tiles_url, "attribution": svc.map_tiles_attribution,
            "coastline": (Path(__file__).parent / "static" / "coastline.json").is_file()}


@admin.get("/principals", summary="configured users and API keys (names and roles only)")
def principals(request: Request, who: Admin) -> dict[str, list[dict[str, str]]]:
    cfg = request.app.state.settings.auth
    return {"users": [{"name": u.name, "role": u.role} for u in cfg.users],
            "api_keys": [{"name": k.name, "role": k.role} for k in cfg.api_keys]}


@admin.get("/audit", responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
           summary="admin: the security audit log (who logged in, exported, held, commanded ...), newest first",
           description="Filters: `action` (a prefix of the dotted name: `export`, `auth.login`, `drone.abort`), "
                       "`actor`, `target` (exact), `from` / `to` (ISO 8601, half-open); `limit` and `cursor` page "
                       "through it (`next_cursor`). `format=csv` answers every match (up to 50 000 rows, "
                       "`X-Seawatch-Truncated`) as a CSV file. The read itself is recorded (`audit.read`, "
                       "`audit.export`).")
def read_audit(request: Request, store: Store, who: Admin,
               params: Annotated[audit.AuditParams, Query()]) -> Any:  # type: ignore[valid-type]
    csv = params.format == "csv"
    with audit.action(request, "audit.export" if csv else "audit.read", who, details={"filters": params.filters()}) as act:
        if not csv:
            entries, nxt = store.audit_log(params.query())
            act.details["entries"] = len(entries)
            return {"entries": [e.to_dict() for e in entries], "next_cursor": nxt}
        rows: list = []
        cursor = None
        while True:
            page, cursor = store.audit_log(params.query(limit=1000, cursor=cursor))
            rows += page
            if cursor is None or len(rows) >= audit.MAX_EXPORT_ROWS:
                break
        truncated = cursor is not None
        rows = rows[:audit.MAX_EXPORT_ROWS]
        act.details.update(rows=len(rows), truncated=truncated)
        return Response(audit.to_csv(rows).encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="seawatch-audit.csv"',
                                 "X-Seawatch-Truncated": "true" if truncated else "false"})


WS_AUTH_TIMEOUT_S = 5.0
WS_STATUS_INTERVAL_S = 2.0
WS_FIRST_MESSAGE_MAX_CHARS = 4096  # {"token": ...} or {"api_key": ...}: one credential, nothing more


def _first_message_credential(text: str) -> Callable[[Authenticator], Principal | None] | None:
    """The credential the first message of a live feed carries, as a check that names who it is (None once it
    expired or was revoked); None for anything but a JSON object with a ``token`` or ``api_key`` string (too long,
    not JSON, nested past the parser's recursion limit, ...)."""
    if not isinstance(text, str) or len(text) > WS_FIRST_MESSAGE_MAX_CHARS:
        return None
    try:
        first = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(first, dict) and isinstance(first.get("token"), str):
        token = first["token"]
        return lambda auth: auth.verify_token(token)
    if isinstance(first, dict) and isinstance(first.get("api_key"), str):
        key = first["api_key"]
        return lambda auth: auth.check_api_key(key)
    return None


async def _ws_credential(ws: WebSocket) -> tuple[Callable[[Authenticator], Principal | None] | None, Principal | None]:
    """A WebSocket's credential (accepted already): an ``Authorization: Bearer`` or ``X-API-Key`` header, or (browsers
    cannot set headers on a WebSocket) a first message ``{"token": "..."}`` or ``{"api_key": "..."}`` within
    ``WS_AUTH_TIMEOUT_S``. Returns the check to repeat later (None without a credential) and who it names now (None:
    refused)."""
    import asyncio

    check: Callable[[Authenticator], Principal | None] | None = None
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        check = lambda a: a.verify_token(token)  # noqa: E731
    elif ws.headers.get("x-api-key"):
        key = ws.headers["x-api-key"]
        check = lambda a: a.check_api_key(key)  # noqa: E731
    else:
        try:
            check = _first_message_credential(await asyncio.wait_for(ws.receive_text(), WS_AUTH_TIMEOUT_S))
        except (asyncio.TimeoutError, KeyError, WebSocketDisconnect):  # KeyError: a binary frame has no "text"
            check = None
    return check, (check(ws.app.state.auth) if check is not None else None)


async def _ws_close(ws: WebSocket, code: int, reason: str) -> None:
    """Closes a live WebSocket with ``code`` and ``reason``. A client already gone (it closed or dropped the
    connection before its credential: a tab closed while connecting, a port scanner) has nothing left to be told:
    not an error with a traceback in the log, as one was for every such connection."""
    try:
        await ws.close(code=code, reason=reason)
    except (WebSocketDisconnect, RuntimeError):
        pass


@live_router.websocket("/live")
async def live_feed(ws: WebSocket) -> None:
    """Live messages: ``hello``, ``sources`` (every few seconds), ``event`` (stored phases), ``review``.

    Auth: an ``Authorization: Bearer`` or ``X-API-Key`` header, or (browsers cannot set headers on a WebSocket)
    a first message ``{"token": "..."}`` or ``{"api_key": "..."}`` within a few seconds; else closed with 4401.
    The credential is checked again with every ``sources`` message: a token that expires (``auth.token_ttl_s``) or
    whose user was removed or given another role closes the feed with 4401, as a request would be refused.
    """
    import asyncio

    st = ws.app.state
    await ws.accept()
    check, who = await _ws_credential(ws)
    if who is None:
        await _ws_close(ws, 4401, "authentication required")
        return
    hub: LiveHub = st.live
    sub = hub.subscribe()

    def sources_msg() -> dict[str, Any]:
        return {"kind": "sources", "sources": [s.model_dump(mode="json") for s in _sources(st)]}

    async def reader() -> None:  # notices the client leaving; client messages are otherwise ignored
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return

    reading = asyncio.create_task(reader())
    try:
        await ws.send_json({"kind": "hello", "who": {"name": who.name, "role": who.role, "kind": who.kind}})
        await ws.send_json(await run_in_threadpool(sources_msg))  # reads the store: off the event loop
        loop = asyncio.get_running_loop()
        next_status = loop.time() + WS_STATUS_INTERVAL_S
        while not reading.done():
            getter = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({getter, reading}, timeout=max(0.0, next_status - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                msg = getter.result()
                if sub.dropped:
                    msg = {**msg, "dropped_before": sub.dropped}
                    sub.dropped = 0
                await ws.send_json(msg)
            else:
                getter.cancel()
            if loop.time() >= next_status:
                if check(st.auth) != who:  # expired, or the user removed or given another role
                    await ws.close(code=4401, reason="credential expired or revoked")
                    return
                await ws.send_json(await run_in_threadpool(sources_msg))  # reads the store: off the event loop
                next_status = loop.time() + WS_STATUS_INTERVAL_S
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reading.cancel()
        hub.unsubscribe(sub)


@live_router.websocket("/sources/{source_id}/video")
async def live_video(ws: WebSocket, source_id: str) -> None:
    """A camera's live video (``service.live_video``): its H.264 as fragmented MP4 for Media Source Extensions.

    Auth as ``/api/live`` (header, or a first message ``{"token"}`` / ``{"api_key"}``; a viewer is enough), checked
    again every few seconds (4401 once it expired or was revoked). Then a text message ``{"kind": "video", "codec":
    "avc1.PPCCLL", "mime": ..., "width_px", "height_px", "rate_fps"}``, a binary init segment (``ftyp`` + ``moov``) and
    binary fragments (``moof`` + ``mdat``, one picture each) from the newest keyframe on; ``{"kind": "resync",
    "dropped": n}`` when this connection fell behind and lost fragments (the next one is a keyframe). Closed with
    4404 (unknown camera), 4415 (not H.264 and re-encoding off: MJPEG, H.265...; else they are re-encoded), 4429 (too
    many video viewers, or cameras re-encoded), 4503 (no video read for this camera), 4504 (no picture within a few
    seconds), 4409 (the camera's format changed: connect again), each with a reason to show.
    """
    import asyncio

    from seawatch.service.live_video import CLOSE_NOT_YET, CLOSE_UNKNOWN, FIRST_PICTURE_WAIT_S, VideoRefused

    st = ws.app.state
    await ws.accept()
    check, who = await _ws_credential(ws)
    if who is None:
        await _ws_close(ws, 4401, "authentication required")
        return
    if not any(s.id == source_id for s in st.settings.sources):
        await _ws_close(ws, CLOSE_UNKNOWN, "unknown camera")
        return
    loop = asyncio.get_running_loop()
    try:
        viewer = st.live_video.open(source_id, loop)
    except VideoRefused as refused:
        await _ws_close(ws, refused.code, refused.reason)
        return

    async def reader() -> None:  # notices the client leaving; client messages are otherwise ignored
        while True:
            if (await ws.receive())["type"] == "websocket.disconnect":
                viewer.close(1000, "gone")
                return

    reading = asyncio.create_task(reader())
    try:
        first_by = loop.time() + FIRST_PICTURE_WAIT_S
        next_check = loop.time() + WS_STATUS_INTERVAL_S
        while True:
            for kind, payload in await viewer.take(max(0.05, next_check - loop.time())):
                if kind in ("init", "bytes"):
                    await ws.send_bytes(payload)
                elif kind in ("text", "resync", "clock"):
                    await ws.send_json(payload)
                else:
                    if not reading.done():
                        await ws.close(code=payload[0], reason=payload[1])
                    return
            if loop.time() >= next_check:
                if check(st.auth) != who:  # expired, or the user removed or given another role
                    await ws.close(code=4401, reason="credential expired or revoked")
                    return
                if not viewer.started and loop.time() > first_by:
                    await ws.close(code=CLOSE_NOT_YET, reason=f"no picture from camera {source_id} for "
                                                              f"{FIRST_PICTURE_WAIT_S:g} s (offline?)")
                    return
                next_check = loop.time() + WS_STATUS_INTERVAL_S
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reading.cancel()
        st.live_video.close(source_id, viewer)


RETENTION_STOP_TIMEOUT_S = 10.0
REPORT_STORE_WAIT_S = 5.0  # how long a reported event may wait for the store before the request says it is queued


def _calibrated_locators(settings) -> Callable[[str, int], Any]:
    """``locate(source_id, capture_ns)`` from the sources' calibrations (an API without a pipeline: no drone poses)."""
    from seawatch.vision.geo import SourceGeo

    geos = {}
    for s in settings.sources:
        if s.calibration is not None:
            try:
                geos[s.id] = SourceGeo.from_calibration(s.id, s.calibration)
            except ConfigError as exc:
                log.warning("source %s: no positions for reported events: %s", s.id, exc)

    def locate(source_id: str, capture_ns: int):
        geo = geos.get(source_id)
        return None if geo is None else geo.frame_locator(capture_ns)
    return locate


def create_app(settings: ServeConfig, *, store: EventStore | None = None, source_status: SourceStatusFn | None = None,
               live: LiveHub | None = None, fleet: Any = None, apply_ignore: Callable[[str, list], None] | None = None,
               stats: StatsFn | None = None, latest_frame: Callable[[str], Any] | None = None,
               report: Callable[[Any], None] | None = None, locate: Callable[[str, int], Any] | None = None,
               apply_calibration: Callable[[str, Any], None] | None = None, snoozes: Any = None) -> FastAPI:
    """The API. Without ``store`` the lifespan opens (and migrates) ``settings.storage`` and closes it on exit.
    ``apply_ignore(source_id, stored areas)`` hands a camera's review-desk ignore areas to the running pipeline
    (raising SeawatchError when it refuses them); without a pipeline they are only stored. ``apply_calibration(source_id,
    CalibrationConfig | None)`` hands a camera's calibration applied by an administrator (None: back to the configured
    one) to the running pipeline, the same way; without a pipeline it is only stored. ``stats()`` gives the
    event delivery counters health reports (``{"store_sink": {...} | None, "mqtt": {...} | None}``).
    ``latest_frame(source_id)`` gives a camera's newest analysed frame for its live view
    (``Pipeline.latest_frame``: ``(capture_time_ns, image, tracked detections)`` or None).
    ``report(event)`` stores and publishes an event a person reported (the service's ``StoreSink``; without it the
    lifespan makes one over the store and the live hub); ``locate(source_id, capture_ns)`` gives a frame's locator
    (``Pipeline.locator_for``; without it the sources' calibrations). ``snoozes`` is the service's
    ``service.snooze.SnoozeBook`` (the cameras' snoozed alerts; without it the lifespan makes one over the store, its
    records stored through the lifespan's sink, and restores the open ones)."""
    from seawatch.streams.recording import ClipStore

    media_dir = settings.storage.resolved_media_dir()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = store is None
        app.state.store = EventStore.open(settings.storage.resolved_database_url()) if own else store
        media_dir.mkdir(parents=True, exist_ok=True)
        log.info("service ready: %d events stored, media in %s", app.state.store.count(), media_dir)
        try:  # the incidents left open before the live hub's listener (GET /api/metrics): one scan, at start only
            app.state.incidents.seed(app.state.store)
        except Exception:  # noqa: BLE001 - the metrics then count from the live feed alone; the service goes on
            log.exception("metrics: the open incidents could not be read from the store")
        app.state.retention = None
        own_sink = None
        if report is None:  # reported events are stored and published like the pipeline's
            from seawatch.service.sink import StoreSink

            own_sink = StoreSink(app.state.store, media_dir, [app.state.live.publish_event])
            app.state.report = lambda ev: (own_sink.emit(ev), own_sink.flush(REPORT_STORE_WAIT_S))
        own_snoozes = None
        if snoozes is None:  # no service around this app: snoozes are recorded through the lifespan's own sink
            from seawatch.service.sink import StoreSink
            from seawatch.service.snooze import SnoozeBook

            own_sink = own_sink or StoreSink(app.state.store, media_dir, [app.state.live.publish_event])
            own_snoozes = SnoozeBook(settings.source_alerts.snooze_max_s, own_sink).restore(app.state.store).start()
            app.state.snoozes = own_snoozes
        ret = settings.storage.retention
        if ret.enabled:
            from seawatch.service.retention import Retention, RetentionWorker

            app.state.retention = RetentionWorker(Retention(
                app.state.store, media_dir, ret, recording=settings.storage.recording, clips=app.state.clips)).start()
        try:
            yield
        finally:
            app.state.live_video.stop_all()
            if app.state.retention is not None:
                app.state.retention.stop(RETENTION_STOP_TIMEOUT_S)  # before the store closes under it
            if own_snoozes is not None:  # its timer; snoozes in force stay open in the store for the next start
                own_snoozes.stop()
            if own_sink is not None:
                own_sink.close()
            if own:
                app.state.store.close()

    # the schema is an endpoint like any other: it needs auth (served at /api/openapi.json below)
    app = FastAPI(title="Seawatch", version=__version__, lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None,
                  description="Events from cameras, drones and AIS: search, review, clips. Every endpoint but /api/health needs auth.")
    app.state.settings = settings
    # log-outs survive a restart in the data folder (with a configured auth.token_secret; see Authenticator)
    app.state.auth = Authenticator(settings.auth, state_dir=Path(settings.storage.data_dir).expanduser().resolve())
    app.state.throttle = LoginThrottle(settings.auth.login_max_failures, settings.auth.login_window_s)
    app.state.user_throttle = LoginThrottle(settings.auth.login_user_max_failures, settings.auth.login_window_s)
    app.state.media_dir = media_dir
    app.state.clips = ClipStore(media_dir / "clips", media_dir / "recordings")
    app.state.source_status = source_status or (lambda: [])
    app.state.live = live or LiveHub()
    app.state.fleet = fleet  # drones and AIS (service.fleet.Fleet) or None
    app.state.apply_ignore = apply_ignore or (lambda source_id, areas: None)
    app.state.apply_calibration = apply_calibration or (lambda source_id, calibration: None)
    app.state.calibration_lock = threading.Lock()
    app.state.latest_frame = latest_frame or (lambda source_id: None)
    app.state.stats = stats or (lambda: {})
    app.state.live_view = LiveView(latest_frame or (lambda source_id: None))
    app.state.live_video = LiveVideo(settings.service.live_video_viewers,  # rings added by the Service (add_source)
                                     transcode_max=settings.service.live_video_transcode_max,
                                     transcode_width_px=settings.service.live_video_transcode_width_px)
    # GET /api/metrics: incidents stored and open by type and severity, heard from the live hub as MQTT hears them
    app.state.incidents = IncidentCounts()
    app.state.live.add_listener(app.state.incidents.on_live_message)
    app.state.started_s = process_start_time_s() or time.time()
    if report is not None:
        app.state.report = report
    app.state.locate = locate or _calibrated_locators(settings)
    app.state.snoozes = snoozes  # service.snooze.SnoozeBook (the lifespan makes one when not given)
    app.state.retention = None  # service.retention.RetentionWorker, started by the lifespan
    # the security audit log (service/audit.py): into the store the lifespan opens (or was given)
    app.state.audit = audit.AuditLog(lambda: getattr(app.state, "store", None))
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # inside CORS (added last, so outermost): a 413 gets CORS headers
    if settings.service.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.service.cors_origins), allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "Range"], allow_credentials=False)
    # outermost: sees the connection's own address (a trusted proxy's) before the forwarded client replaces it
    app.add_middleware(PublicRoot, root_path=settings.service.root_path, trusted=settings.service.trusted_proxies)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        details = [{"loc": [p for p in e.get("loc", ()) if isinstance(p, (str, int))], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return _error(422, "the request is invalid: " + "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details), details)

    @app.exception_handler(SeawatchError)
    async def _seawatch_error(request: Request, exc: SeawatchError):
        return _error(400, str(exc))

    import sqlalchemy.exc

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _store_unavailable(request: Request, exc: sqlalchemy.exc.OperationalError):
        # the database server down or restarting, its disk full or read-only: a status, not a bug with a traceback
        log.error("the event store is unavailable on %s %s: %s", request.method, request.url.path,
                  (str(exc.orig or exc).strip().splitlines() or [type(exc.orig or exc).__name__])[0][:300])
        return _error(503, "the event store is unavailable now (GET /api/health says why); try again shortly",
                      headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (logged on the server)")

    for router in (health, auth_router, events, sources, drones_router, ais_router, map_router, media, admin, export, live_router,
                   report_router):
        app.include_router(router, prefix="/api")

    # The web UI: a static shell with no data in it (every datum comes from the authenticated API), so it is
    # served without auth; a strict CSP keeps it to this origin.
    static_dir = Path(__file__).parent / "static"
    tiles = settings.service.tiles_origin()
    csp = (f"default-src 'self'; img-src 'self' blob: data:{' ' + tiles if tiles else ''}; media-src 'self' blob:; connect-src 'self'; "
           "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

    # The pages, each sent with the CSP header (framing is refused only by the header) and relative URLs throughout
    # ("ui/wall.js", "api/..."), so each works under a proxy's path prefix as "/" does:
    pages = {
        "/": "index.html",               # the operator UI
        "/wall": "wall.html",            # the camera wall (control-room screens; a viewer key is enough)
        "/calibrate": "calibrate.html",  # a camera's picture beside the map, points marked in both, the fitted pose (admins)
        "/report": "report.html",        # the shift / period report (a viewer is enough), printable as an A4 page
        "/audit": "audit.html",          # the security audit log (admins): who did what, filtered, as CSV
    }

    def ui_page(html: str) -> Callable[[], FileResponse]:
        def page() -> FileResponse:
            return FileResponse(static_dir / html, media_type="text/html",
                                headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"})
        return page

    for route, html in pages.items():
        app.add_api_route(route, ui_page(html), methods=["GET"], include_in_schema=False)

    @app.get("/ui/{name}", include_in_schema=False)
    def ui_asset(name: str) -> FileResponse:
        # not the pages' HTML: they are served at their routes above, with their CSP header
        types = {"app.js": "text/javascript", "map.js": "text/javascript", "app.css": "text/css",
                 "coastline.json": "application/json",
                 "timefmt.js": "text/javascript",  # the display times, shared by every page
                 "wall.js": "text/javascript", "wall.css": "text/css",
                 "calibrate.js": "text/javascript", "calibrate.css": "text/css", "session.js": "text/javascript",
                 "report.js": "text/javascript", "report.css": "text/css",
                 "audit.js": "text/javascript", "audit.css": "text/css"}
        if name not in types or not (static_dir / name).is_file():
            raise ApiError(404, "no such UI file")
        return FileResponse(static_dir / name, media_type=types[name], headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi_schema(who: Viewer) -> JSONResponse:
        return JSONResponse(app.openapi())
    return app
