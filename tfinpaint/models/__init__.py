"""The model zoo: one file per paper, built by name through a single registry.

>>> from tfinpaint import models
>>> models.names()
['cra', 'deepfill_v1', 'deepfill_v2', 'glcic', 'pconv']
>>> generator, discriminators, recipe = models.create("deepfill_v2", cnum=8)
"""
from tfinpaint.models.registry import ModelBundle, create, names, size_factor

__all__ = ["ModelBundle", "create", "names", "size_factor"]
