"""Readers for what users download: TF1 name-based checkpoints, frozen GraphDefs (``.pb``) and Torch7 ``.t7`` files.

The TF readers return a ``TensorSource``: tensor names with their shapes and dtypes, read lazily (a release with
optimizer slots is three times the size of the weights we need).
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfinpaint.convert.common import ConvertError

# Last name component of a trainable weight in the official TF1 code (DeepFill: kernel/bias; HiFill: w/biases,
# pw/ds_biases; spectral norm: u).
_WEIGHT_LEAVES = ("kernel", "bias", "w", "biases", "pw", "ds_biases", "u")


class TensorSource:
    """Named float tensors: ``shapes`` and ``dtypes`` (dicts by name) and ``get(name)`` -> numpy array."""

    def __init__(self, path: str, kind: str, shapes: dict, dtypes: dict, getter: Callable[[str], np.ndarray]):
        self.path = path
        self.kind = kind
        self.shapes = shapes
        self.dtypes = dtypes
        self._getter = getter

    def get(self, name: str) -> np.ndarray:
        return self._getter(name)

    @staticmethod
    def is_weight(name: str) -> bool:
        return name.rsplit("/", 1)[-1] in _WEIGHT_LEAVES


def _state_file_prefix(folder: str):
    """The checkpoint prefix named by a TF state file (``checkpoint``, or ``checkpoint.txt`` as the DeepFill
    releases ship it). Paths in it may be absolute paths of the authors' machines: only the base name is kept."""
    for state in ("checkpoint", "checkpoint.txt"):
        path = os.path.join(folder, state)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            match = re.search(r'^model_checkpoint_path:\s*"([^"]*)"', handle.read(), re.MULTILINE)
        if not match:
            raise ConvertError(f"{path}: no model_checkpoint_path line (not a TensorFlow checkpoint state file)")
        return os.path.join(folder, os.path.basename(match.group(1).replace("\\", "/")))
    return None


def checkpoint_prefix(src: str) -> str:
    """A TF1 checkpoint prefix from a folder (its state file, else its only ``*.index``) or a prefix."""
    if os.path.isdir(src):
        prefix = _state_file_prefix(src)
        if prefix is None:
            indexes = sorted(glob.glob(os.path.join(src, "*.index")))
            if len(indexes) > 1:
                raise ConvertError(f"{src}: {len(indexes)} checkpoints (*.index) and no 'checkpoint' state file; "
                                   "pass the prefix of one of them")
            if not indexes:
                raise ConvertError(f"{src}: no checkpoint found (expected a 'checkpoint' or 'checkpoint.txt' "
                                   "state file, or a *.index file)")
            prefix = indexes[0][: -len(".index")]
    else:
        prefix = src.removesuffix(".index")
    if not os.path.isfile(prefix + ".index"):
        raise ConvertError(f"{prefix}.index: missing (no TF checkpoint with this prefix)")
    return prefix


def read_tf_checkpoint(src: str) -> TensorSource:
    prefix = checkpoint_prefix(os.fspath(src))
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
        dtypes = {name: dtype.as_numpy_dtype for name, dtype in reader.get_variable_to_dtype_map().items()}
    except (tf.errors.OpError, ValueError) as error:
        raise ConvertError(f"{prefix}: cannot read the checkpoint ({_first_line(error)})") from None

    def get(name):
        try:
            return reader.get_tensor(name)
        except Exception as error:  # noqa: BLE001 - OpError, or IndexError on a cut .data file
            raise ConvertError(f"{prefix}: cannot read tensor {name} ({_first_line(error)}); "
                               "is the .data file complete?") from None

    return TensorSource(prefix, "tf_checkpoint", shapes, dtypes, get)


def read_frozen_graph(src: str) -> TensorSource:
    """Float ``Const`` nodes of a frozen GraphDef (``freeze_graph`` turns each variable into a Const node of the
    same name)."""
    src = os.fspath(src)
    graph = tf.compat.v1.GraphDef()
    try:
        with open(src, "rb") as handle:
            graph.ParseFromString(handle.read())
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError has no stable import path
        raise ConvertError(f"{src}: not a frozen TensorFlow GraphDef ({_first_line(error)})") from None
    constants = {}
    for node in graph.node:
        if node.op == "Const" and node.attr["value"].tensor.dtype == tf.float32.as_datatype_enum:
            constants[node.name] = node.attr["value"].tensor
    if not graph.node:
        raise ConvertError(f"{src}: an empty GraphDef (no nodes)")
    constants = _without_import_scope(constants)
    shapes = {name: tuple(dim.size for dim in tensor.tensor_shape.dim) for name, tensor in constants.items()}

    def get(name):
        try:
            return tf.make_ndarray(constants[name])
        except Exception as error:  # noqa: BLE001 - a malformed TensorProto raises assorted errors
            raise ConvertError(f"{src}: cannot read constant {name} ({_first_line(error)})") from None

    return TensorSource(src, "frozen_graph", shapes, {name: np.float32 for name in constants}, get)


_MODEL_SCOPES = ("generator/", "inpaint_net/")


def _without_import_scope(constants: dict) -> dict:
    """Drops a scope that ``tf.import_graph_def`` may have put in front of every name (``import/generator/...``),
    so that the weights keep their checkpoint names."""
    if any(name.startswith(_MODEL_SCOPES) for name in constants):
        return constants
    for name in constants:
        for scope in _MODEL_SCOPES:
            position = name.find("/" + scope)
            if position >= 0:
                prefix = name[: position + 1]
                return {key.removeprefix(prefix): value
                        for key, value in constants.items()}
    return constants


def read_source(src) -> TensorSource:
    """A TensorSource for a TF checkpoint (folder or prefix) or a frozen ``.pb``."""
    src = os.fspath(src)
    if not os.path.exists(src) and not os.path.exists(src + ".index"):
        raise ConvertError(f"{src}: no such file or folder")
    if os.path.isfile(src) and src.endswith(".pb"):
        return read_frozen_graph(src)
    return read_tf_checkpoint(src)


def load_t7(src):
    """The object tree of a Torch7 file, read with the optional ``torchfile`` package."""
    try:
        import torchfile
    except ImportError:
        raise ConvertError("reading Torch7 .t7 files needs the torchfile package: pip install torchfile "
                           "(or pip install tfinpaint[convert])") from None
    src = os.fspath(src)
    if not os.path.isfile(src):
        raise ConvertError(f"{src}: no such file")
    try:
        return torchfile.load(src)
    except Exception as error:  # noqa: BLE001 - torchfile raises struct, IO and its own errors on damaged files
        raise ConvertError(f"{src}: cannot read the Torch7 file ({type(error).__name__}: "
                           f"{_first_line(error)})") from None


def _first_line(error) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
