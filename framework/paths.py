"""Where the framework keeps files it can rebuild (generated datasets, activations)."""
from __future__ import annotations

import os
from pathlib import Path

from framework.errors import ConfigError

__all__ = ["ensure_cache_dir", "expand_user", "not_a_file", "user_cache_dir"]


def expand_user(path: str | Path, what: str = "path") -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded.

    Raises
    ------
    ConfigError
        The home folder cannot be determined (unknown user, ``$HOME`` unset); names ``what``.
    """
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:
        raise ConfigError(f"Cannot expand '~' in {what} '{path}' ({exc}); give the full path.") from None


def not_a_file(path: str | Path) -> str:
    """Why ``path`` is not a readable regular file, as words for a message ("does not exist", ...)."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        return f"is a broken symbolic link (to '{os.readlink(p)}')"
    if not p.exists():
        return "does not exist"
    if p.is_dir():
        return "is a directory"
    return "is not a regular file (a device, pipe or socket)"


def _cache_variable() -> str:
    """The environment variable that chose the cache folder, for messages."""
    if os.environ.get("FRAMEWORK_CACHE_DIR"):
        return "$FRAMEWORK_CACHE_DIR"
    if os.environ.get("XDG_CACHE_HOME"):
        return "$XDG_CACHE_HOME"
    return "$HOME"


def user_cache_dir() -> Path:
    """The user cache shared by every store.

    Returns
    -------
    Path
        ``$FRAMEWORK_CACHE_DIR`` when set; else ``$XDG_CACHE_HOME/framework``, with
        ``$XDG_CACHE_HOME`` defaulting to ``~/.cache``. Not created here (see
        :func:`ensure_cache_dir`). Generated datasets go to its ``datasets`` folder.
    """
    env = os.environ.get("FRAMEWORK_CACHE_DIR")
    if env:
        return expand_user(env, "$FRAMEWORK_CACHE_DIR")
    base = os.environ.get("XDG_CACHE_HOME") or str(expand_user("~", "$HOME") / ".cache")
    return expand_user(base, "$XDG_CACHE_HOME") / "framework"


def ensure_cache_dir(sub: str | None = None) -> Path:
    """Create the user cache (and its folder ``sub``) if needed and return it.

    Raises :class:`ConfigError` naming the environment variable that chose the folder
    when it is a file, lies under a file or cannot be created or written (e.g. ``/proc/x``).
    """
    root = user_cache_dir()
    path = root / sub if sub else root
    var = _cache_variable()
    fix = ("set FRAMEWORK_CACHE_DIR to a writable folder (or unset it)" if var == "$FRAMEWORK_CACHE_DIR" else
           "set FRAMEWORK_CACHE_DIR to a writable folder")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"Cache folder '{root}' (from {var}) is a file, not a folder; {fix}.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cache folder '{path}' (from {var}) cannot be created ({exc.strerror or exc}); "
                          f"{fix}.") from None
    if not path.is_dir():
        raise ConfigError(f"Cache folder '{path}' (from {var}) is a file, not a folder; {fix}.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"Cache folder '{path}' (from {var}) is not writable; {fix}.")
    return path
