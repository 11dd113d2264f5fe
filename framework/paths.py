"""Where the framework keeps files it can rebuild (generated datasets, activations)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache_dir"]


def user_cache_dir() -> Path:
    """The user cache shared by every store.

    Returns
    -------
    Path
        ``$FRAMEWORK_CACHE_DIR`` when set; else ``$XDG_CACHE_HOME/framework``, with
        ``$XDG_CACHE_HOME`` defaulting to ``~/.cache``. Not created here. Generated
        datasets go to its ``datasets`` folder.
    """
    env = os.environ.get("FRAMEWORK_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "framework"
