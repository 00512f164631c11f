"""Vessel identity: AIS vessel state table, vessel registry, hull-number OCR and camera-track/AIS fusion.

Pure computation (the AIS socket/file readers are in ``seawatch.streams.ais``). Results are plain frozen
dataclasses; :class:`~seawatch.vision.identity.rules.IdentityRules` turns them into decision records
(``unidentified_vessel``, ``identity_mismatch``, ``registry_alert``, ``ais_dark``) for the event layer.
"""
