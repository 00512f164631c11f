"""``seawatch ais show SOURCE``: read AIS NMEA from a file or a socket and print the vessel table."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

HELP = ("read AIS NMEA from a file (or loop:FILE), tcp://HOST:PORT (connect) or udp://HOST:PORT (listen) and show the "
        "vessel table")


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type): NaN, inf, 0 and negatives are usage errors."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite number of seconds")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="NMEA log file, loop:FILE (as in the ais config: the file's table after one "
                                       "pass, by its own clock), tcp://HOST:PORT or udp://HOST:PORT")
    parser.add_argument("--seconds", type=_seconds, default=30.0, help="how long to listen to a socket (default 30)")
    parser.add_argument("--max-age", type=_seconds, default=600.0, help="hide vessels not heard for this long, s")
    parser.add_argument("--rmc-time", action=argparse.BooleanOptionalAction, default=None,
                        help="time AIS lines without a tag-block time by the feed's own $..RMC fixes (combined "
                             "GNSS+AIS receivers); default: on for a log file (its own clock, as the pipeline's log "
                             "replay does), off for a socket (the receive clock)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")


def collect(args: argparse.Namespace) -> tuple[list, dict, int]:
    """(vessel rows, decoder stats, table time ns)."""
    from seawatch.streams import ais
    from seawatch.vision.identity.vessels import VesselTable
    from seawatch.vision.vessel_identity import ais_loop_path

    loop = ais_loop_path(args.source)  # a live replay's log: its table after one pass, by the log's own clock
    path = args.source if loop is None else loop
    live = loop is None and "://" in args.source
    decoder = ais.AisDecoder(use_rmc_time=(not live) if args.rmc_time is None else args.rmc_time)
    table = VesselTable(max_age_s=args.max_age)
    if live:
        feed = ais.open_feed(args.source, decoder=decoder, timeout_s=min(1.0, max(0.1, args.seconds)))
        timer = threading.Timer(args.seconds, feed.stop)
        timer.start()
        try:
            for msg in feed.messages():
                table.update(msg)
        finally:
            timer.cancel()
            feed.stop()
        now = time.time_ns()
        _check_feed(feed, args.seconds)
    else:
        # a log's "now" is its newest time; a message stamped out of line with the rest of the log (one RMC with a
        # wrong date, a receiver clock a year off) would otherwise become "now" and hide every real vessel
        msgs = ais.drop_time_outliers(ais.read_file(path, decoder), max_jump_s=max(60.0, args.max_age),
                                      stats=decoder.stats)
        table.update_many(msgs)
        now = table.latest_ns or 0
    stats = decoder.stats.as_dict() | {"invalid_mmsi": table.rejected}
    return table.snapshot(now), stats, now


def _check_feed(feed, seconds: float) -> None:
    """A TCP feed that never connected is an error (an empty table would look like an empty sea); a UDP port that
    received nothing is said on stderr."""
    from seawatch.errors import StreamError
    from seawatch.streams import ais

    if isinstance(feed, ais.TcpAisFeed) and feed.connects == 0:
        raise StreamError(f"AIS feed {feed.name}: never connected in {seconds:g} s ({feed.last_error or 'no answer'})")
    if isinstance(feed, ais.UdpAisFeed) and feed.datagrams == 0:
        print(f"seawatch: warning: AIS feed {feed.name}: no datagram received in {seconds:g} s", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    rows, stats, now = collect(args)
    if args.json:
        print(json.dumps({"time_ns": now, "stats": stats, "vessels": [r.as_dict() for r in rows]},
                         ensure_ascii=False, indent=1))
        return 0
    print(f"{'MMSI':>9}  {'name':<20} {'callsign':<8} {'type':<16} {'len_m':>5} {'lat_deg':>10} {'lon_deg':>11} "
          f"{'sog_kn':>6} {'cog_deg':>7} {'age_s':>6}")
    for r in rows:
        f = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        print(f"{r.mmsi:>9}  {(r.name or ''):<20.20} {(r.callsign or ''):<8.8} {(r.ship_type_text or ''):<16.16} "
              f"{f(r.length_m, '.0f'):>5} {f(r.lat_deg, '.5f'):>10} {f(r.lon_deg, '.5f'):>11} {f(r.sog_kn, '.1f'):>6} "
              f"{f(r.cog_deg, '.1f'):>7} {r.age_s(now):>6.0f}")
    bad = sum(stats["malformed"].values())
    print(f"{len(rows)} vessels; {stats['messages']} messages from {stats['sentences']} AIS sentences "
          f"({stats['lines']} lines); {bad} malformed {stats['malformed'] or ''}; "
          f"{stats.get('fragments_dropped', 0)} fragments dropped, {stats.get('duplicate_fragments', 0)} duplicate "
          f"fragments ignored; {stats['invalid_mmsi']} with an invalid MMSI; by type {stats['by_type']}")
    return 0
