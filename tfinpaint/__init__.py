"""tfinpaint: deep image inpainting models (GLCIC, DeepFill v1/v2, Partial Convolutions, CRA/HiFill) for
TensorFlow 2 / Keras 3.

Public conventions: images are RGB ``uint8`` (or float in [0, 1]); masks are 1 = hole, 0 = known.
"""
__version__ = "0.1.0"


def inpaint(image, mask, model=None, **kwargs):
    """Inpaints one image; see ``tfinpaint.inference.api.inpaint``."""
    from tfinpaint.inference.api import inpaint as _inpaint

    return _inpaint(image, mask, model=model, **kwargs)


def load(ckpt_dir, **kwargs):
    """Loads a reusable inpainter from a checkpoint folder; see ``tfinpaint.inference.api.load``."""
    from tfinpaint.inference.api import load as _load

    return _load(ckpt_dir, **kwargs)


def convert(src, out, model=None, **kwargs):
    """Converts released official weights into a checkpoint folder; see ``tfinpaint.convert.converter.convert``."""
    from tfinpaint.convert.converter import convert as _convert

    return _convert(src, out, model=model, **kwargs)
