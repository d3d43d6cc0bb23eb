"""``tfinpaint export --gpath CKPT --format savedmodel|tflite --out PATH [--tflite_size 256] [--verify]``.

What the exported models hold and which models convert to TFLite: ``tfinpaint.export``. TensorFlow is imported
only when the command runs, so ``--help`` answers at once.
"""
from __future__ import annotations

import dataclasses

from absl import flags

from tfinpaint import flags as cli_flags

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """One export: ``checkpoint`` (folder written by training) to ``out`` (a folder for a SavedModel, a
    ``.tflite`` file) in ``format``; TFLite at a fixed ``tflite_size`` square, checked against the Keras model
    with ``verify``. ``model`` overrides the model name stored with the checkpoint."""

    checkpoint: str
    format: str = "savedmodel"
    out: str = "outputs"
    model: str | None = None
    tflite_size: int = 256
    verify: bool = False


# ExportConfig setting -> flag: builds the config and spells the settings in error messages.
FLAG_FOR_SETTING = {
    "checkpoint": "__gpath__",
    "format": "format",
    "out": "out",
    "model": "model",
    "tflite_size": "tflite_size",
    "verify": "verify",
}
cli_flags.declare("export", FLAG_FOR_SETTING.values())


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> ExportConfig:
    checkpoint = cli_flags.single(flag_values["__gpath__"].value)
    return cli_flags.config_from_flags(ExportConfig, FLAG_FOR_SETTING, flag_values, checkpoint=checkpoint)


def run(config: ExportConfig) -> str:
    """Exports as ``config`` says; returns what was written (one line per step)."""
    from tfinpaint import export

    return export.run(config.checkpoint, config.format, config.out, config.model, config.tflite_size,
                      config.verify)


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    return cli_flags.render_error(error, FLAG_FOR_SETTING)


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"export: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.__gpath__:
        raise SystemExit("export: --gpath CKPT_DIR is required")
    try:
        print(run(config_from_flags()))
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"export: {error_line(error)}") from None
