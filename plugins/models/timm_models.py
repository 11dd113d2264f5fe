"""The ``timm:<name>`` model family: any network ``timm.list_models()`` knows.

The implementation (:class:`TimmModel`, the default-layer rule :func:`block_layers`, the
weights loaders) lives in :mod:`plugins.models._timm`, shared with the EfficientNet-Lite
plugin, which runs timm's architecture with other weights; this module is the plugin the
registry names (``plugins.models.timm_models:TimmModel``).
"""
from __future__ import annotations

from plugins.models._timm import PREFIX, TimmModel, TimmParams, block_layers, hf_cache_folder, hf_candidates

__all__ = ["PREFIX", "TimmModel", "TimmParams", "block_layers", "hf_cache_folder", "hf_candidates"]
