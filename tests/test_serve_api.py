"""HTTP API of ``tfinpaint serve`` through FastAPI's test client, a real uvicorn server and the command line:
every endpoint, every bad input, concurrent requests and a client that disconnects."""
import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tfinpaint.checkpoints import save_generator
from tfinpaint.inference import api
from tfinpaint.serve.app import create_app, declared_size, load_models, model_entry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLCIC_OPTIONS = {"cnum": 4, "dnum": 4, "image_size": 64}


def make_checkpoint(folder, name="glcic", options=GLCIC_OPTIONS):
    """A tiny randomly initialised checkpoint folder, as train.py writes it."""
    generator = api.build_generator(name, dict(options))
    save_generator(folder, generator, name, options)
    return folder


def png_bytes(array) -> bytes:
    array = np.asarray(array)
    ok, encoded = cv2.imencode(".png", array[:, :, ::-1] if array.ndim == 3 else array)
    assert ok
    return encoded.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


def photo(height=40, width=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def box_mask(height=40, width=56, box=(10, 25, 15, 40)):
    """uint8 mask file contents, white (255) = hole inside ``box`` (top, bottom, left, right)."""
    mask = np.zeros((height, width), np.uint8)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = 255
    return mask


class StubInpainter:
    """Fills holes with a known function of the image (255 - pixel), records its calls and how many overlap."""

    model_name = "stub"

    def __init__(self, seconds=0.0):
        self.seconds = seconds
        self.calls = []
        self.active = 0
        self.most_active = 0
        self._count_lock = threading.Lock()

    def __call__(self, image, mask, return_steps=False, mask_polarity=None):
        return self._run(image, mask, return_steps, mask_polarity, None)

    def _run(self, image, mask, return_steps, mask_polarity, hd_strategy):
        with self._count_lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.calls.append({"shape": image.shape, "polarity": mask_polarity, "hd_strategy": hd_strategy})
        try:
            time.sleep(self.seconds)
            result = image.copy()
            hole = np.asarray(mask) > 0.5
            result[hole] = 255 - image[hole]
        finally:
            with self._count_lock:
                self.active -= 1
        if return_steps:
            return result, {"coarse": np.full_like(image, 7), "output": result}
        return result


class StubWithStrategies(StubInpainter):
    hd_strategies = ("original", "crop", "resize")

    def __call__(self, image, mask, return_steps=False, mask_polarity=None, hd_strategy=None):
        return self._run(image, mask, return_steps, mask_polarity, hd_strategy)


def expected_stub_result(image, hole):
    result = image.copy()
    result[hole] = 255 - image[hole]
    return result


def post(client, image_data, mask_data, image_name="photo.png", mask_name="mask.png", **fields):
    files = {"image": (image_name, image_data, "application/octet-stream"),
             "mask": (mask_name, mask_data, "application/octet-stream")}
    return client.post("/api/v1/inpaint", files=files, data=fields)


def assert_one_line_error(response, status, *fragments):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail.strip() == detail
    for fragment in fragments:
        assert fragment in detail, detail
    return detail


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny_glcic")))


@pytest.fixture(scope="module")
def real_client(checkpoint):
    with TestClient(create_app(load_models([checkpoint]))) as client:
        yield client


@pytest.fixture()
def stub():
    return StubInpainter()


@pytest.fixture()
def stub_client(stub):
    with TestClient(create_app({"stub": stub}, max_pixels=10_000)) as client:
        yield client


# ---------------------------------------------------------------- endpoints


def test_health_and_models_list_every_loaded_checkpoint(checkpoint, tmp_path):
    # A second folder of the same name: the served names are made unique.
    second = make_checkpoint(str(tmp_path / os.path.basename(checkpoint)))
    with TestClient(create_app(load_models([checkpoint, second]), max_pixels=1234)) as client:
        assert client.get("/api/v1/health").json() == {"status": "ok", "models": 2}
        body = client.get("/api/v1/models").json()
    assert body["max_pixels"] == 1234
    name = os.path.basename(checkpoint)
    assert [model["name"] for model in body["models"]] == [name, name + "-2"]
    assert [model["checkpoint"] for model in body["models"]] == [checkpoint, second]
    for model in body["models"]:
        assert model["model"] == "glcic" and model["hd_strategies"][0] == "default"


def test_real_model_result_is_the_png_of_the_inpainter_with_known_pixels_kept(real_client, checkpoint):
    image, mask = photo(), box_mask()
    response = post(real_client, png_bytes(image), png_bytes(mask))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert "photo_inpainted.png" in response.headers["content-disposition"]
    assert "x-tfinpaint-warning" not in response.headers
    assert float(response.headers["x-tfinpaint-seconds"]) >= 0
    assert [part.split(";")[0] for part in response.headers["server-timing"].split(", ")] == \
        ["decode", "wait", "model", "encode"]
    result = decode_png(response.content)
    assert result.shape == image.shape
    hole = mask > 127
    np.testing.assert_array_equal(result[~hole], image[~hole])
    # The hole holds what the library's own Inpainter gives for the same input.
    direct = api.load(checkpoint)(image, hole.astype(np.float32))
    np.testing.assert_array_equal(result, direct)
    assert np.any(result[hole] != image[hole])


def test_jpeg_photo_known_pixels_equal_the_decoded_jpeg(real_client):
    ok, jpeg = cv2.imencode(".jpg", photo(48, 64, seed=3)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1]
    mask = box_mask(48, 64, (5, 20, 30, 60))
    response = post(real_client, jpeg.tobytes(), png_bytes(mask), image_name="holiday.jpg")
    assert response.status_code == 200
    result = decode_png(response.content)
    np.testing.assert_array_equal(result[mask == 0], decoded[mask == 0])


def test_valid_polarity_reads_white_as_known(stub_client, stub):
    image, mask = photo(), box_mask()
    response = post(stub_client, png_bytes(image), png_bytes(255 - mask), mask_polarity="valid")
    assert response.status_code == 200
    np.testing.assert_array_equal(decode_png(response.content), expected_stub_result(image, mask > 127))
    # The polarity was applied once, by the server: the inpainter got a 1 = hole array.
    assert stub.calls[-1]["polarity"] == "hole"


def test_page_and_its_assets_are_served_locally_and_name_no_other_host(stub_client):
    page = stub_client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    local = [asset for asset in assets if not asset.startswith("data:")]
    assert "/static/app.js" in local and "/static/style.css" in local
    texts = [page.text]
    for asset in local:
        assert asset.startswith("/static/"), asset
        response = stub_client.get(asset)
        assert response.status_code == 200, asset
        texts.append(response.text)
    for text in texts:
        assert not re.search(r"https?://|//cdn|@import", text), "the page must load nothing from the network"
    # FastAPI's interactive docs would pull their scripts from a CDN: they are off.
    assert stub_client.get("/docs").status_code == 404
    assert stub_client.get("/redoc").status_code == 404


# ---------------------------------------------------------------- bad input


def test_not_an_image_is_refused_with_a_one_line_error_naming_the_file(stub_client):
    response = post(stub_client, b"this is a text file, not a picture", png_bytes(box_mask()),
                    image_name="notes.txt")
    assert_one_line_error(response, 400, "notes.txt")


@pytest.mark.parametrize("kind", ["png", "jpg"])
def test_truncated_image_is_refused(stub_client, kind):
    ok, encoded = cv2.imencode(f".{kind}", photo()[:, :, ::-1])
    data = encoded.tobytes()
    response = post(stub_client, data[: len(data) * 2 // 3], png_bytes(box_mask()), image_name=f"cut.{kind}")
    assert_one_line_error(response, 400, f"cut.{kind}", "truncated")


def test_truncated_mask_is_refused(stub_client):
    data = png_bytes(box_mask())
    response = post(stub_client, png_bytes(photo()), data[:-20], mask_name="half.png")
    assert_one_line_error(response, 400, "half.png", "truncated")


def test_empty_upload_is_refused(stub_client):
    assert_one_line_error(post(stub_client, b"", png_bytes(box_mask()), image_name="zero.png"), 400,
                          "zero.png", "empty")


def test_image_over_the_pixel_limit_is_refused(stub_client, stub):
    # The stub app accepts 10,000 pixels: 101 x 100 is one row too many.
    response = post(stub_client, png_bytes(photo(101, 100)), png_bytes(box_mask(101, 100)), image_name="big.png")
    assert_one_line_error(response, 413, "big.png", "limit")
    assert not stub.calls


def test_pixel_limit_is_checked_from_the_header_before_decoding(stub_client):
    # A PNG that declares 60000 x 60000 pixels (a decompression bomb) is refused from its header alone.
    header = bytearray(png_bytes(photo(8, 8))[:33])
    header[16:24] = (60000).to_bytes(4, "big") * 2
    assert declared_size(bytes(header)) == (60000, 60000)
    response = post(stub_client, bytes(header), png_bytes(box_mask()), image_name="bomb.png")
    assert_one_line_error(response, 413, "bomb.png", "3,600,000,000 pixels", "10,000")


def test_declared_size_reads_jpeg_frames():
    ok, jpeg = cv2.imencode(".jpg", photo(37, 53)[:, :, ::-1])
    assert declared_size(jpeg.tobytes()) == (37, 53)
    assert declared_size(b"BM not a png or jpeg") is None


def test_mask_of_another_size_is_resized_with_a_warning(stub_client):
    image = photo(40, 56)
    small_mask = box_mask(20, 28, (5, 12, 7, 20))
    response = post(stub_client, png_bytes(image), png_bytes(small_mask), mask_name="small.png")
    assert response.status_code == 200
    warning = response.headers["x-tfinpaint-warning"]
    assert "small.png" in warning and "resized" in warning and "56x40" in warning
    hole = cv2.resize(small_mask, (56, 40), interpolation=cv2.INTER_NEAREST) > 127
    np.testing.assert_array_equal(decode_png(response.content), expected_stub_result(image, hole))


def test_empty_mask_returns_the_image_unchanged(real_client):
    image = photo()
    response = post(real_client, png_bytes(image), png_bytes(np.zeros((40, 56), np.uint8)))
    assert response.status_code == 200
    assert "no hole pixels" in response.headers["x-tfinpaint-warning"]
    np.testing.assert_array_equal(decode_png(response.content), image)


def test_unknown_model_bad_polarity_and_missing_field_are_refused(stub_client):
    image, mask = png_bytes(photo()), png_bytes(box_mask())
    assert_one_line_error(post(stub_client, image, mask, model="deepfill_v9"), 400, "deepfill_v9", "stub")
    assert_one_line_error(post(stub_client, image, mask, mask_polarity="black"), 400, "black", "hole", "valid")
    missing = stub_client.post("/api/v1/inpaint", files={"image": ("photo.png", image, "image/png")})
    assert_one_line_error(missing, 422, "mask")
    assert_one_line_error(stub_client.get("/api/v1/results/nope/coarse.png"), 404, "nope")


def test_server_keeps_serving_after_bad_requests(stub_client):
    post(stub_client, b"junk", b"junk")
    post(stub_client, png_bytes(photo()), png_bytes(box_mask()), model="missing")
    assert stub_client.get("/api/v1/health").json()["status"] == "ok"
    assert post(stub_client, png_bytes(photo()), png_bytes(box_mask())).status_code == 200


def test_inpainter_error_is_a_one_line_400():
    class Failing(StubInpainter):
        def __call__(self, image, mask, return_steps=False, mask_polarity=None):
            raise ValueError("image must be at least 8 pixels\nwide")

    with TestClient(create_app({"failing": Failing()})) as client:
        response = post(client, png_bytes(photo()), png_bytes(box_mask()))
        assert_one_line_error(response, 400, "at least 8 pixels wide")
        assert client.get("/api/v1/health").status_code == 200


def test_model_failure_is_a_one_line_500_and_the_model_stays_usable():
    class Flaky(StubInpainter):
        def __call__(self, image, mask, return_steps=False, mask_polarity=None):
            if not self.calls:
                self.calls.append("failed")
                raise RuntimeError("out of memory\nin the attention layer")
            return super().__call__(image, mask, return_steps, mask_polarity)

    image, mask = photo(), box_mask()
    with TestClient(create_app({"flaky": Flaky()}), raise_server_exceptions=False) as client:
        assert_one_line_error(post(client, png_bytes(image), png_bytes(mask)), 500, "RuntimeError",
                              "out of memory in the attention layer")
        # The lock was released: the next request runs.
        response = post(client, png_bytes(image), png_bytes(mask))
        assert response.status_code == 200
        np.testing.assert_array_equal(decode_png(response.content), expected_stub_result(image, mask > 127))


# ---------------------------------------------------------------- strategies and stages


def test_hd_strategy_is_passed_through_only_to_inpainters_that_take_it():
    plain, strategic = StubInpainter(), StubWithStrategies()
    app = create_app([model_entry("plain", plain), model_entry("strategic", strategic)])
    image, mask = png_bytes(photo()), png_bytes(box_mask())
    with TestClient(app) as client:
        listed = {model["name"]: model["hd_strategies"] for model in client.get("/api/v1/models").json()["models"]}
        assert listed == {"plain": ["default"], "strategic": ["default", "original", "crop", "resize"]}
        assert post(client, image, mask, model="strategic", hd_strategy="crop").status_code == 200
        assert post(client, image, mask, model="strategic").status_code == 200
        assert post(client, image, mask, model="plain").status_code == 200
        assert_one_line_error(post(client, image, mask, model="plain", hd_strategy="crop"), 400, "crop")
        assert_one_line_error(post(client, image, mask, model="strategic", hd_strategy="tiles"), 400, "tiles",
                              "resize")
    assert [call["hd_strategy"] for call in strategic.calls] == ["crop", None]
    assert len(plain.calls) == 1


def test_stages_are_kept_for_the_page(stub_client):
    image = photo()
    response = post(stub_client, png_bytes(image), png_bytes(box_mask()), stages="true")
    assert response.status_code == 200
    assert response.headers["x-tfinpaint-stages"] == "coarse"
    result_id = response.headers["x-tfinpaint-result-id"]
    coarse = stub_client.get(f"/api/v1/results/{result_id}/coarse.png")
    assert coarse.status_code == 200
    np.testing.assert_array_equal(decode_png(coarse.content), np.full_like(image, 7))
    assert_one_line_error(stub_client.get(f"/api/v1/results/{result_id}/flow.png"), 404, "flow")
    plain = post(stub_client, png_bytes(image), png_bytes(box_mask()))
    assert "x-tfinpaint-result-id" not in plain.headers


# ---------------------------------------------------------------- concurrency


def test_concurrent_requests_run_one_at_a_time_and_get_their_own_results():
    stub = StubInpainter(seconds=0.3)
    images = [photo(40, 56, seed=1), photo(32, 48, seed=2), photo(40, 56, seed=3)]
    masks = [box_mask(40, 56, (0, 10, 0, 10)), box_mask(32, 48, (20, 32, 30, 48)), box_mask(40, 56, (5, 30, 5, 50))]
    with TestClient(create_app({"stub": stub})) as client:
        with concurrent.futures.ThreadPoolExecutor(len(images)) as pool:
            futures = [pool.submit(post, client, png_bytes(image), png_bytes(mask), image_name=f"p{index}.png")
                       for index, (image, mask) in enumerate(zip(images, masks))]
            responses = [future.result() for future in futures]
    for image, mask, response in zip(images, masks, responses):
        assert response.status_code == 200
        np.testing.assert_array_equal(decode_png(response.content), expected_stub_result(image, mask > 127))
    assert len(stub.calls) == 3 and stub.most_active == 1


# ---------------------------------------------------------------- a real server, a client that disconnects


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_request(port, image_data, mask_data) -> bytes:
    boundary = "tfinpaintboundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        for name, data in (("image", image_data), ("mask", mask_data))) + f"--{boundary}--\r\n".encode()
    head = (f"POST /api/v1/inpaint HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def test_clients_that_disconnect_do_not_leave_the_server_stuck():
    import httpx
    import uvicorn

    stub = StubInpainter(seconds=2.5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app({"stub": stub}), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        request = raw_request(port, png_bytes(photo()), png_bytes(box_mask()))
        # A: gone while the model runs it. B: gone while it waits for the model, so it never runs.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request)
            while not stub.calls:
                assert time.time() < deadline, "the first request never reached the model"
                time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request)
            time.sleep(0.3)
        response = httpx.post(f"http://127.0.0.1:{port}/api/v1/inpaint", timeout=30,
                              files={"image": ("p.png", png_bytes(photo()), "image/png"),
                                     "mask": ("m.png", png_bytes(box_mask()), "image/png")})
        assert response.status_code == 200
        np.testing.assert_array_equal(decode_png(response.content),
                                      expected_stub_result(photo(), box_mask() > 127))
        # B, had it been kept, could get the model after C: give it the time to show up.
        time.sleep(stub.seconds + 1.0)
        assert len(stub.calls) == 2, "the request whose client left before its turn must not run"
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10).json()["status"] == "ok"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# ---------------------------------------------------------------- the command line


def run_cli(*args, prelude=""):
    code = prelude + "import sys; from tfinpaint.cli import main; main(['tfinpaint', 'serve', *sys.argv[1:]])"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_cli_usage_errors_are_one_line(tmp_path):
    missing = run_cli()
    assert missing.returncode != 0 and missing.stderr.strip() == \
        "serve: give at least one checkpoint folder with --gpath CKPT"
    bad = run_cli("--gpath", str(tmp_path / "nowhere"))
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("serve: ") and "nowhere" in last and "Traceback" not in bad.stderr


def test_cli_names_the_extra_when_fastapi_is_missing():
    # A finder that refuses fastapi stands for an environment without the serve extra.
    prelude = ("import importlib.abc, sys\n"
               "class Refuse(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'fastapi': raise ModuleNotFoundError(name)\n"
               "sys.meta_path.insert(0, Refuse())\n")
    result = run_cli("--gpath", "anything", prelude=prelude)
    assert result.returncode != 0
    assert result.stderr.strip() == 'serve: needs fastapi; install them with: pip install "tfinpaint[serve]"'
