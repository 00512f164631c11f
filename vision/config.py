"""Configuration of tracking, zones, rules and event policy (the ``zones`` / ``tracker`` / ``events`` part of
the Seawatch YAML). Pydantic only here, at the edge; the pipeline works on the frozen values built from it.

Example (YAML)::

    tracker: {lost_buffer_s: 2.0}
    events: {pre_roll_s: 5, post_roll_s: 10}
    zones:
      - id: yard
        source: cam-quay-1            # no polygon: the whole frame
        rules: [{type: fire_smoke, min_duration_s: 3}]
      - id: hard-hat-area
        source: cam-quay-1
        polygon_px: [[100, 400], [1200, 400], [1200, 1080], [100, 1080]]
        rules: [{type: no_hard_hat, min_duration_s: 5}]
      - id: lane-north
        source: cam-yard-2
        polygon_px: [[0, 500], [600, 450], [700, 1080], [0, 1080]]
        rules: [{type: fire_lane_blocked, min_duration_s: 180, stationary_foreground: {}}]
      - id: wind-farm-safety
        source: drone-1
        polygon_lonlat: [[6.51, 53.99], [6.60, 53.99], [6.60, 54.05], [6.51, 54.05]]
        rules: [{type: vessel_in_zone, min_duration_s: 30}]
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seawatch.errors import ConfigError
from seawatch.vision.schedule import build_schedule, parse_days, parse_hhmm, time_zone

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Conf = Annotated[float, Field(ge=0.0, le=1.0)]


def read_yaml_file(path: str | Path) -> Any:
    """The parsed YAML of a configuration file (``None`` for an empty one).

    Raises ConfigError naming the file when it cannot be read, is not UTF-8 text (a binary file, one stray
    Latin-1 byte in a comment) or is not valid YAML. Every command that reads a config file goes through here.
    """
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: cannot read: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
                          ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: cannot read: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: cannot read: nested too deeply (lists or mappings inside each other hundreds "
                          "of levels deep)") from None


class _DuplicateKey(yaml.YAMLError):
    """A mapping with the same key twice (YAML forbids it; PyYAML would silently keep the last one)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: a second ``sources:`` block would otherwise replace
    the first without a word."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in (<<: *base) may be overridden: only the mapping's own keys count
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    break
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(f"line {line}: duplicate key {key!r} (first given on line {first}); YAML "
                                        "keeps only the last, so merge the two or remove one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def scalar_problems(data: Any) -> list[tuple[str, str]]:
    """``(field path, message)`` for every value no configuration field can take: a float that is not finite
    (``.nan``, ``.inf``: a bound check would say "must be <= 90" of NaN, and unbounded fields would take it and fail
    later) and a string with a NUL character (no path, URL or name holds one; the OS refuses it with a traceback).
    Paths read like :func:`format_errors`' (``sources[0].calibration.surveyed.alt_m``)."""
    out: list[tuple[str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            out.append((path, "not a number (NaN): give a finite number" if math.isnan(v)
                        else f"must be a finite number, got {v}"))
        elif isinstance(v, str) and "\0" in v:
            out.append((path, "contains a NUL character (\\0)"))
        elif isinstance(v, (dict, list, tuple)):
            if id(v) in seen:  # a YAML alias used again (or a recursive one): checked once
                continue
            seen.add(id(v))
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, child in reversed(list(items)):
                if isinstance(k, str) and "\0" in k:
                    out.append((path, f"a key contains a NUL character: {k!r}"))
                stack.append((f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k)), child))
    return out


def check_scalars(data: Any, where: str) -> None:
    """ConfigError listing :func:`scalar_problems` of ``data`` (parsed YAML), each naming ``where`` and the field."""
    problems = scalar_problems(data)
    if problems:
        raise ConfigError(_error_block([f"  {where}: {path or '(top level)'}: {msg}" for path, msg in problems]))


def _error_block(lines: list[str]) -> str:
    return f"invalid configuration ({len(lines)} error{'s' if len(lines) != 1 else ''}):\n" + "\n".join(lines)


def error_message(e: dict, model: type[BaseModel] | None = None) -> str:
    """A pydantic error's message in the words of someone writing the YAML.

    NaN is "not a number" rather than the bound it fails (NaN compares false with every bound, so pydantic reports
    "less than or equal to 60" of it). Given ``model`` (the root of the configuration validated), an unknown key
    names the keys allowed there (the closest first: a typo), and a scalar where a list or a section belongs says
    how to write it, instead of pydantic's "Extra inputs are not permitted" / "Input should be a valid tuple".
    """
    v = e.get("input")
    kind = e.get("type", "")
    if isinstance(v, float) and not math.isfinite(v) and kind.endswith(("_than", "_than_equal", "finite_number")):
        return "not a number (NaN): give a finite number" if math.isnan(v) else f"must be a finite number, got {v}"
    loc = tuple(e.get("loc", ()))
    if kind == "extra_forbidden" and model is not None and loc and isinstance(loc[-1], str):
        keys = _keys_at(model, loc[:-1])
        if keys:
            key = loc[-1]
            close = difflib.get_close_matches(key, keys, n=2, cutoff=0.6) or [
                k for k in keys if len(key) >= 3 and (key in k or k in key)][:2]
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            return f"unknown setting {key!r}{hint}; the settings here: {', '.join(keys)}"
    ctx = e.get("ctx") or {}
    if kind == "union_tag_invalid" and ctx.get("discriminator") == "'type'":
        tags = [s.strip(" '") for s in str(ctx.get("expected_tags", "")).split(",")]
        close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1, cutoff=0.6)
        return (f"unknown type {ctx.get('tag')!r}" + (f" (did you mean {close[0]}?)" if close else "")
                + f"; the types: {', '.join(tags)}")
    if kind == "string_pattern_mismatch" and (form := _id_form(str(ctx.get("pattern", "")))):
        return f"{_shown(v)} is not a valid name here: {form}"
    if kind in ("float_parsing", "int_parsing", "float_type", "int_type", "int_from_float"):
        return f"must be {'a whole number' if kind.startswith('int') else 'a number'}, not {_shown(v)}"
    if kind == "missing":
        return "missing: this setting is required here"
    if kind == "too_short" and ctx.get("min_length") == 1 and not v:
        return "must not be empty: at least 1 is needed"
    if kind in ("tuple_type", "list_type", "set_type", "frozen_set_type"):
        short = isinstance(v, (str, int, float)) and not isinstance(v, bool) and len(str(v)) <= 40
        example = f"[{v}]" if short else "[a, b, ...]"
        return f"must be a list, e.g. {example}, not {_shown(v)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = _keys_at(model, loc) if model is not None else []
        if isinstance(v, bool) and "enabled" in keys:
            return f"must be a section of settings, e.g. {{enabled: {str(v).lower()}}}, not {str(v).lower()}"
        return f"must be a section of settings (key: value, ...), not {_shown(v)}" + (
            f" (the settings here: {', '.join(keys)})" if keys else "")
    return e["msg"].removeprefix("Value error, ")


def _id_form(pattern: str) -> str | None:
    """An id or name pattern (``^[first chars][other chars]{0,N}$``) in words, None for any other pattern."""
    m = re.fullmatch(r"\^\[([^\]]+)\]\[([^\]]+)\]\{0,(\d+)\}\$", pattern)
    if m is None:
        return None

    def words(chars: str) -> str:
        out = [w for r, w in (("A-Za-z", "letters"), ("0-9", "digits")) if r in chars]
        rest = chars.replace("A-Za-z", "").replace("0-9", "").replace("\\", "")
        return ", ".join(out + [f"'{c}'" for c in rest])

    first = "a letter or digit" if m.group(1) == "A-Za-z0-9" else words(m.group(1))
    return (f"start with {first}, then only {words(m.group(2))} (no spaces), at most {int(m.group(3)) + 1} "
            "characters")


def _shown(value: Any) -> str:
    """A short name for a wrong value in a message: a scalar as written (cut), never a whole list or mapping (a
    YAML alias bomb expands to gigabytes)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null (empty)"
    if isinstance(value, (str, int, float)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return {list: "a list", tuple: "a list", dict: "a section (key: value)"}.get(type(value), type(value).__name__)


def _keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a YAML mapping may hold at ``loc`` (a pydantic error location) under ``model``, as written in YAML
    (aliases), or [] where ``loc`` does not lead to one mapping of settings."""
    found: list[type[BaseModel]] = []
    todo: list[tuple[Any, tuple]] = [(model, loc)]
    while todo:
        ann, rest = todo.pop()
        origin = typing.get_origin(ann)
        args = typing.get_args(ann)
        if origin is Annotated:
            todo.append((args[0], rest))
        elif origin is Union or origin is types.UnionType:
            todo.extend((a, rest) for a in args)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            if not rest:
                found.append(ann)
            elif isinstance(rest[0], str) and rest[0] in ann.model_fields:
                todo.append((ann.model_fields[rest[0]].annotation, rest[1:]))
            elif isinstance(rest[0], str) and "type" in ann.model_fields and ann.model_fields["type"].default == rest[0]:
                todo.append((ann, rest[1:]))  # a tagged union's variant: pydantic puts the tag in the location
        elif origin in (tuple, list, set, frozenset) and rest and isinstance(rest[0], int) and args:
            todo.append((args[0], rest[1:]))
        elif origin in (dict, Mapping) and rest and len(args) == 2:
            todo.append((args[1], rest[1:]))
    if len(found) != 1:
        return []
    return [f.alias or name for name, f in found[0].model_fields.items()]


def format_errors(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> str:
    """One line per error: ``WHERE: field.path[index]: message`` (``where`` names the file or the option; ``model``,
    the root validated, lets an unknown key's message list the keys allowed there)."""
    errors = exc.errors()
    lines = []
    for e in errors:
        loc = tuple(e["loc"])
        if e.get("type") == "too_short" and any(o is not e and tuple(o["loc"])[:len(loc)] == loc for o in errors):
            continue  # "at least 1 item ... not 0" of a list whose item failed: the item's own error says why
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"  {where}: {path or '(top level)'}: {error_message(e, model)}")
    return _error_block(lines)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackerConfig(_Strict):
    """ByteTrack-style two-stage association; all timing is wall-clock (frame capture time)."""

    type: Literal["bytetrack"] = Field("bytetrack", description="tracker variant")
    high_confidence: Conf = Field(
        0.35, description="detections at or above this are matched first (lower than ByteTrack's 0.5: CCTV-scale objects score low)"
    )
    low_confidence: Conf = Field(0.1, description="detections below this are ignored; between low and high they only extend existing tracks")
    new_track_confidence: Conf = Field(0.4, description="an unmatched detection starts a track only at or above this")
    match_iou: float = Field(0.2, ge=0.0, le=1.0, description="minimum IoU, predicted box vs detection, in the first (high-confidence) stage")
    low_match_iou: float = Field(0.5, ge=0.0, le=1.0, description="minimum IoU in the second (low-confidence) stage")
    tentative_match_iou: float = Field(0.3, ge=0.0, le=1.0, description="minimum IoU to confirm a tentative track")
    min_hits: int = Field(2, ge=1, le=10, description="frames a new track must be matched in before it gets an id (1 = at once)")
    lost_buffer_s: float = Field(2.0, gt=0.0, le=600.0, description="seconds an unmatched track is kept for re-identification before it is dropped")
    class_groups: tuple[tuple[str, ...], ...] = Field(
        (("car", "truck", "bus"),),
        description="labels a detector confuses with each other; a track may switch label within a group, never across",
    )

    @model_validator(mode="after")
    def _order(self) -> "TrackerConfig":
        if self.low_confidence > self.high_confidence:
            raise ValueError(f"low_confidence {self.low_confidence} must not exceed high_confidence {self.high_confidence}")
        return self


class EventPolicy(_Strict):
    """How incidents become event values."""

    pre_roll_s: float = Field(5.0, ge=0.0, le=600.0, description="clip starts this long before the incident")
    post_roll_s: float = Field(5.0, ge=0.0, le=600.0, description="clip ends this long after the incident")
    update_interval_s: float = Field(
        60.0, ge=0.0, le=86400.0, description="an open incident re-emits an update at most this often without a change (0 = only on change)"
    )


class StationaryForegroundConfig(_Strict):
    """Stationary-foreground analysis of a lane for objects no detector knows (pallets, crates, e-bikes)."""

    max_side_px: int = Field(160, ge=16, le=1024, description="the lane crop is downscaled so its longer side is at most this")
    long_tau_s: float = Field(900.0, gt=0.0, description="time constant of the long-term (empty lane) background model")
    short_tau_s: float = Field(4.0, gt=0.0, description="time constant of the short-term model; stable pixels match it")
    diff_threshold: float = Field(28.0, gt=0.0, le=255.0, description="difference in any colour channel (0-255) that counts as a change")
    min_area_frac: float = Field(0.03, gt=0.0, le=1.0, description="stationary foreground must cover at least this fraction of the lane")
    grace_s: float = Field(3.0, ge=0.0, description="a pixel may drop out of stationary foreground this long without resetting its timer")
    absorb_after_s: float = Field(
        7200.0, gt=0.0, description="foreground older than this is absorbed into the background (a permanent scene change)"
    )
    reference_image: str | None = Field(None, description="optional image file of the empty lane (whole frame) to start the long-term model from")

    @model_validator(mode="after")
    def _taus(self) -> "StationaryForegroundConfig":
        if self.short_tau_s >= self.long_tau_s:
            raise ValueError("short_tau_s must be shorter than long_tau_s")
        return self


class ScheduleWindowConfig(_Strict):
    """One weekly window of a rule's schedule, on the site's wall clock (``seawatch.vision.schedule``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    days: tuple[str, ...] = Field(
        ("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
        description="days the window starts on: mon..sun (full names and ranges such as mon-fri too); default every day")
    from_: str = Field(alias="from", description="start, \"HH:MM\" local (quote it: YAML reads 07:00 as a number)")
    to: str = Field(description="end, \"HH:MM\" local (\"24:00\": midnight); at or before `from`: the next day")

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> tuple[str, ...]:
        return parse_days(v)

    @field_validator("from_", mode="before")
    @classmethod
    def _from(cls, v: Any) -> str:
        return _hhmm_text(parse_hhmm(v))

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v: Any) -> str:
        return _hhmm_text(parse_hhmm(v, allow_24=True))

    @model_validator(mode="after")
    def _span(self) -> "ScheduleWindowConfig":
        if self.from_ == self.to:
            raise ValueError(f"from and to are both {self.from_}: a window of no time (for the whole day give "
                             "from: \"00:00\", to: \"24:00\")")
        return self


def _hhmm_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class ScheduleConfig(_Strict):
    """When a rule is armed: weekly windows on the wall clock of ``tz`` (default: ``site.timezone``). Outside them
    the rule raises nothing and an incident still open is ended. A plain list of windows is short for
    ``{windows: [...]}``."""

    windows: tuple[ScheduleWindowConfig, ...] = Field(min_length=1, max_length=50, description="armed windows (any of)")
    tz: str | None = Field(None, description="IANA time zone of these windows, e.g. Europe/Amsterdam (default: site.timezone)")

    @model_validator(mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        return {"windows": v} if isinstance(v, (list, tuple)) else v

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            time_zone(v)
        return v

    def build(self, site_tz: str = "UTC"):
        """The :class:`~seawatch.vision.schedule.Schedule` (its own ``tz``, else ``site_tz``)."""
        return build_schedule(self.windows, self.tz or site_tz)


class SiteConfig(_Strict):
    """Facts about the site as a whole."""

    timezone: str = Field("UTC", description="IANA time zone of the site's wall clock (rule schedules), e.g. Europe/Amsterdam")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        time_zone(v)
        return v


def _schedule_field():
    return Field(None, description="when the rule is armed (weekly windows on the site's wall clock, by each frame's capture time); "
                                  "none: always")


class FireSmokeRuleConfig(_Strict):
    """Fire / smoke: k of the last n analysed frames, over at least T seconds."""

    type: Literal["fire_smoke"] = "fire_smoke"
    schedule: ScheduleConfig | None = _schedule_field()
    labels: tuple[str, ...] = Field(("fire", "smoke"), min_length=1, description="labels watched; each raises its own event type")
    min_confidence: Conf = Field(
        0.35,
        description="detections below this are ignored unless min_confidence_by_label names their label "
        "(fire_smoke model on the shared media: scenes without fire give smoke boxes up to 0.31 on night CCTV)",
    )
    min_confidence_by_label: dict[str, Conf] = Field(
        {"fire": 0.2},
        description="per-label floors instead of min_confidence (fire_smoke model on the shared media: the fire class "
        "is far more specific than smoke: fire boxes on scenes without fire stay <= 0.09 while the weakest real fire "
        "scores 0.21; video alarms still need k-of-n frames over T s and a moving source)",
    )
    window_frames: int = Field(10, ge=1, le=1000, description="n: analysed frames in the voting window")
    min_hits: int = Field(5, ge=1, le=1000, description="k: frames with the label among the last n needed to confirm")
    window_max_age_s: float = Field(60.0, gt=0.0, description="frames older than this leave the voting window even if fewer than n came since")
    min_duration_s: float = Field(3.0, ge=0.0, le=3600.0, description="T: seconds from first evidence before an event may start")
    max_gap_s: float = Field(5.0, gt=0.0, description="an unconfirmed candidate is dropped after this long without evidence")
    clear_after_s: float = Field(20.0, gt=0.0, description="an open event ends after this long without evidence")
    min_area_frac: float = Field(0.0, ge=0.0, le=1.0, description="boxes smaller than this fraction of the frame are ignored")
    static_min_iou: float | None = Field(
        0.97,
        ge=0.5,
        le=1.0,
        description="if every evidence box in the window overlaps the first at this IoU or more, the box is frozen in "
        "place; with frames given, it must also be frozen in its pixels (see static_max_pixel_change) to count as a "
        "static source (a lamp, a red sign, a sunset) that is not confirmed. None disables the check",
    )
    static_max_pixel_change: float = Field(
        6.0,
        ge=0.0,
        le=255.0,
        description="median grey-level change (0-255) inside the box between analysed frames below which a frozen box is "
        "a static source; flames change by 20-45 levels between frames half a second apart",
    )
    severity_area_frac: tuple[float, float, float] = Field(
        (0.01, 0.05, 0.15), description="area fraction of the frame at which severity becomes medium, high, critical"
    )
    growth_factor: float = Field(2.0, gt=1.0, description="area growing by this factor within growth_window_s raises severity one level")
    growth_window_s: float = Field(60.0, gt=0.0, description="window over which growth is measured")
    cooldown_s: float = Field(60.0, ge=0.0, description="after an end, the same label in this zone cannot start a new event for this long")

    def floor(self, label: str) -> float:
        """The confidence floor for ``label``."""
        return float(self.min_confidence_by_label.get(label, self.min_confidence))

    @model_validator(mode="after")
    def _k_n(self) -> "FireSmokeRuleConfig":
        unknown = sorted(set(self.min_confidence_by_label) - set(self.labels))
        if unknown:
            raise ValueError(f"min_confidence_by_label names labels this rule does not watch: {unknown}")
        if self.min_hits > self.window_frames:
            raise ValueError(f"min_hits (k={self.min_hits}) must not exceed window_frames (n={self.window_frames})")
        a = self.severity_area_frac
        if not (0 < a[0] <= a[1] <= a[2] <= 1):
            raise ValueError("severity_area_frac must be increasing fractions in (0, 1]")
        return self


class HardHatRuleConfig(_Strict):
    """A person without a hard hat inside the zone for at least T seconds; one event per person track."""

    type: Literal["no_hard_hat"] = "no_hard_hat"
    schedule: ScheduleConfig | None = _schedule_field()
    person_labels: tuple[str, ...] = Field(("person",), description="labels of person boxes")
    no_helmet_label: str = Field("no_helmet", description="label of a bare head")
    helmet_label: str = Field("helmet", description="label of a head with a hard hat")
    min_confidence: Conf = Field(0.3, description="detections below this are ignored")
    min_duration_s: float = Field(5.0, ge=0.0, le=3600.0, description="T: seconds bare-headed inside the zone before the event starts")
    grace_s: float = Field(2.0, ge=0.0, description="gap in the evidence tolerated before the dwell timer restarts")
    end_after_s: float = Field(5.0, gt=0.0, description="the event ends after this long without a violation (hat on, left the zone, gone)")
    head_region_frac: float = Field(0.4, gt=0.0, le=1.0, description="top fraction of a person box where its head box must lie")
    person_without_helmet_box: Literal["violation", "ignore"] = Field(
        "violation", description="a large-enough person whose head region holds no helmet box counts as a violation, or is ignored"
    )
    min_person_height_px: float = Field(80.0, ge=0.0, description="smaller people without any head box are ignored (too far to judge)")
    head_memory_s: float = Field(
        5.0, ge=0.0, description="a person track whose head box is missed keeps its last seen head state (hat / bare) this long"
    )
    cooldown_s: float = Field(60.0, ge=0.0, description="after an end, the same track cannot start a new event for this long")


class FireLaneRuleConfig(_Strict):
    """A lane occupied by something that stays put for at least T; one event per blockage."""

    type: Literal["fire_lane_blocked"] = "fire_lane_blocked"
    schedule: ScheduleConfig | None = _schedule_field()
    vehicle_labels: tuple[str, ...] = Field(("car", "truck", "bus", "motorcycle"), description="tracked labels that can block the lane")
    ignore_labels: tuple[str, ...] = Field(("person",), description="never count as blocking (masked out of stationary foreground too)")
    min_confidence: Conf = Field(0.3, description="detections below this are ignored")
    min_duration_s: float = Field(120.0, ge=0.0, le=86400.0, description="T: seconds an object must stay put in the lane")
    min_overlap_frac: float = Field(
        0.25, ge=0.0, le=1.0, description="fraction of the box inside the lane for it to be in the lane; 0 = anchor point test"
    )
    max_drift_frac: float = Field(0.15, gt=0.0, le=2.0, description="an object is stationary while its anchor stays within this fraction of its box diagonal")
    grace_s: float = Field(15.0, ge=0.0, description="a stationary vehicle may go unseen (occlusion, missed detections) this long")
    clear_after_s: float = Field(10.0, gt=0.0, description="the blockage ends once the lane has been clear this long")
    stationary_foreground: StationaryForegroundConfig | None = Field(
        None, description="also watch the lane pixels for unknown stationary objects (needs frames and a pixel polygon)"
    )
    cooldown_s: float = Field(0.0, ge=0.0, description="after an end, a new blockage cannot start for this long")


class VesselZoneRuleConfig(_Strict):
    """A vessel track inside the zone for at least T seconds; one event per track."""

    type: Literal["vessel_in_zone"] = "vessel_in_zone"
    schedule: ScheduleConfig | None = _schedule_field()
    labels: tuple[str, ...] = Field(("vessel",), description="vessel labels")
    min_confidence: Conf = Field(0.3, description="detections below this are ignored")
    min_duration_s: float = Field(30.0, ge=0.0, le=86400.0, description="T: seconds inside before the event starts")
    grace_s: float = Field(5.0, ge=0.0, description="gap (missed detections, leaving briefly) tolerated before the dwell timer restarts")
    end_after_s: float = Field(15.0, gt=0.0, description="the event ends after the vessel has been outside or unseen this long")
    cooldown_s: float = Field(120.0, ge=0.0, description="after an end, the same track cannot start a new event for this long")


RuleConfig = Annotated[
    Union[FireSmokeRuleConfig, HardHatRuleConfig, FireLaneRuleConfig, VesselZoneRuleConfig], Field(discriminator="type")
]


class ZoneConfig(_Strict):
    """One zone on one source and the rules that apply in it."""

    id: str = Field(pattern=_ID, description="zone id, unique per source")
    source: str = Field(min_length=1, description="id of the source this zone is drawn on")
    polygon_px: tuple[tuple[float, float], ...] | None = Field(None, description="pixel polygon [[x, y], ...] (fixed cameras)")
    polygon_lonlat: tuple[tuple[float, float], ...] | None = Field(
        None, description="WGS84 polygon [[lon, lat], ...]; needs a geo-referenced source (calibration or drone pose)"
    )
    anchors: dict[str, Literal["bottom_centre", "centre"]] = Field(
        default_factory=dict, description="per-label anchor point overriding the defaults (bottom centre: people, vehicles, a vessel's waterline, every box in a geo zone; else centre)"
    )
    rules: tuple[RuleConfig, ...] = Field(min_length=1, description="rules evaluated in this zone")

    @model_validator(mode="after")
    def _shape(self) -> "ZoneConfig":
        if self.polygon_px is not None and self.polygon_lonlat is not None:
            raise ValueError("give polygon_px or polygon_lonlat, not both (neither = the whole frame)")
        for r in self.rules:
            if isinstance(r, FireLaneRuleConfig) and self.polygon_px is None:
                if r.stationary_foreground is not None:
                    raise ValueError("fire_lane_blocked with stationary_foreground needs a polygon_px lane")
                if r.min_overlap_frac > 0 and self.polygon_lonlat is not None:
                    raise ValueError("fire_lane_blocked on a geo zone must use min_overlap_frac: 0 (anchor point test)")
        if self.polygon_px is not None or self.polygon_lonlat is not None:
            try:  # the check run/serve make when they build the zone, so `config check` reports it too
                self.build_zone()
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def build_zone(self):
        """The prepared ``Zone`` (raises ConfigError for a bad polygon)."""
        from seawatch.vision.zones import Zone

        if self.polygon_px is not None:
            return Zone.from_pixels(self.id, self.polygon_px)
        if self.polygon_lonlat is not None:
            return Zone.from_lonlat(self.id, self.polygon_lonlat)
        return Zone.whole_frame(self.id)


class WaterAreasConfig(_Strict):
    """The site's water in WGS84, for vessel detections of geo-referenced sources (calibrated cameras, drones).

    Vessel boxes whose waterline is on land or in the sky are dropped before tracking (see
    ``seawatch.vision.zones.GeoWaterMask``). With no polygons and no file, every surface below the horizon counts
    as water (open sea, an offshore wind farm): only the horizon test applies.
    """

    polygons_lonlat: tuple[tuple[tuple[float, float], ...], ...] = Field(
        (), description="water polygons, each [[lon, lat], ...] (outer rings; use geojson for piers and islands as holes)")
    geojson: str | None = Field(
        None, description="GeoJSON file of water Polygons / MultiPolygons (holes are land), e.g. exported from a GIS "
                          "or OpenStreetMap; a path relative to the working directory")
    margin_m: float = Field(10.0, ge=0.0, le=2000.0, description="a waterline this close to the water still counts "
                                                                 "(hulls moored against a quay wall, polygon accuracy)")
    sigma_k: float = Field(2.0, ge=0.0, le=10.0, description="plus this many 1-sigma errors of the waterline's ground position")
    horizon_margin_px: float = Field(12.0, ge=0.0, le=2000.0, description="a waterline that looks above the horizon is "
                                     "kept when the point this far below it reaches the water (pose error)")

    @model_validator(mode="after")
    def _valid(self) -> "WaterAreasConfig":
        try:
            self.build()  # a bad polygon or GeoJSON file is a config error naming this section, not a crash at start
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def build(self):
        """The ``GeoWaterMask`` (raises ConfigError for a polygon or file that is not valid)."""
        from seawatch.vision.zones import GeoWaterMask, _polygon, read_water_geojson

        polys = [_polygon(f"water_areas.polygons_lonlat[{i}]", p, geo=True) for i, p in enumerate(self.polygons_lonlat)]
        if self.geojson:
            polys += read_water_geojson(self.geojson)
        return GeoWaterMask.build(polys, self.margin_m, self.sigma_k, self.horizon_margin_px)


class RulesConfig(_Strict):
    """Tracking, zones with their rules, and the event policy."""

    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="tracker settings (one tracker per source)")
    site: SiteConfig = Field(default_factory=SiteConfig, description="the site's time zone (rule schedules)")
    events: EventPolicy = Field(default_factory=EventPolicy, description="clip rolls and update cadence")
    zones: tuple[ZoneConfig, ...] = Field((), description="zones per source with their rules")

    @model_validator(mode="after")
    def _unique(self) -> "RulesConfig":
        if (why := duplicate_zone(self.zones)) is not None:
            raise ValueError(why)
        return self


def duplicate_zone(zones) -> str | None:
    """Why two zones of one source share an id (their events could not be told apart), or None."""
    seen: dict[tuple[str, str], int] = {}
    for i, z in enumerate(zones):
        key = (z.source, z.id)
        if key in seen:
            return (f"zones[{i}]: zone id {z.id!r} appears twice on source {z.source!r} (zones[{seen[key]}] too): "
                    "its events could not be told apart; rename one")
        seen[key] = i
    return None


def load_rules_config(data: Mapping[str, Any] | None, where: str = "config") -> RulesConfig:
    """Validate a dict (parsed YAML); every problem is reported with its field path in one ``ConfigError``."""
    try:
        cfg = RulesConfig.model_validate(data or {})
    except ValidationError as exc:
        lines = []
        errors = exc.errors()
        locs = [tuple(e["loc"]) for e in errors]
        for err in errors:
            here = tuple(err["loc"])
            if any(len(o) > len(here) and o[: len(here)] == here for o in locs):
                continue  # a parent echoing its child's failure ("tuple should have 1 item") says nothing new
            loc = ".".join(str(p) for p in here)
            lines.append(f"  {where}: {loc or '(top)'}: {error_message(err, RulesConfig)}")
        raise ConfigError("invalid rules configuration:\n" + "\n".join(lines)) from None
    return cfg  # zone polygons were checked by ZoneConfig's validator (the same check for every loader)
