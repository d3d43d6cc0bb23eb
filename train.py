"""Train an inpainting model (or, with ``--__gen_masks__ true``, write a mask dataset).

    python train.py --model deepfill_v2 --__flist__ photos/ --max_steps 1000
    python train.py --__lambda_l1__ 1.0
    python train.py --__gen_masks__ true --__mask_type__ bbox
"""
from tfinpaint.startup import quiet_tensorflow_start_up

# Before TensorFlow is imported: its start-up lines (CUDA probing, oneDNN, CPU notice) stay out of the output.
quiet_tensorflow_start_up()

from absl import app  # noqa: E402

from tfinpaint.training.cli import main  # noqa: E402

if __name__ == "__main__":
    app.run(main)
