"""Reading and writing photos with clear one-line errors.

Reading: images come upright, as viewers display them (the EXIF orientation 1-8 of JPEG and PNG files is
applied), for images and masks alike. ``read_image`` hands a model RGB ``uint8``: grayscale is replicated to
three channels, an alpha channel is set aside, 16-bit images are scaled to 8 bits. ``read_photo`` also keeps
what the file had beyond that (native bit depth, alpha, the EXIF block), so that ``compose`` and
``write_image`` can give it back. Truncated PNG / JPEG files are rejected even where OpenCV would silently
return a partially decoded picture.

Writing: PNG keeps 8 or 16 bits and alpha; JPEG is 8-bit without alpha and re-encodes every pixel (lossy).
An EXIF block is written into JPEG (APP1) and PNG (eXIf) files, with its orientation reset to 1 because the
pixels are written upright. Files appear complete or not at all, with the permissions the umask gives.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
DEFAULT_JPEG_QUALITY = 95


class ImageReadError(ValueError):
    """A file that is missing, truncated, corrupt or not an image. The message is one line naming the file."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112


def _png_chunks(data: bytes):
    """Yields (type, payload, start offset) of each PNG chunk up to IEND; raises ValueError saying what is wrong.

    OpenCV decodes a truncated PNG partially or not at all depending on where it was cut, so truncation
    is detected here from the bytes rather than from the decoder.
    """
    offset = len(_PNG_SIGNATURE)
    while True:
        if offset + 8 > len(data):
            raise ValueError("truncated PNG (no IEND chunk)")
        length, chunk_type = struct.unpack(">I4s", data[offset: offset + 8])
        end = offset + 8 + length + 4
        if end > len(data):
            raise ValueError(f"truncated PNG (chunk {chunk_type!r} cut short)")
        (crc,) = struct.unpack(">I", data[end - 4: end])
        if zlib.crc32(data[offset + 4: end - 4]) != crc:
            raise ValueError(f"corrupt PNG (bad CRC in chunk {chunk_type!r})")
        yield chunk_type, data[offset + 8: end - 4], offset
        if chunk_type == b"IEND":
            return
        offset = end


def _png_problem(data: bytes):
    try:
        for _ in _png_chunks(data):
            pass
    except ValueError as error:
        return str(error)
    return None


def _jpeg_problem(data: bytes):
    # The main image's end-of-image marker must follow its last start-of-scan marker (an EXIF thumbnail
    # has its own EOI earlier in the file, so a plain "EOI anywhere" check would miss truncation).
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        return "truncated JPEG (no end-of-image marker)"
    return None


def _jpeg_segments(data: bytes):
    """Yields (marker, payload, start offset) of the JPEG header segments, up to the first start of scan."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            offset += 2
            continue
        if marker in (0xD9, 0xDA):
            return
        (length,) = struct.unpack(">H", data[offset + 2: offset + 4])
        yield marker, data[offset + 4: offset + 2 + length], offset
        offset += 2 + length


def exif_block(data: bytes) -> bytes | None:
    """The EXIF (TIFF) block of an encoded JPEG (APP1 "Exif") or PNG (eXIf chunk), without the "Exif" header."""
    if data.startswith(b"\xff\xd8"):
        for marker, payload, _ in _jpeg_segments(data):
            if marker == 0xE1 and payload.startswith(_EXIF_HEADER):
                return bytes(payload[len(_EXIF_HEADER):])
    elif data.startswith(_PNG_SIGNATURE):
        try:
            for chunk_type, payload, _ in _png_chunks(data):
                if chunk_type == b"eXIf":
                    # Some writers keep the "Exif\0\0" header inside the chunk; the PNG spec says without.
                    payload = payload[len(_EXIF_HEADER):] if payload.startswith(_EXIF_HEADER) else payload
                    return bytes(payload)
                if chunk_type == b"IDAT":  # eXIf must precede the image data
                    return None
        except ValueError:
            return None
    return None


def _orientation_entry(tiff: bytes):
    """(byte order, offset of the orientation value) in IFD0 of a TIFF block, or None."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd: ifd + 2])
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            return None
        tag, kind = struct.unpack(order + "HH", tiff[entry: entry + 4])
        if tag == _ORIENTATION_TAG and kind == 3:  # SHORT
            return order, entry + 8
    return None


def exif_orientation(tiff: bytes | None) -> int:
    """EXIF orientation (1-8) of a TIFF block; 1 when absent or invalid."""
    found = _orientation_entry(tiff) if tiff else None
    if found is None:
        return 1
    order, offset = found
    (value,) = struct.unpack(order + "H", tiff[offset: offset + 2])
    return value if 1 <= value <= 8 else 1


def reset_orientation(tiff: bytes) -> bytes:
    """The TIFF block with its orientation set to 1 (pixels stored upright); other tags untouched."""
    found = _orientation_entry(tiff)
    if found is None:
        return tiff
    order, offset = found
    return tiff[:offset] + struct.pack(order + "H", 1) + tiff[offset + 2:]


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turns pixels stored with EXIF ``orientation`` into the upright picture a viewer displays."""
    flips = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],                    # mirrored left-right
        3: lambda a: a[::-1, ::-1],                 # 180 degrees
        4: lambda a: a[::-1, :],                    # mirrored top-bottom
        5: lambda a: np.swapaxes(a, 0, 1),          # transposed
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],  # rotate 90 degrees clockwise to view
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],  # transversed
        8: lambda a: np.swapaxes(a, 0, 1)[::-1, :],  # rotate 90 degrees counter-clockwise to view
    }
    return np.ascontiguousarray(flips.get(orientation, flips[1])(array))


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


def _decode(path) -> tuple:
    """(upright pixels in cv2 order with all channels and bit depth kept, EXIF block or None)."""
    data = read_bytes_checked(path)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageReadError(f"{os.fspath(path)}: not a decodable image")
    exif = exif_block(data)
    return apply_orientation(decoded, exif_orientation(exif)), exif


def decode_unchanged(path) -> np.ndarray:
    """Decodes ``path`` upright (EXIF orientation applied) with all channels and bit depth kept (cv2 order:
    BGR / BGRA)."""
    return _decode(path)[0]


def to_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Scales 16-bit and float images to ``uint8``. Floats must lie in [0, 1]: a float image in 0..255 or one
    with NaN / infinite values is rejected (one-line ``ValueError`` naming ``name``) rather than clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: float image contains NaN or infinite values")
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            hint = "; pass uint8 for values in 0..255" if high > 1.0 else ""
            raise ValueError(f"{name}: float image values must lie in [0, 1], got {low:g}..{high:g}{hint}")
        return np.rint(array * 255.0).astype(np.uint8)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{name}: {array.dtype} image values must lie in 0..255")
        return array.astype(np.uint8)
    raise ValueError(f"{name}: unsupported pixel type {array.dtype}")


@dataclass
class Photo:
    """A decoded image file, upright.

    ``pixels``: as stored (uint8 / uint16), in RGB / RGBA order, [H, W] for grayscale;
    ``exif``: the file's EXIF block with its orientation reset to 1, or None.
    """

    path: str
    pixels: np.ndarray
    exif: bytes | None = None

    @property
    def colour(self) -> np.ndarray:
        """RGB at the file's bit depth, [H, W, 3]."""
        pixels = self.pixels if self.pixels.ndim == 3 else self.pixels[:, :, None]
        channels = pixels.shape[2]
        if channels in (1, 2):  # gray, gray + alpha
            return np.repeat(pixels[:, :, :1], 3, axis=2)
        return pixels[:, :, :3]

    @property
    def alpha(self) -> np.ndarray | None:
        """The alpha channel at the file's bit depth, or None."""
        if self.pixels.ndim == 3 and self.pixels.shape[2] in (2, 4):
            return self.pixels[:, :, -1]
        return None

    @property
    def rgb(self) -> np.ndarray:
        """RGB ``uint8`` [H, W, 3]: what the models see."""
        return np.ascontiguousarray(to_uint8(self.colour, self.path))


def read_photo(path) -> Photo:
    """Reads an image file upright, keeping its bit depth, alpha channel and EXIF block (see ``Photo``)."""
    path = os.fspath(path)
    decoded, exif = _decode(path)
    if decoded.dtype not in (np.uint8, np.uint16):
        decoded = to_uint8(decoded, path)
    if decoded.ndim == 3:
        channels = decoded.shape[2]
        if channels == 3:
            decoded = decoded[:, :, ::-1]
        elif channels == 4:
            decoded = decoded[:, :, [2, 1, 0, 3]]
        elif channels not in (1, 2):
            raise ImageReadError(f"{path}: unsupported channel count {channels}")
    return Photo(path, np.ascontiguousarray(decoded), reset_orientation(exif) if exif else None)


def read_image(path) -> np.ndarray:
    """Reads an image file as upright RGB ``uint8`` [H, W, 3] (alpha set aside, 16 bits scaled to 8)."""
    return read_photo(path).rgb


def compose(photo: Photo, result: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The output at the photo's own depth and channels: its stored pixels where ``hole`` is 0 (bit-exact,
    16-bit included), ``result`` (RGB ``uint8``, e.g. 200 -> 200 * 257 in 16 bits) where it is 1, and its
    alpha channel unchanged. Grayscale photos come back as RGB (the prediction has colour)."""
    colour = np.array(photo.colour)
    filled = np.asarray(hole) > 0.5
    scale = 257 if colour.dtype == np.uint16 else 1
    colour[filled] = result[filled].astype(colour.dtype) * scale
    alpha = photo.alpha
    if alpha is None:
        return colour
    return np.concatenate([colour, alpha[:, :, None]], axis=2)


def _with_exif(encoded: bytes, extension: str, exif: bytes, path: str) -> bytes:
    if extension in JPEG_EXTENSIONS:
        payload = _EXIF_HEADER + exif
        if len(payload) + 2 > 0xFFFF:
            warnings.warn(f"{path}: EXIF block of {len(exif)} bytes is too large for JPEG; not written", stacklevel=3)
            return encoded
        segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
        insert_at = 2
        for marker, _, start in _jpeg_segments(encoded):
            if marker == 0xE0:  # keep the JFIF APP0 segment first
                insert_at = start + 2 + struct.unpack(">H", encoded[start + 2: start + 4])[0]
            break
        return encoded[:insert_at] + segment + encoded[insert_at:]
    if extension == ".png":
        chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
        header_end = len(_PNG_SIGNATURE) + 8 + 13 + 4  # the IHDR chunk always comes first, 13 bytes long
        return encoded[:header_end] + chunk + encoded[header_end:]
    return encoded  # BMP and WebP files get no EXIF here


def encode_image(rgb: np.ndarray, extension: str, exif: bytes | None = None,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY, name: str = "image") -> bytes:
    """Encodes RGB / RGBA / gray ``uint8`` or ``uint16`` pixels in the format of ``extension``.

    Formats that cannot hold 16 bits (JPEG, BMP, WebP) get 8; JPEG drops the alpha channel.
    """
    extension = extension.lower()
    array = np.asarray(rgb)
    if array.dtype == np.uint16 and extension != ".png":
        array = to_uint8(array)
    elif array.dtype not in (np.uint8, np.uint16):
        array = to_uint8(array, name)
    if array.ndim == 3:
        if array.shape[2] == 4 and extension in JPEG_EXTENSIONS:
            array = array[:, :, :3]
        order = {3: [2, 1, 0], 4: [2, 1, 0, 3]}.get(array.shape[2])
        if order is not None:
            array = array[:, :, order]
    params = []
    if extension in JPEG_EXTENSIONS:
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {jpeg_quality}")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, encoded = cv2.imencode(extension, np.ascontiguousarray(array), params)
    if not ok:
        raise ValueError(f"{name}: cannot encode an image with extension {extension!r}")
    encoded = encoded.tobytes()
    return _with_exif(encoded, extension, exif, name) if exif else encoded


def _open_new(directory: str, suffix: str):
    """A new hidden file in ``directory`` created with mode 0666 minus the umask (unlike ``tempfile``'s 0600)."""
    for attempt in range(100):
        candidate = os.path.join(directory, f".tmp-{os.getpid()}-{attempt}-{os.urandom(4).hex()}{suffix}")
        try:
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), candidate
        except FileExistsError:
            continue
    raise OSError(f"cannot create a temporary file in {directory}")


def write_bytes_atomic(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a crash never leaves a partial file and an existing file is replaced
    only once the new one is complete; the file's mode follows the umask, as any new file's does."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = _open_new(directory, os.path.splitext(path)[1])
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_image(path, rgb: np.ndarray, overwrite: bool = True, exif: bytes | None = None,
                jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> None:
    """Writes RGB(A) ``uint8`` / ``uint16`` pixels to ``path`` (format from the extension, PNG without one)
    atomically, with ``exif`` in JPEG and PNG files (see ``encode_image`` and ``write_bytes_atomic``)."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path}: exists (pass overwrite to replace it)")
    extension = os.path.splitext(path)[1].lower() or ".png"
    write_bytes_atomic(path, encode_image(rgb, extension, exif=exif, jpeg_quality=jpeg_quality, name=path))


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
