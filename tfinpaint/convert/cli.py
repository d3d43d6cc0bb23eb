"""``tfinpaint convert``: released official weights -> a tfinpaint checkpoint folder.

    tfinpaint convert --src release/ --out converted/            (model detected from the tensor names)
    tfinpaint convert --model glcic --src completionnet_places2.t7 --out converted/glcic_places2
"""
from __future__ import annotations

import dataclasses
import sys

from absl import flags

from tfinpaint import flags as cli_flags
from tfinpaint.convert.common import ConvertError

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """One conversion: the download ``src`` into the checkpoint folder ``out``; see
    ``tfinpaint.convert.convert`` for ``model``, ``discriminator``, ``overwrite`` and ``bgr``."""

    src: str
    out: str
    model: str | None = None
    discriminator: bool = False
    overwrite: bool = False
    bgr: bool = True


# ConvertConfig setting -> flag: builds the config and spells the settings in error messages.
FLAG_FOR_SETTING = {
    "src": "src",
    "out": "out",
    "model": "model",
    "discriminator": "discriminator",
    "overwrite": "overwrite",
    "bgr": "bgr",
}
cli_flags.declare("convert", FLAG_FOR_SETTING.values())


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> ConvertConfig:
    return cli_flags.config_from_flags(ConvertConfig, FLAG_FOR_SETTING, flag_values)


def run(config: ConvertConfig) -> dict:
    """Converts as ``config`` says; returns ``convert``'s report."""
    from tfinpaint.convert.converter import convert

    return convert(config.src, config.out, model=config.model, discriminator=config.discriminator,
                   overwrite=config.overwrite, bgr=config.bgr)


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    return cli_flags.render_error(error, FLAG_FOR_SETTING)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"tfinpaint convert: unexpected arguments {' '.join(argv[1:])}")
    # --out has a default for the other commands; here the folder must be named.
    if not FLAGS.src or not FLAGS["out"].present:
        sys.exit("tfinpaint convert: --src and --out are required")
    from tfinpaint.convert.converter import DISPLAY_NAMES

    try:
        report = run(config_from_flags())
    except ConvertError as error:
        sys.exit(f"tfinpaint convert: error: {error_line(error)}")
    print(f"{DISPLAY_NAMES[report['model']]}: {report['tensors']} tensors ({report['parameters']:,} values) "
          f"from {report['src']} -> {report['out']}; {len(report['ignored'])} other tensors ignored "
          "(optimizer slots, step counters, networks not asked for)")
