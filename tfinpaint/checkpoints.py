"""The checkpoint format shared by training, inference and the weight converters.

A checkpoint folder holds TF checkpoints (``tf.train.CheckpointManager`` naming: ``ckpt-N.index`` and
``ckpt-N.data-*``) and ``model.json`` naming the model and its build options, so that inference rebuilds the
generator from the folder alone.

Networks are stored keyed by each variable's Keras path (``variable.path`` inside the model, e.g. the key
``generator/conv1/conv/kernel`` for ``deepfill_v2_generator/conv1/conv/kernel``), so a checkpoint says what it
holds and inserting or reordering a layer can never shift weights onto the wrong variables.
(``tf.train.Checkpoint(generator=model)`` cannot be used: Keras 3 keeps sub-layers held in Python lists and
dicts out of TensorFlow's object graph.) The keys contain the layers' names, so models name their layers (the
zoo's models do): Keras' automatic names (``conv2d_7``) carry a per-process counter, and only the model's own
name is left out of the key. Optimizer slots are keyed by the key of the variable they belong to
(``g_optimizer/conv1/conv/kernel/momentum``).

Checkpoints of the first release stored the same variables as positional lists (``list(model.weights)``);
they are recognised by their numeric keys and still load, with their variable count and shapes checked.

Before any value is read, the stored names and shapes are compared with the model's: a mismatch is a one-line
``CheckpointMismatchError`` naming the first missing or extra variable, and TensorFlow never gets to print its
warnings about unmatched objects. A truncated or corrupt file is a one-line ``CheckpointCorruptError`` naming it.
"""
from __future__ import annotations

import glob
import json
import os

import tensorflow as tf

from tfinpaint.settings import SettingError

MODEL_CONFIG_FILE = "model.json"
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message is one line naming the file."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint holds other variables (or shapes) than the model it is restored into."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file is truncated or corrupt."""


# ------------------------------------------------------------------------------------------- variable keys
def variable_key(variable) -> str:
    """A network variable's key: its Keras path inside the model (``conv1/conv/kernel``), without the model's
    own name, which Keras numbers per instance (``tiny_generator_1``) unless the model sets it."""
    head, separator, rest = variable.path.partition("/")
    return rest if separator else head


def network_variables(model) -> dict:
    """{variable key (path inside the model): variable} of a built Keras model, in Keras' tracking order."""
    variables = {}
    for variable in model.weights:
        key = variable_key(variable)
        if key in variables:
            raise ValueError(f"model {model.name}: two variables share the path {key!r}; give its layers "
                             "distinct names")
        variables[key] = variable
    return variables


def optimizer_variables(optimizer, owners: dict | None = None) -> dict:
    """{key: variable} of a built Keras optimizer.

    owners: {model variable path: key} of the variables it trains. Keras names a slot variable after the
    variable it belongs to (``<path with _>_momentum``), so slots are keyed ``<owner key>/momentum``, free of
    the per-instance numbering of model names; other variables (``iteration``, ``learning_rate``) by name. A
    ``LossScaleOptimizer``'s own variables get the prefix ``loss_scale/``.
    """
    prefixes = {path.replace("/", "_") + "_": key for path, key in (owners or {}).items()}

    def key_of(name):
        for index in range(len(name) - 1, 0, -1):  # longest owner prefix first
            if name[index] == "_" and name[: index + 1] in prefixes:
                return f"{prefixes[name[: index + 1]]}/{name[index + 1:]}"
        return name

    inner = getattr(optimizer, "inner_optimizer", None)
    pairs = []
    inner_ids = set()
    if inner is not None:
        for variable in inner.variables:
            pairs.append((key_of(variable.name), variable))
            inner_ids.add(id(variable))
    for variable in optimizer.variables:
        if id(variable) not in inner_ids:
            pairs.append(((f"loss_scale/{variable.name}" if inner is not None else key_of(variable.name)), variable))
    variables = {}
    for key, variable in pairs:
        if key in variables:
            raise ValueError(f"optimizer {optimizer.name}: two variables share the key {key!r}")
        variables[key] = variable
    return variables


def positional_variables(model) -> list:
    """The variables of a network as the first release's checkpoints stored them (by position)."""
    return list(model.weights)


def _escape(name: str) -> str:
    # TensorFlow's escaping of object-graph names in checkpoint keys.
    return name.replace(".", "..").replace("/", ".S")


def _unescape(name: str) -> str:
    out, index = [], 0
    while index < len(name):
        if name[index] == "." and index + 1 < len(name):
            out.append({".": ".", "S": "/"}.get(name[index + 1], name[index: index + 2]))
            index += 2
        else:
            out.append(name[index])
            index += 1
    return "".join(out)


def _flatten(objects: dict, prefix: tuple = ()) -> dict:
    """{(section, ..., key): variable} of nested dicts of variables (the keyed sections of a checkpoint)."""
    flat = {}
    for key, value in objects.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + (key,)))
        elif isinstance(value, (list, tuple)):
            flat.update({prefix + (key, str(index)): item for index, item in enumerate(value)})
        else:
            flat[prefix + (key,)] = value
    return flat


def checkpoint_path(ckpt_dir) -> str:
    """The newest checkpoint of a folder, or the checkpoint prefix itself."""
    ckpt_dir = os.fspath(ckpt_dir)
    path = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else ckpt_dir
    if not path:
        raise CheckpointError(f"{ckpt_dir}: no checkpoint found")
    return path


def _data_files(path: str) -> str:
    files = sorted(glob.glob(glob.escape(path) + ".data-*"))
    return files[0] if len(files) == 1 else (path + ".data-*" if files else path + ".index")


def stored_variables(path: str) -> dict:
    """{(section, ..., key): shape} of the variables a checkpoint holds (from its index file only)."""
    try:
        listing = tf.train.list_variables(path)
    except (tf.errors.OpError, ValueError, IndexError) as error:
        message = getattr(error, "message", str(error)).strip().splitlines()
        raise CheckpointCorruptError(f"{path}.index: cannot read the checkpoint index "
                                     f"({message[0] if message else type(error).__name__})") from None
    stored = {}
    for name, shape in listing:
        if not name.endswith(_VALUE_SUFFIX):
            continue
        stored[tuple(_unescape(part) for part in name[: -len(_VALUE_SUFFIX)].split("/"))] = tuple(shape)
    return stored


def is_positional(stored: dict, section: tuple) -> bool:
    keys = [key[len(section):] for key in stored if key[: len(section)] == section]
    return bool(keys) and all(len(key) == 1 and key[0].isdigit() for key in keys)


def _describe(key: tuple) -> str:
    return "/".join(key)


def check_matches(path: str, expected: dict, stored: dict, sections: list) -> None:
    """Raises ``CheckpointMismatchError`` unless the checkpoint's variables under ``sections`` (key prefixes)
    are exactly ``expected`` ({key: variable}) with the same shapes."""
    def in_sections(key):
        return any(key[: len(section)] == section for section in sections)

    held = {key: shape for key, shape in stored.items() if in_sections(key)}
    for section in sections:
        if is_positional(held, section):
            count = sum(key[: len(section)] == section for key in held)
            wanted = sum(key[: len(section)] == section for key in expected)
            if count != wanted:
                raise CheckpointMismatchError(f"{path}: the checkpoint stores {_describe(section)} by position "
                                              f"(first-release format) with {count} variables; the model has "
                                              f"{wanted}, so its layers differ")
    for key, variable in expected.items():
        if key not in held:
            raise CheckpointMismatchError(f"{path}: the checkpoint has no variable {_describe(key)} (it holds "
                                          f"{len(held)} variables there; the model has {len(expected)})")
        if tuple(held[key]) != tuple(variable.shape):
            where = f" ({variable.path} in the model)" if key[-1].isdigit() else ""
            raise CheckpointMismatchError(f"{path}: variable {_describe(key)}{where} has shape {list(held[key])} "
                                          f"in the checkpoint, {list(variable.shape)} in the model")
    for key in held:
        if key not in expected:
            raise CheckpointMismatchError(f"{path}: the checkpoint holds variable {_describe(key)}, which the "
                                          "model does not have")


def restore_objects(path: str, objects: dict, sections: list, stored: dict | None = None) -> None:
    """Restores ``objects`` (the keyword arguments of a ``tf.train.Checkpoint``) from checkpoint ``path``.

    The variables under ``sections`` are first checked against the stored names and shapes; other objects
    (step counters, random generators) must exist in the checkpoint. Extra objects in the checkpoint are
    ignored (a generator is read alone from a training checkpoint).
    """
    stored = stored_variables(path) if stored is None else stored
    flat = _flatten(objects)
    keyed = {key: value for key, value in flat.items() if any(key[: len(s)] == s for s in sections)}
    check_matches(path, keyed, stored, sections)
    for key, value in flat.items():
        if key in keyed or not isinstance(value, tf.Variable):
            continue
        if key not in stored:
            raise CheckpointMismatchError(f"{path}: the checkpoint has no variable {_describe(key)}")
    try:
        status = tf.train.Checkpoint(**objects).restore(path)
        status.expect_partial()  # extra objects are expected; ours were checked by name above
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise CheckpointMismatchError(f"{path}: {str(error).splitlines()[0]}") from None
    except (tf.errors.OpError, IndexError, ValueError) as error:
        message = getattr(error, "message", str(error)).strip().splitlines()
        raise CheckpointCorruptError(f"{_data_files(path)}: truncated or corrupt checkpoint data "
                                     f"({message[0] if message else type(error).__name__})") from None


def network_objects(generator=None, discriminators: dict | None = None, positional: bool = False) -> dict:
    """The checkpoint objects of the networks: {"generator": {path: variable}, "discriminators": {name: ...}}
    (lists instead of path dicts for the first release's positional format)."""
    variables = positional_variables if positional else network_variables
    objects = {}
    if generator is not None:
        objects["generator"] = variables(generator)
    if discriminators:
        objects["discriminators"] = {name: variables(network) for name, network in sorted(discriminators.items())}
    return objects


def restore_networks(ckpt_dir, generator=None, discriminators: dict | None = None) -> str:
    """Restores the (built) generator and/or discriminators from the newest checkpoint in ``ckpt_dir`` (or a
    checkpoint prefix), in either format. Returns the checkpoint path."""
    path = checkpoint_path(ckpt_dir)
    stored = stored_variables(path)
    objects, sections = {}, []
    if generator is not None:
        positional = is_positional(stored, ("generator",))
        objects.update(network_objects(generator=generator, positional=positional))
        sections.append(("generator",))
        if not any(key[0] == "generator" for key in stored):
            raise CheckpointMismatchError(f"{path}: the checkpoint does not hold this generator's weights (it "
                                          "holds no generator: is it a tfinpaint checkpoint?)")
    for name, network in sorted((discriminators or {}).items()):
        section = ("discriminators", name)
        if not any(key[:2] == section for key in stored):
            raise CheckpointMismatchError(f"{path}: the checkpoint holds no discriminator {name!r}")
        positional = is_positional(stored, section)
        objects.setdefault("discriminators", {})[name] = (positional_variables if positional
                                                          else network_variables)(network)
        sections.append(section)
    restore_objects(path, objects, sections, stored)
    return path


def restore_generator(generator, ckpt_dir) -> str:
    """Restores the generator weights (only) of the newest checkpoint in ``ckpt_dir``, or of a checkpoint
    prefix; the generator must be built. Returns the checkpoint path."""
    return restore_networks(ckpt_dir, generator=generator)


def restore_discriminators(discriminators: dict, ckpt_dir) -> str:
    """Restores built discriminators ({name: network}) from a checkpoint folder or prefix."""
    return restore_networks(ckpt_dir, discriminators=discriminators)


def holds_discriminators(ckpt_dir) -> list:
    """Names of the discriminators a checkpoint holds."""
    return sorted({key[1] for key in stored_variables(checkpoint_path(ckpt_dir))
                   if key[0] == "discriminators" and len(key) > 2})


# ------------------------------------------------------------------------------------------- model.json
def read_model_config(ckpt_dir) -> dict:
    """``model.json`` of a checkpoint folder: {"model": name, "options": {...}, ...}."""
    path = os.path.join(os.fspath(ckpt_dir), MODEL_CONFIG_FILE)
    if not os.path.isfile(path):
        raise SettingError(f"{path}: missing (not a tfinpaint checkpoint folder; give the <model> name to "
                           "override)")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: invalid model.json (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid model.json ({error.msg} at line {error.lineno}, column "
                         f"{error.colno})") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str) or not config["model"]:
        raise ValueError(f"{path}: invalid model.json (expected an object with a \"model\" name)")
    if not isinstance(config.get("options", {}), dict):
        raise ValueError(f"{path}: invalid model.json (\"options\" must be an object)")
    return config


def write_text_atomically(path, text: str) -> None:
    """Writes ``path`` through a temporary file and a rename, with the permissions of the umask."""
    path = os.fspath(path)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_model_config(folder, config: dict) -> str:
    path = os.path.join(os.fspath(folder), MODEL_CONFIG_FILE)
    write_text_atomically(path, json.dumps(config, indent=2))
    return path


def save_generator(folder, generator, model_name: str, options: dict, discriminators: dict | None = None) -> str:
    """Writes a checkpoint folder holding a (built) generator, and optionally its discriminators, e.g. for
    converted official weights; ``tfinpaint.load(folder)`` and ``infer.py --__gpath__ folder`` read it like a
    training checkpoint, and ``train.py --init_from folder`` starts a training run from it."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = tf.train.Checkpoint(**network_objects(generator, discriminators)).save(os.path.join(folder, "ckpt"))
    write_model_config(folder, {"model": model_name, "options": dict(options)})
    return path
