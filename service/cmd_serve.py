"""``seawatch serve --config FILE``: sources -> pipeline -> event store, and the HTTP API, in one process.

Without ``--config`` it runs the embedded default (the main job): quay, yard and harbour cameras from the shared
sample footage (or the ``--source`` URLs), a simulated drone flying a patrol, the recorded AIS log of the same harbour, SQLite under
``./seawatch-data`` and an ``admin`` user whose one-time password is printed (``$SEAWATCH_ADMIN_PASSWORD`` sets it).
"""

from __future__ import annotations

import argparse
import logging
import sys

HELP = ("run the pipeline, drones and AIS with the API and web UI in one process "
        "(no --config: the built-in demo with a camera, a simulated patrol drone and AIS)")
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None,
                   help="YAML configuration (see seawatch config check); none: the embedded demo (camera, drone, AIS)")
    p.add_argument("--data-dir", default=None, help="with no --config: where the database and media go (default ./seawatch-data)")
    p.add_argument("--source", action="append", default=[], metavar="ID=URL",
                   help="add a source (file, rtsp://, http:// MJPEG, udp://); repeatable; with no --config it replaces "
                        "the demo cameras")
    p.add_argument("--host", default=None, help="bind address (overrides service.host)")
    p.add_argument("--port", type=int, default=None, help="TCP port (overrides service.port)")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password (stdin or prompt), print its argon2 hash for auth.users[].password_hash, exit")


def run(args: argparse.Namespace) -> int:
    from seawatch.errors import ConfigError

    if args.hash_password:
        import getpass

        from seawatch.service.auth import hash_password

        pw = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not pw:
            raise ConfigError("empty password")
        print(hash_password(pw))
        return 0

    if args.config is not None and args.data_dir is not None:
        raise ConfigError("--data-dir is for the built-in demo; with --config set storage.data_dir in the file")
    if args.config is None:
        if args.data_dir is not None:
            _make_data_dir(args.data_dir)
        cfg, password = default_settings(args)
        _announce_default(cfg, password)
    else:
        cfg = settings_from_args(args)
    if not cfg.auth.users and not cfg.auth.api_keys:
        log.warning("no users or API keys configured: every endpoint but /api/health will refuse access "
                    "(add auth.users; seawatch serve --hash-password makes a hash)")
    return serve(cfg)


def _make_data_dir(text: str) -> None:
    """Create ``--data-dir`` now, so a path that cannot be a folder is one error naming the option (a regular file,
    /proc, a NUL character), not a traceback from deep in the start."""
    from pathlib import Path

    from seawatch.errors import ConfigError

    if not text or "\0" in text:
        raise ConfigError(f"--data-dir {text!r}: not a folder name")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--data-dir {text}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "media").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--data-dir {text}: cannot create the folder: {exc.strerror or exc}") from None


def settings_from_args(args: argparse.Namespace):
    """The config file (or defaults) with ``--source``, ``--host`` and ``--port`` applied, validated again."""
    from pydantic import ValidationError

    from seawatch.errors import ConfigError
    from seawatch.service.config import ServeConfig, format_errors, load_config

    cfg = load_config(args.config)
    data = cfg.model_dump(mode="python")
    if args.source:
        data["sources"] = tuple(cfg.sources) + tuple(_source_specs(args.source))
    svc_over = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if svc_over:
        data["service"] = {**cfg.service.model_dump(), **svc_over}  # a dict, so the bounds are checked again
    if args.source or svc_over:
        # re-validate (unique ids, ports in range); secrets stay SecretStr through model_dump(mode="python")
        try:
            cfg = ServeConfig.model_validate({**data, "storage": cfg.storage, "auth": cfg.auth, "mqtt": cfg.mqtt})
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "command line")) from None
    return cfg


def _source_specs(texts: list[str]) -> list:
    """The ``--source`` values as SourceSpecs; a bad one is a ConfigError naming that ``--source`` (its URL's
    credentials redacted), not a field of the configuration it would have gone into."""
    from pydantic import ValidationError

    from seawatch.errors import ConfigError
    from seawatch.service.config import format_errors
    from seawatch.vision.cmd_run import _parse_source, source_arg_label
    from seawatch.vision.pipeline import SourceSpec

    specs = []
    for text in texts:
        sid, url = _parse_source(text)
        try:
            specs.append(SourceSpec(id=sid, url=url))
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, f"--source {source_arg_label(text)!r}")) from None
    return specs


def default_settings(args: argparse.Namespace):
    """The embedded default configuration and the admin password (generated unless $SEAWATCH_ADMIN_PASSWORD)."""
    import os
    import secrets
    import socket

    from pydantic import ValidationError

    from seawatch.errors import ConfigError
    from seawatch.paths import shared_media_dir
    from seawatch.service.auth import hash_password
    from seawatch.service.config import ServeConfig, default_settings_data, format_errors

    password = os.environ.get("SEAWATCH_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the simulator's link port: any free one
        s.bind(("127.0.0.1", 0))
        drone_port = s.getsockname()[1]
    media = shared_media_dir()
    sources = [(s.id, s.url) for s in _source_specs(args.source)]
    if not sources and media is None:
        log.warning("no shared sample media (../shared/media or $SEAWATCH_SHARED/media) and no --source: "
                    "serving the drone and AIS only")
    data_dir = args.data_dir or "seawatch-data"
    demo: dict = {}
    if media is not None and not sources:
        from pathlib import Path

        from seawatch.service.demo import harbour_clip, yard_clip
        from seawatch.vision import registry

        demo["harbour_clip"] = harbour_clip(media, Path(data_dir))
        demo["yard_clip"] = yard_clip(media, Path(data_dir))  # H.264: its clips are remuxed, not re-encoded
        # the fine-tuned vessel model when this machine has one (a GPU build), else COCO's boat class
        demo["vessel_model"] = "vessel" if registry.is_provisioned("vessel") else "coco_yolov5n"
    data = default_settings_data(media, sources=sources, data_dir=data_dir, drone_port=drone_port,
                                 admin_password_hash=hash_password(password), token_secret=secrets.token_urlsafe(32),
                                 **demo)
    if args.host is not None:
        data.setdefault("service", {})["host"] = args.host
    if args.port is not None:
        data.setdefault("service", {})["port"] = args.port
    try:
        return ServeConfig.model_validate(data), password
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, "default configuration")) from None


def _announce_default(cfg, password: str) -> None:
    import os

    host = "127.0.0.1" if cfg.service.host in ("0.0.0.0", "::") else cfg.service.host
    chosen = bool(os.environ.get("SEAWATCH_ADMIN_PASSWORD"))
    print(f"seawatch: no --config: the embedded demo ({len(cfg.sources)} camera(s), {len(cfg.drones)} simulated drone(s), "
          f"{len(cfg.ais)} AIS log(s)); data in {cfg.storage.data_dir}/\n"
          f"seawatch: open http://{host}:{cfg.service.port}/ and log in as admin with password {password}"
          + ("" if chosen else "\nseawatch: (a new password each start; set SEAWATCH_ADMIN_PASSWORD to choose one)"),
          file=sys.stderr, flush=True)


def serve(cfg) -> int:
    import uvicorn

    from seawatch.service.runner import Service

    service = Service(cfg).start()
    try:
        server = uvicorn.Server(uvicorn.Config(service.app, host=cfg.service.host, port=cfg.service.port,
                                               log_level="warning", lifespan="on", **cfg.service.uvicorn_options()))
        print(f"seawatch: serving on http://{cfg.service.host}:{cfg.service.port} "
              f"({len(cfg.sources)} source(s)); Ctrl-C stops", file=sys.stderr)
        _run_until_signal(server)
    finally:
        service.stop()
        print(f"seawatch: stopped; {service.sink.stored if service.sink else 0} event phase(s) stored this run",
              file=sys.stderr)
    return 0


def _run_until_signal(server) -> None:
    """Serve until SIGINT/SIGTERM. uvicorn shuts down gracefully on either and then re-raises the signal to the
    handler that was installed before it; a no-op handler there lets the caller's orderly shutdown run (a default
    SIGTERM handler would kill the process before open incidents are ended and the store closed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    old = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
