"""Compare deep vision networks with brain recordings.

The public types live in :mod:`framework.types`, plugin contracts in
:mod:`framework.contracts`, and the plugin registry in :mod:`framework.registry`.
"""
from __future__ import annotations

__version__ = "0.1.0"
