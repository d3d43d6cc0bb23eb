"""imageio: upright reading (EXIF orientation), bit depth / alpha / EXIF kept on write, file modes."""
import os
import stat
import struct
import zlib

import cv2
import numpy as np
import pytest

from tfinpaint import imageio


def tiff_with_orientation(orientation: int, big_endian: bool = False) -> bytes:
    """A minimal EXIF (TIFF) block: IFD0 with an orientation (SHORT) and a make (ASCII) entry."""
    order = ">" if big_endian else "<"
    header = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", 8)
    make = b"TestCam\x00"
    make_offset = 8 + 2 + 2 * 12 + 4
    entries = struct.pack(order + "HHI", 0x0112, 3, 1) + struct.pack(order + "H", orientation) + b"\x00\x00"
    entries += struct.pack(order + "HHII", 0x010F, 2, len(make), make_offset)
    return header + struct.pack(order + "H", 2) + entries + struct.pack(order + "I", 0) + make


def jpeg_with_exif(bgr: np.ndarray, tiff: bytes, quality: int = 95) -> bytes:
    """OpenCV's JPEG with an APP1 "Exif" segment written by hand right after SOI."""
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = encoded.tobytes()
    return data[:2] + segment + data[2:]


def png_chunks(data: bytes) -> list:
    """Chunk types of a PNG file, in order (parsed here independently of tfinpaint)."""
    offset, types = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset: offset + 4])
        types.append(data[offset + 4: offset + 8])
        offset += 12 + length
    return types


def smooth_image(height, width):
    """A gradient (JPEG keeps it well) with a distinct colour in each corner."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 255 // (height - 1), cols * 255 // (width - 1),
                      np.full_like(rows, 90)], axis=2).astype(np.uint8)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_gives_what_opencv_displays(tmp_path, orientation):
    """OpenCV's IMREAD_COLOR applies the EXIF orientation as viewers do: an independent reference."""
    bgr = smooth_image(24, 40)[:, :, ::-1].copy()
    data = jpeg_with_exif(bgr, tiff_with_orientation(orientation, big_endian=orientation % 2 == 0))
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    displayed = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    result = imageio.read_image(path)
    assert result.shape == displayed.shape == ((24, 40, 3) if orientation < 5 else (40, 24, 3))
    np.testing.assert_array_equal(result, displayed)


def test_orientation_6_by_hand():
    stored = np.array([[1, 2, 3], [4, 5, 6]])
    # Orientation 6: the stored rows are the displayed columns, read right to left (rotate 90 clockwise).
    np.testing.assert_array_equal(imageio.apply_orientation(stored, 6), [[4, 1], [5, 2], [6, 3]])
    np.testing.assert_array_equal(imageio.apply_orientation(stored, 8), [[3, 6], [2, 5], [1, 4]])


def test_exif_orientation_is_read_and_reset_in_both_byte_orders():
    for big_endian in (False, True):
        tiff = tiff_with_orientation(6, big_endian)
        assert imageio.exif_orientation(tiff) == 6
        reset = imageio.reset_orientation(tiff)
        assert imageio.exif_orientation(reset) == 1 and len(reset) == len(tiff)
        # Only the orientation value changed; the make string and everything else are the same bytes.
        differing = [i for i in range(len(tiff)) if tiff[i] != reset[i]]
        assert len(differing) == 1 and b"TestCam" in reset
    assert imageio.exif_orientation(b"not exif") == 1 and imageio.exif_orientation(None) == 1


def test_png_16_bit_rgba_comes_back_16_bit_with_alpha_and_exact_known_pixels(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 65536, (20, 30, 4), dtype=np.uint16)  # BGRA as OpenCV stores it
    source = tmp_path / "deep.png"
    cv2.imwrite(str(source), stored)
    photo = imageio.read_photo(source)
    assert photo.pixels.dtype == np.uint16 and photo.alpha is not None
    hole = np.zeros((20, 30), np.float32)
    hole[5:12, 8:20] = 1
    prediction = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    target = tmp_path / "out.png"
    imageio.write_image(target, imageio.compose(photo, prediction, hole))

    written = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (20, 30, 4)
    known, filled = hole == 0, hole == 1
    np.testing.assert_array_equal(written[known], stored[known])  # all four channels, 16 bits
    np.testing.assert_array_equal(written[:, :, 3], stored[:, :, 3])  # alpha untouched, holes included
    np.testing.assert_array_equal(written[:, :, 2::-1][filled], prediction[filled].astype(np.uint16) * 257)


def test_8_bit_rgba_and_gray_inputs(tmp_path):
    rng = np.random.default_rng(1)
    bgra = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    gray = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    hole = np.zeros((10, 12), np.float32)
    hole[2:5, 3:9] = 1
    prediction = np.full((10, 12, 3), 7, np.uint8)
    rgba = imageio.compose(imageio.read_photo(tmp_path / "rgba.png"), prediction, hole)
    assert rgba.dtype == np.uint8 and rgba.shape == (10, 12, 4)
    np.testing.assert_array_equal(rgba[:, :, 3], bgra[:, :, 3])
    np.testing.assert_array_equal(rgba[hole == 0][:, :3], bgra[:, :, 2::-1][hole == 0])
    gray_out = imageio.compose(imageio.read_photo(tmp_path / "gray.png"), prediction, hole)
    assert gray_out.shape == (10, 12, 3)
    np.testing.assert_array_equal(gray_out[hole == 0], np.repeat(gray[:, :, None], 3, axis=2)[hole == 0])
    assert np.all(gray_out[hole == 1] == 7)


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_exif_is_kept_with_orientation_1(tmp_path, extension):
    tiff = tiff_with_orientation(6)
    source = tmp_path / "phone.jpg"
    source.write_bytes(jpeg_with_exif(smooth_image(16, 24)[:, :, ::-1].copy(), tiff))
    photo = imageio.read_photo(source)
    assert photo.pixels.shape[:2] == (24, 16)  # upright
    target = tmp_path / f"out{extension}"
    imageio.write_image(target, photo.pixels, exif=photo.exif)
    data = target.read_bytes()
    expected = imageio.reset_orientation(tiff)
    if extension == ".jpg":
        start = data.index(b"\xff\xe1")
        (length,) = struct.unpack(">H", data[start + 2: start + 4])
        assert data[start + 4: start + 2 + length] == b"Exif\x00\x00" + expected
    else:
        types = png_chunks(data)
        assert types.index(b"eXIf") < types.index(b"IDAT")
        start = data.index(b"eXIf")
        (length,) = struct.unpack(">I", data[start - 4: start])
        assert data[start + 4: start + 4 + length] == expected
        (crc,) = struct.unpack(">I", data[start + 4 + length: start + 8 + length])
        assert crc == zlib.crc32(data[start: start + 4 + length])
    # The file is still a valid image, displayed upright by OpenCV (orientation 1 now).
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (24, 16)
    assert imageio.exif_orientation(imageio.exif_block(data)) == 1


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        imageio.write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "a.png").st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["a.png"]  # no temporary file left


def test_jpeg_output_is_8_bit_without_alpha(tmp_path):
    deep = np.full((8, 8, 4), 65535, np.uint16)
    imageio.write_image(tmp_path / "a.jpg", deep, jpeg_quality=90)
    written = cv2.imread(str(tmp_path / "a.jpg"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint8 and written.shape == (8, 8, 3) and written.min() >= 250
    with pytest.raises(ValueError, match="quality"):
        imageio.write_image(tmp_path / "b.jpg", deep, jpeg_quality=0)


def test_float_images_must_be_in_unit_range():
    np.testing.assert_array_equal(imageio.to_uint8(np.array([[0.0, 0.5, 1.0]])), [[0, 128, 255]])
    with pytest.raises(ValueError, match=r"\[0, 1\].*uint8"):
        imageio.to_uint8(np.array([[0.0, 12.0, 254.0]], np.float32))
    with pytest.raises(ValueError, match="NaN"):
        imageio.to_uint8(np.array([[0.2, np.nan]], np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        imageio.to_uint8(np.array([[-0.5, 0.5]]))


def test_png_with_exif_orientation_reads_upright(tmp_path):
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    path = tmp_path / "sideways.png"
    imageio.write_image(path, stored, exif=tiff_with_orientation(8))  # written as stored, orientation 8 kept
    assert b"eXIf" in path.read_bytes()
    np.testing.assert_array_equal(imageio.read_image(path), np.rot90(stored, 1))  # rot90(1): counter-clockwise
