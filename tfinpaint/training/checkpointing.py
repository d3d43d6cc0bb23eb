"""Checkpointing of a training run: what a training checkpoint holds, resuming from the newest intact one,
saving without ever losing the last good one, ``model.json`` and starting from another checkpoint's networks.

A training checkpoint holds the generator and the discriminators keyed by variable path, both optimizers keyed
by variable name (see ``tfinpaint.checkpoints``), the step, the phase and the trainer's ``tf.random.Generator``.
Checkpoints of the first release (positional lists) are recognised and resumed; the next save is keyed.
"""
from __future__ import annotations

import glob
import os
import shutil

import tensorflow as tf
from absl import logging

from tfinpaint import checkpoints
from tfinpaint.checkpoints import (
    MODEL_CONFIG_FILE,
    CheckpointCorruptError,
    CheckpointError,
    network_objects,
    optimizer_variables,
    read_model_config,
    restore_objects,
    stored_variables,
    variable_key,
    write_model_config,
)

# Options that feed only a loss, not the architecture: they may change between runs on one folder.
LOSS_ONLY_OPTIONS = ("vgg_weights", "vgg_preprocessing")


class ModelMismatchError(ValueError):
    """The checkpoint folder holds another model (or the same model with other options).

    ``differences``: {option: (stored value, requested value)}, None meaning "not set" (the model's default);
    the option "model" stands for the model name.
    """

    def __init__(self, folder: str, stored: dict, requested: dict, differences: dict):
        self.folder, self.stored, self.requested, self.differences = folder, stored, requested, differences
        described = ", ".join(f"{key} {_show(old)} there, {_show(new)} in this run"
                              for key, (old, new) in differences.items())
        super().__init__(f"{folder} holds checkpoints of model {stored.get('model')} {stored.get('options', {})}, "
                         f"not {requested['model']} {requested['options']}: {described}")


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the last good checkpoint is kept. One line."""


def _show(value) -> str:
    return "unset (the default)" if value is None else repr(value)


def architecture(model: str, options: dict) -> tuple:
    return model, {key: value for key, value in options.items() if key not in LOSS_ONLY_OPTIONS}


def differences(stored: dict, requested: dict) -> dict:
    """{option: (stored, requested)} of two model.json descriptions, "model" first."""
    stored_model, stored_options = architecture(stored.get("model"), stored.get("options", {}))
    model, options = architecture(requested["model"], requested["options"])
    found = {}
    if stored_model != model:
        found["model"] = (stored_model, model)
    for key in sorted(set(stored_options) | set(options)):
        if stored_options.get(key) != options.get(key):
            found[key] = (stored_options.get(key), options.get(key))
    return found


def check_model_folder(folder: str, model: str, options: dict) -> None:
    """Raises ``ModelMismatchError`` if ``folder``'s model.json describes another model than (model, options)."""
    if not os.path.isfile(os.path.join(folder, MODEL_CONFIG_FILE)):
        return
    stored = read_model_config(folder)
    requested = {"model": model, "options": options}
    found = differences(stored, requested)
    if found:
        raise ModelMismatchError(folder, stored, requested, found)


def _first_line(error) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = getattr(error, "message", str(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class TrainingCheckpoint:
    """The checkpoint of a trainer's whole state in ``ckpt_dir``.

    write_dir: where this process writes (``ckpt_dir`` on the chief; workers of a cluster must take part in
    every save and write into a private folder that is removed again).
    """

    def __init__(self, generator, discriminators: dict, g_optimizer, d_optimizer, step, phase, rng,
                 ckpt_dir: str, write_dir: str, keep: int):
        self.networks = (generator, discriminators)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.step, self.phase, self.rng = step, phase, rng
        self.ckpt_dir, self.write_dir = ckpt_dir, write_dir
        self.checkpoint = tf.train.Checkpoint(**self.objects(positional=False))
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir, max_to_keep=keep)
        self.last_saved_step = -1
        self.last_saved_path: str | None = None

    def objects(self, positional: bool) -> dict:
        generator, discriminators = self.networks
        objects = network_objects(generator, discriminators, positional=positional)
        if positional:
            objects.update(g_optimizer=list(self.g_optimizer.variables))
            if self.d_optimizer is not None:
                objects["d_optimizer"] = list(self.d_optimizer.variables)
        else:
            owners = {variable.path: variable_key(variable) for variable in generator.weights}
            objects["g_optimizer"] = optimizer_variables(self.g_optimizer, owners)
            if self.d_optimizer is not None:
                owners = {variable.path: f"{name}/{variable_key(variable)}"
                          for name, network in discriminators.items() for variable in network.weights}
                objects["d_optimizer"] = optimizer_variables(self.d_optimizer, owners)
        objects.update(step=self.step, phase=self.phase, rng=self.rng)
        return objects

    def sections(self) -> list:
        sections = [("generator",), ("g_optimizer",)]
        if self.d_optimizer is not None:
            sections += [("discriminators",), ("d_optimizer",)]
        return sections

    def restore(self, path: str) -> None:
        """Restores the whole state from ``path`` (keyed or positional format)."""
        stored = stored_variables(path)
        positional = checkpoints.is_positional(stored, ("generator",))
        restore_objects(path, self.objects(positional), self.sections(), stored)

    def candidates(self) -> list:
        """Checkpoints of ``ckpt_dir``, newest first."""
        state = tf.train.get_checkpoint_state(self.ckpt_dir)
        if state is None:
            return []
        paths = list(state.all_model_checkpoint_paths or [])
        if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
            paths.append(state.model_checkpoint_path)
        paths = [path if os.path.isabs(path) else os.path.join(self.ckpt_dir, path) for path in paths]
        return sorted(paths, key=_checkpoint_number, reverse=True)

    def restore_latest(self) -> str | None:
        """Restores the newest intact checkpoint; a truncated or corrupt newer one is skipped with a warning.
        Returns its path, or None in a folder without checkpoints."""
        candidates = self.candidates()
        failures = []
        for path in candidates:
            try:
                self.restore(path)
            except CheckpointCorruptError as error:
                failures.append(error)
                logging.warning("%s; falling back to the previous checkpoint", error)
                continue
            if failures:
                logging.warning("resuming from %s: the %d newer checkpoint(s) are corrupt", path, len(failures))
            self.last_saved_step, self.last_saved_path = int(self.step.numpy()), path
            return path
        if failures:
            raise CheckpointCorruptError(f"{failures[0]}; no intact checkpoint left in {self.ckpt_dir} (move "
                                         "the folder away to start afresh)")
        return None

    def save(self, step: int) -> str:
        """Writes the checkpoint of ``step``; a failure (disk full, folder gone) leaves the last good
        checkpoint in place and raises a one-line ``CheckpointSaveError``."""
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            self._remove_partial(step)
            if self.last_saved_path:
                kept = (f"the last good checkpoint {self.last_saved_path} is kept: "
                        f"{step - self.last_saved_step} step(s) lost")
            else:
                kept = f"no checkpoint of this run was saved: {step} step(s) lost"
            raise CheckpointSaveError(f"{self.write_dir}: saving the checkpoint of step {step} failed "
                                      f"({_first_line(error)}); {kept}") from None
        self.last_saved_step, self.last_saved_path = step, path
        return path

    def _remove_partial(self, step: int) -> None:
        remove_leftovers(self.write_dir)
        prefix = os.path.join(self.write_dir, f"ckpt-{step}")
        if prefix not in (self.manager.checkpoints or []):
            for leftover in glob.glob(glob.escape(prefix) + ".*"):
                os.remove(leftover)


def _checkpoint_number(path: str) -> int:
    tail = path.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def remove_leftovers(folder: str) -> None:
    """Removes what a save killed half-way leaves (the checkpoint state file never pointed to it)."""
    for leftover in glob.glob(os.path.join(glob.escape(folder), "*_temp*")):
        shutil.rmtree(leftover, ignore_errors=True) if os.path.isdir(leftover) else os.remove(leftover)


def prepare_folder(ckpt_dir: str, description: dict, info: dict) -> None:
    """Checks that ``ckpt_dir`` holds the described model (if anything), removes leftovers of killed saves and
    writes model.json (``description`` plus ``info``)."""
    os.makedirs(ckpt_dir, exist_ok=True)
    remove_leftovers(ckpt_dir)
    write_model_config(ckpt_dir, dict(description, **info))


def initialise_networks(folder: str, model: str, generator, discriminators: dict) -> list:
    """Copies generator and discriminator weights from another checkpoint folder (e.g. converted official
    weights) into a fresh run; returns the names of the discriminators it held. The folder's model name must
    match; widths and layers are checked variable by variable."""
    if os.path.isfile(os.path.join(folder, MODEL_CONFIG_FILE)):
        stored = read_model_config(folder)
        if stored["model"] != model:
            raise ModelMismatchError(folder, stored, {"model": model, "options": {}},
                                     {"model": (stored["model"], model)})
    path = checkpoints.checkpoint_path(folder)
    held = checkpoints.holds_discriminators(path)
    present = {name: network for name, network in discriminators.items() if name in held}
    missing = sorted(set(discriminators) - set(held))
    extra = sorted(set(held) - set(discriminators))
    if extra:
        raise CheckpointError(f"{path}: the checkpoint holds discriminator(s) {extra}, which model {model} does "
                              f"not have (it has {sorted(discriminators)})")
    checkpoints.restore_networks(path, generator=generator, discriminators=present)
    if missing:
        logging.warning("%s holds no weights for discriminator(s) %s: they start from scratch", path, missing)
    return sorted(present)
