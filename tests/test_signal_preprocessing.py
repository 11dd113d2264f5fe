"""Bipolar re-referencing, amplitude trial rejection and the line-noise notch."""
from __future__ import annotations

import numpy as np
import pytest

from framework.errors import ConfigError, DataError
from plugins.signals._preprocessing import (
    amplitude_rejection,
    bipolar_pairs,
    bipolar_reference,
    notch,
    notch_problem,
    parse_contact,
    widest_notch,
)


def test_parse_contact():
    assert parse_contact("LA10") == ("LA", 10)
    assert parse_contact("OF'3") == ("OF'", 3)
    assert parse_contact("A01") == ("A", 1)
    assert parse_contact("EKG") is None
    assert parse_contact("12") is None  # no shaft letters


def test_bipolar_pairs_follow_shafts_and_skip_gaps():
    channels = ["A1", "A2", "A3", "A5", "B2", "B1", "EKG", "LA10", "LA11"]
    pairs = bipolar_pairs(channels)
    assert [p[2] for p in pairs] == ["A1-A2", "A2-A3", "B1-B2", "LA10-LA11"]
    assert [(p[0], p[1]) for p in pairs] == [(0, 1), (1, 2), (5, 4), (7, 8)]


def test_bipolar_reference_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 50))
    out, pairs = bipolar_reference(x, ["C1", "C2", "C3"])
    assert out.shape == (4, 2, 50)
    np.testing.assert_array_equal(out[:, 0], x[:, 0] - x[:, 1])
    np.testing.assert_array_equal(out[:, 1], x[:, 1] - x[:, 2])
    with pytest.raises(DataError, match="no neighbouring contacts"):
        bipolar_reference(x, ["EKG", "X", "Y"], subject="s1")


def test_amplitude_rejection_matches_loop():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 4, 200))
    x[3, 1, 50] = 40.0
    x[7, 2, 10:12] = -60.0
    x[9, 0] += 1000.0  # a DC offset alone is not an artefact (trial mean removed)
    rejected = amplitude_rejection(x, threshold=10.0)
    expected = np.zeros((30, 4), dtype=bool)
    for c in range(4):  # brute force over channels and trials
        s = np.mean([np.std(x[t, c] - x[t, c].mean()) for t in range(30)])
        for t in range(30):
            expected[t, c] = np.max(np.abs(x[t, c] - x[t, c].mean())) > 10.0 * s
    np.testing.assert_array_equal(rejected, expected)
    assert rejected[3, 1] and rejected[7, 2] and rejected.sum() == 2
    with pytest.raises(ConfigError, match="reject_threshold"):
        amplitude_rejection(x, threshold=0)


def test_notch_removes_line_noise_and_keeps_the_rest():
    sfreq = 512.0
    t = np.arange(768) / sfreq
    keep = np.sin(2 * np.pi * 20 * t)
    x = np.tile(keep + 0.8 * np.sin(2 * np.pi * 50 * t + 0.3) + 0.5 * np.sin(2 * np.pi * 150 * t), (2, 3, 1))
    y = notch(x, sfreq, 50.0)
    mid = slice(150, 618)  # away from the filter's start/stop transients
    assert np.abs(x[0, 0, mid] - keep[mid]).max() > 1.0  # line noise before: peak 1.3
    assert np.abs(y[0, 0, mid] - keep[mid]).max() < 0.04  # after: > 30 x smaller
    assert y.shape == x.shape and y.dtype == np.float64
    with pytest.raises(ConfigError, match="Nyquist"):
        notch(x, sfreq, 300.0)


@pytest.mark.parametrize("sfreq", [256.0, 500.0, 512.0, 1000.0])
def test_notch_problem_says_exactly_what_mne_rejects(sfreq):
    """notch_problem() (used by the plan-time check) is None exactly when notch() runs, on a grid through
    both stop-band limits; notch() then raises a one-line ConfigError instead of MNE's ValueError."""
    import mne

    x = np.random.default_rng(0).standard_normal((1, 1, 300))
    for line in (1.0, 50.0, 60.0, sfreq / 2 - 1.5, sfreq / 2 - 0.5, sfreq / 2):
        widest = widest_notch(sfreq, line)
        for width in (0.5, 4.0, 20.0, 99.0, widest - 0.01, widest, widest + 0.01):
            if not width > 0 or not np.isfinite(width):
                continue
            problem = notch_problem(sfreq, line, width)
            try:
                y = x
                for f in np.arange(line, sfreq / 2 - 1.0, line):
                    y = mne.filter.notch_filter(y, sfreq, [f], notch_widths=width, method="iir", verbose="error")
                mne_ok = 0 < line < sfreq / 2
            except ValueError:
                mne_ok = False
            assert (problem is None) == mne_ok, (sfreq, line, width, problem)
            assert (problem is None) == (width < widest), (line, width)  # widest_notch is the exact limit
            if problem is not None:
                with pytest.raises(ConfigError) as info:
                    notch(x, sfreq, line, width=width, subject="s1")
                assert "\n" not in str(info.value) and "subject 's1'" in str(info.value)
