"""Brain areas of a site table: their order along the hierarchy and their sites.

Two orders exist and both are kept, because their tables are already published
by the metrics: :func:`ordered_areas` puts areas outside the hierarchy in sorted
order (RSA), :func:`area_groups` in order of first appearance (linear
predictivity, CKA).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from framework.types import Responses

__all__ = ["area_groups", "ordered_areas"]


def ordered_areas(present: Sequence[str], area_order: Sequence[str]) -> list[str]:
    """The distinct areas of ``present``: those of ``area_order`` first, in that order, then the rest sorted.

    Parameters
    ----------
    present : sequence of str
        Area of every site (repeats allowed), e.g. ``SiteTable.areas``.
    area_order : sequence of str
        Order of the areas along the processing hierarchy, e.g. ``("17", "18", "19", "37", "20")``.

    Returns
    -------
    list of str
        Each area once.
    """
    uniq = set(present)
    return [a for a in area_order if a in uniq] + sorted(uniq - set(area_order))


def area_groups(target: Responses) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Sites of each area and the areas that enter a headline.

    Parameters
    ----------
    target : Responses
        Its ``sites.areas`` (n_sites,) and ``area_order`` are used.

    Returns
    -------
    groups : dict of str to ndarray of int64
        Site indices (into the n_sites columns) per area; areas of
        ``target.area_order`` first (in that order), then the others in order of
        first appearance.
    headline : tuple of str
        Areas of ``target.area_order`` that have sites; if none, every area but
        ``"n/a"`` (every area if that leaves none).
    """
    areas = np.asarray(target.sites.areas, dtype=object)
    present = list(dict.fromkeys(target.sites.areas))
    ordered = [a for a in target.area_order if a in present] + [a for a in present if a not in target.area_order]
    groups = {a: np.flatnonzero(areas == a).astype(np.int64) for a in ordered}
    headline = tuple(a for a in target.area_order if a in present)
    if not headline:
        headline = tuple(a for a in ordered if a != "n/a") or tuple(ordered)
    return groups, headline
