"""What each output format keeps of the known pixels (not a test): the infer command's file path, measured.

    python benchmarks/output_formats.py                    # built-in sample photos, JPEG quality 95
    python benchmarks/output_formats.py --photos my_photos/ --jpeg_quality 90

Each photo is saved as a JPEG (as phone photos come), inpainted through ``tfinpaint.inference.cli.run`` with a
centred rectangle covering a quarter of the area (a narrow random-weight GLCIC: the figures concern the known
pixels, which do not depend on the prediction) and written with ``--out_format`` png and jpg. The written file
is read back and its known pixels compared with the decoded input: the share that is bit-exact and the largest
difference in grey levels.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=None, help="folder of photos (default: the built-in sample photos)")
    parser.add_argument("--jpeg_quality", type=int, default=95)
    args = parser.parse_args()
    sys.path.insert(0, REPO)  # this checkout's tfinpaint, not an installed one

    import cv2

    from tfinpaint import data, imageio, masks
    from tfinpaint.checkpoints import save_generator
    from tfinpaint.inference import api, cli

    paths = imageio.list_image_files(args.photos) if args.photos else data.sample_images()
    with tempfile.TemporaryDirectory() as work:
        options = {"cnum": 4, "dnum": 4, "image_size": 64}
        save_generator(os.path.join(work, "ckpt"), api.build_generator("glcic", dict(options)), "glcic", options)
        inputs, mask_dir = os.path.join(work, "in"), os.path.join(work, "masks")
        os.makedirs(inputs)
        os.makedirs(mask_dir)
        holes = {}
        for index, path in enumerate(paths):
            image = imageio.read_image(path)
            name = f"photo{index:02d}"
            cv2.imwrite(os.path.join(inputs, f"{name}.jpg"), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            height, width = image.shape[:2]
            hole = np.zeros((height, width), np.float32)
            hole[height // 4: height * 3 // 4, width // 4: width * 3 // 4] = 1
            masks.write_mask(os.path.join(mask_dir, f"{name}.png"), hole)
            holes[name] = hole
        print(f"{len(paths)} photos, JPEG quality {args.jpeg_quality}")
        print("| out_format | known pixels bit-exact (min / mean over photos) | largest difference (levels) |")
        print("|---|---|---|")
        for out_format in ("png", "jpg"):
            out = os.path.join(work, out_format)
            with open(os.devnull, "w") as quiet:
                cli.run(os.path.join(work, "ckpt"), inputs, out, mlist=mask_dir, out_format=out_format,
                        jpeg_quality=args.jpeg_quality, stream=quiet)
            shares, worst = [], 0
            for name, hole in holes.items():
                source = imageio.read_image(os.path.join(inputs, f"{name}.jpg")).astype(np.int32)
                written = imageio.read_image(os.path.join(out, f"{name}.{out_format}")).astype(np.int32)
                known = hole == 0
                difference = np.abs(written[known] - source[known]).max(axis=1)
                shares.append(float(np.mean(difference == 0)))
                worst = max(worst, int(difference.max()))
            print(f"| {out_format} | {100 * min(shares):.1f} % / {100 * np.mean(shares):.1f} % | {worst} |")


if __name__ == "__main__":
    main()
