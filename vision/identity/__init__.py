"""Vessel identity: AIS vessel state table, vessel registry, hull-number OCR and camera-track/AIS fusion.

Pure computation (the AIS socket/file readers are in ``seawatch.streams.ais``). Results are plain frozen
dataclasses; :class:`~seawatch.vision.identity.rules.IdentityRules` turns them into decision records
(``unidentified_vessel``, ``identity_mismatch``, ``registry_alert``, ``ais_dark``) for the event layer.

Modules: ``vessels`` (VesselTable: MMSI -> VesselState, ageing), ``registry`` (VesselRegistry from CSV, lookups by
MMSI / hull number / fuzzy name), ``hulltext`` (normalise and parse hull numbers), ``ocr`` (HullOcr offline engine,
best-crop choice, multi-frame voting), ``track_ocr`` (TrackOcr: hull OCR inside the pipeline, crop choice per track,
worker thread with a bounded queue), ``render`` (rendered hull numbers for evaluation/tests), ``evaluate`` (measured OCR
and association accuracy, ``python -m seawatch.vision.identity.evaluate``; numbers in README.md), ``fusion`` (IdentityFuser: dead reckoning, gating, Hungarian assignment,
TrackIdentity), ``rules`` (IdentityRules -> IdentityDecision), ``cmd_ais_show`` (``seawatch ais show``).

Typical loop (one call per frame time, all times int ns UTC)::

    dec, table = AisDecoder(), VesselTable()
    for msg in feed.messages(): table.update(msg)             # in the AIS thread
    reg = VesselRegistry.from_csv("registry.csv")
    fuser, rules, ocr = IdentityFuser(reg), IdentityRules(registry=reg), HullOcr("tiny")
    hull = read_track(ocr, crops_of_track)                     # now and then per track, not every frame
    tracks = [GeoTrack(track_id, t_ns, lat_deg, lon_deg, pos_sigma_m, in_zone=..., hull=hull), ...]
    identities = fuser.update(tracks, table, t_ns)            # track id -> TrackIdentity
    for d in rules.update(t_ns, tracks, identities, table):   # IdentityDecision(type, phase, ...)
        ...  # -> Event(type=d.type, phase=d.phase, attributes=d.attributes, ...)
"""
