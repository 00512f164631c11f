"""AIS ingest: NMEA 0183 ``!AIVDM``/``!AIVDO`` sentences from files, TCP and UDP, decoded with pyais.

What this module does, and nothing more (the vessel state table lives in ``seawatch.vision.identity``):

- splits an optional IEC 61162-450 / NMEA 4.0 tag block (``\\s:station,c:1671620143*hh\\``) off each line, checks
  its checksum and takes ``c:`` (unix seconds, or milliseconds when it is that large) as the message time; a time
  before 2000 or more than a day after it was received is a malformed tag block (:func:`plausible_time_ns`);
- reassembles multi-sentence messages (type 5, long binary messages). Fragments are matched by source (the tag
  block's ``g:`` group id when there is one, else its ``s:`` station), talker and sentence type, channel,
  sequential id and fragment count, so fragments of different messages may interleave (several receivers merged,
  channels A and B) and arrive in any order (fragment 2 before fragment 1). A second copy of a fragment (the
  same sentence twice: receivers merged upstream, a doubled network path) is ignored and counted
  (``duplicate_fragments``); receptions tagged with different ``s:`` stations stay two messages, as single
  sentences do. A message not complete within 2 s of its first fragment (:data:`FRAGMENT_TIMEOUT_S`: a message's
  fragments are sent in one burst, and a receiver's ids 0-9 come round within seconds on a busy channel) is
  dropped and counted, so a later message reusing its id never takes its fragments; in a log the wait runs on the
  log's own time, or over 150 AIS sentences when the log has no time. At most 1024 fragments are held
  (:data:`MAX_BUFFERED_FRAGMENTS`): a flood of fragments that never complete evicts the oldest unfinished message,
  counted, so memory stays bounded. When two unfinished messages with one key could both take a fragment, it is
  dropped and counted, never guessed;
- decodes with pyais and turns position reports (types 1, 2, 3, 18, 19, 27) and static data (5, 24, and the
  static half of 19) into plain frozen dataclasses with units in the names and "not available" sentinels
  mapped to ``None``;
- counts every malformed, empty, bad-checksum or undecodable sentence and every dropped fragment in
  :class:`AisStats` (by reason) and skips it. Bad input is never fatal.

Time: a message's ``time_ns`` comes from the tag block when there is one (``time_source="tag_block"``), else
from the last ``$xxRMC`` sentence of the same feed when ``use_rmc_time`` is on (own-ship GNSS time in combined
receiver logs, ``"gnss_rmc"``), else from the receive clock (``"receiver"``). A log file (:func:`read_file`) is a
recording, not a live feed: there a line without a time of its own takes the time of the last timed line before
it (``"carried"``; ``"gnss_rmc"`` when that was an RMC fix), and the lines before the first timed line take that
line's time, so a log that mixes tagged and untagged lines runs on its own clock, never the wall clock; only a
log with no time at all keeps the receive clock. All times are int ns UTC.
"""

from __future__ import annotations

import calendar
import datetime
import logging
import math
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from seawatch.errors import InputError, StreamError
from seawatch.streams.urls import redact_url

log = logging.getLogger(__name__)

POSITION_TYPES = frozenset({1, 2, 3, 18, 19, 27})
STATIC_TYPES = frozenset({5, 24, 19})

_KN_TO_MPS = 1852.0 / 3600.0


# ----------------------------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class AisPosition:
    """A position report. ``None`` where the transponder sent "not available".

    ``lat_deg``/``lon_deg`` WGS84 degrees; ``sog_kn`` speed over ground in knots; ``cog_deg``/``heading_deg``
    degrees true [0, 360); ``utc_second`` is the report's own second-of-minute stamp (0-59) when given.
    """

    mmsi: int
    msg_type: int
    time_ns: int
    time_source: str
    lat_deg: float | None
    lon_deg: float | None
    sog_kn: float | None
    cog_deg: float | None
    heading_deg: float | None
    nav_status: int | None
    utc_second: int | None
    ais_class: str  # "A" (1/2/3), "B" (18/19), "LR" (27)
    channel: str = ""
    source_station: str | None = None
    static: AisStatic | None = None  # only type 19, which also carries name, type and dimensions

    @property
    def sog_mps(self) -> float | None:
        return None if self.sog_kn is None else self.sog_kn * _KN_TO_MPS

    @property
    def has_position(self) -> bool:
        return self.lat_deg is not None and self.lon_deg is not None


@dataclass(frozen=True, slots=True)
class AisStatic:
    """Static and voyage data (type 5, type 24 part A or B, static half of type 19). Absent fields are ``None``."""

    mmsi: int
    msg_type: int
    time_ns: int
    time_source: str
    name: str | None = None
    callsign: str | None = None
    imo: int | None = None
    ship_type: int | None = None
    to_bow_m: float | None = None
    to_stern_m: float | None = None
    to_port_m: float | None = None
    to_starboard_m: float | None = None
    destination: str | None = None
    draught_m: float | None = None
    part: int | None = None  # type 24 part number (0 = A: name, 1 = B: type/callsign/dimensions)
    channel: str = ""
    source_station: str | None = None

    @property
    def length_m(self) -> float | None:
        if self.to_bow_m is None or self.to_stern_m is None:
            return None
        return self.to_bow_m + self.to_stern_m

    @property
    def beam_m(self) -> float | None:
        if self.to_port_m is None or self.to_starboard_m is None:
            return None
        return self.to_port_m + self.to_starboard_m


@dataclass(frozen=True, slots=True)
class AisOther:
    """Any other decoded message type (base station reports, binary messages...), kept for counting."""

    mmsi: int
    msg_type: int
    time_ns: int
    time_source: str


AisMessage = AisPosition | AisStatic | AisOther


@dataclass
class AisStats:
    """Counters of one decoder.

    ``malformed`` is keyed by reason: ``checksum``, ``empty_payload``, ``tag_block``, ``rmc_time`` (with
    ``use_rmc_time``: an RMC time that is not a time or outside the window), ``field_count``,
    ``fragment_fields``, ``parse``, ``decode``, and for multi-sentence messages (counted once per message):
    ``incomplete_message`` (not all fragments arrived within the reassembly window or before the end of the
    input), ``fragment_overflow`` (dropped unfinished to keep the fragment buffer bounded), ``ambiguous_fragment``
    (a fragment that two unfinished messages with the same key could both take; counted per fragment) and
    ``assembly``. ``fragments_dropped`` counts the sentences of those messages (fragments that never became part
    of a decoded message). ``duplicate_fragments`` counts second copies of a fragment (the same sentence from two
    receivers), which are ignored: they are not malformed and lose nothing.
    """

    lines: int = 0
    blank_lines: int = 0
    non_ais_lines: int = 0
    sentences: int = 0
    messages: int = 0
    by_type: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)
    fragments_dropped: int = 0
    duplicate_fragments: int = 0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def as_dict(self) -> dict:
        return {
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "non_ais_lines": self.non_ais_lines,
            "sentences": self.sentences,
            "messages": self.messages,
            "by_type": dict(sorted(self.by_type.items())),
            "malformed": dict(sorted(self.malformed.items())),
            "fragments_dropped": self.fragments_dropped,
            "duplicate_fragments": self.duplicate_fragments,
        }


# ----------------------------------------------------------------------------------------------- helpers
def _nmea_checksum(body: bytes) -> int:
    c = 0
    for b in body:
        c ^= b
    return c


def parse_tag_block(raw: bytes) -> dict[str, str]:
    """Parse the inside of a tag block (between the backslashes), e.g. ``s:rcv1,c:1671620143*5A``.

    Returns ``{code: value}``. Raises :class:`ValueError` when the checksum is present and wrong or a field
    has no ``code:value`` shape.
    """
    if b"*" in raw:
        body, _, cs = raw.rpartition(b"*")
        try:
            expected = int(cs[:2], 16)
        except ValueError as exc:
            raise ValueError(f"tag block checksum {cs!r} is not hex") from exc
        if _nmea_checksum(body) != expected:
            raise ValueError("tag block checksum mismatch")
    else:
        body = raw
    out: dict[str, str] = {}
    for part in body.decode("ascii", "replace").split(","):
        if not part:
            continue
        code, sep, value = part.partition(":")
        if not sep or not code:
            raise ValueError(f"tag block field {part!r} is not code:value")
        out[code] = value
    return out


# The window a message time (tag block ``c:`` or RMC) must fall in to be used. Earliest: 2000-01-01T00:00Z; AIS
# (ITU-R M.1371) went into service from 2002, so no real AIS time is older. Latest: one day after the later of the
# receive clock and the wall clock: a message cannot be stamped after it was received, and a day covers a
# receiver's clock skew or local time written as UTC (at most 14 h off). The wall clock keeps a simulated receive
# clock (tests, replays) from refusing real times; an old log replayed today is in the past anyway. One time
# outside the window would otherwise become the vessel table's "now" and age every real vessel out of view.
EARLIEST_TIME_NS = 946_684_800 * 1_000_000_000
FUTURE_SLACK_NS = 86_400 * 1_000_000_000


def plausible_time_ns(t_ns: int, receive_ns: int) -> bool:
    """True when a message time (int ns UTC) received at ``receive_ns`` lies in the window above."""
    return EARLIEST_TIME_NS <= t_ns <= max(receive_ns, time.time_ns()) + FUTURE_SLACK_NS


def _tag_time_ns(value: str) -> int:
    """Tag-block ``c:`` value to int ns, exactly (Decimal: a float loses the milliseconds at 1e18 ns).

    Raises ValueError for a value that is not a finite number or lies beyond year 5000 in milliseconds (checked
    before any arithmetic, so ``c:1e999999999`` neither overflows nor builds a huge int); the caller then checks
    :func:`plausible_time_ns`.
    """
    try:
        t = Decimal(value.strip())
    except InvalidOperation as exc:
        raise ValueError(f"tag block time {value!r} is not a number") from exc
    if not t.is_finite() or t < 0 or t > 100_000_000_000_000:  # compared, never divided: 1e999999 / 1000 overflows
        raise ValueError(f"tag block time {value!r} out of range")
    if t > 100_000_000_000:  # some dispatchers write milliseconds
        t /= 1000
    return int(t * 1_000_000_000)


def _rmc_time_ns(fields: list[bytes]) -> int | None:
    """UTC from an RMC sentence's time (field 1, hhmmss.ss) and date (field 9, ddmmyy).

    ``None`` when absent (no fix yet: empty fields); ValueError when present but not a time (``2139inf``, minute
    75, 31 February).
    """
    try:
        hms = fields[1].decode("ascii")
        dmy = fields[9].decode("ascii")
    except (IndexError, UnicodeDecodeError):
        return None
    if len(hms) < 6 or len(dmy) != 6:
        return None
    hh, mm, ss = int(hms[0:2]), int(hms[2:4]), float(hms[4:])
    d, mo, y = int(dmy[0:2]), int(dmy[2:4]), 2000 + int(dmy[4:6])
    if not (0 <= hh <= 23 and 0 <= mm <= 59 and math.isfinite(ss) and 0.0 <= ss < 61.0):  # 60.x: a leap second
        raise ValueError(f"RMC time {hms!r} out of range")
    datetime.date(y, mo, d)  # ValueError for a date that does not exist
    whole = calendar.timegm((y, mo, d, hh, mm, 0, 0, 0, 0))
    return whole * 1_000_000_000 + int(round(ss * 1e9))


def _rmc_line_time_ns(line: bytes) -> int | None:
    """Time of a checksum-valid ``$xxRMC`` line (tag block allowed), else ``None``; ValueError when the line is an
    RMC whose time or date is malformed."""
    line = line.strip()
    if line.startswith(b"\\"):
        end = line.find(b"\\", 1)
        line = line[end + 1 :] if end > 0 else b""
    if not (line[:1] == b"$" and line[3:6] == b"RMC" and AisDecoder._checksum_ok(line)):
        return None
    return _rmc_time_ns(line.split(b"*")[0].split(b","))


def _opt(value, missing, *, lo=None, hi=None):
    """``None`` for pyais's "not available" sentinel or a value outside [lo, hi]."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if missing is not None and v == missing:
        return None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        return None
    return v


def _text(value) -> str | None:
    if value is None:
        return None
    s = str(value).replace("@", " ").strip()
    return s or None


def _int_or_none(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------- decoder
# Multi-sentence reassembly. The fragments of one message go out in one radio transmission (at most five
# consecutive 26.7 ms slots) and a receiver writes them back to back; merging receivers, the two channels and
# network paths reorder them by well under a second. A receiver numbers its multi-sentence messages 0-9 and then
# starts again, so on a busy channel an id comes round within seconds (500 class-A vessels send ~1.4 type-5
# messages a second): the shorter the wait, the smaller the chance that fragments of two messages meet under one
# id. 2 s leaves reordering a wide margin and keeps that chance small.
FRAGMENT_TIMEOUT_S = 2.0
# In a log with no time at all the wait is counted in AIS sentences instead: a receiver hears at most 75 a second
# (two channels of 2250 slots a minute), so 150 sentences is the 2 s above at full channel load.
FRAGMENT_WINDOW_SENTENCES = 150
# Fragments held at once over all unfinished messages (a sentence is at most 82 characters): a flood of fragments
# whose other parts never come evicts the oldest unfinished message, counted, instead of growing memory.
MAX_BUFFERED_FRAGMENTS = 1024
# Unfinished messages with one key at once (same source, channel, id and count, different content); more is a flood.
_MAX_PARTIALS_PER_KEY = 4
# How far ``read_file`` looks for a log's first time, for the untimed lines before it.
_PRESCAN_LINES = 100_000


@dataclass(slots=True)
class _Fragment:
    sentence: object  # pyais NMEAMessage
    body: bytes  # the sentence between "!" and "*": two copies of one fragment have the same body
    time_ns: int
    time_source: str
    station: str | None


@dataclass(slots=True)
class _Partial:
    """An unfinished multi-sentence message: its fragments by number, in order of arrival."""

    key: tuple
    total: int
    parts: dict[int, _Fragment]
    since: tuple[int | None, int, int | None]  # where it started: (axis_ns, sentence_no, tag_ns), see AisDecoder._stale


def _tag_group(value: str) -> str | None:
    """The group id of a tag block ``g:`` field (``sentence-of-total-id``, e.g. ``1-2-73874``), else ``None``."""
    parts = value.split("-")
    if len(parts) != 3 or not parts[2]:
        return None
    try:
        n, total = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return parts[2] if 1 <= n <= total <= 99 else None


class AisDecoder:
    """Stateful line decoder: feed it lines, get decoded messages. Never raises on bad input.

    ``clock_ns`` gives the receive time for messages without a time of their own (default ``time.time_ns``).
    ``use_rmc_time``: time AIS lines by the feed's last ``$xxRMC`` fix. ``log_time`` (set by :func:`read_file`):
    the input is a recording, so a line without a time of its own takes the time of the last timed line
    (``time_source="carried"``, or ``"gnss_rmc"`` when that was an RMC fix) instead of the receive clock, and
    unfinished multi-sentence messages expire on the log's own time.

    Multi-sentence messages: fragments are matched by source (tag block ``g:`` group id, else ``s:`` station),
    talker and sentence type, channel, sequential id and fragment count, in any order of arrival. A second copy
    of a fragment already held or just used (the same sentence from two receivers) is ignored and counted in
    ``stats.duplicate_fragments``. A message not complete ``fragment_timeout_s`` after its first fragment arrived
    (the receive clock live, the log's time in a log, ``fragment_window_sentences`` AIS sentences in a log without
    time) is dropped and counted, so a later message reusing the id never takes its fragments. At most
    ``max_buffered_fragments`` fragments are held; beyond that the oldest unfinished message is dropped.
    """

    def __init__(
        self,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        fragment_timeout_s: float = FRAGMENT_TIMEOUT_S,
        use_rmc_time: bool = False,
        log_time: bool = False,
        max_buffered_fragments: int = MAX_BUFFERED_FRAGMENTS,
        fragment_window_sentences: int = FRAGMENT_WINDOW_SENTENCES,
    ) -> None:
        if not fragment_timeout_s > 0:
            raise ValueError("fragment_timeout_s must be > 0")
        if max_buffered_fragments < 9:
            raise ValueError("max_buffered_fragments must be >= 9 (the longest message)")
        if fragment_window_sentences < 1:
            raise ValueError("fragment_window_sentences must be >= 1")
        self.stats = AisStats()
        self.log_time = log_time
        self._clock_ns = clock_ns
        self._fragment_timeout_ns = int(fragment_timeout_s * 1e9)
        self._window_sentences = int(fragment_window_sentences)
        self._max_buffered = int(max_buffered_fragments)
        self._use_rmc_time = use_rmc_time
        self._rmc_time_ns: int | None = None
        self._last_time: tuple[int, str] | None = None  # the newest line time: (ns, "tag_block" | "gnss_rmc")
        self._partials: dict[int, _Partial] = {}  # by serial number: oldest first
        self._by_key: dict[tuple, list[int]] = {}
        self._serial = 0
        self._buffered = 0
        self._done: dict[tuple, tuple] = {}  # (key, body) of the fragments of decoded messages -> mark when decoded
        self._last_fragment: tuple[int, int, int] | None = None  # (message serial, fragment number, sentence no)

    # -- public -----------------------------------------------------------------------------------------
    def feed(self, data: bytes | str) -> list[AisMessage]:
        """Decode every line in ``data`` (one or many lines, as read from a datagram or a file)."""
        if isinstance(data, str):
            data = data.encode("ascii", "replace")
        out: list[AisMessage] = []
        for line in data.splitlines():
            msg = self.feed_line(line)
            if msg is not None:
                out.append(msg)
        return out

    def feed_line(self, line: bytes | str) -> AisMessage | None:
        """Decode one line; returns a message when this line completes one, else ``None``."""
        if isinstance(line, str):
            line = line.encode("ascii", "replace")
        self.stats.lines += 1
        line = line.strip()
        if not line:
            self.stats.blank_lines += 1
            return None
        now_ns = self._clock_ns()

        tags: dict[str, str] = {}
        if line.startswith(b"\\"):
            end = line.find(b"\\", 1)
            if end < 0:
                return self._bad("tag_block")
            try:
                tags = parse_tag_block(line[1:end])
            except ValueError as exc:
                log.debug("bad tag block %r: %s", line[:80], exc)
                return self._bad("tag_block")
            line = line[end + 1 :]

        if line[:1] == b"$" and line[3:6] == b"RMC":
            self.stats.non_ais_lines += 1
            if self._use_rmc_time:
                try:
                    t = _rmc_line_time_ns(line)
                except ValueError as exc:
                    log.debug("bad RMC time %r: %s", line[:80], exc)
                    return self._bad("rmc_time")
                if t is not None:
                    if not plausible_time_ns(t, now_ns):
                        return self._bad("rmc_time")
                    self._rmc_time_ns = t
                    self._last_time = (t, "gnss_rmc")
            return None
        if not (line[:1] in (b"!", b"$") and line[3:6] in (b"VDM", b"VDO")):
            self.stats.non_ais_lines += 1
            return None

        self.stats.sentences += 1
        if not self._checksum_ok(line):
            return self._bad("checksum")
        fields = line.split(b"*")[0].split(b",")
        if len(fields) != 7:
            return self._bad("field_count")
        try:
            frag_cnt = int(fields[1])
            frag_num = int(fields[2])
        except ValueError:
            return self._bad("fragment_fields")
        if not (1 <= frag_num <= frag_cnt <= 9):
            return self._bad("fragment_fields")
        if not fields[5]:
            return self._bad("empty_payload")

        from pyais.messages import NMEAMessage

        try:
            sentence = NMEAMessage(line)
        except Exception as exc:  # pyais raises several types; all mean "not a sentence we can use"
            log.debug("unparsable sentence %r: %s", line[:80], exc)
            return self._bad("parse")

        if "c" in tags:
            try:
                t_ns, t_src = _tag_time_ns(tags["c"]), "tag_block"
            except ValueError:
                return self._bad("tag_block")
            if not plausible_time_ns(t_ns, now_ns):
                log.debug("implausible tag block time %r in %r", tags["c"], line[:80])
                return self._bad("tag_block")
            self._last_time = (t_ns, t_src)
        elif self.log_time and self._last_time is not None:
            t_ns = self._last_time[0]
            t_src = "gnss_rmc" if self._last_time[1] == "gnss_rmc" else "carried"
        elif self._use_rmc_time and self._rmc_time_ns is not None:
            t_ns, t_src = self._rmc_time_ns, "gnss_rmc"
        else:
            t_ns, t_src = now_ns, "receiver"
        station = tags.get("s")
        # the expiry clock: the receive clock live; in a log its own time, or none (then sentences are counted)
        if not self.log_time:
            axis: int | None = now_ns
        else:
            axis = t_ns if t_src != "receiver" else None
        mark = (axis, self.stats.sentences, t_ns if t_src == "tag_block" else None)
        self._sweep(mark)

        if frag_cnt == 1:
            return self._decode(sentence, t_ns, t_src, station)

        group = _tag_group(tags["g"]) if "g" in tags else None
        # lines of a tag-block group after the first often carry only g:, so the group id stands for the station
        source = ("g", group) if group is not None else ("s", station)
        key = (source, bytes(line[1:6]), bytes(fields[4]), bytes(fields[3]), frag_cnt)
        frag = _Fragment(sentence, bytes(line[1 : line.rfind(b"*")]), t_ns, t_src, station)
        return self._reassemble(key, frag_num, frag, mark)

    def seed_rmc_time(self, time_ns: int) -> None:
        """Time for AIS lines that come before the feed's first RMC (``read_file`` uses the file's first fix)."""
        if self._rmc_time_ns is None:
            self._rmc_time_ns = int(time_ns)
        if self._last_time is None:
            self._last_time = (int(time_ns), "gnss_rmc")

    def seed_log_time(self, time_ns: int, source: str) -> None:
        """Time for the untimed lines before a log's first timed line (``source``: ``tag_block`` or ``gnss_rmc``)."""
        if source == "gnss_rmc":
            self.seed_rmc_time(time_ns)
        elif self._last_time is None:
            self._last_time = (int(time_ns), "tag_block")

    def reset_log_time(self) -> None:
        """Forget the times seen so far (a new log file starts with no clock)."""
        self._last_time = None
        self._rmc_time_ns = None

    @property
    def buffered_fragments(self) -> int:
        """Fragments of unfinished multi-sentence messages held now (at most ``max_buffered_fragments``)."""
        return self._buffered

    def flush(self) -> None:
        """End of input: count every unfinished multi-sentence message as dropped."""
        for pid in list(self._partials):
            self._drop(pid, "incomplete_message")
        self._done.clear()

    # -- internals --------------------------------------------------------------------------------------
    @staticmethod
    def _checksum_ok(line: bytes) -> bool:
        star = line.rfind(b"*")
        if star < 0 or len(line) < star + 3:
            return False
        try:
            expected = int(line[star + 1 : star + 3], 16)
        except ValueError:
            return False
        return _nmea_checksum(line[1:star]) == expected

    def _bad(self, reason: str) -> None:
        self.stats.malformed[reason] += 1
        return None

    def _stale(self, since: tuple, now: tuple) -> bool:
        """Whether more than the reassembly window lies between two marks ``(axis_ns, sentence_no, tag_ns)``:
        ``axis_ns`` on the expiry clock (``None`` in a log with no time: then ``sentence_no``, AIS sentences seen,
        counts), ``tag_ns`` the line's tag-block time when it has one (two tagged lines further apart than the
        window are two transmissions, whatever the receive clock says)."""
        if since[2] is not None and now[2] is not None and abs(now[2] - since[2]) > self._fragment_timeout_ns:
            return True
        if since[0] is not None and now[0] is not None:
            return abs(now[0] - since[0]) > self._fragment_timeout_ns  # a log's time may step back
        return now[1] - since[1] > self._window_sentences

    def _sweep(self, now: tuple) -> None:
        """Drop the unfinished messages that waited too long, oldest first (a stale one found later, behind a
        fresher one in a log whose time steps back, is dropped by :meth:`_reassemble` before it could be used)."""
        while self._partials:
            pid = next(iter(self._partials))
            if not self._stale(self._partials[pid].since, now):
                break
            self._drop(pid, "incomplete_message")
        while self._done:
            k = next(iter(self._done))
            if not self._stale(self._done[k], now):
                break
            del self._done[k]

    def _remove(self, pid: int) -> _Partial:
        p = self._partials.pop(pid)
        ids = self._by_key[p.key]
        ids.remove(pid)
        if not ids:
            del self._by_key[p.key]
        self._buffered -= len(p.parts)
        return p

    def _drop(self, pid: int, reason: str) -> None:
        p = self._remove(pid)
        self.stats.fragments_dropped += len(p.parts)
        self.stats.malformed[reason] += 1
        log.debug("AIS message %r dropped unfinished (%s): fragments %s of %d", p.key, reason, sorted(p.parts),
                  p.total)

    def _reassemble(self, key: tuple, num: int, frag: _Fragment, now: tuple) -> AisMessage | None:
        for pid in list(self._by_key.get(key, ())):
            if self._stale(self._partials[pid].since, now):  # over: never complete it with a later fragment
                self._drop(pid, "incomplete_message")
        ids = self._by_key.get(key, [])
        last, self._last_fragment = self._last_fragment, None
        free = [pid for pid in ids if num not in self._partials[pid].parts]
        if len(free) > 1:
            # two unfinished messages with this key both lack this fragment (two receivers numbering alike, or an
            # id reused while an older message still waits): which one it belongs to cannot be told; no guess
            self.stats.fragments_dropped += 1
            return self._bad("ambiguous_fragment")
        if free and last is not None and last[0] == free[0] and last[1] == num - 1 and last[2] == now[1] - 1:
            # the sentence right after fragment n-1 is fragment n of that message, even when it reads like a copy of
            # a fragment of another: a receiver writes a message's fragments in order, back to back, and where it
            # leaves the sequential id empty every message on a channel has one key and trailing fragments (all
            # padding, a common destination) repeat from message to message
            pid = free[0]
        else:
            for pid in ids:
                have = self._partials[pid].parts.get(num)
                if have is not None and have.body == frag.body:
                    self.stats.duplicate_fragments += 1
                    return None
            used = self._done.get((key, frag.body))
            if used is not None and not self._stale(used, now):
                self.stats.duplicate_fragments += 1  # a copy of a fragment of a message already decoded
                return None
            if free:
                pid = free[0]
            else:  # the first fragment of this message to arrive, whichever its number
                if len(ids) >= _MAX_PARTIALS_PER_KEY:
                    self._drop(ids[0], "fragment_overflow")
                self._serial += 1
                pid = self._serial
                self._partials[pid] = _Partial(key, key[-1], {}, now)
                self._by_key.setdefault(key, []).append(pid)
        pend = self._partials[pid]
        pend.parts[num] = frag
        self._buffered += 1
        self._last_fragment = (pid, num, now[1])
        if len(pend.parts) < pend.total:
            while self._buffered > self._max_buffered:  # the oldest other message goes (pend holds at most 9)
                it = iter(self._partials)
                old = next(it)
                self._drop(next(it) if old == pid else old, "fragment_overflow")
            return None

        self._remove(pid)
        for f in pend.parts.values():
            self._done[(key, f.body)] = now
        while len(self._done) > self._max_buffered:
            del self._done[next(iter(self._done))]
        ordered = [pend.parts[i] for i in range(1, pend.total + 1)]
        # the message's time: a tag-block time (fragment 1 carries it, others may carry only g:), else the time of
        # the fragment that arrived first
        timed = next((f for f in ordered if f.time_source == "tag_block"), None) or next(iter(pend.parts.values()))
        station = next((f.station for f in ordered if f.station is not None), None)
        from pyais.messages import NMEAMessage

        try:
            whole = NMEAMessage.assemble_from_iterable([f.sentence for f in ordered])
        except Exception as exc:
            log.debug("cannot assemble %r: %s", key, exc)
            self.stats.fragments_dropped += pend.total
            return self._bad("assembly")
        return self._decode(whole, timed.time_ns, timed.time_source, station)

    def _decode(self, sentence, t_ns: int, t_src: str, station: str | None) -> AisMessage | None:
        try:
            m = sentence.decode()
        except Exception as exc:
            log.debug("cannot decode %r: %s", sentence, exc)
            return self._bad("decode")
        try:
            msg = self._convert(m, t_ns, t_src, sentence.channel or "", station)
        except (AttributeError, TypeError, ValueError) as exc:
            log.debug("cannot convert type %s: %s", getattr(m, "msg_type", "?"), exc)
            return self._bad("decode")
        self.stats.messages += 1
        self.stats.by_type[msg.msg_type] += 1
        return msg

    @staticmethod
    def _convert(m, t_ns: int, t_src: str, channel: str, station: str | None) -> AisMessage:
        mt = int(m.msg_type)
        mmsi = int(m.mmsi)
        if isinstance(channel, bytes):
            channel = channel.decode("ascii", "replace")
        if mt in (1, 2, 3, 18, 19, 27):
            if mt == 27:
                sog = _opt(getattr(m, "speed", None), 63)
                cog = _opt(getattr(m, "course", None), 511, lo=0, hi=359.999)
                heading = None
                second = None
            else:
                sog = _opt(getattr(m, "speed", None), 102.3, lo=0)
                cog = _opt(getattr(m, "course", None), 360.0, lo=0, hi=359.999)
                heading = _opt(getattr(m, "heading", None), 511, lo=0, hi=359)
                second = _int_or_none(getattr(m, "second", None))
                second = second if second is not None and 0 <= second <= 59 else None
            lat = _opt(getattr(m, "lat", None), 91.0, lo=-90, hi=90)
            lon = _opt(getattr(m, "lon", None), 181.0, lo=-180, hi=180)
            if lat is None or lon is None:
                lat = lon = None
            pos = AisPosition(
                mmsi=mmsi,
                msg_type=mt,
                time_ns=t_ns,
                time_source=t_src,
                lat_deg=lat,
                lon_deg=lon,
                sog_kn=sog,
                cog_deg=cog,
                heading_deg=heading,
                nav_status=_int_or_none(getattr(m, "status", None)) if mt in (1, 2, 3, 27) else None,
                utc_second=second,
                ais_class="A" if mt in (1, 2, 3) else ("LR" if mt == 27 else "B"),
                channel=channel,
                source_station=station,
            )
            if mt == 19:  # class B extended: the static half rides along with the position
                return replace(pos, static=_static_from(m, mt, t_ns, t_src, channel, station))
            return pos
        if mt in (5, 24):
            return _static_from(m, mt, t_ns, t_src, channel, station)
        return AisOther(mmsi=mmsi, msg_type=mt, time_ns=t_ns, time_source=t_src)


def _static_from(m, mt: int, t_ns: int, t_src: str, channel: str, station: str | None) -> AisStatic:
    part = _int_or_none(getattr(m, "partno", None)) if mt == 24 else None

    def dim(name: str) -> float | None:
        return _opt(getattr(m, name, None), 0, lo=0)

    has_dims = mt != 24 or part == 1
    imo = _int_or_none(getattr(m, "imo", None)) if mt == 5 else None
    ship_type = _int_or_none(getattr(m, "ship_type", None))
    return AisStatic(
        mmsi=int(m.mmsi),
        msg_type=mt,
        time_ns=t_ns,
        time_source=t_src,
        name=_text(getattr(m, "shipname", None)) if (mt != 24 or part == 0) else None,
        callsign=_text(getattr(m, "callsign", None)) if mt in (5, 24) else None,
        imo=imo if imo else None,
        ship_type=ship_type if ship_type else None,
        to_bow_m=dim("to_bow") if has_dims else None,
        to_stern_m=dim("to_stern") if has_dims else None,
        to_port_m=dim("to_port") if has_dims else None,
        to_starboard_m=dim("to_starboard") if has_dims else None,
        destination=_text(getattr(m, "destination", None)) if mt == 5 else None,
        draught_m=_opt(getattr(m, "draught", None), 0, lo=0) if mt == 5 else None,
        part=part,
        channel=channel,
        source_station=station,
    )


# ----------------------------------------------------------------------------------------------- sources
def _log_line_time(line: bytes, *, use_rmc: bool, receive_ns: int) -> tuple[int, str] | None:
    """The time a log line gives the log: a checksum-valid AIS sentence's tag-block ``c:`` (``"tag_block"``), or
    with ``use_rmc`` an RMC fix (``"gnss_rmc"``); ``None`` for any other line or a time that is not plausible."""
    line = line.strip()
    try:
        if use_rmc:
            t = _rmc_line_time_ns(line)
            if t is not None:
                return (t, "gnss_rmc") if plausible_time_ns(t, receive_ns) else None
        if not line.startswith(b"\\"):
            return None
        end = line.find(b"\\", 1)
        if end < 0:
            return None
        tags = parse_tag_block(line[1:end])
        rest = line[end + 1 :]
        if "c" not in tags or rest[3:6] not in (b"VDM", b"VDO") or not AisDecoder._checksum_ok(rest):
            return None
        t = _tag_time_ns(tags["c"])
    except ValueError:
        return None  # counted when the line is fed
    return (t, "tag_block") if plausible_time_ns(t, receive_ns) else None


def read_file(path: str | Path, decoder: AisDecoder | None = None) -> Iterator[AisMessage]:
    """Decode an NMEA log file line by line. Bad lines are counted in ``decoder.stats`` and skipped.

    A file is a recording: the decoder is put in log mode (``log_time``), so a line without a time of its own
    takes the time of the log's last timed line, and the lines before the first timed line take that line's time
    (it is looked for in the first 100 000 lines), never the wall clock. A log with no time at all (no tag-block
    ``c:``, and no RMC fix or no ``use_rmc_time``) keeps the receive clock: it has no clock of its own.
    Raises :class:`InputError` only when the file itself cannot be opened.
    """
    path = Path(path)
    dec = decoder if decoder is not None else AisDecoder()
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open AIS log {path}: {exc.strerror or exc}") from exc
    with fh:
        dec.log_time = True
        dec.reset_log_time()
        # AIS lines before the first timed line (tag block, or RMC fix) take its time (at most one line interval
        # late), not the wall clock, so that one file never mixes two clocks
        for i, line in enumerate(fh):
            first = _log_line_time(line, use_rmc=dec._use_rmc_time, receive_ns=dec._clock_ns())
            if first is not None:
                dec.seed_log_time(*first)
                break
            if i >= _PRESCAN_LINES:
                break
        fh.seek(0)
        untimed = 0
        for line in fh:
            msg = dec.feed_line(line)
            if msg is None:
                continue
            if msg.time_source == "receiver":
                untimed += 1
            elif untimed > 0:
                log.warning("AIS log %s: the first %d messages came before its first time (beyond line %d); they "
                            "carry the receive clock", path, untimed, _PRESCAN_LINES)
                untimed = -1
            yield msg
    dec.flush()


def drop_time_outliers(
    msgs: Iterable[AisMessage],
    *,
    max_jump_s: float = 600.0,
    neighbours: int = 8,
    stats: AisStats | None = None,
) -> Iterator[AisMessage]:
    """The messages of one recorded feed in their order, less those whose time is out of line with the feed.

    A log's messages come in time order, seconds apart. A message whose time lies more than ``max_jump_s`` from
    the median time of the ``neighbours`` messages kept before it AND from the median of the ``neighbours``
    messages after it is a wrong stamp (one RMC fix with a wrong date, a tag block from a receiver whose clock is
    a year off): applied, it would become the table's newest time and hide every real vessel, or pin its vessel's
    position to a time that never comes. It is skipped and counted as ``malformed["time_outlier"]`` in ``stats``.
    A real gap in the log (a receiver off for an hour) is kept: the messages after it agree with each other. So are
    the last messages of a log when more than one of them share a wrong time: a gap they could have been.
    Messages timed by the receive clock (``time_source == "receiver"``) pass unjudged: that is the reader's clock,
    not the log's. Streaming, with a look-ahead of ``neighbours`` timed messages.
    """
    if neighbours < 1:
        raise ValueError("neighbours must be >= 1")
    jump_ns = int(max_jump_s * 1e9)
    before: deque[int] = deque(maxlen=neighbours)  # times of the messages kept
    ahead: deque[AisMessage] = deque()

    def median(times, *, high: bool) -> int:
        ts = sorted(times)
        return ts[len(ts) // 2 if high else (len(ts) - 1) // 2]

    def judge(msg: AisMessage, after: list[int]) -> bool:
        t = msg.time_ns
        # an even split (right after a real gap) leans to the side nearer the message: the later of the two middle
        # times before it, the earlier after it
        far_before = not before or abs(t - median(before, high=True)) > jump_ns
        far_after = not after or abs(t - median(after, high=False)) > jump_ns
        if far_before and far_after and (before or after):
            if stats is not None:
                stats.malformed["time_outlier"] += 1
            log.debug("AIS message of MMSI %s at %d ns is out of line with its neighbours; skipped", msg.mmsi, t)
            return False
        before.append(t)
        return True

    for msg in msgs:
        if msg.time_source == "receiver":
            yield msg
            continue
        ahead.append(msg)
        if len(ahead) > neighbours:
            head = ahead.popleft()
            if judge(head, [m.time_ns for m in ahead]):
                yield head
    while ahead:
        head = ahead.popleft()
        if judge(head, [m.time_ns for m in ahead]):
            yield head


def parse_feed_url(url: str) -> tuple[str, str, int]:
    """``tcp://host:port`` or ``udp://host:port`` (``udp://`` binds, ``tcp://`` connects) -> (scheme, host, port).

    An IPv6 host goes in brackets (``tcp://[::1]:5631``). A user name or password is refused (NMEA over TCP / UDP
    has no login), as is a path or query; every message shows the URL with its credentials redacted."""
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("tcp", "udp"):
        raise InputError(f"AIS feed {shown!r}: expected tcp://HOST:PORT or udp://HOST:PORT")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # "[::1" (an unclosed bracket), a port out of range or not a number
        raise InputError(f"AIS feed {shown!r}: bad host:port {redact_url(rest)!r} ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise InputError(f"AIS feed {shown!r}: a user name or password cannot be used (NMEA over TCP / UDP has no "
                         "login); give tcp://HOST:PORT or udp://HOST:PORT")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise InputError(f"AIS feed {shown!r}: expected tcp://HOST:PORT or udp://HOST:PORT, nothing after the port")
    if not host or port is None or ("[" not in parts.netloc and ":" in host):
        raise InputError(f"AIS feed {shown!r}: bad host:port {redact_url(rest)!r}")
    return scheme, host, port


def feed_name(scheme: str, host: str, port: int) -> str:
    """``tcp://host:port`` as it is shown in logs and status (an IPv6 host in brackets)."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class _SocketFeed:
    """Common loop of the socket feeds: a stop event, a decoder, a receive timeout on every blocking call."""

    def __init__(self, host: str, port: int, *, decoder: AisDecoder | None, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.decoder = decoder if decoder is not None else AisDecoder()
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self.last_error: str | None = None  # the latest connect / bind / receive failure, for status and the CLI

    @property
    def name(self) -> str:
        """The feed as logs and status show it: ``tcp://host:port`` (never with credentials)."""
        return feed_name(self.scheme, self.host, self.port)

    def stop(self) -> None:
        """Ask :meth:`messages` to return at its next timeout tick (at most ``timeout_s`` later)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class TcpAisFeed(_SocketFeed):
    """Connects to an NMEA-over-TCP server (an AIS dispatcher, a receiver) and reads lines.

    A lost connection is a status change and a reconnect after ``reconnect_s``, never an exception. ``state``
    is ``"connecting"``, ``"connected"`` or ``"stopped"``; ``connects`` counts successful connections. The first
    failed connect of an outage is a warning, its retries are logged at INFO.
    """

    scheme = "tcp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        decoder: AisDecoder | None = None,
        timeout_s: float = 2.0,
        reconnect_s: float = 1.0,
    ) -> None:
        super().__init__(host, port, decoder=decoder, timeout_s=timeout_s)
        self.reconnect_s = reconnect_s
        self.state = "connecting"
        self.connects = 0
        self.disconnects = 0

    def messages(self) -> Iterator[AisMessage]:
        """Yield decoded messages until :meth:`stop` is called."""
        buf = b""
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            except OSError as exc:
                first = self.last_error is None
                self.last_error = str(exc) or type(exc).__name__
                log.log(logging.WARNING if first else logging.INFO, "AIS %s: connect failed (%s); retry in %.1f s",
                        self.name, self.last_error, self.reconnect_s)
                self._stop.wait(self.reconnect_s)
                continue
            self.state = "connected"
            self.connects += 1
            self.last_error = None
            log.info("AIS %s connected", self.name)
            try:
                sock.settimeout(self.timeout_s)
                while not self._stop.is_set():
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError as exc:
                        self.last_error = f"read failed: {exc}"
                        log.warning("AIS %s: read failed (%s)", self.name, exc)
                        break
                    if not chunk:
                        self.last_error = "the server closed the connection"
                        log.warning("AIS %s: server closed the connection", self.name)
                        break
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        msg = self.decoder.feed_line(line)
                        if msg is not None:
                            yield msg
                    if len(buf) > 65536:  # no newline in 64 KiB: not NMEA; drop it rather than grow forever
                        self.decoder.stats.malformed["overlong_line"] += 1
                        buf = b""
            finally:
                sock.close()
            if not self._stop.is_set():
                self.state = "connecting"
                self.disconnects += 1
                buf = b""
                self._stop.wait(self.reconnect_s)
        self.state = "stopped"


class UdpAisFeed(_SocketFeed):
    """Binds ``host:port`` and decodes every datagram (one or several NMEA lines each)."""

    scheme = "udp"

    def __init__(self, host: str, port: int, *, decoder: AisDecoder | None = None, timeout_s: float = 1.0) -> None:
        super().__init__(host, port, decoder=decoder, timeout_s=timeout_s)
        self._sock: socket.socket | None = None
        self.datagrams = 0

    def open(self) -> tuple[str, int]:
        """Bind now (so a test can learn the port when it asked for port 0); returns the bound address."""
        if self._sock is None:
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                s.bind((self.host, self.port))
            except OSError as exc:
                s.close()
                raise StreamError(f"AIS {self.name}: cannot bind: {exc}") from exc
            s.settimeout(self.timeout_s)
            self._sock = s
        return self._sock.getsockname()[:2]

    def messages(self) -> Iterator[AisMessage]:
        self.open()
        assert self._sock is not None
        try:
            while not self._stop.is_set():
                try:
                    data = self._sock.recv(65535)
                except TimeoutError:
                    continue
                except OSError as exc:
                    self.last_error = f"receive failed: {exc}"
                    log.warning("AIS %s: receive failed (%s)", self.name, exc)
                    self._stop.wait(self.timeout_s)
                    continue
                self.datagrams += 1
                yield from self.decoder.feed(data)
        finally:
            self._sock.close()
            self._sock = None


def open_feed(url: str, *, decoder: AisDecoder | None = None, timeout_s: float = 2.0) -> TcpAisFeed | UdpAisFeed:
    """A feed for ``tcp://host:port`` (client) or ``udp://host:port`` (bind)."""
    scheme, host, port = parse_feed_url(url)
    if scheme == "tcp":
        return TcpAisFeed(host, port, decoder=decoder, timeout_s=timeout_s)
    return UdpAisFeed(host, port, decoder=decoder, timeout_s=timeout_s)


def iter_lines_messages(lines: Iterable[bytes | str], decoder: AisDecoder | None = None) -> Iterator[AisMessage]:
    """Decode an iterable of lines (a list in a test, a pipe)."""
    dec = decoder if decoder is not None else AisDecoder()
    for line in lines:
        msg = dec.feed_line(line)
        if msg is not None:
            yield msg
