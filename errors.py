"""One root exception with a subtree per concern.

Third-party errors are wrapped at the boundary with what was being done, so a message names the file, source,
model or field at fault.
"""

from __future__ import annotations


class SeawatchError(Exception):
    """Root of every error Seawatch raises on purpose."""


class ConfigError(SeawatchError):
    """A configuration file or value is invalid."""


class InputError(SeawatchError):
    """An input file or frame cannot be used (corrupt, unsupported, empty)."""


class StreamError(SeawatchError):
    """A video source failed to open or read."""


class TelemetryError(SeawatchError):
    """A drone link or telemetry log failed."""


class ModelError(SeawatchError):
    """A model cannot be found, provisioned, verified or run."""


class ModelNotFound(ModelError):
    """No manifest with that name is registered."""


class ModelNotProvisioned(ModelError):
    """The manifest exists but its ONNX file is not in the cache yet (run ``seawatch models fetch``)."""


class ChecksumMismatch(ModelError):
    """A downloaded or cached file does not have the pinned sha256."""


class ExportError(ModelError):
    """Exporting weights to ONNX, or checking the export, failed."""
