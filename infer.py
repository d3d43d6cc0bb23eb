"""Inpaint images with a trained checkpoint.

    python infer.py --__gpath__ CKPT_DIR --__flist__ IMAGES [--__mlist__ MASKS] [--out DIR]
"""
from tfinpaint.startup import quiet_tensorflow_start_up

# Before TensorFlow is imported: its start-up lines (CUDA probing, oneDNN, CPU notice) stay out of the output.
quiet_tensorflow_start_up()

from absl import app  # noqa: E402

from tfinpaint.inference.cli import main  # noqa: E402

if __name__ == "__main__":
    app.run(main)
