"""--device and --precision: device resolution, autocast, bit-identical fp32, cache keys, provenance, CLI.

On a machine without a GPU (this project's CI) the CUDA test is skipped; everything else runs on the CPU.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TESTS
from framework import devices
from framework.activation_cache import FORMAT_VERSION, ActivationCache
from framework.config import build_config, load_config_file
from framework.contracts import WeightsInfo, takes_device_options
from framework.errors import ConfigError
from framework.types import StimulusSet, digest_of
from plugins.models.torchvision_models import TorchvisionModel

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not torch.backends.mps.is_available()
LAYERS = ["pixels", "conv1", "conv3", "conv5", "fc6", "fc8"]
#: Largest relative error ||bf16 - fp32|| / ||fp32|| of any AlexNet (random init) layer; measured
#: 2.8e-3 (conv1) to 4.6e-3 (fc6) on this project's CPU machine (torch 2.14, AVX2); fp16: 3.5e-4 to 5.7e-4.
BF16_RTOL = 2e-2


def _stimuli(n: int = 5, size: tuple[int, int] = (64, 80)) -> StimulusSet:
    rng = np.random.default_rng(3)
    return StimulusSet(ids=tuple(f"s{i}" for i in range(n)),
                       images=rng.integers(0, 256, (n, *size, 3), dtype=np.uint8))


def _collect(batches) -> dict[str, np.ndarray]:
    batches = list(batches)
    return {layer: np.concatenate([b[layer] for b in batches]) for layer in batches[0]}


@pytest.fixture(scope="module")
def alexnet() -> TorchvisionModel:
    return TorchvisionModel(name="alexnet", arch="alexnet", weights="random", seed=0)


@pytest.fixture(scope="module")
def fp32(alexnet) -> dict[str, np.ndarray]:
    return _collect(alexnet.extract(_stimuli(), LAYERS, batch_size=2))


def _plain_hooks(model: TorchvisionModel, stimuli: StimulusSet, layers: list[str], batch_size: int):
    """The extraction as it was before the device options: forward hooks on the CPU network, float32 copies."""
    module = model._ready()
    taps = model._discover()[1]
    out: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(stimuli), batch_size):
        x = model.preprocess([stimuli.image(i) for i in range(start, min(start + batch_size, len(stimuli)))])
        b = x.shape[0]
        got: dict[str, np.ndarray] = {}
        handles = []
        for layer in layers:
            if layer == "pixels":
                got[layer] = x.reshape(b, -1).numpy().copy()
                continue
            sub = dict(module.named_modules())[taps[layer].path]
            handles.append(sub.register_forward_hook(
                lambda _m, _i, o, layer=layer, got=got, b=b: got.__setitem__(
                    layer, o.detach().reshape(b, -1).to(device="cpu", dtype=torch.float32, copy=True).numpy())))
        try:
            with torch.inference_mode():
                module(x)
        finally:
            for h in handles:
                h.remove()
        for layer in layers:
            out[layer].append(got[layer])
    return {layer: np.concatenate(v) for layer, v in out.items()}


# ------------------------------------------------------------------------------------------
# devices and precisions
# ------------------------------------------------------------------------------------------
def test_resolve_device_on_this_machine():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if not NO_CUDA else ("mps" if not NO_MPS else "cpu")
    assert devices.resolve_device("auto").type == expected


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_one_line_with_the_fix(name):
    with pytest.raises(ConfigError) as info:
        devices.resolve_device(name)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"--device {name}: no CUDA device is visible to torch")
    assert torch.__version__ in text and "use --device cpu or --device auto" in text


@pytest.mark.skipif(not NO_MPS, reason="an MPS device is available here")
def test_mps_without_apple_silicon_is_one_line():
    with pytest.raises(ConfigError, match=r"^--device mps: no MPS device .*use --device cpu or --device auto\.$"):
        devices.resolve_device("mps")


@pytest.mark.parametrize("name, hint", [("gpu", None), ("cpus", "Did you mean 'cpu'"), ("cuda:x", None),
                                        ("cuda:-1", None), ("", None), (3, None)])
def test_bad_device_name(name, hint):
    with pytest.raises(ConfigError, match=r"Invalid value .* for --device; expected one of 'auto', 'cpu'") as info:
        devices.resolve_device(name)
    if hint:
        assert hint in str(info.value)


def test_precisions_and_autocast_context():
    cpu = torch.device("cpu")
    assert devices.PRECISIONS == ("fp32", "fp16", "bf16")
    for precision in devices.PRECISIONS:  # fp16 and bf16 autocast both run on the CPU in this torch
        assert devices.check_precision(cpu, precision) == precision
    with pytest.raises(ConfigError, match=r"Invalid value 'fp8' for --precision; expected one of 'fp32'"):
        devices.check_precision(cpu, "fp8")
    with devices.autocast_context(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with devices.autocast_context(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_ieee_fp32_context_restores_the_tf32_settings():
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    with devices._ieee_fp32():
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, matmul.fp32_precision) == before


def test_unsupported_precision_is_a_config_error(monkeypatch):
    monkeypatch.setattr(devices, "_probe", lambda device, precision: "no half-precision kernels (test)")
    with pytest.raises(ConfigError, match=r"^--precision fp16 on device 'cpu': torch .* cannot run float16 autocast "
                                          r"there \(no half-precision kernels \(test\)\); use --precision fp32, "
                                          r"--precision bf16"):
        devices.check_precision(torch.device("cpu"), "fp16")


def test_device_info_for_provenance():
    info = devices.device_info(torch.device("cpu"))
    assert info["type"] == "cpu" and info["index"] is None and info["torch"] == torch.__version__
    assert info["cuda"] == torch.version.cuda and info["name"] and info["cpu_capability"]


# ------------------------------------------------------------------------------------------
# extraction
# ------------------------------------------------------------------------------------------
def test_fp32_on_cpu_is_bit_identical_to_the_plain_extraction(alexnet, fp32):
    options = _collect(alexnet.extract(_stimuli(), LAYERS, batch_size=2, device=torch.device("cpu"),
                                       precision="fp32"))
    by_name = _collect(alexnet.extract(_stimuli(), LAYERS, batch_size=2, device="cpu"))
    plain = _plain_hooks(alexnet, _stimuli(), LAYERS, batch_size=2)
    for layer in LAYERS:
        assert fp32[layer].dtype == np.float32
        np.testing.assert_array_equal(options[layer], fp32[layer])
        np.testing.assert_array_equal(by_name[layer], fp32[layer])
        np.testing.assert_array_equal(plain[layer], fp32[layer])


def test_bf16_is_close_to_fp32_but_not_identical(alexnet, fp32):
    bf16 = _collect(alexnet.extract(_stimuli(), LAYERS, batch_size=2, device="cpu", precision="bf16"))
    np.testing.assert_array_equal(bf16["pixels"], fp32["pixels"])  # the input itself is never rounded
    for layer in LAYERS[1:]:
        assert bf16[layer].dtype == np.float32 and bf16[layer].shape == fp32[layer].shape
        rel = np.linalg.norm(bf16[layer] - fp32[layer]) / np.linalg.norm(fp32[layer])
        assert 0 < rel < BF16_RTOL, (layer, rel)
        assert not np.array_equal(bf16[layer], fp32[layer])
    assert alexnet._module is not None and next(alexnet._module.parameters()).dtype == torch.float32


def test_extract_rejects_bad_device_and_precision(alexnet):
    with pytest.raises(ConfigError, match=r"alexnet: precision"):
        alexnet.extract(_stimuli(), ["conv1"], precision="half")
    with pytest.raises(ConfigError, match=r"alexnet: device must be a torch.device"):
        alexnet.extract(_stimuli(), ["conv1"], device=0)
    if NO_CUDA:
        with pytest.raises(ConfigError, match=r"^--device cuda: no CUDA device"):
            alexnet.extract(_stimuli(), ["conv1"], device="cuda")


@pytest.mark.skipif(NO_CUDA, reason="no CUDA device here")
def test_cuda_fp32_is_close_to_cpu(alexnet, fp32):
    gpu = _collect(alexnet.extract(_stimuli(), LAYERS, batch_size=2, device="cuda", precision="fp32"))
    assert next(alexnet._module.parameters()).device.type == "cpu"  # moved back after the extraction
    np.testing.assert_array_equal(gpu["pixels"], fp32["pixels"])
    for layer in LAYERS[1:]:
        scale = float(np.abs(fp32[layer]).max())
        np.testing.assert_allclose(gpu[layer], fp32[layer], rtol=1e-4, atol=1e-4 * scale, err_msg=layer)
    half = _collect(alexnet.extract(_stimuli(), LAYERS, batch_size=2, device="cuda", precision="fp16"))
    for layer in LAYERS[1:]:
        rel = np.linalg.norm(half[layer] - fp32[layer]) / np.linalg.norm(fp32[layer])
        assert rel < BF16_RTOL, (layer, rel)


# ------------------------------------------------------------------------------------------
# plugins that take (or not) the options
# ------------------------------------------------------------------------------------------
def test_takes_device_options(alexnet):
    import fake_plugins

    assert takes_device_options(alexnet)
    assert not takes_device_options(fake_plugins.FakeModel(name="fake-net"))

    class Declared(fake_plugins.FakeModel):  # declares support but its extract predates the keywords
        supports_devices = True

    class Kwargs(Declared):
        def extract(self, stimuli, layers, *, batch_size=32, **options):
            return super().extract(stimuli, layers, batch_size=batch_size)

    assert not takes_device_options(Declared(name="d"))
    assert takes_device_options(Kwargs(name="k"))


def test_cache_refuses_options_for_a_model_that_takes_none(tmp_path):
    import fake_plugins

    cache = ActivationCache(tmp_path)
    model = fake_plugins.FakeModel(name="fake-net")
    stimuli = _stimuli(3, (8, 8))
    key = cache.key("fake-net", {}, model.weights_info(), ["means"], {}, "e" * 64, None, precision="bf16")
    with pytest.raises(ConfigError, match=r"Model 'fake-net' \(FakeModel\) takes no device or precision"):
        cache.extract(model, stimuli, ["means"], key=key, precision="bf16")
    key = cache.key("fake-net", {}, model.weights_info(), ["means"], {}, "e" * 64, None)
    assert cache.extract(model, stimuli, ["means"], key=key)["means"].shape == (3, 3)


# ------------------------------------------------------------------------------------------
# cache keys
# ------------------------------------------------------------------------------------------
def test_cache_key_has_device_type_and_precision_and_keeps_old_cpu_fp32_keys(tmp_path):
    cache = ActivationCache(tmp_path)
    weights = WeightsInfo("random", "random init (seed 0)", "d" * 64, 0)
    args = ("alexnet:random", {"params": {}}, weights, ["conv1"], {"crop": 224}, "e" * 64, None)
    old = digest_of("activations", FORMAT_VERSION, "alexnet:random", {"params": {}},
                    {"source": "random", "digest": "d" * 64, "seed": 0}, ["conv1"], {"crop": 224}, "e" * 64)
    assert cache.key(*args) == old                       # the key of entries cached before the options
    assert cache.key(*args, device="cpu", precision="fp32") == old
    keys = {(d, p): cache.key(*args, device=d, precision=p) for d in ("cpu", "cuda", "mps") for p in devices.PRECISIONS}
    assert len(set(keys.values())) == len(keys)          # every (device type, precision) its own entry
    assert cache.key(*args, device="cuda:1", precision="fp32") == keys["cuda", "fp32"]
    assert cache.key(*args, precision="bf16") == keys["cpu", "bf16"]
    reduced = cache.key(*args[:-1], {"method": "srp", "n_components": 8}, precision="bf16")
    assert reduced.startswith(keys["cpu", "bf16"] + ".")
    with pytest.raises(ConfigError, match="precision"):
        cache.key(*args, precision="fp64")


# ------------------------------------------------------------------------------------------
# run configuration, scheduler, CLI
# ------------------------------------------------------------------------------------------
def test_run_config_fields_and_run_toml(tmp_path):
    config = build_config({}, {})
    assert (config.device, config.precision) == ("cpu", "fp32")
    toml = tmp_path / "run.toml"
    toml.write_text('device = "Auto"\nprecision = "bf16"\n')
    config = build_config(load_config_file(toml), {}, source=f"'{toml}'")
    assert (config.device, config.precision) == ("auto", "bf16")
    assert build_config(load_config_file(toml), {"precision": "fp32"}).precision == "fp32"  # CLI wins
    with pytest.raises(ConfigError, match=r"field 'device': expected one of 'auto', 'cpu', 'cuda', 'cuda:N' .*"
                                          r"\(got 'gpu'\)"):
        build_config({}, {"device": "gpu"})
    with pytest.raises(ConfigError, match=r"field 'precision': Input should be 'fp32', 'fp16' or 'bf16'"):
        build_config({}, {"precision": "fp64"})
    if NO_CUDA:
        with pytest.raises(ConfigError, match=r"^--device cuda: no CUDA device is visible"):
            build_config({}, {"device": "cuda"})


def test_models_that_take_no_device_record_none_and_warn(fake_registry, tmp_path, caplog):
    from framework.config import RunConfig
    from framework.scheduler import run
    from framework.store import ResultsStore

    with caplog.at_level(logging.WARNING, logger="framework"):
        run(RunConfig(dataset="fake-responses", models=["fake-net"], signals=["resp"], metrics=["fake-corr"],
                      store=tmp_path / "store", precision="bf16", progress=False), registry=fake_registry)
    assert "Model 'fake-net' (FakeModel) takes no device or precision" in caplog.text
    with ResultsStore(tmp_path / "store") as store:
        (row,) = list(store.rows(status="ok"))
    assert row["provenance"]["model"]["device"] is None and row["provenance"]["model"]["precision"] is None


@pytest.mark.slow
def test_rows_record_device_and_precision_and_bf16_has_its_own_cache_entry(tmp_path):
    from framework.config import RunConfig
    from framework.registry import get_plugin_manager, load_registry
    from framework.scheduler import run
    from framework.store import ResultsStore

    registry = load_registry(get_plugin_manager(entry_points=False))
    small = {"demo": {"n_images_per_category": 4, "n_subjects": 1, "n_sites": 10, "n_repetitions": 1}}
    common = dict(dataset="demo", models=["alexnet:random"], signals=["lowgamma@150-350"], metrics=["rsa"],
                  dataset_params=small, layers={"*": ["conv1", "fc6"]}, progress=False)
    rows = {}
    for precision in ("fp32", "bf16"):
        store = tmp_path / precision
        summary = run(RunConfig(store=store, precision=precision, **common), registry=registry)
        assert summary.n_done == 1 and not summary.failures
        with ResultsStore(store) as s:
            (rows[precision],) = list(s.rows(status="ok"))
    fp32, bf16 = (rows[p]["provenance"]["model"] for p in ("fp32", "bf16"))
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    for prov in (fp32, bf16):
        assert prov["device"]["requested"] == "cpu" and prov["device"]["type"] == "cpu"
        assert prov["device"]["torch"] == torch.__version__ and prov["extraction"] != "cache"
    assert fp32["activations_key"] != bf16["activations_key"]
    entries = [p.name for p in (Path(os.environ["FRAMEWORK_CACHE_DIR"]) / "activations").iterdir()]
    for key in (fp32["activations_key"], bf16["activations_key"]):
        assert any(name.startswith(key) for name in entries), (key, entries)
    assert np.isfinite(rows["fp32"]["value"]) and np.isfinite(rows["bf16"]["value"])
    assert abs(rows["fp32"]["value"] - rows["bf16"]["value"]) < 0.05  # Spearman on ranks: often equal


@pytest.mark.slow
def test_bf16_after_fp32_in_one_store_is_scored_again(tmp_path):
    from framework.config import RunConfig
    from framework.registry import get_plugin_manager, load_registry
    from framework.scheduler import run

    registry = load_registry(get_plugin_manager(entry_points=False))
    small = {"demo": {"n_images_per_category": 4, "n_subjects": 1, "n_sites": 10, "n_repetitions": 1}}
    common = dict(dataset="demo", models=["alexnet:random"], signals=["lowgamma@150-350"], metrics=["rsa"],
                  dataset_params=small, layers={"*": ["conv1"]}, progress=False, store=tmp_path / "store")
    first = run(RunConfig(precision="fp32", **common), registry=registry)
    assert first.n_done == 1
    assert run(RunConfig(precision="bf16", **common), registry=registry).n_done == 1    # its own cell
    again = run(RunConfig(precision="fp32", **common), registry=registry)                # fp32 resumes
    assert (again.n_done, again.n_skipped) == (0, 1) and again.cell_keys == first.cell_keys


def _framework(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible here")
def test_cli_device_cuda_without_a_gpu_exits_2_with_one_line(tmp_path):
    proc = _framework("run", "--models", "alexnet", "--device", "cuda", "--store", str(tmp_path / "s"))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("framework: error: --device cuda: no CUDA device is visible to torch")
    assert lines[0].endswith("use --device cpu or --device auto.")
    assert not (tmp_path / "s").exists()
