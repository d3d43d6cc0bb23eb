"""What every converter shares: the error type, the strict tensor -> variable assignment and the atomic write.

A *target* ties one official tensor name to one Keras variable of a built tfinpaint network, with the function
that turns the stored array into the variable's layout (the identity for TF1 checkpoints, a transpose for Torch).
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from tfinpaint.settings import SettingError


class ConvertError(SettingError):
    """A conversion that cannot be completed; its message is one line that names the file or tensor at fault
    (or the setting: ``ConvertError(message, "model", value)``)."""


class Target(NamedTuple):
    variable: object
    transform: Callable | None = None


# Training-only tensors a release may carry: optimizer slots, step counters, moving averages. Never an error.
_TRAINING_STATE = re.compile(
    r"(^|/)(global_step|beta[12]_power|Adam(_\d+)?|Momentum|RMSProp(_\d+)?|Adadelta(_\d+)?|Adagrad|"
    r"ExponentialMovingAverage|learning_rate)(/|$)"
)


def is_training_state(name: str) -> bool:
    return bool(_TRAINING_STATE.search(name))


def collect(targets: dict, source, scopes, ignore_scopes=()) -> tuple:
    """Reads every target's tensor from ``source`` and checks it strictly; nothing is assigned yet.

    Returns ``(values, ignored)``: ``{official name: array in the variable's layout}`` and the names of the
    source's tensors left out (training state, other networks' scopes). A tensor inside ``scopes`` that no target
    uses is an error, unless it is training state or inside ``ignore_scopes``.
    """
    values = {}
    for name in sorted(targets):
        variable, transform = targets[name]
        if name not in source.shapes:
            raise ConvertError(f"{source.path}: missing tensor {name} (needed for {variable.path})")
        dtype = source.dtypes.get(name)
        if dtype is not None and np.dtype(dtype) != np.float32:
            raise ConvertError(f"{source.path}: tensor {name} is {np.dtype(dtype).name}, expected float32")
        value = np.asarray(source.get(name))
        if transform is not None:
            value = transform(value)
        expected = tuple(variable.shape)
        if tuple(value.shape) != expected:
            raise ConvertError(f"{source.path}: tensor {name} has shape {list(value.shape)}, expected "
                               f"{list(expected)} for {variable.path}")
        values[name] = np.ascontiguousarray(value, dtype=np.float32)
    ignored = []
    for name in sorted(source.shapes):
        if name in targets:
            continue
        in_scope = any(name.startswith(scope) for scope in scopes)
        if (in_scope and not is_training_state(name) and not any(name.startswith(s) for s in ignore_scopes)
                and source.is_weight(name)):
            raise ConvertError(f"{source.path}: extra tensor {name} (shape {list(source.shapes[name])}) "
                               "matches no variable of the model")
        ignored.append(name)
    return values, ignored


def assign(targets: dict, values: dict) -> None:
    for name, value in values.items():
        targets[name].variable.assign(value)


def flip_channels(value: np.ndarray, axis: int) -> np.ndarray:
    """Reverses the first three entries of ``axis`` (BGR <-> RGB); extra entries (a mask channel) stay."""
    value = np.array(value, copy=True)
    index = [slice(None)] * value.ndim
    index[axis] = slice(0, 3)
    value[tuple(index)] = np.flip(value[tuple(index)], axis=axis)
    return value


def check_output_folder(out, overwrite: bool) -> str:
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise ConvertError(f"{out}: exists and is not a folder")
        if not overwrite and os.listdir(out):
            raise ConvertError(f"{out}: already exists; pass <overwrite> to replace it")
    return out


def write_atomically(out, overwrite: bool, write: Callable[[str], None]) -> None:
    """Runs ``write(temp_folder)`` in a fresh folder beside ``out`` and renames it to ``out`` only when it
    succeeded, so a failed conversion never leaves a half-written or replaced checkpoint."""
    out = check_output_folder(out, overwrite)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{os.path.basename(out)}.converting-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        write(temp)
        if os.path.exists(out):
            old = os.path.join(parent, f".{os.path.basename(out)}.replaced-{os.getpid()}")
            os.rename(out, old)
            os.rename(temp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
