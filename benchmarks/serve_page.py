"""The ``tfinpaint serve`` page on a large photo in headless Chromium: prints how long opening, inpainting and
reading back the result take, the server's peak memory, and checks that the known pixels came back unchanged.

    python benchmarks/serve_page.py                      # 24 MP (6000 x 4000), a GLCIC at cnum 8, random weights
    python benchmarks/serve_page.py --gpath CKPT --width 4000 --height 3000

Needs the ``serve`` extra, selenium, and Debian's chromium and chromium-driver.
"""
from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_photo(path: str, width: int, height: int) -> np.ndarray:
    from skimage import data

    photo = cv2.resize(data.chelsea(), (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(path, photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]


def make_checkpoint(folder: str) -> str:
    from tfinpaint.checkpoints import save_generator
    from tfinpaint.inference.api import build_generator

    options = {"cnum": 8, "dnum": 8, "image_size": 128}
    save_generator(folder, build_generator("glcic", dict(options)), "glcic", options)
    return folder


def start_server(checkpoint: str, port: int, log_path: str):
    import httpx

    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "-m", "tfinpaint", "serve", "--gpath", checkpoint, "--port", str(port)],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the server did not start; see {log_path}")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpath", help="checkpoint folder (default: a GLCIC at cnum 8 with random weights)")
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("SE_OFFLINE", "true")

    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    work = tempfile.mkdtemp(prefix="tfinpaint-serve-bench-")
    photo_path = os.path.join(work, "photo.jpg")
    photo = make_photo(photo_path, args.width, args.height)
    checkpoint = args.gpath or make_checkpoint(os.path.join(work, "glcic_cnum8"))
    port = free_port()
    server = start_server(checkpoint, port, os.path.join(work, "server.log"))
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={os.path.join(work, 'profile')}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
    driver.set_script_timeout(600)
    try:
        wait = WebDriverWait(driver, 600)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        started = time.perf_counter()
        driver.find_element(By.ID, "image-input").send_keys(photo_path)
        wait.until(lambda d: f"{args.width} x {args.height}" in d.find_element(By.ID, "info").text)
        opened = time.perf_counter() - started

        overlay = driver.find_element(By.ID, "overlay")
        view_width = driver.execute_script("return arguments[0].getBoundingClientRect().width", overlay)
        actions = ActionChains(driver).move_to_element_with_offset(overlay, int(-0.15 * view_width), 0)
        actions.click_and_hold()
        for step in range(1, 11):
            actions.move_to_element_with_offset(overlay, int((-0.15 + 0.03 * step) * view_width), 0)
        actions.release().perform()

        started = time.perf_counter()
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: "done in" in d.find_element(By.ID, "elapsed").text
                   or "failed" in d.find_element(By.ID, "message").text)
        round_trip = time.perf_counter() - started
        shown = driver.find_element(By.ID, "elapsed").text
        breakdown = driver.find_element(By.ID, "elapsed").get_attribute("title")
        if "done in" not in shown:
            raise SystemExit(f"inpainting failed: {driver.find_element(By.ID, 'message').text}")

        started = time.perf_counter()
        encoded = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch(document.getElementById("download").href).then((r) => r.blob()).then((blob) => {
              const reader = new FileReader();
              reader.onload = () => done(reader.result.split(",")[1]);
              reader.readAsDataURL(blob);
            });""")
        read_back = time.perf_counter() - started
        result = cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        changed = np.any(result != photo, axis=2)
        rows, cols = np.nonzero(changed)
        print(f"photo: {args.width} x {args.height} ({args.width * args.height / 1e6:.1f} MP), "
              f"{os.path.getsize(photo_path) / 1e6:.1f} MB JPEG; checkpoint {checkpoint}")
        print(f"open in the page: {opened:.2f} s")
        print(f"inpaint, click to result shown: {round_trip:.2f} s (page: {shown}; {breakdown})")
        print(f"result PNG: {len(encoded) * 3 / 4 / 1e6:.1f} MB, read back through webdriver in {read_back:.2f} s")
        print(f"result size matches the photo: {result.shape == photo.shape}; changed pixels: {changed.sum()} "
              f"in rows {rows.min()}-{rows.max()}, columns {cols.min()}-{cols.max()} (the stroke's area only)")
        print(f"server peak RSS: {peak_rss_mb(server.pid):.0f} MB")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
