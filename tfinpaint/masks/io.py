"""Reading and writing mask files with the project's conventions (decisions.md, "Public conventions").

- A pixel is a hole where its value is > 127 on the 8-bit scale (16-bit files: > 127 * 257; float files
  are taken as [0, 1]). Non-binary masks are thresholded, not rejected.
- ``polarity="hole"``: white = hole (DeepFill convention); ``polarity="valid"``: white = known (NVIDIA /
  HiFill-Atlas convention).
- Colour masks use the max over the colour channels. A mask whose colour channels are constant while its
  alpha channel varies (a shape painted on a transparent layer) uses the alpha channel: opaque = white.
- ``size=(height, width)`` different from the file's size: nearest-neighbour resize and a warning.
- Files are read upright, as viewers display them (EXIF orientation applied, like images in ``imageio``), so
  a mask drawn on a displayed photo matches the photo as ``imageio.read_image`` returns it.
"""
from __future__ import annotations

import os
import warnings

import cv2
import numpy as np

from tfinpaint import imageio

POLARITIES = ("hole", "valid")
_THRESHOLD_8BIT = 127


class MaskReadError(ValueError):
    """A mask file is missing, truncated, corrupt or not an image; the message is one line naming it."""


def _decode(path: str) -> np.ndarray:
    try:
        return imageio.decode_unchanged(path)
    except imageio.ImageReadError as error:
        raise MaskReadError(f"cannot read mask {error}") from None


def _to_8bit_scale(values: np.ndarray, path: str) -> np.ndarray:
    """Maps pixel values to the 8-bit scale on which the > 127 threshold is defined."""
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.unsignedinteger):
        return values.astype(np.float64) * (255.0 / np.iinfo(values.dtype).max)
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float64) * 255.0
    raise MaskReadError(f"cannot read mask {path}: unsupported pixel type {values.dtype}")


def _mask_channel(image: np.ndarray) -> np.ndarray:
    """The single channel that carries the mask: gray, max over colour channels, or alpha (see module doc)."""
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 1:
        return image[:, :, 0]
    has_alpha = channels in (2, 4)
    colour = image[:, :, : channels - 1] if has_alpha else image
    if has_alpha:
        alpha = image[:, :, -1]
        if np.all(colour == colour.flat[0]) and np.any(alpha != alpha.flat[0]):
            return alpha
    return colour.max(axis=2)


def read_mask(path, size: tuple[int, int] | None = None, polarity: str = "hole") -> np.ndarray:
    """Reads a mask file as float32 [H, W], 1 = hole, 0 = known.

    Args:
        path: any image file OpenCV can decode (PNG, JPEG, BMP, TIFF, ...; 8 or 16 bit; gray, RGB or RGBA).
        size: optional (height, width); a file of another size is resized (nearest) with a warning.
        polarity: "hole" (white = hole) or "valid" (white = known).

    Raises:
        MaskReadError: the file is missing, truncated, corrupt or not an image (one line naming the file).
        ValueError: bad ``polarity`` or ``size``.
    """
    path = os.fspath(path)
    if polarity not in POLARITIES:
        raise ValueError(f"mask polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    if size is not None:
        if len(size) != 2 or any(int(side) < 1 for side in size):
            raise ValueError(f"mask size must be (height, width) with positive sides, got {size!r}")
        size = (int(size[0]), int(size[1]))

    channel = _to_8bit_scale(_mask_channel(_decode(path)), path)
    white = channel > _THRESHOLD_8BIT
    hole = white if polarity == "hole" else ~white
    if size is not None and hole.shape != size:
        height, width = hole.shape
        warnings.warn(
            f"mask {path} is {height}x{width}, resized to {size[0]}x{size[1]} (nearest neighbour)", stacklevel=2
        )
        resized = cv2.resize(hole.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        hole = resized > 0
    return hole.astype(np.float32)


def write_mask(path, mask) -> None:
    """Writes a [H, W] (or [H, W, 1]) mask, 1 = hole, as an 8-bit gray PNG with 255 = hole, 0 = known.

    Values > 0.5 count as hole. The file is PNG whatever the extension of ``path``.
    """
    path = os.fspath(path)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask for {path} must have shape [H, W] or [H, W, 1], got {mask.shape}")
    pixels = np.where(mask > 0.5, 255, 0).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"cannot encode mask {path} as PNG")
    # tofile instead of cv2.imwrite: imwrite cannot open non-ASCII paths on Windows.
    encoded.tofile(path)
