"""The written leaderboard.html in real headless Chromium: no errors, charts drawn, tables sort."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from framework.leaderboard import write_leaderboard
from framework.store import ResultsStore
from test_report import RSA_MAPS, _record, _site_details

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium binary on PATH (apt-get install chromium)", allow_module_level=True)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _numbers(page, table: str, column: int) -> list[float | None]:
    """The data-sort numbers of ``column`` of the table, top to bottom (None for "—")."""
    values = page.eval_on_selector_all(
        f"table[data-table='{table}'] tbody tr",
        f"rows => rows.map(r => r.cells[{column}].getAttribute('data-sort'))")
    return [float(v) if v else None for v in values]


def test_page_in_chromium(tmp_path):
    with ResultsStore(tmp_path) as store:
        for i, (model, value) in enumerate([("alexnet", 0.41), ("vgg11", 0.33), ("resnet18", 0.47), ("pixels", 0.1)]):
            _record(store, model, "lowgamma@150-350", value, ci=(value - 0.1, value + 0.08), details=_site_details(i))
            _record(store, model, "theta@150-350", -0.02 * i, ceiling=0.2, details=_site_details(i + 10, -0.3))
        _record(store, "cornet", "theta@150-350", 0.03, ceiling=0.2)         # no lowgamma value: "—"
        write_leaderboard(store, {"rsa": "RDM correlation (Spearman) at a held-out layer"}, {"rsa": RSA_MAPS})
    url = (tmp_path / "leaderboard.html").resolve().as_uri()
    messages: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: messages.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: messages.append(f"page error: {e}"))
            page.goto(url)
            page.wait_for_load_state("load")
            charts = page.query_selector_all("svg.chart")
            assert len(charts) == 3
            for chart in charts:
                box = chart.bounding_box()
                assert box is not None and box["width"] > 50 and box["height"] > 50, chart.get_attribute("data-chart")

            heads = page.eval_on_selector_all("table[data-table='board'] thead th", "hs => hs.map(h => h.textContent)")
            col = heads.index("lowgamma@150-350 [95% CI]")
            header = page.locator("table[data-table='board'] thead th").nth(col)
            header.click()
            up = _numbers(page, "board", col)
            assert up == sorted(v for v in up if v is not None) + [None]              # "—" last
            assert header.get_attribute("aria-sort") == "ascending"
            header.click()
            down = _numbers(page, "board", col)
            assert down == sorted((v for v in down if v is not None), reverse=True) + [None]
            assert header.get_attribute("aria-sort") == "descending"
            models = page.eval_on_selector_all("table[data-table='board'] tbody tr",
                                               "rows => rows.map(r => r.cells[1].textContent)")
            assert models[:4] == ["resnet18", "alexnet", "vgg11", "pixels"] and models[-1] == "cornet"

            shot = tmp_path / "leaderboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert not messages, messages
    assert shot.stat().st_size > 10_000
    if os.environ.get("FRAMEWORK_TEST_ARTIFACTS"):
        target = Path(os.environ["FRAMEWORK_TEST_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, target / "leaderboard.png")
