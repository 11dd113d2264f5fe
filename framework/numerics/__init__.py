"""The public numerics layer that metric and signal plugins build on.

Plugins import these modules (``from framework.numerics import rdm``,
``from framework.numerics.stats import fdr_bh``) and never each other. Arrays
are plain numpy: float32 activations and responses in, float64 wherever
accuracy needs it (Gram matrices, correlations, sums of many terms). Every
function documents its input and output shapes.

Modules
-------
:mod:`~framework.numerics.stimuli`
    ``stimulus_order``: the rows of activations in a target's stimulus order
    (the one alignment used by the scheduler and the metrics).
:mod:`~framework.numerics.areas`
    ``ordered_areas`` and ``area_groups``: brain areas in hierarchy order and the
    sites of each.
:mod:`~framework.numerics.gram`
    ``gram``, the one blockwise float64 builder of ``X X^T`` (optionally centred,
    with row sums), ``centered_gram`` (linear CKA kernel), ``standardized`` and
    ``fold_grams`` (per-fold z-scored Gram matrices of wide layers in one pass),
    ``recentered_gram`` (re-centring on a training subset).
:mod:`~framework.numerics.rdm`
    Condensed RDMs and indexing (``n_pairs_of``, ``triu_indices``,
    ``condensed_position``, ``upper``), ``rdm``/``rdm_from_gram``, single-site
    RDMs (``site_rdms``, ``site_rdm_blocks``), ``layer_rdms`` with its memo,
    rank transforms (``prepare``), ``compare``, ``paired_compare``,
    ``kendall_tau_a``.
:mod:`~framework.numerics.permutation`
    Batched, early-stopping permutation test of RDM correlations
    (``permutation_test``, ``draw_permutations``).
:mod:`~framework.numerics.rsa`
    ``site_rsa``/``SiteRSA``: every site's and area's RDM against every layer's,
    with the shared permutation test (used by the rsa and alignment metrics);
    ``site_layer_correlations`` and ``subset_pairs``: the same over a subset of
    the stimuli (held-out layer selection).
:mod:`~framework.numerics.splits`
    ``kfold_splits``: seeded, optionally stratified K folds of stimuli.
:mod:`~framework.numerics.ridge`
    ``RidgePath`` (one decomposition for a whole penalty grid, closed-form
    leave-one-out), ``inner_cv``, ``fit_predict``.
:mod:`~framework.numerics.ceiling`
    Split-half reliability with Spearman-Brown (``split_half_reliability``) and
    lower/upper RDM noise ceilings with every subject's value (``rdm_noise_ceiling``,
    ``noise_ceilings``) in the Nili et al. 2014 or the Algonauts 2019 convention.
:mod:`~framework.numerics.layers`
    ``BASELINE_LAYERS`` (``pixels``: a baseline, not a layer choice),
    ``candidate_layers`` and ``heldout_choice`` (commit a layer on one part of the
    data, score it on the other).
:mod:`~framework.numerics.stats`
    ``fdr_bh`` (Benjamini-Hochberg, NaN-aware), ``pearson_columns``,
    ``table_spearman``, ``bootstrap_weights``, ``sem``, the site-level permutation test
    of a Spearman correlation over grouped points (``draw_site_permutations``,
    ``site_permutation_spearman``) and ``percentile_ci`` (counts undefined resamples).
"""
from __future__ import annotations

__all__ = ["areas", "ceiling", "gram", "layers", "permutation", "rdm", "ridge", "rsa", "splits", "stats", "stimuli"]
