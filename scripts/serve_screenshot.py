"""Take docs/serve-page.png: the service's page after real scans, in headless Chromium.

Starts `runtrace serve` on a temporary database, uploads the benign test fixtures through the page and
photographs it once the last scan is shown.  Needs chromium and chromedriver (Debian packages).

    python scripts/serve_screenshot.py [-o docs/serve-page.png]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from runtrace.serve.process import serving

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = [ROOT / "tests" / "fixtures" / "benign" / name for name in ("cli-64.exe", "cli-32.exe")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "serve-page.png")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--window-size=1280,2000", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        with tempfile.TemporaryDirectory() as state, serving(Path(state)) as url:
            driver.get(url + "/")
            for sample in FIXTURES:
                driver.find_element(By.ID, "file").send_keys(str(sample))
                driver.find_element(By.ID, "submit").click()
                WebDriverWait(driver, 300).until(
                    lambda d, name=sample.name: (
                        d.find_element(By.ID, "scan-name").text == name
                        and d.find_element(By.ID, "status").text in ("done", "error")
                    )
                )
            WebDriverWait(driver, 30).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 2
            )
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1280, height + 200)
            driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
