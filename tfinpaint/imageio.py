"""Reading and writing photos with clear one-line errors.

Everything the library hands to a model is RGB ``uint8``: grayscale is replicated to three channels, an alpha
channel is dropped, 16-bit images are scaled to 8 bits. Truncated PNG / JPEG files are rejected even where
OpenCV would silently return a partially decoded picture.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageReadError(ValueError):
    """A file that is missing, truncated, corrupt or not an image. The message is one line naming the file."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_problem(data: bytes):
    """Walks the PNG chunk list (length, type, payload, CRC) up to IEND; returns what is wrong, if anything.

    OpenCV decodes a truncated PNG partially or not at all depending on where it was cut, so truncation
    is detected here from the bytes rather than from the decoder.
    """
    offset = len(_PNG_SIGNATURE)
    while True:
        if offset + 8 > len(data):
            return "truncated PNG (no IEND chunk)"
        length, chunk_type = struct.unpack(">I4s", data[offset: offset + 8])
        end = offset + 8 + length + 4
        if end > len(data):
            return f"truncated PNG (chunk {chunk_type!r} cut short)"
        (crc,) = struct.unpack(">I", data[end - 4: end])
        if zlib.crc32(data[offset + 4: end - 4]) != crc:
            return f"corrupt PNG (bad CRC in chunk {chunk_type!r})"
        if chunk_type == b"IEND":
            return None
        offset = end


def _jpeg_problem(data: bytes):
    # The main image's end-of-image marker must follow its last start-of-scan marker (an EXIF thumbnail
    # has its own EOI earlier in the file, so a plain "EOI anywhere" check would miss truncation).
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        return "truncated JPEG (no end-of-image marker)"
    return None


def read_bytes_checked(path) -> bytes:
    """Reads ``path`` and rejects truncated or corrupt PNG / JPEG files (OpenCV alone may silently return a
    partially decoded picture)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: not a file")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read file ({error.strerror or error})") from None
    if not data:
        raise ImageReadError(f"{path}: empty file")
    problem = None
    if data.startswith(_PNG_SIGNATURE):
        problem = _png_problem(data)
    elif data.startswith(b"\xff\xd8"):
        problem = _jpeg_problem(data)
    if problem is not None:
        raise ImageReadError(f"{path}: {problem}")
    return data


def decode_unchanged(path) -> np.ndarray:
    """Decodes ``path`` with all channels and bit depth kept (cv2 order: BGR / BGRA)."""
    data = read_bytes_checked(path)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageReadError(f"{os.fspath(path)}: not a decodable image")
    return decoded


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scales 16-bit and float images to ``uint8`` (floats are taken as [0, 1])."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def read_image(path) -> np.ndarray:
    """Reads an image file as RGB ``uint8`` [H, W, 3]."""
    decoded = to_uint8(decode_unchanged(path))
    if decoded.ndim == 2:
        return np.repeat(decoded[:, :, None], 3, axis=2)
    channels = decoded.shape[2]
    if channels == 1:
        return np.repeat(decoded, 3, axis=2)
    if channels in (3, 4):
        # The alpha channel carries no colour: drop it (the hole is given by the mask, not by transparency).
        return np.ascontiguousarray(decoded[:, :, 2::-1])
    raise ImageReadError(f"{os.fspath(path)}: unsupported channel count {channels}")


def write_image(path, rgb: np.ndarray, overwrite: bool = True) -> None:
    """Writes RGB ``uint8`` to ``path`` (format from the extension) atomically: a crash never leaves a partial
    file, and an existing file is replaced only once the new one is complete."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path}: exists (pass overwrite to replace it)")
    extension = os.path.splitext(path)[1].lower() or ".png"
    array = np.asarray(rgb)
    if array.ndim == 3:
        array = array[:, :, ::-1]
    ok, encoded = cv2.imencode(extension, np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"{path}: cannot encode an image with extension {extension!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=extension)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(encoded.tobytes())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def list_image_files(source) -> list:
    """Image files of a folder (recursive, sorted) or of a text file listing one path per line.

    Raises a one-line ``ValueError`` for a missing source or one without images.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(source)
            for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        )
    elif os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        with open(source, encoding="utf-8") as handle:
            entries = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        files = [entry if os.path.isabs(entry) else os.path.join(base, entry) for entry in entries]
    else:
        raise ValueError(f"{source}: no such folder or file list")
    if not files:
        raise ValueError(f"{source}: contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files
