"""The web page in a real headless browser (Debian's chromium and chromedriver): upload an image,
generate, wait for the 3D viewer and check its screenshot shows the model."""
from __future__ import annotations

import io
import shutil
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from .conftest import ServerProcess


def _browser_paths() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver) and shutil.which("apt-get"):  # .ci/setup installs them; try once here too
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], capture_output=True,
                       timeout=600)
        chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium and chromedriver are not installed and apt-get could not install them")
    return chromium, driver


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"):
        options.add_argument(arg)
    b = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield b
    b.quit()


def _canvas_pixels(browser) -> np.ndarray:
    from selenium.webdriver.common.by import By

    canvas = browser.find_element(By.CSS_SELECTOR, ".viewer canvas")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), np.int16)


def test_page_generates_and_shows_the_model(tmp_path, png, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    server = ServerProcess(tmp_path / "data")
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 120)
        empty = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".viewer canvas")) and _canvas_pixels(browser)
        browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(png))
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".status"), "ready to generate"))
        cutout = browser.find_element(By.CSS_SELECTOR, "img[src^='data:image/png']")
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return arguments[0].naturalWidth", cutout) > 0)
        browser.find_element(By.XPATH, "//*[contains(@class,'q-expansion-item')]//*[contains(text(),'Settings')]").click()
        for label, value in (("Texture Resolution", "256"), ("Face Budget", "2000")):  # a quicker job
            field = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"input[aria-label='{label}']")))
            field.send_keys(Keys.CONTROL, "a")  # clear() does not reach Vue's model
            field.send_keys(value)
        browser.find_element(By.CSS_SELECTOR, "button.generate").click()
        WebDriverWait(browser, 240).until(  # "Done", or a coded failure like "[invalid_setting] ..."
            lambda b: b.find_element(By.CSS_SELECTOR, ".status").text == "Done" or
            "[" in b.find_element(By.CSS_SELECTOR, ".status").text)
        assert browser.find_element(By.CSS_SELECTOR, ".status").text == "Done"
        link = browser.find_element(By.CSS_SELECTOR, "a.download")
        assert link.get_attribute("href").endswith(".glb")
        deadline = time.monotonic() + 60
        while True:  # the loader fetches and the scene redraws a moment later
            shown = _canvas_pixels(browser)
            changed = (np.abs(shown - empty).max(axis=2) > 24).mean()
            if changed > 0.02 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        Image.fromarray(shown.astype(np.uint8)).save(tmp_path / "viewer.png")
        assert shown.std() > 5, "the viewer screenshot is blank"
        assert changed > 0.02, f"the model covers only {changed:.1%} of the viewer"
    finally:
        server.kill()
