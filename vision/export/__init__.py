"""Provisioning: fetch pinned weights, export to ONNX, verify, quantize. Imports torch lazily."""
