"""Vessel registry: who a vessel is supposed to be (name, hull number, MMSI, home port, licence, blacklist).

Not to be confused with ``seawatch.vision.registry`` (the MODEL registry).

CSV format (UTF-8, a BOM is fine; one header row; column order free; unknown columns are an error so that a
typo does not silently drop data):

=================  ========  ===================================================================
column             required  value
=================  ========  ===================================================================
name               one of    vessel name, Chinese or Latin (``闽狮渔06688``, ``HAI XUN 168``)
hull_number        the two   registration painted on the hull (``浙岱渔03891``); normalised on import
name_latin         no        Latin/pinyin name as broadcast on AIS (``MIN SHI YU 06688``)
mmsi               no        9 digits
home_port          no        free text
licence_status     no        valid | expired | suspended | revoked | none (also 有效 过期 暂停 吊销 无)
licence_expiry     no        YYYY-MM-DD
blacklisted        no        true/false, yes/no, 1/0, 是/否 (empty = false)
notes              no        free text
=================  ========  ===================================================================

All bad rows are reported together in one :class:`RegistryError` naming file, line and column.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from seawatch.errors import InputError
from seawatch.vision.identity.hulltext import name_key, normalise_hull, similarity

log = logging.getLogger(__name__)

COLUMNS = ("name", "name_latin", "hull_number", "mmsi", "home_port", "licence_status", "licence_expiry",
           "blacklisted", "notes")
STATUSES = ("valid", "expired", "suspended", "revoked", "none")
_STATUS_ALIASES = {"有效": "valid", "正常": "valid", "过期": "expired", "過期": "expired", "暂停": "suspended",
                   "吊销": "revoked", "注销": "revoked", "无": "none", "unlicensed": "none", "": "none"}
_TRUE = {"true", "yes", "y", "1", "是", "x"}
_FALSE = {"false", "no", "n", "0", "否", ""}


class RegistryError(InputError):
    """A registry file or row is invalid; ``problems`` lists every ``file:line: column: what`` found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        if self.problems:
            shown = "\n  ".join(self.problems[:20])
            more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            message = f"{message}:\n  {shown}{more}"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One registered vessel. ``hull_number`` is normalised (see ``hulltext.normalise_hull``); ``source`` is
    ``file:line`` of the row it came from."""

    name: str
    hull_number: str
    name_latin: str = ""
    mmsi: int | None = None
    home_port: str = ""
    licence_status: str = "none"
    licence_expiry: dt.date | None = None
    blacklisted: bool = False
    notes: str = ""
    source: str = ""

    @property
    def label(self) -> str:
        """What to show a person: the hull number, else the name."""
        return self.hull_number or self.name

    def licence_valid_on(self, day: dt.date) -> bool:
        if self.licence_status != "valid":
            return False
        return self.licence_expiry is None or day <= self.licence_expiry

    def alerts(self, day: dt.date) -> tuple[str, ...]:
        """Reasons for a ``registry_alert`` on ``day``: ``blacklisted``, ``licence_expired``,
        ``licence_suspended``, ``licence_revoked``, ``no_licence``. Empty when all is well."""
        out = []
        if self.blacklisted:
            out.append("blacklisted")
        if self.licence_status == "valid" and self.licence_expiry is not None and day > self.licence_expiry:
            out.append("licence_expired")
        elif self.licence_status in ("expired", "suspended", "revoked"):
            out.append(f"licence_{self.licence_status}")
        elif self.licence_status == "none":
            out.append("no_licence")
        return tuple(out)

    def names(self) -> tuple[str, ...]:
        return tuple(x for x in (self.hull_number, self.name, self.name_latin) if x)


@dataclass(frozen=True, slots=True)
class RegistryMatch:
    entry: RegistryEntry
    score: float  # 1.0 = exact after normalisation
    field: str  # which field matched: hull_number, name, name_latin, mmsi


class VesselRegistry:
    """In-memory registry with lookups by MMSI, hull number (normalised) and fuzzy name."""

    def __init__(self, entries: Iterable[RegistryEntry] = ()) -> None:
        self._entries: list[RegistryEntry] = []
        self._by_mmsi: dict[int, RegistryEntry] = {}
        self._by_key: dict[str, list[tuple[RegistryEntry, str]]] = {}
        for e in entries:
            self.add(e)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def add(self, e: RegistryEntry) -> None:
        if e.mmsi is not None and e.mmsi in self._by_mmsi:
            raise RegistryError(f"duplicate MMSI {e.mmsi} ({e.source} and {self._by_mmsi[e.mmsi].source})")
        if e.hull_number and self.by_hull(e.hull_number) is not None:
            raise RegistryError(f"duplicate hull number {e.hull_number} ({e.source})")
        self._entries.append(e)
        if e.mmsi is not None:
            self._by_mmsi[e.mmsi] = e
        for field in ("hull_number", "name", "name_latin"):
            v = getattr(e, field)
            if v:
                self._by_key.setdefault(name_key(v), []).append((e, field))

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_csv(cls, path: str | Path) -> VesselRegistry:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read vessel registry {path}: {exc.strerror or exc}") from exc
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RegistryError(
                f"vessel registry {path}: not UTF-8 (byte {exc.start}); save it as UTF-8 (GBK files: "
                "iconv -f GBK -t UTF-8)"
            ) from exc
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "<registry>") -> VesselRegistry:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise RegistryError(f"vessel registry {source}: empty file (expected a header row)")
        header = [(h or "").strip().lower() for h in reader.fieldnames]
        unknown = [h for h in header if h not in COLUMNS]
        if unknown:
            raise RegistryError(f"vessel registry {source}: unknown column(s) {unknown}; known: {list(COLUMNS)}")
        if "name" not in header and "hull_number" not in header:
            raise RegistryError(f"vessel registry {source}: needs a 'name' or 'hull_number' column")
        if len(set(header)) != len(header):
            raise RegistryError(f"vessel registry {source}: repeated column in header {header}")
        reader.fieldnames = header
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                rows.append((reader.line_num, {"__extra__": row.pop(None)} | row))
            else:
                rows.append((reader.line_num, row))
        return cls.from_rows(rows, source=source)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, Mapping[str, str | None]]], *, source: str) -> VesselRegistry:
        """Build from ``(line_number, {column: text})`` pairs (CSV rows or API payloads)."""
        problems: list[str] = []
        entries: list[RegistryEntry] = []
        seen_mmsi: dict[int, int] = {}
        seen_hull: dict[str, int] = {}
        for line, row in rows:
            where = f"{source}:{line}"
            if all(not (v or "").strip() for k, v in row.items() if k != "__extra__"):
                continue  # blank line
            try:
                e = parse_row(row, where)
            except RegistryError as exc:
                problems.extend(exc.problems or [str(exc)])
                continue
            if e.mmsi is not None:
                if e.mmsi in seen_mmsi:
                    problems.append(f"{where}: mmsi: {e.mmsi} already on line {seen_mmsi[e.mmsi]}")
                    continue
                seen_mmsi[e.mmsi] = line
            if e.hull_number:
                if e.hull_number in seen_hull:
                    problems.append(f"{where}: hull_number: {e.hull_number} already on line {seen_hull[e.hull_number]}")
                    continue
                seen_hull[e.hull_number] = line
            entries.append(e)
        if problems:
            raise RegistryError(f"vessel registry {source}: {len(problems)} bad row(s)", problems)
        log.info("vessel registry %s: %d vessels", source, len(entries))
        return cls(entries)

    # -- lookups -----------------------------------------------------------------------------------------
    def by_mmsi(self, mmsi: int | None) -> RegistryEntry | None:
        return None if mmsi is None else self._by_mmsi.get(int(mmsi))

    def by_hull(self, text: str) -> RegistryEntry | None:
        """Exact match after normalisation on the hull number (not names)."""
        key = normalise_hull(text)
        for e, field in self._by_key.get(key, ()):
            if field == "hull_number":
                return e
        return None

    def match(self, text: str, *, min_score: float = 0.75, limit: int = 5) -> list[RegistryMatch]:
        """Best entries for a hull text or name (hull number, Chinese name, Latin name), best first.

        Exact normalised matches score 1.0; otherwise :func:`hulltext.similarity` (edit distance). One match
        per entry (its best field). These are candidates (a reviewer's "did you mean"); :meth:`best` decides an
        identity.
        """
        key = name_key(text)
        if not key:
            return []
        best: dict[int, RegistryMatch] = {}
        for e, field in self._by_key.get(key, ()):
            best[id(e)] = RegistryMatch(e, 1.0, field)
        if not best or len(best) < limit:
            for k, pairs in self._by_key.items():
                if abs(len(k) - len(key)) > max(len(k), len(key)) * (1 - min_score):
                    continue  # cannot reach min_score: skip the edit distance
                s = similarity(k, key)
                if s < min_score:
                    continue
                for e, field in pairs:
                    cur = best.get(id(e))
                    if cur is None or s > cur.score:
                        best[id(e)] = RegistryMatch(e, s, field)
        return sorted(best.values(), key=lambda m: (-m.score, m.entry.label))[:limit]

    def best(self, text: str, *, min_score: float = 0.75, margin: float = 0.05) -> RegistryMatch | None:
        """The single best match, or ``None`` when there is none or the runner-up is within ``margin``.

        An inexact match must carry the same digits in the same order (leading zeros aside): the number is what tells sister vessels
        apart (浙岱渔03891 / 浙岱渔03892, HAI XUN 168 / 169), and a registry rarely holds both sisters, so one digit
        off would name an unregistered vessel after its registered sister (and silence ``unidentified_vessel``).
        A misread letter or glyph of the prefix (淅岱渔03891) still matches.
        """
        digits = _digits(name_key(text))
        ms = [m for m in self.match(text, min_score=min_score, limit=max(2, len(self._entries)))
              if m.score >= 1.0 or _digits(name_key(getattr(m.entry, m.field))) == digits][:2]
        if not ms:
            return None
        if len(ms) == 2 and ms[0].score - ms[1].score < margin:
            return None
        return ms[0]


def _digits(key: str) -> str:
    """The digits of a key, leading zeros dropped (AIS writes 闽狮渔06688 as MIN SHI YU 6688)."""
    return "".join(c for c in key if c.isdigit()).lstrip("0")


def _parse_bool(v: str) -> bool:
    s = v.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"{v!r} is not a yes/no value")


def parse_row(row: Mapping[str, str | None], where: str) -> RegistryEntry:
    """One registry row -> entry; raises :class:`RegistryError` listing every bad cell of the row."""
    problems = []
    get = lambda k: (row.get(k) or "").strip()  # noqa: E731
    if row.get("__extra__"):
        problems.append(f"{where}: {len(row['__extra__'])} more cell(s) than header columns")
    name, hull_raw = get("name"), get("hull_number")
    if not name and not hull_raw:
        problems.append(f"{where}: name/hull_number: both empty; a row needs at least one")
    hull = normalise_hull(hull_raw) if hull_raw else ""
    if hull_raw and not hull:
        problems.append(f"{where}: hull_number: {hull_raw!r} has no letters or digits")
    mmsi = None
    if get("mmsi"):
        s = get("mmsi")
        if not (s.isdigit() and len(s) == 9) or int(s) == 0:
            problems.append(f"{where}: mmsi: {s!r} is not 9 digits")
        else:
            mmsi = int(s)
    status_raw = get("licence_status")
    status = _STATUS_ALIASES.get(status_raw, status_raw.lower())
    if status not in STATUSES:
        problems.append(f"{where}: licence_status: {status_raw!r} is not one of {list(STATUSES)}")
    expiry = None
    if get("licence_expiry"):
        try:
            expiry = dt.date.fromisoformat(get("licence_expiry"))
        except ValueError:
            problems.append(f"{where}: licence_expiry: {get('licence_expiry')!r} is not a YYYY-MM-DD date")
    try:
        black = _parse_bool(get("blacklisted"))
    except ValueError as exc:
        problems.append(f"{where}: blacklisted: {exc}")
        black = False
    if problems:
        raise RegistryError(problems[0], problems)
    return RegistryEntry(
        name=name or hull_raw,
        hull_number=hull,
        name_latin=get("name_latin"),
        mmsi=mmsi,
        home_port=get("home_port"),
        licence_status=status,
        licence_expiry=expiry,
        blacklisted=black,
        notes=get("notes"),
        source=where,
    )
