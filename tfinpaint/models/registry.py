"""One registry that builds any model of the zoo by name.

Each paper's module exposes ``build(**options) -> ModelBundle``. Modules are imported lazily, so listing the
names or building one model never imports (or fails on) the others.
"""
from __future__ import annotations

import importlib
from typing import Any, NamedTuple


class ModelBundle(NamedTuple):
    """What ``create`` returns: unpack as ``generator, discriminators, recipe = create(name)``."""

    generator: Any
    discriminators: dict
    recipe: Any


_BUILDERS = {
    "glcic": "tfinpaint.models.glcic",
    "deepfill_v1": "tfinpaint.models.deepfill_v1",
    "pconv": "tfinpaint.models.pconv",
    "deepfill_v2": "tfinpaint.models.deepfill_v2",
    "cra": "tfinpaint.models.cra",
}
_ALIASES = {"hifill": "cra", "deepfill": "deepfill_v2", "gatedconv": "deepfill_v2", "partialconv": "pconv"}


def names() -> list:
    """Names accepted by ``create``, sorted."""
    return sorted(_BUILDERS)


def _module(name: str):
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(names())}")
    return importlib.import_module(_BUILDERS[key])


def create(name: str, **options) -> ModelBundle:
    """Builds the generator, its discriminators and the default training recipe of model ``name``.

    ``options`` go to the model's ``build`` (e.g. ``cnum`` for a narrower network in tests).
    """
    return _module(name).build(**options)


def size_factor(name: str, **options) -> int:
    """Input sides of model ``name`` must be a multiple of this number."""
    return _module(name).size_factor(**options)
