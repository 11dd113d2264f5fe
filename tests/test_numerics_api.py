"""The public numerics layer: documented API, FDR against SciPy, one stimulus alignment, and the import rule
that plugins build on :mod:`framework.numerics` and never import each other."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import framework.numerics
from framework.errors import DataError
from framework.numerics.stats import fdr_bh
from framework.numerics.stimuli import stimulus_order

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
MODULES = sorted(m.name for m in pkgutil.iter_modules(framework.numerics.__path__))


# -- documented API ------------------------------------------------------------------------
def test_package_docstring_lists_every_module() -> None:
    assert sorted(framework.numerics.__all__) == MODULES
    for name in MODULES:
        assert f":mod:`~framework.numerics.{name}`" in framework.numerics.__doc__, name


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_documented(module_name: str) -> None:
    module = importlib.import_module(f"framework.numerics.{module_name}")
    assert module.__doc__ and module.__doc__.strip(), f"{module_name} has no module docstring"
    assert module.__all__, f"{module_name} declares no __all__"
    lines = inspect.getsource(module).splitlines()
    for name in module.__all__:
        obj = getattr(module, name)
        where = f"framework.numerics.{module_name}.{name}"
        if inspect.isclass(obj):
            doc = obj.__dict__.get("__doc__") or ""
            assert doc.strip() and not doc.startswith(f"{name}("), f"{where} has no docstring"
        elif inspect.isfunction(obj):
            doc = inspect.getdoc(obj) or ""
            assert doc.strip(), f"{where} has no docstring"
            params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
            if params:
                assert "Parameters\n----------" in doc, f"{where}: docstring lacks a numpydoc Parameters section"
            returns_none = inspect.signature(obj).return_annotation in (None, "None")
            if not returns_none:
                assert "Returns\n-------" in doc or "Yields\n------" in doc, \
                    f"{where}: docstring lacks a numpydoc Returns section"
        else:  # a constant: documented by a "#:" comment right above its assignment
            row = next((i for i, line in enumerate(lines) if line.startswith((f"{name} =", f"{name}:"))), None)
            assert row is not None, f"{where} is not assigned at module level"
            assert row > 0 and lines[row - 1].startswith("#:"), f"{where} lacks a '#:' comment"


# -- FDR ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_fdr_bh_equals_scipy_on_finite_values(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    p = rng.random(n)
    if seed % 2:
        p = np.round(p, 2)                      # many ties
    if seed % 3 == 0:
        p[rng.random(n) < 0.2] = 1.0            # ties at the cap
    if seed % 5 == 0:
        p = p ** 6                              # many small values
    np.testing.assert_allclose(fdr_bh(p), scipy.stats.false_discovery_control(p, method="bh"), rtol=1e-12, atol=0)


def test_fdr_bh_ignores_and_keeps_nan_and_shape() -> None:
    rng = np.random.default_rng(7)
    p = rng.random((6, 9))
    p[rng.random(p.shape) < 0.3] = np.nan
    p[0, 0], p[1, 1] = np.nan, 0.5
    p[2, 2] = p[3, 3] = 0.25                    # a tie
    q = fdr_bh(p)
    assert q.shape == p.shape and q.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(q), np.isnan(p))
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], scipy.stats.false_discovery_control(p[ok], method="bh"), rtol=1e-12, atol=0)
    assert np.isnan(fdr_bh(np.full(4, np.nan))).all()
    assert fdr_bh(np.array([])).shape == (0,)


def test_fdr_bh_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        fdr_bh(np.array([0.2, 1.5]))


# -- the one stimulus alignment ---------------------------------------------------------
def test_stimulus_order_reorders() -> None:
    have = ("a", "b", "c", "d")
    want = ("c", "a", "d")
    order = stimulus_order(have, want)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(have)[order], want)
    assert stimulus_order(have, have) is None           # already aligned: nothing to do
    np.testing.assert_array_equal(stimulus_order(have, have[::-1]), [3, 2, 1, 0])


def test_stimulus_order_raises_on_missing_stimuli() -> None:
    with pytest.raises(DataError, match=r"2 of the target's 3 stimuli have no activations \(first: \['x', 'y'\]\)"):
        stimulus_order(("a", "b"), ("x", "a", "y"))
    with pytest.raises(DataError, match=r"the signal's .* Fix the ids\."):
        stimulus_order(("a",), ("b",), target="signal", fix="Fix the ids.")
    with pytest.raises(DataError, match=r"1 stimuli have activations but are not in the responses \(first: \['c'\]\)"):
        stimulus_order(("a", "b", "c"), ("b", "a"), allow_extra=False, target="responses")


def test_scheduler_and_demo_share_the_cache_directory(tmp_path, monkeypatch) -> None:
    from framework import scheduler
    from framework.paths import user_cache_dir
    from plugins.datasets.demo import DemoDataset

    assert scheduler.user_cache_dir is user_cache_dir
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path))
    assert DemoDataset().path.parent == user_cache_dir() / "datasets"


# -- import rule -------------------------------------------------------------------------
def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute dotted names, relative imports resolved), with line numbers."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append((node.lineno, base))
            # ``from plugins.signals import _power`` imports a module too
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                    if (ROOT / Path(*base.split("."), f"{alias.name}.py")).is_file()]
    return out


def _plugin_files() -> list[Path]:
    return sorted(p for p in PLUGINS.rglob("*.py") if p.name != "__init__.py")


def test_the_import_scanner_sees_plugin_imports() -> None:
    found = {name for path in _plugin_files() for _, name in _imported_modules(path)}
    assert "plugins.signals._power" in found and "framework.numerics.rsa" in found


@pytest.mark.parametrize("path", _plugin_files(), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_no_plugin_imports_another_plugin(path: Path) -> None:
    kind, own = path.parent.name, path.stem
    bad = []
    for line, name in _imported_modules(path):
        parts = name.split(".")
        if parts[0] != "plugins" or len(parts) < 3:
            continue
        other_kind, module = parts[1], parts[2]
        if other_kind == kind and (module == own or module.startswith("_") or module == "base"):
            continue  # itself, a private helper of the same folder, or the public base class of its kind
        bad.append(f"line {line}: {name}")
    assert not bad, (f"plugins/{kind}/{path.name} imports another plugin's module ({'; '.join(bad)}); "
                     "move shared code to framework.numerics or to a private '_helper' module of its own folder.")


@pytest.mark.parametrize("module_name", MODULES)
def test_numerics_never_import_plugins(module_name: str) -> None:
    path = ROOT / "framework" / "numerics" / f"{module_name}.py"
    assert not [name for _, name in _imported_modules(path) if name.split(".")[0] == "plugins"]


def test_stimulus_labels_follow_the_target_order_and_refuse_partial_labels():
    from types import SimpleNamespace

    from framework.errors import DataError
    from framework.numerics.stimuli import stimulus_labels

    acts = SimpleNamespace(stimulus_ids=("a", "b", "c"), info={"labels": ["x", "y", "z"]})
    target = SimpleNamespace(stimulus_ids=("c", "a", "b"), info={})
    assert stimulus_labels(acts, target, metric="m").tolist() == ["z", "x", "y"]
    # the responses' own labels are used when the activations carry none
    bare = SimpleNamespace(stimulus_ids=("a", "b", "c"), info={})
    assert stimulus_labels(bare, SimpleNamespace(stimulus_ids=("c", "a", "b"), info={"labels": [1, 2, 3]}),
                           metric="m").tolist() == ["1", "2", "3"]
    assert stimulus_labels(bare, target, metric="m") is None
    # one stimulus without a label: no stratification rather than a category called None
    partial = SimpleNamespace(stimulus_ids=("a", "b", "c"), info={"labels": ["x", None, "z"]})
    assert stimulus_labels(partial, target, metric="m") is None
    with pytest.raises(DataError, match=r"m: activations.info\['labels'\] has shape \(2,\)"):
        stimulus_labels(SimpleNamespace(stimulus_ids=("a", "b", "c"), info={"labels": ["x", "y"]}), target,
                        metric="m")
