"""Plugin parameters declared once, as data.

Every plugin class declares its parameters in one pydantic model, a subclass of
:class:`PluginParams` set as the class attribute ``Params``::

    class RSAParams(PluginParams):
        distance: Literal["euclidean", "correlation"] = param("euclidean", "dissimilarity of layer RDMs")
        n_permutations: int = param(0, "label permutations for p-values; 0 skips the test", ge=0)

    class RSAMetric(MetricPlugin):
        Params = RSAParams

From that one declaration come

* validation (:func:`validate_params`): types, bounds and choices, every error one
  line in one template naming the plugin, the parameter, what was expected, what
  came, and the fix, with "Did you mean" for unknown names;
* the parameters that identify results (:meth:`PluginParams.key`, used in cell and
  cache keys and in provenance), so they cannot drift from what the plugin uses;
* what ``framework list`` prints (:func:`describe_params`).

Values are checked strictly (``1`` is not ``true``, ``"5"`` is not ``5``) and
floats must be finite. A parameter that does not change results (a thread count)
is declared with ``key=False``.
"""
from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from framework.errors import ConfigError, did_you_mean

__all__ = ["PluginParams", "NoParams", "param", "validate_params", "describe_params", "expected_text",
           "OPTION_OF_KIND"]

#: The command-line option that sets parameters of each plugin kind.
OPTION_OF_KIND: dict[str, str] = {"model": "--model-param", "signal": "--signal-param",
                                  "metric": "--metric-param", "dataset": "--dataset-param"}


def param(default: Any, help: str, *, key: bool = True, **constraints: Any) -> Any:
    """Declare one parameter: its default, a one-line help text and its constraints.

    Parameters
    ----------
    default : any
        The default value (immutable, or a list that is copied per instance).
    help : str
        One line for ``framework list``; give units (Hz, ms) and the convention followed.
    key : bool
        Whether the value is part of the results' identity (cell and cache keys,
        provenance). False for settings that cannot change a number, e.g. thread counts.
    **constraints
        ``pydantic.Field`` constraints: ``ge``, ``gt``, ``le``, ``lt``, ``min_length``, ...
    """
    extra = None if key else {"key": False}
    if isinstance(default, list):
        return Field(default_factory=lambda: list(default), description=help, json_schema_extra=extra,
                     **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class PluginParams(BaseModel):
    """Base of every plugin's parameter declaration (no parameters by itself).

    Instances are frozen; read values as attributes (``params.distance``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              validate_default=False)

    #: Extra keyword arguments accepted beyond the declared fields, described for users
    #: (e.g. a timm model passes them to ``timm.create_model``); empty when none are.
    extra_help: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _tuples_as_lists(cls, values: Any) -> Any:
        """Python callers may give tuples where TOML gives lists (``mean=(0.5, 0.5, 0.5)``)."""
        if isinstance(values, dict):
            return {k: _lists(v) for k, v in values.items()}
        return values

    def key(self) -> dict[str, Any]:
        """JSON-serialisable values of the parameters that define results (fields with ``key=True``)."""
        data = self.model_dump(mode="json")
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("key") is False:
                data.pop(name, None)
        extras = self.model_extra or {}
        for name in extras:
            data[name] = _jsonable(extras[name])
        return data


class NoParams(PluginParams):
    """A plugin without parameters."""


def _lists(value: Any) -> Any:
    """Tuples and numpy arrays as lists, numpy scalars as Python scalars (what TOML would give)."""
    if type(value).__module__ == "numpy":
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            return _lists(tolist())
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    if isinstance(value, list):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------
# What a field expects, in words
# --------------------------------------------------------------------------------------
def _bounds(metadata: list[Any]) -> str:
    parts = []
    min_len = max_len = None
    for m in metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(m, attr, None)
            if value is not None and isinstance(m, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le,
                                                    annotated_types.Lt, annotated_types.Interval)):
                parts.append(f"{sym} {value:g}" if isinstance(value, float) else f"{sym} {value}")
        if isinstance(m, annotated_types.MinLen):
            min_len = m.min_length
        if isinstance(m, annotated_types.MaxLen):
            max_len = m.max_length
    if min_len is not None and min_len == max_len:
        parts.append(f"with {min_len} items")
    else:
        if min_len:
            parts.append(f"with at least {min_len} item(s)")
        if max_len is not None:
            parts.append(f"with at most {max_len} item(s)")
    return " and ".join(parts)


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and inner and len(inner) == len(args):
            return f"a list of {len(inner)} " + _plural(_type_text(inner[0]))
        return "a list of " + _plural(_type_text(inner[0])) if inner else "a list"
    if origin in (dict, Mapping) or annotation is dict:
        if len(args) == 2:
            return f"a table of {_bare(_type_text(args[0]))} -> {_bare(_type_text(args[1]))}"
        return "a table"
    name = getattr(annotation, "__name__", str(annotation))
    return f"a {name}"


def _bare(text: str) -> str:
    """``"a list of numbers"`` -> ``"list of numbers"``."""
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article):]
    return text


def _plural(text: str) -> str:
    """``"an integer"`` -> ``"integers"``, ``"a list of numbers"`` -> ``"lists of numbers"``."""
    noun = _bare(text)
    if noun == text:
        return text
    head, sep, tail = noun.partition(" ")
    return (head if head.endswith("s") else head + "s") + sep + tail


def expected_text(params_cls: type[PluginParams], name: str) -> str:
    """What parameter ``name`` of ``params_cls`` expects, in words (e.g. ``"an integer >= 0"``)."""
    info = params_cls.model_fields[name]
    text = _type_text(info.annotation)
    bounds = _bounds(list(info.metadata))
    optional = get_origin(info.annotation) in (Union, types.UnionType) and type(None) in get_args(info.annotation)
    return f"{text} {bounds}".strip() + (" (or leave it unset)" if optional else "")


def _default_text(info: Any) -> str:
    value = info.default_factory() if info.default_factory is not None else info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return str(value)


def describe_params(params_cls: type[PluginParams]) -> list[tuple[str, str, str, str]]:
    """``(name, expected, default, help)`` for every declared parameter, in declaration order."""
    return [(name, expected_text(params_cls, name), _default_text(info), info.description or "")
            for name, info in params_cls.model_fields.items()]


# --------------------------------------------------------------------------------------
# Validation with one message template
# --------------------------------------------------------------------------------------
def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def validate_params(params_cls: type[PluginParams], values: Mapping[str, Any], *, kind: str,
                    name: str) -> PluginParams:
    """Check ``values`` against the declaration and return the validated parameters.

    Parameters
    ----------
    params_cls : type of PluginParams
        The plugin's declaration.
    values : mapping of str to any
        Parameters as given (command line, ``run.toml``, Python).
    kind : {"model", "signal", "metric", "dataset"}
    name : str
        The plugin's registered name (``"rsa"``, ``"timm:resnet18"``).

    Raises
    ------
    ConfigError
        One line: the plugin, the parameter, expected vs got, and the fix.
    """
    values = dict(values)
    option = OPTION_OF_KIND.get(kind, "--param")
    owner = f"{kind} '{name}'"
    declared = list(params_cls.model_fields)
    if params_cls.model_config.get("extra") == "forbid":
        unknown = [k for k in values if k not in params_cls.model_fields]
        if unknown:
            bad = str(sorted(unknown)[0])
            if not declared:
                raise ConfigError(f"{owner.capitalize()} has no parameter '{bad}': it takes no parameters. "
                                  f"Remove {option} {name}.{bad}.")
            raise ConfigError(f"{owner.capitalize()} has no parameter '{bad}'.{did_you_mean(bad, declared)} "
                              f"Its parameters: {', '.join(declared)}. Remove it, or set a valid one with "
                              f"{option} {name}.NAME=VALUE (`framework list {kind}s` describes them).")
    try:
        return params_cls(**values)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, params_cls, values, owner=owner, option=option, name=name)) from None


def _one_line(exc: ValidationError, params_cls: type[PluginParams], values: Mapping[str, Any], *, owner: str,
              option: str, name: str) -> str:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err.get("loc", ())]
    field = loc[0] if loc and loc[0] in params_cls.model_fields else None
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if field is None:  # a check across several parameters (model validator)
        return f"Invalid parameters for {owner}: {msg.rstrip('.')}. Fix the values given with {option}."
    got = values.get(field, err.get("input"))
    where = field + "".join(f"[{p}]" for p in loc[1:])
    expected = expected_text(params_cls, field)
    detail = "" if err.get("type") in _PLAIN_TYPES else f" {msg[:1].upper()}{msg[1:].rstrip('.')}."
    fix = expected.removesuffix(" (or leave it unset)")
    choices = _choices(params_cls.model_fields[field].annotation)
    if choices and isinstance(got, str):
        detail += did_you_mean(got, choices)
    return (f"Invalid value {_got(got)} for parameter '{where}' of {owner}: expected {expected}.{detail} "
            f"Fix: {option} {name}.{field}=<{fix}>.")


def _choices(annotation: Any) -> list[str]:
    """The string choices of a ``Literal`` (or optional ``Literal``) annotation."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [c for a in get_args(annotation) for c in _choices(a)]
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return []


#: Pydantic error types fully described by the field's expected text.
_PLAIN_TYPES = frozenset({
    "int_type", "float_type", "bool_type", "string_type", "list_type", "tuple_type", "dict_type", "literal_error",
    "greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number", "int_from_float",
    "bool_parsing", "int_parsing", "float_parsing", "none_required", "too_short", "too_long",
})
