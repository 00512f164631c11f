"""The one YAML configuration of ``seawatch serve``: the pipeline part plus storage, HTTP service, auth and MQTT.

Pydantic only here, at the edge. Every model forbids unknown keys, bounds its numbers and describes each field;
secrets are ``SecretStr`` (never printed, never served). ``load_config`` turns every validation error into one
line naming the file and the field path.

Example (YAML)::

    sources:
      - {id: quay-1, url: /data/quay-1.mp4, models: [coco_yolov5n]}
    zones:
      - {id: yard, source: quay-1, rules: [{type: fire_smoke}]}
    storage:
      data_dir: /var/lib/seawatch            # database and media live here unless given separately
    service: {host: 0.0.0.0, port: 8080, cors_origins: []}
    auth:
      token_secret: "change-me: at least 32 random characters"   # tokens survive restarts only when set
      users:
        - {name: alice, role: admin, password_hash: "$argon2id$v=19$m=65536,t=3,p=4$..."}   # seawatch.service.auth.hash_password
      api_keys:
        - {name: exporter, role: operator, key_sha256: 090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4}   # hash_api_key(KEY)
    mqtt: {enabled: false, host: localhost, port: 1883, topic_prefix: seawatch}
    webhooks:
      - {url: "https://chat.example/hooks/T0KEN", format: text, types: [fire, unidentified_vessel], min_severity: high}
    email:
      {smtp_host: mail.port.example, username: seawatch, password_env: SEAWATCH_SMTP_PASSWORD,
       from: "Seawatch <seawatch@port.example>", public_url: "https://seawatch.port.example",
       recipients: [{name: duty-officer, to: [duty@port.example], min_severity: high}]}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from seawatch.errors import ConfigError
from seawatch.vision.config import check_scalars, format_errors, read_yaml_file
from seawatch.vision.events import Severity
from seawatch.vision.pipeline import PipelineConfig, check_references
from seawatch.vision.vessel_identity import LOOP_PREFIX
from seawatch.vision.view_check import ViewCheckConfig

Role = Literal["viewer", "operator", "reviewer", "admin"]
ROLES: tuple[str, ...] = ("viewer", "operator", "reviewer", "admin")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$"

WS_MAX_MESSAGE_BYTES = 64 * 1024  # a WebSocket client's largest message: its credential (a token, an API key)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordingConfig(_Strict):
    """Recording of every source into segments (remuxed, no re-encode), so event clips can be cut from them."""

    enabled: bool = Field(True, description="record sources under media_dir/recordings")
    segment_s: float = Field(60.0, ge=2.0, le=3600.0, description="segment length (a new segment starts at the next keyframe)")
    max_age_s: float = Field(7 * 86400.0, ge=60.0, description="segments older than this are deleted")
    max_gb_per_source: float = Field(20.0, gt=0.0, description="oldest segments of a source are deleted beyond this size")
    ring_s: float = Field(60.0, ge=5.0, le=600.0, description="in-memory pre-event buffer per source; covers clips not yet in a finished segment")


class SourceRetentionConfig(_Strict):
    """One camera's own ages (``storage.retention.sources.<source id>``); a field left out takes the site-wide value.

    The most specific rule wins: for an event of this camera, its ``events_days_by_severity`` entry for the event's
    severity, else its ``events_max_age_days`` (whatever the severity: a car park kept 30 days for privacy keeps no
    event longer), else the site-wide ``events_days_by_severity`` / ``events_max_age_days``.
    """

    events_max_age_days: float | None = Field(
        None, ge=1.0, le=36500.0,
        description="closed, unheld events of this source older than this are deleted, whatever their severity "
                    "(null: kept forever; left out: the site-wide ages)")
    events_days_by_severity: dict[Literal["low", "medium", "high", "critical"], float] = Field(
        default_factory=dict,
        description="per severity for this source, before its events_max_age_days, e.g. {critical: 730} (days, 1-36500)")
    clips_max_age_days: float | None = Field(
        None, ge=1.0, le=36500.0,
        description="cut clips of this source's unheld events go after this (null: kept as long as the event; left "
                    "out: the site-wide clips_max_age_days)")

    def given(self, name: str) -> bool:
        """True when the configuration sets ``name`` (null included), False when it is left out."""
        return name in self.model_fields_set


class RetentionConfig(_Strict):
    """How long events and their media are kept, and the media disk's free-space guard (``service/retention.py``).

    Evidence is never deleted automatically: an event a reviewer confirmed, one with an active hold (an evidence
    package was exported, or a reviewer put it on hold), and open incidents are kept with their snapshot, clip and
    telemetry, whatever their age. Ages count from the later of the event's last time and when it was stored.
    """

    enabled: bool = Field(True, description="run the retention sweep and the disk guard inside `seawatch serve`")
    events_max_age_days: float | None = Field(
        90.0, ge=1.0, le=36500.0,
        description="closed, unheld events older than this are deleted with their snapshot, clip and telemetry "
                    "(null: kept forever)")
    events_days_by_severity: dict[Literal["low", "medium", "high", "critical"], float] = Field(
        default_factory=dict,
        description="per severity, instead of events_max_age_days, e.g. {critical: 365, low: 30} (days, 1-36500)")
    snapshots_max_age_days: float | None = Field(
        None, ge=1.0, le=36500.0,
        description="snapshot JPEGs of closed, unheld events older than this are deleted, the event row stays "
                    "(null: kept as long as the event); not those of false detections (training data)")
    clips_max_age_days: float | None = Field(
        30.0, ge=1.0, le=36500.0,
        description="cut clip MP4s (media_dir/clips) of unheld events whose window ended longer ago than this are "
                    "deleted (null: kept as long as the event)")
    false_detections_max_age_days: float | None = Field(
        365.0, ge=1.0, le=36500.0,
        description="events dismissed as a false detection (the training data of `seawatch reviews export`) are kept "
                    "at least this long with their snapshot, or as long as their camera and severity keep events if "
                    "that is longer (null: kept forever)")
    sources: dict[str, SourceRetentionConfig] = Field(
        default_factory=dict,
        description="per source id, its own events_max_age_days / clips_max_age_days, e.g. {quay_north: "
                    "{events_max_age_days: 365}, carpark: {events_max_age_days: 30}}; each id must be a configured source")
    audit_days: float | None = Field(
        400.0, ge=30.0, le=36500.0,
        description="rows of the security audit log (who logged in, exported, held, commanded a drone ...) older "
                    "than this are deleted (null: kept forever); at least 30 days: it is the record")
    upgrade_grace_days: float = Field(
        7.0, ge=0.0, le=365.0,
        description="when retention first runs on a store that already holds events older than the policy (an "
                    "upgrade from a version without retention), nothing stored before then is deleted for this many "
                    "days (a warning says how many events and from when); 0: delete at once")
    orphan_min_age_s: float = Field(
        3600.0, ge=600.0, le=30 * 86400.0,
        description="snapshots, clips and telemetry files no stored event refers to are deleted once older than this "
                    "(a margin for files written just before their event is committed)")
    min_free_disk_pct: float = Field(
        5.0, ge=0.0, le=50.0,
        description="disk guard: below this percentage of free space on the media disk the oldest unheld "
                    "recordings and clips are deleted (0: off unless min_free_disk_gb)")
    min_free_disk_gb: float = Field(
        2.0, ge=0.0, le=100000.0,
        description="disk guard: free space (GiB) kept on the media disk as well; the larger of the two applies")
    sweep_interval_s: float = Field(3600.0, ge=60.0, le=7 * 86400.0, description="time between two retention sweeps")
    first_sweep_delay_s: float = Field(300.0, ge=0.0, le=86400.0, description="the first sweep this long after start")
    disk_check_interval_s: float = Field(60.0, ge=5.0, le=3600.0, description="how often the disk guard checks free space")
    batch_size: int = Field(500, ge=1, le=10000, description="events deleted per transaction (one short write lock each)")
    batch_pause_s: float = Field(0.05, ge=0.0, le=10.0, description="pause between two batches, so event writes get the lock")

    @model_validator(mode="after")
    def _order(self) -> "RetentionConfig":
        bad = {k: v for k, v in self.events_days_by_severity.items() if not 1.0 <= v <= 36500.0}
        if bad:
            raise ValueError(f"events_days_by_severity must hold days between 1 and 36500, got {bad}")
        days = [self.events_max_age_days, *self.events_days_by_severity.values()]
        longest = None if any(d is None for d in days) else max(days)
        for name in ("clips_max_age_days", "snapshots_max_age_days"):
            v = getattr(self, name)
            if v is not None and longest is not None and v > longest:
                raise ValueError(f"{name} ({v:g}) is longer than events are kept ({longest:g} days): a clip or "
                                 "snapshot is deleted with its event, so it cannot outlive it; raise "
                                 "events_max_age_days or lower " + name)
        for sid, src in self.sources.items():
            bad = {k: v for k, v in src.events_days_by_severity.items() if not 1.0 <= v <= 36500.0}
            if bad:
                raise ValueError(f"sources.{sid}.events_days_by_severity must hold days between 1 and 36500, got {bad}")
            per = [self.event_days(sev, sid) for sev in ("low", "medium", "high", "critical")]
            ev_days = None if any(v is None for v in per) else max(per)  # type: ignore[type-var]
            clips = self.clip_days(sid)
            if clips is not None and ev_days is not None and clips > ev_days:
                raise ValueError(f"sources.{sid}: clips_max_age_days ({clips:g}) is longer than {sid}'s events are kept "
                                 f"({ev_days:g} days): a clip is deleted with its event; raise "
                                 f"sources.{sid}.events_max_age_days or set sources.{sid}.clips_max_age_days")
        return self

    def event_days(self, severity: str, source_id: str | None = None) -> float | None:
        """Days an event of this severity (and source) is kept (None: forever); a false detection may be kept longer
        (:meth:`false_detection_days`)."""
        src = self.sources.get(source_id) if source_id is not None else None
        if src is not None:
            if severity in src.events_days_by_severity:
                return src.events_days_by_severity[severity]  # type: ignore[index]
            if src.given("events_max_age_days"):
                return src.events_max_age_days
        return self.events_days_by_severity.get(severity, self.events_max_age_days)  # type: ignore[arg-type]

    def clip_days(self, source_id: str | None = None) -> float | None:
        """Days a cut clip of an unheld event of this source is kept (None: as long as its event)."""
        src = self.sources.get(source_id) if source_id is not None else None
        if src is not None and src.given("clips_max_age_days"):
            return src.clips_max_age_days
        return self.clips_max_age_days

    def summary(self) -> str:
        """One line: ``events kept 90 d (critical 730 d), clips 30 d, false detections 365 d; quay: events 365 d,
        clips 60 d; upgrade grace 7 d`` (``seawatch config check``, ``seawatch retention run``)."""
        def d(v: float | None, none: str = "forever") -> str:
            return none if v is None else f"{v:g} d"

        days = d(self.events_max_age_days)
        if self.events_days_by_severity:
            days += " (" + ", ".join(f"{k} {v:g} d" for k, v in self.events_days_by_severity.items()) + ")"
        out = (f"events kept {days}, clips {d(self.clips_max_age_days, 'as long as their events')}, false detections "
               f"at least {d(self.false_detections_max_age_days)}")
        for sid, src in sorted(self.sources.items()):
            sev = ", ".join(f"{k} {v:g} d" for k, v in src.events_days_by_severity.items())
            ev = (f"events {d(src.events_max_age_days)}" if src.given("events_max_age_days") else "events") + \
                (f" ({sev})" if sev else "")
            clips = d(src.clips_max_age_days, "as long as their events")
            parts = [ev if ev != "events" else "", f"clips {clips}" if src.given("clips_max_age_days") else ""]
            out += f"; {sid}: " + (", ".join(p for p in parts if p) or "site-wide ages")
        return out + f"; upgrade grace {self.upgrade_grace_days:g} d"

    def false_detection_days(self, severity: str, source_id: str | None = None) -> float | None:
        """Days an event dismissed as a false detection is kept: the longer of its own age and
        ``false_detections_max_age_days`` (None: forever)."""
        a, b = self.event_days(severity, source_id), self.false_detections_max_age_days
        return None if a is None or b is None else max(a, b)


class StorageConfig(_Strict):
    """Where events and media are kept."""

    data_dir: str = Field("seawatch-data", min_length=1, description="folder for the default SQLite database and media (created on start)")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL (sqlite:///PATH or postgresql+psycopg://...); default: SQLite file seawatch.db in data_dir",
    )
    media_dir: str | None = Field(None, description="folder for snapshots, clips and recordings; default: data_dir/media")
    recording: RecordingConfig = Field(default_factory=RecordingConfig, description="segment recording for clips")
    retention: RetentionConfig = Field(default_factory=RetentionConfig,
                                       description="how long events, snapshots and clips are kept; free-space guard")

    @model_validator(mode="after")
    def _url(self) -> "StorageConfig":
        if self.database_url is not None:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            from seawatch.streams.urls import redact_url

            try:
                url = make_url(self.database_url)
            except (ArgumentError, ValueError):
                raise ValueError(f"database_url {redact_url(self.database_url)!r} is not a database URL: give "
                                 "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB") from None
            if url.get_backend_name() not in ("sqlite", "postgresql"):
                raise ValueError(f"database_url: {url.get_backend_name()!r} databases are not supported: give "
                                 "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).expanduser().resolve() / 'seawatch.db'}"

    def resolved_media_dir(self) -> Path:
        return Path(self.media_dir).expanduser().resolve() if self.media_dir else Path(self.data_dir).expanduser().resolve() / "media"


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be a bind address (not an IP address, not a host name), or None. ``999.1.1.1`` is neither:
    uvicorn would fail to resolve it after the service had started."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host) or not _HOSTNAME.match(host):
        return f"{host!r} is not an IP address (0.0.0.0, 127.0.0.1, ::) or a host name"
    return None


# A URL path prefix a reverse proxy serves the service under: "" (the host's root) or "/seawatch", "/tools/seawatch"
# (segments of unreserved characters, no trailing slash; nothing that could end a header or start a query)
_ROOT_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
# the service's own top-level paths: a prefix starting with one would hide them (a proxy passing the prefix on has
# it taken off the path before routing: "/api" as a root would turn the service's own "/api/events" into "/events")
_OWN_PATHS = frozenset({"api", "ui", "wall", "report", "calibrate", "audit"})


def root_path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a path prefix (``service.root_path``, a proxy's ``X-Forwarded-Prefix``), or None.
    A trailing slash is dropped before the check (``/seawatch/`` is ``/seawatch``)."""
    v = value.rstrip("/")
    if len(v) > 200 or not _ROOT_PATH.match(v) or any(seg in (".", "..") for seg in v.split("/")):
        return f"{value!r} is not a path prefix like /seawatch (segments of letters, digits and . _ ~ -)"
    if v and v.split("/")[1].lower() in _OWN_PATHS:
        return f"{value!r} starts with one of the service's own paths (/{', /'.join(sorted(_OWN_PATHS))})"
    return None


class HttpConfig(_Strict):
    """The HTTP API and web UI."""

    host: str = Field("127.0.0.1", min_length=1, description="bind address (127.0.0.1 = this machine only)")
    port: int = Field(8080, ge=1, le=65535, description="TCP port")
    cors_origins: tuple[str, ...] = Field((), description="origins allowed to call the API from a browser (none by default)")
    max_page_size: int = Field(500, ge=1, le=10000, description="most events one search page may return")
    live_video_viewers: int = Field(
        16, ge=1, le=256,
        description="live video viewers (WS /api/sources/{id}/video) at once, all cameras together: each costs the "
                    "camera's bit rate in upload (a 4 Mbit/s camera watched 16 times: 64 Mbit/s); one more is refused "
                    "(4429, the UI shows the analysed pictures)")
    live_video_transcode_max: int = Field(
        2, ge=0, le=64,
        description="cameras whose live video is re-encoded to H.264 at once (those sending H.265, MJPEG...: browsers "
                    "play only H.264), each only while watched, for about a quarter to half a core each (a 1080p "
                    "H.265 camera at 25 fps); a viewer of one more is refused (4429, the UI shows the analysed "
                    "pictures); 0: none is re-encoded, such cameras are refused (4415)")
    live_video_transcode_width_px: int = Field(
        1280, ge=160, le=3840,
        description="re-encoded live video is scaled down to at most this width (aspect kept, never up)")
    map_tiles_url: str | None = Field(
        None, pattern=r"^https?://[^\s\"'<>]+$",
        description="XYZ tile server for the UI map, e.g. https://tiles.example/{z}/{x}/{y}.png (none: a coordinate grid "
                    "and the bundled coastline, works offline)")
    map_tiles_attribution: str = Field("", max_length=200, description="attribution text shown on the map with the tiles")
    trusted_proxies: tuple[str, ...] = Field(
        ("127.0.0.1", "::1"), max_length=64,
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are "
                    "believed: the client address (login throttle, logs) is then the last one in the header that is "
                    "not a trusted proxy. Behind a proxy on another host, add its address, or every login counts "
                    "as the proxy's; [] trusts no header")
    root_path: str = Field(
        "", max_length=200,
        description="the path prefix a reverse proxy serves the service under and strips before passing requests on "
                    "(e.g. /seawatch for https://ops.port.example/seawatch/), for the URLs the API hands out "
                    "(snapshot_url, clip_url); the web UI works under a prefix without it. Empty: the proxy's "
                    "X-Forwarded-Prefix header when a trusted proxy sends one, else the host's root")

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, v: str) -> str:
        if (why := root_path_problem(v)) is not None:
            raise ValueError(why)
        return v.rstrip("/")

    @model_validator(mode="after")
    def _tiles(self) -> "HttpConfig":
        if self.map_tiles_url is not None and not all(k in self.map_tiles_url for k in ("{z}", "{x}", "{y}")):
            raise ValueError("map_tiles_url must contain {z}, {x} and {y}")
        import ipaddress

        if (why := host_problem(self.host)) is not None:
            raise ValueError(f"host: {why}")

        for p in self.trusted_proxies:
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {p!r} is not an IP address or network (e.g. 10.0.0.5, "
                                 "10.0.0.0/24, ::1)") from None
        return self

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn's proxy-header settings: off. The app applies :attr:`trusted_proxies` itself (``create_app``), so
        that the proxy's own address is still known when its ``X-Forwarded-Prefix`` is judged (uvicorn's
        middleware, outside the app, would have replaced it by the forwarded client's). WebSocket messages from a
        client: at most :data:`WS_MAX_MESSAGE_BYTES` (uvicorn's default is 16 MiB, which any client could make the
        server take in before the credential check; a client only ever sends its credential)."""
        return {"proxy_headers": False, "ws_max_size": WS_MAX_MESSAGE_BYTES}

    def tiles_origin(self) -> str | None:
        """scheme://host[:port] of the tile server (the UI's content security policy allows images from it)."""
        if self.map_tiles_url is None:
            return None
        scheme, rest = self.map_tiles_url.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}"


class UserConfig(_Strict):
    """A person who logs in with a password."""

    name: str = Field(pattern=_NAME, description="login name")
    role: Role = Field(description="viewer (sees events, video and the map; changes nothing: wall displays) < operator (also acknowledge, "
                      "dismiss, report, drone abort / restart) < reviewer (also confirm, holds, evidence) < admin (everything)")
    password_hash: SecretStr = Field(description="argon2 hash of the password (seawatch.service.auth.hash_password)")

    @model_validator(mode="after")
    def _hash(self) -> "UserConfig":
        if not self.password_hash.get_secret_value().startswith("$argon2"):
            raise ValueError("password_hash must be an argon2 hash ($argon2id$...), never a plain password")
        return self


class ApiKeyConfig(_Strict):
    """A machine client: sends ``X-API-Key: <key>``; only the key's SHA-256 is configured."""

    name: str = Field(pattern=_NAME, description="name shown in the audit trail")
    role: Role = Field(description="role the key acts with")
    key_sha256: SecretStr = Field(description="lower-case hex SHA-256 of the key (64 digits)")

    @model_validator(mode="after")
    def _hex(self) -> "ApiKeyConfig":
        v = self.key_sha256.get_secret_value()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("key_sha256 must be 64 lower-case hex digits (sha256 of the key)")
        return self


class AuthConfig(_Strict):
    """Users, API keys, tokens and login throttling."""

    users: tuple[UserConfig, ...] = Field((), description="people who log in")
    api_keys: tuple[ApiKeyConfig, ...] = Field((), description="keys for machine clients")
    token_secret: SecretStr | None = Field(
        None, description="key signing bearer tokens (>= 32 characters); default: random per start (tokens die with a restart)"
    )
    token_ttl_s: float = Field(12 * 3600.0, ge=60.0, le=30 * 86400.0, description="bearer token lifetime")
    login_max_failures: int = Field(5, ge=1, le=1000, description="failed logins per client address within login_window_s before it must wait")
    login_window_s: float = Field(60.0, ge=1.0, le=86400.0, description="window for counting failed logins")
    login_user_max_failures: int = Field(
        20, ge=1, le=100_000,
        description="failed logins for one user name within login_window_s, from all addresses together, before that "
                    "name must wait: a guessing attack spread over many addresses gets no more tries per account")

    @model_validator(mode="after")
    def _unique(self) -> "AuthConfig":
        names = [u.name for u in self.users] + [k.name for k in self.api_keys]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"user / API key names must be unique, repeated: {dup}")
        if self.token_secret is not None and len(self.token_secret.get_secret_value()) < 32:
            raise ValueError("token_secret must be at least 32 characters")
        return self


class HomeAssistantConfig(_Strict):
    """Home Assistant MQTT discovery (``service/mqtt.py``): retained entity configurations under the discovery prefix,
    so the cameras' and drones' entities appear in Home Assistant without configuration.yaml entries."""

    enabled: bool = Field(False, description="publish discovery configurations at every (re)connect: per camera a "
                                             "binary sensor per label it can raise, a connectivity sensor and a "
                                             "snapshot camera; per drone a connectivity sensor")
    discovery_prefix: str = Field("homeassistant", max_length=64, pattern=r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$",
                                  description="Home Assistant's discovery prefix (its MQTT integration's setting; "
                                              "homeassistant unless changed there)")


class MqttConfig(_Strict):
    """Optional MQTT publishing (events and per-source state)."""

    enabled: bool = Field(False, description="publish to the broker")
    host: str = Field("localhost", min_length=1, description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    topic_prefix: str = Field("seawatch", pattern=r"^[A-Za-z0-9_\-/]{1,64}$", description="topics are PREFIX/events, PREFIX/<source>/<label>...")
    username: str | None = Field(None, description="broker user")
    password: SecretStr | None = Field(None, description="broker password")
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig,
                                                description="Home Assistant MQTT discovery (off by default)")

    @model_validator(mode="after")
    def _discovery_apart(self) -> "MqttConfig":
        # Home Assistant reads every topic under its prefix as discovery: Seawatch's state must not land there
        ha, prefix = self.home_assistant, self.topic_prefix.strip("/")
        if ha.enabled and not self.enabled:  # it would announce nothing, silently
            raise ValueError("home_assistant.enabled needs mqtt.enabled: true (discovery goes through the MQTT broker)")
        if ha.enabled and any(a == b or a.startswith(b + "/") for a, b in ((prefix, ha.discovery_prefix),
                                                                            (ha.discovery_prefix, prefix))):
            raise ValueError(f"home_assistant.discovery_prefix {ha.discovery_prefix!r} and topic_prefix "
                             f"{self.topic_prefix!r} overlap: Seawatch's topics would be read as discovery messages; "
                             "give them separate roots")
        return self


class WebhookConfig(_Strict):
    """One HTTP endpoint told about incidents (a control-room system, Slack / Mattermost / Teams-style chat, a
    paging gateway). Each stored phase that passes the filters is POSTed as JSON, in order, from a background
    thread; failures are retried with backoff and counted, never lost silently (``service/webhooks.py``)."""

    url: SecretStr = Field(description="http(s) URL to POST to (kept secret: chat webhook URLs carry their token)")
    name: str | None = Field(None, pattern=_NAME, description="name in logs and health; default: the URL's host")
    types: tuple[str, ...] = Field((), description="event types to send (fire, unidentified_vessel, ...); empty: all")
    sources: tuple[str, ...] = Field((), description="source ids to send; empty: all")
    min_severity: Severity = Field("low", description="send events of this severity and above")
    phases: tuple[Literal["start", "update", "end"], ...] = Field(("start", "end"), min_length=1,
                                                                  description="incident phases to send")
    reviews: bool = Field(False, description="also send review changes (acknowledged, dismissed, confirmed)")
    snoozed: bool = Field(False, description="also send events of a camera whose alerts an operator snoozed (they carry "
                                            "attributes.snoozed), and their reviews; default: they are not sent")
    format: Literal["json", "text"] = Field("json", description="json: {kind, phase, event}; text: {\"text\": "
                                            "one line} as Slack / Mattermost / Rocket.Chat incoming webhooks take it")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key: X-Seawatch-Signature: sha256=<hex of the body>")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra request headers (e.g. Authorization)")
    public_url: str | None = Field(None, pattern=r"^https?://\S+$",
                                   description="this service's address as receivers reach it: snapshot and clip links "
                                               "in messages become absolute")
    timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="per request")
    max_queue: int = Field(1000, ge=1, le=100_000, description="messages waiting; beyond, the oldest is dropped and counted")
    max_backoff_s: float = Field(60.0, ge=1.0, le=3600.0, description="longest wait between retries of one message")

    @model_validator(mode="after")
    def _check(self) -> "WebhookConfig":
        from urllib.parse import urlsplit

        u = urlsplit(self.url.get_secret_value())
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        bad = [h for h in self.headers if not h or any(c in h for c in ":\r\n ") or h.lower() in ("content-type", "content-length", "host")]
        if bad:
            raise ValueError(f"headers: not allowed here: {bad}")
        return self

    @property
    def label(self) -> str:
        from urllib.parse import urlsplit

        return self.name or (urlsplit(self.url.get_secret_value()).hostname or "webhook")


_EMAIL_ADDR = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
                         r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_HOST = r"^[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:.]+\]?$"


def check_mail_address(value: str) -> str:
    """``value`` if it is one mailbox (``duty@port.example`` or ``Duty officer <duty@port.example>``), else a
    ValueError saying why. No line breaks (header injection), one ``@``, a host name as its domain."""
    from email.utils import parseaddr

    if not isinstance(value, str) or any(c in value for c in "\r\n\0") or len(value) > 320:
        raise ValueError(f"{value!r} is not an e-mail address")
    _name, addr = parseaddr(value)
    if not addr or not _EMAIL_ADDR.match(addr) or ("<" in value and not value.rstrip().endswith(">")):
        raise ValueError(f"{value!r} is not an e-mail address (name@host.example, or Name <name@host.example>)")
    return value


class EmailRecipientConfig(_Strict):
    """One mailbox group (a duty officer, a shift's shared address) with its own filter and rate limit."""

    name: str = Field(pattern=_NAME, description="name in logs and health (e.g. duty-officer)")
    to: tuple[str, ...] = Field(min_length=1, max_length=50, description="addresses the mail goes to (one mail, all in To:)")
    types: tuple[str, ...] = Field((), description="event types to mail (fire, unidentified_vessel, ...); empty: all")
    sources: tuple[str, ...] = Field((), description="source ids (cameras, drone cameras) to mail; empty: all")
    min_severity: Severity = Field("low", description="mail events of this severity and above")
    phases: tuple[Literal["start", "update", "end"], ...] = Field(("start",), min_length=1,
                                                                  description="incident phases to mail (default: start only)")
    include_snapshot: bool = Field(True, description="attach the incident's snapshot JPEG (shown inline in the HTML part)")
    max_per_minute: int = Field(6, ge=1, le=600,
                                description="mails to this recipient in any 60 s; more incidents meanwhile are held and "
                                            "sent as one summary mail (\"... and 12 more\") once the minute allows")

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, a in enumerate(v):
            try:
                check_mail_address(a)
            except ValueError as exc:
                raise ValueError(f"to[{i}]: {exc}") from None
        return v


class EmailConfig(_Strict):
    """Incidents mailed to duty officers (plain text + HTML, the snapshot inline) through an SMTP server, from a
    background thread with a bounded queue, retries and a per-recipient rate limit (``service/email_alerts.py``)."""

    smtp_host: str = Field(pattern=_HOST, max_length=253, description="SMTP server (the site's mail relay)")
    smtp_port: int | None = Field(None, ge=1, le=65535,
                                  description="its port; default by security: 587 starttls, 465 tls, 25 none")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls: plain connection upgraded (STARTTLS, required); tls: TLS from the first byte "
                                "(SMTPS); none: unencrypted, only to a local relay unless allow_insecure")
    allow_insecure: bool = Field(False, description="allow security: none to a host that is not this machine (a relay "
                                 "on a trusted network): mails, and the password if any, cross it in clear")
    ca_file: str | None = Field(None, description="PEM file of the CA (or the self-signed certificate) the server's "
                                "certificate is checked against; default: the system's CAs")
    username: str | None = Field(None, min_length=1, max_length=256, description="SMTP AUTH user (none: no login)")
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                                     description="name of the environment variable holding the SMTP password (never "
                                                 "in this file), e.g. SEAWATCH_SMTP_PASSWORD")
    from_: str = Field(alias="from", description="sender, e.g. \"Seawatch <seawatch@port.example>\"")
    timeout_s: float = Field(10.0, gt=0.0, le=120.0, description="per SMTP connection and command")
    # at least one: checked below (a min_length here would add a second, confusing error when one recipient is bad)
    recipients: tuple[EmailRecipientConfig, ...] = Field(max_length=50, description="who gets which mails (at least one)")
    public_url: str | None = Field(None, pattern=r"^https?://\S+$",
                                   description="this service's address as the duty officer reaches it: each mail links "
                                               "to the event in the UI (<public_url>/#event=ID)")
    max_queue: int = Field(500, ge=1, le=100_000, description="mails waiting; beyond, the oldest is dropped and counted")
    max_backoff_s: float = Field(300.0, ge=1.0, le=3600.0, description="longest wait between retries while the server "
                                 "is down or refuses for now (4xx)")

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        return check_mail_address(v)

    @model_validator(mode="after")
    def _check(self) -> "EmailConfig":
        import ipaddress

        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together (SMTP AUTH needs both; the password is read from "
                             "the environment variable password_env names, never from this file)")
        if not self.recipients:
            raise ValueError("recipients: name at least one (name, to: [addresses]); without any, leave email out")
        names = [r.name for r in self.recipients]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"recipients: names must be unique, repeated: {dup}")
        if self.security == "none" and not self.allow_insecure:
            host = self.smtp_host.strip("[]")
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = host.lower() in ("localhost", "localhost.localdomain")
            if not local:
                raise ValueError(f"security: none would send mail{' and the password' if self.username else ''} "
                                 f"unencrypted to {self.smtp_host}: use starttls or tls, or set allow_insecure: true "
                                 "for a relay on a trusted network")
        return self

    @property
    def port(self) -> int:
        """The port in use: ``smtp_port``, else the usual one for ``security``."""
        return self.smtp_port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class SimBoatConfig(_Strict):
    """A boat on the simulated sea (a real boat photo from the shared media, a plain hull without it)."""

    lat_deg: float = Field(ge=-90, le=90, description="centre latitude")
    lon_deg: float = Field(ge=-180, le=180, description="centre longitude")
    length_m: float = Field(20.0, ge=1.0, le=400.0, description="length on the water")
    heading_deg: float = Field(90.0, ge=-360, le=360, description="compass direction of the photo's long axis "
                               "(COCO's boat class wants it upright in the image: 90 for a camera looking north)")


class SimCameraConfig(_Strict):
    """The simulated drone's video: rendered from its true pose, sent as H.264 / MPEG-TS to ``udp://127.0.0.1:port``
    (read it as the drone's ``video_source`` with url ``udp://127.0.0.1:PORT`` or ``udp://0.0.0.0:PORT``)."""

    port: int = Field(5600, ge=1, le=65535, description="UDP port on 127.0.0.1 the video is sent to")
    fps: float = Field(2.0, ge=0.2, le=15.0, description="frames per second (rendering costs ~40 ms of CPU a frame "
                       "at 640x360)")
    width_px: int | None = Field(None, ge=16, le=1920, description="frame width; default and required: the drone's "
                                 "camera width (the pipeline geotags with the drone's camera intrinsics)")
    height_px: int | None = Field(None, ge=16, le=1080, description="frame height; default and required: the "
                                  "drone's camera height")
    boats: tuple[SimBoatConfig, ...] = Field((), max_length=50, description="boats drawn on the sea")
    ais_vessels: bool = Field(False, description="also draw the positioned vessels of the live AIS table as boats")
    media_dir: str | None = Field(None, description="folder with the boat photos (MANIFEST.json); default: the "
                                  "shared media, plain hulls when absent")


class SimConfig(_Strict):
    """The built-in MAVLink simulator (``seawatch.drone.sim``) standing in for a drone, started by ``serve``."""

    home_lat_deg: float | None = Field(None, ge=-90, le=90, description="launch point latitude; default: the patrol's first point")
    home_lon_deg: float | None = Field(None, ge=-180, le=180, description="launch point longitude; default: the patrol's first point")
    home_alt_m: float = Field(0.0, ge=-500, le=9000, description="launch point height above mean sea level")
    speed: float = Field(1.0, ge=0.1, le=50.0, description="simulated seconds per wall-clock second")
    camera: SimCameraConfig | None = Field(None, description="send the simulated drone camera's video over UDP "
                                           "(started and stopped with the simulator)")


class FleetDroneConfig(_Strict):
    """What ``serve`` does with one drone of ``drones``: simulate it, fly one of its routes as a patrol.

    Every drone in ``drones`` is linked (and reconnected on link loss) whether or not it has a fleet entry.
    """

    drone: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="id of a drone in `drones`")
    sim: bool | SimConfig = Field(False, description="true (or simulator settings): start the built-in simulator, "
                                  "sending to the drone's connection (udp:HOST:PORT or tcp:HOST:PORT)")
    patrol: str | None = Field(None, description="name of one of the drone's routes to upload and fly once the link is up")
    repeat: bool = Field(True, description="fly the patrol again after the vehicle landed")
    link_timeout_s: float = Field(5.0, ge=0.5, le=120.0, description="wait this long for a heartbeat before retrying the link")


class SourceAlertsConfig(_Strict):
    """Incidents about the watch itself: cameras down, drone links lost, AIS feeds down, fixed cameras moved, covered
    or out of focus (``service/source_watch.py``)."""

    offline_after_s: float | None = Field(
        60.0, ge=1.0, le=86400.0,
        description="a camera down this long (offline and retrying, or failed) becomes a source_offline incident, "
                    "ended when its picture is back; shorter drops raise nothing (null: no such incidents)")
    severity: Literal["low", "medium", "high", "critical"] = Field("high", description="severity of source_offline")
    drone_link_lost_after_s: float | None = Field(
        10.0, ge=1.0, le=3600.0,
        description="a drone whose link is lost this long while armed (flying) becomes a drone_link_lost incident at "
                    "its last known position, ended when the link is back (null: no such incidents)")
    drone_severity: Literal["low", "medium", "high", "critical"] = Field(
        "critical", description="severity of drone_link_lost")
    ais_feed_down: bool = Field(
        True, description="a tcp:// or udp:// AIS feed that decoded nothing for identity.ais_down_after_s (never "
                          "connected, disconnected, or silent) becomes an ais_feed_down incident, ended when messages "
                          "flow again (a replayed log file never does)")
    ais_severity: Literal["low", "medium", "high", "critical"] = Field("high", description="severity of ais_feed_down")
    recording_failed_after_s: float | None = Field(
        30.0, ge=1.0, le=86400.0,
        description="a camera whose recording fails this long while its picture is up (segments cannot be started, "
                    "written or finished: folder gone or unwritable, disk full, mount lost) becomes a "
                    "recording_failed incident, ended when segments are written again; a camera recording nothing "
                    "by configuration, or down (source_offline), raises none (null: no such incidents)")
    recording_failed_severity: Literal["low", "medium", "high", "critical"] = Field(
        "high", description="severity of recording_failed")
    snooze_max_s: float = Field(
        12 * 3600.0, ge=60.0, le=7 * 86400.0,
        description="the longest an operator may snooze a camera's alerts (POST /api/sources/{id}/snooze): its events "
                    "are still stored, marked snoozed, but do not alarm")
    view_check: ViewCheckConfig = Field(
        default_factory=ViewCheckConfig,
        description="fixed cameras' view check (a camera's own sources[].view_check replaces it): moved, covered or "
                    "out of focus against its reference view, held raise_after_s -> camera_moved / camera_covered / "
                    "camera_blurred incidents (vision/view_check.py); drone cameras and water_views cameras never")


class ServeConfig(PipelineConfig):
    """Everything ``seawatch serve`` needs: the ``seawatch run`` pipeline part plus the service parts."""

    storage: StorageConfig = Field(default_factory=StorageConfig, description="database and media")
    service: HttpConfig = Field(default_factory=HttpConfig, description="HTTP bind address, CORS, limits")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="users, roles, API keys, tokens")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT publishing")
    webhooks: tuple[WebhookConfig, ...] = Field((), max_length=20, description="HTTP endpoints told about incidents")
    email: EmailConfig | None = Field(None, description="incidents mailed to duty officers through an SMTP server")
    fleet: tuple[FleetDroneConfig, ...] = Field((), description="per drone: simulator and patrol to fly (drones are linked without an entry too)")
    source_alerts: SourceAlertsConfig = Field(default_factory=SourceAlertsConfig,
                                              description="camera-down, drone-link-lost and AIS-feed-down incidents")

    @model_validator(mode="after")
    def _sources(self) -> "ServeConfig":
        ids = [s.id for s in self.sources]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"source ids must be unique, repeated: {dup}")
        unknown = sorted({z.source for z in self.zones} - set(ids))
        if self.sources and unknown:
            raise ValueError(f"zones refer to sources that are not configured: {unknown}")
        unknown = sorted(set(self.storage.retention.sources) - set(ids))
        if self.sources and unknown:
            raise ValueError(f"storage.retention.sources names sources that are not configured: {unknown} (configured: "
                             f"{', '.join(ids)}); a camera no longer configured: remove its entry (its events then "
                             "follow the site-wide ages) or put holds on what must be kept")
        drones = {d.id: d for d in self.drones}
        seen: set[str] = set()
        for i, f in enumerate(self.fleet):
            d = drones.get(f.drone)
            if d is None:
                raise ValueError(f"fleet[{i}]: drone {f.drone!r} is not in drones {sorted(drones)}")
            if f.drone in seen:
                raise ValueError(f"fleet[{i}]: drone {f.drone!r} has two fleet entries")
            seen.add(f.drone)
            if f.patrol is not None and f.patrol not in d.routes:
                raise ValueError(f"fleet[{i}]: drone {f.drone!r} has no route {f.patrol!r} (routes: {sorted(d.routes)})")
            if f.sim is not False:
                if not d.connection.startswith(("udp:", "tcp:")):
                    raise ValueError(f"fleet[{i}]: a simulated drone needs a udp:HOST:PORT or tcp:HOST:PORT connection, "
                                     f"got {d.connection!r}")
                home_given = isinstance(f.sim, SimConfig) and f.sim.home_lat_deg is not None and f.sim.home_lon_deg is not None
                if not home_given and f.patrol is None:
                    raise ValueError(f"fleet[{i}]: a simulated drone needs sim.home_lat_deg/home_lon_deg or a patrol")
                cam = f.sim.camera if isinstance(f.sim, SimConfig) else None
                if cam is not None:
                    # the pipeline geotags the video with the drone's camera intrinsics: a picture of another size
                    # would be placed wrongly (the simulator used to refuse it only at start, in the log)
                    dw, dh = d.camera.width_px, d.camera.height_px
                    w, h = cam.width_px or dw, cam.height_px or dh
                    if (w, h) != (dw, dh):
                        raise ValueError(f"fleet[{i}].sim.camera is {w}x{h} but the camera of drone {f.drone!r} is {dw}x{dh}: "
                                         "the video is geotagged with the drone's camera, so the sizes must match "
                                         "(leave width_px/height_px out to take the drone's)")
                    if w % 2 or h % 2 or w > 1920 or h > 1080:
                        raise ValueError(f"fleet[{i}].sim.camera: the camera of drone {f.drone!r} is {dw}x{dh}; the simulated "
                                         "camera renders even sizes up to 1920x1080")
        return self

    @property
    def pipeline(self) -> PipelineConfig:
        """The pipeline part (every PipelineConfig field: sources, zones, drones, AIS, identity...)."""
        return PipelineConfig.model_validate({name: getattr(self, name) for name in PipelineConfig.model_fields})


def load_config(path: str | Path | None = None, data: dict[str, Any] | None = None) -> ServeConfig:
    """Validate a YAML file (or a dict; neither = all defaults); every error names the file and the field."""
    where = str(path) if path is not None else "config"
    if data is None:
        if path is None:
            return ServeConfig()
        data = read_yaml_file(path)
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections (sources, zones, storage, ...)")
    check_scalars(data, where)  # NaN, inf, NUL characters: named by their field, not a bound or an OS traceback
    try:
        cfg = ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where, ServeConfig)) from None
    if path is not None:  # a file: unknown models, a missing vessel registry, drone routes, as `serve` would refuse
        check_references(cfg, where)
        ca = cfg.email.ca_file if cfg.email is not None else None
        if ca is not None and not Path(ca).is_file():  # serve's mail thread could never check the server's certificate
            raise ConfigError(f"{where}: email.ca_file: {ca} is not a file (the PEM the SMTP server's certificate is "
                              "checked against)")
    return cfg


# ---- the embedded default (``seawatch serve`` without --config: the main job) --------------------------------------
DEFAULT_AREA = {"name": "Lemmer harbour, IJsselmeer (NL)", "lat_deg": 52.8405, "lon_deg": 5.7030}
DEFAULT_CAMERA_CLIP = "B_fire_smoke/flames_closeup.mp4"
DEFAULT_YARD_CLIP = "D_parking_lanes/carpark_timelapse_nf.mp4"
DEFAULT_AIS_LOG = "F_ais/ais_gpsd_lemmer_nl_ais-nmea.log"  # a receiver log from this very harbour
# a real harbour webcam still (shore_livecams camera vgiy5566, 1280x720, a regatta offshore; 21 labelled vessels) that
# ``seawatch serve`` turns into a short clip looped as the demo's harbour camera (service.demo.still_clip)
DEFAULT_HARBOUR_STILL = "A_boats/shore_vgiy5566_720_2022-07-17_09-22_output_0.jpg"


def default_settings_data(media_dir: Path | None, *, sources: list[tuple[str, str]] | None = None,
                          data_dir: str = "seawatch-data", drone_port: int = 14550,
                          admin_password_hash: str | None = None, token_secret: str | None = None,
                          harbour_clip: Path | None = None, vessel_model: str = "coco_yolov5n",
                          yard_clip: Path | None = None,
                          video_port: int | None = None) -> dict[str, Any]:
    """The main job's configuration as a dict (validated by the caller with ``load_config(data=...)``).

    A quay camera looking over Lemmer harbour (the shared fire clip looped as a live source, surveyed so its events
    are on the map), a yard camera over a fire lane (a car-park time-lapse; ``yard_clip``, its H.264 copy, when given) and, given ``harbour_clip`` (the clip
    made of :data:`DEFAULT_HARBOUR_STILL`), a harbour camera looking out over the lake whose vessels
    (``vessel_model``, tiled, on the water only) become located vessel events with their identity; or the user's
    ``sources`` as ``[(id, url)]``, uncalibrated. A simulated drone flying a patrol
    around the harbour, the harbour's recorded AIS log replayed live in a loop (``loop:``), SQLite under
    ``data_dir`` and one admin user. With the shared
    media the drone also carries video (``drone-cam``: its simulated camera, 640x360 at 4 fps over UDP to
    ``video_port``, any free one by default) looking down on boats cut from the media's photos on its first two legs,
    and COCO's boat class on that video makes located vessel events.
    """
    lat0, lon0 = DEFAULT_AREA["lat_deg"], DEFAULT_AREA["lon_deg"]
    srcs: list[dict[str, Any]] = []
    zones: list[dict[str, Any]] = []
    if sources:
        for sid, url in sources:
            srcs.append({"id": sid, "url": url, "models": ["coco_yolov5n", "fire_smoke"], "analysis_fps": 2.0})
            zones.append({"id": f"{sid[:60]}-all", "source": sid,  # a zone id is 64 characters at most
                          "rules": [{"type": "fire_smoke"}, {"type": "vessel_in_zone", "min_duration_s": 10.0}]})
    elif media_dir is not None and (media_dir / DEFAULT_CAMERA_CLIP).is_file():
        srcs.append({
            "id": "quay-cam", "url": str(media_dir / DEFAULT_CAMERA_CLIP), "models": ["fire_smoke"], "analysis_fps": 2.0,
            "calibration": {"camera": {"width_px": 426, "height_px": 240, "hfov_deg": 60.0},
                            "surveyed": {"lat_deg": lat0 + 0.0015, "lon_deg": lon0 - 0.0030, "alt_m": 12.0,
                                         "pan_deg": 150.0, "tilt_deg": -25.0}},
        })
        zones.append({"id": "quay", "source": "quay-cam", "rules": [{"type": "fire_smoke", "min_duration_s": 2.0}]})
        if (media_dir / DEFAULT_YARD_CLIP).is_file():
            # a time-lapse of a car park (a day in 8 s): lane blockages start and end within each loop, so closed
            # incidents with clips appear within the first minute (the fire above burns on while the service runs);
            # at most one a minute after that (cooldown), where each loop raised one (7 a minute buried the rest)
            srcs.append({
                "id": "yard-cam", "url": str(yard_clip or media_dir / DEFAULT_YARD_CLIP), "models": ["coco_yolov5n"],
                "analysis_fps": 4.0,
                "calibration": {"camera": {"width_px": 640, "height_px": 480, "hfov_deg": 70.0},
                                "surveyed": {"lat_deg": lat0 - 0.0012, "lon_deg": lon0 + 0.0045, "alt_m": 15.0,
                                             "pan_deg": 300.0, "tilt_deg": -30.0}},
            })
            zones.append({"id": "fire-lane", "source": "yard-cam", "polygon_px": [[0, 300], [640, 300], [640, 480], [0, 480]],
                          "rules": [{"type": "fire_lane_blocked", "min_duration_s": 1.0, "clear_after_s": 0.5, "grace_s": 0.5,
                                     "cooldown_s": 60.0}]})
        if harbour_clip is not None:
            # horizon at y 543 of 720 with a 60 deg lens: the camera looks 9.4 deg up; water from there to the beach
            srcs.append({
                "id": "harbour-cam", "url": str(harbour_clip), "models": [vessel_model], "tile": "auto",
                "analysis_fps": 1.0, "water": [[[0, 538], [1280, 538], [1280, 672], [0, 672]]],
                "calibration": {"camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60.0},
                                "surveyed": {"lat_deg": lat0 + 0.0010, "lon_deg": lon0 - 0.0060, "alt_m": 12.0,
                                             "pan_deg": 240.0, "tilt_deg": 9.4}},
            })
            zones.append({"id": "approach", "source": "harbour-cam",
                          "rules": [{"type": "vessel_in_zone", "min_duration_s": 5.0, "min_confidence": 0.4}]})
    d = 0.004  # the patrol box: about 445 m north-south, 540 m east-west
    drone_video = media_dir is not None and not sources and (media_dir / "MANIFEST.json").is_file()
    sim: dict[str, Any] = {"speed": 2.0}
    if drone_video:
        if video_port is None:
            import socket

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # any free port, like the link's
                sock.bind(("127.0.0.1", 0))
                video_port = sock.getsockname()[1]
        # the route flies east along its south side (camera up = east), then north along its east side (up = north):
        # boats lie across the track there, so COCO's side-view boat class sees the photos upright
        south, east = lat0 - d / 2, lon0 + d
        sim["camera"] = {"port": video_port, "fps": 4.0, "boats": [
            {"lat_deg": south, "lon_deg": lon0 - d / 2, "length_m": 16.0, "heading_deg": 180.0},
            {"lat_deg": south, "lon_deg": lon0 + d / 3, "length_m": 18.0, "heading_deg": 180.0},
            {"lat_deg": lat0 - d / 6, "lon_deg": east, "length_m": 16.0, "heading_deg": 90.0},
            {"lat_deg": lat0 + d / 4, "lon_deg": east, "length_m": 18.0, "heading_deg": 90.0}]}
        # COCO's boat class, not the shore-trained `vessel`: on 6 min of this camera's video (2 patrol loops, 8 boat
        # passes) COCO found all 8 passes at 0.25, `vessel` 2 (its training views are shore webcams, not a drone's)
        srcs.append({"id": "drone-cam", "url": f"udp://127.0.0.1:{video_port}", "models": ["coco_yolov5n"],
                     "analysis_fps": 4.0})
        # a boat is under the patrolling drone for 2-3 s (a 30 m footprint at 10 m/s), and on a busy machine the
        # drone's frames may be analysed only every 0.5-1 s: half a second in view makes the event
        zones.append({"id": "drone-patrol", "source": "drone-cam",
                      "rules": [{"type": "vessel_in_zone", "min_duration_s": 0.5}]})
    data: dict[str, Any] = {
        "sources": srcs,
        "zones": zones,
        "drones": [{
            "id": "patrol-1", "connection": f"udp:127.0.0.1:{drone_port}",
            **({"video_source": "drone-cam"} if drone_video else {}),
            "camera": {"width_px": 640, "height_px": 360, "hfov_deg": 70.0},
            "routes": {"harbour": {"type": "perimeter", "alt_m": 40.0, "polygon_lonlat": [
                [lon0 - d, lat0 - d / 2], [lon0 + d, lat0 - d / 2], [lon0 + d, lat0 + d / 2], [lon0 - d, lat0 + d / 2]]}},
        }],
        "fleet": [{"drone": "patrol-1", "sim": sim, "patrol": "harbour", "repeat": True}],
        "storage": {"data_dir": data_dir},
        "auth": {"users": [{"name": "admin", "role": "admin", "password_hash": admin_password_hash}]
                 if admin_password_hash else []},
    }
    if token_secret:
        data["auth"]["token_secret"] = token_secret
    if media_dir is not None and (media_dir / DEFAULT_AIS_LOG).is_file():
        # replayed live and looped (loop:): by its own 2020 clock no position would ever be fresh against today's
        # frames, and vessel identity would hold every unidentified_vessel alert as an AIS outage
        data["ais"] = [LOOP_PREFIX + str(media_dir / DEFAULT_AIS_LOG)]
    return data
