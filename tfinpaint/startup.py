"""Start-up of the command lines: keeps TensorFlow's harmless start-up lines off the terminal.

TensorFlow's C++ runtime prints lines such as ``E0000 ... failed call to cuInit`` (CUDA probing on a machine
without a GPU), ``oneDNN custom operations are on``, ``oneDNN supports DT_INT32 only on platforms with
AVX-512`` (a fallback), the CPU-instruction notice and grappler's ``remapper failed`` (an optimisation
skipped). Some come before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, others are logged as errors, so that
variable cannot hide them without hiding real errors too. ``quiet_tensorflow_start_up`` therefore routes the
process's standard error through a filter that drops exactly those lines; every other line (warnings,
errors, tracebacks) passes through unchanged. ``TFINPAINT_TF_LOGS=1`` turns the filter off.
"""
from __future__ import annotations

import atexit
import os
import re
import select
import sys
import threading

# Lines TensorFlow 2.21 prints on a CPU machine that report no problem with the user's run (seen in train.py
# and infer.py runs; GPU builds may print others, which then still show).
HARMLESS_LINES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|oneDNN supports \w+ only on platforms with AVX-512\. Falling back to the default Eigen-based"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags"
    r"|Could not find cuda drivers on your machine, GPU will not be used"
    r"|remapper failed: "
)
# CUDA's initialisation failure is harmless only where TensorFlow found no CUDA driver at all.
_CUINIT_FAILED = re.compile(r"failed call to cuInit")
_NO_DRIVER = "Could not find cuda drivers on your machine"

_installed = False


def is_harmless(line: str, no_driver_seen: bool) -> bool:
    """Whether a standard-error line is TensorFlow start-up noise (see the module doc)."""
    if HARMLESS_LINES.search(line):
        return True
    return no_driver_seen and bool(_CUINIT_FAILED.search(line))


def _write(fd: int, data: bytes) -> None:
    # A closed terminal or pipe must not stop the filter: the pipe would fill up and block the program.
    try:
        os.write(fd, data)
    except OSError:
        pass


def _forward(read_fd: int, write_fd: int) -> None:
    pending = b""
    no_driver_seen = False
    while True:
        try:
            # A partial line (a prompt, a progress bar) is passed on after a short pause, not held back.
            ready, _, _ = select.select([read_fd], [], [], 0.2)
            if not ready:
                if pending:
                    _write(write_fd, pending)
                    pending = b""
                continue
            chunk = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = []
        for line in lines:
            text = line.decode("utf-8", "replace")
            no_driver_seen = no_driver_seen or _NO_DRIVER in text
            if not is_harmless(text, no_driver_seen):
                kept.append(line + b"\n")
        if kept:
            _write(write_fd, b"".join(kept))
    if pending:
        _write(write_fd, pending)


def quiet_tensorflow_start_up() -> None:
    """Installs the standard-error filter (once per process; call it before importing TensorFlow)."""
    global _installed
    if _installed or os.environ.get("TFINPAINT_TF_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO lines printed after start-up
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        return  # no real standard error (e.g. captured in-process): nothing to filter
    sys.stderr.flush()
    original = os.dup(stderr_fd)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, stderr_fd)
    os.close(write_fd)
    worker = threading.Thread(target=_forward, args=(read_fd, original), name="stderr-filter", daemon=True)
    worker.start()
    _installed = True

    def restore() -> None:
        # Give standard error back and let the filter pass on what is still in the pipe.
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, stderr_fd)
        worker.join(timeout=2.0)

    atexit.register(restore)
