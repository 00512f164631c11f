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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from seawatch.errors import ConfigError
from seawatch.vision.pipeline import PipelineConfig

Role = Literal["operator", "reviewer", "admin"]
ROLES: tuple[str, ...] = ("operator", "reviewer", "admin")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordingConfig(_Strict):
    """Recording of every source into segments (remuxed, no re-encode), so event clips can be cut from them."""

    enabled: bool = Field(True, description="record sources under media_dir/recordings")
    segment_s: float = Field(60.0, ge=2.0, le=3600.0, description="segment length (a new segment starts at the next keyframe)")
    max_age_s: float = Field(7 * 86400.0, ge=60.0, description="segments older than this are deleted")
    max_gb_per_source: float = Field(20.0, gt=0.0, description="oldest segments of a source are deleted beyond this size")
    ring_s: float = Field(60.0, ge=5.0, le=600.0, description="in-memory pre-event buffer per source; covers clips not yet in a finished segment")


class StorageConfig(_Strict):
    """Where events and media are kept."""

    data_dir: str = Field("seawatch-data", min_length=1, description="folder for the default SQLite database and media (created on start)")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL (sqlite:///PATH or postgresql+psycopg://...); default: SQLite file seawatch.db in data_dir",
    )
    media_dir: str | None = Field(None, description="folder for snapshots, clips and recordings; default: data_dir/media")
    recording: RecordingConfig = Field(default_factory=RecordingConfig, description="segment recording for clips")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).expanduser().resolve() / 'seawatch.db'}"

    def resolved_media_dir(self) -> Path:
        return Path(self.media_dir).expanduser().resolve() if self.media_dir else Path(self.data_dir).expanduser().resolve() / "media"


class HttpConfig(_Strict):
    """The HTTP API and web UI."""

    host: str = Field("127.0.0.1", min_length=1, description="bind address (127.0.0.1 = this machine only)")
    port: int = Field(8080, ge=1, le=65535, description="TCP port")
    cors_origins: tuple[str, ...] = Field((), description="origins allowed to call the API from a browser (none by default)")
    max_page_size: int = Field(500, ge=1, le=10000, description="most events one search page may return")


class UserConfig(_Strict):
    """A person who logs in with a password."""

    name: str = Field(pattern=_NAME, description="login name")
    role: Role = Field(description="operator (view, acknowledge, dismiss) < reviewer (also confirm) < admin (everything)")
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

    @model_validator(mode="after")
    def _unique(self) -> "AuthConfig":
        names = [u.name for u in self.users] + [k.name for k in self.api_keys]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"user / API key names must be unique, repeated: {dup}")
        if self.token_secret is not None and len(self.token_secret.get_secret_value()) < 32:
            raise ValueError("token_secret must be at least 32 characters")
        return self


class MqttConfig(_Strict):
    """Optional MQTT publishing (events and per-source state)."""

    enabled: bool = Field(False, description="publish to the broker")
    host: str = Field("localhost", min_length=1, description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    topic_prefix: str = Field("seawatch", pattern=r"^[A-Za-z0-9_\-/]{1,64}$", description="topics are PREFIX/events, PREFIX/<source>/<label>...")
    username: str | None = Field(None, description="broker user")
    password: SecretStr | None = Field(None, description="broker password")


class ServeConfig(PipelineConfig):
    """Everything ``seawatch serve`` needs: the ``seawatch run`` pipeline part plus the service parts."""

    storage: StorageConfig = Field(default_factory=StorageConfig, description="database and media")
    service: HttpConfig = Field(default_factory=HttpConfig, description="HTTP bind address, CORS, limits")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="users, roles, API keys, tokens")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT publishing")

    @model_validator(mode="after")
    def _sources(self) -> "ServeConfig":
        ids = [s.id for s in self.sources]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"source ids must be unique, repeated: {dup}")
        unknown = sorted({z.source for z in self.zones} - set(ids))
        if self.sources and unknown:
            raise ValueError(f"zones refer to sources that are not configured: {unknown}")
        return self

    @property
    def pipeline(self) -> PipelineConfig:
        """The pipeline part (every PipelineConfig field: sources, zones, drones, AIS, identity...)."""
        return PipelineConfig.model_validate({name: getattr(self, name) for name in PipelineConfig.model_fields})


def format_errors(exc: ValidationError, where: str) -> str:
    """One line per error: ``FILE: field.path[index]: message``."""
    lines = []
    for e in exc.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {path or '(top level)'}: {msg}")
    return f"invalid configuration ({len(lines)} error{'s' if len(lines) != 1 else ''}):\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, data: dict[str, Any] | None = None) -> ServeConfig:
    """Validate a YAML file (or a dict; neither = all defaults); every error names the file and the field."""
    where = str(path) if path is not None else "config"
    if data is None:
        if path is None:
            return ServeConfig()
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from None
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections (sources, zones, storage, ...)")
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from None
