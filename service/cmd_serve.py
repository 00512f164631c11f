"""``seawatch serve --config FILE``: sources -> pipeline -> event store, and the HTTP API, in one process."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "run the pipeline and the API (event store, search, review, clips) in one process"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML configuration (see seawatch config check)")
    p.add_argument("--source", action="append", default=[], metavar="ID=URL",
                   help="add a source (file, rtsp://, http:// MJPEG, udp://); repeatable")
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

    cfg = settings_from_args(args)
    if not cfg.auth.users and not cfg.auth.api_keys:
        log.warning("no users or API keys configured: every endpoint but /api/health will refuse access "
                    "(add auth.users; seawatch serve --hash-password makes a hash)")
    return serve(cfg)


def settings_from_args(args: argparse.Namespace):
    """The config file (or defaults) with ``--source``, ``--host`` and ``--port`` applied, validated again."""
    from pydantic import ValidationError

    from seawatch.errors import ConfigError
    from seawatch.service.config import ServeConfig, format_errors, load_config
    from seawatch.vision.cmd_run import _parse_source
    from seawatch.vision.pipeline import SourceSpec

    cfg = load_config(args.config)
    data = cfg.model_dump(mode="python")
    if args.source:
        extra = []
        for text in args.source:
            sid, url = _parse_source(text)
            try:
                extra.append(SourceSpec(id=sid, url=url))
            except ValidationError as exc:
                raise ConfigError(format_errors(exc, f"--source {text}")) from None
        data["sources"] = tuple(cfg.sources) + tuple(extra)
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


def serve(cfg) -> int:
    import uvicorn

    from seawatch.service.runner import Service

    service = Service(cfg).start()
    try:
        server = uvicorn.Server(uvicorn.Config(service.app, host=cfg.service.host, port=cfg.service.port,
                                               log_level="warning", lifespan="on"))
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
