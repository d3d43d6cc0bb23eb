"""Convert released official weights (DeepFill v1/v2, HiFill, GLCIC) into tfinpaint checkpoint folders.

>>> import tfinpaint
>>> tfinpaint.convert("deepfill_v2_places2/", "converted/deepfill_v2_places2")  # doctest: +SKIP

Command line: ``tfinpaint convert [--model NAME] --src PATH --out DIR [--discriminator] [--overwrite]``.
The facts each mapping relies on (names, layouts, colour order): docs/official-weights.md.
"""
import sys
import types

from tfinpaint.convert.common import ConvertError
from tfinpaint.convert.converter import DISPLAY_NAMES, MODELS, convert, detect_model

__all__ = ["DISPLAY_NAMES", "MODELS", "ConvertError", "convert", "detect_model"]


class _CallableModule(types.ModuleType):
    """Importing this package makes ``tfinpaint.convert`` the package rather than the function of the same name
    in ``tfinpaint/__init__.py``; calling the package keeps ``tfinpaint.convert(src, out)`` working either way."""

    def __call__(self, *args, **kwargs):
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
