"""``tfinpaint serve --gpath CKPT [--gpath CKPT2 ...] [--host 127.0.0.1] [--port 8080] [--max_pixels N]``:
the painting page at http://HOST:PORT/ and the HTTP API under /api/v1 (see ``tfinpaint.serve.app``).

Models load once, at start-up. Binds to 127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import importlib

from absl import flags

from tfinpaint.flags_util import define

FLAGS = flags.FLAGS

# The ``serve`` extra: pip install "tfinpaint[serve]".
SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}
DEFAULT_MAX_PIXELS = 50_000_000  # the same default as tfinpaint.serve.app, which needs FastAPI to import


def define_flags(flag_values=FLAGS) -> None:
    define("multi_string", "gpath", None, "Checkpoint folder to serve; repeat the flag for several models.",
           flag_values)
    define("string", "host", "127.0.0.1", "Address to bind (0.0.0.0 exposes the server to the network).",
           flag_values)
    define("integer", "port", 8080, "Port to listen on.", flag_values)
    define("integer", "max_pixels", DEFAULT_MAX_PIXELS, "Largest image accepted, in pixels (larger ones get 413).",
           flag_values)
    define("enum", "precision", "float32", "Network compute precision; bfloat16 lowers peak memory on CPU.",
           flag_values, enum_values=["float32", "bfloat16"])


define_flags()


def missing_packages() -> list:
    missing = []
    for module, package in SERVE_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def _checkpoints() -> list:
    value = FLAGS.gpath
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"serve: unexpected arguments {' '.join(argv[1:])}")
    missing = missing_packages()
    if missing:
        raise SystemExit(f"serve: needs {', '.join(missing)}; install them with: pip install \"tfinpaint[serve]\"")
    checkpoints = _checkpoints()
    if not checkpoints:
        raise SystemExit("serve: give at least one checkpoint folder with --gpath CKPT")
    max_pixels = FLAGS.max_pixels or DEFAULT_MAX_PIXELS
    if max_pixels < 1:
        raise SystemExit(f"serve: --max_pixels must be positive, got {max_pixels}")

    import uvicorn

    from tfinpaint.serve.app import create_app, load_models

    try:
        entries = load_models(checkpoints, precision=FLAGS.precision)
    except Exception as error:  # a bad checkpoint folder: one line, no traceback
        raise SystemExit(f"serve: {' '.join(str(error).split())}") from None
    for entry in entries:
        print(f"serve: model {entry.name!r} ({entry.model_type}) from {entry.checkpoint}", flush=True)
    print(f"serve: open http://{FLAGS.host}:{FLAGS.port}/ (Ctrl+C stops)", flush=True)
    uvicorn.run(create_app(entries, max_pixels=max_pixels), host=FLAGS.host, port=FLAGS.port, log_level="warning")
