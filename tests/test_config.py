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


def test_tilde_paths_in_a_config_file_are_expanded(tmp_path: Path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    cfg = tmp_path / "conf" / "run.toml"
    cfg.parent.mkdir()
    cfg.write_text('store = "~/results"\ndataset = "~/data/ds.toml"\n[weights_files]\nalexnet = "~/w.pt"\n')
    fields = load_config_file(cfg)
    assert fields["store"] == str(home / "results")
    assert fields["dataset"] == str(home / "data" / "ds.toml")
    assert fields["weights_files"] == {"alexnet": str(home / "w.pt")}
    # and for API users building a RunConfig directly
    run = RunConfig(store="~/r", dataset="~/d.toml", weights_files={"alexnet": "~/w.pt"})
    assert run.store == home / "r" and run.dataset == str(home / "d.toml")
    assert run.weights_files == {"alexnet": home / "w.pt"}


def test_dataset_path_without_toml_suffix_is_relative_to_the_file(tmp_path: Path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "sub/ds.cfg"\n')
    assert load_config_file(cfg)["dataset"] == str(tmp_path / "sub" / "ds.cfg")
    cfg.write_text('dataset = "demo"\n')                 # a registered name stays a name
    assert load_config_file(cfg)["dataset"] == "demo"


def test_utf8_bom_in_a_config_file_is_accepted(tmp_path: Path):
    cfg = tmp_path / "run.toml"
    cfg.write_bytes(b"\xef\xbb\xbfseed = 3\nmodels = ['alexnet']\n")
    assert load_config_file(cfg) == {"seed": 3, "models": ["alexnet"]}


def test_seed_upper_bound_and_empty_dataset():
    assert RunConfig(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ConfigError, match=r"seed.*less than or equal to 4294967295"):
        build_config({"seed": 2**32})
    with pytest.raises(ConfigError, match=r"field 'dataset': is empty"):
        build_config({"dataset": " "})
