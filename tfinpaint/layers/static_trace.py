"""Fixed-size tracing: loops unrolled into straight-line ops when every shape is known.

Contextual attention's loop over query chunks and the row-tiled ends of DeepFill are ``tf.while_loop`` s whose
bodies slice tensors of a size that changes from one iteration to the next. Converted to TFLite, the row tiles'
TensorArray needs select TensorFlow ops (which the default interpreter does not have), and the attention loop
becomes a WHILE with dynamically shaped tensors that delegates such as XNNPACK leave to the reference kernels.
Inside ``unrolled_loops()``, layers whose input shapes are fully known while tracing plan their chunks in NumPy
and emit one copy of the loop body per chunk with constant indices instead: the same operations on the same
numbers, every shape static. Outside it (training, the Python API, the SavedModel) nothing changes: graphs stay
size-independent and memory-bounded.
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["unrolled_loops", "unrolling"]

_state = threading.local()


@contextlib.contextmanager
def unrolled_loops():
    """While active (in this thread), layers traced with static shapes unroll their loops."""
    previous = getattr(_state, "active", False)
    _state.active = True
    try:
        yield
    finally:
        _state.active = previous


def unrolling() -> bool:
    """True inside ``unrolled_loops()``."""
    return getattr(_state, "active", False)
