"""Inference: a reusable ``Inpainter`` for any image size, the ``infer.py`` command line and model export."""
from tfinpaint.inference.api import Inpainter, inpaint, load

__all__ = ["Inpainter", "inpaint", "load"]
