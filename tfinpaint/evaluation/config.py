"""What an evaluation run is asked to do (``EvalConfig``) and the error that points at one of its settings.

Library code names settings by their ``EvalConfig`` field; a command line renders them as its own flags, so
that errors read ``--eval_size 8: ...`` there and ``size 8: ...`` in the API.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tfinpaint.settings import SettingError  # noqa: F401  (raised by the evaluation modules)

DEFAULT_BINS = "0.01-0.1,0.1-0.2,0.2-0.3,0.3-0.4,0.4-0.5,0.5-0.6"
DEFAULT_SIZE = 256
DEFAULT_SEED = 0
DEFAULT_MASK_TYPE = "irregular"
DEFAULT_OUT_DIR = "eval_out"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """One evaluation run.

    checkpoint: checkpoint folder written by training.
    images: folder (recursive) or text file listing the photos; None: the sample photos installed with
        scikit-image and scikit-learn.
    out_dir: folder that receives the mask set (``masks/``, ``manifest.json``), ``results.json`` and
        ``results.md``. It is replaced as a whole once the run is complete; a folder holding a different mask
        set, or the results of another checkpoint, is replaced only with ``overwrite``.
    masks: a stored mask set (a folder with ``manifest.json``) to reuse, or mask files to pair with the images.
    bins: hole-ratio bins, as text ``"0.01-0.1,0.1-0.2"`` or pairs; ``bins``, ``size``, ``seed`` and ``mask_type``
        left at None take their defaults for a new set and the stored values for a reused one.
    mask_polarity: how mask files are read: "hole" (white = hole) or "valid" (white = known).
    fid_weights: local Keras InceptionV3 "notop" weights file (.h5); adds FID.
    model: model name overriding the one stored with the checkpoint.
    """

    checkpoint: str
    images: str | None = None
    out_dir: str = DEFAULT_OUT_DIR
    masks: str | None = None
    bins: None | str | Sequence[Sequence[float]] = None
    size: int | None = None
    seed: int | None = None
    mask_type: str | None = None
    mask_polarity: str = "hole"
    fid_weights: str | None = None
    model: str | None = None
    overwrite: bool = False


SETTINGS = tuple(field.name for field in dataclasses.fields(EvalConfig))
