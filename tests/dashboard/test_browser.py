"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright) against the site
built from real smoke runs — the distilled student and its teacher (Ray Train + DeepSpeed) and a canvas run
evaluated with its clips — served with a token. Screenshots are kept as test artefacts."""

import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from oss_cluster.claims import check_all, load_registry
from oss_cluster.dashboard.__main__ import DualStackServer, make_handler
from oss_cluster.dashboard.site import Site
from oss_cluster.storage import open_storage

ARTEFACTS = Path(os.environ.get("OSS_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "dashboard"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def served(shipped, canvas_evaluated, tmp_path_factory):
    """(base URL, storage, student run, canvas run): one storage holding the smoke teacher and student and the
    canvas run evaluated with its clips (copies of the session's runs), served by the server of
    `python -m oss_cluster.dashboard serve`."""
    (ship_root, teacher, student, _), (canvas_root, canvas) = shipped, canvas_evaluated
    root = tmp_path_factory.mktemp("dashboard-runs")
    for source, name in ((ship_root, teacher), (ship_root, student), (canvas_root, canvas)):
        shutil.copytree(Path(source) / "runs" / str(name), root / "runs" / str(name))
    storage = open_storage(str(root))
    site = Site(storage, ARTEFACTS.parent / "dashboard-site", token=TOKEN, refresh_s=3600)
    shutil.rmtree(site.out, ignore_errors=True)
    site.start()
    server = DualStackServer(("127.0.0.1", 0), make_handler(site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", storage, str(student), canvas
    site.stop()
    server.shutdown()


@pytest.fixture(scope="module")
def page(served):
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: scripts/bootstrap.sh installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                      extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
        tab = context.new_page()
        tab.console_errors = []
        tab.on("console", lambda message: tab.console_errors.append(message.text) if message.type == "error" else None)
        tab.on("pageerror", lambda error: tab.console_errors.append(str(error)))
        yield tab
        browser.close()


def test_without_the_token_requests_are_refused(served):
    base = served[0]
    for path in ("/", "/data.json", "/app.js"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code == 401


def test_runs_table_run_page_strip_lightbox_and_slider(served, page):
    base, _, student, _ = served
    page.goto(base + "/#/")
    row = page.locator(f'tr[data-run="{student}"]')
    row.wait_for()
    assert "finished" in row.inner_text()
    page.screenshot(path=str(ARTEFACTS / "runs.png"), full_page=True)
    page.locator('select[data-filter="family"]').select_option("canvas")
    assert page.locator(f'tr[data-run="{student}"]').count() == 0  # the filter hides the student
    page.locator('select[data-filter="family"]').select_option("")

    row.locator(f'a[href="#/run/{student}"]').click()
    page.locator(".chart svg polyline").first.wait_for()
    assert page.locator('.chart[data-chart="training loss"] polyline').count() == 1
    strip = page.locator(".strips img.strip").first
    strip.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", strip.element_handle())
    page.screenshot(path=str(ARTEFACTS / "run.png"), full_page=True)

    strip.click()
    assert page.locator("#lightbox").is_visible()
    top = page.locator("#lightbox img.top")
    top.wait_for()
    assert page.evaluate("(img) => img.style.clipPath", top.element_handle()) == "inset(0px 50% 0px 0px)"
    page.locator("#lightbox-slider").focus()
    page.keyboard.press("End")  # the slider to its right end: the model covers the whole view
    assert page.evaluate("(img) => img.style.clipPath", top.element_handle()) == "inset(0px 0% 0px 0px)"
    page.wait_for_function("() => document.querySelector('#lightbox img.top').complete && "
                           "document.querySelector('#lightbox .compare').style.width")
    width = page.evaluate("() => document.querySelector('#lightbox .compare').getBoundingClientRect().width")
    page.locator("#zoom-in").click()
    assert page.locator("#zoom-level").inner_text() == "4×"
    assert page.evaluate("() => document.querySelector('#lightbox .compare').getBoundingClientRect().width") == \
        pytest.approx(2 * width)
    page.screenshot(path=str(ARTEFACTS / "lightbox.png"))
    page.keyboard.press("Escape")
    assert not page.locator("#lightbox").is_visible()
    assert page.console_errors == []


def test_canvas_clips_play_and_compare_view(served, page):
    base, _, student, canvas = served
    page.goto(f"{base}/#/run/{canvas}")
    videos = page.locator("video")
    videos.first.wait_for()
    assert videos.count() == 2  # ground truth | TAAU | model, and the SR + OSS-FX stream
    for index in range(2):
        handle = videos.nth(index).element_handle()
        page.wait_for_function("(v) => v.readyState >= 2 && v.currentTime > 0.05 && v.videoWidth > 0", arg=handle,
                               timeout=20000)
        assert page.evaluate("(v) => !v.error && !v.paused", handle)
    page.locator('.chart[data-chart="canvas contribution"]').wait_for()
    assert "step 2:" in page.locator("table.facts").inner_text()  # its checkpoint is listed
    page.screenshot(path=str(ARTEFACTS / "canvas-run.png"), full_page=True)
    page.goto(f"{base}/#/compare/{canvas}/{student}")
    page.locator('.chart[data-chart="training loss"] polyline').nth(1).wait_for()  # both runs' curves overlaid
    assert student in page.locator("main table").first.inner_text()
    assert page.console_errors == []


def test_claims_tiers_cost_and_names_pages(served, page):
    base, storage, _, canvas = served
    expected = {h["id"]: h for h in check_all(load_registry(), storage)["hypotheses"]}
    page.goto(base + "/#/claims")
    card = page.locator('[data-claim="H009"]')
    card.wait_for()
    assert card.locator(".status").first.inner_text() == expected["H009"]["status"]
    assert expected["H009"]["reason"] in card.inner_text() and canvas in card.inner_text()
    assert page.locator('[data-claim="D001"] .status').inner_text() == "backed"
    page.screenshot(path=str(ARTEFACTS / "claims.png"), full_page=True)
    page.goto(base + "/#/tiers")
    page.locator('tr[data-tier="pico"]').wait_for()
    assert "not yet trained" in page.locator('tr[data-tier="standard"]').inner_text()
    page.goto(base + "/#/cost")
    page.locator("text=Actual spend per run").wait_for()
    page.goto(base + "/#/names")
    page.locator("text=Names are frozen").wait_for()
    assert page.console_errors == []
