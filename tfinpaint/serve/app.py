"""The FastAPI application behind ``tfinpaint serve``: the painting page and the HTTP API.

API (all errors are 4xx JSON ``{"detail": "<one line>"}``; the server keeps serving):

* ``GET /api/v1/health``: ``{"status": "ok", "models": N}``.
* ``GET /api/v1/models``: the loaded models, their high-resolution strategies and the pixel limit.
* ``POST /api/v1/inpaint``: multipart ``image`` and ``mask`` files, optional fields ``model`` (default: the first
  one), ``hd_strategy`` ("default" or one the model lists), ``mask_polarity`` ("hole": white = hole, or "valid":
  white = known) and ``stages`` (true: keep the model's intermediate stages for ``/api/v1/results``). Returns the
  completed image as PNG. Response headers: ``X-Tfinpaint-Warning`` (a mask of another size was resized, an empty
  mask returned the image unchanged), ``X-Tfinpaint-Seconds`` (the model's time), ``Server-Timing`` (decode, wait for
  the model, model, encode), ``X-Tfinpaint-Result-Id`` and ``X-Tfinpaint-Stages``.
* ``GET /api/v1/results/{result_id}/{stage}.png``: a stage ("coarse", "flow") of a recent result.

Each model runs one request at a time (a lock); decoding and encoding run outside it. A request whose client
disconnects while it waits for the model is dropped without running it.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import os
import re
import struct
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from tfinpaint import imageio, masks

DEFAULT_MAX_PIXELS = 50_000_000
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# Stages the page can show next to the result, in display order.
STAGE_NAMES = ("coarse", "flow")
# Results whose stages stay available to /api/v1/results (each holds its stages as PNG bytes).
KEPT_RESULTS = 8
# How often a request waiting for its model checks whether its client is still there.
POLL_SECONDS = 0.2


class BadInput(Exception):
    """A request the server refuses; ``message`` is one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client disconnected before its request reached the model."""


@dataclass
class ModelEntry:
    """A loaded model as the server offers it."""

    name: str
    inpainter: object
    checkpoint: str | None = None
    # None: the inpainter takes no ``hd_strategy`` (only "default" is accepted); () : it takes one but does not list
    # its choices (the inpainter validates the name).
    hd_strategies: tuple | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_type(self) -> str:
        return getattr(self.inpainter, "model_name", type(self.inpainter).__name__)

    def describe(self) -> dict:
        return {"name": self.name, "model": self.model_type, "checkpoint": self.checkpoint,
                "hd_strategies": ["default", *(self.hd_strategies or ())]}


def model_entry(name: str, inpainter, checkpoint: str | None = None) -> ModelEntry:
    """Wraps an ``Inpainter`` (or anything called like one), looking once at whether it takes ``hd_strategy``."""
    listed = getattr(inpainter, "hd_strategies", None)
    try:
        takes_hd = "hd_strategy" in inspect.signature(inpainter.__call__).parameters
    except (TypeError, ValueError):
        takes_hd = False
    if listed is not None:
        strategies = tuple(str(name) for name in listed if str(name) != "default")
    else:
        strategies = () if takes_hd else None
    return ModelEntry(name=name, inpainter=inpainter, checkpoint=checkpoint, hd_strategies=strategies)


def load_models(checkpoints, **load_options) -> list:
    """Loads every checkpoint folder once (``tfinpaint.load``); names are the folders' names, made unique."""
    import tfinpaint

    entries, taken = [], set()
    for checkpoint in checkpoints:
        base = os.path.basename(os.path.normpath(checkpoint)) or "model"
        name, suffix = base, 2
        while name in taken:
            name, suffix = f"{base}-{suffix}", suffix + 1
        taken.add(name)
        entries.append(model_entry(name, tfinpaint.load(checkpoint, **load_options), checkpoint=checkpoint))
    return entries


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _header_text(text: str) -> str:
    # HTTP header values are latin-1; keep them plain ASCII.
    return _one_line(text).encode("ascii", "replace").decode("ascii")


def _upload_label(upload_name: str | None, fallback: str) -> str:
    name = os.path.basename((upload_name or "").replace("\\", "/"))
    name = re.sub(r"[^\w.\- ]", "_", name)[:100].strip()
    return name if name.strip(".") else fallback


def declared_size(data: bytes):
    """(height, width) from a PNG or JPEG header without decoding the pixels, else None, so that an image over
    the limit is refused before it takes memory."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data.startswith(b"\xff\xd8"):
        offset = 2
        while offset + 9 <= len(data):
            if data[offset] != 0xFF:
                return None
            marker = data[offset + 1]
            if marker == 0xFF:  # fill byte
                offset += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                offset += 2
                continue
            (length,) = struct.unpack(">H", data[offset + 2: offset + 4])
            # Start-of-frame markers (all but DHT, JPG and DAC) carry the frame's height and width.
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[offset + 5: offset + 9])
                return height, width
            offset += 2 + length
    return None


def _check_pixels(shape, label: str, max_pixels: int) -> None:
    height, width = int(shape[0]), int(shape[1])
    if height * width > max_pixels:
        raise BadInput(413, f"{label}: {width}x{height} is {height * width:,} pixels, over the server's limit of "
                            f"{max_pixels:,} pixels")


def _read_upload(data: bytes, label: str, reader):
    """Runs a file reader of the library on the uploaded bytes, so that uploads get exactly the checks files get
    (truncated PNG / JPEG, corrupt data); its one-line error names the upload instead of the temporary file."""
    with tempfile.TemporaryDirectory(prefix="tfinpaint-serve-") as folder:
        path = os.path.join(folder, label)
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            return reader(path)
        except ValueError as error:  # ImageReadError and MaskReadError are ValueErrors
            raise BadInput(400, _one_line(str(error).replace(path, label))) from None


def decode_image(data: bytes, upload_name: str | None, max_pixels: int) -> np.ndarray:
    label = _upload_label(upload_name, "image")
    if not data:
        raise BadInput(400, f"image {label}: empty file")
    size = declared_size(data)
    if size is not None:
        _check_pixels(size, f"image {label}", max_pixels)
    image = _read_upload(data, label, imageio.read_image)
    _check_pixels(image.shape, f"image {label}", max_pixels)
    return image


def decode_mask(data: bytes, upload_name: str | None, shape, polarity: str, max_pixels: int, warnings: list):
    """The mask as float32 1 = hole at the image's size (another size is resized, nearest, with a warning)."""
    label = _upload_label(upload_name, "mask")
    if not data:
        raise BadInput(400, f"mask {label}: empty file")
    size = declared_size(data)
    if size is not None:
        _check_pixels(size, f"mask {label}", max_pixels)
    hole = _read_upload(data, label, functools.partial(masks.read_mask, polarity=polarity))
    height, width = shape[:2]
    if hole.shape != (height, width):
        warnings.append(f"mask {label} is {hole.shape[1]}x{hole.shape[0]}, resized to the image's {width}x{height} "
                        "(nearest neighbour)")
        hole = cv2.resize(hole, (width, height), interpolation=cv2.INTER_NEAREST)
    return hole


def encode_png(rgb: np.ndarray) -> bytes:
    # Level 1 with run-length strategy: on a 24 MP photo, faster than the default level and smaller files.
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]),
                               [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                                cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:
        raise RuntimeError("cannot encode the result as PNG")
    return encoded.tobytes()


@dataclass
class _Job:
    entry: ModelEntry
    image_data: bytes
    image_name: str | None
    mask_data: bytes
    mask_name: str | None
    polarity: str
    hd_strategy: str
    stages: bool
    max_pixels: int
    cancelled: threading.Event = field(default_factory=threading.Event)


def _run_job(job: _Job) -> dict:
    """Decodes, inpaints under the model's lock and encodes; runs in a worker thread."""
    warnings = []
    started = time.perf_counter()
    image = decode_image(job.image_data, job.image_name, job.max_pixels)
    hole = decode_mask(job.mask_data, job.mask_name, image.shape, job.polarity, job.max_pixels, warnings)
    if not hole.any():
        warnings.append(f"mask {_upload_label(job.mask_name, 'mask')} has no hole pixels: the image is returned "
                        "unchanged")
    options = {} if job.hd_strategy == "default" else {"hd_strategy": job.hd_strategy}
    decoded = time.perf_counter()
    while not job.entry.lock.acquire(timeout=POLL_SECONDS):
        if job.cancelled.is_set():
            raise ClientGone()
    try:
        if job.cancelled.is_set():
            raise ClientGone()
        acquired = time.perf_counter()
        try:
            # The mask is already 1 = hole: the polarity was applied once, when it was read.
            output = job.entry.inpainter(image, hole, return_steps=job.stages, mask_polarity="hole", **options)
        except ValueError as error:
            raise BadInput(400, _one_line(error)) from None
        inpainted = time.perf_counter()
    finally:
        job.entry.lock.release()
    result, steps = output if job.stages else (output, {})
    stages = {name: encode_png(steps[name]) for name in STAGE_NAMES if name in steps}
    png = encode_png(result)
    timings = {"decode": decoded - started, "wait": acquired - decoded, "model": inpainted - acquired,
               "encode": time.perf_counter() - inpainted}
    return {"png": png, "stages": stages, "warnings": warnings, "timings": timings}


def create_app(models, max_pixels: int = DEFAULT_MAX_PIXELS) -> FastAPI:
    """The application serving ``models`` (``ModelEntry`` list, or a {name: inpainter} dict).

    ``max_pixels``: largest image (and mask) accepted, in pixels; larger ones get 413.
    """
    if isinstance(models, dict):
        models = [model_entry(name, inpainter) for name, inpainter in models.items()]
    entries = {entry.name: entry for entry in models}
    if not entries:
        raise ValueError("serve: no models to serve")
    max_pixels = int(max_pixels)
    results = collections.OrderedDict()  # result id -> {stage: PNG bytes}, the most recent last
    results_lock = threading.Lock()
    pending = set()  # requests abandoned by their clients, kept referenced until their worker ends

    # FastAPI's interactive docs load their scripts from a CDN: they are switched off (the page must work offline).
    app = FastAPI(title="tfinpaint", docs_url=None, redoc_url=None, openapi_url="/api/v1/openapi.json")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, error: BadInput):
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, error: RequestValidationError):
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return JSONResponse({"detail": _one_line("; ".join(problems) or "invalid request")}, status_code=422)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, error: Exception):
        return JSONResponse({"detail": _one_line(f"server error: {type(error).__name__}: {error}")},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html")

    @app.get("/api/v1/health")
    async def health():
        return {"status": "ok", "models": len(entries)}

    @app.get("/api/v1/models")
    async def list_models():
        return {"models": [entry.describe() for entry in entries.values()], "max_pixels": max_pixels}

    @app.post("/api/v1/inpaint")
    async def inpaint(request: Request, image: Annotated[UploadFile, File()], mask: Annotated[UploadFile, File()],
                      model: Annotated[str | None, Form()] = None, hd_strategy: Annotated[str, Form()] = "default",
                      mask_polarity: Annotated[str, Form()] = "hole", stages: Annotated[bool, Form()] = False):
        name = model or next(iter(entries))
        if name not in entries:
            raise BadInput(400, f"unknown model {name!r} (available: {', '.join(entries)})")
        entry = entries[name]
        if mask_polarity not in masks.POLARITIES:
            raise BadInput(400, f"mask_polarity must be one of {', '.join(masks.POLARITIES)}, got {mask_polarity!r}")
        if hd_strategy != "default":
            if entry.hd_strategies is None:
                raise BadInput(400, f"model {name!r} has only the default high-resolution strategy "
                                    f"(got {hd_strategy!r})")
            if entry.hd_strategies and hd_strategy not in entry.hd_strategies:
                raise BadInput(400, f"model {name!r} has no high-resolution strategy {hd_strategy!r} (choices: "
                                    f"{', '.join(['default', *entry.hd_strategies])})")
        job = _Job(entry=entry, image_data=await image.read(), image_name=image.filename,
                   mask_data=await mask.read(), mask_name=mask.filename, polarity=mask_polarity,
                   hd_strategy=hd_strategy, stages=stages, max_pixels=max_pixels)
        work = asyncio.ensure_future(run_in_threadpool(_run_job, job))
        while True:
            done, _ = await asyncio.wait({work}, timeout=POLL_SECONDS)
            if done:
                break
            if await request.is_disconnected():
                # Nobody will read the answer: a job still waiting for the model gives up; one already running
                # finishes and releases the model.
                job.cancelled.set()
                pending.add(work)
                work.add_done_callback(_forget)
                return Response(status_code=499)
        try:
            outcome = work.result()
        except ClientGone:
            return Response(status_code=499)
        timings = outcome["timings"]
        headers = {"X-Tfinpaint-Seconds": f"{timings['model']:.3f}",
                   "Server-Timing": ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in timings.items())}
        if outcome["warnings"]:
            headers["X-Tfinpaint-Warning"] = _header_text("; ".join(outcome["warnings"]))
        if outcome["stages"]:
            result_id = uuid.uuid4().hex
            with results_lock:
                results[result_id] = outcome["stages"]
                while len(results) > KEPT_RESULTS:
                    results.popitem(last=False)
            headers["X-Tfinpaint-Result-Id"] = result_id
            headers["X-Tfinpaint-Stages"] = ",".join(outcome["stages"])
        stem = os.path.splitext(_upload_label(image.filename, "image"))[0]
        headers["Content-Disposition"] = f'inline; filename="{_header_text(stem)}_inpainted.png"'
        return Response(outcome["png"], media_type="image/png", headers=headers)

    def _forget(work):
        pending.discard(work)
        if not work.cancelled():
            work.exception()  # retrieved, so that asyncio does not log "exception never retrieved"

    @app.get("/api/v1/results/{result_id}/{stage}.png")
    async def result_stage(result_id: str, stage: str):
        with results_lock:
            stored = results.get(result_id)
        if stored is None:
            raise BadInput(404, f"no result {result_id!r} (only the last {KEPT_RESULTS} results with stages are kept)")
        if stage not in stored:
            raise BadInput(404, f"result {result_id!r} has no stage {stage!r} (it has: {', '.join(stored) or 'none'})")
        return Response(stored[stage], media_type="image/png")

    return app
