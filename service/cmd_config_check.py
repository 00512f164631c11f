"""``seawatch config check FILE``: validate a ``seawatch serve`` configuration and explain every error."""

from __future__ import annotations

import argparse
import sys

HELP = "validate a configuration file; every error names its field"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="YAML configuration of seawatch serve (sources, zones, storage, auth, mqtt, email, ...) or seawatch run")


def run(args: argparse.Namespace) -> int:
    from seawatch.service.config import load_config

    cfg = load_config(args.file)  # ConfigError -> "seawatch: error: ..." and exit 1 (cli.main)
    _email_secret(args.file, cfg.email)
    for line in models_not_provisioned(cfg) + rules_without_their_model(cfg):
        print(f"{args.file}: warning: {line}", file=sys.stderr)
    print(
        f"{args.file}: OK: {len(cfg.sources)} source(s), {len(cfg.zones)} zone(s), {len(cfg.auth.users)} user(s), "
        f"{len(cfg.auth.api_keys)} API key(s); database {_redact(cfg.storage.resolved_database_url())}; "
        f"media {cfg.storage.resolved_media_dir()}; listening on {cfg.service.host}:{cfg.service.port}"
        + (f"; {len(cfg.drones)} drone(s)" if cfg.drones else "")
        + (f"; {len(cfg.ais)} AIS feed(s)" if cfg.ais else "")
        + (f"; MQTT {cfg.mqtt.host}:{cfg.mqtt.port}" + (" with Home Assistant discovery" if cfg.mqtt.home_assistant.enabled
                                                          else "") if cfg.mqtt.enabled else "")
        + (f"; webhooks {', '.join(w.label for w in cfg.webhooks)}" if cfg.webhooks else "")
        + _email(cfg.email)
        + _workers(cfg)
        + _retention(cfg.storage.retention)
        + _alerts(cfg.source_alerts)
        + _views(cfg)
        + _ais(cfg)
        + (f"; proxies believed {', '.join(cfg.service.trusted_proxies)}" if cfg.service.trusted_proxies
           else "; no proxy headers believed")
    )
    return 0


def models_not_provisioned(cfg) -> list[str]:
    """A camera's model that is registered but not in this machine's model cache: ``seawatch serve`` refuses to start
    without it ("not provisioned"), so config check, often run before the models are fetched or as another user
    (another ``SEAWATCH_CACHE``), says so and how to fetch it. One line per model."""
    from seawatch import paths
    from seawatch.errors import SeawatchError
    from seawatch.vision.ensemble import members_of
    from seawatch.vision.registry import is_provisioned

    users: dict[str, list[str]] = {}
    for s in cfg.sources:
        for name in s.models:
            base = name.partition(":")[0]  # NAME:VARIANT: the variant is checked when serve loads it
            try:
                members = members_of(base) or (base,)
            except SeawatchError:
                continue  # a malformed group: load_config names it
            for m in members:
                users.setdefault(m, []).append(s.id)
    return [f"model {m} (camera(s) {', '.join(dict.fromkeys(ids))}) is not provisioned in {paths.cache_dir()}: seawatch "
            f"serve will refuse to start; run `seawatch models fetch {m}` with the SEAWATCH_CACHE the service gets"
            for m, ids in users.items() if not is_provisioned(m)]


def rules_without_their_model(cfg) -> list[str]:
    """A zone rule whose camera runs no model that detects what the rule needs (a hard-hat zone on a camera without
    the ``helmet`` model, a fire zone without ``fire_smoke``) is valid but can never raise anything: one line each,
    saying which models would. Cameras with a model the registry does not know are left out (nothing to go by)."""
    from seawatch.errors import SeawatchError
    from seawatch.service.mqtt import _model_labels
    from seawatch.vision.registry import load_manifests

    try:
        manifests = load_manifests()
    except SeawatchError:
        return []
    models = {s.id: s.models for s in cfg.sources}
    out = []
    for zone in cfg.zones:
        if zone.source not in models:
            continue
        has = _model_labels(models[zone.source])
        if has is None:
            continue
        for rule in zone.rules:
            needs = ((rule.no_helmet_label,) if rule.type == "no_hard_hat"
                     else tuple(getattr(rule, "vehicle_labels", ()) or getattr(rule, "labels", ())))
            if not needs or has.intersection(needs):
                continue
            would = sorted(n for n, m in manifests.items() if set(m.seawatch_labels).intersection(needs))
            out.append(f"zone {zone.id}: rule {rule.type} needs a model detecting {' or '.join(needs)}, and camera "
                       f"{zone.source} runs {', '.join(models[zone.source])}: it can never raise anything"
                       + (f" (add {' or '.join(would)} to the camera's models)" if would else ""))
    return out


def _email_secret(where: str, e) -> None:
    """A login whose password variable is unset or empty is an error, as ``serve`` refuses to start without it (the
    check runs in the environment ``serve`` gets: a systemd unit's ``EnvironmentFile=``, a container's env)."""
    from seawatch.errors import ConfigError
    from seawatch.service.email_alerts import resolve_password

    if e is None:
        return
    try:
        resolve_password(e)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}; seawatch serve would refuse to start") from None


def _email(e) -> str:
    """Where incident mails go: the server, how it is secured, the login, and each recipient's filter and limit."""
    if e is None:
        return ""
    how = {"starttls": "STARTTLS", "tls": "TLS", "none": "no encryption"}[e.security]
    login = ""
    if e.username is not None:  # its password variable is set: _email_secret refused the file otherwise
        login = f", login {e.username} with the password from ${e.password_env} (set)"
    who = []
    for r in e.recipients:
        what = ", ".join(r.types) if r.types else "all types"
        who.append(f"{r.name} ({len(r.to)} address(es); {what}; {r.min_severity}+; {'/'.join(r.phases)}; "
                   f"at most {r.max_per_minute}/min)")
    return f"; e-mail via {e.smtp_host}:{e.port} ({how}{login}) from {e.from_} to {'; '.join(who)}"


def _workers(cfg) -> str:
    from seawatch.vision.pipeline import worker_count

    n = worker_count(cfg.analysis_workers, len(cfg.sources))
    how = "auto" if cfg.analysis_workers == 0 else f"analysis_workers {cfg.analysis_workers}"
    return f"; {n} analysis worker(s) here ({how})" if cfg.sources else ""


def _alerts(a) -> str:
    cams = (f"cameras down {a.offline_after_s:g} s -> source_offline ({a.severity})" if a.offline_after_s is not None
            else "no camera-down incidents")
    drones = (f"drone links lost {a.drone_link_lost_after_s:g} s in flight -> drone_link_lost ({a.drone_severity})"
              if a.drone_link_lost_after_s is not None else "no drone-link incidents")
    return f"; {cams}; {drones}"


def _views(cfg) -> str:
    """Which fixed cameras' views are checked and what raises an incident (``service/source_watch.py``,
    ``vision/view_check.py``); drone cameras and cameras that pan (water_views) never are."""
    from seawatch.service.source_watch import SourceWatch

    checked = SourceWatch(cfg).view_configs
    if not checked:
        return "; no view check (no fixed camera, or view_check disabled)" if cfg.sources else ""
    v = cfg.source_alerts.view_check
    own = sum(1 for s in cfg.sources if s.id in checked and s.view_check is not None)
    return (f"; view check of {len(checked)} fixed camera(s) every {v.interval_s:g} s against its reference view "
            f"(moved >= {v.moved_px:g} px or {v.moved_deg:g} deg, covered, blurred; held {v.raise_after_s:g} s -> "
            f"camera_moved / camera_covered / camera_blurred ({v.severity}); reference learnt over the first "
            f"{v.reference_after_s:g} s unless stored)" + (f", {own} with their own view_check" if own else ""))


def _ais(cfg) -> str:
    """How the AIS feeds run and what an outage does: socket feeds are live; a log file is replayed by its own
    clock (down once the frames are past its end, so a log recorded long ago never lines up with today's frames);
    a ``loop:`` log is replayed live, looped (always up). After ``identity.ais_down_after_s`` without a message a
    socket feed is an ``ais_feed_down`` incident, and while every feed is down unidentified-vessel alerts are held."""
    from seawatch.vision.vessel_identity import IdentityConfig, ais_loop_path

    if not cfg.ais:
        return ""
    after = (cfg.identity or IdentityConfig()).ais_down_after_s
    loops = sum(1 for u in cfg.ais if ais_loop_path(u) is not None)
    sockets = sum(1 for u in cfg.ais if ais_loop_path(u) is None and "://" in u)
    logs = len(cfg.ais) - loops - sockets
    kinds = ([f"{sockets} live socket feed(s)"] if sockets else []) \
        + ([f"{logs} log file(s) replayed by their own clock (down once the frames are {after:g} s past their end: "
             "match them with video recorded at the same time)"] if logs else []) \
        + ([f"{loops} log(s) replayed live in a loop (loop:, re-timed from the first frame: always fresh)"]
           if loops else [])
    a = cfg.source_alerts
    inc = (f"AIS feeds silent {after:g} s -> ais_feed_down ({a.ais_severity})" if sockets and a.ais_feed_down
           else "no AIS-feed incidents" + ("" if sockets else " (log files only)"))
    return (f"; AIS: {', '.join(kinds)}; {inc}; while every AIS feed is down, unidentified_vessel alerts are held "
            "until AIS is back")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is reported when the store opens
        return url


def _retention(r) -> str:
    if not r.enabled:
        return "; retention off (events and clips kept until deleted by hand)"
    return f"; {r.summary()} (held ones for good)"
