"""The ``tfinpaint`` console script: ``tfinpaint {masks,train,infer,export,eval} [flags]``.

Each sub-command lives in its own module exposing an absl ``main(argv)``; it is imported only when used.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "masks": ("tfinpaint.masks.cli", "generate a mask dataset (PNG files) and print hole-area statistics"),
    "train": ("tfinpaint.training.cli", "train a model (same flags as train.py)"),
    "infer": ("tfinpaint.inference.cli", "inpaint a folder of images (same flags as infer.py)"),
    "export": ("tfinpaint.export_cli", "export a checkpoint as a SavedModel or TFLite model"),
    "eval": ("tfinpaint.evaluation.cli", "evaluate a checkpoint on a seeded mask set"),
    "serve": ("tfinpaint.serve.cli", "a local web page to paint a mask and inpaint, with an HTTP API"),
    "convert": ("tfinpaint.convert.cli", "convert released official weights into a checkpoint folder"),
}


def _usage() -> str:
    lines = ["usage: tfinpaint COMMAND [flags]   (tfinpaint COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    command = argv[1]
    if command not in COMMANDS:
        print(f"tfinpaint: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    # Before TensorFlow is imported: its start-up lines (CUDA probing, oneDNN, CPU notice) stay out of the output.
    from tfinpaint.startup import quiet_tensorflow_start_up

    quiet_tensorflow_start_up()
    from absl import app

    module = importlib.import_module(COMMANDS[command][0])
    app.run(module.main, argv=[f"tfinpaint {command}"] + argv[2:])


if __name__ == "__main__":
    main()
