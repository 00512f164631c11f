"""``seawatch run SOURCE... --config FILE``: the full pipeline without the service; events as JSON lines."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

from seawatch.errors import ConfigError, SeawatchError

log = logging.getLogger(__name__)

HELP = "run the pipeline (sources -> detection -> tracking -> rules) and print events as JSON lines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="ID=URL or a file/stream URL (id = file stem); added to the config's sources")
    p.add_argument("--config", "-c", default=None, help="YAML configuration (sources, tracker, events, zones)")
    p.add_argument("--models", default=None, help="models for command-line sources (comma-separated)")
    p.add_argument("--tile", default=None, help="tiled inference SIZES[:OVERLAP][+flip] (e.g. 640, auto, "
                                                   "auto,288+flip) for command-line sources")
    p.add_argument("--analysis-fps", type=float, default=None,
                   help="analysed frames per second of video, above 0 and at most 60 (command-line sources; default 2)")
    p.add_argument("--out", default=None, help="append events to this JSON-lines file instead of printing them "
                                               "(an existing file is kept: a log of every run; created when absent)")
    p.add_argument("--snapshots", default=None, help="folder for event snapshot JPEGs")
    p.add_argument("--start-utc", default=None,
                   help="UTC time of the first frame of file sources (ISO 8601; default: now)")
    p.add_argument("--realtime", action="store_true", help="pace files at their frame rate (default: as fast as possible)")


def _parse_source(text: str) -> tuple[str, str]:
    if "=" in text and not re.match(r"^[a-z]+://", text.split("=", 1)[0]):
        sid, url = text.split("=", 1)
        return sid, url
    stem = Path(text.split("?")[0]).stem if "://" not in text else re.sub(r"\W+", "_", text.split("://", 1)[1])[:40]
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem) or "source", text


def source_arg_label(text: str) -> str:
    """A SOURCE argument as an error message shows it: ``ID=URL`` with the URL's credentials redacted."""
    from seawatch.streams.urls import redact_url

    sid, url = _parse_source(text)
    return redact_url(text) if url == text else f"{sid}={redact_url(url)}"


def _start_ns(text: str | None) -> int:
    from seawatch.streams.clock import parse_utc_ns

    return parse_utc_ns(text, "--start-utc") if text else time.time_ns()


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, ``docker stop``, ``kill``) while analysing: stopped like Ctrl-C."""


def _sigterm_interrupts():
    """Make SIGTERM stop the run as SIGINT does (open incidents closed and written, the summary printed) instead of
    killing the process with only the start phases written; returns the function that puts the old handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def terminate(signum, frame):
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, terminate)
    return lambda: signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from seawatch.streams.source import Source, SourceConfig, State
    from seawatch.vision.config import format_errors
    from seawatch.vision.events import JsonLinesSink
    from seawatch.vision.pipeline import AnalysisRate, Pipeline, SourceSpec, analyse_sources, load_pipeline_config

    start_given = _start_ns(args.start_utc) if args.start_utc else None  # a bad time is said before models load
    cfg = load_pipeline_config(args.config)
    specs = list(cfg.sources)
    known = {s.id for s in specs}
    for text in args.sources:
        sid, url = _parse_source(text)
        if sid in known:
            specs = [s.model_copy(update={"url": url}) if s.id == sid else s for s in specs]
            continue
        extra = {}
        if args.models is not None:
            extra["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
        if args.tile is not None:
            extra["tile"] = args.tile
        if args.analysis_fps is not None:  # 0 is refused by the field's bound, not taken as "the default"
            extra["analysis_fps"] = args.analysis_fps
        try:
            specs.append(SourceSpec(id=sid, url=url, **extra))
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, f"command-line source {source_arg_label(text)!r}")) from None
        known.add(sid)
    if not specs:
        raise ConfigError("no sources: give SOURCE arguments or `sources:` in the config")
    cfg = cfg.model_copy(update={"sources": tuple(specs)})  # keeps drones, ais, registry, identity
    unknown_zone_sources = {z.source for z in cfg.zones} - {s.id for s in specs}
    if unknown_zone_sources:
        print(f"seawatch: warning: zones refer to sources that are not running: {sorted(unknown_zone_sources)}",
              file=sys.stderr)
    # append, never truncate: events a previous run recorded are kept whatever happens to this one; opened before
    # the (slow) model loading so a path that cannot be written is reported at once (InputError)
    created = args.out is not None and not Path(args.out).exists()
    sink = JsonLinesSink(args.out if args.out else sys.stdout, snapshot_dir=args.snapshots)
    try:
        pipeline = Pipeline(cfg, [sink])
    except BaseException:
        sink.close()
        if created and Path(args.out).is_file() and Path(args.out).stat().st_size == 0:
            Path(args.out).unlink()  # leave no empty file behind a run that never started
        raise
    start = start_given if start_given is not None else time.time_ns()
    threading = __import__("threading")
    stop_event, wakeup = threading.Event(), threading.Event()
    readers = {}
    for s in specs:
        sc = SourceConfig(source_id=s.id, url=s.url, pace="realtime" if args.realtime else "fast", start_time_ns=start)
        readers[s.id] = Source(sc, stop=stop_event, wakeup=wakeup).start()
    failed = 0
    n_events = 0

    def ended(sid: str) -> None:
        nonlocal failed
        st = readers[sid].status()
        if st.state == State.FAILED or (st.frames_decoded == 0 and st.last_error):
            print(f"seawatch: error: source {sid} ({st.url}): {st.last_error or st.state.value}", file=sys.stderr)
            failed += 1

    def frame_failed(sid: str, exc: Exception) -> None:
        if isinstance(exc, SeawatchError):
            print(f"seawatch: error: source {sid}: {exc}", file=sys.stderr)
        else:
            log.error("source %s: pipeline failed on a frame", sid, exc_info=exc)

    workers = pipeline.workers  # analysis_workers, resolved with the models' threads
    t0 = time.monotonic()
    restore = _sigterm_interrupts()
    try:
        # the sources' frames by the analysis workers, never waiting on one queue (a dead camera would slow every
        # other one); a slow source holds up only its own worker
        n_events += analyse_sources(pipeline, readers, wakeup, stop_event, AnalysisRate(specs), workers,
                                    on_ended=ended, on_error=frame_failed)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        print(f"seawatch: {how}; closing open incidents", file=sys.stderr)
        n_events += len(pipeline.close(None, None, "stopped"))
    finally:
        restore()
        stop_event.set()
        for src in readers.values():
            src.stop()
        sink.close()
    wall_s = time.monotonic() - t0
    fps = pipeline.frames / wall_s if wall_s > 0 else 0.0
    print(f"seawatch: {pipeline.frames} frames analysed ({fps:.1f}/s, {workers} worker(s)), {n_events} events",
          file=sys.stderr)
    return 1 if failed else 0
