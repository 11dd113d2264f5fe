"""PrecomputedSignal: passes a dataset's responses or RDMs through."""
from __future__ import annotations

import numpy as np
import pytest

from framework.contracts import SignalPlugin
from framework.errors import ConfigError, FrameworkError
from framework.registry import get_plugin_manager, load_registry
from framework.types import BrainRDMs, Dataset, Responses, SiteTable, StimulusSet
from plugins.signals.precomputed import PrecomputedSignal

IDS = ("a", "b", "c")


def _responses_dataset() -> Dataset:
    data = np.arange(6, dtype=np.float32).reshape(3, 2)
    sites = SiteTable(("s1", "s2"), ("n/a", "n/a"), ("V4", "IT"))
    return Dataset(name="r", stimuli=StimulusSet(IDS), digest="d",
                   responses=Responses(data=data, sites=sites, stimulus_ids=IDS))


def _rdms_dataset() -> Dataset:
    r = np.array([[[0, 1, 2], [1, 0, 3], [2, 3, 0]]], dtype=np.float64)
    return Dataset(name="m", stimuli=StimulusSet(IDS), digest="d",
                   rdms=BrainRDMs(rdms={"IT": r}, stimulus_ids=IDS, area_order=("IT",)))


def _epochs_dataset() -> Dataset:
    sites = SiteTable(("x/c1",), ("x",), ("17",))
    return Dataset(name="e", stimuli=StimulusSet(IDS), digest="d", epochs={"x": lambda: None}, sites=sites)


def test_contract_and_names() -> None:
    sig = PrecomputedSignal()
    assert isinstance(sig, SignalPlugin)
    assert sig.accepts == {"responses", "rdms"}
    assert sig.names("responses") == ["responses"]
    assert sig.names("rdms") == ["rdms"]
    assert sig.names("epochs") == []
    with pytest.raises(FrameworkError, match="unknown dataset kind 'voxels'"):
        sig.names("voxels")


def test_passes_targets_through_unchanged() -> None:
    sig = PrecomputedSignal()
    ds = _responses_dataset()
    before = ds.responses.data.copy()
    out = sig.compute(ds, ["responses"])
    assert list(out) == ["responses"] and out["responses"] is ds.responses
    np.testing.assert_array_equal(out["responses"].data, before)
    ds2 = _rdms_dataset()
    out2 = sig.compute(ds2, sig.names("rdms"))
    assert list(out2) == ["rdms"] and out2["rdms"] is ds2.rdms
    assert sig.compute(ds2, []) == {}
    assert sig.parameters("rdms") == {"target": "rdms"}


def test_rejects_wrong_kind_and_name() -> None:
    sig = PrecomputedSignal()
    with pytest.raises(ConfigError, match=r"cannot read dataset 'e' of kind 'epochs'.*'band-power'"):
        sig.compute(_epochs_dataset(), ["responses"])
    with pytest.raises(ConfigError, match=r"offers 'rdms' for dataset 'm' \(kind 'rdms'\), got 'rdm'\. "
                                          r"Did you mean 'rdms'\?"):
        sig.compute(_rdms_dataset(), ["rdm"])
    with pytest.raises(ConfigError, match=r"got 'rdms'"):
        sig.compute(_responses_dataset(), ["rdms"])


def test_registered() -> None:
    registry = load_registry(get_plugin_manager(entry_points=False))
    assert isinstance(registry.create("signal", "precomputed"), PrecomputedSignal)


def test_check_rejects_at_plan_time_what_compute_rejects() -> None:
    sig = PrecomputedSignal()
    sig.check(_responses_dataset(), ["responses"])  # valid: nothing raised
    sig.check(_rdms_dataset(), ["rdms"])
    for ds, names in ((_epochs_dataset(), ["responses"]), (_rdms_dataset(), ["rdm"]), (_responses_dataset(), ["rdms"])):
        with pytest.raises(ConfigError) as planned:
            sig.check(ds, names)
        with pytest.raises(ConfigError) as computed:
            sig.compute(ds, names)
        assert str(planned.value) == str(computed.value) and "\n" not in str(planned.value)
