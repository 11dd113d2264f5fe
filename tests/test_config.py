"""Run configuration: merging, validation and one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from framework.config import RunConfig, build_config, load_config_file
from framework.errors import ConfigError


def test_defaults_make_a_meaningful_run():
    cfg = RunConfig()
    assert cfg.models == ["all"] and cfg.signals == ["all"] and cfg.metrics == ["rsa"]
    assert cfg.dataset == "demo" and cfg.weights == "auto" and cfg.batch_size == 32 and cfg.seed == 0


def test_comma_lists_and_cli_overrides_file():
    cfg = build_config({"models": ["vgg16"], "seed": 3, "layers": {"alexnet": "conv1, fc6"}},
                       {"models": "alexnet, vgg16", "seed": None})
    assert cfg.models == ["alexnet", "vgg16"] and cfg.seed == 3
    assert cfg.layers == {"alexnet": ["conv1", "fc6"]}


@pytest.mark.parametrize("fields, match", [
    ({"batch_size": 0}, r"batch_size.*greater than 0"),
    ({"weights": "imagenet"}, r"weights"),
    ({"modles": ["alexnet"]}, r"unknown field 'modles'.*Did you mean 'models'"),
    ({"models": []}, r"models"),
])
def test_bad_fields_give_one_config_error(fields, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_config(fields)
    assert "\n" not in str(info.value)


def test_config_file_paths_are_relative_to_the_file(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "run.toml"
    path.write_text('models = "alexnet"\nstore = "out"\ndataset = "data/ds.toml"\n')
    fields = load_config_file(path)
    assert Path(fields["store"]) == tmp_path / "sub" / "out"
    assert Path(fields["dataset"]) == tmp_path / "sub" / "data" / "ds.toml"


def test_bad_config_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [alexnet\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)
