"""Computation only: detection (ONNX Runtime), tracking, zones, rules, geolocation."""
