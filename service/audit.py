"""The security audit log: who did what through the API, from which address, and what came of it.

A port facility's security plan (ISPS Code) and evidence handling need a record of user actions, kept apart from the
service log: log-ins (failed ones too), log-outs, exports, holds, ignore areas, calibrations, view reference resets,
cameras' alerts snoozed, drone commands, reported events, reviews, reads of this log, and refusals for want of a role. Each is one row of the
store's ``audit_log`` table (migration 0011): time, actor (user or API key name), role, the client's address (after
the trusted proxies' ``X-Forwarded-For``, as the log-in throttle sees it), a dotted action name, a target (an event,
source or drone id), the outcome (``ok``, ``refused`` for a 4xx answer, ``failed`` for a 5xx) with the HTTP status,
and details as JSON.

Routes call :func:`record` (one entry now) or use :class:`action` (a ``with`` / ``async with`` block around the
route's work: the entry is written when the block ends, ``ok`` or ``refused`` / ``failed`` with the status of the
exception that left it). Both take the request (for the store, the client address and the app's
:class:`AuditLog`) and the principal; other code of the service that acts for someone can call :func:`record` with
a request, or ``app.state.audit.write(...)`` without one.

An audit write that fails (the database away, a disk full) never fails the action it records: it is logged at ERROR
with the whole entry (so the service log keeps it), counted in :attr:`AuditLog.failures`, and the action goes on.
Details never hold a password, token or key: :func:`clean_details` drops every key named like one, whatever the
route passed, and bounds the size. Cost: one short INSERT per recorded action (actions are people's clicks and
log-ins, which are throttled; no hot path — event writes, searches, pictures, live feeds — records anything).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Callable

from seawatch.errors import SeawatchError

log = logging.getLogger(__name__)

# The actions recorded (dotted: a prefix filter such as "export" finds a family). For the README and the UI's list.
ACTIONS: tuple[str, ...] = (
    "auth.login", "auth.login_failed", "auth.logout", "auth.forbidden",
    "export.evidence", "export.csv", "export.geojson", "export.kml", "export.recording",
    "hold.add", "hold.release",
    "ignore_area.add", "ignore_area.remove",
    "calibration.apply", "calibration.revert", "view_reference.reset", "camera.snooze", "camera.snooze_end",
    "drone.abort", "drone.restart", "drone.investigate",
    "event.report",
    "review.acknowledge", "review.dismiss", "review.confirm",
    "audit.read", "audit.export",
)

# keys whose values are never stored, at any depth of the details (a route that passes a body whole cannot leak one)
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?$|^key$|token|secret|api_?key|key_sha256|authori[sz]ation|credential|"
                         r"cookie", re.I)
MAX_TEXT_CHARS = 2000  # one string in the details (a note)
MAX_ITEMS = 50  # one list or object in the details
MAX_DEPTH = 4
MAX_DETAILS_CHARS = 16_000  # the whole details JSON; beyond it only a note that it was cut


def outcome_of(status: int) -> str:
    """``ok`` below 400, ``refused`` for a 4xx answer, ``failed`` for a 5xx."""
    return "ok" if status < 400 else "refused" if status < 500 else "failed"


def clean_details(value: Any, depth: int = 0) -> Any:
    """``value`` as plain, bounded JSON values without secrets: keys named like a password, token, key or secret are
    dropped (``"password": "[not recorded]"`` stays out entirely), strings cut to ``MAX_TEXT_CHARS``, lists and objects
    to ``MAX_ITEMS``, nesting to ``MAX_DEPTH``; floats that are not finite and other objects become text."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        return value[:MAX_TEXT_CHARS]
    if depth >= MAX_DEPTH:
        return str(value)[:200]
    if isinstance(value, dict):
        out = {}
        for k, v in list(value.items())[:MAX_ITEMS]:
            key = str(k)[:64]
            if not _SECRET_KEY.search(key.replace("-", "_")):  # X-API-Key as api_key
                out[key] = clean_details(v, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [clean_details(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
    return str(value)[:MAX_TEXT_CHARS]


class AuditLog:
    """The audit log of one service: entries written to the store ``store()`` gives (the app's, opened by its
    lifespan), never raising. ``failures`` counts the writes that failed (each logged at ERROR with the entry)."""

    def __init__(self, store: Callable[[], Any], clock: Callable[[], int] = time.time_ns) -> None:
        self._store = store
        self._clock = clock
        self.failures = 0
        self.written = 0
        self._lock = threading.Lock()
        self._noted: dict[str, float] = {}  # first_in_window: key -> monotonic time its window ends

    def write(self, action: str, *, status: int = 200, actor: str = "", actor_kind: str = "", role: str = "",
              client: str = "", target: str = "", details: dict[str, Any] | None = None,
              outcome: str | None = None) -> bool:
        """Store one entry now; True when stored. A failure is logged (ERROR, the whole entry) and counted, never
        raised: the action it records goes on."""
        from seawatch.service.store import AuditEntry

        entry = None
        try:
            entry = AuditEntry(time_ns=self._clock(), action=action, outcome=outcome or outcome_of(status),
                               status=int(status), actor=actor or "", actor_kind=actor_kind or "", role=role or "",
                               client=client or "", target=str(target or ""), details=_bounded(clean_details(details or {})))
            store = self._store()
            if store is None:
                raise RuntimeError("no event store open")
            store.add_audit(entry)
        except Exception as exc:  # noqa: BLE001 - an audit write never fails the action it records
            with self._lock:
                self.failures += 1
                first = self.failures == 1
            shown = entry.to_dict() if entry is not None else {"action": action, "actor": actor, "target": target}
            log.error("audit: an entry could NOT be recorded in the audit log (%s: %s); it is kept here instead: %s",
                      type(exc).__name__, exc, json.dumps(shown, default=str), exc_info=first)
            return False
        with self._lock:
            self.written += 1
        return True

    def first_in_window(self, key: str, window_s: float, max_keys: int = 10_000) -> bool:
        """True the first time ``key`` is asked within ``window_s`` seconds: refusals that cost nothing to repeat (a
        throttled log-in answered 429) are recorded once per window, not once per request."""
        now = time.monotonic()
        with self._lock:
            if self._noted.get(key, 0.0) > now:
                return False
            if len(self._noted) >= max_keys:
                self._noted = {k: t for k, t in self._noted.items() if t > now}
                if len(self._noted) >= max_keys:  # a flood of fresh keys: forget the oldest half
                    self._noted = dict(sorted(self._noted.items(), key=lambda kv: kv[1])[max_keys // 2:])
            self._noted[key] = now + window_s
            return True


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(details, default=str)
    if len(text) <= MAX_DETAILS_CHARS:
        return details
    return {"cut": f"the details were {len(text)} characters; only their keys are kept", "keys": list(details)[:MAX_ITEMS]}


def client_of(request: Any) -> str:
    """The client's address as the service sees it: behind a proxy of ``service.trusted_proxies`` the forwarded
    client (``PublicRoot`` applies ``X-Forwarded-For`` before any route runs), else the connection's peer."""
    client = getattr(request, "client", None)
    return str(client.host) if client is not None and client.host else ""


def record(request: Any, action: str, who: Any = None, *, target: Any = "", status: int = 200,
           details: dict[str, Any] | None = None, actor: str | None = None, outcome: str | None = None) -> bool:
    """Record ``action`` done by ``who`` (a ``Principal``; None for a log-in attempt, with ``actor`` the user name
    when it is a configured one) on ``target`` through ``request``, answered ``status``; True when stored. Never
    raises (see :class:`AuditLog`). An app without an audit log (``app.state.audit`` unset) records nothing."""
    audit = getattr(getattr(getattr(request, "app", None), "state", None), "audit", None)
    if audit is None:
        return False
    return audit.write(action, status=status, outcome=outcome, target=target, details=details,
                       actor=actor if actor is not None else getattr(who, "name", ""),
                       actor_kind=getattr(who, "kind", "") if who is not None else "",
                       role=getattr(who, "role", "") if who is not None else "", client=client_of(request))


def status_of(exc: BaseException | None) -> int:
    """The HTTP status an exception leaving a route is answered with: an ``ApiError``'s or ``HTTPException``'s own,
    400 for the other Seawatch errors (the app's handler), 500 for anything else."""
    if exc is None:
        return 200
    for name in ("status", "status_code"):
        got = getattr(exc, name, None)
        if isinstance(got, int) and 100 <= got <= 599:
            return got
    return 400 if isinstance(exc, SeawatchError) else 500


class action:  # noqa: N801 - used as a statement: ``with audit.action(...)``
    """Records one action when its block ends: ``ok`` with ``status`` (set ``.status = 201`` for a creation) when it
    ends normally, else ``refused`` / ``failed`` with the status of the exception leaving it (which goes on up
    unchanged). ``details`` and ``target`` may be filled in inside the block (what was made, how many exported).
    ``enabled=False`` records nothing (a clip played rather than downloaded). ``async with`` writes in a worker
    thread, off the event loop."""

    def __init__(self, request: Any, name: str, who: Any = None, *, target: Any = "",
                 details: dict[str, Any] | None = None, enabled: bool = True) -> None:
        self.request = request
        self.name = name
        self.who = who
        self.target = target
        self.details: dict[str, Any] = dict(details or {})
        self.status = 200
        self.enabled = enabled

    def _write(self, exc: BaseException | None) -> None:
        if not self.enabled:
            return
        status = self.status if exc is None else status_of(exc)
        details = self.details
        if exc is not None and status >= 400:
            message = getattr(exc, "message", None) or getattr(exc, "detail", None) or str(exc)
            details = {**details, "error": str(message)[:500]}
        record(self.request, self.name, self.who, target=self.target, status=status, details=details)

    def __enter__(self) -> "action":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._write(exc)
        return False

    async def __aenter__(self) -> "action":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        from starlette.concurrency import run_in_threadpool

        if exc is not None and not isinstance(exc, Exception):  # cancelled (the client left): no await now
            self._write(exc)
        else:
            await run_in_threadpool(self._write, exc)
        return False


# ---- reading the log: GET /api/admin/audit ----------------------------------------------------------------------
MAX_EXPORT_ROWS = 50_000  # rows of one CSV export (X-Seawatch-Truncated: true when there were more)
CSV_COLUMNS = ("time_utc", "time_ns", "actor", "actor_kind", "role", "client", "action", "target", "outcome", "status",
               "details")


def _params_model():
    """The query parameters of ``GET /api/admin/audit`` (built on first use: pydantic only at the edge)."""
    from datetime import datetime
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from seawatch.service.schemas import to_ns

    class AuditParams(BaseModel):
        """Filters of the audit log (newest first): ``action`` a prefix of the dotted name (``export``: every
        export; ``auth.login``: log-ins and failed ones), ``actor`` and ``target`` exact, ``from`` / ``to`` ISO 8601
        (half-open, UTC when no zone is given), ``limit`` / ``cursor`` a page; ``format=csv``: every match as CSV."""

        model_config = ConfigDict(extra="forbid", populate_by_name=True)

        action: str | None = Field(None, min_length=1, max_length=64, description="prefix of the action name")
        actor: str | None = Field(None, min_length=1, max_length=128, description="user or key name (exact)")
        target: str | None = Field(None, min_length=1, max_length=256, description="event, source or drone id (exact)")
        from_: datetime | None = Field(None, alias="from", description="at or after (ISO 8601, UTC if no zone)")
        to: datetime | None = Field(None, description="before (ISO 8601)")
        limit: int = Field(100, ge=1, le=1000, description="page size")
        cursor: str | None = Field(None, max_length=512, description="next_cursor of the previous page")
        format: Literal["json", "csv"] = Field("json", description="csv: every match (up to 50 000 rows), as a file")

        @model_validator(mode="after")
        def _check(self) -> "AuditParams":
            if self.from_ is not None and self.to is not None and to_ns(self.from_) > to_ns(self.to):
                raise ValueError("from must not be after to")
            return self

        def query(self, **over: Any):
            from seawatch.service.store import AuditQuery

            fields = dict(action=self.action, actor=self.actor, target=self.target,
                          from_ns=to_ns(self.from_) if self.from_ is not None else None,
                          to_ns=to_ns(self.to) if self.to is not None else None, limit=self.limit, cursor=self.cursor)
            fields.update(over)
            return AuditQuery(**fields)

        def filters(self) -> dict[str, Any]:
            """What was asked, for the audit entry of this read."""
            return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"limit", "cursor", "format"})

    return AuditParams


AuditParams = _params_model()


def to_csv(entries: list[Any]) -> str:
    """RFC 4180 CSV with a UTF-8 byte order mark (as the events export): ``CSV_COLUMNS``, times in UTC, the details
    as JSON text; every cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first: a user name
    or note typed by anyone) starts with ``'`` (``export._cell``)."""
    import csv
    import io

    from seawatch.service.export import _cell, iso

    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for e in entries:
        w.writerow([_cell(v) for v in (iso(e.time_ns), str(e.time_ns), e.actor, e.actor_kind, e.role, e.client, e.action,
                                       e.target, e.outcome, str(e.status),
                                       json.dumps(e.details, ensure_ascii=False, separators=(",", ":")))])
    return buf.getvalue()
