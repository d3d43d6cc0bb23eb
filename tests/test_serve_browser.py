"""The ``tfinpaint serve`` page in real headless Chromium, against ``python -m tfinpaint serve`` on a free port: drop
and open photos, load a mask file, paint strokes with pointer events, undo and redo, inpaint, compare the
downloaded result with the photo, inpaint again over it with a model that has stages, and save screenshots.
Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the test fails, it
is not skipped."""
import base64
import os
import shutil
import struct
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
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.test_serve_api import REPO, free_port, make_checkpoint
from tfinpaint import imageio

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SERVER_START_SECONDS = 240
RESULT_SECONDS = 180


@pytest.fixture()
def server(tmp_path):
    # Two models: GLCIC (no stages) and DeepFill v2 (coarse result and attention flow), both tiny.
    checkpoints = [make_checkpoint(str(tmp_path / "tiny_glcic")),
                   make_checkpoint(str(tmp_path / "tiny_deepfill_v2"), "deepfill_v2",
                                   {"cnum": 8, "dnum": 8, "image_size": 64})]
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tfinpaint", "serve", "--gpath", checkpoints[0], "--gpath", checkpoints[1],
             "--port", str(port), "--max_pixels", "30000000"],
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
        assert httpx.get(f"{url}/api/v1/models", timeout=10).json()["max_pixels"] == 30_000_000
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert os.path.exists(path), f"{path} is missing: apt-get install chromium chromium-driver ({package})"
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
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


PAINTED = ("return arguments[0].getContext('2d').getImageData(0, 0, arguments[0].width, arguments[0].height)"
           ".data.filter((value, index) => index % 4 === 3 && value > 0).length")


def paint_stroke(browser, overlay, row, first_col, last_col):
    """A horizontal stroke with real pointer events, at fractions of the view (offsets are from its centre)."""
    rect = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                  overlay)
    y = int((row - 0.5) * rect[1])
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(overlay, int((first_col - 0.5) * rect[0]), y).click_and_hold()
    for step in range(1, 11):
        col = first_col + (last_col - first_col) * step / 10
        actions.move_to_element_with_offset(overlay, int((col - 0.5) * rect[0]), y)
    actions.release().perform()


def run_and_read_result(browser) -> np.ndarray:
    """Presses Inpaint, waits for the result and returns it as the download link gives it."""
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, RESULT_SECONDS).until(
        lambda driver: "done in" in driver.find_element(By.ID, "elapsed").text
        or "failed" in driver.find_element(By.ID, "message").text)
    assert "done in" in browser.find_element(By.ID, "elapsed").text, browser.find_element(By.ID, "message").text
    encoded = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById("download").href).then((response) => response.blob()).then((blob) => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result.split(",")[1]);
          reader.readAsDataURL(blob);
        }).catch((error) => done("error: " + error));""")
    assert not encoded.startswith("error"), encoded
    return cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


def with_orientation_6(jpeg: bytes) -> bytes:
    """The JPEG with an EXIF APP1 segment whose orientation tag is 6: viewers turn it 90 degrees clockwise."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">HHHIHH", 1, 0x0112, 3, 1, 6, 0) + b"\x00" * 4
    exif = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


def drop_image(browser, data: bytes, name: str, mime: str) -> None:
    """Drops a file on the page as a drag and drop from the desktop does (a drop event carrying the file)."""
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (char) => char.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], arguments[1], { type: arguments[2] }));
        document.getElementById("drop-zone").dispatchEvent(
          new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));""",
        base64.b64encode(data).decode(), name, mime)


def stroke_distance(height, width, row, first_col, last_col):
    """Distance in image pixels of every pixel from a horizontal stroke's centre line (fractions of the size)."""
    rows, cols = np.mgrid[0:height, 0:width]
    dx = np.maximum(0, np.maximum(first_col * width - cols, cols - last_col * width))
    return np.hypot(dx, rows - row * height)


def test_paint_a_stroke_and_inpaint_in_chromium(server, browser, tmp_path):
    from skimage import data

    # A real photo, non-square and larger than the view (the page paints on a scaled view and sends a
    # full-resolution mask), saved as a phone camera does: stored on its side with EXIF orientation 6.
    upright = cv2.resize(data.chelsea(), (1200, 800), interpolation=cv2.INTER_CUBIC)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # turned back by 90 degrees clockwise when displayed
    photo_path = tmp_path / "cat.jpg"
    photo_path.write_bytes(with_orientation_6(cv2.imencode(".jpg", stored[:, :, ::-1])[1].tobytes()))
    photo = imageio.read_image(photo_path)  # as the server reads it: upright
    assert photo.shape == (800, 1200, 3)
    height, width = photo.shape[:2]

    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
    # Dropping a file opens it too: a 40 x 30 JPEG, white left half, with EXIF orientation 6 is shown upright
    # (30 x 40, white top half).
    small = np.zeros((30, 40, 3), np.uint8)
    small[:, :20] = 255
    drop_image(browser, with_orientation_6(cv2.imencode(".jpg", small)[1].tobytes()), "phone.jpg", "image/jpeg")
    wait.until(lambda driver: "phone.jpg: 30 x 40 pixels" in driver.find_element(By.ID, "info").text)
    top, bottom = browser.execute_script(
        "const context = document.getElementById('photo').getContext('2d');"
        "return [context.getImageData(15, 5, 1, 1).data[0], context.getImageData(15, 35, 1, 1).data[0]]")
    assert top > 200 and bottom < 50

    # A mask file with white = known on that small picture (shown unscaled): its black 10 x 20 rectangle becomes
    # the hole; Clear removes it.
    overlay = browser.find_element(By.ID, "overlay")
    known_mask = np.full((40, 30), 255, np.uint8)
    known_mask[5:25, 10:20] = 0
    cv2.imwrite(str(tmp_path / "known.png"), known_mask)
    Select(browser.find_element(By.ID, "mask-polarity")).select_by_value("valid")
    browser.find_element(By.ID, "mask-input").send_keys(str(tmp_path / "known.png"))
    wait.until(lambda driver: driver.execute_script(PAINTED, overlay) == 10 * 20)
    browser.find_element(By.ID, "clear").click()
    assert browser.execute_script(PAINTED, overlay) == 0

    browser.find_element(By.ID, "image-input").send_keys(str(photo_path))
    wait.until(lambda driver: driver.find_element(By.ID, "view").is_displayed()
               and "cat.jpg: 1200 x 800 pixels" in driver.find_element(By.ID, "info").text)
    scale = browser.execute_script("return arguments[0].getBoundingClientRect().width", overlay) / width
    assert 0.3 < scale < 0.95, scale
    radius = int(browser.find_element(By.ID, "brush-size").get_attribute("value")) / 2 / scale  # image pixels

    paint_stroke(browser, overlay, 0.5, 0.3, 0.6)
    stroke_pixels = browser.execute_script(PAINTED, overlay)
    assert stroke_pixels > 0, "the stroke did not paint the overlay"
    assert browser.find_element(By.ID, "brush-cursor").is_displayed()
    browser.find_element(By.ID, "undo").click()
    assert browser.execute_script(PAINTED, overlay) == 0
    browser.find_element(By.ID, "redo").click()
    assert browser.execute_script(PAINTED, overlay) == stroke_pixels
    # The eraser takes paint away; undone, the stroke is whole again.
    browser.find_element(By.ID, "tool-eraser").click()
    paint_stroke(browser, overlay, 0.5, 0.4, 0.5)
    assert 0 < browser.execute_script(PAINTED, overlay) < stroke_pixels
    browser.find_element(By.ID, "undo").click()
    assert browser.execute_script(PAINTED, overlay) == stroke_pixels
    browser.find_element(By.ID, "tool-brush").click()
    browser.save_screenshot(str(tmp_path / "serve_painted.png"))

    first = run_and_read_result(browser)
    browser.save_screenshot(str(tmp_path / "serve_result.png"))
    assert cv2.imread(str(tmp_path / "serve_result.png")) is not None
    assert first.shape == photo.shape
    # Pixels farther from the stroke than the brush radius (plus a margin for rounding) are the photo's own.
    first_distance = stroke_distance(height, width, 0.5, 0.3, 0.6)
    far = first_distance > radius + 4
    assert far.mean() > 0.5
    np.testing.assert_array_equal(first[far], photo[far])
    near = first_distance < radius / 2
    assert np.any(first[near] != photo[near]), "the stroke's pixels were not inpainted"
    assert not browser.find_element(By.ID, "stages").is_displayed()  # GLCIC has no stages

    toggle = browser.find_element(By.ID, "before-after")
    assert toggle.text == "Show before"
    assert browser.execute_script("return getComputedStyle(arguments[0]).display", overlay) == "none"
    toggle.click()
    assert toggle.text == "Show after"

    # Keep working on the result, with the other model: a second stroke elsewhere.
    browser.find_element(By.ID, "continue").click()
    wait.until(lambda driver: "cat_inpainted.png" in driver.find_element(By.ID, "info").text)
    assert browser.execute_script(PAINTED, overlay) == 0
    Select(browser.find_element(By.ID, "model")).select_by_value("tiny_deepfill_v2")
    paint_stroke(browser, overlay, 0.2, 0.1, 0.4)
    second = run_and_read_result(browser)
    second_distance = stroke_distance(height, width, 0.2, 0.1, 0.4)
    untouched = second_distance > radius + 4
    np.testing.assert_array_equal(second[untouched], first[untouched])  # the first result, kept losslessly
    both_far = untouched & far
    np.testing.assert_array_equal(second[both_far], photo[both_far])
    near_second = second_distance < radius / 2
    assert np.any(second[near_second] != first[near_second])

    # DeepFill's stages are shown beside the result, at the size the network saw (its crop strategy runs the
    # stroke's crop at most at the model's working size).
    wait.until(lambda driver: driver.execute_script(
        "return Array.from(document.querySelectorAll('#stages img')).every((image) => image.complete)"))
    stages = browser.execute_script(
        "return Array.from(document.querySelectorAll('#stages figure')).map((figure) => "
        "[figure.querySelector('figcaption').textContent, figure.querySelector('img').naturalWidth])")
    assert [caption for caption, _ in stages] == ["coarse result", "attention flow"]
    assert stages[0][1] == stages[1][1] and 0 < stages[0][1] < width
    browser.save_screenshot(str(tmp_path / "serve_stages.png"))
