"""``tfinpaint serve --gpath CKPT [--gpath CKPT2 ...] [--host 127.0.0.1] [--port 8080] [--max_pixels N]``:
the painting page at http://HOST:PORT/ and the HTTP API under /api/v1 (see ``tfinpaint.serve.app``).

Models load once, at start-up. Binds to 127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import dataclasses
import importlib

from absl import flags

from tfinpaint import flags as cli_flags
from tfinpaint.settings import SettingError

FLAGS = flags.FLAGS

# The ``serve`` extra: pip install "tfinpaint[serve]".
SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}
DEFAULT_MAX_PIXELS = 50_000_000  # the same default as tfinpaint.serve.app, which needs FastAPI to import


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """The server: one model per folder of ``checkpoints``, on ``host``:``port``; uploads larger than
    ``max_pixels`` (None: 50 million) are refused; ``precision`` as in ``tfinpaint.load``."""

    checkpoints: tuple = ()
    host: str = "127.0.0.1"
    port: int = 8080
    max_pixels: int | None = None
    precision: str = "float32"


# ServeConfig setting -> flag: builds the config and spells the settings in error messages.
FLAG_FOR_SETTING = {
    "checkpoints": "__gpath__",
    "host": "host",
    "port": "port",
    "max_pixels": "max_pixels",
    "precision": "precision",
}
cli_flags.declare("serve", FLAG_FOR_SETTING.values())


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> ServeConfig:
    checkpoints = tuple(flag_values["__gpath__"].value or ())
    return cli_flags.config_from_flags(ServeConfig, FLAG_FOR_SETTING, flag_values, checkpoints=checkpoints)


def missing_packages() -> list:
    missing = []
    for module, package in SERVE_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def run(config: ServeConfig) -> None:
    """Loads the models and serves until stopped."""
    missing = missing_packages()
    if missing:
        raise RuntimeError(f"needs {', '.join(missing)}; install them with: pip install \"tfinpaint[serve]\"")
    if not config.checkpoints:
        raise SettingError("give at least one checkpoint folder with <checkpoints> CKPT")
    max_pixels = config.max_pixels or DEFAULT_MAX_PIXELS
    if max_pixels < 1:
        raise SettingError("must be positive", "max_pixels", max_pixels)

    import uvicorn

    from tfinpaint.serve.app import create_app, load_models

    try:
        entries = load_models(list(config.checkpoints), precision=config.precision)
    except Exception as error:  # a bad checkpoint folder: one line, no traceback
        raise RuntimeError(" ".join(str(error).split())) from None
    for entry in entries:
        print(f"serve: model {entry.name!r} ({entry.model_type}) from {entry.checkpoint}", flush=True)
    print(f"serve: open http://{config.host}:{config.port}/ (Ctrl+C stops)", flush=True)
    uvicorn.run(create_app(entries, max_pixels=max_pixels), host=config.host, port=config.port, log_level="warning")


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    return cli_flags.render_error(error, FLAG_FOR_SETTING)


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"serve: unexpected arguments {' '.join(argv[1:])}")
    try:
        run(config_from_flags())
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"serve: {error_line(error)}") from None
