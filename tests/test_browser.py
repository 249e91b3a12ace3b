"""The report page in a real headless browser (Debian's chromium driven by Playwright): it loads offline
without console errors, the unit selector changes the unit, and the colouring changes with it.

Skips when chromium or playwright is missing, except in CI (CI=true), where .ci/run installs both and a
missing one is a failure."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from test_report import lm_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(what, ok):
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is missing in CI: .ci/run must install it")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def browser_page():
    _need("chromium (apt-get install chromium)", CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need("the playwright python package (pip install 'rnnkit[test]')", sync_playwright)
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, timeout=120_000,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        try:
            yield ctx.new_page()
        finally:
            ctx.close()


def _colours(page):
    return page.eval_on_selector_all("#text span", "ss => ss.map(s => s.style.backgroundColor)")


def test_page_loads_and_the_selector_recolours_the_text(browser_page, tmp_path):
    page = browser_page
    path, _, H = lm_report(tmp_path, view_chars=120)
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load", timeout=120_000)
    page.wait_for_selector("#text span")
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # offline: nothing fetched

    assert page.eval_on_selector_all("#text span", "ss => ss.length") == 120
    assert page.eval_on_selector("#unit", "e => e.options.length") == H
    before_unit = page.eval_on_selector("#unit", "e => e.value")
    before = _colours(page)
    assert all(before)  # every token is coloured
    new_unit = "0" if before_unit != "0" else "1"
    page.select_option("#unit", new_unit)
    assert page.eval_on_selector("body", "b => b.dataset.unit") == new_unit
    assert f"[{new_unit}]" in page.inner_text("#info")
    after = _colours(page)
    assert after != before

    # another channel (the forget gate of layer 1) colours on the gate scale
    channel = page.eval_on_selector(
        "#channel", "e => [...e.options].find(o => o.textContent === 'layer 1 f').value")
    page.select_option("#channel", channel)
    assert page.eval_on_selector("body", "b => b.dataset.channel") == channel
    gate = _colours(page)
    assert gate != after and all(c.startswith("rgb(") for c in gate)

    # a "most telling" entry selects its unit
    page.click("#telling-list li:nth-child(2)")
    text = page.inner_text("#telling-list li:nth-child(2)")
    unit = page.eval_on_selector("#unit", "e => e.value")
    assert f"[{unit}]" in text
    assert errors == []
