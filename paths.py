"""Where Seawatch keeps and finds files outside git: the model cache and the shared media folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
MANIFEST_DIR = REPO_ROOT / "models"
DATASET_DIR = REPO_ROOT / "datasets"


def cache_dir() -> Path:
    """The model cache: ``$SEAWATCH_CACHE`` or ``$XDG_CACHE_HOME/seawatch`` or ``~/.cache/seawatch``."""
    env = os.environ.get("SEAWATCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "seawatch"


def shared_dir() -> Path | None:
    """The shared data folder (real media and model files), if present.

    ``$SEAWATCH_SHARED`` wins; otherwise ``../shared`` next to the repository checkout.
    """
    env = os.environ.get("SEAWATCH_SHARED")
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def shared_media_dir() -> Path | None:
    s = shared_dir()
    if s is not None and (s / "media").is_dir():
        return s / "media"
    return None


def shared_media_file(rel: str) -> Path | None:
    """``rel`` (e.g. ``A_boats/x.jpg``) in the shared media, None when the media or that file is absent."""
    media = shared_media_dir()
    return media / rel if media is not None and (media / rel).is_file() else None
