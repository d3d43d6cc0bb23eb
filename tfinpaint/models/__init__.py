"""The model zoo: one file per paper (architecture and config), built by name through one registry.

>>> from tfinpaint import models
>>> models.names()
['cra', 'deepfill_v1', 'deepfill_v2', 'glcic', 'pconv']
>>> generator, discriminators, recipe = models.create("deepfill_v2", preset="tiny")
>>> generator.size_factor, generator.config.cnum
(8, 8)
"""
from tfinpaint.models.base import InpaintingGenerator, ModelConfig
from tfinpaint.models.registry import ModelBundle, ModelSpec, config, create, get, names, register, unregister

__all__ = ["InpaintingGenerator", "ModelBundle", "ModelConfig", "ModelSpec", "config", "create", "get", "names",
           "register", "unregister"]
