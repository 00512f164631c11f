"""Source URLs: credential redaction and the kind of source a URL names.

Every log line and status that mentions a source URL goes through :func:`redact_url`, so camera passwords never
reach logs, API answers or exception messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

# scheme://user:password@host  or  scheme://user@host ; the userinfo part ends at the LAST '@' before the path
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#]*)@")
# secrets passed as query parameters by some cameras (…?user=admin&password=…)
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|key|auth|secret|sig|signature)=)[^&;#]*")

REDACTED = "***"


def redact_url(url: str | Path | None) -> str:
    """The URL with user name and password (and secret-looking query values) replaced by ``***``.

    ``rtsp://admin:pa@ss@10.0.0.5:554/ch1?token=x`` -> ``rtsp://***@10.0.0.5:554/ch1?token=***``.
    File paths and URLs without credentials come back unchanged.
    """
    if url is None:
        return ""
    text = str(url)
    m = _USERINFO.match(text)
    if m:
        text = f"{m.group('scheme')}{REDACTED}@{text[m.end():]}"
    return _SECRET_QUERY.sub(lambda q: q.group(1) + REDACTED, text)


def redact_text(text: str, url: str | Path | None) -> str:
    """``text`` (e.g. an FFmpeg error message) with any occurrence of ``url``'s credentials removed."""
    if not url:
        return text
    raw = str(url)
    out = text.replace(raw, redact_url(raw))
    m = _USERINFO.match(raw)
    if m and m.group("userinfo"):
        out = out.replace(m.group("userinfo"), REDACTED)
    return out


def source_kind(url: str | Path) -> str:
    """``rtsp``, ``mjpeg`` (http/https), ``udp`` (raw H.264 or MPEG-TS over UDP, e.g. a drone), or ``file``."""
    text = str(url)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("rtsp", "rtsps", "rtspt"):
        return "rtsp"
    if scheme in ("http", "https"):
        return "mjpeg"
    if scheme in ("udp", "rtp", "srt", "tcp"):
        return "udp"
    return "file"
