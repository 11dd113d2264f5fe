"""Wilcoxon signed-rank and Benjamini-Hochberg steps against scipy, site by site."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st

from framework.errors import ConfigError
from framework.numerics.stats import fdr_bh as bh_fdr
from plugins.signals._responsiveness import responsive_sites, wilcoxon_greater


@pytest.mark.parametrize("n", [12, 30, 50, 51, 250])
def test_wilcoxon_matches_scipy_per_site(n):
    rng = np.random.default_rng(n)
    d = rng.standard_normal((n, 40)) + np.linspace(-0.5, 1.0, 40)
    stat, p = wilcoxon_greater(d)
    for j in range(d.shape[1]):  # independent computation: scipy, one site at a time
        ref = st.wilcoxon(d[:, j], alternative="greater")
        assert stat[j] == pytest.approx(ref.statistic, abs=1e-9)
        assert p[j] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


def test_wilcoxon_ties_and_zeros_use_tie_corrected_normal_approximation():
    rng = np.random.default_rng(1)
    d = np.round(rng.standard_normal((80, 10)) + 0.3, 1)  # many ties and some zeros
    assert (d == 0).any()
    stat, p = wilcoxon_greater(d)
    for j in range(d.shape[1]):
        ref = st.wilcoxon(d[:, j], alternative="greater")  # n > 50: asymptotic, ties corrected
        assert stat[j] == pytest.approx(ref.statistic)
        assert p[j] == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_omits_nan_per_site():
    rng = np.random.default_rng(2)
    d = rng.standard_normal((60, 6)) + 0.4
    d[:7, 0] = np.nan
    d[50:, 3] = np.nan
    _, p = wilcoxon_greater(d)
    for j in range(d.shape[1]):
        col = d[:, j][~np.isnan(d[:, j])]
        assert p[j] == pytest.approx(st.wilcoxon(col, alternative="greater").pvalue, rel=1e-9)


def test_wilcoxon_all_zero_column_is_nan_and_bad_method_rejected():
    d = np.zeros((10, 2))
    d[:, 1] = np.arange(1, 11)
    _, p = wilcoxon_greater(d)
    assert np.isnan(p[0]) and p[1] == pytest.approx(1 / 2 ** 10)
    with pytest.raises(ConfigError, match="Wilcoxon method"):
        wilcoxon_greater(d, method="permutation")


def test_bh_matches_scipy_false_discovery_control():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=300) ** 4, [0.01, 0.01, 0.5, 1.0]])  # includes ties and 1
    np.testing.assert_allclose(bh_fdr(p), st.false_discovery_control(p), rtol=1e-12, atol=0)


def test_bh_ignores_nan():
    p = np.array([0.001, np.nan, 0.02, 0.04, np.nan, 0.3])
    adj = bh_fdr(p)
    assert np.isnan(adj[[1, 4]]).all()
    np.testing.assert_allclose(adj[[0, 2, 3, 5]], st.false_discovery_control(p[[0, 2, 3, 5]]), rtol=1e-12)


def test_responsive_sites_is_one_sided_and_pooled():
    rng = np.random.default_rng(4)
    base = rng.gamma(2.0, 1.0, (100, 30))
    win = base * rng.lognormal(0.0, 0.3, (100, 30))
    win[:, :10] *= 1.5  # 10 sites increase
    win[:, 10:20] /= 1.5  # 10 sites decrease: never responsive (increases only)
    res = responsive_sites(win, base, q=0.05)
    ref_p = np.array([st.wilcoxon(win[:, j], base[:, j], alternative="greater").pvalue for j in range(30)])
    np.testing.assert_allclose(res["pvalue"], ref_p, rtol=1e-9)
    np.testing.assert_array_equal(res["responsive"], st.false_discovery_control(ref_p) <= 0.05)
    assert res["responsive"][:10].all() and not res["responsive"][10:20].any()
    with pytest.raises(ConfigError, match="q must be in"):
        responsive_sites(win, base, q=1.5)
