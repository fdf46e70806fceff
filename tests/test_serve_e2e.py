"""The real server (uvicorn in a child process) driven through its page in headless Chromium."""

from __future__ import annotations

import shutil

import pytest

from runtrace.serve.process import serving

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium and chromedriver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_benign_fixture_through_the_page(tmp_path, browser, cli32):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with serving(tmp_path, "--timeout", "30", "--max-instructions", "200000") as url:
        browser.get(url + "/")
        WebDriverWait(browser, 30).until(lambda d: "threshold" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(cli32))
        browser.find_element(By.ID, "submit").click()
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 180).until(lambda d: status.text in ("done", "error"))
        assert status.text == "done", browser.find_element(By.ID, "reason").text
        assert browser.find_element(By.ID, "verdict").text == "benign"
        probability = float(browser.find_element(By.ID, "probability").text)
        threshold = float(browser.find_element(By.ID, "threshold").text)
        assert 0.0 <= probability < threshold
        # The trace summary, the per-window plot and the explanation table are filled in.
        assert "instructions executed" in browser.find_element(By.ID, "trace-summary").text
        assert browser.find_elements(By.CSS_SELECTOR, "#plot svg polyline")
        rows = browser.find_elements(By.CSS_SELECTOR, "#explanation tbody tr")
        assert rows and "+0." in rows[0].text and any("0x" in r.text for r in rows)
        # The default model counts evidence of malice only: its table towards benign says why it is empty.
        benign = browser.find_elements(By.CSS_SELECTOR, "#explanation-benign tbody tr")
        assert len(benign) == 1 and "none by design" in benign[0].text
        assert "account for" in browser.find_element(By.ID, "explanation-note").text
        # The nearest known files from the index shipped with the model (or a line saying there are none).
        assert browser.find_element(By.ID, "neighbours-box").is_displayed()
        known = browser.find_elements(By.CSS_SELECTOR, "#neighbours tbody tr")
        note = browser.find_element(By.ID, "neighbours-note").text
        assert (known and "distinct blocks" in note) or "no known file" in note
        # What the program did, and its API calls with their arguments.
        assert "processes" in browser.find_element(By.ID, "behaviour").text
        calls = browser.find_element(By.ID, "calls").text
        assert "KERNEL32.CreateProcessA(" in calls and "notes.txt" in calls
        link = browser.find_element(By.ID, "download-x64dbg").get_attribute("href")
        assert link.endswith("/trace?format=x64dbg")
        # ...and the scan is listed among the earlier ones.
        WebDriverWait(browser, 30).until(lambda d: "cli-32.exe" in d.find_element(By.ID, "history").text)
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
