"""What a person sees in a terminal: the real CLI in a pseudo-terminal, rendered by a terminal emulator.

A small offline run on the demo dataset (alexnet and resnet18 fall back to random init; a test metric
raises a numpy warning and logs a warning while the progress bar is on screen). The bytes the
terminal receives are rendered with ``pyte`` and the screen is checked: every log line intact on
its own rows (no bar fragment glued to it), one line per model about its weights, the end-of-run
summary of the fallback models, and warnings that name their cell.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import ROOT, TESTS

pyte = pytest.importorskip("pyte")

COLS, ROWS = 100, 40
#: Rows of the emulated screen: enough that nothing of the run scrolls away.
SCREEN_ROWS = 400

NOISY_PLUGIN = '''
"""A metric that warns while it scores: a numpy RuntimeWarning and a log warning naming a layer."""
import logging
import time

import numpy as np

from fake_plugins import FakeMetric
from framework.hookspecs import hookimpl
from framework.registry import PluginSpec


class NoisyMetric(FakeMetric):
    name = "noisy-corr"

    def score(self, activations, target, *, seed=0):
        time.sleep(0.4)                 # the bar is redrawn while the cell runs
        np.log(np.zeros(3))             # RuntimeWarning: divide by zero (twice: one line)
        np.log(np.zeros(3))
        logging.getLogger("framework.metrics.noisy").warning("noisy-corr: layer 'conv1' looks odd.")
        return super().score(activations, target, seed=seed)


@hookimpl
def framework_register_metrics(registry):
    registry.add(PluginSpec("metric", "noisy-corr", NoisyMetric, "warns while scoring"))
'''

#: Characters only a progress bar draws.
BAR = re.compile(r"\d+%\||[█▏▎▍▌▋▊▉]|it/s\]|img/s\]|cell/s\]|\?it/s|\[\d\d:\d\d<")


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 400) -> tuple[bytes, int]:
    """Run ``args`` with a pseudo-terminal of COLS x ROWS as stdin, stdout and stderr; the bytes written to it."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                            start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal has exited
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"the run did not finish in {timeout} s; it wrote:\n{bytes(out).decode(errors='replace')}")
        return bytes(out), proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def _render(raw: bytes) -> list[str]:
    """The terminal's rows after ``raw``, as a COLS-wide emulator shows them (trailing blanks dropped)."""
    screen = pyte.Screen(COLS, SCREEN_ROWS)
    stream = pyte.ByteStream(screen)
    stream.feed(raw)
    rows = [line.rstrip() for line in screen.display]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _logical_lines(rows: list[str]) -> list[str]:
    """Rows joined where the terminal wrapped a long line (a row filled to the last column goes on)."""
    lines: list[str] = []
    current = ""
    for row in rows:
        current += row
        if len(row) < COLS:
            lines.append(current)
            current = ""
    if current:
        lines.append(current)
    return lines


@pytest.fixture(scope="module")
def terminal(tmp_path_factory) -> tuple[bytes, int, list[str], list[str]]:
    tmp = tmp_path_factory.mktemp("terminal")
    (tmp / "noisy_plugin.py").write_text(NOISY_PLUGIN)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(tmp), str(TESTS), str(ROOT)]),
        "FRAMEWORK_PLUGINS": "noisy_plugin",
        "FRAMEWORK_CACHE_DIR": str(tmp / "cache"),
        "TORCH_HOME": str(tmp / "torch"),
        "FRAMEWORK_DOWNLOAD_TIMEOUT": "2",
        # offline for sure: every download goes through a proxy that refuses connections
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": "",
        "COLUMNS": str(COLS), "LINES": str(ROWS), "TERM": "xterm",
        "PYTHONUNBUFFERED": "1",
    })
    args = [sys.executable, "-m", "framework.cli", "run", "--dataset", "demo",
            "--dataset-param", "demo.n_images_per_category=4", "--dataset-param", "demo.n_subjects=1",
            "--dataset-param", "demo.n_sites=10",
            "--models", "alexnet,torchvision:resnet18", "--signals", "lowgamma@150-350",
            "--metrics", "rsa,noisy-corr", "--store", str(tmp / "store")]
    raw, code = _run_in_pty(args, env)
    rows = _render(raw)
    return raw, code, rows, _logical_lines(rows)


@pytest.mark.slow
def test_bars_were_drawn_and_named_the_cell(terminal):
    raw, code, rows, _ = terminal
    text = raw.decode("utf-8", errors="replace")
    assert code == 0, "\n".join(rows)
    assert re.search(r"cells:\s+\d+%\|", text), "no progress bar was drawn:\n" + text
    assert "alexnet × lowgamma@150-350 × noisy-corr" in text          # the cells bar's postfix
    assert "alexnet: activations" in text


@pytest.mark.slow
def test_no_log_line_collides_with_a_bar(terminal):
    _, _, rows, lines = terminal
    screen = "\n".join(rows)
    glued = [row for row in rows if BAR.search(row)]
    assert not glued, "bar fragments left on the screen (a line was written over a bar):\n" + screen
    starts = ("[", "Model '", "Dataset '", "Computing ", "band-power: ", "Signals computed", "Extracted ",
              "Signal ", "Run ", "2 of 2 model(s)", "generating demo", "rank", "----", "rsa on demo",
              "noisy-corr on demo", "Leaderboard written", "Benchmarks", "1 ", "2 ", "")
    for line in lines:
        assert line.startswith(starts), f"unexpected line {line!r} on the screen:\n{screen}"


@pytest.mark.slow
def test_one_line_per_model_about_weights_and_the_summary(terminal):
    _, _, rows, lines = terminal
    screen = "\n".join(rows)
    for model in ("alexnet", "torchvision:resnet18"):
        about = [ln for ln in lines if f"Model '{model}'" in ln]
        assert len(about) == 1, screen
        assert about[0].startswith(f"Model '{model}': pretrained weights unavailable (") and about[0].endswith(
            "labelled 'random init (fallback)' (-v for the fix)."), screen
    summary = [ln for ln in lines if "used random init" in ln]
    assert len(summary) == 1 and summary[0].startswith("2 of 2 model(s) used random init"), screen
    assert summary[0].endswith(": alexnet, torchvision:resnet18."), screen


@pytest.mark.slow
def test_warnings_name_their_cell(terminal):
    _, _, rows, lines = terminal
    screen = "\n".join(rows)
    for model in ("alexnet", "torchvision:resnet18"):
        prefix = f"[{model} × lowgamma@150-350 × noisy-corr] "
        numpy_lines = [ln for ln in lines if ln.startswith(prefix + "RuntimeWarning: divide by zero encountered in "
                                                                    "log (")]
        assert len(numpy_lines) == 1 and numpy_lines[0].endswith("; 2 times)"), screen
        assert prefix + "noisy-corr: layer 'conv1' looks odd." in lines, screen
    unattributed = [ln for ln in lines if ("Warning" in ln or "looks odd" in ln) and not ln.startswith("[")]
    assert not unattributed, screen
