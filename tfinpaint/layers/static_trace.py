"""Fixed-size tracing: loops unrolled into straight-line ops when every shape is known.

Contextual attention's loop over query chunks and the row-tiled ends of DeepFill are ``tf.while_loop`` s whose
bodies slice tensors of a size that changes from one iteration to the next. A TFLite model keeps such a loop as
a WHILE op with dynamically shaped tensors, and the default interpreter's XNNPACK delegate then refuses the
model ("failed to reshape runtimeNode ... failed to prepare"). Inside ``unrolled_loops()``, layers whose input
shapes are fully known while tracing compute their chunk plans in NumPy and emit one copy of the loop body per
chunk with constant indices instead: the same operations on the same numbers, every shape static. Outside it
(training, the Python API, the SavedModel) nothing changes: graphs stay size-independent and memory-bounded.
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
