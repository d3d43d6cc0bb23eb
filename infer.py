"""Inpaint images with a trained checkpoint.

    python infer.py --__gpath__ CKPT_DIR --__flist__ IMAGES [--__mlist__ MASKS] [--out DIR]
"""
from absl import app

from tfinpaint.inference.cli import main

if __name__ == "__main__":
    app.run(main)
