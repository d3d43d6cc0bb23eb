"""Classical inpainters scored beside the model: OpenCV's Telea (fast marching) and Navier-Stokes methods."""
from __future__ import annotations

import cv2
import numpy as np

BASELINES = {"opencv_telea": cv2.INPAINT_TELEA, "opencv_ns": cv2.INPAINT_NS}
# Neighbourhood radius (pixels) OpenCV's methods fill each pixel from; 3 is the value OpenCV's own examples use.
BASELINE_RADIUS = 3


def opencv_inpainter(flag: int):
    """An inpainter ``(rgb_uint8, hole) -> rgb_uint8`` running OpenCV's method ``flag`` (Telea or NS)."""
    def fill(image, hole):
        hole_u8 = (np.asarray(hole) > 0.5).astype(np.uint8)
        bgr = cv2.inpaint(np.ascontiguousarray(image[:, :, ::-1]), hole_u8, BASELINE_RADIUS, flag)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    return fill


def baseline_inpainters() -> dict:
    """Every baseline by name, in the order the report lists them."""
    return {name: opencv_inpainter(flag) for name, flag in BASELINES.items()}
