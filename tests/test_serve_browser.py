"""The ``tfinpaint serve`` page in real headless Chromium: open a photo, paint a stroke with pointer events, undo and
redo it, inpaint, and compare the downloaded result with the photo. Needs Debian's ``chromium`` and
``chromium-driver`` (``.ci/run`` installs them); without them the test fails, it is not skipped."""
import base64
import os
import shutil
import subprocess
import sys
import time

import cv2
import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.test_serve_api import REPO, free_port, make_checkpoint

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SERVER_START_SECONDS = 240
RESULT_SECONDS = 180


@pytest.fixture()
def server(tmp_path):
    checkpoint = make_checkpoint(str(tmp_path / "tiny_glcic"))
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tfinpaint", "serve", "--gpath", checkpoint, "--port", str(port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + SERVER_START_SECONDS
        while True:
            assert process.poll() is None, f"the server exited: {log_path.read_text()}"
            assert time.time() < deadline, f"the server did not answer: {log_path.read_text()}"
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def browser(tmp_path):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert os.path.exists(path), f"{path} is missing: apt-get install chromium chromium-driver ({package})"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_paint_a_stroke_and_inpaint_in_chromium(server, browser, tmp_path):
    from skimage import data

    # A real photo, non-square, saved as JPEG as a camera would.
    photo_rgb = cv2.resize(data.chelsea(), (300, 200), interpolation=cv2.INTER_AREA)
    photo_path = tmp_path / "cat.jpg"
    cv2.imwrite(str(photo_path), photo_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    photo = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)[:, :, ::-1]  # as the server decodes it
    height, width = photo.shape[:2]

    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "image-input").send_keys(str(photo_path))
    wait.until(lambda driver: driver.find_element(By.ID, "view").is_displayed()
               and "200 pixels" in driver.find_element(By.ID, "info").text)
    overlay = browser.find_element(By.ID, "overlay")
    view_width = browser.execute_script("return arguments[0].getBoundingClientRect().width", overlay)
    scale = view_width / width  # view pixels per image pixel
    brush = int(browser.find_element(By.ID, "brush-size").get_attribute("value"))  # view pixels, diameter

    # A horizontal stroke through the middle, from x = 30 % to 60 % of the width (offsets are from the centre).
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(overlay, int(-0.2 * view_width), 0).click_and_hold()
    for step in range(1, 11):
        actions.move_to_element_with_offset(overlay, int((-0.2 + 0.03 * step) * view_width), 0)
    actions.release().perform()

    painted = "return arguments[0].getContext('2d').getImageData(0, 0, arguments[0].width, arguments[0].height)" \
              ".data.filter((value, index) => index % 4 === 3 && value > 0).length"
    stroke_pixels = browser.execute_script(painted, overlay)
    assert stroke_pixels > 0, "the stroke did not paint the overlay"
    browser.find_element(By.ID, "undo").click()
    assert browser.execute_script(painted, overlay) == 0
    browser.find_element(By.ID, "redo").click()
    assert browser.execute_script(painted, overlay) == stroke_pixels

    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, RESULT_SECONDS).until(
        lambda driver: "done in" in driver.find_element(By.ID, "elapsed").text
        or "failed" in driver.find_element(By.ID, "message").text)
    assert "done in" in browser.find_element(By.ID, "elapsed").text, browser.find_element(By.ID, "message").text
    browser.save_screenshot(str(tmp_path / "serve_page.png"))
    assert cv2.imread(str(tmp_path / "serve_page.png")) is not None

    # The result, as the download link gives it.
    encoded = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById("download").href).then((response) => response.blob()).then((blob) => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result.split(",")[1]);
          reader.readAsDataURL(blob);
        }).catch((error) => done("error: " + error));""")
    assert not encoded.startswith("error"), encoded
    result = cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert result.shape == photo.shape

    # Pixels farther from the stroke than the brush radius (plus a margin for rounding) are the photo's own.
    rows, cols = np.mgrid[0:height, 0:width]
    centre_y = height / 2
    left, right = 0.3 * width, 0.6 * width
    dx = np.maximum(0, np.maximum(left - cols, cols - right))
    distance = np.hypot(dx, rows - centre_y)
    radius = brush / 2 / scale
    far = distance > radius + 4
    assert far.mean() > 0.5
    np.testing.assert_array_equal(result[far], photo[far])
    near = distance < radius / 2
    assert np.any(result[near] != photo[near]), "the stroke's pixels were not inpainted"

    # Before / after toggle, then keep working on the result.
    toggle = browser.find_element(By.ID, "before-after")
    assert toggle.text == "Show before"
    toggle.click()
    assert toggle.text == "Show after"
    browser.find_element(By.ID, "continue").click()
    wait.until(lambda driver: "cat_inpainted.png" in driver.find_element(By.ID, "info").text)
    assert browser.execute_script(painted, overlay) == 0
