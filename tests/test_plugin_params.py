"""Plugin parameters are declared once: every bad value of every built-in plugin gets one line and exit 2.

The bad values are generated from each plugin's declaration (``Params``), so a new
parameter is covered without editing this file.
"""
from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest

from framework.cli import main
from framework.params import OPTION_OF_KIND, PluginParams, describe_params, validate_params
from framework.registry import load_registry

REGISTRY = load_registry()
#: A concrete member of each family, for the tests.
FAMILY_MEMBER = {"timm:*": "timm:resnet18"}


def _plugins() -> list[tuple[str, str, type[PluginParams]]]:
    out = []
    for kind in ("model", "signal", "metric", "dataset"):
        for spec in REGISTRY.specs(kind):
            declared = spec.parameter_class()
            assert declared is not None, f"built-in {kind} '{spec.name}' declares no Params"
            out.append((kind, FAMILY_MEMBER.get(spec.name, spec.name), declared))
    return out


PLUGINS = _plugins()


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _bad_values(params_cls: type[PluginParams], field: str) -> list[tuple[str, Any]]:
    """(what is wrong, value) pairs that the declaration of ``field`` must reject."""
    info = params_cls.model_fields[field]
    annotation = _strip_optional(info.annotation)
    origin = get_origin(annotation)
    cases: list[tuple[str, Any]] = []
    if annotation is bool:
        cases.append(("wrong type", "maybe"))
    elif annotation in (int, float):
        cases.append(("wrong type", "many"))
    elif annotation is str:
        cases.append(("wrong type", 3))
    elif origin is Literal:
        cases.append(("bad choice", "no-such-choice"))
    elif origin is list:
        cases.append(("wrong type", "not-a-list"))
    elif origin in (typing.Union, types.UnionType):
        cases.append(("wrong type", [True]))
    elif origin is dict:
        cases.append(("wrong type", [1, 2]))
    if annotation is int:
        cases.append(("wrong type (float for an integer)", 2.5))
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            cases.append(("out of range", m.ge - 1))
        elif isinstance(m, annotated_types.Gt):
            cases.append(("out of range", m.gt))
        elif isinstance(m, annotated_types.Le):
            cases.append(("out of range", m.le + 1))
        elif isinstance(m, annotated_types.Lt):
            cases.append(("out of range", m.lt))
    return cases


def _run_args(kind: str, name: str, param: str, value: Any, tmp_path) -> list[str]:
    text = json.dumps(value)       # JSON scalars and lists are valid TOML values
    args = ["run", "--store", str(tmp_path / "store"), "--no-progress", "--models", "alexnet:random"]
    if kind == "model":
        args = ["run", "--store", str(tmp_path / "store"), "--no-progress", "--models", name]
    option = OPTION_OF_KIND[kind]
    return [*args, option, f"{name}.{param}={text}"]


def _assert_one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


CASES = [(kind, name, field, what, value) for kind, name, declared in PLUGINS for field in declared.model_fields
         for what, value in _bad_values(declared, field)]


def test_every_builtin_plugin_declares_params_with_help():
    assert {kind for kind, _, _ in PLUGINS} == {"model", "signal", "metric", "dataset"}
    for kind, name, declared in PLUGINS:
        for pname, expected, _default, help_text in describe_params(declared):
            assert help_text, f"{kind} '{name}' parameter '{pname}' has no help text"
            assert expected and "typing" not in expected, (name, pname, expected)


@pytest.mark.parametrize("kind,name", [(k, n) for k, n, _ in PLUGINS])
def test_unknown_parameter_is_one_line_exit_2(kind, name, tmp_path, capsys):
    code = main(_run_args(kind, name, "bogus_param", 1, tmp_path))
    line = _assert_one_line(capsys, code, name, "bogus_param")
    assert OPTION_OF_KIND[kind] in line or "timm.create_model" in line


@pytest.mark.parametrize("kind,name,field,what,value", CASES,
                         ids=[f"{n}.{f}-{w.split()[0]}-{v!r}" for _, n, f, w, v in CASES])
def test_bad_value_is_one_line_exit_2(kind, name, field, what, value, tmp_path, capsys):
    code = main(_run_args(kind, name, field, value, tmp_path))
    line = _assert_one_line(capsys, code, name, field, "Fix")
    assert OPTION_OF_KIND[kind] in line


def test_cases_cover_every_failure_kind():
    kinds = {what.split()[0] for *_, what, _ in CASES}
    assert {"wrong", "out", "bad"} <= kinds
    assert len(CASES) > 40


def test_misspelt_parameter_gets_a_suggestion(tmp_path, capsys):
    code = main(_run_args("metric", "rsa", "n_permutation", 10, tmp_path))
    _assert_one_line(capsys, code, "Did you mean 'n_permutations'?")


def test_parameters_for_keys_come_from_the_declaration():
    """Every declared parameter that defines results is in the cell/cache key; thread counts are not."""
    for kind, name, declared in PLUGINS:
        keyed = {f for f, info in declared.model_fields.items()
                 if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("key") is False)}
        if kind == "metric":
            plugin = REGISTRY.create("metric", name)
            assert keyed <= set(plugin.parameters()), name
        elif kind == "signal" and name == "band-power":
            plugin = REGISTRY.create("signal", name)
            key = plugin.parameters("lowgamma@150-350")
            assert "n_jobs" not in key
            narrowed = {"bands", "windows", "n_cycles"}
            assert keyed - narrowed <= set(key)
            assert {"band_hz", "window_ms", "n_cycles"} <= set(key)


def test_changing_a_parameter_changes_the_key():
    base = REGISTRY.create("metric", "rsa").parameters()
    other = REGISTRY.create("metric", "rsa", distance="correlation").parameters()
    assert base != other and other["distance"] == "correlation"
    key = REGISTRY.create("signal", "band-power").parameters("theta@50-250")
    assert key != REGISTRY.create("signal", "band-power", log=True).parameters("theta@50-250")
    # a thread count is not part of the key
    assert key == REGISTRY.create("signal", "band-power", n_jobs=1).parameters("theta@50-250")


def test_values_are_checked_strictly():
    from plugins.metrics.rsa import RSAParams

    for bad in ({"fdr": 1}, {"n_permutations": "5"}, {"n_permutations": 5.0}, {"alpha": float("nan")}):
        with pytest.raises(Exception, match="Invalid value"):
            validate_params(RSAParams, bad, kind="metric", name="rsa")
    assert validate_params(RSAParams, {"alpha": 1e-2}, kind="metric", name="rsa").alpha == 0.01


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_bytes(b'models = "alexnet"\n# caf\xe9\n')
    code = main(["run", "--config", str(path)])
    _assert_one_line(capsys, code, str(path), "UTF-8")
