"""Exceptions raised on bad input.

Every message follows one template: what went wrong, where (file, option or item),
what was expected and what came, and how to fix it. The CLI prints a
:class:`FrameworkError` as one line on stderr and exits with status 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class FrameworkError(Exception):
    """Base class of every error the framework reports to a user."""


class ConfigError(FrameworkError):
    """A run option or configuration file is invalid."""


class PluginError(FrameworkError):
    """A plugin is unknown, misdeclared or failed to load."""


class DataError(FrameworkError):
    """A dataset, stimulus, recording or weights file is missing or invalid."""


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3) -> str:
    """Return ``" Did you mean 'a' or 'b'?"`` for the closest names, or ``""``.

    Parameters
    ----------
    name : str
        The name the user gave.
    choices : iterable of str
        The valid names.
    """
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        lowered = name.lower()
        close = [c for c in choices if lowered and (lowered in c.lower() or c.lower() in lowered)][:n]
    if not close:
        return ""
    quoted = [f"'{c}'" for c in close]
    if len(quoted) == 1:
        return f" Did you mean {quoted[0]}?"
    return f" Did you mean {', '.join(quoted[:-1])} or {quoted[-1]}?"


def unknown_name_error(kind: str, name: str, choices: Iterable[str], *, option: str | None = None,
                       error_cls: type[FrameworkError] = PluginError) -> FrameworkError:
    """Build the one error used for every unknown plugin, layer, band or option value."""
    choices = list(choices)
    where = f" (option {option})" if option else ""
    hint = did_you_mean(name, choices)
    listing = f" `framework list {kind}s` shows them all." if kind in {"model", "signal", "metric", "dataset"} else (
        f" Valid: {', '.join(sorted(choices)[:12])}{' ...' if len(choices) > 12 else ''}.")
    return error_cls(f"Unknown {kind} '{name}'{where}.{hint}{listing}")
