"""Seawatch: watch ports and offshore wind farms through CCTV cameras and patrol drones.

The import name ``seawatch`` maps onto the repository root; subpackages are the architecture:
``streams`` (video in), ``drone`` (MAVLink), ``vision`` (detection, tracking, rules) and ``service`` (API).
"""

__version__ = "0.1.0"
