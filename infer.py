"""Inpaint images with a trained checkpoint.

    python infer.py --__gpath__ CKPT_DIR --__flist__ IMAGES [--__mlist__ MASKS] [--out DIR]
"""
import os

# Keep TensorFlow's start-up INFO banners (oneDNN, CUDA probing) out of the output; warnings still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app  # noqa: E402

from tfinpaint.inference.cli import main  # noqa: E402

if __name__ == "__main__":
    app.run(main)
