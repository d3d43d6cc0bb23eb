"""The model registry: one ``ModelSpec`` per model and the one resolver that training, inference, export and
evaluation use.

Specs name their parts as ``"module:attribute"`` strings, imported only when used: listing the names never
imports a model, and the recipe factory (on the training side) is imported only by ``create`` and the trainer,
so loading a generator for inference never imports ``tfinpaint.training``.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, NamedTuple


class ModelBundle(NamedTuple):
    """What ``create`` returns: unpack as ``generator, discriminators, recipe = create(name)``."""

    generator: Any
    discriminators: dict
    recipe: Any


def _resolve(reference, what):
    """``reference`` itself, or the attribute a ``"module:attribute"`` string names."""
    if not isinstance(reference, str):
        return reference
    module_name, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import the {what} {reference!r} ({error})") from None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the library needs to know to build, train and load one model.

    name: the registry name (stored in ``model.json``). config: the ``ModelConfig`` class. generator /
    discriminators: builders ``fn(config) -> generator`` (variables created) and ``fn(config) -> dict``.
    recipe: the recipe factory ``fn(config) -> Recipe``. Each of these four may be given as the object or as a
    ``"module:attribute"`` string. aliases: other names that resolve to this spec.
    """

    name: str
    config: type | str
    generator: Callable | str
    discriminators: Callable | str
    recipe: Callable | str
    aliases: tuple = ()

    @property
    def config_class(self) -> type:
        return _resolve(self.config, f"{self.name} config class")

    def make_config(self, preset: str = "paper", **options):
        """The model's config: ``preset`` with ``options`` changed (one-line errors for unknown names)."""
        return self.config_class.from_options(options, preset=preset)

    def build_generator(self, config):
        return _resolve(self.generator, f"{self.name} generator builder")(config)

    def build_discriminators(self, config) -> dict:
        return dict(_resolve(self.discriminators, f"{self.name} discriminators builder")(config))

    def make_recipe(self, config):
        """The default training recipe (imports the training side)."""
        return _resolve(self.recipe, f"{self.name} recipe factory")(config)


_SPECS: dict = {}
_ALIASES: dict = {}


def register(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Adds ``spec`` to the registry (``replace`` to overwrite a spec of the same name)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register: expected a ModelSpec, got {type(spec).__name__}")
    key = spec.name.lower()
    if not replace and (key in _SPECS or key in _ALIASES):
        raise ValueError(f"register: a model named {spec.name!r} is already registered")
    for alias in _SPECS[key].aliases if key in _SPECS else ():
        _ALIASES.pop(alias.lower(), None)
    _SPECS[key] = spec
    for alias in spec.aliases:
        _ALIASES[alias.lower()] = key
    return spec


def unregister(name: str) -> None:
    """Removes the spec registered as ``name`` (and its aliases)."""
    spec = _SPECS.pop(name.lower(), None)
    for alias in spec.aliases if spec else ():
        _ALIASES.pop(alias.lower(), None)


def names() -> list:
    """Registered model names, sorted."""
    return sorted(_SPECS)


def get(model) -> ModelSpec:
    """The one resolver: a ``ModelSpec`` from a registered name or alias, a ``"module:attribute"`` path to a
    ``ModelSpec`` (importing the module may also register it), or a ``ModelSpec`` itself."""
    if isinstance(model, ModelSpec):
        return model
    if not isinstance(model, str):
        raise TypeError(f"model must be a name, a 'module:attribute' path or a ModelSpec, got {type(model).__name__}")
    if ":" in model:
        spec = _resolve(model, "model spec")
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"model {model!r} is a {type(spec).__name__}, not a tfinpaint.models.ModelSpec")
        return spec
    key = _ALIASES.get(model.lower(), model.lower())
    if key not in _SPECS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(names())} (or a 'module:attribute' "
                         "path to a ModelSpec)")
    return _SPECS[key]


def stored_name(model) -> str:
    """The name ``model.json`` records for ``model``: the registry name, or the ``"module:attribute"`` path of
    a spec that is not registered (so that loading resolves it again)."""
    spec = get(model)
    if _SPECS.get(spec.name.lower()) is spec:
        return spec.name
    if isinstance(model, str) and ":" in model:
        return model
    raise ValueError(f"model {spec.name!r} is neither registered nor given as a 'module:attribute' path, so a "
                     "checkpoint could not name it; register() it first")


def config(model, preset: str = "paper", **options):
    """The config of ``model`` at ``preset`` with ``options`` changed."""
    return get(model).make_config(preset, **options)


def create(model, preset: str = "paper", **options) -> ModelBundle:
    """Builds the generator (variables created), the discriminators and the default training recipe of ``model``
    at ``preset`` with ``options`` changed (e.g. ``create("deepfill_v2", preset="tiny")``); load-time options
    among ``options`` (e.g. ``tile_pixels``) go to the generator."""
    spec = get(model)
    config_options, load_options = spec.config_class.split_options(options)
    model_config = spec.make_config(preset, **config_options)
    generator = spec.build_generator(model_config)
    generator.set_load_options(**load_options)
    return ModelBundle(generator, spec.build_discriminators(model_config), spec.make_recipe(model_config))


def _builtin(name, module, config_class, aliases=()):
    register(ModelSpec(name=name, config=f"tfinpaint.models.{module}:{config_class}",
                       generator=f"tfinpaint.models.{module}:build_generator",
                       discriminators=f"tfinpaint.models.{module}:build_discriminators",
                       recipe=f"tfinpaint.training.recipes.{module}:make_recipe", aliases=aliases))


_builtin("glcic", "glcic", "GLCICConfig")
_builtin("deepfill_v1", "deepfill_v1", "DeepFillV1Config")
_builtin("pconv", "pconv", "PConvConfig", aliases=("partialconv",))
_builtin("deepfill_v2", "deepfill_v2", "DeepFillV2Config", aliases=("deepfill", "gatedconv"))
_builtin("cra", "cra", "CRAConfig", aliases=("hifill",))


def split_options(model, options: dict | None) -> tuple:
    """(config options, load-time options) of ``options`` for ``model`` (see ``ModelConfig.split_options``)."""
    return get(model).config_class.split_options(options)
