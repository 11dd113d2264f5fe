"""Compare deep vision networks with brain recordings.

From Python: ``framework.run(models=[...], metrics=[...], store="results")`` runs a comparison
as ``framework run`` does and returns :class:`framework.api.Results` (``.to_pandas()``,
``.layers()``, ``.write_leaderboard()``); ``framework.open_store(path)`` reads an existing store.
The public types live in :mod:`framework.types`, plugin contracts in
:mod:`framework.contracts`, and the plugin registry in :mod:`framework.registry`.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Results", "__version__", "epochs_dataset", "open_store", "rdms_dataset", "responses_dataset", "run"]


def __getattr__(name: str):
    """The Python API (:mod:`framework.api`), imported on first use so ``import framework`` stays light."""
    if name in ("Results", "epochs_dataset", "open_store", "rdms_dataset", "responses_dataset", "run"):
        from framework import api

        return getattr(api, name)
    raise AttributeError(f"module 'framework' has no attribute {name!r}")
