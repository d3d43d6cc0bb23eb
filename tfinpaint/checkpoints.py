"""The checkpoint format shared by training and inference.

A checkpoint folder holds TF checkpoints (``tf.train.CheckpointManager``) and ``model.json`` naming the model
and its build options, so that inference rebuilds the generator from the folder alone.

Networks are stored as flat lists of their variables in Keras' (deterministic) tracking order: Keras 3 keeps
sub-layers held in Python lists and dicts out of TensorFlow's object graph, so
``tf.train.Checkpoint(generator=model)`` would silently skip most weights of the zoo's models.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

MODEL_CONFIG_FILE = "model.json"


def checkpoint_variables(model) -> list:
    """The variables of a Keras model as checkpoints store them."""
    return list(model.weights)


def restore_generator(generator, ckpt_dir) -> str:
    """Restores the generator weights (only) of the newest checkpoint in ``ckpt_dir``, or of a checkpoint
    prefix; the generator must be built. Returns the checkpoint path."""
    ckpt_dir = os.fspath(ckpt_dir)
    path = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else ckpt_dir
    if not path:
        raise ValueError(f"{ckpt_dir}: no checkpoint found")
    status = tf.train.Checkpoint(generator=checkpoint_variables(generator)).restore(path)
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError:
        raise ValueError(f"{path}: the checkpoint does not hold this generator's weights") from None
    return path


def read_model_config(ckpt_dir) -> dict:
    """``model.json`` of a checkpoint folder: {"model": name, "options": {...}, ...}."""
    path = os.path.join(os.fspath(ckpt_dir), MODEL_CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: missing (not a tfinpaint checkpoint folder; pass --model to override)")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_generator(folder, generator, model_name: str, options: dict) -> str:
    """Writes a checkpoint folder holding only a (built) generator, e.g. for converted official weights;
    ``tfinpaint.load(folder)`` and ``infer.py --__gpath__ folder`` read it like a training checkpoint."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = tf.train.Checkpoint(generator=checkpoint_variables(generator)).save(os.path.join(folder, "ckpt"))
    with open(os.path.join(folder, MODEL_CONFIG_FILE), "w", encoding="utf-8") as handle:
        json.dump({"model": model_name, "options": dict(options)}, handle, indent=2)
    return path
