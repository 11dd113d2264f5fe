"""The bad-input catalogue: every input a user can get wrong, through `framework run` end to end.

Each case runs the command in-process (``framework.cli.main``) against a store that already holds
finished cells, and asserts what a user must see:

* an error: exit status 2, exactly one line on stderr starting with ``framework: error:`` that
  names the input (and usually the fix), no traceback, no work done (no cache written), and the
  store's earlier rows untouched;
* a warning (valid but suspicious input): the run completes and one warning line names the input.

Categories: CLI options, config files, stores; the dataset, epochs, image, RDM, responses and
weights categories live in :mod:`tests.test_bad_inputs_data`. Cases are data: add a row to a table.
"""
from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from framework import cli

BASE = ["run", "--dataset", "fake-responses", "--models", "fake-net", "--signals", "fake-signal",
        "--metrics", "fake-corr", "--no-progress", "-q"]


@dataclass
class Case:
    """One bad input: the command line (``{tmp}`` is the case's folder, ``{store}`` its store),
    files to write first (path relative to ``{tmp}`` -> bytes), and words the one line must contain."""

    id: str
    argv: list[str]
    match: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    base: bool = True


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


def _ok_rows(store: Path) -> list[tuple]:
    with sqlite3.connect(store / "results.sqlite") as conn:
        return sorted(conn.execute("select cell_key, value from scores where status='ok'").fetchall())


@pytest.fixture(scope="module")
def template_store(tmp_path_factory):
    """A store holding the finished cells of the base run (what a bad input must never lose)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FRAMEWORK_PLUGINS", "fake_plugins")
    mp.setenv("FRAMEWORK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    store = tmp_path_factory.mktemp("template") / "store"
    try:
        assert cli.main([*BASE, "--store", str(store)]) == 0
    finally:
        mp.undo()
    return store


def check_bad_input(case: Case, tmp_path: Path, template_store: Path, capsys) -> str:
    """Run ``case`` against a copy of the template store; assert the one-line contract; return the line."""
    store = tmp_path / "store"
    shutil.copytree(template_store, store)
    shutil.rmtree(store / "cache", ignore_errors=True)
    before = _ok_rows(store)
    for rel, data in case.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    fill = {"tmp": str(tmp_path), "store": str(store)}
    argv = [a.format(**fill) for a in case.argv]
    if case.base:
        argv = [*BASE, *([] if "--store" in argv else ["--store", str(store)]), *argv]
    code, err = _run(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    line = lines[0]
    assert line.startswith("framework: error: "), line
    for word in case.match:
        assert word.format(**fill) in line, line
    assert _ok_rows(store) == before                    # nothing already in the store is lost
    assert not (store / "cache").exists()               # stopped before any work
    return line


NOT_UTF8 = "models = ['fake-net']\n# caf\xe9\n".encode("latin-1")

CLI_OPTIONS = [
    Case("unknown-model", ["--models", "fake-nett"], ["Unknown model 'fake-nett'", "Did you mean 'fake-net'"]),
    Case("unknown-signal", ["--signals", "rsp"], ["Unknown signal 'rsp'", "'resp'"]),
    Case("unknown-metric", ["--metrics", "fake-cor"], ["Unknown metric 'fake-cor'", "'fake-corr'"]),
    Case("unknown-dataset", ["--dataset", "fake-respones"], ["Unknown dataset 'fake-respones'"]),
    Case("all-with-names", ["--models", "all,fake-net"], ["'all' cannot be combined", "--models"]),
    Case("empty-models", ["--models", ","], ["models", "at least one name"]),
    Case("layers-empty", ["--layers", ""], ["--layers is empty"]),
    Case("layers-empty-list", ["--layers", "fake-net="], ["malformed part 'fake-net='"]),
    Case("layers-blank-name", ["--layers", "means,,proj"], ["malformed part"]),
    Case("layers-two-equals", ["--layers", "fake-net=means=proj"], ["malformed part"]),
    Case("layers-twice-per-model", ["--layers", "fake-net=means;fake-net=proj"], ["twice"]),
    Case("layers-duplicate", ["--layers", "means,means"], ["'means' is listed twice"]),
    Case("layers-unknown", ["--layers", "means,mean"], ["Unknown layer 'mean'", "Did you mean 'means'"]),
    Case("layers-other-model", ["--layers", "alexnet=conv1"], ["layers names model 'alexnet'"]),
    Case("store-empty", ["--store", ""], ["store", "empty"]),
    Case("batch-size-zero", ["--batch-size", "0"], ["batch_size", "greater than 0"]),
    Case("seed-negative", ["--seed", "-1"], ["seed", "greater than or equal to 0"]),
    Case("metric-param-unknown", ["--metric-param", "fake-corr.sleeep=1"], ["sleeep", "Did you mean 'sleep'"]),
    Case("metric-param-type", ["--metric-param", "fake-corr.sleep=abc"], ["sleep", "'abc'"]),
    Case("metric-param-malformed", ["--metric-param", "sleep=1"], ["PLUGIN.PARAM=VALUE"]),
    Case("metric-param-no-value", ["--metric-param", "fake-corr.sleep"], ["NAME=VALUE"]),
    Case("signal-param-unknown-plugin", ["--signal-param", "band-powr.x=1"], ["band-powr"]),
    Case("dataset-param-unknown", ["--dataset-param", "fake-responses.noize=1"], ["noize", "'noise'"]),
    Case("model-param-unknown", ["--model-param", "fake-net.fial=true"], ["fial", "'fail'"]),
    Case("model-param-type", ["--model-param", "fake-net.fail=1"], ["fail", "true or false"]),
    Case("weights-file-missing", ["--weights-file", "fake-net={tmp}/missing.pt"], ["missing.pt' ", "does not exist"]),
    Case("weights-file-directory", ["--weights-file", "fake-net={tmp}"], ["'{tmp}'", "is a directory"]),
    Case("weights-file-random-control", ["--models", "fake-net:random", "--weights-file",
                                         "fake-net:random={tmp}/w.pt"], ["random-init control", "'fake-net'"],
         files={"w.pt": b"x"}),
    Case("weights-file-other-model", ["--weights-file", "alexnet={tmp}/w.pt"], ["model 'alexnet'"],
         files={"w.pt": b"x"}),
    Case("weights-file-malformed", ["--weights-file", "{tmp}/w.pt"], ["--weights-file", "NAME=VALUE"]),
    Case("weights-pretrained-offline", ["--weights", "pretrained"], ["not available offline"]),
    Case("seed-too-large", ["--seed", "99999999999999999999999"], ["seed", "less than or equal to 4294967295"]),
    Case("metric-param-metric-not-in-run", ["--metric-param", "cka.n_splits=3"],
         ["metric_params", "'cka'", "not in this run's metrics (fake-corr)", "--metrics"]),
    Case("signal-param-plugin-not-in-run", ["--signal-param", "band-power.responsive_only=true"],
         ["signal_params", "'band-power'", "none of this run's signals", "fake-signal"]),
    Case("dataset-param-dataset-not-in-run", ["--dataset-param", "demo.n_sites=10"],
         ["dataset_params", "'demo'", "not this run's dataset ('fake-responses')", "--dataset"]),
    Case("param-given-twice", ["--metric-param", "fake-corr.sleep=0", "--metric-param", "fake-corr.sleep=1"],
         ["--metric-param", "'fake-corr.sleep' twice"]),
    Case("weights-file-given-twice", ["--weights-file", "fake-net={tmp}/a.pt", "--weights-file", "fake-net={tmp}/w.pt"],
         ["--weights-file", "'fake-net' twice", "a.pt"], files={"w.pt": b"x"}),
    Case("dataset-empty", ["--dataset", ""], ["--dataset is empty"]),
]

CONFIG_FILES = [
    Case("config-store-unknown-user", ["run", "--config", "{tmp}/run.toml"], ["Cannot expand '~'", "~nosuchuser4711/x"],
         files={"run.toml": b'store = "~nosuchuser4711/x"\n'}, base=False),
    Case("config-missing", ["--config", "{tmp}/none.toml"], ["none.toml' does not exist"]),
    Case("config-directory", ["--config", "{tmp}"], ["'{tmp}'", "directory"]),
    Case("config-bad-toml", ["--config", "{tmp}/run.toml"], ["run.toml", "not valid TOML"],
         files={"run.toml": b"models = [fake-net\n"}),
    Case("config-not-utf8", ["--config", "{tmp}/run.toml"], ["run.toml", "not UTF-8"],
         files={"run.toml": NOT_UTF8}),
    Case("config-unknown-field", ["--config", "{tmp}/run.toml"], ["unknown field 'modles'", "'models'"],
         files={"run.toml": b'modles = ["fake-net"]\n'}),
    Case("config-batch-size-bool", ["--config", "{tmp}/run.toml"], ["batch_size", "valid integer"],
         files={"run.toml": b"batch_size = true\n"}),
    Case("config-batch-size-string", ["--config", "{tmp}/run.toml"], ["batch_size", "'32'"],
         files={"run.toml": b'batch_size = "32"\n'}),
    Case("config-progress-int", ["run", "--config", "{tmp}/run.toml", "--store", "{store}"],
         ["progress", "boolean"], files={"run.toml": b"progress = 1\n"}, base=False),
    Case("config-store-empty", ["run", "--config", "{tmp}/run.toml"], ["store", "empty"],
         files={"run.toml": b'store = ""\n'}, base=False),
    Case("config-weights-mode", ["--config", "{tmp}/run.toml"], ["weights", "'auto'"],
         files={"run.toml": b'weights = "imagenet"\n'}),
    Case("config-reduction-method", ["--config", "{tmp}/run.toml"], ["'foo'", "reduction method", "'srp'"],
         files={"run.toml": b'[reduction]\nmethod = "foo"\nn_components = 3\n'}),
    Case("config-reduction-missing-key", ["--config", "{tmp}/run.toml"], ["reduction needs", "n_components"],
         files={"run.toml": b'[reduction]\nmethod = "srp"\n'}),
    Case("config-reduction-unknown-key", ["--config", "{tmp}/run.toml"], ["unknown keys", "n_component"],
         files={"run.toml": b'[reduction]\nmethod = "srp"\nn_component = 3\n'}),
    Case("config-reduction-bool", ["--config", "{tmp}/run.toml"], ["n_components", "integer"],
         files={"run.toml": b'[reduction]\nmethod = "srp"\nn_components = true\n'}),
    Case("config-layers-empty", ["--config", "{tmp}/run.toml"], ["layer list for 'fake-net' is empty"],
         files={"run.toml": b'[layers]\nfake-net = []\n'}),
    Case("config-layers-duplicate", ["--config", "{tmp}/run.toml"], ["'proj' is listed twice"],
         files={"run.toml": b'[layers]\nfake-net = ["proj", "proj"]\n'}),
    Case("config-metric-params-unknown", ["--config", "{tmp}/run.toml"], ["fake-cor", "metric_params"],
         files={"run.toml": b'[metric_params.fake-cor]\nsleep = 1\n'}),
    Case("config-models-not-list", ["run", "--config", "{tmp}/run.toml", "--store", "{store}"], ["models"],
         files={"run.toml": b"models = 3\n"}, base=False),
    Case("config-run-table-plus-other", ["--config", "{tmp}/run.toml"], ["[run] table", "metric_params", "[run.NAME]"],
         files={"run.toml": b'[run]\nseed = 1\n[metric_params.fake-corr]\nsleep = 0\n'}),
    Case("config-dataset-path-without-toml-suffix", ["run", "--config", "{tmp}/run.toml", "--store", "{store}"],
         ["'{tmp}/sub/ds.cfg' does not exist"], files={"run.toml": b'dataset = "sub/ds.cfg"\n'}, base=False),
]


@pytest.fixture
def _fake_plugins(monkeypatch):
    monkeypatch.setenv("FRAMEWORK_PLUGINS", "fake_plugins")


@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("case", CLI_OPTIONS + CONFIG_FILES, ids=lambda c: c.id)
def test_bad_input_stops_before_work_with_one_line(case, tmp_path, template_store, capsys):
    check_bad_input(case, tmp_path, template_store, capsys)


# --------------------------------------------------------------------------------------
# names a plugin author or dataset file controls cannot break or inject into the exports
# --------------------------------------------------------------------------------------
def test_markdown_and_csv_leaderboards_neutralise_names(tmp_path):
    import csv

    from framework.leaderboard import write_leaderboard
    from framework.store import Cell, ResultsStore
    from framework.types import Score

    model, signal = "net|<script>alert(1)</script>", "=HYPERLINK(\"http://x\")"
    with ResultsStore(tmp_path) as store:
        store.record_score(Cell("k1", "ds", model, signal, "m"), Score(0.5), run_id="r", weights_source="random",
                           weights_label="@SUM(A1)", provenance={}, started_at=0.0, seconds=0.0)
        write_leaderboard(store)
    md = (tmp_path / "leaderboard.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| 1 ")]
    assert len(table) == 1
    assert "<script>" not in md and "&lt;script&gt;" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| rank"))
    assert table[0].replace("\\|", "").count("|") == header.count("|")   # the name's pipe does not add a column
    with open(tmp_path / "leaderboard.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["signal"] == "'" + signal and row["model"] == model
    assert not any(v.startswith(("=", "+", "@")) for v in row.values())


# --------------------------------------------------------------------------------------
# data files: every dataset case of the load-time catalogue, through the command
# --------------------------------------------------------------------------------------
from test_dataset_checks import BAD as DATASET_CASES  # noqa: E402  (the builders of the data files)


@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("name", list(DATASET_CASES), ids=list(DATASET_CASES))
def test_bad_dataset_file_stops_before_work_with_one_line(name, tmp_path, template_store, capsys):
    bad = DATASET_CASES[name]
    toml = bad.build(tmp_path / "data")
    check_bad_input(Case(name, ["--dataset", str(toml)], [bad.names]), tmp_path, template_store, capsys)


# --------------------------------------------------------------------------------------
# weights files given with --weights-file (a real torchvision network)
# --------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _torch_file(path: Path, obj, *, truncate: float | None = None) -> None:
    import torch

    torch.save(obj, path)
    if truncate is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * truncate)])


def _weights_cases(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    import torch
    from safetensors.torch import save_file

    small = {"features.0.weight": torch.randn(2, 3, generator=torch.Generator().manual_seed(0))}
    out: dict[str, tuple[Path, list[str]]] = {}
    p = tmp / "truncated.pt"
    _torch_file(p, small, truncate=0.5)
    out["weights-truncated"] = (p, ["truncated.pt", "truncated or corrupt"])
    p = tmp / "bare.pt"
    _torch_file(p, torch.zeros(4, 3))
    out["weights-bare-tensor"] = (p, ["bare.pt", "single tensor", "state dict"])
    p = tmp / "other.pt"
    _torch_file(p, small)
    out["weights-wrong-architecture"] = (p, ["other.pt", "does not fit model 'alexnet'", "missing"])
    p = tmp / "payload.pt"
    _torch_file(p, {"features.0.weight": _Payload(tmp / "MARKER")})
    out["weights-pickle-payload"] = (p, ["payload.pt", "refused"])
    p = tmp / "w.bin"
    _torch_file(p, small)
    out["weights-suffix-bin"] = (p, ["w.bin", ".safetensors, .pt, .pth"])
    p = tmp / "notes.pt"
    p.write_text("these are not weights\n")
    out["weights-text-file"] = (p, ["notes.pt", "text file"])
    p = tmp / "empty.pth"
    p.write_bytes(b"")
    out["weights-empty"] = (p, ["empty.pth", "empty"])
    p = tmp / "st.pt"
    save_file(small, str(p))
    out["weights-safetensors-named-pt"] = (p, ["st.pt", "st.safetensors"])
    return out


WEIGHTS_CASES = ["weights-truncated", "weights-bare-tensor", "weights-wrong-architecture", "weights-pickle-payload",
                 "weights-suffix-bin", "weights-text-file", "weights-empty", "weights-safetensors-named-pt"]


@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("name", WEIGHTS_CASES)
def test_bad_weights_file_stops_before_work_with_one_line(name, tmp_path, template_store, capsys):
    path, words = _weights_cases(tmp_path)[name]
    case = Case(name, ["--models", "alexnet", "--weights-file", f"alexnet={path}"], words)
    check_bad_input(case, tmp_path, template_store, capsys)
    assert not (tmp_path / "MARKER").exists()          # nothing was unpickled


# --------------------------------------------------------------------------------------
# stores
# --------------------------------------------------------------------------------------
@pytest.mark.usefixtures("_fake_plugins")
def test_store_that_is_not_a_database(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "results.sqlite").write_bytes(b"these are my notes, not a database\n" * 200)
    code, err = _run([*BASE, "--store", str(store)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "results.sqlite" in lines[0] and "not a usable SQLite file" in lines[0]
    assert not (store / "cache").exists()


@pytest.mark.usefixtures("_fake_plugins")
def test_store_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("a file where the store folder should be\n")
    code, err = _run([*BASE, "--store", str(target)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(target) in lines[0] and "--store" in lines[0]
    assert target.read_text().startswith("a file where")


# --------------------------------------------------------------------------------------
# signal settings that the recordings cannot give (checked against the epochs' headers)
# --------------------------------------------------------------------------------------
SMALL_DEMO = ["--dataset", "demo", "--signals", "band-power", "--dataset-param", "demo.n_images_per_category=4",
              "--dataset-param", "demo.n_subjects=1", "--dataset-param", "demo.n_sites=10",
              "--dataset-param", "demo.n_repetitions=1"]

EPOCHS_SETTINGS = [
    Case("window-after-epochs", [*SMALL_DEMO, "--signal-param", "band-power.windows=[[800, 1200]]"],
         ["window 800-1200", "outside the epochs of subject 's01'", "Fix: --signal-param"]),
    Case("window-before-epochs", [*SMALL_DEMO, "--signal-param", "band-power.windows=[[-900, -600]]"],
         ["outside the epochs", "Fix: "]),
    Case("baseline-outside-epochs", [*SMALL_DEMO, "--signal-param", "band-power.baseline=[-900, -100]"],
         ["baseline", "outside the epochs", "Fix: --signal-param"]),
    Case("band-above-nyquist", [*SMALL_DEMO, "--signal-param", "band-power.bands={{highgamma=[70, 300]}}"],
         ["band 'highgamma' reaches 300 Hz", "Nyquist", "Fix: --signal-param"]),
    Case("signal-for-another-kind", ["--dataset", "fake-responses", "--signals", "band-power"],
         ["band-power", "offers nothing"]),
]


@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("case", EPOCHS_SETTINGS, ids=lambda c: c.id)
def test_signal_setting_the_epochs_cannot_give_stops_before_work(case, tmp_path, template_store, capsys):
    check_bad_input(case, tmp_path, template_store, capsys)


# --------------------------------------------------------------------------------------
# the environment: cache folder, plugin modules
# --------------------------------------------------------------------------------------
@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_bad_cache_dir_stops_before_work_with_one_line(where, tmp_path, template_store, capsys, monkeypatch):
    (tmp_path / "cachefile").write_text("not a folder\n")
    cache = {"file": tmp_path / "cachefile", "under-file": tmp_path / "cachefile" / "sub",
             "proc": Path("/proc/framework-cache")}[where]
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(cache))
    line = check_bad_input(Case(where, [], ["$FRAMEWORK_CACHE_DIR", "Cache folder", "writable folder"]),
                           tmp_path, template_store, capsys)
    assert "internal error" not in line


def _plugin_module(tmp_path: Path, monkeypatch, name: str, text: str) -> None:
    (tmp_path / "mods").mkdir(exist_ok=True)
    (tmp_path / "mods" / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.setenv("FRAMEWORK_PLUGINS", f"fake_plugins,{name}")


def test_env_plugin_raising_at_import_is_one_line(tmp_path, template_store, capsys, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "bad_import_plugin_mod", "raise RuntimeError('boom at import')\n")
    check_bad_input(Case("env-plugin-raises", [], ["'bad_import_plugin_mod'", "$FRAMEWORK_PLUGINS", "RuntimeError",
                                                   "boom at import"]), tmp_path, template_store, capsys)


def test_plugin_hook_raising_is_one_line(tmp_path, template_store, capsys, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "bad_hook_plugin_mod",
                   "import pluggy\n\nhookimpl = pluggy.HookimplMarker('framework')\n\n\n@hookimpl\n"
                   "def framework_register_models(registry):\n    raise ValueError('hook boom')\n")
    check_bad_input(Case("hook-raises", [], ["'bad_hook_plugin_mod'", "framework_register_models", "ValueError",
                                             "hook boom"]), tmp_path, template_store, capsys)


# --------------------------------------------------------------------------------------
# stores and the other subcommands
# --------------------------------------------------------------------------------------
@pytest.mark.usefixtures("_fake_plugins")
def test_store_inside_the_cache_warns(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(cache))
    store = cache / "store"
    code, err = _run([*BASE, "--store", str(store)], capsys)
    assert code == 0, err
    assert (store / "results.sqlite").is_file()
    warnings = [ln for ln in err.splitlines() if "inside the user cache" in ln]
    assert len(warnings) == 1 and str(store) in warnings[0] and "--store" in warnings[0], err


@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("command", ["run", "leaderboard"])
def test_results_database_that_is_a_directory(command, tmp_path, capsys):
    store = tmp_path / "store"
    (store / "results.sqlite").mkdir(parents=True)
    argv = [*BASE, "--store", str(store)] if command == "run" else ["leaderboard", "--store", str(store)]
    code, err = _run(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("framework: error: ")
    assert "results.sqlite' is a directory" in lines[0] and "move it away" in lines[0]
    assert "framework run" not in lines[0]
    assert not (store / "cache").exists()


@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("what", ["missing", "directory"])
def test_layers_weights_file_that_is_not_a_file(what, tmp_path, capsys):
    path = tmp_path / "missing.pt" if what == "missing" else tmp_path
    code, err = _run(["layers", "fake-net", "--weights-file", str(path)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"'{path}'" in lines[0] and "framework layers fake-net --weights-file PATH" in lines[0]
    assert "fake-net=" not in lines[0]                  # not the syntax of `framework run`


@pytest.mark.usefixtures("_fake_plugins")
def test_weights_file_with_weights_random_warns_that_the_file_wins(tmp_path, caplog):
    from framework.config import RunConfig
    from framework.scheduler import plan_run

    wf = tmp_path / "w.pt"
    wf.write_bytes(b"x")
    config = RunConfig(dataset="fake-responses", models=["fake-net"], signals=["fake-signal"], metrics=["fake-corr"],
                       weights="random", weights_files={"fake-net": wf}, store=tmp_path / "store")
    with caplog.at_level("WARNING", logger="framework"):
        plan_run(config)
    assert any("weights file wins over --weights random" in r.getMessage() and str(wf) in r.getMessage()
               for r in caplog.records)


MODEL_LAYERS = [
    Case("layer-alias-and-path", ["--models", "alexnet", "--layers", "conv1,features.1"],
         ["'conv1' and 'features.1'", "keep one of them"]),
    Case("layers-pixels-only", ["--models", "alexnet", "--metrics", "rsa", "--layers", "pixels"],
         ["no model layer left to score", "rsa.include_pixels=true"]),
]


@pytest.mark.usefixtures("_fake_plugins")
@pytest.mark.parametrize("case", MODEL_LAYERS, ids=lambda c: c.id)
def test_layer_lists_that_cannot_be_scored_stop_before_work(case, tmp_path, template_store, capsys):
    check_bad_input(case, tmp_path, template_store, capsys)


@pytest.mark.usefixtures("_fake_plugins")
def test_bad_download_timeout_stops_even_with_weights_auto(tmp_path, template_store, capsys, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_DOWNLOAD_TIMEOUT", "abc")
    check_bad_input(Case("timeout", ["--models", "alexnet"], ["FRAMEWORK_DOWNLOAD_TIMEOUT", "'abc'"]),
                    tmp_path, template_store, capsys)


@pytest.mark.usefixtures("_fake_plugins")
def test_weights_file_that_is_a_pipe_or_broken_link(tmp_path, template_store, capsys):
    import os

    os.mkfifo(tmp_path / "w.pt")
    check_bad_input(Case("fifo", ["--weights-file", "fake-net={tmp}/w.pt"],
                         ["w.pt'", "is not a regular file"]), tmp_path, template_store, capsys)
    other = tmp_path / "other"
    other.mkdir()
    (other / "w.pt").symlink_to(other / "gone.pt")
    check_bad_input(Case("broken-link", ["--weights-file", "fake-net={tmp}/w.pt"],
                         ["is a broken symbolic link", "gone.pt"]), other, template_store, capsys)


def test_layers_command_checks_a_weights_file_against_the_network(tmp_path, capsys):
    import torch

    path = tmp_path / "other.pt"
    torch.save({"features.0.weight": torch.randn(2, 3)}, path)
    code, err = _run(["layers", "alexnet", "--weights-file", str(path)], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "other.pt" in lines[0] and "does not fit model 'alexnet'" in lines[0]


@pytest.mark.usefixtures("_fake_plugins")
def test_weights_file_of_integers_is_refused(tmp_path, template_store, capsys):
    import torch
    import torchvision

    state = {k: v.to(torch.int32) if v.is_floating_point() else v
             for k, v in torchvision.models.alexnet().state_dict().items()}
    torch.save(state, tmp_path / "ints.pt")
    check_bad_input(Case("ints", ["--models", "alexnet", "--weights-file", "alexnet={tmp}/ints.pt"],
                         ["ints.pt", "dtype torch.int32 vs model torch.float32"]), tmp_path, template_store, capsys)
