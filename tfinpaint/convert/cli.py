"""``tfinpaint convert``: released official weights -> a tfinpaint checkpoint folder.

    tfinpaint convert --src release/ --out converted/            (model detected from the tensor names)
    tfinpaint convert --model glcic --src completionnet_places2.t7 --out converted/glcic_places2
"""
from __future__ import annotations

import sys

from absl import flags

from tfinpaint.convert.common import ConvertError

FLAGS = flags.FLAGS
flags.DEFINE_string("src", None, "the download: a TF1 checkpoint folder (state file 'checkpoint' or "
                    "'checkpoint.txt') or prefix, HiFill's frozen hifill.pb, or a GLCIC .t7 file")
flags.DEFINE_string("out", None, "checkpoint folder to write (tfinpaint.load, infer.py, eval and export read it)")
flags.DEFINE_enum("model", None, ["deepfill_v1", "deepfill_v2", "cra", "hifill", "glcic"],
                  "model of the release; detected from the tensor names when left out")
flags.DEFINE_bool("discriminator", False, "also convert the discriminator / critic tensors (to fine-tune with "
                  "train.py --init_from OUT)")
flags.DEFINE_bool("overwrite", False, "replace OUT if it exists")
flags.DEFINE_bool("bgr", True, "keep the official BGR channel order inside the network; --nobgr flips the "
                  "colour channels in the weights instead (same outputs)")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"tfinpaint convert: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.src or not FLAGS.out:
        sys.exit("tfinpaint convert: --src and --out are required")
    from tfinpaint.convert.converter import DISPLAY_NAMES, convert

    try:
        report = convert(FLAGS.src, FLAGS.out, model=FLAGS.model, discriminator=FLAGS.discriminator,
                         overwrite=FLAGS.overwrite, bgr=FLAGS.bgr)
    except ConvertError as error:
        sys.exit(f"tfinpaint convert: error: {error}")
    print(f"{DISPLAY_NAMES[report['model']]}: {report['tensors']} tensors ({report['parameters']:,} values) "
          f"from {report['src']} -> {report['out']}; {len(report['ignored'])} other tensors ignored "
          "(optimizer slots, step counters, networks not asked for)")
